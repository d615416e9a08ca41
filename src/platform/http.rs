//! HTTP helpers shared by the handlers: the JSON body extractor with its limits, the route's
//! body limit as a layer (a declared length over it is refused before any of the body is read),
//! and the layer that gives axum's own 404/405 answers our JSON error shape. (Query parameters
//! are parsed by [`crate::platform::input`].)

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::config::DEFAULT_BODY_LIMIT_BYTES;
use crate::platform::error::ApiError;

/// A JSON request body: `application/json` (415 otherwise), at most the body limit (413),
/// valid JSON (400) of the expected shape (400 naming the field).
pub struct JsonBody<T>(pub T);

/// A route's body limit. As a layer (`MethodRouter::layer(BodyLimit(n))`) it refuses a request
/// whose `Content-Length` is over `n` with 413 before anything reads the body — before auth, rate
/// limits or the database, and without waiting for a body that may never come — and leaves
/// itself in the request's extensions for [`JsonBody`] and [`read_body`], which still cut off a
/// body that lied about its length or declared none. Routes without it get
/// [`DEFAULT_BODY_LIMIT_BYTES`].
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

impl<S> tower::Layer<S> for BodyLimit {
    type Service = LimitedBody<S>;

    fn layer(&self, inner: S) -> LimitedBody<S> {
        LimitedBody {
            inner,
            limit: *self,
        }
    }
}

/// [`BodyLimit`]'s service.
#[derive(Clone, Debug)]
pub struct LimitedBody<S> {
    inner: S,
    limit: BodyLimit,
}

impl<S> tower::Service<Request> for LimitedBody<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        S::Future,
        std::future::Ready<Result<Response, std::convert::Infallible>>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let limit = self.limit.0;
        if declared_length(request.headers()).is_some_and(|n| n > limit as u64) {
            // The body stays unread: hyper skips what has already arrived and otherwise closes
            // the connection after the answer, and a client that sent `Expect: 100-continue`
            // never gets its 100 and never sends the body.
            let response = ApiError::PayloadTooLarge { limit }.into_response();
            return futures_util::future::Either::Right(std::future::ready(Ok(response)));
        }
        request.extensions_mut().insert(self.limit);
        futures_util::future::Either::Left(self.inner.call(request))
    }
}

/// The body length a request declares (`Content-Length`), if it declares one we can read.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(DEFAULT_BODY_LIMIT_BYTES);
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType {
                expected: "application/json",
            });
        }
        // A route without the `BodyLimit` layer: refused here, still before reading a byte.
        if declared_length(req.headers()).is_some_and(|n| n > limit as u64) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let bytes = read_body(req.into_body(), limit).await?;
        let value = parse_json(&bytes)?;
        Ok(JsonBody(value))
    }
}

/// A JSON body that may be absent: none (`Ok(None)`) when the request has no body at all;
/// otherwise the rules of [`JsonBody`] (415, 413, 400).
pub async fn optional_json_body<T: DeserializeOwned>(req: Request) -> Result<Option<T>, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map(|l| l.0)
        .unwrap_or(DEFAULT_BODY_LIMIT_BYTES);
    let json = is_json_content_type(req.headers());
    let bytes = read_body(req.into_body(), limit).await?;
    if bytes.is_empty() {
        return Ok(None);
    }
    if !json {
        return Err(ApiError::UnsupportedMediaType {
            expected: "application/json",
        });
    }
    parse_json(&bytes).map(Some)
}

/// Reads a body up to `limit` bytes; a longer one is 413 whether or not it declared its length.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    use http_body_util::BodyExt;
    limited.collect().await.map(|c| c.to_bytes()).map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::bad_parameter("body", "the request body could not be read")
        }
    })
}

/// Parses JSON, telling a syntax error (400 `malformed_json`) from a wrong shape (400 naming
/// the field at fault, by its path).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                let param = match path.as_str() {
                    "." | "" => missing_field(&message).unwrap_or("body").to_owned(),
                    p => p.to_owned(),
                };
                ApiError::bad_parameter(param, message)
            }
            _ => ApiError::MalformedJson(strip_position(&inner.to_string())),
        }
    })
}

