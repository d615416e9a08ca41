//! The cache section: which backend ([`CacheBackend`], from `UPSTASH_REDIS_REST_*`,
//! `KV_REST_API_*` or `REDIS_URL`), its round-trip timeout and the key prefix.

use std::time::Duration;

use super::{ConfigError, Env, Secret};
use crate::db::DbConfig;

/// Timeout for one cache round trip; a slower cache is treated as down.
pub const DEFAULT_CACHE_TIMEOUT: Duration = Duration::from_millis(500);
/// First segment of every cache key; unless `CACHE_KEY_PREFIX` says otherwise, followed by a
/// digest of the database's identity (`gcbb-1a2b3c4d`), so deployments on different databases
/// (a preview on a Neon branch, production) never share entries through one Redis.
pub const DEFAULT_CACHE_KEY_PREFIX: &str = "gcbb";

/// Where the cache lives, chosen from the environment in this order: Upstash REST
/// (`UPSTASH_REDIS_REST_*`, else `KV_REST_API_*`), native Redis (`REDIS_URL`), in-process memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheBackend {
    /// Upstash REST (`UPSTASH_REDIS_REST_*`, else `KV_REST_API_*`).
    Upstash { url: String, token: Secret },
    /// Native Redis protocol (`REDIS_URL`).
    Redis { url: String },
    /// In-process memory only.
    Memory,
}

impl CacheBackend {
    pub fn name(&self) -> &'static str {
        match self {
            CacheBackend::Upstash { .. } => "upstash",
            CacheBackend::Redis { .. } => "redis",
            CacheBackend::Memory => "memory",
        }
    }
}

/// `gcbb-` and 32 bits of a SHA-256 of the database's identity (see `DbConfig::identity`).
pub fn default_cache_key_prefix(database: &DbConfig) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(database.identity().as_bytes());
    format!("{DEFAULT_CACHE_KEY_PREFIX}-{}", hex::encode(&digest[..4]))
}

pub(super) fn cache_backend(env: &Env) -> Result<CacheBackend, ConfigError> {
    for (url_var, token_var) in [
        ("UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN"),
        ("KV_REST_API_URL", "KV_REST_API_TOKEN"),
    ] {
        if let Some(url) = env.http_url(url_var)? {
            let token = env
                .get(token_var)
                .ok_or(ConfigError::Missing { name: token_var })?;
            return Ok(CacheBackend::Upstash {
                url,
                token: Secret::new(token),
            });
        }
    }
    if let Some(url) = env.get("REDIS_URL") {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError::Invalid {
                name: "REDIS_URL",
                reason: "must start with redis:// or rediss://".into(),
            });
        }
        return Ok(CacheBackend::Redis { url });
    }
    Ok(CacheBackend::Memory)
}
