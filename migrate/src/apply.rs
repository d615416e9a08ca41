//! Applying migrations under Prisma's advisory lock: the pending ones, `resolve` and `reset`.
//!
//! Nothing here lints: the deploy plan (`crate::deploy`) puts the lint gate in front, and
//! drift's shadow replay calls [`apply_pending`] directly, because replaying history into a
//! scratch database changes no real one. `with_lock`, `deploy_locked` and `apply_one` are the
//! pieces, for a caller that needs to run migrations on a session of its own.
//!
//! A file runs in one transaction, retried whole when it hits `lock_timeout` (55P03), so a deploy
//! never waits long behind a long transaction while every query queues behind its own lock
//! request: each attempt stalls the table's traffic for at most `lock_timeout` (1 s by default),
//! and the attempts are spread over a budget (2 minutes) with jittered pauses in between, during
//! which the queue drains. What the retries cost is reported ([`LockWait`]). A file holding a statement that cannot run in a transaction (`CREATE INDEX
//! CONCURRENTLY`…) must be that statement alone (Prisma sends a file as one batch, which
//! Postgres runs as one implicit transaction), and runs in autocommit. Concurrent builds run with
//! `lock_timeout` off: they take no lock that blocks reads or writes, but they do wait for older
//! transactions, which a short timeout would turn into spurious failures.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use gcbb::db::DbConfig;

use super::config::MigrateSettings;
use super::error::MigrateError;
use super::files::{self, LocalMigration};
use super::history::{self, MigrationRow};
use super::session::{self, describe_pg_error, is_lock_timeout};
use super::statements::{self, Plan, Statement};
use super::status::{self, HistoryDiagnostic};

/// What a successful `deploy` did and noticed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeployOutcome {
    /// Number of local migrations.
    pub found: usize,
    /// Names applied by this run, in order.
    pub applied: Vec<String>,
    /// Applied migrations whose file changed since (warned about, never re-run).
    pub modified: Vec<String>,
    /// Rows of the database without a local directory (Prisma applies anyway; we warn).
    pub missing_locally: Vec<String>,
    /// The migrations that hit `lock_timeout` before they got through, and what it cost.
    pub lock_waits: Vec<LockWait>,
}

/// What `lock_timeout` cost one migration that got through in the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockWait {
    pub migration: String,
    /// Attempts that hit `lock_timeout` (each stalled the table's queue for at most that long).
    pub timeouts: u32,
    /// The `lock_timeout` of each attempt.
    pub lock_timeout: Duration,
    /// From the first attempt until the one that got through started.
    pub waited: Duration,
}

impl std::fmt::Display for LockWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} hit lock_timeout ({} ms) {} time{}: another session held a conflicting lock; \
             applied after retrying for {:.1} s (no query waited behind it longer than {} ms)",
            self.migration,
            self.lock_timeout.as_millis(),
            self.timeouts,
            if self.timeouts == 1 { "" } else { "s" },
            self.waited.as_secs_f64(),
            self.lock_timeout.as_millis()
        )
    }
}

/// Applies every pending migration of `dir` to `db`, unlinted: the apply step of a deploy plan
/// (`crate::deploy`), and drift's shadow replay. Prints nothing.
pub(crate) async fn apply_pending(
    db: &DbConfig,
    dir: &Path,
    settings: &MigrateSettings,
) -> Result<DeployOutcome, MigrateError> {
    let local = files::load_migrations(dir)?;
    let client = session::connect(db).await?;
    with_lock(&client, settings, deploy_locked(&client, &local, settings)).await
}

/// Runs `work` while holding Prisma's advisory lock, releasing it afterwards either way.
pub(crate) async fn with_lock<T>(
    client: &Client,
    settings: &MigrateSettings,
    work: impl std::future::Future<Output = Result<T, MigrateError>>,
) -> Result<T, MigrateError> {
    history::acquire_lock(client, settings.advisory_lock_timeout).await?;
    history::set_lock_timeout(client, settings.lock_timeout).await?;
    let result = work.await;
    // The session ends right after; a failed unlock only delays the release to disconnect.
    let _ = history::release_lock(client).await;
    result
}

