//! A Lambda event as the feature's router sees it.
//!
//! A function URL delivers the real path (`/api/chat/abc`), where Vercel delivers the same path
//! with the rewrite's parameters appended to the query string (`?chatId=abc`). The adapter
//! applies `vercel.json`'s rewrites the way `gcbb dev` does ([`gcbb::routes::Rewrites`]), so
//! handlers read parameters one way on every platform, and a request Vercel's way (parameters
//! already in the query) reaches them unchanged in meaning: a parameter given twice keeps its
//! first value.

use axum::body::Body;
use axum::http::{HeaderValue, Request, Uri};
use gcbb::platform::client::PeerAddr;
use gcbb::routes::Rewrites;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;

/// What an invocation's event is.
pub enum Event {
    /// An HTTP request (a function URL's, or an API Gateway HTTP API's), ready for the router.
    Http(Box<Request<Body>>),
    /// Anything else (the JSON the function was invoked with: an EventBridge schedule, a test
    /// invocation from the console).
    Other(bytes::Bytes),
}

/// The HTTP request an event stands for, or the raw event when it is none.
///
/// The address AWS saw (`requestContext.http.sourceIp`) becomes the request's
/// [`PeerAddr`]: anonymous rate limits key on it unless `TRUSTED_PROXY=cloudfront` names
/// CloudFront's `CloudFront-Viewer-Address` (behind CloudFront, `sourceIp` is the edge's own
/// address). It also replaces any `X-Forwarded-For` the client sent, as Vercel's edge does, so
/// no setting can make the client's own claim count.
pub fn classify(req: lambda_http::Request) -> Event {
    let source_ip = match req.request_context_ref() {
        Some(RequestContext::PassThrough) => {
            return Event::Other(collect_body(req.into_body()));
        }
        Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.clone(),
        _ => None,
    };
    let (mut parts, body) = req.into_parts();
    if let Some(ip) = source_ip.as_deref().and_then(|ip| ip.parse().ok()) {
        parts.extensions.insert(PeerAddr(ip));
    }
    parts.headers.remove("x-forwarded-for");
    if let Some(ip) = source_ip.and_then(|ip| HeaderValue::from_str(&ip).ok()) {
        parts.headers.insert("x-forwarded-for", ip);
    }
    Event::Http(Box::new(Request::from_parts(
        parts,
        Body::from(collect_body(body)),
    )))
}

fn collect_body(body: lambda_http::Body) -> bytes::Bytes {
    match body {
        lambda_http::Body::Empty => bytes::Bytes::new(),
        lambda_http::Body::Text(text) => bytes::Bytes::from(text),
        lambda_http::Body::Binary(data) => bytes::Bytes::from(data),
        // The enum is non-exhaustive; its other variants carry no body.
        _ => bytes::Bytes::new(),
    }
}

