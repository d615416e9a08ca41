//! `gcbb db backup`: a `pg_dump -Fc` archive of the migration database, taken before a risky
//! deploy (`gcbb db deploy --backup`). Restore with `pg_restore`.
//!
//! `pg_dump` itself does the work (nothing else reads every object type of every server version
//! correctly); this module finds it, refuses one older than the server (an older `pg_dump`
//! aborts or writes an archive that misses newer objects), and hands it the connection through
//! libpq's environment variables, so the password never appears on a command line (`ps`).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use gcbb::db::DbConfig;

use super::error::MigrateError;
use super::session;

/// Where backups go by default, relative to the working directory.
pub const DEFAULT_BACKUP_DIR: &str = "backups";

/// The program run; found on `PATH`.
pub const PG_DUMP: &str = "pg_dump";

/// `backups/<dbname>-<UTC timestamp>.dump`.
pub fn default_backup_path(dbname: &str, now: DateTime<Utc>) -> PathBuf {
    let safe: String = dbname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Path::new(DEFAULT_BACKUP_DIR).join(format!("{safe}-{}.dump", now.format("%Y%m%dT%H%M%SZ")))
}

/// The major version of `pg_dump --version` output (`pg_dump (PostgreSQL) 15.20 (Debian …)` → 15;
/// `9.6.24` → 9).
pub fn parse_pg_dump_major(output: &str) -> Option<u32> {
    let version = output
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let digits: String = version.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// The major version of `server_version_num` (150020 → 15, 90624 → 9).
pub fn server_major(version_num: i64) -> u32 {
    (version_num / 10_000) as u32
}

/// Runs `pg_dump -Fc` of `db` into `out` (parent directories created). A failed dump leaves no
/// file behind.
pub async fn backup(db: &DbConfig, out: &Path) -> Result<PathBuf, MigrateError> {
    check_pg_dump_version(db).await?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| MigrateError::Files {
            path: parent.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    let mut cmd = pg_tool(PG_DUMP, db, "gcbb db backup");
    cmd.arg("--format=custom")
        .arg("--no-password")
        .arg("--file")
        .arg(out);
    let output = cmd
        .output()
        .await
        .map_err(|e| MigrateError::Backup(format!("cannot run `{PG_DUMP}`: {e}")))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(out);
        return Err(MigrateError::Backup(format!(
            "`{PG_DUMP}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(out.to_path_buf())
}

/// Refuses a `pg_dump` missing from `PATH` or older than `db`'s server: an older pg_dump aborts,
/// or writes an archive that misses newer objects.
pub(crate) async fn check_pg_dump_version(db: &DbConfig) -> Result<(), MigrateError> {
    let client = session::connect(db).await?;
    let num: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .map_err(|e| MigrateError::Database(session::describe_pg_error(&e)))?
        .get(0);
    drop(client);
    check_pg_dump_against(server_major(num.trim().parse().unwrap_or(0))).await
}

/// [`check_pg_dump_version`] for a server whose major version is already known.
pub(crate) async fn check_pg_dump_against(server: u32) -> Result<(), MigrateError> {
    let version = tokio::process::Command::new(PG_DUMP)
        .arg("--version")
        .output()
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => MigrateError::Backup(format!(
                "`{PG_DUMP}` was not found on PATH: install the PostgreSQL client tools \
                 (Debian: apt-get install postgresql-client) of the server's major version or newer"
            )),
            _ => MigrateError::Backup(format!("cannot run `{PG_DUMP} --version`: {e}")),
        })?;
    let version_text = String::from_utf8_lossy(&version.stdout).into_owned();
    let dump_major = parse_pg_dump_major(&version_text).ok_or_else(|| {
        MigrateError::Backup(format!(
            "cannot read the version of `{PG_DUMP}`: {:?}",
            version_text.trim()
        ))
    })?;
    if dump_major < server {
        return Err(MigrateError::Backup(format!(
            "`{PG_DUMP}` is version {dump_major} but the server is version {server}: an older pg_dump \
             cannot dump a newer server; install the PostgreSQL {server} client tools (or newer)"
        )));
    }
    Ok(())
}

/// A libpq client tool (`pg_dump`, `pg_restore`) aimed at `db` through libpq's environment
/// variables only, so the password never appears on a command line (`ps`).
pub(crate) fn pg_tool(
    program: &str,
    db: &DbConfig,
    application_name: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    // Inherited PG* settings (a PGSERVICE, another PGHOST) must not redirect the tool.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PGHOST", &db.host)
        .env("PGPORT", db.port.to_string())
        .env("PGUSER", &db.user)
        .env("PGDATABASE", &db.dbname)
        .env("PGSSLMODE", db.sslmode.as_str())
        .env("PGAPPNAME", application_name)
        .env(
            "PGCONNECT_TIMEOUT",
            db.connect_timeout.as_secs().max(1).to_string(),
        );
    if let Some(password) = &db.password {
        cmd.env("PGPASSWORD", password);
    }
    if let Some(options) = &db.options {
        cmd.env("PGOPTIONS", options);
    }
    if let Some(root) = &db.sslrootcert {
        cmd.env("PGSSLROOTCERT", root);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn pg_dump_versions_are_read_from_every_known_format() {
        assert_eq!(
            parse_pg_dump_major("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_pg_dump_major("pg_dump (PostgreSQL) 17.2"), Some(17));
        assert_eq!(parse_pg_dump_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(
            parse_pg_dump_major("pg_dump (PostgreSQL) 16beta1"),
            Some(16)
        );
        assert_eq!(parse_pg_dump_major(""), None);
        assert_eq!(parse_pg_dump_major("pg_dump (PostgreSQL)"), None);
    }

    #[test]
    fn server_version_numbers_give_the_major() {
        assert_eq!(server_major(150020), 15);
        assert_eq!(server_major(170002), 17);
        assert_eq!(server_major(90624), 9);
    }

    #[test]
    fn the_default_path_names_the_database_and_the_utc_time() {
        let now = Utc
            .with_ymd_and_hms(2025, 3, 11, 8, 5, 9)
            .single()
            .expect("time");
        assert_eq!(
            default_backup_path("neondb", now),
            Path::new("backups/neondb-20250311T080509Z.dump")
        );
        assert_eq!(
            default_backup_path("../etc/x y", now),
            Path::new("backups/___etc_x_y-20250311T080509Z.dump")
        );
    }
}
