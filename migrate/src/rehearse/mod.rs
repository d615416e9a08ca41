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

mod neon_branch;
mod on_copy;
mod options;
mod outcome;
mod target;

use std::path::Path;

use gcbb::db::DbConfig;

pub use copy::{CopyMethod, ScratchCopy, Source, SCRATCH_NAME_MARK};
pub use measure::Waited;
pub use measure::{
    Failure, IndexBuilt, LockHeld, LockMode, MigrationRun, Rewrite, Sizes, StatementRun,
};
pub use neon_branch::rehearse_in_neon_branch;
pub use on_copy::rehearse;
pub use options::RehearseOptions;
pub use outcome::{CopyReport, DriftOutcome, NeonBranchReport, RehearsalReport, SpeedRow};
pub use report::render_text;
pub use speed::{QuerySpeed, Regression, SpeedBudget, Timing};
pub use verdict::{parse_size, Breach, Budget, Safer, Verdict};
pub use workload::{Role, WorkloadReport};

use super::config::MigrateSettings;
use super::error::MigrateError;
use super::neon::{NeonClient, NeonConfig};

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

#[cfg(test)]
mod tests;