/// The deploy itself; the caller holds the advisory lock on `client`.
pub(crate) async fn deploy_locked(
    client: &Client,
    local: &[LocalMigration],
    settings: &MigrateSettings,
) -> Result<DeployOutcome, MigrateError> {
    if !history::migrations_table_exists(client).await? {
        if !history::schema_is_empty(client).await? {
            return Err(MigrateError::SchemaNotEmpty);
        }
        history::create_migrations_table(client).await?;
    }
    let rows = history::list_rows(client).await?;
    if let Some(failed) = rows.iter().find(|r| r.is_failed()) {
        return Err(MigrateError::FailedMigrations {
            name: failed.migration_name.clone(),
            started_at: failed.started_at,
        });
    }
    let diagnosis = status::diagnose(local, &rows, true);
    let missing_locally = match &diagnosis.history {
        Some(HistoryDiagnostic::MigrationsDirectoryIsBehind { unpersisted })
        | Some(HistoryDiagnostic::HistoriesDiverge { unpersisted, .. }) => unpersisted.clone(),
        _ => Vec::new(),
    };
    let pending: Vec<&LocalMigration> = local
        .iter()
        .filter(|m| !is_recorded(&rows, &m.name))
        .collect();

    // Refuse before running anything: a half-applied history is worse than none.
    let mut plans = Vec::with_capacity(pending.len());
    for m in &pending {
        let plan = statements::plan(&m.script);
        if let Plan::Mixed { kind, statements } = plan {
            return Err(MigrateError::MixedStatements {
                name: m.name.clone(),
                kind,
                statements,
            });
        }
        plans.push(plan);
    }

    let mut applied = Vec::new();
    let mut lock_waits = Vec::new();
    for (m, plan) in pending.into_iter().zip(plans) {
        lock_waits.extend(apply_one(client, m, &plan, settings).await?);
        applied.push(m.name.clone());
    }
    Ok(DeployOutcome {
        found: local.len(),
        applied,
        modified: diagnosis.modified,
        missing_locally,
        lock_waits,
    })
}

pub(crate) fn is_recorded(rows: &[MigrationRow], name: &str) -> bool {
    rows.iter()
        .any(|r| r.rolled_back_at.is_none() && r.migration_name == name)
}

/// Why a script failed: what goes into `logs` and into the P3018 message.
struct ScriptFailure {
    code: Option<String>,
    message: String,
}

impl ScriptFailure {
    fn from_pg(e: &tokio_postgres::Error) -> Self {
        ScriptFailure {
            code: e.code().map(|c| c.code().to_owned()),
            message: describe_pg_error(e),
        }
    }

    /// The last `lock_timeout` error, and what the retries before it tried.
    fn budget_spent(e: &tokio_postgres::Error, retry: &LockRetry, transaction: bool) -> Self {
        let mut failure = ScriptFailure::from_pg(e);
        failure.message.push_str(&format!(
            "\n\nlock_timeout ({} ms) fired on each of {} attempt{} over {:.1} s, the retry budget \
             (MIGRATE_LOCK_RETRY_BUDGET_MS={}): another session held a conflicting lock on the table \
             all along (a long transaction: see pg_stat_activity). {} After it ends, mark this \
             migration rolled back (gcbb db resolve --rolled-back <name>) and deploy again.",
            retry.lock_timeout.as_millis(),
            retry.timeouts,
            if retry.timeouts == 1 { "" } else { "s" },
            retry.started.elapsed().as_secs_f64(),
            retry.budget.as_millis(),
            if transaction {
                "Each attempt's transaction was rolled back: nothing of this file was applied."
            } else {
                "The statement never got its lock: it changed nothing."
            }
        ));
        failure
    }
}

/// Retries of a file (or a lone statement) that hit `lock_timeout`: pauses growing from 200 ms
/// to 5 s, each drawn at random between half and all of that (two deploys, or a deploy and a
/// periodic job, then don't keep colliding in step), until the budget is spent. Between two
/// attempts the migration holds no lock request, so the table's queue drains.
struct LockRetry {
    started: Instant,
    budget: Duration,
    lock_timeout: Duration,
    timeouts: u32,
}

const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(200);
const LONGEST_RETRY_PAUSE: Duration = Duration::from_secs(5);

impl LockRetry {
    fn new(settings: &MigrateSettings) -> Self {
        LockRetry {
            started: Instant::now(),
            budget: settings.lock_retry_budget,
            lock_timeout: settings.lock_timeout,
            timeouts: 0,
        }
    }

