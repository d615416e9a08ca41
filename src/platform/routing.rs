//! What every function's router is built with: routes that answer on any path (Vercel delivers
//! the original, pre-rewrite path), a request span, CORS, and our JSON error shape on axum's own
//! 404/405 answers.
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

/// A feature's router: `methods` on any path (on Vercel a function receives the original,
/// pre-rewrite path, so a function must not care which path it was reached by), its responses
/// marked with the feature's `route` name for the request's log line.
pub fn any_path<S: Clone + Send + Sync + 'static>(
    route: &'static str,
    methods: MethodRouter<S>,
) -> Router<S> {
    Router::new()
        .route("/", methods.clone())
        .route("/{*path}", methods)
        .layer(tower::util::MapResponseLayer::new(
            move |mut response: Response| {
                response.extensions_mut().insert(RouteName(route));
                response
            },
        ))
}

/// The layers every function gets: a request span around everything, CORS (inside the span, so
/// preflights are logged; outside the error shape, so errors carry CORS headers too), and our
/// JSON error shape on axum's own 404/405 answers.
///
/// Wrapped around the whole router rather than added with `Router::layer`, because a method
/// router sets `Allow` on its 405 only after its inner layers have run (and CORS reads it).
pub fn function_layers(router: Router, cors: Cors) -> Router {
    Router::new().fallback_service(FunctionService {
        inner: router,
        cors,
    })
}

/// [`function_layers`]' service: the request traced, CORS applied, the router's answer in our
/// error shape.
#[derive(Clone)]
struct FunctionService {
    inner: Router,
    cors: Cors,
}

impl Service<Request> for FunctionService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        let cors = self.cors.clone();
        Box::pin(async move {
            Ok(trace_request(request, |request| async move {
                apply_cors(&cors, request, |request| async move {
                    let Ok(response) = inner.oneshot(request).await;
                    with_json_error_shape(response)
                })
                .await
            })
            .await)
        })
    }
}
