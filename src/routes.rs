//! The functions: each `api/*.rs` with its feature's router, and the one router that serves them
//! all the way Vercel does (`gcbb dev`, the tests): `vercel.json`'s rewrites applied with the
//! source's parameters appended to the query string, the original path kept.
//!
//! The top of the crate: it names every feature, and nothing below imports it.

use std::collections::HashMap;
use std::sync::Arc;

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::routing::MethodRouter;
use axum::Router;
use futures_util::future::Either;
use serde::Deserialize;
use tower::Service;

use crate::platform::app::App;
use crate::platform::cors::Cors;
use crate::platform::error::ApiError;
use crate::platform::routing::FunctionService;
use crate::platform::telemetry::RouteName;

/// Each shim in `api/` (and in `lambda/functions/`) serves one of these functions.
pub use crate::platform::routing::Function;

pub const HEALTH: Function = Function {
    name: "health",
    router: crate::health::router,
};
pub const DASHBOARD_PREFETCH: Function = Function {
    name: "dashboard-prefetch",
    router: crate::dashboard::router,
};
pub const CHAT_STREAM: Function = Function {
    name: "chat-stream",
    router: crate::chat::router,
};
pub const GROUP_CHAT: Function = Function {
    name: "group-chat",
    router: crate::chat::group::router,
};
pub const COMPANION: Function = Function {
    name: "companion",
    router: crate::companion::router,
};
pub const CRON_REFRESH: Function = Function {
    name: "cron-refresh",
    router: crate::refresh::router,
};

/// All functions, in the order `gcbb dev` prints them.
pub const FUNCTIONS: &[Function] = &[
    HEALTH,
    DASHBOARD_PREFETCH,
    CHAT_STREAM,
    GROUP_CHAT,
    COMPANION,
    CRON_REFRESH,
];

/// The parts of `vercel.json` that routing needs.
#[derive(Debug, Clone, Deserialize)]
pub struct VercelJson {
    #[serde(default)]
    pub rewrites: Vec<Rewrite>,
    #[serde(default)]
    pub crons: Vec<Cron>,
    /// Response headers by path (`public/`'s security headers).
    #[serde(default)]
    pub headers: Vec<HeaderRule>,
}

/// A `headers` entry: what Vercel adds to responses whose path matches `source`.
#[derive(Debug, Clone, Deserialize)]
pub struct HeaderRule {
    pub source: String,
    pub headers: Vec<HeaderEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HeaderEntry {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Rewrite {
    pub source: String,
    pub destination: String,
}

/// A scheduled call: Vercel Cron sends `GET path`; the Lambda adapter delivers an EventBridge
/// schedule to the function this path reaches.
#[derive(Debug, Clone, Deserialize)]
pub struct Cron {
    pub path: String,
    pub schedule: String,
}

/// `vercel.json` as built into this binary, so `gcbb dev` and the deployed routes can't drift.
pub const VERCEL_JSON: &str = include_str!("../vercel.json");

impl VercelJson {
    pub fn embedded() -> Self {
        serde_json::from_str(VERCEL_JSON).expect("vercel.json is valid JSON")
    }

    /// The value of header `name` that a `headers` rule whose source is `/(.*)` (every path,
    /// the one form of rule this project writes) gives every response.
    pub fn header_value(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|rule| rule.source == "/(.*)")
            .flat_map(|rule| &rule.headers)
            .find(|h| h.key.eq_ignore_ascii_case(name))
            .map(|h| h.value.clone())
    }
}

/// `vercel.json`'s rewrites, compiled: which function a path reaches, and the URI that function
/// sees. Shared by the local server ([`router`]) and the Lambda adapter, so a path reaches the
/// same function with the same parameters everywhere.
#[derive(Debug, Clone)]
pub struct Rewrites {
    patterns: Vec<Pattern>,
}

impl Rewrites {
    pub fn new(vercel: &VercelJson) -> Rewrites {
        Rewrites {
            patterns: vercel
                .rewrites
                .iter()
                .filter_map(Pattern::compile)
                .collect(),
        }
    }

    /// The function `uri` reaches and the URI it sees when that is another: through a rewrite,
    /// with the source's parameters appended to the query string and the original path kept (as
    /// Vercel delivers it); `None` when it sees `uri` as it is (directly at `/api/<name>`, or a
    /// rewrite without parameters). Whether a function of that name exists is
    /// the caller's to check: this names no function, so a binary that resolves paths links
    /// no feature it doesn't serve.
    pub fn resolve<'a>(&'a self, uri: &'a Uri) -> Option<(&'a str, Option<Uri>)> {
        let path = uri.path();
        for p in &self.patterns {
            if let Some(params) = p.matches(path) {
                if params.is_empty() {
                    return Some((&p.function, None));
                }
                let mut query = uri.query().unwrap_or_default().to_owned();
                for (k, v) in params {
                    let pair = url::form_urlencoded::Serializer::new(String::new())
                        .append_pair(&k, &v)
                        .finish();
                    if !query.is_empty() {
                        query.push('&');
                    }
                    query.push_str(&pair);
                }
                let rewritten = format!("{path}?{query}").parse().ok()?;
                return Some((&p.function, Some(rewritten)));
            }
        }
        let name = path.strip_prefix("/api/")?.trim_end_matches('/');
        (!name.is_empty() && !name.contains('/')).then_some((name, None))
    }
}

/// A function's answer, marked with the function's name for the request's log line.
pub struct Named<F> {
    route: Option<&'static str>,
    inner: F,
}

impl<F: Future<Output = Result<Response, Infallible>> + Unpin> Future for Named<F> {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(mut response) = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        if let Some(route) = self.route {
            response.extensions_mut().insert(RouteName(route));
        }
        Poll::Ready(Ok(response))
    }
}

