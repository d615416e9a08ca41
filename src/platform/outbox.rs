//! The purge outbox drained: the CDN purges owed for companions hidden by any writer (the
//! privacy trigger records each one in `"PrivacyPurgeOutbox"`, in the hiding transaction).
//!
//! Drained by the PATCH that hid a companion (after its response), by any instance whose epoch
//! refresh sees the epoch move (a writer other than us hid one), and by every cron run. Each
//! batch is claimed with `FOR UPDATE SKIP LOCKED`, purged, and marked in one transaction: a
//! purge that fails rolls the batch back to pending for the next drain, concurrent drainers
//! never purge a row twice, and a drainer that dies releases its rows.

use std::sync::Arc;

use crate::cache::Cache;
use crate::cdn::{self, Purge};
use crate::db::privacy::{claim_pending_purges, mark_purged};
use crate::db::DbError;
use crate::db::Pool;
use crate::platform::app::App;
use crate::platform::privacy::{EpochSources, PrivacyEpochs};

/// Tags per purge request (one per hidden companion).
pub const PURGE_BATCH: i64 = 16;
/// Batches one drain takes at most, so a drain's length is bounded; the next drain goes on.
pub const MAX_BATCHES_PER_DRAIN: usize = 64;

/// The process as the privacy epoch's refreshes see it. Here, beside the drain it starts, so
/// that the epoch (below the process's state) never imports the state back.
impl EpochSources for App {
    fn epochs(&self) -> &PrivacyEpochs {
        &self.privacy
    }

    fn db(&self) -> &Pool {
        &self.db
    }

    fn cache(&self) -> &Cache {
        &self.cache
    }

    fn epoch_moved(self: &Arc<Self>) {
        drain_later(self);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the CDN purge failed; {0} purges stay pending")]
    Purge(usize),
}

/// Purges what the outbox owes, batch by batch; returns how many rows were done (marked
/// without a request when CDN purging is off: there is nothing to purge).
pub async fn drain(app: &App) -> Result<usize, DrainError> {
    let mut done = 0;
    for _ in 0..MAX_BATCHES_PER_DRAIN {
        let mut client = app.db.get().await?;
        let tx = client.transaction().await?;
        let claimed = claim_pending_purges(&tx, PURGE_BATCH).await?;
        if claimed.is_empty() {
            tx.commit().await?;
            break;
        }
        let mut tags: Vec<String> = claimed
            .iter()
            .map(|p| cdn::companion_tag(p.companion_id.as_str()))
            .collect();
        tags.sort();
        tags.dedup();
        // Coalesced with the other drains of this process: a burst of hides (each PATCH drains
        // after its response) spends one request.
        if !app.cdn.purge_coalesced(Purge::Delete, tags).await {
            // Dropping the transaction rolls the claim back: the rows stay pending.
            return Err(DrainError::Purge(claimed.len()));
        }
        let ids: Vec<i64> = claimed.iter().map(|p| p.id).collect();
        mark_purged(&tx, &ids).await?;
        tx.commit().await?;
        done += claimed.len();
    }
    Ok(done)
}

/// Drains in the background (an instance's epoch refresh saw the epoch move); failures are
/// logged, and the rows wait for the next drain.
pub fn drain_later(app: &Arc<App>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let app = Arc::clone(app);
    runtime.spawn(async move {
        log_outcome(drain(&app).await);
    });
}

/// Logs a drain's outcome (for callers that run it in the background).
pub fn log_outcome(outcome: Result<usize, DrainError>) {
    match outcome {
        Ok(0) => {}
        Ok(done) => tracing::info!(purged = done, "purge outbox drained"),
        Err(e) => {
            tracing::warn!(error = %e, "purge outbox drain failed; retried by the next drain")
        }
    }
}
