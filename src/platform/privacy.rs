//! Whether something cached may still be shown, answered without waiting for Postgres.
//!
//! Privacy-sensitive cache keys carry the database's privacy epoch, which a trigger bumps in the
//! same transaction that hides a companion (made private or deleted), whoever writes it (see
//! `db::privacy`). Once an instance knows the new epoch, its next key is new, and no entry built
//! while the companion was visible is read again, in any cache layer.
//!
//! How an instance knows the epoch, off the request path:
//!
//! - **A reading** is an epoch and when it was confirmed: the time the confirming query was
//!   sent (a bump committed before then is in it). Readings come from Postgres, or from the copy
//!   that instances share through the cache (Redis, Upstash: `Cache::shared_privacy_epoch`,
//!   which every confirmation from Postgres moves forward).
//! - **Refreshed in the background.** A request finding the reading older than
//!   [`EPOCH_REFRESH_AFTER`] starts one refresh (never more than one in flight, at most one
//!   started per [`EPOCH_REFRESH_AFTER`]) and goes on with the reading it has. The refresh reads
//!   Postgres, and the shared copy as well when the reading is not current (a cold or idle
//!   instance, or an outage), so a cold instance serves a page Redis holds without waiting for
//!   its first Postgres connection.
//! - **Served without question while current** ([`EPOCH_CURRENT_FOR`]). An older reading is
//!   served while the database is in doubt (the last refresh failed, a connection attempt or
//!   a statement failed since it last answered, or a refresh has been out longer than
//!   [`EPOCH_WAIT`]), for at most the outage window (`PRIVACY_OUTAGE_WINDOW_MS`). Otherwise
//!   (an instance that was idle while the database is fine) the request waits for the first of
//!   the two reads it started: the shared copy (one cache round trip: from then on it holds
//!   every epoch another instance shared, a PATCH's at once), or Postgres; at most
//!   [`EPOCH_WAIT`] for Postgres alone (the memory cache shares nothing).
//!
//! Why this keeps the promise: a companion can only be hidden by a write that reaches the
//! database. While the database answers, every instance serves under a reading at most
//! [`EPOCH_CURRENT_FOR`] old, and the PATCH that hides a companion waits
//! [`PRIVACY_PROPAGATION_WAIT`] (longer) before it answers, after sharing the new epoch. While
//! no instance reaches the database, nothing can be hidden, so the last reading is still right.
//! What the window bounds is a partial partition: an instance cut off from Postgres while other
//! writers reach it. Through Redis it still learns the epoch others confirm; with the memory
//! cache (or Redis unreachable too) it may serve a page listing a companion hidden meanwhile
//! for at most the window, then stops serving cached pages.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cache::Cache;
use crate::cache::SharedEpoch;
use crate::db::privacy::current_privacy_epoch;
use crate::db::DbError;
use crate::db::Pool;

/// What the epoch's refreshes read and whom they tell: the process's state (`App` implements
/// it), named here so this module needs nothing above it.
pub trait EpochSources: Send + Sync + 'static {
    fn epochs(&self) -> &PrivacyEpochs;
    fn db(&self) -> &Pool;
    fn cache(&self) -> &Cache;
    /// The epoch moved forward: some writer hid a companion, and its CDN purge may be owed.
    fn epoch_moved(self: &Arc<Self>);
}

/// A reading older than this starts a background refresh (one in flight at a time).
pub const EPOCH_REFRESH_AFTER: Duration = Duration::from_millis(250);
/// A reading this young is served from without question; older ones only while the database
/// is in doubt (see the module doc).
pub const EPOCH_CURRENT_FOR: Duration = Duration::from_secs(1);
/// Longest a request waits for a refresh it needs (an instance that was idle while the
/// database answers); past it, the database is in doubt and the last reading serves.
pub const EPOCH_WAIT: Duration = Duration::from_millis(300);
/// How long the write that hides a companion waits before it answers: longer than any
/// instance that can reach the database serves under a reading from before the write.
pub const PRIVACY_PROPAGATION_WAIT: Duration = Duration::from_millis(1_100);
/// An instance shares an unchanged epoch with the others at most this often (a moved one at
/// once), so the shared copy stays recent for cold instances without a write per refresh.
pub const EPOCH_SHARE_INTERVAL: Duration = Duration::from_secs(1);
/// Refresh failures are logged once, then at most this often while they go on.
pub const EPOCH_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// The instant stamps are counted from (nanoseconds), so a stamp fits an atomic: as far back
/// as the monotonic clock allows (up to a day), so no stamp a process takes falls before it.
static CLOCK_BASE: LazyLock<Instant> = LazyLock::new(|| {
    let now = Instant::now();
    [86_400, 3_600, 60, 1]
        .into_iter()
        .find_map(|secs| now.checked_sub(Duration::from_secs(secs)))
        .unwrap_or(now)
});

