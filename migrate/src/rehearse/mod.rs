//! `gcbb db rehearse`: the pending migrations run on a scratch copy of the target before they
//! touch it, measured statement by statement, judged, and the copy thrown away.
//!
//! The lint judges a file by reading it; only a run on real data shows what a statement costs: a
//! table rewrite, a lock held for seconds, an index build that takes minutes, a `NOT NULL` that
//! fails on rows nobody knew about. So a rehearsal copies the target ([`copy`]), applies the
//! pending migrations to the copy exactly as `deploy` would, under the same advisory lock and
//! `lock_timeout`, recording each statement's time, locks, rewrites, rows and index builds
//! ([`measure`]) while a workload of production's hot queries runs beside them and records how
//! long each query waited ([`workload`]), times the hot queries before and after ([`speed`]),
//! then runs `verify` and `drift` on the copy, and judges the figures against a budget
//! ([`verdict`]); [`report`] words it. The target is only read: every session this
//! module opens to it is read-only (`default_transaction_read_only`), and `--into` a database
//! that is the target is refused, by URL and by sight of the session itself.

pub mod copy;
pub mod measure;
pub mod report;
pub mod speed;
pub mod verdict;
pub mod workload;

use std::path::Path;

use serde::Serialize;
use tokio_postgres::Client;

use gcbb::db::DbConfig;

pub use copy::{CopyMethod, ScratchCopy, Source, SCRATCH_NAME_MARK};
pub use measure::Waited;
pub use measure::{
    Failure, IndexBuilt, LockHeld, LockMode, MigrationRun, Rewrite, Sizes, StatementRun,
};
pub use report::render_text;
pub use speed::{QuerySpeed, Regression, SpeedBudget, Timing};
pub use verdict::{parse_size, Breach, Budget, Safer, Verdict};
pub use workload::{Role, WorkloadReport};

use super::apply::{is_recorded, with_lock};
use super::config::MigrateSettings;
use super::error::MigrateError;
use super::files::{self, LocalMigration};
use super::history::{self, MigrationRow};
use super::lint_gate::{blocking_findings, lint_context, lint_migrations};
use super::neon::{self, NeonClient, NeonConfig};
use super::statements::{self, Plan};
use super::verify::{self, Problem, VerifyReport};
use super::{drift, lint, session, shadow};

/// A rehearsal: on a copy of the target ([`RehearseOptions::source`]), or in a Neon branch of it
/// made for the occasion (the source is then not read).
#[derive(Debug, Clone)]
pub enum Rehearsal {
    Copy(RehearseOptions),
    NeonBranch {
        options: RehearseOptions,
        neon: NeonConfig,
    },
}

