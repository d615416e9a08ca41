//! The circuit breaker in front of a remote store (native Redis, Upstash REST): after
//! [`BREAKER_FAILURES`] failures in a row the store is skipped, at no cost, for a short
//! interval that doubles (up to [`BREAKER_MAX_OPEN`]) each time a background probe finds it
//! still down. Requests never wait for a probe. The breaker itself is [`crate::breaker`]'s;
//! this module says which cache errors count and wraps a store in it.
//!
//! Without it every request of an outage paid the cache timeout again (0.5–1 s each); with it a
//! request pays nothing once the breaker is open, and is served from the source (`bypass`), as
//! on any cache error. Only failures that say the store is unreachable count (timeouts, refused
//! or dropped connections, credentials refused, replies that are not the store's); an error the
//! store itself answered (a script error, a wrong type) shows it is up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::CacheError;
pub use crate::breaker::{Admission, Breaker, BreakerStatus};

/// Failures in a row that open the breaker.
pub const BREAKER_FAILURES: u32 = 3;
/// How long the store is skipped the first time the breaker opens.
pub const BREAKER_MIN_OPEN: Duration = Duration::from_secs(1);
/// The longest skip; a failed probe doubles the interval up to this. Bounds how long a store
/// that came back stays unused.
pub const BREAKER_MAX_OPEN: Duration = Duration::from_secs(10);

/// The cache's breaker, with the cache's thresholds.
pub fn cache_breaker() -> Breaker {
    Breaker::new(
        "cache",
        BREAKER_FAILURES,
        BREAKER_MIN_OPEN,
        BREAKER_MAX_OPEN,
    )
}

/// Records a call's outcome: failures that say the store is unreachable count; anything else
/// (a success, or an error the store answered) shows it is up.
pub fn record(breaker: &Breaker, outcome: Result<(), &CacheError>) {
    match outcome {
        Err(e) if counts(e) => breaker.record_failure(e.kind()),
        _ => breaker.record_success(),
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
            breaker: Arc::new(cache_breaker()),
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
        record(&self.breaker, result.as_ref().map(|_| ()));
        result
    }

    fn spawn_probe(&self) {
        let store = Arc::clone(&self.store);
        let breaker = Arc::clone(&self.breaker);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let outcome = store.probe().await;
                    match outcome {
                        Err(e) if counts(&e) => breaker.probed(Err(e.kind())),
                        _ => breaker.probed(Ok(())),
                    }
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

    #[test]
    fn an_error_the_store_answered_resets_the_count() {
        let b = cache_breaker();
        record(&b, Err(&CacheError::Timeout));
        record(&b, Err(&CacheError::Timeout));
        record(&b, Err(&CacheError::Server("WRONGTYPE".into())));
        record(&b, Err(&CacheError::Timeout));
        assert_eq!(b.admit(), Admission::Go);
        record(&b, Err(&CacheError::Unreachable("refused".into())));
        record(&b, Err(&CacheError::Timeout));
        assert_eq!(b.admit(), Admission::Skip);
    }
}
