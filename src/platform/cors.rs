//! Cross-origin requests from browsers: one layer around every function (through
//! [`crate::platform::routing::function_layers`], so `gcbb dev` has it too), configured by
//! `CORS_ALLOWED_ORIGINS`.
//!
//! - **Preflights** (`OPTIONS` with `Access-Control-Request-Method`) from an allowed origin are
//!   answered here, 204, with the methods the route itself serves: the layer asks the route with
//!   a bodiless `OPTIONS` and reads the `Allow` of its 405, so the answer can't drift from the
//!   handlers (and a preflight for a method the route doesn't serve gets no allowance for it).
//!   Any other `OPTIONS` (no request method, or an origin not allowed) reaches the route as
//!   before: 405.
//! - **Public responses** (`Cache-Control: public`, to a request with no credentials at all:
//!   the anonymous dashboard) get `Access-Control-Allow-Origin: *` whatever the `Origin`, and no
//!   `Vary: Origin`. The CDN keeps one copy per URL and serves it to everyone; a copy whose CORS
//!   headers depended on the `Origin` would hand one origin's answer to another (or none to an
//!   allowed one). The data is public, so `*` shows nothing a plain `curl` doesn't.
//! - **Everything else** (credentials, streams, errors) varies by origin: `Vary: Origin` always,
//!   and the allowed origin echoed. No `Access-Control-Allow-Credentials`: front ends send
//!   `Authorization: Bearer`, which needs none, and without it no other site can make a
//!   browser send the `__session` cookie cross-origin and read the answer.
//! - An origin not allowed gets no CORS header at all. Unset or empty: same-origin only, and
//!   this layer changes nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

use crate::config::{CorsConfig, OriginPattern};
use crate::platform::auth::has_credentials;
use crate::platform::telemetry::RouteName;

/// Request headers a cross-origin caller may send. `user-agent` because the AI SDK's
/// `callCompletionApi` (`useCompletion`) sets it, and browsers that let scripts set it
/// (Firefox) ask for it in the preflight.
pub const ALLOWED_HEADERS: &str = "authorization, content-type, user-agent";

/// Response headers a cross-origin caller may read beyond the CORS-safelisted ones.
pub const EXPOSED_HEADERS: &str = "x-cache, server-timing, retry-after, x-ratelimit-limit, \
                                   x-ratelimit-remaining, x-ratelimit-reset, x-request-id";

/// How long a browser may reuse a preflight's answer: Chromium's ceiling (Firefox allows a day).
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// The allowed origins, shared by every request.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    allowed: Arc<[String]>,
    /// `https://*.example.com`-style entries: `*` is the rest of exactly one DNS label.
    patterns: Arc<[OriginPattern]>,
}

impl Cors {
    pub fn new(config: &CorsConfig) -> Cors {
        Cors {
            allowed: config.allowed_origins.clone().into(),
            patterns: config.allowed_patterns.clone().into(),
        }
    }

    /// False when no origin is allowed (same-origin only): the layer then changes nothing.
    pub fn is_enabled(&self) -> bool {
        !self.allowed.is_empty() || !self.patterns.is_empty()
    }

    /// The request's `Origin` when it is one of the allowed ones. Browsers send an origin
    /// serialized exactly as the configuration is normalized, so bytes are compared.
    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let mut origins = headers.get_all(header::ORIGIN).iter();
        let origin = origins.next()?;
        if origins.next().is_some() {
            return None;
        }
        let exact = self
            .allowed
            .iter()
            .any(|a| a.as_bytes() == origin.as_bytes());
        let matched = exact
            || origin
                .to_str()
                .is_ok_and(|o| self.patterns.iter().any(|p| p.matches(o)));
        matched.then(|| origin.clone())
    }
}

/// The layer: see the module's documentation.
/// `next` runs the rest of the stack: with the request, or (for a preflight) with its probe.
pub async fn apply_cors<F, Fut>(cors: &Cors, request: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    if !cors.is_enabled() {
        return next(request).await;
    }
    let origin = cors.allowed_origin(request.headers());
    let credentials = has_credentials(request.headers());
    if let Some(origin) = origin.as_ref().filter(|_| is_preflight(&request)) {
        let origin = origin.clone();
        let route_answer = next(probe_of(request)).await;
        return answer_preflight(origin, route_answer);
    }
    let mut response = next(request).await;
    let headers = response.headers_mut();
    if !credentials && is_public(headers) {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        insert_exposed(headers, HeaderValue::from_static("*"));
        return response;
    }
    add_vary_origin(headers);
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        insert_exposed(headers, origin);
    }
    response
}

