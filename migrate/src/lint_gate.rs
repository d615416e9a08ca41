//! The lint gate in front of every deploy: which files a deploy would apply to a database, their
//! findings, and which findings stop it. The library's `deploy` and `reset` pass through it, not
//! only the command line, so a destructive file cannot slip through `gcbb dev` either.

use std::path::Path;

use gcbb::db::DbConfig;

use super::error::MigrateError;
use super::session::{connect, describe_pg_error};
use super::{backup, files, history, lint};

/// The lint context of the server `client` is connected to.
pub(crate) async fn lint_context(
    client: &tokio_postgres::Client,
) -> Result<lint::LintContext, MigrateError> {
    let num: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .map_err(|e| MigrateError::Database(describe_pg_error(&e)))?
        .get(0);
    Ok(lint::LintContext {
        server_major: num
            .trim()
            .parse()
            .map(backup::server_major)
            .unwrap_or(lint::DEFAULT_SERVER_MAJOR),
    })
}

/// Lints the migrations of `dir` that `deploy` would apply to `db` (all of them with `all`):
/// every finding, warnings included. A file that does not parse is an error.
pub async fn lint_pending(
    db: &DbConfig,
    dir: &Path,
    all: bool,
) -> Result<Vec<lint::Finding>, MigrateError> {
    let local = files::load_migrations(dir)?;
    let client = connect(db).await?;
    let ctx = lint_context(&client).await?;
    let recorded: Vec<String> = if !all && history::migrations_table_exists(&client).await? {
        history::list_rows(&client)
            .await?
            .into_iter()
            .filter(|r| r.rolled_back_at.is_none())
            .map(|r| r.migration_name)
            .collect()
    } else {
        Vec::new()
    };
    let pending: Vec<&files::LocalMigration> = local
        .iter()
        .filter(|m| !recorded.contains(&m.name))
        .collect();
    lint_migrations(&pending, &ctx)
}

/// Every finding of the given migrations, in order. A file that does not parse is an error.
pub(crate) fn lint_migrations(
    migrations: &[&files::LocalMigration],
    ctx: &lint::LintContext,
) -> Result<Vec<lint::Finding>, MigrateError> {
    let mut findings = Vec::new();
    for m in migrations {
        let display = m.path.display().to_string();
        let found = lint::lint_sql(&display, &m.script, ctx)
            .map_err(|e| MigrateError::LintFailed(e.to_string()))?;
        findings.extend(found);
    }
    Ok(findings)
}

/// Lint rules the runner enforces itself, before anything runs, with Prisma-aware wording
/// ([`MigrateError::MixedStatements`]): deploy leaves those files to it.
const RUNNER_ENFORCED_RULES: &[&str] = &["concurrently-mixed-with-other-statements"];

/// The findings that stop a deploy: errors, but for the rules the runner enforces itself.
pub(crate) fn blocking_findings(findings: &[lint::Finding]) -> Vec<&lint::Finding> {
    findings
        .iter()
        .filter(|f| f.is_error() && !RUNNER_ENFORCED_RULES.contains(&f.rule))
        .collect()
}

/// Stops with [`MigrateError::Lint`] when `findings` hold an error.
pub(crate) fn refuse_lint_errors(findings: &[lint::Finding]) -> Result<(), MigrateError> {
    let errors: Vec<String> = blocking_findings(findings)
        .into_iter()
        .map(ToString::to_string)
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(MigrateError::Lint {
        count: errors.len(),
        findings: errors.join("\n"),
    })
}

#[cfg(test)]
mod lint_wiring_tests {
    use super::*;

    #[test]
    fn rules_left_to_the_runner_exist_in_the_catalog() {
        for id in RUNNER_ENFORCED_RULES {
            assert!(lint::find_rule(id).is_some(), "{id}");
        }
    }
}
