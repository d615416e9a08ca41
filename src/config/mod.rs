//! Typed configuration, read from the environment only, with named defaults.
//!
//! Everything is parsed once at start-up; a bad value stops the process with the variable's
//! name instead of failing in the middle of a request.
//!
//! [`Config`] is the whole, with the defaults that belong to it; each section of it (cache,
//! Clerk, model, chat, CDN, CORS, avatars, proxies) lives in a file of its own, and `env.rs`
//! holds the parsing helpers they share. Every public item is re-exported here, so callers
//! name `crate::config::X` whatever file `X` is in.

use std::collections::HashMap;
use std::time::Duration;

use crate::db::DbConfig;
pub use crate::db::DEFAULT_QUERY_TIMEOUT as DEFAULT_DB_QUERY_TIMEOUT;

mod avatar;
mod cache;
mod cdn;
mod chat;
mod clerk;
mod cors;
mod env;
mod llm;
mod proxy;
mod rate_limit;

pub use avatar::{AvatarHosts, DEFAULT_AVATAR_HOSTS};
pub use cache::{
    default_cache_key_prefix, CacheBackend, DEFAULT_CACHE_KEY_PREFIX, DEFAULT_CACHE_TIMEOUT,
};
pub use cdn::{CdnConfig, DEFAULT_CDN_PURGE_COALESCE_WINDOW, DEFAULT_VERCEL_API_URL};
pub use chat::{
    ChatConfig, DEFAULT_CHAT_BODY_LIMIT_BYTES, DEFAULT_CHAT_CLIENT_CONTEXT_BYTES,
    DEFAULT_CHAT_CLIENT_CONTEXT_MESSAGES, DEFAULT_CHAT_CONTEXT_MESSAGES, DEFAULT_CHAT_MAX_DURATION,
    DEFAULT_GROUP_MAX_RESPONDERS, DEFAULT_RATE_LIMIT_ANON_REQUESTS, DEFAULT_RATE_LIMIT_ANON_WINDOW,
    DEFAULT_RATE_LIMIT_USER_REQUESTS, DEFAULT_RATE_LIMIT_USER_WINDOW,
};
pub use clerk::{ClerkConfig, ClerkKey, DEFAULT_CLERK_LEEWAY};
pub use cors::{CorsConfig, OriginPattern, SHARED_HOSTING_SUFFIXES};
pub use env::{Env, Secret};
pub use llm::{
    LlmConfig, LlmProvider, DEFAULT_LLM_CONNECT_TIMEOUT, DEFAULT_LLM_FIRST_TOKEN_TIMEOUT,
    DEFAULT_LLM_IDLE_TIMEOUT, DEFAULT_LLM_MAX_TOKENS, DEFAULT_LLM_MODEL, DEFAULT_OPENAI_BASE_URL,
    DEFAULT_SCRIPTED_CHUNK_DELAY,
};
pub use proxy::TrustedProxy;
pub use rate_limit::RateLimit;

use cache::cache_backend;
use cdn::cdn_config;
use chat::chat_config;
use clerk::clerk_config;
use cors::cors_config;
use env::positive_millis;
use llm::llm_config;
use proxy::trusted_proxy;
use rate_limit::rate_limit;

