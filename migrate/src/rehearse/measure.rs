//! Running the pending migrations on the copy as `deploy` runs them, and measuring every
//! statement: its wall time, the locks it took on existing relations and how long they were held,
//! whether it rewrote a table, the rows it affected, the indexes it built.
//!
//! `deploy` sends a transactional file as one batch between `BEGIN` and `COMMIT`; here the same
//! file runs between the same `BEGIN` and `COMMIT`, one statement at a time, so every statement
//! has its own figures while the file keeps its one-transaction behaviour (a later failure rolls
//! back the earlier statements; locks are held until `COMMIT`). A file that must run outside a
//! transaction (`CREATE INDEX CONCURRENTLY` alone) runs in autocommit with `lock_timeout` off, as
//! `deploy` runs it. Rows of `_prisma_migrations` are written as `deploy` writes them, so the
//! copy's history ends as production's would.
//!
//! Locks are seen from a second session (the watcher), which samples `pg_locks` for the
//! migrating session every few milliseconds while a statement runs, and once more after it: the
//! first catches locks that a statement releases when it ends (autocommit), the second every lock
//! a transaction still holds. A lock counts from the start of the statement that first took it
//! (or took it in a stronger mode) until its transaction ended, because that is how long other
//! sessions would have queued behind it. Rewrites are read from `pg_class.relfilenode` before and
//! after each statement in the migrating session itself, which sees its own uncommitted catalog.
//! Those reads (a few per statement, each well under a millisecond locally) are the only thing
//! added to the transaction.

mod catalog;
mod figures;
mod locks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::config::MigrateSettings;
use crate::error::MigrateError;
use crate::files::LocalMigration;
use crate::history;
use crate::lint;
use crate::session::describe_pg_error;
use crate::statements::{self, Located, Plan};

use catalog::{read_catalog, Catalog, Relation};
pub use catalog::{read_sizes, Sizes};
pub use figures::{Failure, IndexBuilt, MigrationRun, Rewrite, StatementRun, Waited};
use locks::{sample_locks, spawn_sampler, Sightings};
pub use locks::{LockHeld, LockMode, SAMPLE_INTERVAL};

fn db_err(e: tokio_postgres::Error) -> MigrateError {
    MigrateError::Database(describe_pg_error(&e))
}

/// What the runner needs besides the migrations.
pub struct RunContext<'a> {
    /// The migrating session on the copy (the caller holds the advisory lock on it).
    pub client: &'a Client,
    /// A second session on the copy, for `pg_locks`.
    pub watcher: Client,
    pub settings: &'a MigrateSettings,
    /// Sizes on the target, looked up first.
    pub target_sizes: &'a Sizes,
    pub lint: &'a lint::LintContext,
}

/// The state of one run across migrations.
struct Runner<'a> {
    client: &'a Client,
    settings: &'a MigrateSettings,
    target_sizes: &'a Sizes,
    lint: &'a lint::LintContext,
    watcher: Arc<Client>,
    pid: i32,
    /// Relations that existed before the run: the only ones whose locks matter to traffic
    /// (nobody else can see a relation the migration is still creating).
    before: Catalog,
    /// The catalog after the last statement, for rewrites and new indexes.
    current: Catalog,
    copy_sizes: Sizes,
    sightings: Sightings,
}

