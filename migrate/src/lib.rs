//! `gcbb-migrate`: the library behind `gcbb db`, a migration runner compatible with Prisma Migrate
//! (same `_prisma_migrations` table, checksums, advisory lock and row life cycle, same wording), so
//! either tool can run against a database the other migrated. Its own crate, so neither the
//! functions nor the rest of the tool link its parser (`pg_query`), and its settings are its own
//! ([`MigrateConfig::from_env`]): the functions' `Config` holds none.
//!
//! Every deploy is one [`DeployPlan`] — lint, an optional rehearsal, an optional backup, apply —
//! run by [`deploy::run`]: `gcbb db deploy` and `reset`, `gcbb dev`, the benches and the tests
//! alike, so a file the lint refuses cannot slip through any of them. Only the shadow replay of
//! `drift` skips the lint: it compares history, it does not change a real database. Beside it:
//! `status`, `resolve_*`, `drift::drift`, `verify::verify`, `rehearse`, `revert::revert`,
//! `backup::backup`. None of it prints; only [`config`] reads the environment. The command line
//! (`gcbb db`, in `gcbb-cli`) parses flags, builds the plan, calls here and prints.
//!
//! Written here rather than shelling out to Prisma: the functions ship without Node, and the runner
//! adds what Prisma lacks (lock_timeout with retries, non-transactional files for CONCURRENTLY).
//!
//! The linter against squawk (`squawk-linter`): not adopted. Its lock rules we have already;
//! most of the rest fight the Prisma schema we must match (`prefer-timestamptz`,
//! `prefer-bigint-over-int`, `prefer-identity`, `prefer-text-field` against `TIMESTAMP(3)` and
//! `TEXT` ids) or redo what the runner does itself (`require-timeout-settings`: the runner sets
//! `lock_timeout`); and it knows nothing of the deploy gate (pending files only, Prisma's
//! one-batch rule, an allow must give a reason, the server's version), while its library is
//! barely documented, on a parser of its own, and released every few weeks. The few of its rules
//! we lack (`ban-drop-database`, `ban-truncate-cascade`, `identifier-too-long`,
//! `ban-drop-not-null`, `require-enum-value-ordering`) are worth porting as rules of ours.

mod apply;
pub mod backup;
pub mod config;
pub mod deploy;
pub mod drift;
pub mod error;
pub mod files;
pub mod history;
pub mod introspect;
pub mod lint;
mod lint_gate;
pub mod neon;
pub mod rehearse;
pub mod revert;
pub mod session;
pub mod shadow;
pub mod statements;
pub mod status;
pub mod verify;

use std::path::Path;

pub use apply::{resolve_applied, resolve_rolled_back, DeployOutcome, LockWait};
pub use config::{MigrateConfig, MigrateSettings};
pub use deploy::{DeployPlan, Step};
pub use error::MigrateError;
pub use gcbb::db::DbConfig;
pub use lint_gate::lint_pending;
pub use status::{status, Diagnosis, HistoryDiagnostic};

/// Lints the pending migrations of `dir`, then applies them to `db` with the default settings
/// (the plan of [`DeployPlan::new`]). Applies nothing when a pending file has a lint error.
pub async fn deploy(db: &DbConfig, dir: &Path) -> Result<DeployOutcome, MigrateError> {
    deploy::run(&DeployPlan::new(db.clone(), dir), |_| {}).await
}