/// The field a "missing field `x`" or "unknown field `x`" message is about.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))
        .and_then(|rest| rest.split('`').next())
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn is_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == mime::APPLICATION
                && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
        })
}

/// Gives axum's bodiless rejections (405 from a method router, 413 from a body limit) the JSON
/// error shape, keeping their headers (`Allow`); every other response passes as it is.
pub fn with_json_error_shape(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed {
            allow: response
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        },
        StatusCode::NOT_FOUND => ApiError::RouteNotFound,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: DEFAULT_BODY_LIMIT_BYTES,
        },
        _ => return response,
    };
    error.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Prompt {
        prompt: String,
    }

    #[test]
    fn malformed_json_is_malformed_json() {
        let err = parse_json::<Prompt>(b"{\"prompt\":").unwrap_err();
        assert_eq!(err.code(), "malformed_json");
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let err = parse_json::<Prompt>(b"{\"prompt\": 5}").unwrap_err();
        assert_eq!(err.status(), 400);
        match err {
            ApiError::BadParameter { param, .. } => assert_eq!(param, "prompt"),
            other => panic!("{other:?}"),
        }
        let err = parse_json::<Prompt>(b"{}").unwrap_err();
        match err {
            ApiError::BadParameter { param, .. } => assert_eq!(param, "prompt"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_content_types_are_recognised() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(is_json_content_type(&h));
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_json_content_type(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/merge-patch+json".parse().unwrap(),
        );
        assert!(is_json_content_type(&h));
    }

    mod extractor {
        use super::*;
        use axum::routing::post;
        use axum::Router;
        use http_body_util::BodyExt;
        use tower::ServiceExt;

        async fn echo(JsonBody(p): JsonBody<Prompt>) -> String {
            p.prompt
        }

        async fn send(req: axum::http::Request<Body>) -> (u16, serde_json::Value) {
            let router = Router::new().route("/", post(echo));
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            (status, body)
        }

        fn request(content_type: &str, body: impl Into<Body>) -> axum::http::Request<Body> {
            axum::http::Request::post("/")
                .header(header::CONTENT_TYPE, content_type)
                .body(body.into())
                .unwrap()
        }

        #[tokio::test]
        async fn a_valid_body_is_parsed() {
            let req = request("application/json", r#"{"prompt":"héllo ✨"}"#);
            let router = Router::new().route("/", post(echo));
            let resp = router.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], "héllo ✨".as_bytes());
        }

        #[tokio::test]
        async fn the_wrong_content_type_is_415() {
            let (status, body) = send(request("text/plain", r#"{"prompt":"x"}"#)).await;
            assert_eq!(status, 415);
            assert_eq!(body["error"]["code"], "unsupported_media_type");
        }

        #[tokio::test]
        async fn a_body_declared_too_large_is_413() {
            let big = format!(r#"{{"prompt":"{}"}}"#, "a".repeat(DEFAULT_BODY_LIMIT_BYTES));
            let mut req = request("application/json", big.clone());
            req.headers_mut()
                .insert(header::CONTENT_LENGTH, big.len().into());
            let (status, body) = send(req).await;
            assert_eq!(status, 413);
            assert_eq!(body["error"]["code"], "payload_too_large");
        }

        #[tokio::test]
        async fn a_streamed_body_without_length_past_the_limit_is_413() {
            let chunks = (0..100).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024]));
            let body = Body::from_stream(futures_util::stream::iter(chunks));
            let (status, _) = send(request("application/json", body)).await;
            assert_eq!(status, 413);
        }

        #[tokio::test]
        async fn a_body_declared_too_large_is_refused_without_waiting_for_it() {
            let mut req = request("application/json", never_ending_body());
            req.headers_mut()
                .insert(header::CONTENT_LENGTH, (100u64 << 20).into());
            let answered = tokio::time::timeout(std::time::Duration::from_secs(5), send(req));
            let (status, body) = answered.await.expect("answered before the body came");
            assert_eq!(status, 413);
            assert_eq!(body["error"]["code"], "payload_too_large");
        }

        #[tokio::test]
        async fn the_body_limit_layer_refuses_a_declared_length_before_the_handler_runs() {
            use std::sync::atomic::{AtomicUsize, Ordering};
            let called = std::sync::Arc::new(AtomicUsize::new(0));
            let seen = called.clone();
            let router = Router::new().route(
                "/",
                post(move |req: Request| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    async move { format!("{:?}", req.extensions().get::<BodyLimit>()) }
                })
                .layer(BodyLimit(10)),
            );
            let mut req = request("application/json", never_ending_body());
            req.headers_mut().insert(header::CONTENT_LENGTH, 11.into());
            let resp = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                router.clone().oneshot(req),
            )
            .await
            .expect("answered before the body came")
            .unwrap();
            assert_eq!(resp.status(), 413);
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body["error"]["code"], "payload_too_large");
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("10 bytes"));
            assert_eq!(called.load(Ordering::SeqCst), 0, "the handler ran");

            // At the limit it passes, and the handler finds the route's limit.
            let mut req = request("application/json", "0123456789");
            req.headers_mut().insert(header::CONTENT_LENGTH, 10.into());
            let resp = router.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], b"Some(BodyLimit(10))");
            assert_eq!(called.load(Ordering::SeqCst), 1);
        }

        /// A body whose bytes never come, as from a client that declared a length and stopped.
        fn never_ending_body() -> Body {
            Body::from_stream(futures_util::stream::pending::<
                Result<Vec<u8>, std::io::Error>,
            >())
        }

        #[tokio::test]
        async fn malformed_json_is_400() {
            let (status, body) = send(request("application/json", "{\"prompt\": ")).await;
            assert_eq!(status, 400);
            assert_eq!(body["error"]["code"], "malformed_json");
        }

        #[tokio::test]
        async fn a_wrong_shape_is_400_naming_the_field() {
            let (status, body) = send(request("application/json", r#"{"prompt": ["x"]}"#)).await;
            assert_eq!(status, 400);
            assert_eq!(body["error"]["param"], "prompt");
        }
    }
}

