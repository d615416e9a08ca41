//! The adapter between Vercel's Rust runtime (`vercel_runtime` 2) and our axum routers.
//!
//! Written here rather than using `vercel_runtime::axum::VercelLayer` because that layer drops
//! the per-request `AppState` (so `wait_until` is lost) and buffers every body whose content type
//! is not SSE or JSON (so a `text/plain` stream would arrive in one piece). This adapter passes
//! request bodies through unbuffered, puts `AppState` into the request extensions, and streams
//! every response body frame by frame.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use sync_wrapper::SyncWrapper;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use vercel_runtime::{AppState, ResponseBody};

use crate::app::App;

/// Entry point of every `api/*.rs` shim: builds the process-wide [`App`] from the environment
/// (exiting with the variable's name on a configuration error) and serves the named function's
/// router through Vercel's runtime.
pub async fn serve_function(name: &str) -> Result<(), vercel_runtime::Error> {
    crate::telemetry::init();
    let function = crate::routes::FUNCTIONS
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| format!("no function named {name}"))?;
    let app = match App::from_env() {
        Ok(app) => app,
        Err(e) => {
            eprintln!("configuration error: {e}");
            std::process::exit(2);
        }
    };
    serve_router(crate::routes::function_layers((function.router)(app))).await
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

/// Background work that must finish after the response is sent (token accounting, cache
/// writes). On Vercel it extends the invocation through the runtime's `wait_until`; under
/// `gcbb dev` a process-wide tracker lets shutdown drain it.
#[derive(Clone)]
pub enum Background {
    Vercel(AppState),
    Local(TaskTracker),
}

impl Background {
    pub fn wait_until<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self {
            Background::Vercel(state) => state.wait_until(future),
            Background::Local(tracker) => {
                tracker.spawn(future);
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Background {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(state) = parts.extensions.get::<AppState>() {
            return Ok(Background::Vercel(state.clone()));
        }
        Ok(Background::Local(LOCAL_TASKS.clone()))
    }
}

/// Background work of requests that did not come through Vercel's runtime.
static LOCAL_TASKS: std::sync::LazyLock<TaskTracker> = std::sync::LazyLock::new(TaskTracker::new);

/// Waits (at most `limit`) for the background work of local requests; `gcbb dev` calls this at
/// shutdown so nothing handed to `wait_until` is cut off.
pub async fn drain_local(limit: std::time::Duration) -> bool {
    LOCAL_TASKS.close();
    tokio::time::timeout(limit, LOCAL_TASKS.wait())
        .await
        .is_ok()
}
