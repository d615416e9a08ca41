//! What `gcbb db` is configured with: every migration setting, read from the environment once
//! ([`MigrateConfig::from_env`]) with a named default each, a bad value stopping start-up with
//! the variable's name. The functions' `Config` holds none of these: no function migrates.
//!
//! The library's operations take values ([`MigrateSettings`], a `DbConfig`), never the
//! environment, so `gcbb dev`, the benches and the tests run them without setting variables.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use gcbb::config::{ConfigError, Env, Secret};
use gcbb::db::DbConfig;

use crate::error::MigrateError;
use crate::neon::{self, NeonConfig};

/// Migration history folder, relative to the project root (`GCBB_MIGRATIONS_DIR`).
pub const DEFAULT_MIGRATIONS_DIR: &str = "migrations";
/// `lock_timeout` set for each migration statement (`MIGRATE_LOCK_TIMEOUT_MS`): while a
/// statement waits for its lock, every query on the table queues behind it, so the wait must
/// stay short.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a migration that hit `lock_timeout` keeps being retried (with jittered pauses), from
/// its first attempt, before the deploy gives up (`MIGRATE_LOCK_RETRY_BUDGET_MS`).
pub const DEFAULT_LOCK_RETRY_BUDGET: Duration = Duration::from_secs(120);
/// How long to wait for Prisma's advisory lock before giving up
/// (`MIGRATE_ADVISORY_LOCK_TIMEOUT_MS`).
pub const DEFAULT_ADVISORY_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The variables the database to migrate comes from, in order of preference: the direct
/// (unpooled) URLs first, because advisory locks and `SET` need a session of their own.
pub const DATABASE_URL_VARS: [&str; 3] = ["DATABASE_URL_UNPOOLED", "DIRECT_URL", "DATABASE_URL"];
/// The shadow database `drift` and `revert` replay history into, and a rehearsal's drift step
/// falls back to.
pub const SHADOW_DATABASE_URL_VAR: &str = "SHADOW_DATABASE_URL";
/// The migrations folder, when `--migrations-dir` does not name one.
pub const MIGRATIONS_DIR_VAR: &str = "GCBB_MIGRATIONS_DIR";

/// Timeouts of a migration session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateSettings {
    /// `lock_timeout` while migrating (`MIGRATE_LOCK_TIMEOUT_MS`): the longest any query waits
    /// behind a statement that is itself waiting for its lock.
    pub lock_timeout: Duration,
    /// How long a file that hit `lock_timeout` keeps being retried, from its first attempt
    /// (`MIGRATE_LOCK_RETRY_BUDGET_MS`).
    pub lock_retry_budget: Duration,
    /// How long to wait for Prisma's advisory lock (`MIGRATE_ADVISORY_LOCK_TIMEOUT_MS`).
    pub advisory_lock_timeout: Duration,
}

impl Default for MigrateSettings {
    fn default() -> Self {
        MigrateSettings {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            lock_retry_budget: DEFAULT_LOCK_RETRY_BUDGET,
            advisory_lock_timeout: DEFAULT_ADVISORY_LOCK_TIMEOUT,
        }
    }
}

/// The database to migrate, with the variable it came from (named in the pooler warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationDatabase {
    pub var: &'static str,
    pub db: DbConfig,
}

impl MigrationDatabase {
    /// The warning owed when the URL points to a connection pooler, else `None`.
    pub fn pooler_warning(&self) -> Option<String> {
        self.db.is_pooled().then(|| {
            format!(
                "warning: {} points to a connection pooler ({}); advisory locks and session \
                 settings (lock_timeout) don't work through PgBouncer in transaction mode. Set \
                 DATABASE_URL_UNPOOLED or DIRECT_URL to the direct endpoint.",
                self.var,
                self.db.redacted()
            )
        })
    }
}

