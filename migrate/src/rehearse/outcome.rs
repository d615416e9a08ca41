//! What a rehearsal found, as data: the copy it ran on, each migration's run, the workload, the
//! hot queries' speed, verify and drift, the verdict. [`super::report`] words it.

use serde::Serialize;

use gcbb::db::DbConfig;

use super::measure::MigrationRun;
use super::options::RehearseOptions;
use super::speed::{QuerySpeed, Regression};
use super::verdict::{Budget, Verdict};
use super::workload::WorkloadReport;
use crate::verify::VerifyReport;

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
    pub(super) fn new(target: &DbConfig, found: usize, options: &RehearseOptions) -> Self {
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
