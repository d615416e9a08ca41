//! The one deploy: a [`DeployPlan`] — lint, an optional rehearsal, an optional backup, apply —
//! built from the configuration and the flags, and run here by [`run`]. `gcbb db deploy`,
//! `gcbb db reset`, `gcbb dev`, the benches and the tests all go through it, so no caller can
//! apply a file the lint refuses, or back up after applying.
//!
//! The steps run in that order because each guards the next: a file the lint refuses is not
//! worth rehearsing, a rehearsal that fails is not worth a backup, and the backup is taken as
//! late as possible, right before the database changes. Progress is handed to the caller as
//! [`Step`]s as it happens (the command line prints them; the library prints nothing).

use std::path::{Path, PathBuf};

use chrono::Utc;
use gcbb::db::DbConfig;

use crate::apply::{self, DeployOutcome};
use crate::backup;
use crate::config::MigrateSettings;
use crate::error::MigrateError;
use crate::files;
use crate::lint::Finding;
use crate::lint_gate::{lint_pending, refuse_lint_errors};
use crate::rehearse::{Rehearsal, RehearsalReport};

/// What a deploy does, step by step. The lint is not optional: every deploy lints what it would
/// apply and stops at an error finding.
#[derive(Debug, Clone)]
pub struct DeployPlan {
    pub db: DbConfig,
    pub dir: PathBuf,
    pub settings: MigrateSettings,
    /// Rehearse the pending files on a copy first; apply only when the rehearsal passes.
    pub rehearse: Option<Rehearsal>,
    /// `pg_dump` the database after the rehearsal and before applying.
    pub backup: Option<Backup>,
    pub apply: Apply,
}

/// Where a deploy's backup goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backup {
    /// The archive to write; `None`: `backups/<db>-<UTC time>.dump`, timed when it starts.
    pub out: Option<PathBuf>,
}

/// What the apply step applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Apply {
    /// The pending migrations (the lint reads those).
    #[default]
    Pending,
    /// Every migration, after dropping every schema of a local database (the lint reads them
    /// all). Refused for any other host.
    ResetAll,
}

impl DeployPlan {
    /// Lint and apply the pending migrations of `dir`, with the default settings: what `gcbb
    /// dev` and the tests run.
    pub fn new(db: DbConfig, dir: impl Into<PathBuf>) -> DeployPlan {
        DeployPlan {
            db,
            dir: dir.into(),
            settings: MigrateSettings::default(),
            rehearse: None,
            backup: None,
            apply: Apply::Pending,
        }
    }
}

/// Progress of a running plan, in the order the steps happen.
#[derive(Debug)]
pub enum Step<'a> {
    /// The migrations folder was read.
    Found { migrations: usize },
    /// The lint ran: every finding, warnings included. An error among them stops the plan
    /// right after with [`MigrateError::Lint`], naming the errors.
    Linted { findings: &'a [Finding] },
    /// The rehearsal ran; when it did not pass, the plan stops with
    /// [`MigrateError::RehearsalFailed`] right after.
    Rehearsed { report: &'a RehearsalReport },
    /// The backup is written.
    BackedUp { path: &'a Path },
}

/// Runs `plan`, telling `on_step` what each step did. Returns what the apply step did; stops at
/// the first step that fails, having changed nothing after it.
pub async fn run(
    plan: &DeployPlan,
    mut on_step: impl FnMut(Step<'_>),
) -> Result<DeployOutcome, MigrateError> {
    let local = files::load_migrations(&plan.dir)?;
    on_step(Step::Found {
        migrations: local.len(),
    });

    let all = plan.apply == Apply::ResetAll;
    let findings = lint_pending(&plan.db, &plan.dir, all).await?;
    on_step(Step::Linted {
        findings: &findings,
    });
    refuse_lint_errors(&findings)?;

    if let Some(rehearsal) = &plan.rehearse {
        let report = rehearsal.run(&plan.db, &plan.dir, &plan.settings).await?;
        on_step(Step::Rehearsed { report: &report });
        if !report.passed() {
            return Err(MigrateError::RehearsalFailed {
                target: plan.db.redacted(),
            });
        }
    }

    if let Some(to) = &plan.backup {
        let out = to
            .out
            .clone()
            .unwrap_or_else(|| backup::default_backup_path(&plan.db.dbname, Utc::now()));
        let path = backup::backup(&plan.db, &out).await?;
        on_step(Step::BackedUp { path: &path });
    }

    match plan.apply {
        Apply::Pending => apply::apply_pending(&plan.db, &plan.dir, &plan.settings).await,
        Apply::ResetAll => apply::reset(&plan.db, &plan.dir, &plan.settings).await,
    }
}