/// Neon's API, for rehearsals in a branch (`--neon-branch`). Key and project are required only
/// there, so they are checked when a branch is asked for ([`MigrateConfig::neon`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeonSettings {
    /// `NEON_API_KEY`.
    pub api_key: Option<Secret>,
    /// `NEON_PROJECT_ID`.
    pub project_id: Option<String>,
    /// `NEON_API_URL` (default [`neon::DEFAULT_API_URL`]).
    pub api_url: String,
    /// `NEON_API_TIMEOUT_MS` (default [`neon::DEFAULT_API_TIMEOUT`]).
    pub timeout: Duration,
    /// `NEON_BRANCH_READY_TIMEOUT_MS` (default [`neon::DEFAULT_READY_TIMEOUT`]).
    pub ready_timeout: Duration,
}

/// Every migration setting. Databases are optional here because some commands need none
/// (`gcbb db new`, `gcbb db lint`); the accessors name what is missing when one is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateConfig {
    /// The first set of [`DATABASE_URL_VARS`].
    pub database: Option<MigrationDatabase>,
    /// [`SHADOW_DATABASE_URL_VAR`].
    pub shadow: Option<DbConfig>,
    pub settings: MigrateSettings,
    /// [`MIGRATIONS_DIR_VAR`], else [`DEFAULT_MIGRATIONS_DIR`].
    pub migrations_dir: PathBuf,
    pub neon: NeonSettings,
}

impl MigrateConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads a given set of variables; empty values count as unset.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env(vars);
        // Only the preferred variable is read: a stale DATABASE_URL beside a good direct URL
        // does not stop a deploy.
        let database = match DATABASE_URL_VARS.iter().find(|var| env.get(var).is_some()) {
            Some(&var) => env.db_url(var)?.map(|db| MigrationDatabase { var, db }),
            None => None,
        };
        Ok(MigrateConfig {
            database,
            shadow: env.db_url(SHADOW_DATABASE_URL_VAR)?,
            settings: settings(&env)?,
            migrations_dir: env
                .get(MIGRATIONS_DIR_VAR)
                .unwrap_or_else(|| DEFAULT_MIGRATIONS_DIR.to_owned())
                .into(),
            neon: NeonSettings {
                api_key: env.get("NEON_API_KEY").map(Secret::new),
                project_id: env.get("NEON_PROJECT_ID"),
                api_url: env
                    .get("NEON_API_URL")
                    .unwrap_or_else(|| neon::DEFAULT_API_URL.to_owned()),
                timeout: env.millis("NEON_API_TIMEOUT_MS", neon::DEFAULT_API_TIMEOUT)?,
                ready_timeout: env
                    .millis("NEON_BRANCH_READY_TIMEOUT_MS", neon::DEFAULT_READY_TIMEOUT)?,
            },
        })
    }

    /// The database to migrate, or [`MigrateError::NoDatabaseUrl`].
    pub fn database(&self) -> Result<&MigrationDatabase, MigrateError> {
        self.database.as_ref().ok_or(MigrateError::NoDatabaseUrl)
    }

    /// The shadow database, or [`MigrateError::NoShadowUrl`].
    pub fn shadow(&self) -> Result<&DbConfig, MigrateError> {
        self.shadow.as_ref().ok_or(MigrateError::NoShadowUrl)
    }

    /// Neon's API settings for a branch of `parent` (default: the project's default branch);
    /// names the variable when the key or the project is missing.
    pub fn neon(&self, parent: Option<String>) -> Result<NeonConfig, MigrateError> {
        let missing = |name| MigrateError::Config(ConfigError::Missing { name });
        Ok(NeonConfig {
            api_key: self
                .neon
                .api_key
                .as_ref()
                .ok_or_else(|| missing("NEON_API_KEY"))?
                .expose()
                .to_owned(),
            project_id: self
                .neon
                .project_id
                .clone()
                .ok_or_else(|| missing("NEON_PROJECT_ID"))?,
            api_url: self.neon.api_url.clone(),
            timeout: self.neon.timeout,
            ready_timeout: self.neon.ready_timeout,
            parent,
        })
    }
}