    /// Counts a timeout; the pause before the next attempt, or `None` when the budget is spent.
    fn after_timeout(&mut self) -> Option<Duration> {
        use rand::Rng;
        self.timeouts += 1;
        let growth = 1u32 << (self.timeouts - 1).min(5);
        let ceiling = (FIRST_RETRY_PAUSE * growth).min(LONGEST_RETRY_PAUSE);
        let pause = rand::rng().random_range(ceiling / 2..=ceiling);
        (self.started.elapsed() + pause < self.budget).then_some(pause)
    }

    /// What the retries cost, for the migration that got through (none when it never waited).
    fn report(&self, migration: &str) -> Option<LockWait> {
        (self.timeouts > 0).then(|| LockWait {
            migration: migration.to_owned(),
            timeouts: self.timeouts,
            lock_timeout: self.lock_timeout,
            waited: self.started.elapsed(),
        })
    }
}

/// Runs one migration as `plan` says (one transaction, or statement by statement in autocommit),
/// recording it in `_prisma_migrations` as started, then finished or failed. The caller holds the
/// advisory lock on `client` and has refused a [`Plan::Mixed`] file already. Returns what
/// `lock_timeout` cost it, when it was hit.
pub(crate) async fn apply_one(
    client: &Client,
    m: &LocalMigration,
    plan: &Plan,
    settings: &MigrateSettings,
) -> Result<Option<LockWait>, MigrateError> {
    let started = Instant::now();
    let id = history::record_started(client, &m.name, &m.checksum).await?;
    let mut retry = LockRetry::new(settings);
    let result = match plan {
        Plan::Autocommit(stmts) => run_autocommit(client, stmts, settings, &mut retry).await,
        Plan::Transaction | Plan::Mixed { .. } => {
            run_transaction(client, &m.script, &mut retry).await
        }
    };
    match result {
        Ok(()) => {
            history::record_finished(client, &id).await?;
            tracing::info!(migration = %m.name, elapsed_ms = started.elapsed().as_millis() as u64, lock_timeouts = retry.timeouts, "migration applied");
            Ok(retry.report(&m.name))
        }
        Err(f) => {
            let err = MigrateError::ApplyFailed {
                name: m.name.clone(),
                code: f.code,
                message: f.message,
            };
            history::record_failed(client, &id, &err.to_string()).await?;
            tracing::warn!(migration = %m.name, "migration failed");
            Err(err)
        }
    }
}

async fn run_transaction(
    client: &Client,
    script: &str,
    retry: &mut LockRetry,
) -> Result<(), ScriptFailure> {
    loop {
        let result = async {
            client.batch_execute("BEGIN").await?;
            client.batch_execute(script).await?;
            client.batch_execute("COMMIT").await
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) => {
                // Nothing to roll back when the failure was the COMMIT itself; harmless then.
                let _ = client.batch_execute("ROLLBACK").await;
                if !is_lock_timeout(&e) {
                    return Err(ScriptFailure::from_pg(&e));
                }
                let Some(pause) = retry.after_timeout() else {
                    return Err(ScriptFailure::budget_spent(&e, retry, true));
                };
                tracing::warn!(
                    timeouts = retry.timeouts,
                    pause_ms = pause.as_millis() as u64,
                    "lock_timeout hit, retrying the migration"
                );
                tokio::time::sleep(pause).await;
            }
        }
    }
}

async fn run_autocommit(
    client: &Client,
    stmts: &[Statement],
    settings: &MigrateSettings,
    retry: &mut LockRetry,
) -> Result<(), ScriptFailure> {
    let db_failure = |e: MigrateError| ScriptFailure {
        code: None,
        message: e.to_string(),
    };
    for stmt in stmts {
        let builds_index = stmt
            .non_transactional
            .as_ref()
            .and_then(|n| n.builds_index.clone());
        if builds_index.is_some() {
            history::set_lock_timeout(client, Duration::ZERO)
                .await
                .map_err(db_failure)?;
        }
        let mut spent = None;
        let result = loop {
            match client.batch_execute(&stmt.sql).await {
                Err(e) if is_lock_timeout(&e) => match retry.after_timeout() {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => {
                        spent = Some(ScriptFailure::budget_spent(&e, retry, false));
                        break Err(e);
                    }
                },
                other => break other,
            }
        };
        if builds_index.is_some() {
            history::set_lock_timeout(client, settings.lock_timeout)
                .await
                .map_err(db_failure)?;
        }
        let mut failure = spent.or_else(|| result.err().map(|e| ScriptFailure::from_pg(&e)));
        if let Some(target) = builds_index {
            let invalid = history::invalid_indexes(
                client,
                target.schema.as_deref(),
                &target.table,
                target.index.as_deref(),
            )
            .await
            .map_err(db_failure)?;
            if !invalid.is_empty() {
                let advice = invalid_index_advice(&invalid);
                failure = Some(match failure {
                    Some(f) => ScriptFailure {
                        code: f.code,
                        message: format!("{}\n\n{advice}", f.message),
                    },
                    None => ScriptFailure {
                        code: None,
                        message: advice,
                    },
                });
            }
        }
        if let Some(f) = failure {
            return Err(f);
        }
    }
    Ok(())
}

