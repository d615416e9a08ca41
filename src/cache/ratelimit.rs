//! Rate limiting with the sliding-window algorithm of `@upstash/ratelimit`: a counter per fixed
//! window, and the previous window's count weighted by how much of it still overlaps the
//! sliding window. One atomic round trip per check: a Lua script (`EVALSHA`/`EVAL` on native
//! Redis and through Upstash REST) or, on the memory store, its Rust twin under the store lock.
//!
//! When the shared cache fails, a per-process limiter (the same algorithm on a private memory
//! store) takes over, so limits still hold per instance; that is logged (at most once per
//! [`FALLBACK_LOG_INTERVAL`]).
//!
//! Written here rather than taken from a crate: `governor` limits one process (GCRA in memory),
//! and `redis-cell` needs a module loaded into the Redis server, which a REST-only Upstash
//! database can't offer. Keeping `@upstash/ratelimit`'s algorithm means a Node front end using
//! that library and these functions count requests the same way.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::keys;
use super::memory::{LocalTxn, MemoryStore};
use super::script::{Script, ScriptValue};
use super::{Cache, CacheError};
use crate::config::RateLimit;

/// At most one "using the per-process limiter" log line in this interval.
pub const FALLBACK_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// Bounds of the per-process limiter's store.
pub const FALLBACK_MAX_KEYS: usize = 100_000;
pub const FALLBACK_MAX_BYTES: usize = 16 * 1024 * 1024;

/// `@upstash/ratelimit`'s sliding-window script. KEYS: current window, previous window.
/// ARGV: limit, now (ms), window (ms), increment. Returns the remaining count, or -1 when the
/// request is refused (nothing is counted then).
pub const SLIDING_WINDOW_LUA: &str = r#"
local currentKey  = KEYS[1]
local previousKey = KEYS[2]
local tokens      = tonumber(ARGV[1])
local now         = tonumber(ARGV[2])
local window      = tonumber(ARGV[3])
local incrementBy = tonumber(ARGV[4])

local requestsInCurrentWindow = redis.call("GET", currentKey)
if requestsInCurrentWindow == false then
  requestsInCurrentWindow = 0
end
local requestsInPreviousWindow = redis.call("GET", previousKey)
if requestsInPreviousWindow == false then
  requestsInPreviousWindow = 0
end
local percentageInCurrent = ( now % window ) / window
requestsInPreviousWindow = math.floor(( 1 - percentageInCurrent ) * requestsInPreviousWindow)
if requestsInPreviousWindow + requestsInCurrentWindow >= tokens then
  return -1
end
local newValue = redis.call("INCRBY", currentKey, incrementBy)
if newValue == incrementBy then
  redis.call("PEXPIRE", currentKey, window * 2 + 1000)
end
return tokens - ( newValue + requestsInPreviousWindow )
"#;

/// The script's twin for the memory store, same keys, arguments and reply.
fn sliding_window_local(
    txn: &mut LocalTxn<'_>,
    keys: &[String],
    args: &[String],
) -> Result<ScriptValue, CacheError> {
    let bad = || CacheError::Protocol("sliding window: bad arguments".into());
    let num = |i: usize| -> Result<i64, CacheError> {
        args.get(i).and_then(|a| a.parse().ok()).ok_or_else(bad)
    };
    let (tokens, now, window, increment) = (num(0)?, num(1)?, num(2)?, num(3)?);
    let (current_key, previous_key) = match keys {
        [c, p] => (c, p),
        _ => return Err(bad()),
    };
    let count = |txn: &mut LocalTxn<'_>, key: &str| -> i64 {
        txn.get(key)
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .unwrap_or(0)
    };
    let current = count(txn, current_key);
    let previous = count(txn, previous_key);
    let in_current = (now % window) as f64 / window as f64;
    let previous = ((1.0 - in_current) * previous as f64).floor() as i64;
    if previous + current >= tokens {
        return Ok(ScriptValue::Int(-1));
    }
    let new_value = txn.incr_by(current_key, increment)?;
    if new_value == increment {
        txn.pexpire(
            current_key,
            Duration::from_millis((window * 2 + 1000).max(0) as u64),
        );
    }
    Ok(ScriptValue::Int(tokens - (new_value + previous)))
}

static SLIDING_WINDOW: LazyLock<Script> =
    LazyLock::new(|| Script::new(SLIDING_WINDOW_LUA, sliding_window_local));

/// The outcome of one check, with what the `X-RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// When the current fixed window ends (Unix ms).
    pub reset_ms: u64,
    /// Answered by the per-process limiter because the cache failed.
    pub local: bool,
}

impl Decision {
    /// Whole seconds until the window ends, at least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self, now_ms: u64) -> u64 {
        self.reset_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
    }
}

