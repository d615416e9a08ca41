//! The scratch copy a rehearsal runs on, and its disposal. Three ways to make one: a file copy of
//! a local, idle target (`CREATE DATABASE … TEMPLATE`, seconds for gigabytes), a dump streamed
//! into a restore (`pg_dump | pg_restore`, any target), or the restore of a `gcbb db backup`
//! archive. A fourth is given, not made: `--into` an existing copy, such as a Neon branch, which
//! this module never creates nor drops.
//!
//! The target is only read. `pg_dump` runs its whole dump in one `READ ONLY` transaction; the
//! template copy only reads the target's files; and the rows of `_prisma_migrations` a
//! schema-only copy needs come from the caller's read-only session. A copy is made under a name
//! this run generated (marked [`SCRATCH_NAME_MARK`]), and only such a name is ever dropped: a
//! database that `CREATE DATABASE` has just created cannot be the target, and the drop refuses
//! anything else.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use gcbb::db::DbConfig;
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::backup::{self, PG_DUMP};
use crate::error::MigrateError;
use crate::history::{self, MigrationRow};
use crate::session::{self, describe_pg_error};
use crate::shadow;

/// Every database a rehearsal creates has this in its name, and a rehearsal drops no other.
pub const SCRATCH_NAME_MARK: &str = "rehearse";

/// The program that restores archives; found on `PATH`, next to `pg_dump`.
pub const PG_RESTORE: &str = "pg_restore";

/// How to copy the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyMethod {
    /// A template copy when the target is local and idle, else a dump and restore.
    #[default]
    Auto,
    /// `CREATE DATABASE … TEMPLATE target` only: the target must be on the scratch server and
    /// have no other session.
    Template,
    /// `pg_dump | pg_restore` only.
    Dump,
}

/// Where the copy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Copied from the target itself.
    Target(CopyMethod),
    /// Restored from a `pg_dump -Fc` archive (`gcbb db backup`).
    Backup(PathBuf),
    /// An existing copy made beforehand (a Neon branch): used as it is, never created nor
    /// dropped.
    Into(DbConfig),
}

/// The copy a rehearsal runs on.
#[derive(Debug, Clone)]
pub struct ScratchCopy {
    /// How to reach it.
    pub db: DbConfig,
    /// How it was made, in words (`CREATE DATABASE … TEMPLATE`, `pg_dump | pg_restore`…).
    pub made_by: String,
    /// Seconds the copy took (0 for `--into`).
    pub seconds: f64,
    /// The server's maintenance database to drop it from; `None` when it was given (`--into`).
    owner: Option<DbConfig>,
}

impl ScratchCopy {
    /// A copy given by the caller, which the rehearsal must leave in place.
    pub fn given(db: DbConfig) -> Self {
        ScratchCopy {
            db,
            made_by: "given (--into)".to_owned(),
            seconds: 0.0,
            owner: None,
        }
    }

    /// A database of the server the copy lives on: where more scratch databases (the drift
    /// step's shadow) can be created from.
    pub fn server(&self) -> &DbConfig {
        self.owner.as_ref().unwrap_or(&self.db)
    }

    /// True when this run made the copy (and may drop it).
    pub fn is_owned(&self) -> bool {
        self.owner.is_some()
    }
}

/// `gcbb_<mark>_<target name, shortened>_<12 random characters>`: under Postgres's 63-byte limit,
/// never the target's name, and grouped with every other scratch copy in a listing.
pub fn scratch_name(target_dbname: &str, kind: &str) -> String {
    let safe: String = target_dbname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(20)
        .collect();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("gcbb_{SCRATCH_NAME_MARK}_{kind}{safe}_{}", &suffix[..12])
}

/// Refuses a scratch database that is the target (by URL), or whose name lacks the mark: the
/// scratch copy is dropped afterwards, so a mistake here would drop someone's database.
pub fn check_scratch(target: &DbConfig, scratch: &DbConfig) -> Result<(), MigrateError> {
    if shadow::same_url_database(target, scratch) {
        return Err(MigrateError::RehearseRefused(format!(
            "the scratch database `{}` is the target itself",
            scratch.redacted()
        )));
    }
    if !scratch.dbname.contains(SCRATCH_NAME_MARK) {
        return Err(MigrateError::RehearseRefused(format!(
            "the scratch database `{}` is not named by a rehearsal (`{SCRATCH_NAME_MARK}` missing)",
            scratch.redacted()
        )));
    }
    Ok(())
}