/// The headers `public/` is served with, by `gcbb dev` and (from `vercel.json`'s `headers`) by
/// Vercel: a Content-Security-Policy that lets the page load only its own scripts, styles and
/// API, and images only from itself and the avatar hosts; no MIME sniffing; no framing.
pub fn static_file_headers(
    avatar_hosts: &crate::config::AvatarHosts,
) -> [(&'static str, String); 3] {
    [
        (
            "content-security-policy",
            content_security_policy(avatar_hosts),
        ),
        ("x-content-type-options", "nosniff".to_owned()),
        // Older browsers that don't know frame-ancestors.
        ("x-frame-options", "DENY".to_owned()),
    ]
}

/// The page's Content-Security-Policy, with `img-src` limited to `avatar_hosts`.
pub fn content_security_policy(avatar_hosts: &crate::config::AvatarHosts) -> String {
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: {}; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'",
        avatar_hosts.csp_sources().join(" ")
    )
}

#[cfg(test)]
mod static_header_tests {
    use super::*;
    use crate::config::AvatarHosts;
    use crate::routes::VercelJson;

    #[test]
    fn vercel_json_serves_public_with_the_headers_gcbb_dev_sends_for_the_default_hosts() {
        let vercel = VercelJson::embedded();
        for (name, value) in static_file_headers(&AvatarHosts::default()) {
            assert_eq!(
                vercel.header_value(name).as_deref(),
                Some(value.as_str()),
                "{name}"
            );
        }
        let csp = content_security_policy(&AvatarHosts::default());
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains(
            "img-src 'self' data: https://img.clerk.com https://images.clerk.dev https://res.cloudinary.com;"
        ));
    }
}
