//! The circuit breaker in front of a remote dependency (Postgres, native Redis, Upstash REST):
//! after a few failures in a row that say the dependency is unreachable, calls are skipped at
//! no cost for a short interval that doubles (up to a maximum) each time a background probe
//! finds it still down. Requests never wait for a probe; one probe runs at a time.
//!
//! Each dependency decides what counts as "unreachable" (the cache: timeouts, refused or
//! dropped connections; Postgres: connections that fail or statements past their deadline) and
//! reports it here by kind; an error the dependency itself answered shows it is up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the breaker lets a call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go to the dependency.
    Go,
    /// Open: skip it.
    Skip,
    /// Open and the interval is over: skip, and probe it in the background.
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

impl BreakerStatus {
    /// The open breaker in words, for health reports.
    pub fn describe(&self) -> String {
        format!(
            "skipped after {} failures in a row (last: {}), for {:.1} s so far; next probe in {:.1} s",
            self.failures,
            self.last_error.unwrap_or("unknown"),
            self.open_for.unwrap_or_default().as_secs_f64(),
            self.next_probe_in.unwrap_or_default().as_secs_f64(),
        )
    }
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

/// One breaker per dependency (per process).
#[derive(Debug)]
pub struct Breaker {
    /// The dependency's name in log lines (`cache`, `postgres`).
    name: &'static str,
    state: Mutex<State>,
    /// False while nothing has failed since the last success: a success then needs no lock,
    /// which keeps the breaker off the cost of every healthy call.
    troubled: AtomicBool,
    threshold: u32,
    min_open: Duration,
    max_open: Duration,
    /// Wakes calls waiting on the dependency when the breaker opens ([`Breaker::opened`]).
    opened: tokio::sync::Notify,
}

impl Breaker {
    pub fn new(name: &'static str, threshold: u32, min_open: Duration, max_open: Duration) -> Self {
        Breaker {
            name,
            state: Mutex::new(State {
                failures: 0,
                last_error: None,
                opened_at: None,
                open_until: None,
                interval: min_open,
                probing: false,
            }),
            troubled: AtomicBool::new(false),
            threshold: threshold.max(1),
            min_open,
            max_open: max_open.max(min_open),
            opened: tokio::sync::Notify::new(),
        }
    }

    /// Resolves when the breaker next opens: a call still waiting on the dependency then (for a
    /// connection, say) can give up at once, as the calls after it will.
    pub async fn opened(&self) {
        self.opened.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go to the dependency now.
    pub fn admit(&self) -> Admission {
        if !self.troubled.load(Ordering::Acquire) {
            return Admission::Go;
        }
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

    /// Notes a sign of trouble that is not yet a failure (a first connection attempt that
    /// failed, to be retried): [`Breaker::is_troubled`] says so until the next success.
    pub fn note_trouble(&self) {
        self.troubled.store(true, Ordering::Release);
    }

    /// Whether anything went wrong since the last success (a failure, a noted trouble, or the
    /// breaker open).
    pub fn is_troubled(&self) -> bool {
        self.troubled.load(Ordering::Acquire)
    }

    /// Whether the breaker is open (calls are being skipped).
    pub fn is_open(&self) -> bool {
        self.troubled.load(Ordering::Acquire) && self.lock().open_until.is_some()
    }

    /// A call that reached the dependency and got its answer (an error it answered included).
    pub fn record_success(&self) {
        if !self.troubled.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.lock();
        if s.open_until.is_some() {
            tracing::info!(
                dependency = self.name,
                open_ms = s.opened_at.map(|t| t.elapsed().as_millis() as u64),
                "circuit closed: the dependency answers again"
            );
        }
        s.failures = 0;
        s.opened_at = None;
        s.open_until = None;
        s.interval = self.min_open;
        s.probing = false;
        self.troubled.store(false, Ordering::Release);
    }

    /// A call that says the dependency is unreachable, by kind (`timeout`, `unreachable`…).
    pub fn record_failure(&self, kind: &'static str) {
        let mut s = self.lock();
        self.troubled.store(true, Ordering::Release);
        s.failures = s.failures.saturating_add(1);
        s.last_error = Some(kind);
        if s.open_until.is_none() && s.failures >= self.threshold {
            let now = Instant::now();
            s.opened_at = Some(now);
            s.interval = self.min_open;
            s.open_until = Some(now + s.interval);
            tracing::warn!(
                dependency = self.name,
                failures = s.failures,
                kind,
                skip_ms = s.interval.as_millis() as u64,
                "circuit open: skipping the dependency"
            );
            self.opened.notify_waiters();
        }
    }

    /// The outcome of a background probe: `Err(kind)` when it still failed.
    pub fn probed(&self, outcome: Result<(), &'static str>) {
        match outcome {
            Err(kind) => {
                let mut s = self.lock();
                s.failures = s.failures.saturating_add(1);
                s.last_error = Some(kind);
                s.interval = (s.interval * 2).min(self.max_open);
                s.open_until = Some(Instant::now() + s.interval);
                s.probing = false;
                tracing::debug!(
                    dependency = self.name,
                    kind,
                    skip_ms = s.interval.as_millis() as u64,
                    "probe failed; still skipping the dependency"
                );
            }
            Ok(()) => self.record_success(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            "test",
            3,
            Duration::from_millis(40),
            Duration::from_millis(100),
        )
    }

    #[test]
    fn it_opens_after_the_threshold_of_failures_in_a_row() {
        let b = breaker();
        for _ in 0..2 {
            b.record_failure("timeout");
            assert_eq!(b.admit(), Admission::Go);
        }
        b.record_failure("timeout");
        assert_eq!(b.admit(), Admission::Skip);
        assert!(b.is_open());
        let status = b.status();
        assert!(status.open);
        assert_eq!(status.last_error, Some("timeout"));
    }

    #[test]
    fn a_noted_trouble_shows_until_the_next_success_and_opens_nothing() {
        let b = breaker();
        assert!(!b.is_troubled());
        b.note_trouble();
        assert!(b.is_troubled());
        assert_eq!(b.admit(), Admission::Go);
        assert_eq!(b.status().failures, 0);
        b.record_success();
        assert!(!b.is_troubled());
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breaker();
        b.record_failure("timeout");
        b.record_failure("timeout");
        b.record_success();
        b.record_failure("timeout");
        assert_eq!(b.admit(), Admission::Go);
        assert!(!b.is_open());
        assert_eq!(b.status().failures, 1);
    }

    #[test]
    fn one_probe_at_a_time_and_a_failed_probe_doubles_the_interval() {
        let b = breaker();
        for _ in 0..3 {
            b.record_failure("unreachable");
        }
        std::thread::sleep(Duration::from_millis(45));
        assert_eq!(b.admit(), Admission::Probe);
        assert_eq!(b.admit(), Admission::Skip, "a probe is already out");
        b.probed(Err("timeout"));
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
            b.record_failure("timeout");
        }
        for _ in 0..10 {
            b.probed(Err("timeout"));
        }
        assert!(b.status().next_probe_in.unwrap() <= Duration::from_millis(100));
    }
}