/// A CORS preflight: `OPTIONS` naming the method the browser wants to send.
fn is_preflight(request: &Request) -> bool {
    request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The preflight turned into the question "which methods do you serve?": a bodiless `OPTIONS`
/// on the same path, which no route handles, so its 405 names them in `Allow`. Nothing of the
/// browser's request goes along but the path and what the platform put in the extensions.
fn probe_of(request: Request) -> Request {
    let (parts, _body) = request.into_parts();
    let mut probe = Request::new(axum::body::Body::empty());
    *probe.method_mut() = Method::OPTIONS;
    *probe.uri_mut() = parts.uri;
    *probe.extensions_mut() = parts.extensions;
    probe
}

/// 204 with the route's methods when it answered the probe with its `Allow`; otherwise (no such
/// route: 404) its own answer, which the browser takes as a failed preflight.
fn answer_preflight(origin: HeaderValue, route_answer: Response) -> Response {
    let allow = (route_answer.status() == StatusCode::METHOD_NOT_ALLOWED)
        .then(|| route_answer.headers().get(header::ALLOW))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(methods_of);
    let Some(methods) = allow else {
        let mut response = route_answer;
        add_vary_origin(response.headers_mut());
        return response;
    };
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    if let Some(route) = route_answer.extensions().get::<RouteName>() {
        response.extensions_mut().insert(*route);
    }
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if let Ok(v) = HeaderValue::from_str(&methods) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(PREFLIGHT_MAX_AGE.as_secs()),
    );
    add_vary_origin(h);
    response
}

