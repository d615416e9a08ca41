//! What every function's router is built with: a feature's methods answering on any path
//! (Vercel delivers the original, pre-rewrite path), a request span, CORS, and our JSON error
//! shape on axum's own 404/405 answers.
//!
//! These wrap every request of every function, so they are written for a request that costs
//! nothing: one hand-written service instead of a stack of `from_fn` middlewares (each of which
//! clones the service and boxes a future per request).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use axum::routing::MethodRouter;
use axum::Router;
use tower::{Service, ServiceExt};

use crate::platform::cors::{apply_cors, Cors};
use crate::platform::http::with_json_error_shape;
use crate::platform::telemetry::{trace_request, RouteName};

/// One function: `api/<name>.rs`, served at `/api/<name>`, and its feature's router (the
/// functions themselves are listed in `crate::routes`).
///
/// A feature's router is a [`MethodRouter`]: it answers by method on any path (on Vercel a
/// function receives the original, pre-rewrite path, so a function must not care which path it
/// was reached by), with no path matching, capture or router level of its own per request.
pub struct Function {
    pub name: &'static str,
    pub router: fn(std::sync::Arc<crate::platform::app::App>) -> MethodRouter,
}

/// The layers every function gets: a request span around everything, CORS (inside the span, so
/// preflights are logged; outside the error shape, so errors carry CORS headers too), and our
/// JSON error shape on axum's own 404/405 answers.
///
/// Wrapped around the whole router rather than added with `Router::layer`, because a method
/// router sets `Allow` on its 405 only after its inner layers have run (and CORS reads it).
/// `route` names the function in each request's log line.
pub fn function_layers(route: &'static str, router: MethodRouter, cors: Cors) -> Router {
    layered(Some(route), router, cors)
}

/// [`function_layers`] around any service answering requests (the local server's dispatch to
/// every function, which names the function that answered itself: `route` None): one router on
/// the outside, so callers hold a `Router` whatever is inside.
pub fn layered<S>(route: Option<&'static str>, inner: S, cors: Cors) -> Router
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    Router::new().fallback_service(FunctionService::new(route, inner, cors))
}

/// [`function_layers`]' service: the request traced, CORS applied, the inner service's answer in
/// our error shape and marked with the function's name. Served as it is where the server holds
/// no router of its own (`gcbb dev`), one router level less per request.
#[derive(Clone)]
pub struct FunctionService<S> {
    inner: S,
    cors: Cors,
    route: Option<&'static str>,
}

impl<S> FunctionService<S> {
    /// `inner` behind the layers; `route` names the function in each request's log line (None
    /// when `inner` names the function that answered itself).
    pub fn new(route: Option<&'static str>, inner: S, cors: Cors) -> Self {
        FunctionService { inner, cors, route }
    }
}

impl<S> Service<Request> for FunctionService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        let cors = self.cors.clone();
        let route = self.route;
        Box::pin(async move {
            Ok(trace_request(request, |request| async move {
                apply_cors(&cors, request, |request| async move {
                    let Ok(mut response) = inner.oneshot(request).await;
                    if let Some(route) = route {
                        response.extensions_mut().insert(RouteName(route));
                    }
                    with_json_error_shape(response)
                })
                .await
            })
            .await)
        })
    }
}
