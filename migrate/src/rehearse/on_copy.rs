//! The rehearsal on a copy of the target: the copy made (or given with `--into`), the pending
//! migrations run and measured on it beside the workload, verify and drift after, the verdict, and
//! the copy dropped.

use std::path::Path;

use gcbb::db::DbConfig;

use super::copy::{self, ScratchCopy, Source};
use super::measure;
use super::options::RehearseOptions;
use super::outcome::{CopyReport, DriftOutcome, RehearsalReport, SpeedRow};
use super::speed::{self, QuerySpeed, Regression};
use super::target::{connect_read_only, pending_of, read_target, refuse_as_deploy, TargetFacts};
use super::{verdict, workload};
use crate::apply::with_lock;
use crate::config::MigrateSettings;
use crate::error::MigrateError;
use crate::files::{self, LocalMigration};
use crate::history;
use crate::lint_gate::{blocking_findings, lint_migrations};
use crate::verify::{self, Problem, VerifyReport};
use crate::{drift, session, shadow};

/// Where scratch databases are created.
pub(super) fn scratch_server(
    target: &DbConfig,
    options: &RehearseOptions,
) -> Result<DbConfig, MigrateError> {
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
