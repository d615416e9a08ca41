//! What every function's router is built with: routes that answer on any path (Vercel delivers
//! the original, pre-rewrite path), and the layer that gives axum's own 404/405 answers our
//! JSON error shape.

use axum::routing::MethodRouter;
use axum::Router;

/// A router that answers `methods` on any path: on Vercel a function receives the original
/// (pre-rewrite) path, so a function must not care which path it was reached by.
pub fn any_path<S: Clone + Send + Sync + 'static>(methods: MethodRouter<S>) -> Router<S> {
    Router::new()
        .route("/", methods.clone())
        .route("/{*path}", methods)
}

/// The layers every function gets: our JSON error shape on axum's own 404/405 answers.
///
/// Wrapped around the whole router rather than added with `Router::layer`, because a method
/// router sets `Allow` on its 405 only after its inner layers have run.
pub fn function_layers(router: Router) -> Router {
    use tower::Layer;
    Router::new().fallback_service(
        axum::middleware::from_fn(crate::platform::http::json_errors).layer(router),
    )
}