impl Rehearsal {
    /// Runs it for the pending migrations of `dir`. A Neon branch is deleted also when the
    /// process is interrupted (Ctrl-C, SIGTERM) while it exists. Writes nothing to the target.
    pub async fn run(
        &self,
        target: &DbConfig,
        dir: &Path,
        settings: &MigrateSettings,
    ) -> Result<RehearsalReport, MigrateError> {
        match self {
            Rehearsal::Copy(options) => rehearse(target, dir, settings, options).await,
            Rehearsal::NeonBranch { options, neon } => {
                let client = NeonClient::new(neon.clone())?;
                rehearse_in_neon_branch(target, dir, settings, options, &client, interrupted())
                    .await
            }
        }
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM (a CI job cancelled).
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How to rehearse.
#[derive(Debug, Clone)]
pub struct RehearseOptions {
    pub source: Source,
    /// Copy the structure only (and the history rows): for databases too big to copy.
    pub schema_only: bool,
    /// Keep the scratch copy afterwards.
    pub keep: bool,
    pub budget: Budget,
    /// A database of the server scratch databases are created on. Default: the target's own
    /// server (its `postgres` database) when the target is local; a remote target needs one, or
    /// `--into`, so that a copy never loads production's server unasked.
    pub scratch_server: Option<DbConfig>,
    /// A shadow database for the drift step, used when a temporary one cannot be created.
    pub shadow: Option<DbConfig>,
    /// Run production's queries beside the migrations (readers and writers) and judge how long
    /// they waited; `false` with `--no-workload`.
    pub workload: bool,
    /// Reader sessions of the workload.
    pub readers: usize,
}

impl Default for RehearseOptions {
    fn default() -> Self {
        RehearseOptions {
            source: Source::Target(CopyMethod::Auto),
            schema_only: false,
            keep: false,
            budget: Budget::default(),
            scratch_server: None,
            shadow: None,
            workload: true,
            readers: workload::DEFAULT_READERS,
        }
    }
}

/// A hot query before and after the migrations, and what the verdict holds against it.
#[derive(Debug, Clone, Serialize)]
pub struct SpeedRow {
    #[serde(flatten)]
    pub speed: QuerySpeed,
    pub regressions: Vec<Regression>,
}

/// The copy a rehearsal ran on.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    /// `host:port/dbname`.
    pub database: String,
    pub made_by: String,
    pub seconds: f64,
    /// Still there afterwards (`--keep`, or given with `--into`).
    pub kept: bool,
    /// Given with `--into` rather than made.
    pub given: bool,
    /// The Neon branch made for the rehearsal (`--neon-branch`).
    pub neon_branch: Option<NeonBranchReport>,
}

/// A Neon branch a rehearsal made through Neon's API.
#[derive(Debug, Clone, Serialize)]
pub struct NeonBranchReport {
    pub id: String,
    pub name: String,
    /// Deleted afterwards (false only when the delete call failed: the report says so).
    pub deleted: bool,
}

/// Drift between the copy and the migrations directory, after the run.
#[derive(Debug, Clone, Serialize)]
pub struct DriftOutcome {
    pub drift: bool,
    /// Prisma's summary.
    pub summary: String,
}

/// Everything a rehearsal found.
#[derive(Debug, Clone, Serialize)]
pub struct RehearsalReport {
    /// `host:port/dbname` of the target.
    pub target: String,
    pub schema_only: bool,
    pub budget: Budget,
    /// Local migrations.
    pub found: usize,
    /// The migrations the copy had pending, in order (empty: nothing to rehearse).
    pub pending: Vec<String>,
    pub copy: Option<CopyReport>,
    pub migrations: Vec<MigrationRun>,
    /// What the workload's queries saw while the migrations ran (`None`: no workload).
    pub workload: Option<WorkloadReport>,
    /// Hot queries timed before and after the migrations (empty: not measured, see `notes`).
    pub speed: Vec<SpeedRow>,
    /// Lint errors for which `deploy` would refuse the pending files.
    pub lint_refusals: Vec<String>,
    /// `verify` on the copy after the run (`None`: not run; see `notes`).
    pub verify: Option<VerifyReport>,
    /// Problems of `verify` after the run that were not there before it.
    pub verify_regressions: Vec<String>,
    pub drift: Option<DriftOutcome>,
    /// What the reader should know that is not a breach.
    pub notes: Vec<String>,
    pub verdict: Verdict,
}

impl RehearsalReport {
    fn new(target: &DbConfig, found: usize, options: &RehearseOptions) -> Self {
        RehearsalReport {
            target: target.redacted(),
            schema_only: options.schema_only,
            budget: options.budget,
            found,
            pending: Vec::new(),
            copy: None,
            migrations: Vec::new(),
            workload: None,
            speed: Vec::new(),
            lint_refusals: Vec::new(),
            verify: None,
            verify_regressions: Vec::new(),
            drift: None,
            notes: Vec::new(),
            verdict: Verdict {
                passed: true,
                breaches: Vec::new(),
            },
        }
    }

    /// True when no migration was pending.
    pub fn nothing_to_rehearse(&self) -> bool {
        self.pending.is_empty()
    }

