//! How long a connection to `gcbb dev` may hold the server without asking for anything. hyper
//! bounds an HTTP/1 request head (`header_read_timeout`) and answers HTTP/2 pings, but has no
//! idle timeout and nothing for a connection that never gets as far as a request (silence, or
//! an HTTP/2 preface and then nothing: hyper issue #1628). So each connection counts its
//! requests in flight, and a watchdog closes it when none has begun within the header timeout
//! of connecting, or none has been in flight for the idle timeout since.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use tokio::sync::Notify;

/// What one connection is doing: how many of its requests are in flight (until their response
/// body is sent or dropped) and whether it has begun any.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    begun: AtomicBool,
    changed: Notify,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.begun.store(true, Ordering::SeqCst);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// Resolves once the connection has been idle too long: no request begun within `first`
    /// of its start, or none in flight for `idle` since the last one ended.
    pub async fn idle_too_long(&self, first: Duration, idle: Duration) {
        loop {
            // Only the watchdog waits, so a change while it isn't waiting leaves a permit and
            // the next wait returns at once: no change is missed.
            let changed = self.changed.notified();
            if !self.is_idle() {
                changed.await;
                continue;
            }
            let limit = if self.begun.load(Ordering::SeqCst) {
                idle
            } else {
                first
            };
            if tokio::time::timeout(limit, changed).await.is_err() && self.is_idle() {
                return;
            }
        }
    }
}

/// One request in flight; ends when dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_one();
    }
}

/// `inner`, with each request counted in `activity` from its start until its response body has
/// been sent (a streamed reply is in flight as long as it streams) or dropped.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<S, B> tower::Service<http::Request<B>> for Tracked<S>
where
    S: tower::Service<http::Request<B>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let in_flight = self.activity.begin();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = answer.await;
            Ok(response.map(|body| {
                Body::new(TrackedBody {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that holds its request's [`InFlight`] until it is dropped.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
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
    use axum::extract::Request;
    use tower::ServiceExt;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `elapsed` is `expected`, give or take what a busy machine adds.
    fn about(elapsed: Duration, expected: Duration) -> bool {
        elapsed >= expected && elapsed < expected + ms(400)
    }

    #[tokio::test]
    async fn a_connection_that_begins_no_request_is_idle_after_the_first_limit() {
        let activity = Arc::new(Activity::default());
        let started = std::time::Instant::now();
        activity.idle_too_long(ms(200), ms(2_000)).await;
        assert!(about(started.elapsed(), ms(200)), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_request_in_flight_keeps_the_connection_and_the_idle_limit_counts_from_its_end() {
        let activity = Arc::new(Activity::default());
        let service = Tracked::new(
            tower::service_fn(|_: Request| async {
                Ok::<_, Infallible>(Response::new(Body::from("answer")))
            }),
            activity.clone(),
        );
        let started = std::time::Instant::now();
        let watch = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle_too_long(ms(300), ms(600)).await }
        });
        tokio::time::sleep(ms(100)).await;
        let response = service.oneshot(Request::new(Body::empty())).await.unwrap();
        // The response is out but its body isn't sent: in flight, for as long as it takes.
        tokio::time::sleep(ms(1_000)).await;
        assert!(!watch.is_finished(), "closed with a reply in flight");
        let ended = std::time::Instant::now();
        drop(response);
        watch.await.unwrap();
        assert!(about(ended.elapsed(), ms(600)), "{:?}", ended.elapsed());
        assert!(started.elapsed() >= ms(1_700));
    }
}