/// Runs `pending` in order on the copy, stopping at the first failure as `deploy` does. The
/// caller has refused files that mix `CONCURRENTLY` with other statements, as `deploy` does.
pub async fn run_pending(
    ctx: RunContext<'_>,
    pending: &[&LocalMigration],
) -> Result<Vec<MigrationRun>, MigrateError> {
    let pid: i32 = ctx
        .client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(db_err)?
        .get(0);
    let before = read_catalog(ctx.client).await?;
    let copy_sizes = read_sizes(ctx.client).await?;
    let watcher = Arc::new(ctx.watcher);
    let sightings: Sightings = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = spawn_sampler(watcher.clone(), pid, sightings.clone(), stop.clone());
    let mut runner = Runner {
        client: ctx.client,
        settings: ctx.settings,
        target_sizes: ctx.target_sizes,
        lint: ctx.lint,
        watcher,
        pid,
        current: before.clone(),
        before,
        copy_sizes,
        sightings,
    };
    let mut runs = Vec::new();
    let mut result = Ok(());
    for m in pending {
        match runner.run_migration(m).await {
            Ok(run) => {
                let applied = run.applied;
                runs.push(run);
                if !applied {
                    break;
                }
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    result.map(|()| runs)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Rows of the statement's command tag, for statements that touch rows.
fn rows_of(messages: &[SimpleQueryMessage], is_dml: bool) -> Option<u64> {
    let rows = messages.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    });
    rows.filter(|_| is_dml)
}

impl Runner<'_> {
    fn size_of(&self, schema: &str, name: &str) -> Option<i64> {
        let key = (schema.to_owned(), name.to_owned());
        self.target_sizes
            .get(&key)
            .or_else(|| self.copy_sizes.get(&key))
            .copied()
    }

    /// Everything the sampler saw held since `since`.
    fn seen_since(&self, since: Instant) -> Vec<(u32, LockMode)> {
        let seen = self.sightings.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter()
            .filter(|(_, at)| **at >= since)
            .map(|(lock, _)| *lock)
            .collect()
    }

    /// The locks among `seen` that are new for this transaction: on a relation that existed
    /// before the run, and stronger than what the transaction already held on it.
    fn new_locks(
        &self,
        held: &mut HashMap<u32, LockMode>,
        seen: Vec<(u32, LockMode)>,
    ) -> Vec<LockHeld> {
        let mut strongest: HashMap<u32, LockMode> = HashMap::new();
        for (oid, mode) in seen {
            if self.before.get(&oid).is_some_and(Relation::is_queried) {
                let slot = strongest.entry(oid).or_insert(mode);
                *slot = (*slot).max(mode);
            }
        }
        let mut out = Vec::new();
        for (oid, mode) in strongest {
            if held.get(&oid).is_some_and(|h| *h >= mode) {
                continue;
            }
            held.insert(oid, mode);
            let rel = &self.before[&oid];
            out.push(LockHeld {
                schema: rel.schema.clone(),
                table: rel.name.clone(),
                mode,
                blocks: mode.blocks(),
                held_ms: 0.0,
                table_bytes: self.size_of(&rel.schema, &rel.name),
            });
        }
        out
    }

    /// Rewrites and new indexes since the last statement, read in the migrating session.
    async fn read_changes(&mut self, run: &mut StatementRun) -> Result<(), MigrateError> {
        let now = read_catalog(self.client).await?;
        for (oid, rel) in &now {
            let Some(old) = self.current.get(oid) else {
                continue;
            };
            if rel.filenode == old.filenode
                || rel.is_index()
                || rel.kind == 'v'
                || !self.before.contains_key(oid)
            {
                continue;
            }
            let indexes_rebuilt = now
                .iter()
                .filter(|(i, r)| {
                    r.is_index()
                        && r.table == *oid
                        && self
                            .current
                            .get(i)
                            .is_some_and(|o| o.filenode != r.filenode)
                })
                .count();
            run.rewrites.push(Rewrite {
                schema: rel.schema.clone(),
                table: rel.name.clone(),
                table_bytes: self.size_of(&rel.schema, &rel.name),
                indexes_rebuilt,
            });
        }
        let built: Vec<u32> = now
            .iter()
            .filter(|(oid, r)| r.is_index() && !self.current.contains_key(oid))
            .map(|(oid, _)| *oid)
            .collect();
        if !built.is_empty() {
            let rows = self
                .client
                .query(
                    "SELECT c.oid, pg_catalog.pg_relation_size(c.oid) FROM pg_catalog.pg_class c \
                     WHERE c.oid = ANY($1::oid[])",
                    &[&built],
                )
                .await
                .map_err(db_err)?;
            for row in rows {
                let oid: u32 = row.get(0);
                let index = &now[&oid];
                run.indexes_built.push(IndexBuilt {
                    schema: index.schema.clone(),
                    index: index.name.clone(),
                    table: now
                        .get(&index.table)
                        .map(|t| t.name.clone())
                        .unwrap_or_default(),
                    bytes: row.get(1),
                });
            }
        }
        run.rewrites.sort_by(|a, b| a.table.cmp(&b.table));
        run.indexes_built.sort_by(|a, b| a.index.cmp(&b.index));
        self.current = now;
        Ok(())
    }

    /// Runs one migration as `deploy` would, recording it in the copy's `_prisma_migrations`.
    async fn run_migration(&mut self, m: &LocalMigration) -> Result<MigrationRun, MigrateError> {
        let plan = statements::plan(&m.script);
        let rules = lint::rules_by_statement(&m.script, self.lint).unwrap_or_default();
        let id = history::record_started(self.client, &m.name, &m.checksum).await?;
        let mut run = match &plan {
            Plan::Autocommit(stmts) => self.run_autocommit(m, &stmts[0]).await?,
            Plan::Transaction | Plan::Mixed { .. } => self.run_transaction(m).await?,
        };
        for s in &mut run.statements {
            s.lint_rules = rules
                .iter()
                .find(|r| r.line == s.line)
                .map(|r| r.rules.iter().map(|rule| rule.id).collect())
                .unwrap_or_default();
        }
        if run.applied {
            history::record_finished(self.client, &id).await?;
        } else {
            let failure = run
                .statements
                .iter()
                .find_map(|s| s.error.as_ref())
                .or(run.error.as_ref());
            let logs = MigrateError::ApplyFailed {
                name: m.name.clone(),
                code: failure.and_then(|f| f.code.clone()),
                message: failure.map(|f| f.message.clone()).unwrap_or_default(),
            };
            history::record_failed(self.client, &id, &logs.to_string()).await?;
        }
        Ok(run)
    }

    fn statement_run(stmt: &Located, started: Instant, took: Duration) -> StatementRun {
        StatementRun {
            line: stmt.line,
            statement: lint::excerpt(&stmt.body),
            ms: ms(took),
            rows: None,
            locks: Vec::new(),
            rewrites: Vec::new(),
            indexes_built: Vec::new(),
            lint_rules: Vec::new(),
            error: None,
            started: Some(started),
            reader_wait: None,
            writer_wait: None,
            concurrently: statements::concurrently_rewrite(&stmt.body),
        }
    }

    /// `BEGIN`, each statement measured, `COMMIT` (or `ROLLBACK` at the first failure). Not
    /// retried on `lock_timeout` as `deploy` retries: nothing else uses the copy, so a timeout
    /// here is a finding, not bad luck.
    async fn run_transaction(&mut self, m: &LocalMigration) -> Result<MigrationRun, MigrateError> {
        let located = statements::split_located(&m.script).unwrap_or_else(|| {
            // It does not parse: sent whole, as deploy sends it, so Postgres names the error.
            vec![Located {
                sql: m.script.clone(),
                body: m.script.trim().to_owned(),
                line: 1,
                is_dml: false,
            }]
        });
        let started = Instant::now();
        self.client.batch_execute("BEGIN").await.map_err(db_err)?;
        let mut held = HashMap::new();
        let mut acquired: Vec<(usize, usize, Instant)> = Vec::new();
        let mut runs: Vec<StatementRun> = Vec::new();
        let mut failed = false;
        for stmt in &located {
            let t0 = Instant::now();
            let result = self.client.simple_query(&stmt.sql).await;
            let t1 = Instant::now();
            let mut seen = self.seen_since(t0);
            let mut run = Self::statement_run(stmt, t0, t1 - t0);
            match result {
                Ok(messages) => {
                    // Still held until COMMIT: this sample sees every lock the statement took.
                    if let Ok(after) = sample_locks(&self.watcher, self.pid).await {
                        seen.extend(after);
                    }
                    run.rows = rows_of(&messages, stmt.is_dml);
                    self.read_changes(&mut run).await?;
                }
                Err(e) => {
                    run.error = Some(Failure::from_pg(&e));
                    failed = true;
                }
            }
            for lock in self.new_locks(&mut held, seen) {
                acquired.push((runs.len(), run.locks.len(), t0));
                run.locks.push(lock);
            }
            runs.push(run);
            if failed {
                break;
            }
        }
        let mut error = None;
        if failed {
            let _ = self.client.batch_execute("ROLLBACK").await;
        } else if let Err(e) = self.client.batch_execute("COMMIT").await {
            error = Some(Failure::from_pg(&e));
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        let ended = Instant::now();
        for (s, l, t0) in acquired {
            runs[s].locks[l].held_ms = ms(ended - t0);
        }
        for run in &mut runs {
            run.locks
                .sort_by(|a, b| b.mode.cmp(&a.mode).then(a.table.cmp(&b.table)));
        }
        let applied = !failed && error.is_none();
        if !applied {
            // Rolled back: what the statements changed is gone again.
            self.current = read_catalog(self.client).await?;
        }
        Ok(MigrationRun {
            name: m.name.clone(),
            transaction: true,
            ms: ms(started.elapsed()),
            applied,
            statements: runs,
            error,
        })
    }

    /// A lone statement that cannot run in a transaction, as `deploy` runs it: `lock_timeout`
    /// off for a concurrent index build, and an invalid index afterwards is a failure.
    async fn run_autocommit(
        &mut self,
        m: &LocalMigration,
        stmt: &statements::Statement,
    ) -> Result<MigrationRun, MigrateError> {
        let located = statements::split_located(&m.script)
            .and_then(|l| l.into_iter().next())
            .unwrap_or_else(|| Located {
                sql: stmt.sql.clone(),
                body: stmt.sql.clone(),
                line: 1,
                is_dml: false,
            });
        let builds_index = stmt
            .non_transactional
            .as_ref()
            .and_then(|n| n.builds_index.clone());
        if builds_index.is_some() {
            history::set_lock_timeout(self.client, Duration::ZERO).await?;
        }
        let t0 = Instant::now();
        let result = self.client.simple_query(&stmt.sql).await;
        let t1 = Instant::now();
        if builds_index.is_some() {
            history::set_lock_timeout(self.client, self.settings.lock_timeout).await?;
        }
        let mut run = Self::statement_run(&located, t0, t1 - t0);
        // Released when the statement ended: only the sampler saw them.
        let seen = self.seen_since(t0);
        for mut lock in self.new_locks(&mut HashMap::new(), seen) {
            lock.held_ms = run.ms;
            run.locks.push(lock);
        }
        run.locks
            .sort_by(|a, b| b.mode.cmp(&a.mode).then(a.table.cmp(&b.table)));
        let mut error = None;
        match result {
            Ok(messages) => {
                run.rows = rows_of(&messages, located.is_dml);
                self.read_changes(&mut run).await?;
            }
            Err(e) => run.error = Some(Failure::from_pg(&e)),
        }
        if let Some(target) = builds_index {
            let invalid = history::invalid_indexes(
                self.client,
                target.schema.as_deref(),
                &target.table,
                target.index.as_deref(),
            )
            .await?;
            if !invalid.is_empty() {
                error = Some(Failure {
                    code: None,
                    message: crate::apply::invalid_index_advice(&invalid),
                });
            }
        }
        let applied = run.error.is_none() && error.is_none();
        Ok(MigrationRun {
            name: m.name.clone(),
            transaction: false,
            ms: run.ms,
            applied,
            statements: vec![run],
            error,
        })
    }
}

#[cfg(test)]
mod tests;
