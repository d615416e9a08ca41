//! Whether something cached may still be shown: privacy-sensitive cache keys carry the
//! database's privacy epoch (bumped in the same transaction that hides a companion; see
//! `db::privacy`), and every process confirms the epoch from the database at most
//! [`PRIVACY_EPOCH_MAX_AGE`] old before using such a key.
//!
//! So a change that hides a companion reaches every cache layer of every instance without
//! telling any of them: after the bump, each process's next key is new, and no entry built
//! while the companion was visible is ever read again. The write that hides a companion waits
//! [`PRIVACY_PROPAGATION_WAIT`] before it answers, so once it has answered, every process
//! serving anything has confirmed the new epoch. It holds with Redis down during the write
//! (nothing is asked of Redis) and with per-process memory caches on many instances.
//!
//! If the epoch can't be confirmed (the database is unreachable), privacy-sensitive entries
//! are not served: the request is answered from the database or fails, never from a cache that
//! might predate a change.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use crate::db::privacy::current_privacy_epoch;
use crate::db::{DbError, Pool};

/// How old a confirmed epoch may be when a cached entry is served under it.
pub const PRIVACY_EPOCH_MAX_AGE: Duration = Duration::from_millis(250);
/// How long a write that hides a companion waits before it answers: longer than any process
/// can go on using the epoch it confirmed before the write committed.
pub const PRIVACY_PROPAGATION_WAIT: Duration = Duration::from_millis(300);

/// The instant confirmation stamps are counted from (nanoseconds), so a stamp fits an atomic:
/// as far back as the monotonic clock allows (up to a day), so no stamp a process takes falls
/// before it.
static CLOCK_BASE: LazyLock<Instant> = LazyLock::new(|| {
    let now = Instant::now();
    [86_400, 3_600, 60, 1]
        .into_iter()
        .find_map(|secs| now.checked_sub(Duration::from_secs(secs)))
        .unwrap_or(now)
});

/// A stamp as nanoseconds since [`CLOCK_BASE`]; `None` for one before it (too old to matter).
fn nanos_since_base(at: Instant) -> Option<u64> {
    at.checked_duration_since(*CLOCK_BASE)
        .map(|d| d.as_nanos() as u64)
}

/// One process's view of the epoch: the value, and when the query that read it was sent.
///
/// Every cached request reads it, from every worker thread at once, so reading takes no lock:
/// two atomics, written epoch first and stamp second (Release) and read stamp first and epoch
/// second (Acquire). A reader may pair a stamp with an epoch confirmed at that stamp or later
/// (never earlier): it then judges the newer epoch by an older stamp, which can only make it
/// refresh sooner. Writers take turns (`refresh`) and never step back.
pub struct PrivacyEpochs {
    epoch: AtomicI64,
    /// Nanoseconds since [`CLOCK_BASE`] of the confirmation; meaningful once `confirmed`.
    sent_at: AtomicU64,
    confirmed: AtomicBool,
    /// One confirmation at a time; concurrent requests wait for it instead of each querying.
    refresh: tokio::sync::Mutex<()>,
    /// Serialises `record` (a confirmation and `read_now` may finish together).
    write: std::sync::Mutex<()>,
}

impl Default for PrivacyEpochs {
    fn default() -> Self {
        LazyLock::force(&CLOCK_BASE);
        PrivacyEpochs {
            epoch: AtomicI64::new(0),
            sent_at: AtomicU64::new(0),
            confirmed: AtomicBool::new(false),
            refresh: tokio::sync::Mutex::new(()),
            write: std::sync::Mutex::new(()),
        }
    }
}

impl PrivacyEpochs {
    pub fn new() -> Self {
        Self::default()
    }

    /// The epoch, confirmed from the database within [`PRIVACY_EPOCH_MAX_AGE`].
    pub async fn current(&self, db: &Pool) -> Result<i64, DbError> {
        match self.fresh() {
            Some(epoch) => Ok(epoch),
            // Boxed: the confirmation's future is large and rarely needed, and it would
            // otherwise make every caller's future as large (and as costly to move).
            None => Box::pin(self.confirm(db)).await,
        }
    }

    /// Confirms the epoch from the database (one caller at a time; the others wait for it).
    async fn confirm(&self, db: &Pool) -> Result<i64, DbError> {
        let _one_at_a_time = self.refresh.lock().await;
        if let Some(epoch) = self.fresh() {
            return Ok(epoch);
        }
        // Stamped when the query is sent: the value read is at least that recent, which is
        // what the guarantee needs (a later stamp could outlast a bump made meanwhile).
        let sent = Instant::now();
        let client = db.get().await?;
        let epoch = current_privacy_epoch(&client).await?;
        self.record(epoch, sent);
        Ok(epoch)
    }

    /// Reads the epoch straight from the database, for work that must not use a value even
    /// a moment old (the cron's snapshots, written for every instance to serve).
    pub async fn read_now(&self, db: &Pool) -> Result<i64, DbError> {
        let sent = Instant::now();
        let client = db.get().await?;
        let epoch = current_privacy_epoch(&client).await?;
        self.record(epoch, sent);
        Ok(epoch)
    }

    fn fresh(&self) -> Option<i64> {
        if !self.confirmed.load(Ordering::Acquire) {
            return None;
        }
        let sent_at = self.sent_at.load(Ordering::Acquire);
        let epoch = self.epoch.load(Ordering::Acquire);
        let now = nanos_since_base(Instant::now())?;
        let age = now.saturating_sub(sent_at);
        (age < PRIVACY_EPOCH_MAX_AGE.as_nanos() as u64).then_some(epoch)
    }

    fn record(&self, epoch: i64, sent: Instant) {
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(sent) = nanos_since_base(sent) else {
            return;
        };
        // Never step back to an older reading that finished late.
        let newer = !self.confirmed.load(Ordering::Acquire)
            || (epoch >= self.epoch.load(Ordering::Acquire)
                && sent >= self.sent_at.load(Ordering::Acquire));
        if newer {
            self.epoch.store(epoch, Ordering::Release);
            self.sent_at.store(sent, Ordering::Release);
            self.confirmed.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_outlasts_the_age_a_confirmed_epoch_may_have() {
        assert!(PRIVACY_PROPAGATION_WAIT > PRIVACY_EPOCH_MAX_AGE);
    }

    #[test]
    fn a_reading_is_fresh_only_within_the_max_age() {
        let epochs = PrivacyEpochs::new();
        assert_eq!(epochs.fresh(), None);
        epochs.record(3, Instant::now());
        assert_eq!(epochs.fresh(), Some(3));
        let old = Instant::now() - PRIVACY_EPOCH_MAX_AGE - Duration::from_millis(1);
        let stale = PrivacyEpochs::new();
        stale.record(3, old);
        assert_eq!(stale.fresh(), None);
    }

    #[test]
    fn a_late_older_reading_never_replaces_a_newer_one() {
        let epochs = PrivacyEpochs::new();
        let early = Instant::now();
        epochs.record(5, Instant::now());
        epochs.record(4, early);
        assert_eq!(epochs.fresh(), Some(5));
    }
}
