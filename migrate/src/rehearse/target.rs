//! What a rehearsal reads from the target, always read-only, and what it refuses there before
//! anything runs, as `deploy` would.

use tokio_postgres::Client;

use gcbb::db::DbConfig;

use super::measure::{self, Sizes};
use crate::apply::is_recorded;
use crate::error::MigrateError;
use crate::files::LocalMigration;
use crate::history::{self, MigrationRow};
use crate::lint;
use crate::lint_gate::lint_context;
use crate::session;
use crate::statements::{self, Plan};

fn db_err(e: tokio_postgres::Error) -> MigrateError {
    MigrateError::Database(session::describe_pg_error(&e))
}

/// What a rehearsal reads from the target, in one read-only session.
pub(super) struct TargetFacts {
    pub(super) rows: Vec<MigrationRow>,
    pub(super) sizes: Sizes,
    pub(super) lint: lint::LintContext,
}

/// A session to the target that cannot write (`default_transaction_read_only`), named
/// `application_name` so another session can recognise it in `pg_stat_activity`.
pub(super) async fn connect_read_only(
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

pub(super) async fn read_target(client: &Client) -> Result<TargetFacts, MigrateError> {
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

pub(super) fn pending_of<'a>(
    local: &'a [LocalMigration],
    rows: &[MigrationRow],
) -> Vec<&'a LocalMigration> {
    local
        .iter()
        .filter(|m| !is_recorded(rows, &m.name))
        .collect()
}

/// Refuses what `deploy` refuses before running anything: a failed migration in the history, a
/// pending file mixing `CONCURRENTLY` with other statements.
pub(super) fn refuse_as_deploy(
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