/// Largest request body any handler accepts unless a route says otherwise.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 64 * 1024;
/// Connections each process keeps to Postgres (Neon's pooler multiplexes them further).
pub const DEFAULT_DB_POOL_SIZE: usize = 4;
/// How long the dashboard's exact count may take before the page answers with an estimate.
pub const DEFAULT_DASHBOARD_COUNT_TIMEOUT: Duration = Duration::from_millis(150);
/// How long background database writes (token accounting) retry through an outage: Vercel
/// lets `wait_until` work run until the function's `maxDuration` (300 s for chat), and a
/// minute covers the blips a failover or a restart causes.
pub const DEFAULT_BACKGROUND_WRITE_BUDGET: Duration = Duration::from_secs(60);
/// How long cached pages are served under the last confirmed privacy epoch while the database
/// can't be reached (`PRIVACY_OUTAGE_WINDOW_MS`; see `platform::privacy`).
pub const DEFAULT_PRIVACY_OUTAGE_WINDOW: Duration = Duration::from_secs(120);
/// Owner id of platform-made companions and demo group chats.
pub const DEFAULT_SYSTEM_USER_ID: &str = "system";
/// Port of `gcbb dev`.
pub const DEFAULT_DEV_PORT: u16 = 3000;
/// Database `gcbb dev` creates and uses when `DATABASE_URL` is unset.
pub const DEFAULT_DEV_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/gcbb_dev";
/// Signed-in dashboard: requests per window per user (each distinct page is a database build).
pub const DEFAULT_RATE_LIMIT_DASHBOARD_REQUESTS: u32 = 60;
pub const DEFAULT_RATE_LIMIT_DASHBOARD_WINDOW: Duration = Duration::from_secs(10);
/// Companion edits (PATCH): requests per window per user.
pub const DEFAULT_RATE_LIMIT_COMPANION_EDIT_REQUESTS: u32 = 20;
pub const DEFAULT_RATE_LIMIT_COMPANION_EDIT_WINDOW: Duration = Duration::from_secs(60);
/// Anonymous dashboard searches (`q`) that reach the function: requests per window per client
/// bucket (an IPv4 address, an IPv6 /64). A search box sends one per pause in typing.
pub const DEFAULT_RATE_LIMIT_SEARCH_REQUESTS: u32 = 30;
pub const DEFAULT_RATE_LIMIT_SEARCH_WINDOW: Duration = Duration::from_secs(10);

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is required but not set")]
    Missing { name: &'static str },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: the request path's database (on Neon, the pooled URL).
    pub database: DbConfig,
    pub cache: CacheBackend,
    /// First segment of every cache key: `CACHE_KEY_PREFIX`, else [`DEFAULT_CACHE_KEY_PREFIX`]
    /// and a digest of the database's identity ([`default_cache_key_prefix`]).
    pub cache_key_prefix: String,
    /// How long cached pages outlive a database outage (`PRIVACY_OUTAGE_WINDOW_MS`).
    pub privacy_outage_window: Duration,
    pub cron_secret: Option<Secret>,
    pub clerk: ClerkConfig,
    pub system_user_id: String,
    pub body_limit: usize,
    pub db_pool_size: usize,
    pub db_connect_timeout: Duration,
    /// Deadline of each request-path statement and of opening a connection
    /// (`DB_QUERY_TIMEOUT_MS`); an overrun is cancelled on the server and answers 503.
    pub db_query_timeout: Duration,
    pub cache_timeout: Duration,
    /// How long a write handed to `wait_until` (token accounting) keeps retrying through a
    /// database outage (`BACKGROUND_WRITE_BUDGET_MS`).
    pub background_write_budget: Duration,
    /// How long the dashboard's exact count may take before an estimate is used.
    pub dashboard_count_timeout: Duration,
    /// `VERCEL_ENV`, set on Vercel (production, preview, development).
    pub vercel_env: Option<String>,
    pub llm: LlmConfig,
    pub chat: ChatConfig,
    /// CDN purges; `None` when `VERCEL_TOKEN` is unset.
    pub cdn: Option<CdnConfig>,
    /// Per-user limits of the signed-in dashboard and of companion edits.
    pub dashboard_rate_limit: RateLimit,
    pub companion_edit_rate_limit: RateLimit,
    pub cors: CorsConfig,
    /// Whose forwarding headers name the client (`TRUSTED_PROXY`; Vercel's on Vercel, none
    /// elsewhere): see `platform::client`.
    pub trusted_proxy: TrustedProxy,
    /// Per-client limit of anonymous dashboard searches (`RATE_LIMIT_SEARCH_*`).
    pub anonymous_search_rate_limit: RateLimit,
    /// Where companion avatars may be (`AVATAR_HOSTS`).
    pub avatar_hosts: AvatarHosts,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads a given set of variables; empty values count as unset.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env(vars);
        let database = env.db_url("DATABASE_URL")?.ok_or(ConfigError::Missing {
            name: "DATABASE_URL",
        })?;
        let cache_key_prefix = env
            .get("CACHE_KEY_PREFIX")
            .unwrap_or_else(|| default_cache_key_prefix(&database));
        Ok(Config {
            db_connect_timeout: database.connect_timeout,
            database,
            cache: cache_backend(&env)?,
            cache_key_prefix,
            privacy_outage_window: env
                .millis("PRIVACY_OUTAGE_WINDOW_MS", DEFAULT_PRIVACY_OUTAGE_WINDOW)?,
            cron_secret: env.get("CRON_SECRET").map(Secret::new),
            clerk: clerk_config(&env)?,
            system_user_id: env
                .get("SYSTEM_USER_ID")
                .unwrap_or_else(|| DEFAULT_SYSTEM_USER_ID.to_owned()),
            body_limit: env.parse("BODY_LIMIT_BYTES", DEFAULT_BODY_LIMIT_BYTES)?,
            db_pool_size: env.parse("DB_POOL_SIZE", DEFAULT_DB_POOL_SIZE)?,
            db_query_timeout: positive_millis(
                &env,
                "DB_QUERY_TIMEOUT_MS",
                DEFAULT_DB_QUERY_TIMEOUT,
            )?,
            cache_timeout: env.millis("CACHE_TIMEOUT_MS", DEFAULT_CACHE_TIMEOUT)?,
            background_write_budget: env.millis(
                "BACKGROUND_WRITE_BUDGET_MS",
                DEFAULT_BACKGROUND_WRITE_BUDGET,
            )?,
            dashboard_count_timeout: env.millis(
                "DASHBOARD_COUNT_TIMEOUT_MS",
                DEFAULT_DASHBOARD_COUNT_TIMEOUT,
            )?,
            vercel_env: env.get("VERCEL_ENV"),
            llm: llm_config(&env)?,
            chat: chat_config(&env)?,
            cdn: cdn_config(&env)?,
            dashboard_rate_limit: rate_limit(
                &env,
                "RATE_LIMIT_DASHBOARD_REQUESTS",
                "RATE_LIMIT_DASHBOARD_WINDOW_MS",
                DEFAULT_RATE_LIMIT_DASHBOARD_REQUESTS,
                DEFAULT_RATE_LIMIT_DASHBOARD_WINDOW,
            )?,
            companion_edit_rate_limit: rate_limit(
                &env,
                "RATE_LIMIT_COMPANION_EDIT_REQUESTS",
                "RATE_LIMIT_COMPANION_EDIT_WINDOW_MS",
                DEFAULT_RATE_LIMIT_COMPANION_EDIT_REQUESTS,
                DEFAULT_RATE_LIMIT_COMPANION_EDIT_WINDOW,
            )?,
            cors: cors_config(&env)?,
            trusted_proxy: trusted_proxy(&env)?,
            anonymous_search_rate_limit: rate_limit(
                &env,
                "RATE_LIMIT_SEARCH_REQUESTS",
                "RATE_LIMIT_SEARCH_WINDOW_MS",
                DEFAULT_RATE_LIMIT_SEARCH_REQUESTS,
                DEFAULT_RATE_LIMIT_SEARCH_WINDOW,
            )?,
            avatar_hosts: match env.get("AVATAR_HOSTS") {
                None => AvatarHosts::default(),
                Some(raw) => AvatarHosts::parse(&raw).map_err(|reason| ConfigError::Invalid {
                    name: "AVATAR_HOSTS",
                    reason,
                })?,
            },
        })
    }
}

#[cfg(test)]
mod tests;
