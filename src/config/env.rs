//! Reading the environment: [`Env`], the parsing helpers over a variable map (every error
//! names its variable), the "at least 1" checks, and [`Secret`], how a secret value is held.

use std::collections::HashMap;
use std::time::Duration;

use super::ConfigError;
use crate::db::config::DEFAULT_DB_CONNECT_TIMEOUT;
use crate::db::DbConfig;

/// A secret from the environment (`CRON_SECRET`, `OPENAI_API_KEY`, an Upstash token). `Debug`
/// prints nothing of it, so a `Config` can be logged whole; the value is read with
/// [`Secret::expose`], at the one place that sends or compares it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Parsing helpers over a variable map; every error names its variable.
pub struct Env<'a>(pub &'a HashMap<String, String>);

impl Env<'_> {
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn parse<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
        }
    }

    pub fn millis(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let ms: u64 = self.parse(name, default.as_millis() as u64)?;
        Ok(Duration::from_millis(ms))
    }

    /// A Postgres URL (`postgres://…`), parsed; `None` when unset. `DB_CONNECT_TIMEOUT_MS`,
    /// when set, wins over a `connect_timeout` in the URL (for the functions and `gcbb db`
    /// alike).
    pub fn db_url(&self, name: &'static str) -> Result<Option<DbConfig>, ConfigError> {
        let connect_timeout = self
            .get("DB_CONNECT_TIMEOUT_MS")
            .map(|_| self.millis("DB_CONNECT_TIMEOUT_MS", DEFAULT_DB_CONNECT_TIMEOUT))
            .transpose()?;
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let db = DbConfig::parse(&raw).map_err(|e| ConfigError::Invalid {
            name,
            reason: e.to_string(),
        })?;
        Ok(Some(match connect_timeout {
            Some(t) => db.with_connect_timeout(t),
            None => db,
        }))
    }

    pub(super) fn http_url(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let parsed = url::Url::parse(&raw).map_err(|e| ConfigError::Invalid {
            name,
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::Invalid {
                name,
                reason: "must be an http(s) URL".into(),
            });
        }
        Ok(Some(raw.trim_end_matches('/').to_owned()))
    }
}

pub(super) fn positive(name: &'static str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        Err(ConfigError::Invalid {
            name,
            reason: "must be at least 1".into(),
        })
    } else {
        Ok(v)
    }
}

/// A duration in ms that must be at least 1 (a zero deadline would fail every request).
pub(super) fn positive_millis(
    env: &Env<'_>,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let ms = positive(name, env.millis(name, default)?.as_millis() as u64)?;
    Ok(Duration::from_millis(ms))
}
