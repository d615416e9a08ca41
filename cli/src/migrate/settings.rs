//! What a migration session is configured with: its timeouts, and the names of the environment
//! variables its databases come from. The library takes these as values; only the command line
//! reads the environment (`cli`), so a caller such as `gcbb dev` or a test never depends on it.

use std::time::Duration;

use gcbb::config::{
    DEFAULT_MIGRATE_ADVISORY_LOCK_TIMEOUT, DEFAULT_MIGRATE_LOCK_RETRY_BUDGET,
    DEFAULT_MIGRATE_LOCK_TIMEOUT,
};

/// The variables `gcbb db` reads its database from, in order of preference: the direct
/// (unpooled) URLs first, because advisory locks and `SET` need a session of their own.
pub const DATABASE_URL_VARS: [&str; 3] = ["DATABASE_URL_UNPOOLED", "DIRECT_URL", "DATABASE_URL"];

/// The environment variable naming the shadow database.
pub const SHADOW_DATABASE_URL_VAR: &str = "SHADOW_DATABASE_URL";

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
            lock_timeout: DEFAULT_MIGRATE_LOCK_TIMEOUT,
            lock_retry_budget: DEFAULT_MIGRATE_LOCK_RETRY_BUDGET,
            advisory_lock_timeout: DEFAULT_MIGRATE_ADVISORY_LOCK_TIMEOUT,
        }
    }
}
