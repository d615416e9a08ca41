//! The rehearsal in a Neon branch of the target, made through Neon's API for the occasion and
//! deleted afterwards, also when the run is interrupted.

use std::path::Path;

use gcbb::db::DbConfig;

use super::copy::Source;
use super::on_copy::rehearse;
use super::options::RehearseOptions;
use super::outcome::{NeonBranchReport, RehearsalReport};
use super::target::{connect_read_only, pending_of, read_target, refuse_as_deploy};
use crate::config::MigrateSettings;
use crate::error::MigrateError;
use crate::files;
use crate::neon::{self, NeonClient};

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
