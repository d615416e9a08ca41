//! The circuit breaker in front of a remote store (native Redis, Upstash REST): after
//! [`BREAKER_FAILURES`] failures in a row the store is skipped, at no cost, for a short
//! interval that doubles (up to [`BREAKER_MAX_OPEN`]) each time a background probe finds it
//! still down. Requests never wait for a probe.
//!
//! Without it every request of an outage paid the cache timeout again (0.5–1 s each); with it a
//! request pays nothing once the breaker is open, and is served from the source (`bypass`), as
//! on any cache error. Only failures that say the store is unreachable count (timeouts, refused
//! or dropped connections, credentials refused, replies that are not the store's); an error the
//! store itself answered (a script error, a wrong type) shows it is up.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::CacheError;

/// Failures in a row that open the breaker.
pub const BREAKER_FAILURES: u32 = 3;
/// How long the store is skipped the first time the breaker opens.
pub const BREAKER_MIN_OPEN: Duration = Duration::from_secs(1);
/// The longest skip; a failed probe doubles the interval up to this. Bounds how long a store
/// that came back stays unused.
pub const BREAKER_MAX_OPEN: Duration = Duration::from_secs(10);

/// What the breaker lets a call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go to the store.
    Go,
    /// Open: skip the store.
    Skip,
    /// Open and the interval is over: skip, and probe the store in the background.
    Probe,
}

/// The breaker's state as health reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerStatus {
    pub open: bool,
    /// Failures in a row so far.
    pub failures: u32,
    /// The kind of the last failure (`timeout`, `unreachable`…).
    pub last_error: Option<&'static str>,
    /// How long the breaker has been open.
    pub open_for: Option<Duration>,
    /// Time to the next probe.
    pub next_probe_in: Option<Duration>,
}

#[derive(Debug)]
struct State {
    failures: u32,
    last_error: Option<&'static str>,
    opened_at: Option<Instant>,
    open_until: Option<Instant>,
    interval: Duration,
    probing: bool,
}

/// One breaker per store (per process).
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    min_open: Duration,
    max_open: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new(BREAKER_FAILURES, BREAKER_MIN_OPEN, BREAKER_MAX_OPEN)
    }
}

