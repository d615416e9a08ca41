//! Lock observation: the table-level lock modes and what each blocks, and the watcher session that
//! samples `pg_locks` for the migrating session while its statements run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

/// Pause between two samples of `pg_locks` while a statement runs.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(2);

/// A table-level lock mode, weakest first (Postgres's order of strength).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum LockMode {
    #[serde(rename = "ACCESS SHARE")]
    AccessShare,
    #[serde(rename = "ROW SHARE")]
    RowShare,
    #[serde(rename = "ROW EXCLUSIVE")]
    RowExclusive,
    #[serde(rename = "SHARE UPDATE EXCLUSIVE")]
    ShareUpdateExclusive,
    #[serde(rename = "SHARE")]
    Share,
    #[serde(rename = "SHARE ROW EXCLUSIVE")]
    ShareRowExclusive,
    #[serde(rename = "EXCLUSIVE")]
    Exclusive,
    #[serde(rename = "ACCESS EXCLUSIVE")]
    AccessExclusive,
}

impl LockMode {
    /// From `pg_locks.mode` (`AccessExclusiveLock`).
    pub fn from_pg(mode: &str) -> Option<LockMode> {
        Some(match mode {
            "AccessShareLock" => LockMode::AccessShare,
            "RowShareLock" => LockMode::RowShare,
            "RowExclusiveLock" => LockMode::RowExclusive,
            "ShareUpdateExclusiveLock" => LockMode::ShareUpdateExclusive,
            "ShareLock" => LockMode::Share,
            "ShareRowExclusiveLock" => LockMode::ShareRowExclusive,
            "ExclusiveLock" => LockMode::Exclusive,
            "AccessExclusiveLock" => LockMode::AccessExclusive,
            _ => return None,
        })
    }

    /// The name the documentation and `LOCK TABLE` use.
    pub fn name(self) -> &'static str {
        match self {
            LockMode::AccessShare => "ACCESS SHARE",
            LockMode::RowShare => "ROW SHARE",
            LockMode::RowExclusive => "ROW EXCLUSIVE",
            LockMode::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockMode::Share => "SHARE",
            LockMode::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockMode::Exclusive => "EXCLUSIVE",
            LockMode::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// What the application's traffic cannot do on the table while the lock is held.
    pub fn blocks(self) -> &'static str {
        match self {
            LockMode::AccessExclusive => "reads and writes",
            LockMode::Exclusive | LockMode::ShareRowExclusive | LockMode::Share => "writes",
            LockMode::ShareUpdateExclusive => "schema changes and vacuum",
            LockMode::RowExclusive | LockMode::RowShare | LockMode::AccessShare => "nothing",
        }
    }

    /// True for the modes that stop the application's writes (or reads too).
    pub fn blocks_writes(self) -> bool {
        self >= LockMode::Share
    }
}

/// A lock a statement took on a relation that existed before the run.
#[derive(Debug, Clone, Serialize)]
pub struct LockHeld {
    pub schema: String,
    pub table: String,
    pub mode: LockMode,
    pub blocks: &'static str,
    /// From the start of the statement until its transaction ended (COMMIT, or ROLLBACK after a
    /// failure); in autocommit, the statement's own time.
    pub held_ms: f64,
    /// `pg_total_relation_size` of the table on the target (on the copy when the target lacks it).
    pub table_bytes: Option<i64>,
}

/// The relation locks `pid` holds (granted), strongest mode per relation.
pub(super) async fn sample_locks(
    watcher: &Client,
    pid: i32,
) -> Result<Vec<(u32, LockMode)>, tokio_postgres::Error> {
    let rows = watcher
        .query(
            "SELECT relation, mode FROM pg_catalog.pg_locks \
             WHERE pid = $1 AND locktype = 'relation' AND granted AND relation IS NOT NULL \
               AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())",
            &[&pid],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get::<_, u32>(0), LockMode::from_pg(r.get(1))?)))
        .collect())
}

/// When each (relation, mode) was last seen held: the instant its sample was *sent*, so a
/// sighting is never older than the lock it reports.
pub(super) type Sightings = Arc<Mutex<HashMap<(u32, LockMode), Instant>>>;

/// Samples `pg_locks` for `pid` until `stop` is set.
pub(super) fn spawn_sampler(
    watcher: Arc<Client>,
    pid: i32,
    sightings: Sightings,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            if let Ok(locks) = sample_locks(&watcher, pid).await {
                let mut seen = sightings.lock().unwrap_or_else(|p| p.into_inner());
                for lock in locks {
                    seen.insert(lock, sent);
                }
            }
            tokio::time::sleep(SAMPLE_INTERVAL).await;
        }
    })
}
