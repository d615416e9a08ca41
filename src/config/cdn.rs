//! The CDN section: where purges go (`VERCEL_*`) and how long they are gathered.

use std::time::Duration;

use super::{ConfigError, Env, Secret};

/// Vercel's REST API, where CDN purges go.
pub const DEFAULT_VERCEL_API_URL: &str = "https://api.vercel.com";

/// Where CDN purges go: `VERCEL_TOKEN`, `VERCEL_PROJECT_ID`, `VERCEL_TEAM_ID` (optional),
/// `VERCEL_API_URL` (tests point it at a local server). Without a token, purging is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdnConfig {
    pub token: Secret,
    pub project: String,
    pub team: Option<String>,
    pub api_url: String,
    /// Purges asked for within this window go out as one request per kind
    /// (`CDN_PURGE_COALESCE_MS`), so a burst of edits spends one call of the API quota.
    pub coalesce_window: Duration,
}

/// How long this process gathers purges into one request (see [`CdnConfig::coalesce_window`]).
pub const DEFAULT_CDN_PURGE_COALESCE_WINDOW: Duration = Duration::from_millis(1000);

pub(super) fn cdn_config(env: &Env) -> Result<Option<CdnConfig>, ConfigError> {
    let Some(token) = env.get("VERCEL_TOKEN") else {
        return Ok(None);
    };
    let project = env.get("VERCEL_PROJECT_ID").ok_or(ConfigError::Missing {
        name: "VERCEL_PROJECT_ID",
    })?;
    let api_url = env
        .http_url("VERCEL_API_URL")?
        .unwrap_or_else(|| DEFAULT_VERCEL_API_URL.to_owned());
    Ok(Some(CdnConfig {
        token: Secret::new(token),
        project,
        team: env.get("VERCEL_TEAM_ID"),
        api_url,
        coalesce_window: env.millis("CDN_PURGE_COALESCE_MS", DEFAULT_CDN_PURGE_COALESCE_WINDOW)?,
    }))
}