/// The URI `function`'s router sees for `uri`, when the path reaches that function: through a
/// rewrite (its parameters appended), or at `/api/<function>` directly. `None` for any other
/// path, which this function answers 404 (it can't serve another function's routes).
pub fn route(rewrites: &Rewrites, function: &str, uri: &Uri) -> Option<Uri> {
    rewrites
        .resolve(uri)
        .filter(|(name, _)| *name == function)
        .map(|(_, rewritten)| rewritten.unwrap_or_else(|| uri.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gcbb::platform::input::Query;
    use gcbb::routes::VercelJson;

    fn rewrites() -> Rewrites {
        Rewrites::new(&VercelJson::embedded())
    }

    /// A function URL's event (payload 2.0), as AWS sends it.
    fn function_url_event(method: &str, path: &str, query: &str, body: Option<&str>) -> String {
        serde_json::json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": query,
            "headers": {
                "host": "abc123.lambda-url.eu-west-1.on.aws",
                "content-type": "application/json",
                "x-forwarded-for": "198.51.100.7",
                "x-forwarded-proto": "https",
            },
            "cookies": ["__session=tok"],
            "requestContext": {
                "accountId": "anonymous",
                "apiId": "abc123",
                "domainName": "abc123.lambda-url.eu-west-1.on.aws",
                "domainPrefix": "abc123",
                "http": {
                    "method": method,
                    "path": path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "203.0.113.9",
                    "userAgent": "curl/8"
                },
                "requestId": "9f0c",
                "routeKey": "$default",
                "stage": "$default",
                "time": "28/Nov/2026:23:00:00 +0000",
                "timeEpoch": 1_795_906_800_000_i64
            },
            "body": body,
            "isBase64Encoded": false
        })
        .to_string()
    }

    fn lambda_request(event: &str) -> lambda_http::Request {
        let event: lambda_http::request::LambdaRequest = serde_json::from_str(event).unwrap();
        event.into()
    }

    fn http(event: Event) -> Request<Body> {
        match event {
            Event::Http(req) => *req,
            Event::Other(raw) => panic!("not an HTTP event: {raw:?}"),
        }
    }

    #[test]
    fn a_function_url_event_becomes_the_request_it_describes() {
        let req = http(classify(lambda_request(&function_url_event(
            "POST",
            "/api/chat/abc",
            "x=1",
            Some(r#"{"prompt":"hi"}"#),
        ))));
        assert_eq!(req.method(), "POST");
        assert_eq!(req.uri().path(), "/api/chat/abc");
        assert_eq!(req.uri().query(), Some("x=1"));
        assert_eq!(req.headers()["cookie"], "__session=tok");
        assert_eq!(req.headers()["content-type"], "application/json");
        let body = futures_body(req.into_body());
        assert_eq!(body, r#"{"prompt":"hi"}"#);
    }

    #[test]
    fn the_client_address_is_the_one_aws_saw_not_the_one_the_client_claimed() {
        let req = http(classify(lambda_request(&function_url_event(
            "GET",
            "/api/health",
            "",
            None,
        ))));
        let forwarded: Vec<_> = req.headers().get_all("x-forwarded-for").iter().collect();
        assert_eq!(forwarded, ["203.0.113.9"]);
        assert_eq!(
            req.extensions().get::<PeerAddr>(),
            Some(&PeerAddr("203.0.113.9".parse().unwrap()))
        );
    }

    #[test]
    fn an_event_that_is_no_http_request_passes_through_untouched() {
        let schedule = r#"{"version":"0","id":"1","detail-type":"Scheduled Event","source":"aws.events","account":"1","time":"2026-11-28T23:00:00Z","region":"eu-west-1","resources":["arn:aws:events:eu-west-1:1:rule/refresh"],"detail":{}}"#;
        match classify(lambda_request(schedule)) {
            Event::Other(raw) => assert_eq!(&raw[..], schedule.as_bytes()),
            Event::Http(req) => panic!("a schedule became {} {}", req.method(), req.uri()),
        }
    }

    /// Every rewrite in `vercel.json`: the real path a function URL delivers, Vercel's form (the
    /// parameter already appended) and the destination's form all reach the rewrite's function
    /// with the same parameter; every other function answers 404.
    #[test]
    fn every_rewrite_reaches_its_function_by_the_real_path_and_by_vercels_form() {
        let vercel = VercelJson::embedded();
        let rewrites = rewrites();
        assert!(!vercel.rewrites.is_empty());
        for rewrite in &vercel.rewrites {
            let function = rewrite.destination.trim_start_matches("/api/");
            let mut real = String::new();
            let mut params = Vec::new();
            for segment in rewrite.source.trim_start_matches('/').split('/') {
                real.push('/');
                match segment.strip_prefix(':') {
                    Some(name) => {
                        let value = format!("id_{name}");
                        real.push_str(&value);
                        params.push((name.to_owned(), value));
                    }
                    None => real.push_str(segment),
                }
            }
            let query: String = params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&");
            let vercel_form = format!("{real}?{query}");
            let destination_form = format!("{}?{query}", rewrite.destination);
            for form in [real.as_str(), vercel_form.as_str(), &destination_form] {
                let uri = route(&rewrites, function, &form.parse().unwrap())
                    .unwrap_or_else(|| panic!("{form} does not reach {function}"));
                let seen = Query::of(&uri);
                for (k, v) in &params {
                    assert_eq!(seen.get(k), Some(v.as_str()), "{form}: {k}");
                }
                for other in gcbb::routes::FUNCTIONS
                    .iter()
                    .filter(|f| f.name != function)
                {
                    assert!(
                        route(&rewrites, other.name, &form.parse().unwrap()).is_none(),
                        "{form} reaches {} too",
                        other.name
                    );
                }
            }
        }
    }

    #[test]
    fn a_path_no_rewrite_names_is_not_found_rather_than_served() {
        let rewrites = rewrites();
        for path in ["/", "/api", "/api/nope", "/api/chat/a/b", "/index.html"] {
            assert!(
                route(&rewrites, "chat-stream", &path.parse().unwrap()).is_none(),
                "{path}"
            );
        }
        let uri = route(&rewrites, "health", &"/api/health".parse().unwrap()).unwrap();
        assert_eq!(uri.path(), "/api/health");
    }

    fn futures_body(body: Body) -> String {
        use http_body_util::BodyExt;
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(body.collect())
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
