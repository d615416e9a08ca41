//! Comparing the local history with `_prisma_migrations` (Prisma's `diagnoseMigrationHistory`
//! rules), and every line `gcbb db` prints, in Prisma's exact wording so scripts and people that
//! read Prisma's output read ours (its `prisma migrate …` hints stay: they work on the same
//! database). Only "prisma/migrations" becomes the migrations directory we were given.

use std::path::Path;

use tokio_postgres::Client;

use super::error::MigrateError;
use super::files::LocalMigration;
use super::history::{self, MigrationRow};
use super::session;
use gcbb::db::DbConfig;

/// Where the two histories part, in Prisma's three cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryDiagnostic {
    /// Local migrations not in the database (and nothing the other way round).
    DatabaseIsBehind { unapplied: Vec<String> },
    /// Database rows without a local directory (and nothing the other way round).
    MigrationsDirectoryIsBehind { unpersisted: Vec<String> },
    /// Both.
    HistoriesDiverge {
        last_common: Option<String>,
        unapplied: Vec<String>,
        unpersisted: Vec<String>,
    },
}

/// Everything `status` knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub local_count: usize,
    pub has_migrations_table: bool,
    pub history: Option<HistoryDiagnostic>,
    /// Names of the failed rows (started, neither finished nor rolled back) with a local file.
    pub failed: Vec<String>,
    /// Applied migrations whose file no longer matches the stored checksum.
    pub modified: Vec<String>,
}

/// Prisma's comparison: a local migration counts as in the database when a row of that name is
/// not rolled back; every row whose name has no local directory counts as unpersisted.
pub fn diagnose(
    local: &[LocalMigration],
    rows: &[MigrationRow],
    has_migrations_table: bool,
) -> Diagnosis {
    let mut unapplied_idx = Vec::new();
    let mut failed = Vec::new();
    for (idx, m) in local.iter().enumerate() {
        match rows
            .iter()
            .find(|r| r.rolled_back_at.is_none() && r.migration_name == m.name)
        {
            Some(r) if r.is_failed() => failed.push(m.name.clone()),
            Some(_) => {}
            None => unapplied_idx.push(idx),
        }
    }
    let mut unpersisted = Vec::new();
    let mut modified = Vec::new();
    for r in rows {
        match local.iter().find(|m| m.name == r.migration_name) {
            None => unpersisted.push(r.migration_name.clone()),
            Some(m) if r.is_applied() && !m.matches_checksum(&r.checksum) => {
                if !modified.contains(&m.name) {
                    modified.push(m.name.clone());
                }
            }
            Some(_) => {}
        }
    }
    let unapplied: Vec<String> = unapplied_idx
        .iter()
        .map(|&i| local[i].name.clone())
        .collect();
    let history = match (unapplied.is_empty(), unpersisted.is_empty()) {
        (true, true) => None,
        (false, true) => Some(HistoryDiagnostic::DatabaseIsBehind { unapplied }),
        (true, false) => Some(HistoryDiagnostic::MigrationsDirectoryIsBehind { unpersisted }),
        (false, false) => {
            let first = unapplied_idx[0];
            let last_common = (first > 0).then(|| local[first - 1].name.clone());
            Some(HistoryDiagnostic::HistoriesDiverge {
                last_common,
                unapplied,
                unpersisted,
            })
        }
    };
    Diagnosis {
        local_count: local.len(),
        has_migrations_table,
        history,
        failed,
        modified,
    }
}

/// Reads the database side and compares (read-only: no lock, creates nothing).
pub async fn diagnose_database(
    client: &Client,
    local: &[LocalMigration],
) -> Result<Diagnosis, MigrateError> {
    let has_table = history::migrations_table_exists(client).await?;
    let rows = if has_table {
        history::list_rows(client).await?
    } else {
        Vec::new()
    };
    Ok(diagnose(local, &rows, has_table))
}

/// `gcbb db status` as a library call.
pub async fn status(db: &DbConfig, dir: &Path) -> Result<Diagnosis, MigrateError> {
    let local = super::files::load_migrations(dir)?;
    let client = session::connect(db).await?;
    diagnose_database(&client, &local).await
}

/// What to print and the exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: u8,
}

fn plural(n: usize) -> &'static str {
    if n > 1 {
        "s"
    } else {
        ""
    }
}

/// `\n2 migrations found in <dir>\n` (Prisma's first lines of `status` and `deploy`).
pub fn found_line(count: usize, dir: &str) -> String {
    if count > 0 {
        format!("\n{count} migration{} found in {dir}\n", plural(count))
    } else {
        format!("\nNo migration found in {dir}\n")
    }
}