/// An `Allow` value as `Access-Control-Allow-Methods`: the same methods, `OPTIONS` left out
/// (no route serves it; only this layer answers it).
fn methods_of(allow: &str) -> String {
    allow
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && !m.eq_ignore_ascii_case("OPTIONS"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A response any cache may keep and share: `Cache-Control` holds `public`.
fn is_public(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("public"))
}

/// What a cross-origin caller may read: our headers, and the timings of `Server-Timing` (which
/// browsers hide from the Resource Timing API without `Timing-Allow-Origin`).
fn insert_exposed(headers: &mut HeaderMap, timing_origin: HeaderValue) {
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    headers.insert("timing-allow-origin", timing_origin);
}

/// Adds `Origin` to `Vary`, keeping what is there (a `Vary: Accept-Encoding`).
fn add_vary_origin(headers: &mut HeaderMap) {
    let already = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            let v = v.trim();
            v == "*" || v.eq_ignore_ascii_case("origin")
        });
    if !already {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, patch};
    use axum::Router;
    use tower::ServiceExt;

    const APP: &str = "https://app.example";

    fn cors() -> Cors {
        Cors::new(&CorsConfig {
            allowed_origins: vec![APP.into(), "http://localhost:5173".into()],
            ..CorsConfig::default()
        })
    }

    /// A router shaped like a function's: a GET+POST route, a PATCH route, one public answer.
    fn router(cors: Cors) -> Router {
        let public = || async {
            (
                [(header::CACHE_CONTROL, "public, max-age=0, must-revalidate")],
                "page",
            )
        };
        let private = || async { ([(header::CACHE_CONTROL, "private, no-store")], "mine") };
        let routes = Router::new()
            .route("/chat", get(private).post(private))
            .route("/edit", patch(private))
            .route("/public", get(public));
        // Around the whole router, as `function_layers` puts it: a method router's 405 gets
        // its `Allow` outside any layer added with `Router::layer`.
        let layered = tower::service_fn(move |request: Request| {
            let (cors, routes) = (cors.clone(), routes.clone());
            async move {
                let response = apply_cors(&cors, request, |request| async move {
                    let Ok(response) = routes.oneshot(request).await;
                    response
                })
                .await;
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        Router::new().fallback_service(layered)
    }

    async fn send(cors: Cors, method: Method, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        router(cors)
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header_of<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers().get(name).map(|v| v.to_str().unwrap())
    }

    fn cors_headers(r: &Response) -> Vec<String> {
        r.headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| k.starts_with("access-control-") || k == "timing-allow-origin")
            .collect()
    }

    #[tokio::test]
    async fn a_preflight_from_an_allowed_origin_is_204_with_the_routes_own_methods() {
        for (path, methods) in [("/chat", "GET, HEAD, POST"), ("/edit", "PATCH")] {
            let r = send(
                cors(),
                Method::OPTIONS,
                path,
                &[
                    ("origin", APP),
                    ("access-control-request-method", "PATCH"),
                    (
                        "access-control-request-headers",
                        "authorization, content-type",
                    ),
                ],
            )
            .await;
            assert_eq!(r.status(), 204, "{path}");
            assert_eq!(header_of(&r, "access-control-allow-origin"), Some(APP));
            assert_eq!(header_of(&r, "access-control-allow-methods"), Some(methods));
            assert_eq!(
                header_of(&r, "access-control-allow-headers"),
                Some(ALLOWED_HEADERS)
            );
            assert_eq!(header_of(&r, "access-control-max-age"), Some("7200"));
            assert_eq!(header_of(&r, "vary"), Some("Origin"));
            assert_eq!(header_of(&r, "access-control-allow-credentials"), None);
        }
    }

    #[tokio::test]
    async fn other_options_requests_reach_the_route() {
        // Not a preflight: an ordinary request that happens to be OPTIONS, answered 405, which
        // an allowed origin may read like any other answer.
        let r = send(cors(), Method::OPTIONS, "/chat", &[("origin", APP)]).await;
        assert_eq!(r.status(), 405);
        assert_eq!(header_of(&r, "allow"), Some("GET,HEAD,POST"));
        assert_eq!(header_of(&r, "access-control-allow-origin"), Some(APP));
        assert_eq!(header_of(&r, "access-control-allow-methods"), None);
        // A preflight from an origin not allowed, or from no origin, gets no CORS header.
        let cases: [&[(&str, &str)]; 2] = [
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
            ],
            &[("access-control-request-method", "POST")],
        ];
        for headers in cases {
            let r = send(cors(), Method::OPTIONS, "/chat", headers).await;
            assert_eq!(r.status(), 405, "{headers:?}");
            assert_eq!(cors_headers(&r), Vec::<String>::new(), "{headers:?}");
        }
        // No such route: the preflight fails as the route answers.
        let r = send(
            cors(),
            Method::OPTIONS,
            "/nope",
            &[("origin", APP), ("access-control-request-method", "GET")],
        )
        .await;
        assert_eq!(r.status(), 404);
        assert_eq!(cors_headers(&r), Vec::<String>::new());
    }

    #[tokio::test]
    async fn an_allowed_origin_is_echoed_with_vary_and_the_exposed_headers() {
        let r = send(
            cors(),
            Method::POST,
            "/chat",
            &[("origin", APP), ("authorization", "Bearer x")],
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(header_of(&r, "access-control-allow-origin"), Some(APP));
        assert_eq!(header_of(&r, "vary"), Some("Origin"));
        assert_eq!(
            header_of(&r, "access-control-expose-headers"),
            Some(EXPOSED_HEADERS)
        );
        assert_eq!(header_of(&r, "timing-allow-origin"), Some(APP));
        assert_eq!(header_of(&r, "access-control-allow-credentials"), None);
    }

    #[tokio::test]
    async fn a_disallowed_or_absent_origin_gets_only_vary() {
        for headers in [
            &[("origin", "https://evil.example")][..],
            &[("origin", "https://app.example.evil.example")][..],
            &[("origin", "null")][..],
            &[("origin", APP), ("origin", APP)][..],
            &[][..],
        ] {
            let r = send(cors(), Method::GET, "/chat", headers).await;
            assert_eq!(r.status(), 200);
            assert_eq!(cors_headers(&r), Vec::<String>::new(), "{headers:?}");
            assert_eq!(header_of(&r, "vary"), Some("Origin"), "{headers:?}");
        }
    }

    #[tokio::test]
    async fn a_public_response_without_credentials_is_star_for_every_origin_and_no_vary() {
        for headers in [
            &[("origin", APP)][..],
            &[("origin", "https://evil.example")][..],
            &[][..],
        ] {
            let r = send(cors(), Method::GET, "/public", headers).await;
            assert_eq!(header_of(&r, "access-control-allow-origin"), Some("*"));
            assert_eq!(header_of(&r, "timing-allow-origin"), Some("*"));
            assert_eq!(
                header_of(&r, "access-control-expose-headers"),
                Some(EXPOSED_HEADERS)
            );
            assert_eq!(header_of(&r, "vary"), None, "{headers:?}");
        }
        // With credentials the same answer is not treated as public.
        let r = send(
            cors(),
            Method::GET,
            "/public",
            &[("origin", APP), ("cookie", "__session=x")],
        )
        .await;
        assert_eq!(header_of(&r, "access-control-allow-origin"), Some(APP));
        assert_eq!(header_of(&r, "vary"), Some("Origin"));
    }

    #[tokio::test]
    async fn with_no_allowed_origin_nothing_changes() {
        let off = Cors::default();
        let r = send(
            off.clone(),
            Method::OPTIONS,
            "/chat",
            &[("origin", APP), ("access-control-request-method", "POST")],
        )
        .await;
        assert_eq!(r.status(), 405);
        for path in ["/chat", "/public"] {
            let r = send(off.clone(), Method::GET, path, &[("origin", APP)]).await;
            assert_eq!(cors_headers(&r), Vec::<String>::new());
            assert_eq!(header_of(&r, "vary"), None);
        }
    }

    #[test]
    fn vary_keeps_what_is_there_and_adds_origin_once() {
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        add_vary_origin(&mut h);
        add_vary_origin(&mut h);
        let all: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(all, ["Accept-Encoding", "Origin"]);
        assert_eq!(methods_of("GET,HEAD,OPTIONS, POST"), "GET, HEAD, POST");
    }
}