/// A stamp as nanoseconds since [`CLOCK_BASE`] (0 for one before it: too old to matter).
fn nanos(at: Instant) -> u64 {
    at.checked_duration_since(*CLOCK_BASE)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn since(now: Instant, stamp: u64) -> Duration {
    Duration::from_nanos(nanos(now).saturating_sub(stamp))
}

/// One process's knowledge of the epoch, and its background refresh.
///
/// Every cached request reads it, from every worker thread at once, so reading takes no lock:
/// atomics written epoch first and stamp second (Release), read stamp first and epoch second
/// (Acquire). A reader may pair a stamp with an epoch confirmed at that stamp or later, which
/// can only make it judge the newer epoch older than it is. Writers take turns (`write`).
pub struct PrivacyEpochs {
    epoch: AtomicI64,
    /// [`nanos`] of the confirmation; meaningful once `confirmed`.
    confirmed_at: AtomicU64,
    confirmed: AtomicBool,
    /// A refresh from Postgres is out; `attempt_started` is when the last one began.
    refreshing: AtomicBool,
    attempt_started: AtomicU64,
    /// A read of the shared copy is out; `shared_read_at` is when the last one began, and
    /// `shared_seen_at` when the last one that found a shared copy began.
    reading_shared: AtomicBool,
    shared_read_at: AtomicU64,
    shared_seen_at: AtomicU64,
    /// The last refresh that finished could not read Postgres.
    last_failed: AtomicBool,
    /// What this process last shared through the cache, and when.
    shared_epoch: AtomicI64,
    shared_at: AtomicU64,
    /// When a refresh failure was last logged.
    failure_logged_at: AtomicU64,
    /// Serialises `record`.
    write: std::sync::Mutex<()>,
    /// Wakes requests waiting for a refresh.
    settled: tokio::sync::Notify,
    outage_window: Duration,
}

impl PrivacyEpochs {
    /// Knows nothing yet; cached pages are served under an epoch at most `outage_window` old
    /// while the database is in doubt.
    pub fn new(outage_window: Duration) -> Self {
        LazyLock::force(&CLOCK_BASE);
        PrivacyEpochs {
            epoch: AtomicI64::new(0),
            confirmed_at: AtomicU64::new(0),
            confirmed: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
            attempt_started: AtomicU64::new(0),
            reading_shared: AtomicBool::new(false),
            shared_read_at: AtomicU64::new(0),
            shared_seen_at: AtomicU64::new(0),
            last_failed: AtomicBool::new(false),
            shared_epoch: AtomicI64::new(i64::MIN),
            shared_at: AtomicU64::new(0),
            failure_logged_at: AtomicU64::new(0),
            write: std::sync::Mutex::new(()),
            settled: tokio::sync::Notify::new(),
            outage_window,
        }
    }

    /// The epoch cached privacy-sensitive entries may be read under now (`app` is the process
    /// this belongs to). No database round trip while a usable reading exists; with none, it
    /// waits for the refresh (at most [`EPOCH_WAIT`] while the database answers), and when
    /// nothing usable comes of it, fails as the database did.
    pub async fn current<A: EpochSources>(&self, app: &Arc<A>) -> Result<i64, DbError> {
        let now = Instant::now();
        if let Some(epoch) = self.fresh(now) {
            return Ok(epoch);
        }
        self.start_refresh(app, now);
        if let Some(epoch) = self.usable(now, &**app) {
            return Ok(epoch);
        }
        // Boxed: rarely needed, and inline it would make every caller's future larger.
        Box::pin(self.wait_for_usable(app)).await
    }

    /// Reads the epoch straight from the database and shares it at once: for writes that must
    /// not go by a value even a moment old (the PATCH that hides a companion, the cron's
    /// snapshots written for every instance to serve).
    pub async fn read_now<A: EpochSources>(&self, app: &A) -> Result<i64, DbError> {
        let sent = Instant::now();
        let client = app.db().get().await?;
        let epoch = current_privacy_epoch(&client).await?;
        drop(client);
        self.record(epoch, sent);
        self.share(app, epoch, sent, true).await;
        Ok(epoch)
    }

    /// A reading younger than [`EPOCH_REFRESH_AFTER`]: the common case, with no work at all.
    fn fresh(&self, now: Instant) -> Option<i64> {
        let (epoch, age) = self.reading(now)?;
        (age < EPOCH_REFRESH_AFTER).then_some(epoch)
    }

    fn reading(&self, now: Instant) -> Option<(i64, Duration)> {
        if !self.confirmed.load(Ordering::Acquire) {
            return None;
        }
        let at = self.confirmed_at.load(Ordering::Acquire);
        let epoch = self.epoch.load(Ordering::Acquire);
        Some((epoch, since(now, at)))
    }

    /// The reading, if it may be served now (see the module doc): current; or within the
    /// outage window, when the database is in doubt or the shared copy was read within
    /// [`EPOCH_CURRENT_FOR`] (it then holds every epoch a PATCH shared before answering).
    fn usable<A: EpochSources>(&self, now: Instant, app: &A) -> Option<i64> {
        let (epoch, age) = self.reading(now)?;
        let shared_checked =
            since(now, self.shared_seen_at.load(Ordering::Acquire)) < EPOCH_CURRENT_FOR;
        let serve = age < EPOCH_CURRENT_FOR
            || (age < self.outage_window && (shared_checked || self.database_in_doubt(now, app)));
        serve.then_some(epoch)
    }

    /// Whether the database can't be counted on to confirm the epoch soon.
    fn database_in_doubt<A: EpochSources>(&self, now: Instant, app: &A) -> bool {
        self.last_failed.load(Ordering::Acquire)
            || app.db().is_troubled()
            || (self.refreshing.load(Ordering::Acquire)
                && since(now, self.attempt_started.load(Ordering::Acquire)) >= EPOCH_WAIT)
    }

    /// Waits for a usable reading: the first of the reads it started that makes one (the
    /// shared copy: one cache round trip), else at most [`EPOCH_WAIT`] before the database
    /// counts as in doubt, then for the refresh out to finish (bounded by the pool's deadline).
    async fn wait_for_usable<A: EpochSources>(&self, app: &Arc<A>) -> Result<i64, DbError> {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let now = Instant::now();
            if let Some(epoch) = self.usable(now, &**app) {
                return Ok(epoch);
            }
            if !self.refreshing.load(Ordering::Acquire) {
                if self.last_failed.load(Ordering::Acquire)
                    && since(now, self.attempt_started.load(Ordering::Acquire))
                        < EPOCH_REFRESH_AFTER
                {
                    return Err(DbError::Unavailable(
                        "the privacy epoch could not be confirmed".into(),
                    ));
                }
                self.start_refresh(app, now);
                continue;
            }
            let out_for = since(now, self.attempt_started.load(Ordering::Acquire));
            match EPOCH_WAIT.checked_sub(out_for) {
                // Until EPOCH_WAIT, a wake-up or the moment the database falls in doubt.
                Some(left) if !left.is_zero() => {
                    let _ = tokio::time::timeout(left, settled).await;
                }
                _ => settled.await,
            }
        }
    }

    /// Starts, in the background, a refresh from Postgres and (when the reading is not current:
    /// a cold or idle instance, or one that can't reach Postgres) a read of the shared copy;
    /// each unless one is out or one started within [`EPOCH_REFRESH_AFTER`].
    fn start_refresh<A: EpochSources>(&self, app: &Arc<A>, now: Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if claim(&self.refreshing, &self.attempt_started, now) {
            let app = Arc::clone(app);
            runtime.spawn(async move {
                app.epochs().refresh_from_database(&app).await;
            });
        }
        let current = self
            .reading(now)
            .is_some_and(|(_, age)| age < EPOCH_CURRENT_FOR);
        if !current && claim(&self.reading_shared, &self.shared_read_at, now) {
            let app = Arc::clone(app);
            runtime.spawn(async move {
                app.epochs().refresh_from_cache(&*app).await;
            });
        }
    }

    /// Reads the copy other instances share; records it and wakes waiting requests.
    async fn refresh_from_cache<A: EpochSources>(&self, app: &A) {
        let sent = Instant::now();
        if let Ok(Some(shared)) = app.cache().shared_privacy_epoch().await {
            self.record_shared(shared);
            self.shared_seen_at.fetch_max(nanos(sent), Ordering::AcqRel);
        }
        self.reading_shared.store(false, Ordering::Release);
        self.settled.notify_waiters();
    }

    /// Confirms the epoch from Postgres; records it, wakes waiting requests and shares it.
    async fn refresh_from_database<A: EpochSources>(&self, app: &Arc<A>) {
        let sent = Instant::now();
        let before = self.reading(sent).map(|(epoch, _)| epoch);
        let read = async {
            let client = app.db().get().await?;
            current_privacy_epoch(&client).await
        }
        .await;
        match read {
            Ok(epoch) => {
                self.record(epoch, sent);
                self.last_failed.store(false, Ordering::Release);
                self.refreshing.store(false, Ordering::Release);
                self.settled.notify_waiters();
                self.share(&**app, epoch, sent, false).await;
                if before.is_some_and(|b| epoch > b) {
                    app.epoch_moved();
                }
            }
            Err(e) => {
                self.last_failed.store(true, Ordering::Release);
                self.refreshing.store(false, Ordering::Release);
                self.settled.notify_waiters();
                self.log_failure(&e);
            }
        }
    }

    /// Shares a confirmation through the cache when it moved the epoch, when `now` asks for it,
    /// or when this process hasn't shared for [`EPOCH_SHARE_INTERVAL`].
    async fn share<A: EpochSources>(&self, app: &A, epoch: i64, sent: Instant, now: bool) {
        let due = now
            || epoch > self.shared_epoch.load(Ordering::Acquire)
            || since(Instant::now(), self.shared_at.load(Ordering::Acquire))
                >= EPOCH_SHARE_INTERVAL;
        if !due {
            return;
        }
        self.shared_epoch.fetch_max(epoch, Ordering::AcqRel);
        self.shared_at
            .store(nanos(Instant::now()), Ordering::Release);
        let confirmed_at_ms = unix_ms_of(sent);
        // A cache that is down only means other instances learn it from Postgres.
        let _ = app
            .cache()
            .share_privacy_epoch(SharedEpoch {
                epoch,
                confirmed_at_ms,
            })
            .await;
    }

    /// A shared confirmation, judged by its own time (another instance's clock).
    fn record_shared(&self, shared: SharedEpoch) {
        let age = Duration::from_millis(unix_ms_now().saturating_sub(shared.confirmed_at_ms));
        let Some(at) = Instant::now().checked_sub(age) else {
            return;
        };
        self.record(shared.epoch, at);
    }

    /// Adds a confirmation: the higher epoch and the later time (a higher epoch holds every
    /// bump a lower one does, so it is confirmed at least as late). Never steps back.
    fn record(&self, epoch: i64, at: Instant) {
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = nanos(at);
        if at == 0 {
            return;
        }
        let (epoch, at) = if self.confirmed.load(Ordering::Acquire) {
            (
                epoch.max(self.epoch.load(Ordering::Acquire)),
                at.max(self.confirmed_at.load(Ordering::Acquire)),
            )
        } else {
            (epoch, at)
        };
        self.epoch.store(epoch, Ordering::Release);
        self.confirmed_at.store(at, Ordering::Release);
        self.confirmed.store(true, Ordering::Release);
    }

    fn log_failure(&self, e: &DbError) {
        let now = Instant::now();
        let last = self.failure_logged_at.load(Ordering::Acquire);
        if last != 0 && since(now, last) < EPOCH_FAILURE_LOG_INTERVAL {
            return;
        }
        self.failure_logged_at.store(nanos(now), Ordering::Release);
        let age_ms = self.reading(now).map(|(_, age)| age.as_millis() as u64);
        tracing::warn!(
            error = %e,
            reading_age_ms = age_ms,
            window_ms = self.outage_window.as_millis() as u64,
            "privacy epoch refresh failed; cached pages are served under the last reading within the outage window"
        );
    }
}