/// The warning for a migration edited after it was applied.
pub fn modified_warning(name: &str) -> String {
    format!("warning: The migration `{name}` was modified after it was applied.\n")
}

/// Prisma's `migrate status` output for `d`, checks in Prisma's order.
pub fn render_status(d: &Diagnosis, dir: &str) -> Report {
    let mut r = Report {
        stdout: found_line(d.local_count, dir),
        ..Report::default()
    };
    for name in &d.modified {
        r.stderr.push_str(&modified_warning(name));
    }
    match &d.history {
        Some(HistoryDiagnostic::DatabaseIsBehind { unapplied }) => {
            r.stdout.push_str(&format!(
                "Following migration{} have not yet been applied:\n{}\n\n\
                 To apply migrations in development run prisma migrate dev.\n\
                 To apply migrations in production run prisma migrate deploy.\n",
                plural(unapplied.len()),
                unapplied.join("\n")
            ));
            r.exit_code = 1;
            return r;
        }
        Some(HistoryDiagnostic::HistoriesDiverge {
            last_common,
            unapplied,
            unpersisted,
        }) => {
            r.stderr.push_str(&format!(
                "Your local migration history and the migrations table from your database are different:\n\n\
                 The last common migration is: {}\n\n\
                 The migration{} have not yet been applied:\n{}\n\n\
                 The migration{} from the database are not found locally in {dir}:\n{}\n",
                last_common.as_deref().unwrap_or("null"),
                plural(unapplied.len()),
                unapplied.join("\n"),
                plural(unpersisted.len()),
                unpersisted.join("\n")
            ));
            r.exit_code = 1;
            return r;
        }
        Some(HistoryDiagnostic::MigrationsDirectoryIsBehind { unpersisted }) => {
            r.stderr.push_str(&format!(
                "The migration{} from the database are not found locally in {dir}:\n{}\n",
                plural(unpersisted.len()),
                unpersisted.join("\n")
            ));
            r.exit_code = 1;
            return r;
        }
        None => {}
    }
    if !d.has_migrations_table {
        r.stderr.push_str(
            "The current database is not managed by Prisma Migrate.\n\n\
             Read more about how to baseline an existing production database:\n\
             https://pris.ly/d/migrate-baseline\n",
        );
        r.exit_code = 1;
    } else if let Some(first) = d.failed.first() {
        r.stderr.push_str(&format!(
            "\nFollowing migration{} have failed:\n{}\n\n\
             During development if the failed migration(s) have not been deployed to a production database you can then fix the migration(s) and run prisma migrate dev.\n\n\
             The failed migration(s) can be marked as rolled back or applied:\n      \n\
             - If you rolled back the migration(s) manually:\n\
             prisma migrate resolve --rolled-back \"{first}\"\n\n\
             - If you fixed the database manually (hotfix):\n\
             prisma migrate resolve --applied \"{first}\"\n\n\
             Read more about how to resolve migration issues in a production database:\n\
             https://pris.ly/d/migrate-resolve\n",
            plural(d.failed.len()),
            d.failed.join("\n")
        ));
        r.exit_code = 1;
    } else {
        r.stdout.push_str("\nDatabase schema is up to date!\n");
    }
    r
}

