//! Work that must finish after the response is sent (token accounting, cache writes), handed
//! to the platform rather than to a bare `tokio::spawn`.
//!
//! On Vercel it extends the invocation through the runtime's `wait_until`. A runtime adapter
//! that ends each invocation itself (AWS Lambda freezes the process once an invocation ends)
//! gives the request a tracker of its own ([`InvocationTasks`]) and waits for it; elsewhere
//! (`gcbb dev`, in-process tests) a process-wide tracker lets shutdown drain it.

use std::convert::Infallible;
use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tokio_util::task::TaskTracker;
use vercel_runtime::AppState;

/// The extractor handlers take to run background work.
#[derive(Clone)]
pub enum Background {
    Vercel(AppState),
    /// A tracker of ours: the invocation's ([`InvocationTasks`]) or the process's.
    Local(TaskTracker),
}

/// The background work of one invocation, put in the request's extensions by a runtime adapter
/// that waits for it before the invocation ends (the Lambda adapter, `gcbb-lambda`).
#[derive(Clone)]
pub struct InvocationTasks(pub TaskTracker);

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
        if let Some(tasks) = parts.extensions.get::<InvocationTasks>() {
            return Ok(Background::Local(tasks.0.clone()));
        }
        Ok(Background::Local(LOCAL_TASKS.clone()))
    }
}

/// Background work of requests that came through neither Vercel's runtime nor an adapter
/// tracking its invocations.
static LOCAL_TASKS: std::sync::LazyLock<TaskTracker> = std::sync::LazyLock::new(TaskTracker::new);

/// Waits (at most `limit`) for the background work of local requests; `gcbb dev` calls this at
/// shutdown so nothing handed to `wait_until` is cut off.
pub async fn drain_local(limit: std::time::Duration) -> bool {
    LOCAL_TASKS.close();
    tokio::time::timeout(limit, LOCAL_TASKS.wait())
        .await
        .is_ok()
}