/// A compiled rewrite source such as `/api/chat/:chatId`.
#[derive(Debug, Clone)]
struct Pattern {
    segments: Vec<Segment>,
    function: String,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param(String),
}

impl Pattern {
    fn compile(rewrite: &Rewrite) -> Option<Pattern> {
        let segments = rewrite
            .source
            .trim_matches('/')
            .split('/')
            .map(|s| match s.strip_prefix(':') {
                Some(name) => Segment::Param(name.to_owned()),
                None => Segment::Literal(s.to_owned()),
            })
            .collect();
        let function = rewrite
            .destination
            .split('?')
            .next()?
            .strip_prefix("/api/")?
            .to_owned();
        Some(Pattern { segments, function })
    }

    /// The parameters of `path` if it matches (walked segment by segment: every request of
    /// `gcbb dev` tries every pattern, so a miss allocates nothing).
    fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let mut parts = path.trim_matches('/').split('/');
        let mut params = Vec::new();
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => {
                    let value = percent_encoding::percent_decode_str(part)
                        .decode_utf8_lossy()
                        .into_owned();
                    params.push((name.clone(), value));
                }
            }
        }
        parts.next().is_none().then_some(params)
    }
}

/// Every function behind `vercel.json`'s rewrites, plus `fallback` (static files) for paths
/// outside `/api/`.
pub fn router(app: Arc<App>, vercel: &VercelJson, fallback: Router) -> Router {
    Router::new().fallback_service(service(app, vercel, fallback))
}

/// [`router`] as the service inside it, for a server that needs no router of its own.
pub fn service(app: Arc<App>, vercel: &VercelJson, fallback: Router) -> FunctionService<Dispatch> {
    let dispatch = Dispatch {
        functions: Arc::new(
            FUNCTIONS
                .iter()
                .map(|f| (f.name, (f.router)(app.clone())))
                .collect(),
        ),
        rewrites: Arc::new(Rewrites::new(vercel)),
        fallback,
    };
    FunctionService::new(None, dispatch, Cors::new(&app.config.cors))
}

/// Which function a request reaches, as Vercel routes it: a service of its own rather than a
/// router of closures (each router level on the request path clones and boxes per request).
#[derive(Clone)]
pub struct Dispatch {
    functions: Arc<HashMap<&'static str, MethodRouter>>,
    rewrites: Arc<Rewrites>,
    fallback: Router,
}

impl Service<Request> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Named<RouteFuture<Infallible>>, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let not_found = || Either::Right(ready(Ok(ApiError::RouteNotFound.into_response())));
        let routed = self.rewrites.resolve(req.uri()).map(|(name, rewritten)| {
            let function = self.functions.get_key_value(name);
            (
                function.map(|(name, router)| (*name, router.clone())),
                rewritten,
            )
        });
        match routed {
            Some((Some((name, mut router)), rewritten)) => {
                if let Some(uri) = rewritten {
                    *req.uri_mut() = uri;
                }
                Either::Left(Named {
                    route: Some(name),
                    inner: router.call(req),
                })
            }
            Some((None, _)) => not_found(),
            None if req.uri().path().starts_with("/api/") || req.uri().path() == "/api" => {
                not_found()
            }
            None => Either::Left(Named {
                route: None,
                inner: self.fallback.clone().call(req),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(uri: &str) -> Option<(String, Uri)> {
        let uri: Uri = uri.parse().unwrap();
        Rewrites::new(&VercelJson::embedded())
            .resolve(&uri)
            .map(|(f, rewritten)| (f.to_owned(), rewritten.unwrap_or_else(|| uri.clone())))
    }

    #[test]
    fn a_rewrite_appends_its_parameter_to_the_query() {
        let (f, uri) = resolve("/api/chat/abc%20d?x=1").unwrap();
        assert_eq!(f, "chat-stream");
        assert_eq!(uri.path(), "/api/chat/abc%20d");
        assert_eq!(uri.query(), Some("x=1&chatId=abc+d"));
    }

    #[test]
    fn a_function_path_is_served_directly() {
        let (f, _) = resolve("/api/health").unwrap();
        assert_eq!(f, "health");
        // A name is resolved whether or not a function has it; the caller answers 404.
        let (f, _) = resolve("/api/nope").unwrap();
        assert!(!FUNCTIONS.iter().any(|function| function.name == f));
        assert!(resolve("/api/chat/a/b").is_none());
        assert!(resolve("/api/").is_none());
        // An empty id reaches the function itself, which asks for the missing parameter.
        let (f, uri) = resolve("/api/chat/").unwrap();
        assert_eq!((f.as_str(), uri.query()), ("chat-stream", None));
        // The AI SDK's default route, the companion named in the body.
        let (f, uri) = resolve("/api/chat").unwrap();
        assert_eq!((f.as_str(), uri.query()), ("chat-stream", None));
    }

    #[test]
    fn every_rewrite_destination_is_a_function() {
        let patterns: Vec<Pattern> = VercelJson::embedded()
            .rewrites
            .iter()
            .filter_map(Pattern::compile)
            .collect();
        for p in &patterns {
            assert!(
                FUNCTIONS.iter().any(|f| f.name == p.function),
                "{} has no function",
                p.function
            );
        }
        assert_eq!(patterns.len(), VercelJson::embedded().rewrites.len());
    }

    #[test]
    fn every_cron_path_reaches_a_function() {
        let vercel = VercelJson::embedded();
        assert!(!vercel.crons.is_empty());
        let rewrites = Rewrites::new(&vercel);
        for cron in &vercel.crons {
            let uri = cron.path.parse().unwrap();
            let (f, _) = rewrites.resolve(&uri).unwrap();
            assert!(FUNCTIONS.iter().any(|function| function.name == f), "{f}");
        }
    }
}
