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

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::db::privacy::current_privacy_epoch;
use crate::db::{DbError, Pool};

/// How old a confirmed epoch may be when a cached entry is served under it.
pub const PRIVACY_EPOCH_MAX_AGE: Duration = Duration::from_millis(250);
/// How long a write that hides a companion waits before it answers: longer than any process
/// can go on using the epoch it confirmed before the write committed.
pub const PRIVACY_PROPAGATION_WAIT: Duration = Duration::from_millis(300);

/// One process's view of the epoch: the value, and when the query that read it was sent.
#[derive(Default)]
pub struct PrivacyEpochs {
    confirmed: Mutex<Option<(i64, Instant)>>,
    /// One confirmation at a time; concurrent requests wait for it instead of each querying.
    refresh: tokio::sync::Mutex<()>,
}

impl PrivacyEpochs {
    pub fn new() -> Self {
        Self::default()
    }

    /// The epoch, confirmed from the database within [`PRIVACY_EPOCH_MAX_AGE`].
    pub async fn current(&self, db: &Pool) -> Result<i64, DbError> {
        if let Some(epoch) = self.fresh() {
            return Ok(epoch);
        }
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
        let confirmed = *self
            .confirmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        confirmed
            .filter(|(_, at)| at.elapsed() < PRIVACY_EPOCH_MAX_AGE)
            .map(|(epoch, _)| epoch)
    }

    fn record(&self, epoch: i64, sent: Instant) {
        let mut confirmed = self
            .confirmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Never step back to an older reading that finished late.
        let newer = confirmed.is_none_or(|(e, at)| epoch >= e && sent >= at);
        if newer {
            *confirmed = Some((epoch, sent));
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