/// Refuses `--into` the target, by URL: the check that needs no connection. The caller also
/// compares the connected sessions ([`shadow::same_database`]).
pub fn check_into(target: &DbConfig, into: &DbConfig) -> Result<(), MigrateError> {
    if shadow::same_url_database(target, into) {
        return Err(MigrateError::RehearseRefused(format!(
            "--into `{}` is the target database itself; a rehearsal never writes to the target",
            into.redacted()
        )));
    }
    Ok(())
}

/// What a made copy needs from the caller.
pub struct CopyPlan<'a> {
    pub target: &'a DbConfig,
    /// A database of the server the copy is created on (its maintenance database).
    pub server: &'a DbConfig,
    pub source: &'a Source,
    pub schema_only: bool,
    /// The target's history, read in a read-only session: what a schema-only copy of the
    /// target gets as its `_prisma_migrations` rows.
    pub target_rows: &'a [MigrationRow],
    /// The target server's major version, read in that session: `pg_dump` must be as new.
    pub target_major: u32,
}

/// Creates a scratch database on `plan.server` and fills it as `plan.source` says. On failure
/// nothing is left behind.
pub async fn make_copy(plan: &CopyPlan<'_>) -> Result<ScratchCopy, MigrateError> {
    let name = scratch_name(&plan.target.dbname, "");
    let scratch = plan.server.with_dbname(&name);
    check_scratch(plan.target, &scratch)?;
    let admin = session::connect(plan.server).await?;
    let started = Instant::now();
    let method = match plan.source {
        Source::Target(method) => *method,
        _ => CopyMethod::Dump,
    };
    let template_possible = !plan.schema_only
        && matches!(plan.source, Source::Target(_))
        && shadow::same_server(plan.target, plan.server);
    if method == CopyMethod::Template && !template_possible {
        return Err(MigrateError::RehearseRefused(
            "--copy template needs the scratch copy on the target's own server, and all the data \
             (not --schema-only)"
                .to_owned(),
        ));
    }
    let mut made_by = None;
    if template_possible && method != CopyMethod::Dump {
        match create_from_template(&admin, &name, &plan.target.dbname).await {
            Ok(()) => made_by = Some("CREATE DATABASE … TEMPLATE (file copy)".to_owned()),
            Err(busy) if method == CopyMethod::Auto && busy.is_busy => {
                tracing::info!(reason = %busy.message, "template copy impossible; dumping instead");
            }
            Err(e) => return Err(MigrateError::Rehearse(e.message)),
        }
    }
    let made_by = match made_by {
        Some(m) => m,
        None => {
            create_empty(&admin, &name).await?;
            let filled = fill(plan, &scratch).await;
            match filled {
                Ok(m) => m,
                Err(e) => {
                    let _ = drop_database(&admin, &name).await;
                    return Err(e);
                }
            }
        }
    };
    Ok(ScratchCopy {
        db: scratch,
        made_by,
        seconds: started.elapsed().as_secs_f64(),
        owner: Some(plan.server.clone()),
    })
}

/// Creates an empty database on the server `server` reaches, named by a rehearsal (`kind` says
/// what for), for the drift step's shadow. Dropped with [`drop_scratch`].
pub async fn make_empty(
    target: &DbConfig,
    server: &DbConfig,
    kind: &str,
) -> Result<ScratchCopy, MigrateError> {
    let name = scratch_name(&target.dbname, kind);
    let db = server.with_dbname(&name);
    check_scratch(target, &db)?;
    let admin = session::connect(server).await?;
    create_empty(&admin, &name).await?;
    Ok(ScratchCopy {
        db,
        made_by: "CREATE DATABASE".to_owned(),
        seconds: 0.0,
        owner: Some(server.clone()),
    })
}

/// Drops a copy this run made; leaves a given one (`--into`) alone.
pub async fn drop_scratch(copy: &ScratchCopy, target: &DbConfig) -> Result<(), MigrateError> {
    let Some(owner) = &copy.owner else {
        return Ok(());
    };
    check_scratch(target, &copy.db)?;
    let admin = session::connect(owner).await?;
    drop_database(&admin, &copy.db.dbname).await
}

