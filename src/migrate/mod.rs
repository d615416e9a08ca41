//! `gcbb db`: a migration runner compatible with Prisma Migrate. STUB: the migrations helper
//! replaces this.

use std::path::Path;
use std::process::ExitCode;

use crate::db::DbConfig;

#[derive(Debug, clap::Args)]
pub struct DbArgs {
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DbCommand {
    /// Show which migrations are applied, pending or failed.
    Status,
    /// Apply pending migrations.
    Deploy,
}

pub async fn run(_args: DbArgs) -> ExitCode {
    ExitCode::FAILURE
}

/// Applies every pending migration of `dir` to `db` (what `gcbb dev` and the test harness use).
pub async fn deploy(_db: &DbConfig, _dir: &Path) -> anyhow::Result<Vec<String>> {
    anyhow::bail!("not built")
}