impl Breaker {
    pub fn new(threshold: u32, min_open: Duration, max_open: Duration) -> Self {
        Breaker {
            state: Mutex::new(State {
                failures: 0,
                last_error: None,
                opened_at: None,
                open_until: None,
                interval: min_open,
                probing: false,
            }),
            threshold: threshold.max(1),
            min_open,
            max_open: max_open.max(min_open),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go to the store now.
    pub fn admit(&self) -> Admission {
        let mut s = self.lock();
        match s.open_until {
            None => Admission::Go,
            Some(until) if Instant::now() < until || s.probing => Admission::Skip,
            Some(_) => {
                s.probing = true;
                Admission::Probe
            }
        }
    }

    /// The outcome of a call that went to the store.
    pub fn record(&self, outcome: Result<(), &CacheError>) {
        match outcome {
            Err(e) if counts(e) => self.record_failure(e.kind()),
            // An error the store answered: it is up.
            _ => self.record_success(),
        }
    }

    fn record_success(&self) {
        let mut s = self.lock();
        if s.open_until.is_some() {
            tracing::info!(
                open_ms = s.opened_at.map(|t| t.elapsed().as_millis() as u64),
                "cache circuit closed: the store answers again"
            );
        }
        s.failures = 0;
        s.opened_at = None;
        s.open_until = None;
        s.interval = self.min_open;
        s.probing = false;
    }

    fn record_failure(&self, kind: &'static str) {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        s.last_error = Some(kind);
        if s.open_until.is_none() && s.failures >= self.threshold {
            let now = Instant::now();
            s.opened_at = Some(now);
            s.interval = self.min_open;
            s.open_until = Some(now + s.interval);
            tracing::warn!(
                failures = s.failures,
                kind,
                skip_ms = s.interval.as_millis() as u64,
                "cache circuit open: skipping the store"
            );
        }
    }

    /// The outcome of a background probe.
    pub fn probed(&self, outcome: Result<(), &CacheError>) {
        match outcome {
            Err(e) if counts(e) => {
                let mut s = self.lock();
                s.failures = s.failures.saturating_add(1);
                s.last_error = Some(e.kind());
                s.interval = (s.interval * 2).min(self.max_open);
                s.open_until = Some(Instant::now() + s.interval);
                s.probing = false;
                tracing::debug!(
                    kind = e.kind(),
                    skip_ms = s.interval.as_millis() as u64,
                    "cache probe failed; still skipping the store"
                );
            }
            _ => self.record_success(),
        }
    }

    pub fn status(&self) -> BreakerStatus {
        let s = self.lock();
        let now = Instant::now();
        BreakerStatus {
            open: s.open_until.is_some(),
            failures: s.failures,
            last_error: s.last_error.filter(|_| s.failures > 0),
            open_for: s.opened_at.map(|t| now.duration_since(t)),
            next_probe_in: s.open_until.map(|t| t.saturating_duration_since(now)),
        }
    }
}

/// Failures that say the store is unreachable (as opposed to errors it answered).
fn counts(e: &CacheError) -> bool {
    matches!(
        e,
        CacheError::Timeout
            | CacheError::Unreachable(_)
            | CacheError::Unauthorized
            | CacheError::Protocol(_)
    )
}

/// What a store can be probed with.
pub trait Probe: Send + Sync + 'static {
    fn probe(&self) -> impl Future<Output = Result<(), CacheError>> + Send;
}

/// A remote store behind its breaker.
pub struct Guarded<S> {
    store: Arc<S>,
    breaker: Arc<Breaker>,
}

impl<S: Probe> Guarded<S> {
    pub fn new(store: S) -> Self {
        Guarded {
            store: Arc::new(store),
            breaker: Arc::new(Breaker::default()),
        }
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The store itself, past the breaker (operators' commands, tests).
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// Runs `op` on the store unless the breaker is open (then `CacheError::Skipped` at once,
    /// and a probe in the background when one is due), and records how it went.
    pub async fn call<'a, T, F, Fut>(&'a self, op: F) -> Result<T, CacheError>
    where
        F: FnOnce(&'a S) -> Fut,
        Fut: Future<Output = Result<T, CacheError>>,
    {
        match self.breaker.admit() {
            Admission::Go => {}
            Admission::Skip => return Err(CacheError::Skipped),
            Admission::Probe => {
                self.spawn_probe();
                return Err(CacheError::Skipped);
            }
        }
        let result = op(&self.store).await;
        self.breaker.record(result.as_ref().map(|_| ()));
        result
    }

    fn spawn_probe(&self) {
        let store = Arc::clone(&self.store);
        let breaker = Arc::clone(&self.breaker);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let outcome = store.probe().await;
                    breaker.probed(outcome.as_ref().map(|_| ()));
                });
            }
            // No runtime to probe on: let the next call through instead.
            Err(_) => self.breaker.probed(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(3, Duration::from_millis(40), Duration::from_millis(100))
    }

    #[test]
    fn it_opens_after_the_threshold_of_failures_in_a_row() {
        let b = breaker();
        for _ in 0..2 {
            b.record(Err(&CacheError::Timeout));
            assert_eq!(b.admit(), Admission::Go);
        }
        b.record(Err(&CacheError::Timeout));
        assert_eq!(b.admit(), Admission::Skip);
        let status = b.status();
        assert!(status.open);
        assert_eq!(status.last_error, Some("timeout"));
    }

    #[test]
    fn a_success_or_an_answered_error_resets_the_count() {
        let b = breaker();
        b.record(Err(&CacheError::Timeout));
        b.record(Err(&CacheError::Timeout));
        b.record(Err(&CacheError::Server("WRONGTYPE".into())));
        b.record(Err(&CacheError::Timeout));
        assert_eq!(b.admit(), Admission::Go);
    }

    #[test]
    fn one_probe_at_a_time_and_a_failed_probe_doubles_the_interval() {
        let b = breaker();
        for _ in 0..3 {
            b.record(Err(&CacheError::Unreachable("refused".into())));
        }
        std::thread::sleep(Duration::from_millis(45));
        assert_eq!(b.admit(), Admission::Probe);
        assert_eq!(b.admit(), Admission::Skip, "a probe is already out");
        b.probed(Err(&CacheError::Timeout));
        let next = b.status().next_probe_in.unwrap();
        assert!(next > Duration::from_millis(60), "{next:?}");
        std::thread::sleep(next + Duration::from_millis(5));
        assert_eq!(b.admit(), Admission::Probe);
        b.probed(Ok(()));
        assert_eq!(b.admit(), Admission::Go);
        assert!(!b.status().open);
    }

    #[test]
    fn the_interval_never_grows_past_the_maximum() {
        let b = breaker();
        for _ in 0..3 {
            b.record(Err(&CacheError::Timeout));
        }
        for _ in 0..10 {
            b.probed(Err(&CacheError::Timeout));
        }
        assert!(b.status().next_probe_in.unwrap() <= Duration::from_millis(100));
    }
}