/// Checks limits on the shared cache, falling back to a per-process store.
pub struct RateLimiter {
    fallback: MemoryStore,
    last_fallback_log: Mutex<Option<Instant>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            fallback: MemoryStore::new(FALLBACK_MAX_KEYS, FALLBACK_MAX_BYTES),
            last_fallback_log: Mutex::new(None),
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request of `subject` under `scope` against `limit`.
    pub async fn check(
        &self,
        cache: &Cache,
        scope: &str,
        subject: &str,
        limit: RateLimit,
    ) -> Decision {
        self.check_at(cache, scope, subject, limit, now_ms()).await
    }

    pub async fn check_at(
        &self,
        cache: &Cache,
        scope: &str,
        subject: &str,
        limit: RateLimit,
        now: u64,
    ) -> Decision {
        let window = (limit.window.as_millis() as u64).max(1);
        let current_window = now / window;
        let base = cache.keyspace().entry(&keys::rate_limit(scope, subject));
        let keys = [
            format!("{base}:{current_window}"),
            format!("{base}:{}", current_window.saturating_sub(1)),
        ];
        let args = [
            limit.requests.to_string(),
            now.to_string(),
            window.to_string(),
            "1".to_owned(),
        ];
        let (reply, local) = match cache.run_script(&SLIDING_WINDOW, &keys, &args).await {
            Ok(v) => (v.as_int(), false),
            Err(e) => {
                self.log_fallback(&e);
                let v = self
                    .fallback
                    .run(|txn| sliding_window_local(txn, &keys, &args));
                (v.ok().and_then(|v| v.as_int()), true)
            }
        };
        // A reply we can't read lets the request through: the limiter protects, it must not
        // take the site down.
        let remaining = reply.unwrap_or(limit.requests as i64 - 1);
        Decision {
            allowed: remaining >= 0,
            limit: limit.requests,
            remaining: remaining.clamp(0, limit.requests as i64) as u32,
            reset_ms: (current_window + 1) * window,
            local,
        }
    }

    fn log_fallback(&self, e: &CacheError) {
        let mut last = self
            .last_fallback_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= FALLBACK_LOG_INTERVAL) {
            *last = Some(Instant::now());
            tracing::warn!(
                error = %e,
                kind = e.kind(),
                "rate limiter: cache unavailable, using the per-process limiter"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheBackend;

    fn memory_cache() -> Cache {
        Cache::new(
            &CacheBackend::Memory,
            reqwest::Client::new(),
            Duration::from_millis(200),
        )
    }

    const LIMIT: RateLimit = RateLimit {
        requests: 3,
        window: Duration::from_secs(10),
    };

    #[tokio::test]
    async fn the_limit_plus_first_request_in_a_window_is_refused() {
        let cache = memory_cache();
        let rl = RateLimiter::new();
        let t = 1_000_000_000;
        let got: Vec<(bool, u32)> = {
            let mut v = Vec::new();
            for i in 0..4 {
                let d = rl.check_at(&cache, "chat", "u1", LIMIT, t + i).await;
                v.push((d.allowed, d.remaining));
            }
            v
        };
        assert_eq!(got, [(true, 2), (true, 1), (true, 0), (false, 0)]);
        // Someone else is not affected.
        assert!(rl.check_at(&cache, "chat", "u2", LIMIT, t).await.allowed);
    }

    #[tokio::test]
    async fn the_previous_window_counts_by_how_much_it_still_overlaps() {
        let cache = memory_cache();
        let rl = RateLimiter::new();
        let start = 1_000_000_000; // a window boundary (10 s windows)
        for i in 0..3 {
            assert!(
                rl.check_at(&cache, "chat", "u", LIMIT, start + i)
                    .await
                    .allowed
            );
        }
        // 1 s into the next window, 90% of the 3 previous still count: floor(2.7) = 2.
        let d = rl
            .check_at(&cache, "chat", "u", LIMIT, start + 11_000)
            .await;
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(
            !rl.check_at(&cache, "chat", "u", LIMIT, start + 11_001)
                .await
                .allowed
        );
        // 8 s in, floor(0.2 * 3) = 0 previous + 1 current: allowed again.
        assert!(
            rl.check_at(&cache, "chat", "u", LIMIT, start + 18_000)
                .await
                .allowed
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let d = Decision {
            allowed: false,
            limit: 1,
            remaining: 0,
            reset_ms: 10_500,
            local: false,
        };
        assert_eq!(d.retry_after_secs(10_000), 1);
        assert_eq!(d.retry_after_secs(8_000), 3);
        assert_eq!(d.retry_after_secs(20_000), 1);
    }
}