async fn create_empty(admin: &Client, name: &str) -> Result<(), MigrateError> {
    // template0: nothing a local template1 holds (extensions, tables) can clash with the restore.
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE template0",
            history::quote_ident(name)
        ))
        .await
        .map_err(|e| {
            MigrateError::Rehearse(format!(
                "cannot create the scratch database `{name}`: {}",
                describe_pg_error(&e)
            ))
        })
}

async fn drop_database(admin: &Client, name: &str) -> Result<(), MigrateError> {
    if !name.contains(SCRATCH_NAME_MARK) {
        return Err(MigrateError::RehearseRefused(format!(
            "not dropping `{name}`: only databases named by a rehearsal are dropped"
        )));
    }
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            history::quote_ident(name)
        ))
        .await
        .map_err(|e| {
            MigrateError::Rehearse(format!(
                "cannot drop the scratch database `{name}`: {}",
                describe_pg_error(&e)
            ))
        })
}

struct TemplateFailure {
    /// The target had other sessions: a dump can still copy it.
    is_busy: bool,
    message: String,
}

async fn create_from_template(
    admin: &Client,
    name: &str,
    target: &str,
) -> Result<(), TemplateFailure> {
    let sql = format!(
        "CREATE DATABASE {} TEMPLATE {}",
        history::quote_ident(name),
        history::quote_ident(target)
    );
    admin
        .batch_execute(&sql)
        .await
        .map_err(|e| TemplateFailure {
            is_busy: e.code() == Some(&SqlState::OBJECT_IN_USE),
            message: format!(
                "cannot copy the target with CREATE DATABASE … TEMPLATE: {}",
                describe_pg_error(&e)
            ),
        })
}

/// Fills the empty scratch database from the source; returns how, in words.
async fn fill(plan: &CopyPlan<'_>, scratch: &DbConfig) -> Result<String, MigrateError> {
    match plan.source {
        Source::Backup(file) => {
            restore_file(scratch, file, plan.schema_only).await?;
            if plan.schema_only {
                restore_history_rows(scratch, file).await?;
                return Ok(format!(
                    "pg_restore --schema-only {} (+ the _prisma_migrations rows)",
                    file.display()
                ));
            }
            Ok(format!("pg_restore {}", file.display()))
        }
        Source::Target(_) => {
            backup::check_pg_dump_against(plan.target_major).await?;
            dump_into(plan.target, scratch, plan.schema_only).await?;
            if plan.schema_only {
                copy_history_rows(scratch, plan.target_rows).await?;
                return Ok(
                    "pg_dump --schema-only | pg_restore (+ the _prisma_migrations rows)".to_owned(),
                );
            }
            Ok("pg_dump | pg_restore".to_owned())
        }
        Source::Into(_) => Err(MigrateError::Rehearse(
            "an --into database is used as it is, never filled".to_owned(),
        )),
    }
}

/// The options every restore shares: objects owned by whoever restores (the target's roles need
/// not exist here), no grants, no comments (an extension's comment needs its owner), and never
/// a subscription — a copy must not start pulling from production's publisher.
fn restore_command(scratch: &DbConfig) -> tokio::process::Command {
    let mut cmd = backup::pg_tool(PG_RESTORE, scratch, "gcbb db rehearse (restore)");
    cmd.args([
        "--no-owner",
        "--no-privileges",
        "--no-comments",
        "--no-subscriptions",
        "--no-publications",
        "--exit-on-error",
        "--no-password",
    ])
    .arg("--dbname")
    .arg(&scratch.dbname);
    cmd
}

fn tool_error(program: &str, e: std::io::Error) -> MigrateError {
    match e.kind() {
        std::io::ErrorKind::NotFound => MigrateError::Rehearse(format!(
            "`{program}` was not found on PATH: install the PostgreSQL client tools of the server's \
             major version or newer"
        )),
        _ => MigrateError::Rehearse(format!("cannot run `{program}`: {e}")),
    }
}