fn settings(env: &Env) -> Result<MigrateSettings, ConfigError> {
    // A count of retries became a time budget: a value set for the old meaning must not be
    // silently ignored.
    if env.get("MIGRATE_LOCK_RETRIES").is_some() {
        return Err(ConfigError::Invalid {
            name: "MIGRATE_LOCK_RETRIES",
            reason: "no longer read: a file that hits lock_timeout is retried for \
                     MIGRATE_LOCK_RETRY_BUDGET_MS (default 120000); unset it"
                .to_owned(),
        });
    }
    let lock_timeout = env.millis("MIGRATE_LOCK_TIMEOUT_MS", DEFAULT_LOCK_TIMEOUT)?;
    if lock_timeout.is_zero() {
        return Err(ConfigError::Invalid {
            name: "MIGRATE_LOCK_TIMEOUT_MS",
            reason: "0 turns lock_timeout off: a deploy waiting for its lock would stall every \
                     query on the table for as long as it waits"
                .to_owned(),
        });
    }
    Ok(MigrateSettings {
        lock_timeout,
        lock_retry_budget: env.millis("MIGRATE_LOCK_RETRY_BUDGET_MS", DEFAULT_LOCK_RETRY_BUDGET)?,
        advisory_lock_timeout: env.millis(
            "MIGRATE_ADVISORY_LOCK_TIMEOUT_MS",
            DEFAULT_ADVISORY_LOCK_TIMEOUT,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_shadow_error_names_the_variable_this_config_reads() {
        assert!(MigrateError::NoShadowUrl
            .to_string()
            .ends_with(SHADOW_DATABASE_URL_VAR));
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const POOLED: (&str, &str) = (
        "DATABASE_URL",
        "postgres://u@ep-x-pooler.eu-central-1.aws.neon.tech/app",
    );

    #[test]
    fn the_direct_url_is_preferred_for_migrations() {
        let c = MigrateConfig::from_vars(&vars(&[
            POOLED,
            ("DIRECT_URL", "postgres://postgres@127.0.0.1:5432/direct"),
        ]))
        .unwrap();
        let db = c.database().unwrap();
        assert_eq!((db.var, db.db.dbname()), ("DIRECT_URL", "direct"));
        assert_eq!(db.pooler_warning(), None);
    }

    #[test]
    fn the_unpooled_url_wins_over_direct_url_and_a_bad_fallback_is_not_read() {
        let c = MigrateConfig::from_vars(&vars(&[
            ("DATABASE_URL", "not a url"),
            ("DIRECT_URL", "postgres://postgres@127.0.0.1:5432/direct"),
            (
                "DATABASE_URL_UNPOOLED",
                "postgres://postgres@127.0.0.1:5432/unpooled",
            ),
        ]))
        .unwrap();
        let db = c.database().unwrap();
        assert_eq!(
            (db.var, db.db.dbname()),
            ("DATABASE_URL_UNPOOLED", "unpooled")
        );
    }

    #[test]
    fn a_pooled_url_alone_is_used_with_a_warning_naming_its_variable() {
        let c = MigrateConfig::from_vars(&vars(&[POOLED])).unwrap();
        let warning = c.database().unwrap().pooler_warning().expect("a warning");
        assert!(warning.starts_with("warning: DATABASE_URL points to a connection pooler"));
        assert!(warning.contains("DATABASE_URL_UNPOOLED or DIRECT_URL"));
    }

    #[test]
    fn no_database_is_an_error_only_when_one_is_needed() {
        let c = MigrateConfig::from_vars(&vars(&[])).unwrap();
        assert!(matches!(c.database(), Err(MigrateError::NoDatabaseUrl)));
        assert!(matches!(c.shadow(), Err(MigrateError::NoShadowUrl)));
        assert_eq!(c.migrations_dir, PathBuf::from(DEFAULT_MIGRATIONS_DIR));
        assert_eq!(c.settings, MigrateSettings::default());
    }

    #[test]
    fn every_setting_is_read_from_its_variable() {
        let c = MigrateConfig::from_vars(&vars(&[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/app"),
            (
                "SHADOW_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/app_shadow",
            ),
            ("GCBB_MIGRATIONS_DIR", "db/history"),
            ("MIGRATE_LOCK_TIMEOUT_MS", "300"),
            ("MIGRATE_LOCK_RETRY_BUDGET_MS", "2500"),
            ("MIGRATE_ADVISORY_LOCK_TIMEOUT_MS", "700"),
            ("DB_CONNECT_TIMEOUT_MS", "1500"),
            ("NEON_API_KEY", "napi_secret"),
            ("NEON_PROJECT_ID", "proj"),
            ("NEON_API_URL", "http://127.0.0.1:9/api/v2"),
            ("NEON_API_TIMEOUT_MS", "800"),
            ("NEON_BRANCH_READY_TIMEOUT_MS", "9000"),
        ]))
        .unwrap();
        assert_eq!(c.shadow().unwrap().dbname(), "app_shadow");
        assert_eq!(c.migrations_dir, PathBuf::from("db/history"));
        assert_eq!(
            c.settings,
            MigrateSettings {
                lock_timeout: Duration::from_millis(300),
                lock_retry_budget: Duration::from_millis(2500),
                advisory_lock_timeout: Duration::from_millis(700),
            }
        );
        let db = &c.database().unwrap().db;
        assert_eq!(db.connect_timeout, Duration::from_millis(1500));
        assert_eq!(
            c.shadow().unwrap().connect_timeout,
            Duration::from_millis(1500)
        );
        let neon = c.neon(Some("br-parent".into())).unwrap();
        assert_eq!(
            (
                neon.api_key.as_str(),
                neon.project_id.as_str(),
                neon.api_url.as_str(),
                neon.timeout,
                neon.ready_timeout,
                neon.parent.as_deref()
            ),
            (
                "napi_secret",
                "proj",
                "http://127.0.0.1:9/api/v2",
                Duration::from_millis(800),
                Duration::from_millis(9000),
                Some("br-parent")
            )
        );
        assert!(!format!("{c:?}").contains("napi_secret"), "{c:?}");
    }

    #[test]
    fn a_neon_branch_without_its_key_or_project_names_the_missing_variable() {
        let c = MigrateConfig::from_vars(&vars(&[("NEON_PROJECT_ID", "proj")])).unwrap();
        let err = c.neon(None).unwrap_err().to_string();
        assert_eq!(err, "NEON_API_KEY is required but not set");
        let c = MigrateConfig::from_vars(&vars(&[("NEON_API_KEY", "k")])).unwrap();
        let err = c.neon(None).unwrap_err().to_string();
        assert_eq!(err, "NEON_PROJECT_ID is required but not set");
    }

    #[test]
    fn a_bad_value_stops_start_up_naming_its_variable() {
        for (var, value) in [
            ("MIGRATE_LOCK_RETRIES", "3"),
            ("MIGRATE_LOCK_TIMEOUT_MS", "0"),
            ("MIGRATE_LOCK_RETRY_BUDGET_MS", "two minutes"),
            ("MIGRATE_ADVISORY_LOCK_TIMEOUT_MS", "-1"),
            ("SHADOW_DATABASE_URL", "mysql://x"),
            ("DIRECT_URL", "http://x"),
            ("NEON_API_TIMEOUT_MS", "soon"),
            ("NEON_BRANCH_READY_TIMEOUT_MS", "1.5"),
        ] {
            let err = MigrateConfig::from_vars(&vars(&[(var, value)])).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("{var} is invalid: ")),
                "{var}: {err}"
            );
        }
    }
}