pub(crate) fn invalid_index_advice(invalid: &[(String, String)]) -> String {
    let mut out = String::from(
        "A concurrent index build left an INVALID index behind (Postgres keeps it, unusable but maintained on every write):\n",
    );
    for (schema, name) in invalid {
        out.push_str(&format!(
            "  {}.{}\n",
            history::quote_ident(schema),
            history::quote_ident(name)
        ));
    }
    out.push_str("Drop it, mark this migration rolled back, fix the cause and deploy again:\n");
    for (schema, name) in invalid {
        out.push_str(&format!(
            "  DROP INDEX CONCURRENTLY IF EXISTS {}.{};\n",
            history::quote_ident(schema),
            history::quote_ident(name)
        ));
    }
    out
}

/// `resolve --applied NAME`: records NAME as applied without running it (baselining, or after a
/// manual hotfix of a failed migration, whose failed row is then marked rolled back as Prisma does).
pub async fn resolve_applied(
    db: &DbConfig,
    dir: &Path,
    name: &str,
    settings: &MigrateSettings,
) -> Result<(), MigrateError> {
    let local = files::load_migrations(dir)?;
    let m = local
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| MigrateError::NotFoundLocally {
            name: name.to_owned(),
        })?;
    let client = session::connect(db).await?;
    with_lock(&client, settings, async {
        // Baselining happens on non-empty databases: no emptiness check here (Prisma's too).
        history::create_migrations_table(&client).await?;
        let rows = history::list_rows(&client).await?;
        let same: Vec<&MigrationRow> = rows.iter().filter(|r| r.migration_name == name).collect();
        if same.iter().any(|r| r.is_applied()) {
            return Err(MigrateError::AlreadyApplied {
                name: name.to_owned(),
            });
        }
        for r in same.iter().filter(|r| r.is_failed()) {
            history::mark_rolled_back(&client, &r.id).await?;
        }
        history::insert_applied(&client, name, &m.checksum).await
    })
    .await
}

/// `resolve --rolled-back NAME`: closes NAME's failed row so `deploy` runs the file again.
pub async fn resolve_rolled_back(
    db: &DbConfig,
    dir: &Path,
    name: &str,
    settings: &MigrateSettings,
) -> Result<(), MigrateError> {
    let local = files::load_migrations(dir)?;
    if !local.iter().any(|m| m.name == name) {
        return Err(MigrateError::NotFoundLocally {
            name: name.to_owned(),
        });
    }
    let client = session::connect(db).await?;
    with_lock(&client, settings, async {
        if !history::migrations_table_exists(&client).await? {
            return Err(MigrateError::NotFailed {
                name: name.to_owned(),
            });
        }
        let rows = history::list_rows(&client).await?;
        let failed: Vec<&MigrationRow> = rows
            .iter()
            .filter(|r| r.migration_name == name && r.is_failed())
            .collect();
        if failed.is_empty() {
            return Err(MigrateError::NotFailed {
                name: name.to_owned(),
            });
        }
        for r in failed {
            history::mark_rolled_back(&client, &r.id).await?;
        }
        Ok(())
    })
    .await
}

/// Drops `public` and every other schema the user owns, then deploys everything.
/// Refuses any non-local host before connecting.
pub(crate) async fn reset(
    db: &DbConfig,
    dir: &Path,
    settings: &MigrateSettings,
) -> Result<DeployOutcome, MigrateError> {
    if !db.is_local() {
        return Err(MigrateError::ResetRemote {
            host: db.host.clone(),
        });
    }
    let local = files::load_migrations(dir)?;
    let client = session::connect(db).await?;
    with_lock(&client, settings, async {
        let schemas = history::owned_schemas(&client).await?;
        history::drop_schemas(&client, &schemas).await?;
        deploy_locked(&client, &local, settings).await
    })
    .await
}
