//! Work that must finish after the response is sent (token accounting, cache writes), handed
//! to the platform rather than to a bare `tokio::spawn`.
//!
//! On Vercel it extends the invocation through the runtime's `wait_until`; elsewhere (`gcbb
//! dev`, in-process tests) a process-wide tracker lets shutdown drain it.

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