fn tool_failed(program: &str, output: &std::process::Output) -> MigrateError {
    MigrateError::Rehearse(format!(
        "`{program}` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

async fn restore_file(
    scratch: &DbConfig,
    file: &Path,
    schema_only: bool,
) -> Result<(), MigrateError> {
    if !file.is_file() {
        return Err(MigrateError::Files {
            path: file.to_path_buf(),
            message: "no such backup file".to_owned(),
        });
    }
    let mut cmd = restore_command(scratch);
    if schema_only {
        cmd.arg("--schema-only");
    }
    let output = cmd
        .arg(file)
        .output()
        .await
        .map_err(|e| tool_error(PG_RESTORE, e))?;
    if !output.status.success() {
        return Err(tool_failed(PG_RESTORE, &output));
    }
    Ok(())
}

/// The rows of `_prisma_migrations` from an archive, into a schema-only restore of it.
async fn restore_history_rows(scratch: &DbConfig, file: &Path) -> Result<(), MigrateError> {
    let output = restore_command(scratch)
        .args(["--data-only", "--table", "_prisma_migrations"])
        .arg(file)
        .output()
        .await
        .map_err(|e| tool_error(PG_RESTORE, e))?;
    if !output.status.success() {
        return Err(tool_failed(PG_RESTORE, &output));
    }
    Ok(())
}

/// `pg_dump -Fc target | pg_restore -d scratch`, streamed: nothing touches the disk.
async fn dump_into(
    target: &DbConfig,
    scratch: &DbConfig,
    schema_only: bool,
) -> Result<(), MigrateError> {
    let mut dump = backup::pg_tool(PG_DUMP, target, "gcbb db rehearse (dump)");
    dump.args(["--format=custom", "--no-password"]);
    if schema_only {
        dump.arg("--schema-only");
    }
    let mut dump = dump
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| tool_error(PG_DUMP, e))?;
    let archive: Stdio = dump
        .stdout
        .take()
        .ok_or_else(|| MigrateError::Rehearse("pg_dump has no output stream".to_owned()))?
        .try_into()
        .map_err(|e: std::io::Error| MigrateError::Rehearse(format!("cannot pipe pg_dump: {e}")))?;
    let restore = restore_command(scratch)
        .stdin(archive)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| tool_error(PG_RESTORE, e))?;
    // Both at once: each one's stderr is read while the other runs, so neither blocks on a
    // full pipe.
    let (dumped, restored) = tokio::join!(dump.wait_with_output(), restore.wait_with_output());
    let dumped = dumped.map_err(|e| tool_error(PG_DUMP, e))?;
    let restored = restored.map_err(|e| tool_error(PG_RESTORE, e))?;
    if !dumped.status.success() {
        return Err(tool_failed(PG_DUMP, &dumped));
    }
    if !restored.status.success() {
        return Err(tool_failed(PG_RESTORE, &restored));
    }
    Ok(())
}

/// The target's history rows into a schema-only copy, which has the table but not its rows.
async fn copy_history_rows(scratch: &DbConfig, rows: &[MigrationRow]) -> Result<(), MigrateError> {
    let client = session::connect(scratch).await?;
    if !rows.is_empty() && !history::migrations_table_exists(&client).await? {
        history::create_migrations_table(&client).await?;
    }
    for row in rows {
        history::insert_row(&client, row).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_marked_short_and_never_the_targets() {
        let name = scratch_name("Neon-DB with a very long name indeed", "");
        assert!(
            name.starts_with("gcbb_rehearse_neon_db_with_a_very_"),
            "{name}"
        );
        assert!(name.len() <= 63, "{name}");
        assert_ne!(
            name,
            scratch_name("Neon-DB with a very long name indeed", "")
        );
        assert!(scratch_name("app", "shadow_").starts_with("gcbb_rehearse_shadow_app_"));
    }

    #[test]
    fn the_target_is_never_a_scratch_copy_nor_an_into() {
        let target = DbConfig::parse("postgres://u@127.0.0.1:5432/gcbb_rehearse_x").expect("url");
        let alias = DbConfig::parse("postgres://u@localhost:5432/gcbb_rehearse_x").expect("url");
        assert!(check_scratch(&target, &alias).is_err());
        assert!(check_into(&target, &alias).is_err());
        let unmarked = target.with_dbname("app_copy");
        assert!(check_scratch(&target, &unmarked).is_err());
        assert!(check_into(&target, &unmarked).is_ok());
        let branch =
            DbConfig::parse("postgres://u@ep-branch.neon.tech/gcbb_rehearse_x").expect("url");
        assert!(check_into(&target, &branch).is_ok());
    }
}
