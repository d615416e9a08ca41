//! What a rehearsal is asked: where its copy comes from, how much of it, the budget it is judged
//! against, the workload beside it.

use gcbb::db::DbConfig;

use super::copy::{CopyMethod, Source};
use super::verdict::Budget;
use super::workload;

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
