//! `gcbb db`: a migration runner compatible with Prisma Migrate (same `_prisma_migrations` table,
//! checksums, advisory lock and row life cycle, same wording), so either tool can run against a
//! database the other migrated.
//!
//! This module is the library: `deploy`, `reset`, `status`, `resolve_*` and `lint_pending` here,
//! `drift::drift`, `verify::verify` and `backup::backup` below: what `gcbb dev`, the benches and
//! the tests call. None of it prints or reads the environment. The command line ([`cli`]) does
//! both, and reaches the database only through the library.
//!
//! Every deploy lints the pending files first ([`lint`]) and applies nothing when one has an
//! error finding — the library `deploy` too, so a destructive file cannot slip through `gcbb dev`
//! or `reset` either. Only the shadow replay of `drift` skips the lint: it compares history, it
//! does not change a real database.
//!
//! Written here rather than shelling out to Prisma: the functions ship without Node, and the runner
//! adds what Prisma lacks (lock_timeout with retries, non-transactional files for CONCURRENTLY).

mod apply;
pub mod backup;
pub mod cli;
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
pub mod settings;
pub mod shadow;
pub mod statements;
pub mod status;
pub mod verify;

use std::path::Path;

pub use apply::{resolve_applied, resolve_rolled_back, DeployOutcome, LockWait};
pub use error::MigrateError;
pub use gcbb::db::DbConfig;
pub use lint_gate::lint_pending;
use lint_gate::refuse_lint_errors;
pub use settings::MigrateSettings;
pub use status::{status, Diagnosis, HistoryDiagnostic};

/// Lints the pending migrations of `dir`, then applies them to `db` with the default settings.
/// Applies nothing when a pending file has a lint error. Prints nothing.
pub async fn deploy(db: &DbConfig, dir: &Path) -> Result<DeployOutcome, MigrateError> {
    deploy_with(db, dir, &MigrateSettings::default()).await
}

/// [`deploy`] with explicit timeouts.
pub async fn deploy_with(
    db: &DbConfig,
    dir: &Path,
    settings: &MigrateSettings,
) -> Result<DeployOutcome, MigrateError> {
    refuse_lint_errors(&lint_pending(db, dir, false).await?)?;
    apply::deploy_with(db, dir, settings).await
}

/// Drops every schema of `db` and applies every migration of `dir`, after linting them all.
pub async fn reset(
    db: &DbConfig,
    dir: &Path,
    settings: &MigrateSettings,
) -> Result<DeployOutcome, MigrateError> {
    refuse_lint_errors(&lint_pending(db, dir, true).await?)?;
    apply::reset(db, dir, settings).await
}
