//! [`RateLimit`], a sliding-window limit, and how one is read from a pair of variables.

use std::time::Duration;

use super::env::positive;
use super::{ConfigError, Env};

/// A sliding-window limit: at most `requests` in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

/// A rate limit from `{requests}` and `{window}` (ms), both at least 1.
pub(super) fn rate_limit(
    env: &Env,
    requests: &'static str,
    window: &'static str,
    default_requests: u32,
    default_window: Duration,
) -> Result<RateLimit, ConfigError> {
    let n = positive(requests, env.parse(requests, default_requests)?.into())? as u32;
    let w = env.millis(window, default_window)?;
    positive(window, w.as_millis() as u64)?;
    Ok(RateLimit {
        requests: n,
        window: w,
    })
}
