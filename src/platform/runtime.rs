//! The adapter between Vercel's Rust runtime (`vercel_runtime` 2) and our axum routers.
//!
//! Written here rather than using `vercel_runtime::axum::VercelLayer` because that layer drops
//! the per-request `AppState` (so `wait_until` is lost) and buffers every body whose content type
//! is not SSE or JSON (so a `text/plain` stream would arrive in one piece). This adapter passes
//! request bodies through unbuffered, puts `AppState` into the request extensions, and streams
//! every response body frame by frame. Handlers reach `wait_until` through
//! [`crate::platform::background::Background`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use sync_wrapper::SyncWrapper;
use tower::ServiceExt;
use vercel_runtime::{AppState, ResponseBody};

use crate::platform::app::App;
use crate::platform::cors::Cors;
use crate::platform::routing::{function_layers, Function};

/// Entry point of every `api/*.rs` shim, given its function: builds the process-wide [`App`]
/// from the environment (exiting with the variable's name on a configuration error) and serves
/// the function's router through Vercel's runtime.
pub async fn serve(function: &Function) -> Result<(), vercel_runtime::Error> {
    crate::platform::telemetry::init();
    let app = match App::from_env() {
        Ok(app) => app,
        Err(e) => {
            eprintln!("configuration error: {e}");
            std::process::exit(2);
        }
    };
    let cors = Cors::new(&app.config.cors);
    serve_router(function_layers(function.name, (function.router)(app), cors)).await
}

/// Serves an already-built router through Vercel's runtime (`VERCEL_DEV_PORT` picks the port).
pub async fn serve_router(router: Router) -> Result<(), vercel_runtime::Error> {
    vercel_runtime::run(FunctionService { router }).await
}

/// Tower service in the shape `vercel_runtime::run` expects.
#[derive(Clone)]
pub struct FunctionService {
    router: Router,
}

impl tower::Service<(AppState, vercel_runtime::Request)> for FunctionService {
    type Response = http::Response<ResponseBody>;
    type Error = vercel_runtime::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (state, req): (AppState, vercel_runtime::Request)) -> Self::Future {
        let router = self.router.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(state);
            let req = http::Request::from_parts(parts, Body::new(body));
            let Ok(response) = router.oneshot(req).await;
            Ok(response.map(into_response_body))
        })
    }
}

/// Wraps an axum body so the runtime can send it frame by frame.
///
/// `ResponseBody` needs a `Sync` body and axum's is not; `SyncWrapper` is sound here because a
/// body is only ever polled through `&mut`.
pub fn into_response_body(body: Body) -> ResponseBody {
    use http_body_util::BodyExt;
    let body = SyncBody(SyncWrapper::new(body))
        .map_err(|e| Box::new(e) as vercel_runtime::Error)
        .boxed();
    ResponseBody(body)
}

struct SyncBody(SyncWrapper<Body>);

impl HttpBody for SyncBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let inner = self.get_mut().0.get_mut();
        Pin::new(inner).poll_frame(cx)
    }
}
