//! Everything that can stop a `gcbb db` command. One enum for the library and the command line
//! alike, so a caller of `deploy` and a user of `gcbb db deploy` get the same message and the same
//! Prisma error code for the same situation.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use gcbb::config::ConfigError;

/// Everything that can stop a `gcbb db` command; `Display` is the message shown to the user,
/// in Prisma's wording where Prisma has one (`code()` gives Prisma's error code).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("no database URL: set DATABASE_URL_UNPOOLED, DIRECT_URL or DATABASE_URL")]
    NoDatabaseUrl,
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(
        "Can't reach database server at `{target}`\n\nPlease make sure your database server is running at `{target}`.\n({message})"
    )]
    Connect { target: String, message: String },
    #[error(
        "Timed out trying to acquire a postgres advisory lock (SELECT pg_advisory_lock(72707369)). Timeout: {timeout_ms}ms. \
         Another `gcbb db` or `prisma migrate` is running against this database (or a session holds the lock). \
         See https://pris.ly/d/migrate-advisory-locking for details."
    )]
    AdvisoryLockTimeout { timeout_ms: u128 },
    #[error(
        "The database schema is not empty. Read more about how to baseline an existing production database: \
         https://pris.ly/d/migrate-baseline"
    )]
    SchemaNotEmpty,
    #[error(
        "migrate found failed migrations in the target database, new migrations will not be applied. Read more about how \
         to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve\n\
         The `{name}` migration started at {started_at} failed"
    )]
    FailedMigrations {
        name: String,
        started_at: DateTime<Utc>,
    },
    #[error(
        "A migration failed to apply. New migrations cannot be applied before the error is recovered from. Read more about \
         how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve\n\n\
         Migration name: {name}\n\n\
         Database error code: {}\n\n\
         Database error:\n{message}", code.as_deref().unwrap_or("none")
    )]
    ApplyFailed {
        name: String,
        code: Option<String>,
        message: String,
    },
    #[error(
        "The migration `{name}` holds {kind} and {} other statement(s). {kind} cannot run inside a transaction, and \
         Prisma sends a whole migration file as one batch, which Postgres runs as one implicit transaction, so \
         `prisma migrate deploy` could never apply this file. Move {kind} into a migration file of its own.",
        statements - 1
    )]
    MixedStatements {
        name: String,
        kind: &'static str,
        statements: usize,
    },
    #[error(
        "The migration {name} could not be found. Please make sure that the migration exists, and that you included the \
         whole name of the directory. (example: \"20201207184859_initial_migration\")"
    )]
    NotFoundLocally { name: String },
    #[error("The migration `{name}` is already recorded as applied in the database.")]
    AlreadyApplied { name: String },
    #[error("Migration `{name}` cannot be rolled back because it is not in a failed state.")]
    NotFailed { name: String },
    #[error("a migration name needs at least one letter or digit")]
    InvalidName,
    #[error("{}: {message}", path.display())]
    Files { path: PathBuf, message: String },
    #[error(
        "refusing to reset the database on `{host}`: reset drops every table and only runs against localhost, \
         127.0.0.1, ::1 or a Unix socket"
    )]
    ResetRemote { host: String },
    #[error("reset drops every table of the database: pass --force to confirm")]
    ResetNotConfirmed,
    #[error("database error: {0}")]
    Database(String),
    #[error(
        "{count} lint error(s) in pending migrations; nothing was applied. Fix the file, or put \
         `-- gcbb:allow <rule> <reason>` on the line above the statement if it is safe here:\n{findings}"
    )]
    Lint { count: usize, findings: String },
    #[error("{0}")]
    LintFailed(String),
    #[error("no shadow database: set SHADOW_DATABASE_URL")]
    NoShadowUrl,
    #[error("refusing to use `{shadow}` as the shadow database: {reason}")]
    ShadowRefused { shadow: String, reason: String },
    #[error("backup failed: {0}")]
    Backup(String),
    #[error("refusing to rehearse: {0}")]
    RehearseRefused(String),
    #[error("rehearsal failed: {0}")]
    Rehearse(String),
    /// The rehearsal of a deploy plan ran and did not pass: nothing was applied.
    #[error("the rehearsal failed; nothing was applied to {target}.")]
    RehearsalFailed { target: String },
    #[error("refusing to revert: {0}")]
    RevertRefused(String),
    #[error("Neon API: {0}")]
    Neon(String),
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl MigrateError {
    /// Prisma's error code for the same situation.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            MigrateError::Connect { .. } => "P1001",
            MigrateError::AdvisoryLockTimeout { .. } => "P1002",
            MigrateError::SchemaNotEmpty => "P3005",
            MigrateError::FailedMigrations { .. } => "P3009",
            MigrateError::ApplyFailed { .. } => "P3018",
            MigrateError::NotFoundLocally { .. } => "P3017",
            MigrateError::AlreadyApplied { .. } => "P3008",
            MigrateError::NotFailed { .. } => "P3012",
            _ => return None,
        })
    }
}