    /// True when the rehearsal passed (or had nothing to do).
    pub fn passed(&self) -> bool {
        self.verdict.passed
    }
}

fn db_err(e: tokio_postgres::Error) -> MigrateError {
    MigrateError::Database(session::describe_pg_error(&e))
}

/// What a rehearsal reads from the target, in one read-only session.
struct TargetFacts {
    rows: Vec<MigrationRow>,
    sizes: Sizes,
    lint: lint::LintContext,
}

/// A session to the target that cannot write (`default_transaction_read_only`), named
/// `application_name` so another session can recognise it in `pg_stat_activity`.
async fn connect_read_only(
    target: &DbConfig,
    application_name: &str,
) -> Result<Client, MigrateError> {
    let cfg = DbConfig {
        application_name: application_name.to_owned(),
        ..target.clone()
    };
    let client = session::connect(&cfg).await?;
    client
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .map_err(db_err)?;
    Ok(client)
}

async fn read_target(client: &Client) -> Result<TargetFacts, MigrateError> {
    let rows = if history::migrations_table_exists(client).await? {
        history::list_rows(client).await?
    } else {
        Vec::new()
    };
    Ok(TargetFacts {
        rows,
        sizes: measure::read_sizes(client).await?,
        lint: lint_context(client).await?,
    })
}

fn pending_of<'a>(local: &'a [LocalMigration], rows: &[MigrationRow]) -> Vec<&'a LocalMigration> {
    local
        .iter()
        .filter(|m| !is_recorded(rows, &m.name))
        .collect()
}

/// Refuses what `deploy` refuses before running anything: a failed migration in the history, a
/// pending file mixing `CONCURRENTLY` with other statements.
fn refuse_as_deploy(
    rows: &[MigrationRow],
    pending: &[&LocalMigration],
) -> Result<(), MigrateError> {
    if let Some(failed) = rows.iter().find(|r| r.is_failed()) {
        return Err(MigrateError::FailedMigrations {
            name: failed.migration_name.clone(),
            started_at: failed.started_at,
        });
    }
    for m in pending {
        if let Plan::Mixed { kind, statements } = statements::plan(&m.script) {
            return Err(MigrateError::MixedStatements {
                name: m.name.clone(),
                kind,
                statements,
            });
        }
    }
    Ok(())
}

/// Where scratch databases are created.
fn scratch_server(target: &DbConfig, options: &RehearseOptions) -> Result<DbConfig, MigrateError> {
    if let Some(server) = &options.scratch_server {
        return Ok(server.clone());
    }
    if target.is_local() {
        return Ok(target.with_dbname("postgres"));
    }
    Err(MigrateError::RehearseRefused(format!(
        "the target `{}` is not local, and a copy made on its own server would load production \
         with a full restore. Pass --into URL (a copy made beforehand: a Neon branch), or \
         --scratch-server URL (a database of the server to make the copy on; give the target's \
         own server explicitly if that is what you want)",
        target.redacted()
    )))
}

