//! What every function's router is built with: routes that answer on any path (Vercel delivers
//! the original, pre-rewrite path), a request span, CORS, and the layer that gives axum's own
//! 404/405 answers our JSON error shape.

use axum::response::Response;
use axum::routing::MethodRouter;
use axum::Router;

use crate::platform::cors::{apply_cors, Cors};
use crate::platform::telemetry::{trace_request, RouteName};

/// A feature's router: `methods` on any path (on Vercel a function receives the original,
/// pre-rewrite path, so a function must not care which path it was reached by), its responses
/// marked with the feature's `route` name for the request span.
pub fn any_path<S: Clone + Send + Sync + 'static>(
    route: &'static str,
    methods: MethodRouter<S>,
) -> Router<S> {
    Router::new()
        .route("/", methods.clone())
        .route("/{*path}", methods)
        .layer(axum::middleware::map_response(
            move |mut response: Response| async move {
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
    use tower::Layer;
    let errors = axum::middleware::from_fn(crate::platform::http::json_errors).layer(router);
    let cors = axum::middleware::from_fn_with_state(cors, apply_cors).layer(errors);
    let traced = axum::middleware::from_fn(trace_request).layer(cors);
    Router::new().fallback_service(traced)
}
