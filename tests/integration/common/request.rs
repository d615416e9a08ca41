//! Requests to an app under test, in-process: built as an HTTP client builds them, sent through
//! the app's router with `tower::ServiceExt::oneshot`, answered with the status, the headers and
//! the body, read whole ([`TestResponse`]) or frame by frame ([`StreamingResponse`]).

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::session::token_for;

/// How long one request (or one frame of a body) may take: a route that hangs fails its test,
/// naming the request, instead of hanging the run.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(60);

/// A request being built; [`TestRequest::send`] runs it.
pub struct TestRequest {
    router: Router,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Option<Bytes>,
}

impl TestRequest {
    pub(super) fn new(router: Router, method: Method, path: &str) -> TestRequest {
        TestRequest {
            router,
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: None,
        }
    }

    /// Adds a header (a second one of the same name is added, not replaced: two cookies).
    pub fn header(mut self, name: &str, value: &str) -> TestRequest {
        let name = HeaderName::try_from(name).expect("a valid header name");
        let value = HeaderValue::try_from(value).expect("a valid header value");
        self.headers.append(name, value);
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> TestRequest {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Signed in as `user`, with a token of the test process's key.
    pub fn signed_in(self, user: &str) -> TestRequest {
        self.bearer(&token_for(user))
    }

    /// Signed in as `user` when there is one, else anonymous.
    pub fn viewer(self, user: Option<&str>) -> TestRequest {
        match user {
            Some(u) => self.signed_in(u),
            None => self,
        }
    }

    /// A JSON body.
    pub fn json(self, body: &Value) -> TestRequest {
        self.body("application/json", body.to_string())
    }

    /// A body of any content type (with its `Content-Length`, as a client sends it).
    pub fn body(mut self, content_type: &str, body: impl Into<Bytes>) -> TestRequest {
        let body = body.into();
        self.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::try_from(content_type).expect("a valid content type"),
        );
        self.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        self.body = Some(body);
        self
    }

    /// Sends the request and reads the whole body (a streamed reply is read to its end).
    pub async fn send(self) -> TestResponse {
        let what = format!("{} {}", self.method, self.path);
        let streaming = self.send_streaming().await;
        tokio::time::timeout(REQUEST_LIMIT, streaming.collect())
            .await
            .unwrap_or_else(|_| panic!("{what}: the body did not end within {REQUEST_LIMIT:?}"))
    }

    /// Sends the request and returns once the response head is there; the body is read by the
    /// test, frame by frame, and dropping it is what a server does when the client goes away.
    pub async fn send_streaming(self) -> StreamingResponse {
        let what = format!("{} {}", self.method, self.path);
        let mut request = Request::builder()
            .method(self.method)
            .uri(&self.path)
            .body(self.body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap_or_else(|e| panic!("{what}: not a valid request: {e}"));
        *request.headers_mut() = self.headers;
        let Ok(response) = tokio::time::timeout(REQUEST_LIMIT, self.router.oneshot(request))
            .await
            .unwrap_or_else(|_| panic!("{what}: no response within {REQUEST_LIMIT:?}"));
        let (parts, body) = response.into_parts();
        StreamingResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// A response whose body was read to its end (or to where it broke off).
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Set when the body broke off instead of ending cleanly; `body` holds what came before.
    pub body_error: Option<String>,
}

impl TestResponse {
    /// A header's value; panics (naming it) when it is missing.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .expect("a header of visible ASCII")
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("a UTF-8 body")
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not a JSON body ({e}): {}", self.text()))
    }

    /// `error.code` of our error shape.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The `data:` payloads of an SSE body as JSON (`[DONE]` as the string "[DONE]").
    pub fn sse(&self) -> Vec<Value> {
        self.text()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| {
                if d == "[DONE]" {
                    Value::from("[DONE]")
                } else {
                    serde_json::from_str(d).expect("an SSE data line holds JSON")
                }
            })
            .collect()
    }
}

/// A response whose body is still coming.
pub struct StreamingResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Body,
}

impl StreamingResponse {
    /// The next piece of the body as the server produced it: `None` at a clean end, an error
    /// when the body broke off.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            let frame = tokio::time::timeout(REQUEST_LIMIT, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no body frame within {REQUEST_LIMIT:?}"))?;
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(e) => return Some(Err(e.to_string())),
            }
        }
    }

    /// Reads the rest of the body.
    pub async fn collect(mut self) -> TestResponse {
        let mut body = Vec::new();
        let mut body_error = None;
        while let Some(chunk) = self.next_chunk().await {
            match chunk {
                Ok(data) => body.extend_from_slice(&data),
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        TestResponse {
            status: self.status,
            headers: self.headers,
            body: Bytes::from(body),
            body_error,
        }
    }
}