/// The success part of Prisma's `migrate deploy` output.
pub fn render_deploy_success(applied: &[String]) -> String {
    if applied.is_empty() {
        return "\nNo pending migrations to apply.\n".to_owned();
    }
    let mut out = String::from("\nThe following migration(s) have been applied:\n\nmigrations/\n");
    for name in applied {
        out.push_str(&format!("  └─ {name}/\n    └─ migration.sql\n"));
    }
    out.push_str("      \nAll migrations have been successfully applied.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn local(name: &str, sql: &str) -> LocalMigration {
        LocalMigration {
            name: name.into(),
            path: format!("m/{name}/migration.sql").into(),
            script: sql.into(),
            checksum: super::super::files::checksum(sql.as_bytes()),
        }
    }

    fn row(name: &str, sql: &str, finished: bool, rolled_back: bool) -> MigrationRow {
        let t = Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        MigrationRow {
            id: name.into(),
            checksum: super::super::files::checksum(sql.as_bytes()),
            finished_at: finished.then_some(t),
            migration_name: name.into(),
            logs: None,
            rolled_back_at: rolled_back.then_some(t),
            started_at: t,
            applied_steps_count: i32::from(finished),
        }
    }

    #[test]
    fn an_up_to_date_database_prints_prismas_lines_and_exits_0() {
        let l = [local("1_a", "a"), local("2_b", "b")];
        let rows = [row("1_a", "a", true, false), row("2_b", "b", true, false)];
        let r = render_status(&diagnose(&l, &rows, true), "prisma/migrations");
        assert_eq!(
            r.stdout,
            "\n2 migrations found in prisma/migrations\n\nDatabase schema is up to date!\n"
        );
        assert_eq!((r.stderr.as_str(), r.exit_code), ("", 0));
    }

    #[test]
    fn one_pending_migration_uses_prismas_singular_quirk() {
        let l = [local("1_a", "a"), local("2_b", "b"), local("3_c", "c")];
        let rows = [row("1_a", "a", true, false), row("2_b", "b", true, false)];
        let r = render_status(&diagnose(&l, &rows, true), "m");
        assert!(r.stdout.contains(
            "\n3 migrations found in m\nFollowing migration have not yet been applied:\n3_c\n\n"
        ));
        assert_eq!(r.exit_code, 1);
        let r = render_status(&diagnose(&l, &[], false), "m");
        assert!(r
            .stdout
            .contains("Following migrations have not yet been applied:\n1_a\n2_b\n3_c\n"));
    }

    #[test]
    fn a_failed_row_is_reported_with_the_resolve_commands() {
        let l = [local("1_a", "a"), local("2_b", "b")];
        let rows = [row("1_a", "a", true, false), row("2_b", "b", false, false)];
        let d = diagnose(&l, &rows, true);
        assert_eq!(d.failed, vec!["2_b".to_owned()]);
        let r = render_status(&d, "m");
        assert!(r.stderr.contains("Following migration have failed:\n2_b\n"));
        assert!(r
            .stderr
            .contains("prisma migrate resolve --rolled-back \"2_b\""));
        assert_eq!(r.exit_code, 1);
    }

    #[test]
    fn a_rolled_back_row_makes_its_migration_pending_again() {
        let l = [local("1_a", "a")];
        let rows = [row("1_a", "a", false, true)];
        let d = diagnose(&l, &rows, true);
        assert_eq!(
            d.history,
            Some(HistoryDiagnostic::DatabaseIsBehind {
                unapplied: vec!["1_a".into()]
            })
        );
        assert!(d.failed.is_empty());
    }

    #[test]
    fn rows_missing_locally_and_files_missing_in_the_database_diverge() {
        let l = [local("1_a", "a"), local("3_c", "c")];
        let rows = [row("1_a", "a", true, false), row("2_x", "x", true, false)];
        let d = diagnose(&l, &rows, true);
        assert_eq!(
            d.history,
            Some(HistoryDiagnostic::HistoriesDiverge {
                last_common: Some("1_a".into()),
                unapplied: vec!["3_c".into()],
                unpersisted: vec!["2_x".into()]
            })
        );
        let r = render_status(&d, "m");
        assert!(r.stderr.contains("The last common migration is: 1_a\n\nThe migration have not yet been applied:\n3_c\n\nThe migration from the database are not found locally in m:\n2_x\n"));
        let only_db = diagnose(&l[..1], &rows, true);
        let r = render_status(&only_db, "m");
        assert!(r
            .stderr
            .contains("The migration from the database are not found locally in m:\n2_x\n"));
        assert_eq!(r.exit_code, 1);
    }

    #[test]
    fn an_edited_applied_file_is_flagged_but_a_crlf_checkout_is_not() {
        let rows = [row("1_a", "x;\ny;\n", true, false)];
        assert_eq!(
            diagnose(&[local("1_a", "x;\nz;\n")], &rows, true).modified,
            vec!["1_a".to_owned()]
        );
        assert!(diagnose(&[local("1_a", "x;\r\ny;\r\n")], &rows, true)
            .modified
            .is_empty());
        let r = render_status(&diagnose(&[local("1_a", "x;\nz;\n")], &rows, true), "m");
        assert!(r
            .stderr
            .contains("The migration `1_a` was modified after it was applied."));
        assert_eq!(r.exit_code, 0);
    }

    #[test]
    fn deploy_lists_applied_migrations_like_prisma() {
        let out = render_deploy_success(&["1_a".into(), "2_b".into()]);
        assert_eq!(
            out,
            "\nThe following migration(s) have been applied:\n\nmigrations/\n  └─ 1_a/\n    └─ migration.sql\n  └─ 2_b/\n    └─ migration.sql\n      \nAll migrations have been successfully applied.\n"
        );
        assert_eq!(
            render_deploy_success(&[]),
            "\nNo pending migrations to apply.\n"
        );
    }
}