/// Takes the right to start one background read: none out, none started within
/// [`EPOCH_REFRESH_AFTER`]; stamps when it started.
fn claim(out: &AtomicBool, started: &AtomicU64, now: Instant) -> bool {
    let last = started.load(Ordering::Acquire);
    if out.load(Ordering::Acquire) || (last != 0 && since(now, last) < EPOCH_REFRESH_AFTER) {
        return false;
    }
    if out.swap(true, Ordering::AcqRel) {
        return false;
    }
    started.store(nanos(now), Ordering::Release);
    true
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The wall-clock time of a monotonic instant in the past, in Unix milliseconds.
fn unix_ms_of(at: Instant) -> u64 {
    unix_ms_now().saturating_sub(at.elapsed().as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_outlasts_the_age_a_current_reading_may_have() {
        assert!(PRIVACY_PROPAGATION_WAIT > EPOCH_CURRENT_FOR);
        assert!(EPOCH_REFRESH_AFTER < EPOCH_CURRENT_FOR);
        assert!(EPOCH_WAIT < EPOCH_CURRENT_FOR);
    }

    #[test]
    fn a_reading_is_fresh_only_within_the_refresh_age() {
        let epochs = PrivacyEpochs::new(Duration::from_secs(60));
        assert_eq!(epochs.fresh(Instant::now()), None);
        epochs.record(3, Instant::now());
        assert_eq!(epochs.fresh(Instant::now()), Some(3));
        let stale = PrivacyEpochs::new(Duration::from_secs(60));
        stale.record(
            3,
            Instant::now() - EPOCH_REFRESH_AFTER - Duration::from_millis(1),
        );
        assert_eq!(stale.fresh(Instant::now()), None);
        assert!(stale.reading(Instant::now()).is_some());
    }

    #[test]
    fn confirmations_merge_to_the_higher_epoch_and_the_later_time() {
        let epochs = PrivacyEpochs::new(Duration::from_secs(60));
        let early = Instant::now() - Duration::from_millis(500);
        let late = Instant::now();
        epochs.record(5, late);
        epochs.record(4, early);
        let (epoch, age) = epochs.reading(Instant::now()).unwrap();
        assert_eq!(epoch, 5);
        assert!(age < Duration::from_millis(400), "{age:?}");
        // A higher epoch confirmed earlier still wins the epoch, and keeps the later time.
        epochs.record(6, early);
        let (epoch, age) = epochs.reading(Instant::now()).unwrap();
        assert_eq!(epoch, 6);
        assert!(age < Duration::from_millis(400), "{age:?}");
    }

    #[test]
    fn a_shared_confirmation_is_judged_by_its_own_time() {
        let epochs = PrivacyEpochs::new(Duration::from_secs(60));
        epochs.record_shared(SharedEpoch {
            epoch: 9,
            confirmed_at_ms: unix_ms_now() - 5_000,
        });
        let (epoch, age) = epochs.reading(Instant::now()).unwrap();
        assert_eq!(epoch, 9);
        assert!(age >= Duration::from_millis(4_900), "{age:?}");
        // One from the future (another clock ahead of ours) counts as just confirmed.
        epochs.record_shared(SharedEpoch {
            epoch: 9,
            confirmed_at_ms: unix_ms_now() + 5_000,
        });
        assert!(epochs.fresh(Instant::now()).is_some());
    }
}