/// Rehearses the pending migrations of `dir` for `target`, as [`RehearseOptions`] say. Writes
/// nothing to the target. Prints nothing.
pub async fn rehearse(
    target: &DbConfig,
    dir: &Path,
    settings: &MigrateSettings,
    options: &RehearseOptions,
) -> Result<RehearsalReport, MigrateError> {
    let local = files::load_migrations(dir)?;
    let mut report = RehearsalReport::new(target, local.len(), options);
    if let Source::Into(into) = &options.source {
        copy::check_into(target, into)?;
    }
    if let Source::Backup(file) = &options.source {
        if !file.is_file() {
            return Err(MigrateError::Files {
                path: file.clone(),
                message: "no such backup file".to_owned(),
            });
        }
    }
    // Before any connection: where the copy would go is a question of URLs.
    let server = match &options.source {
        Source::Into(_) => None,
        _ => Some(scratch_server(target, options)?),
    };
    let probe = format!(
        "gcbb db rehearse {}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let target_client = connect_read_only(target, &probe).await?;
    let facts = read_target(&target_client).await?;
    let target_pending = pending_of(&local, &facts.rows);
    refuse_as_deploy(&facts.rows, &target_pending)?;
    if target_pending.is_empty() && matches!(options.source, Source::Target(_)) {
        // Nothing would be deployed: no copy is worth making.
        return Ok(report);
    }

    let copy = match &options.source {
        Source::Into(into) => {
            let into_client = session::connect(into).await?;
            if shadow::same_database(&target_client, &probe, &into_client).await? {
                return Err(MigrateError::RehearseRefused(format!(
                    "--into `{}` is the target database itself (same server and database); a \
                     rehearsal never writes to the target",
                    into.redacted()
                )));
            }
            ScratchCopy::given(into.clone())
        }
        _ => {
            // A template copy needs the target without other sessions, this one included.
            drop(target_client);
            let server = server.unwrap_or_else(|| target.with_dbname("postgres"));
            copy::make_copy(&copy::CopyPlan {
                target,
                server: &server,
                source: &options.source,
                schema_only: options.schema_only,
                target_rows: &facts.rows,
                target_major: facts.lint.server_major,
            })
            .await?
        }
    };
    report.copy = Some(CopyReport {
        database: copy.db.redacted(),
        made_by: copy.made_by.clone(),
        seconds: copy.seconds,
        kept: options.keep || !copy.is_owned(),
        given: !copy.is_owned(),
        neon_branch: None,
    });

    let outcome = rehearse_on(&copy, dir, &local, &facts, settings, options, &mut report).await;
    if copy.is_owned() && !options.keep {
        let dropped = copy::drop_scratch(&copy, target).await;
        if let Err(e) = dropped {
            report
                .notes
                .push(format!("the copy could not be dropped: {e}"));
            if let Some(c) = report.copy.as_mut() {
                c.kept = true;
            }
        }
    }
    outcome?;

    let target_names: Vec<&str> = target_pending.iter().map(|m| m.name.as_str()).collect();
    if report
        .pending
        .iter()
        .map(String::as_str)
        .ne(target_names.iter().copied())
    {
        report.notes.push(format!(
            "the copy's history differs from the target's: pending on the copy: {}; on the target: {}",
            list_or_none(&report.pending),
            list_or_none(&target_names)
        ));
    }
    let speed: Vec<(QuerySpeed, Vec<Regression>)> = report
        .speed
        .iter()
        .map(|r| (r.speed.clone(), r.regressions.clone()))
        .collect();
    report.verdict = verdict::judge(
        &verdict::Findings {
            runs: &report.migrations,
            schema_only: options.schema_only,
            lint_refusals: &report.lint_refusals,
            verify_regressions: &report.verify_regressions,
            speed: &speed,
        },
        &options.budget,
    );
    Ok(report)
}

/// Rehearses in a Neon branch of the target made for it through Neon's API (the copy a Neon
/// production has, copy-on-write, in seconds), then deletes the branch: when the rehearsal passes,
/// fails or errs, and when `interrupt` completes first (Ctrl-C). With nothing pending no branch is
/// made. `options.source` is not read.
pub async fn rehearse_in_neon_branch(
    target: &DbConfig,
    dir: &Path,
    settings: &MigrateSettings,
    options: &RehearseOptions,
    neon: &NeonClient,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<RehearsalReport, MigrateError> {
    tokio::pin!(interrupt);
    let local = files::load_migrations(dir)?;
    {
        let probe = format!(
            "gcbb db rehearse {}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let client = connect_read_only(target, &probe).await?;
        let facts = read_target(&client).await?;
        let pending = pending_of(&local, &facts.rows);
        refuse_as_deploy(&facts.rows, &pending)?;
        if pending.is_empty() {
            return Ok(RehearsalReport::new(target, local.len(), options));
        }
    }
    let name = neon::branch_name(target);
    let made: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
    let started = std::time::Instant::now();
    let created = {
        let recorder = made.clone();
        let create = neon.create_branch(&name, target, move |id| {
            *recorder.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.to_owned());
        });
        tokio::select! {
            created = create => created?,
            () = &mut interrupt => {
                let id = made.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let cleaned = match id {
                    Some(id) => neon.delete_branch(&id).await.map(|()| format!("the branch {id} was deleted")),
                    None => neon.delete_named(&name).await.map(|found| match found {
                        Some(id) => format!("the branch {id} was deleted"),
                        None => "no branch was made yet".to_owned(),
                    }),
                };
                return Err(MigrateError::Interrupted(match cleaned {
                    Ok(what) => format!("while the Neon branch {name} was being made; {what}"),
                    Err(e) => format!("while the Neon branch {name} was being made; {e}"),
                }));
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let into = RehearseOptions {
        source: Source::Into(created.db.clone()),
        ..options.clone()
    };
    let outcome = tokio::select! {
        r = rehearse(target, dir, settings, &into) => Some(r),
        () = &mut interrupt => None,
    };
    let deleted = neon.delete_branch(&created.id).await;
    let mut report = match (outcome, deleted) {
        (None, Ok(())) => {
            return Err(MigrateError::Interrupted(format!(
                "the rehearsal in the Neon branch {} ({}) was stopped; the branch was deleted",
                created.name, created.id
            )))
        }
        (None, Err(e)) => {
            return Err(MigrateError::Interrupted(format!(
                "the rehearsal in the Neon branch {} ({}) was stopped; {e}",
                created.name, created.id
            )))
        }
        (Some(Err(e)), Ok(())) => {
            return Err(MigrateError::Rehearse(format!(
                "{e}\n(in the Neon branch {} ({}), which was deleted)",
                created.name, created.id
            )))
        }
        (Some(Err(e)), Err(d)) => {
            return Err(MigrateError::Rehearse(format!(
                "{e}\n(in the Neon branch {} ({}); {d})",
                created.name, created.id
            )))
        }
        (Some(Ok(report)), deleted) => {
            let mut report = report;
            if let Err(d) = &deleted {
                report.notes.push(d.to_string());
            }
            if let Some(copy) = report.copy.as_mut() {
                copy.neon_branch = Some(NeonBranchReport {
                    id: created.id.clone(),
                    name: created.name.clone(),
                    deleted: deleted.is_ok(),
                });
            }
            report
        }
    };
    if let Some(copy) = report.copy.as_mut() {
        copy.made_by = format!(
            "Neon branch {} ({}) of project {}, made through the Neon API",
            created.name,
            created.id,
            neon.project_id()
        );
        copy.seconds = seconds;
        copy.given = false;
        copy.kept = !copy.neon_branch.as_ref().is_some_and(|b| b.deleted);
    }
    Ok(report)
}

fn list_or_none<S: AsRef<str>>(names: &[S]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    names
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rehearsal proper, on the copy: the run, then verify and drift.
async fn rehearse_on(
    copy: &ScratchCopy,
    dir: &Path,
    local: &[LocalMigration],
    facts: &TargetFacts,
    settings: &MigrateSettings,
    options: &RehearseOptions,
    report: &mut RehearsalReport,
) -> Result<(), MigrateError> {
    let client = session::connect(&copy.db).await?;
    let (verify_before, speed_before) = with_lock(&client, settings, async {
        // `deploy_locked`'s checks, on the copy's own history.
        if !history::migrations_table_exists(&client).await? {
            if !history::schema_is_empty(&client).await? {
                return Err(MigrateError::SchemaNotEmpty);
            }
            history::create_migrations_table(&client).await?;
        }
        let rows = history::list_rows(&client).await?;
        let pending = pending_of(local, &rows);
        refuse_as_deploy(&rows, &pending)?;
        report.pending = pending.iter().map(|m| m.name.clone()).collect();
        if pending.is_empty() {
            return Ok((None, None));
        }
        let findings = lint_migrations(&pending, &facts.lint)?;
        report.lint_refusals = blocking_findings(&findings)
            .into_iter()
            .map(ToString::to_string)
            .collect();
        let (verify_before, speed_before) = if options.schema_only {
            (None, None)
        } else {
            (
                Some(verify::verify_with(&client, &gcbb::db::hot_queries()).await?),
                Some(speed::measure_all(&client).await?),
            )
        };
        let watcher = session::connect(&copy.db).await?;
        let load = if options.workload {
            let load = workload::start(&copy.db, options.readers).await?;
            tokio::time::sleep(workload::WARM_UP).await;
            Some(load)
        } else {
            None
        };
        let ran = measure::run_pending(
            measure::RunContext {
                client: &client,
                watcher,
                settings,
                target_sizes: &facts.sizes,
                lint: &facts.lint,
            },
            &pending,
        )
        .await;
        let ended = std::time::Instant::now();
        // Stopped whatever happened, so no session outlives the run.
        let samples = match load {
            Some(load) => Some((load.readers, load.writes.clone(), load.stop().await)),
            None => None,
        };
        report.migrations = ran?;
        if let Some((readers, writes, samples)) = samples {
            report.workload = Some(workload::attribute(
                &mut report.migrations,
                &samples,
                ended,
                readers,
                writes,
            ));
        }
        Ok((verify_before, speed_before))
    })
    .await?;
    if report.pending.is_empty() {
        return Ok(());
    }
    if report.migrations.iter().any(|m| !m.applied) {
        report
            .notes
            .push("verify, drift and the hot queries' times after were skipped: a migration failed on the copy".to_owned());
        return Ok(());
    }
    match verify_before {
        Some(before) => {
            let after = verify::verify_with(&client, &gcbb::db::hot_queries()).await?;
            record_verify(report, &before, after);
        }
        None => report.notes.push(
            "verify was skipped: a schema-only copy holds no data to plan on; its times are those of \
             empty tables (locks and rewrites are real)"
                .to_owned(),
        ),
    }
    if let Some(before) = speed_before {
        let after = speed::measure_all(&client).await?;
        let rows = speed::row_estimates(&client).await?;
        let rows_of = |rel: &str| rows.iter().find(|(r, _)| r == rel).map(|(_, n)| *n);
        report.speed = speed::pair(before, after)
            .into_iter()
            .map(|q| SpeedRow {
                regressions: speed::regressions(&q, &options.budget.speed, rows_of),
                speed: q,
            })
            .collect();
    }
    drop(client);
    run_drift(copy, dir, options, report).await;
    Ok(())
}

/// Keeps `after`, and as regressions the problems it has that `before` had not; problems that
/// only say the data is too small to judge are notes.
fn record_verify(report: &mut RehearsalReport, before: &VerifyReport, after: VerifyReport) {
    for problem in &after.problems {
        match problem {
            Problem::TooLittleData { .. } => report
                .notes
                .push(format!("verify could not judge the plans: {problem}")),
            p if before.problems.contains(p) => report
                .notes
                .push(format!("verify, already so before the migrations: {p}")),
            p => report.verify_regressions.push(p.to_string()),
        }
    }
    report.verify = Some(after);
}

/// `drift` between the copy and the history, replayed into a temporary shadow database on the
/// copy's server (or the given shadow when none can be created there). Failures are notes: drift
/// describes the database, it does not judge the migrations.
async fn run_drift(
    copy: &ScratchCopy,
    dir: &Path,
    options: &RehearseOptions,
    report: &mut RehearsalReport,
) {
    let made = copy::make_empty(&copy.db, copy.server(), "shadow_").await;
    let (shadow_db, temporary) = match (&made, &options.shadow) {
        (Ok(s), _) => (s.db.clone(), true),
        (Err(_), Some(given)) => (given.clone(), false),
        (Err(e), None) => {
            report.notes.push(format!(
                "drift was skipped: no temporary shadow database could be created ({e}); set \
                 SHADOW_DATABASE_URL"
            ));
            return;
        }
    };
    match drift::drift(&copy.db, &shadow_db, dir, false).await {
        Ok((d, _)) => {
            report.drift = Some(DriftOutcome {
                drift: d.drift,
                summary: d.summary,
            })
        }
        Err(e) => report.notes.push(format!("drift failed: {e}")),
    }
    if let (true, Ok(s)) = (temporary, &made) {
        if let Err(e) = copy::drop_scratch(s, &copy.db).await {
            report
                .notes
                .push(format!("the temporary shadow could not be dropped: {e}"));
        }
    }
}

#[cfg(test)]
mod tests;
