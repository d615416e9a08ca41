//! Background work (`wait_until`) on Lambda: tracked per invocation, finished before the
//! invocation ends, never holding the response back.
//!
//! An invocation ends when the runtime asks the Runtime API for the next event; Lambda freezes
//! the process while that request waits, so work left running then would stall until some
//! later invocation thawed it, or be lost with the instance. The response is delivered
//! before that: a buffered response when the runtime posts it, a streamed one as its frames
//! are sent. So the runtime gets one more layer ([`FinishLayer`], around the layer that posts
//! the response): it gives each invocation a [`TaskTracker`], which the request carries
//! ([`InvocationTasks`], read by `gcbb::platform::background::Background`), and after the
//! response was posted it waits for that tracker: for the work handed to `wait_until`, and for
//! a streamed body's last frame (the body holds a token of the tracker until it ends or is
//! dropped, since work such as a reply's token accounting is handed over only at its end). The
//! runtime's client happens to finish posting a stream only after its last frame, under the
//! emulator at least; the token makes that no assumption of ours.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use gcbb::platform::background::InvocationTasks;
use http_body::Frame;
use lambda_http::lambda_runtime::LambdaInvocation;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// How long background work may run past the response when the invocation's deadline is
/// unknown or already past (`cargo lambda watch` sends a deadline in 1970); on AWS the deadline
/// (the function's timeout) bounds it.
pub const FALLBACK_LIMIT: Duration = Duration::from_secs(60);

/// Kept free before the deadline, so Lambda doesn't end the invocation as timed out first.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

/// The trackers of the invocations in flight, by request id: the layer around the runtime makes
/// them, the service that answers the request finds its own. (One at a time on classic Lambda;
/// keyed anyway, so nothing depends on that.)
#[derive(Clone, Default)]
pub struct Invocations(Arc<Mutex<HashMap<String, TaskTracker>>>);

impl Invocations {
    fn begin(&self, request_id: &str) -> TaskTracker {
        let tasks = TaskTracker::new();
        self.lock().insert(request_id.to_owned(), tasks.clone());
        tasks
    }

    fn end(&self, request_id: &str) {
        self.lock().remove(request_id);
    }

    /// The tracker of the invocation `request_id`; a fresh one (waited for by nobody) when the
    /// invocation didn't come through [`FinishLayer`], which only happens in tests.
    pub fn tasks(&self, request_id: Option<&str>) -> InvocationTasks {
        let found = request_id.and_then(|id| self.lock().get(id).cloned());
        InvocationTasks(found.unwrap_or_default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TaskTracker>> {
        // A panic while holding this lock leaves a map that is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long an invocation's background work may take after its response: up to the deadline
/// (less [`DEADLINE_MARGIN`]), or [`FALLBACK_LIMIT`] when the deadline is nonsense.
pub fn background_limit(deadline_ms: u64, now: SystemTime) -> Duration {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    match deadline_ms.checked_sub(now_ms).map(Duration::from_millis) {
        Some(left) if left > DEADLINE_MARGIN => left - DEADLINE_MARGIN,
        Some(_) => Duration::ZERO,
        None => FALLBACK_LIMIT,
    }
}

/// The runtime layer that waits for each invocation's background work after its response.
#[derive(Clone)]
pub struct FinishLayer {
    invocations: Invocations,
}

impl FinishLayer {
    pub fn new(invocations: Invocations) -> FinishLayer {
        FinishLayer { invocations }
    }
}

impl<S> tower::Layer<S> for FinishLayer {
    type Service = Finish<S>;

    fn layer(&self, inner: S) -> Finish<S> {
        Finish {
            inner,
            invocations: self.invocations.clone(),
        }
    }
}

/// See [`FinishLayer`].
pub struct Finish<S> {
    inner: S,
    invocations: Invocations,
}

impl<S> tower::Service<LambdaInvocation> for Finish<S>
where
    S: tower::Service<LambdaInvocation, Response = (), Error = lambda_http::Error>,
{
    type Response = ();
    type Error = lambda_http::Error;
    type Future = Finishing<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        let request_id = invocation.context.request_id.clone();
        let limit = background_limit(invocation.context.deadline, SystemTime::now());
        let tasks = self.invocations.begin(&request_id);
        let invocations = self.invocations.clone();
        // Runs only once the response was posted (see `Finishing::poll`).
        let finish = async move {
            tasks.close();
            let pending = tasks.len();
            if tokio::time::timeout(limit, tasks.wait()).await.is_err() {
                tracing::warn!(
                    pending,
                    limit_ms = limit.as_millis() as u64,
                    "background work still running when the invocation had to end"
                );
            }
            invocations.end(&request_id);
        };
        Finishing {
            respond: Some(Box::pin(self.inner.call(invocation))),
            result: None,
            finish: Box::pin(finish),
        }
    }
}

/// An invocation: its response posted, then its background work awaited.
pub struct Finishing<F> {
    respond: Option<Pin<Box<F>>>,
    result: Option<Result<(), lambda_http::Error>>,
    finish: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<F> Future for Finishing<F>
where
    F: Future<Output = Result<(), lambda_http::Error>>,
{
    type Output = Result<(), lambda_http::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(respond) = this.respond.as_mut() {
            let result = ready!(respond.as_mut().poll(cx));
            this.respond = None;
            this.result = Some(result);
        }
        ready!(this.finish.as_mut().poll(cx));
        Poll::Ready(this.result.take().unwrap_or(Ok(())))
    }
}

/// A response body that counts as its invocation's background work until it has sent its last
/// frame or was dropped (the client went away).
#[derive(Debug)]
pub struct TrackedBody {
    // Declared first, so it is dropped first: whatever the body hands to `wait_until` as it is
    // dropped (a reply cut short is still stored) is tracked before the token goes.
    body: Body,
    _token: TaskTrackerToken,
}

impl TrackedBody {
    pub fn new(body: Body, tasks: &TaskTracker) -> TrackedBody {
        TrackedBody {
            body,
            _token: tasks.token(),
        }
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_work_may_run_until_just_before_the_deadline() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let deadline = 1_800_000_000_000 + 10_000;
        assert_eq!(
            background_limit(deadline, now),
            Duration::from_millis(10_000) - DEADLINE_MARGIN
        );
        assert_eq!(
            background_limit(1_800_000_000_000 + 100, now),
            Duration::ZERO
        );
        // The emulator's deadline header is a duration, not a time: in 1970.
        assert_eq!(background_limit(600_000, now), FALLBACK_LIMIT);
    }

    #[tokio::test]
    async fn a_tracked_body_holds_its_invocation_open_until_it_is_dropped() {
        let tasks = TaskTracker::new();
        let body = TrackedBody::new(Body::from("reply"), &tasks);
        tasks.close();
        assert!(!tasks.is_empty());
        drop(body);
        assert!(tasks.is_empty());
        tasks.wait().await;
    }

    #[test]
    fn an_invocation_finds_its_own_tracker() {
        let invocations = Invocations::default();
        let mine = invocations.begin("req-1");
        let _other = invocations.begin("req-2");
        let found = invocations.tasks(Some("req-1"));
        let token = found.0.token();
        assert_eq!(mine.len(), 1);
        drop(token);
        invocations.end("req-1");
        assert!(invocations.tasks(Some("req-1")).0.is_empty());
    }
}
