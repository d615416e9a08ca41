//! The cache in front of Postgres: one facade ([`Cache`]) over three stores
//! (Upstash REST, native Redis, in-process memory), with an in-process L1 in front of Redis.
//!
//! - Keys come from [`keys`] only. Each area has a generation counter read together with the
//!   entry in one `MGET`; an entry built under another generation is stale.
//! - Entries live longer than they are fresh ([`STALE_GRACE`]): when one is stale, the instance
//!   that wins a short lock (`SET NX PX`) rebuilds it while the others serve the stale copy.
//! - Concurrent misses of one key in a process await a single build ([`flight`]).
//! - Large values are chunked ([`chunk`]); a partial or corrupt set is a miss.
//! - The cache is an accelerator: any cache error means "serve from the source", logged at
//!   most once per [`ERROR_LOG_INTERVAL`] per kind, and reported as [`CacheStatus::Bypass`].
//! - A remote store that keeps failing is skipped by its circuit breaker ([`breaker`]) for a
//!   short, growing interval, so an outage costs requests nothing after the first failures.
//!
//! One idea, kept in one file on purpose (over 600 lines): the facade's read, build and write
//! paths, whose staleness, lock and generation rules only make sense together; the stores, keys,
//! chunks, flights, breaker and shared epoch are modules of their own.

pub mod breaker;
pub mod chunk;
pub mod epoch;
pub mod flight;
pub mod keys;
pub mod list;
pub mod memory;
pub mod ratelimit;
pub mod redis;
pub mod script;
pub mod store;
pub mod upstash;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::config::CacheBackend;
pub use epoch::{SharedEpoch, SHARED_EPOCH_TTL};
use flight::Flights;
use keys::{Area, Key, Keyspace};
use memory::MemoryStore;
use script::{Script, ScriptValue};
use store::Store;

/// Freshness of responses for anonymous visitors.
pub const ANONYMOUS_TTL: Duration = Duration::from_secs(600);
/// Freshness of responses for signed-in users.
pub const SIGNED_IN_TTL: Duration = Duration::from_secs(60);
/// Freshness of a companion's cached reply to an anonymous prompt.
pub const ANONYMOUS_BOT_REPLY_TTL: Duration = Duration::from_secs(300);
/// How long an entry stays readable after it went stale, so other instances can serve it
/// while one rebuilds.
pub const STALE_GRACE: Duration = Duration::from_secs(300);
/// Chunks outlive their manifest by this much, so a readable manifest never points at
/// chunks that expired first.
pub const CHUNK_TTL_MARGIN: Duration = Duration::from_secs(5);
/// Lifetime of the lock taken by the instance rebuilding a stale entry; longer than a
/// rebuild should take, short enough that a crashed rebuilder is replaced quickly.
pub const REBUILD_LOCK_TTL: Duration = Duration::from_secs(5);
/// L1 lifetime. The L1 doesn't see other instances' generation bumps, so this bounds how long
/// an instance may serve an entry after a PATCH elsewhere invalidated it; 2 s keeps edits
/// visible almost at once while still absorbing bursts (a hot page is read from Redis at most
/// once per 2 s per instance).
pub const L1_TTL: Duration = Duration::from_secs(2);
/// Bounds of the L1 in front of Redis.
pub const L1_MAX_ENTRIES: usize = 1_000;
pub const L1_MAX_BYTES: usize = 32 * 1024 * 1024;
/// Bounds of the memory store when it is the only cache.
pub const MEMORY_MAX_ENTRIES: usize = 10_000;
pub const MEMORY_MAX_BYTES: usize = 128 * 1024 * 1024;
/// Values larger than this are split into chunks of this size.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// A manifest claiming more chunks than this is treated as corrupt (no huge MGET).
pub const MAX_CHUNKS: u32 = 4_096;
/// Keys per `SCAN … COUNT` and per `DEL` when clearing by pattern.
pub const SCAN_BATCH: usize = 500;
/// At most one log line per error kind and operation in this interval.
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache timed out")]
    Timeout,
    #[error("cache unreachable: {0}")]
    Unreachable(String),
    #[error("cache answered an error: {0}")]
    Server(String),
    #[error("cache refused our credentials")]
    Unauthorized,
    #[error("cache reply not understood: {0}")]
    Protocol(String),
    /// Not tried: the store's circuit breaker is open after repeated failures.
    #[error("cache skipped: its circuit is open after repeated failures")]
    Skipped,
}

impl CacheError {
    /// A stable name for logs and log rate limiting.
    pub fn kind(&self) -> &'static str {
        match self {
            CacheError::Timeout => "timeout",
            CacheError::Unreachable(_) => "unreachable",
            CacheError::Server(_) => "server",
            CacheError::Unauthorized => "unauthorized",
            CacheError::Protocol(_) => "protocol",
            CacheError::Skipped => "circuit_open",
        }
    }
}

/// Where a response came from, for the `X-Cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// The in-process cache (L1, or the memory store).
    Memory,
    /// Redis (native or Upstash).
    Redis,
    /// A static snapshot (set by handlers that serve one; the cache never returns it).
    Static,
    /// Built from the source and stored.
    Miss,
    /// The cache failed; built from the source.
    Bypass,
}

impl CacheStatus {
    /// The `X-Cache` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Memory => "memory",
            CacheStatus::Redis => "redis",
            CacheStatus::Static => "static",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub value: Bytes,
    pub status: CacheStatus,
    /// A stale entry served while another instance rebuilds it.
    pub stale: bool,
}

/// The result of [`Cache::get`]: a fresh value or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub value: Option<Bytes>,
    pub status: CacheStatus,
}

struct Found {
    value: Bytes,
    fresh: bool,
    fresh_for: Duration,
}

/// A lock taken with [`Cache::try_lock`]; `held` is false when the cache was down.
#[derive(Debug)]
pub struct Lock {
    key: String,
    token: String,
    held: bool,
}

impl Lock {
    /// False when the cache was down and the work goes ahead unguarded.
    pub fn is_held(&self) -> bool {
        self.held
    }
}

pub struct Cache {
    store: Store,
    l1: Option<MemoryStore>,
    keyspace: Keyspace,
    flights: Flights,
    errors: ErrorLog,
    chunk_size: usize,
}

impl Cache {
    /// The configured store, with an L1 in front when it is Redis. Nothing connects yet.
    pub fn new(backend: &CacheBackend, http: reqwest::Client, timeout: Duration) -> Self {
        let store = match backend {
            CacheBackend::Memory => {
                Store::Memory(MemoryStore::new(MEMORY_MAX_ENTRIES, MEMORY_MAX_BYTES))
            }
            CacheBackend::Redis { url } => match redis::RedisStore::new(url, timeout) {
                Ok(r) => Store::Redis(breaker::Guarded::new(r)),
                Err(e) => {
                    tracing::warn!(error = %e, "REDIS_URL unusable; using the in-process cache");
                    Store::Memory(MemoryStore::new(MEMORY_MAX_ENTRIES, MEMORY_MAX_BYTES))
                }
            },
            CacheBackend::Upstash { url, token } => Store::Upstash(breaker::Guarded::new(
                upstash::UpstashStore::new(url, token.expose(), http, timeout),
            )),
        };
        let l1 = match store {
            Store::Memory(_) => None,
            _ => Some(MemoryStore::new(L1_MAX_ENTRIES, L1_MAX_BYTES)),
        };
        Cache {
            store,
            l1,
            keyspace: Keyspace::default(),
            flights: Flights::default(),
            errors: ErrorLog::default(),
            chunk_size: CHUNK_SIZE,
        }
    }

    /// Puts every key under another first segment (tests: a random one per test).
    pub fn with_namespace(mut self, prefix: &str) -> Self {
        self.keyspace = Keyspace::with_prefix(prefix);
        self
    }

    /// Turns the L1 off (tests of the store underneath).
    pub fn without_l1(mut self) -> Self {
        self.l1 = None;
        self
    }

    /// Another chunk size than [`CHUNK_SIZE`].
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes.max(1);
        self
    }

    pub fn backend_name(&self) -> &'static str {
        self.store.name()
    }

    /// The primitive operations (the rate limiter's scripts, tests, operators).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// The remote store's circuit breaker (`None` for the in-process store).
    pub fn breaker_status(&self) -> Option<breaker::BreakerStatus> {
        self.store.breaker_status()
    }

    /// Round-trips a PING and returns how long it took.
    pub async fn ping(&self) -> Result<Duration, CacheError> {
        let started = Instant::now();
        self.store.ping().await?;
        Ok(started.elapsed())
    }

    /// The fresh value of `key`, or `None` (missing, stale, or the cache failed: see status).
    pub async fn get(&self, key: &Key) -> Fetched {
        let entry_key = self.keyspace.entry(key);
        if let Some(value) = self.l1_get(&entry_key) {
            return Fetched {
                value: Some(value),
                status: CacheStatus::Memory,
            };
        }
        match self.lookup(key, &entry_key).await {
            Ok((_, Some(found))) if found.fresh => {
                self.l1_put(&entry_key, &found.value, found.fresh_for);
                Fetched {
                    value: Some(found.value),
                    status: self.hit_status(),
                }
            }
            Ok(_) => Fetched {
                value: None,
                status: CacheStatus::Miss,
            },
            Err(e) => {
                self.report("get", &e);
                Fetched {
                    value: None,
                    status: CacheStatus::Bypass,
                }
            }
        }
    }

    /// Stores `value` as fresh for `ttl` under the area's current generation (two round trips:
    /// read the generation, write the entry). Errors are logged and returned.
    pub async fn put(&self, key: &Key, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let entry_key = self.keyspace.entry(key);
        let outcome = async {
            let generation = self.generation(key.area).await?;
            self.write(&entry_key, generation, &value, ttl).await
        }
        .await;
        match outcome {
            Ok(()) => {
                self.l1_put(&entry_key, &value, ttl);
                Ok(())
            }
            Err(e) => {
                self.report("put", &e);
                Err(e)
            }
        }
    }

    /// The cached value of `key`, or the value `build` makes (then stored for `ttl`).
    ///
    /// Concurrent callers in this process share one build. A stale entry is rebuilt by the
    /// caller that takes the rebuild lock; everyone else gets the stale value meanwhile. Cache
    /// errors never fail the call: the value is built and the status is `Bypass`. Only the
    /// builder's own error is returned.
    pub async fn get_or_build<F, Fut, E>(
        &self,
        key: &Key,
        ttl: Duration,
        build: F,
    ) -> Result<Cached, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let entry_key = self.keyspace.entry(key);
        if let Some(value) = self.l1_get(&entry_key) {
            return Ok(Cached {
                value,
                status: CacheStatus::Memory,
                stale: false,
            });
        }
        match self.lookup(key, &entry_key).await {
            Ok((_, Some(found))) if found.fresh => {
                self.l1_put(&entry_key, &found.value, found.fresh_for);
                Ok(Cached {
                    value: found.value,
                    status: self.hit_status(),
                    stale: false,
                })
            }
            Ok((generation, Some(stale))) => {
                let lock_key = self.keyspace.lock(key);
                let token = format!("{:032x}", rand::random::<u128>());
                match self
                    .store
                    .set_nx_px(&lock_key, &token, REBUILD_LOCK_TTL)
                    .await
                {
                    Ok(false) => Ok(Cached {
                        value: stale.value,
                        status: self.hit_status(),
                        stale: true,
                    }),
                    Ok(true) => {
                        let built = self
                            .build_and_store(key, &entry_key, generation, ttl, build)
                            .await;
                        self.release_lock(&lock_key, &token).await;
                        built
                    }
                    Err(e) => {
                        self.report("lock", &e);
                        self.bypass(&entry_key, build).await
                    }
                }
            }
            Ok((generation, None)) => {
                self.build_and_store(key, &entry_key, generation, ttl, build)
                    .await
            }
            Err(e) => {
                self.report("get", &e);
                self.bypass(&entry_key, build).await
            }
        }
    }

    /// Like [`Cache::get_or_build`], but kept in this process only: the L1 in front of Redis
    /// (at most [`L1_TTL`]), or the memory store when it is the cache (`ttl`). For values many
    /// distinct requests would each add one of (searches), which must not grow the shared cache.
    pub async fn get_or_build_local<F, Fut, E>(
        &self,
        key: &Key,
        ttl: Duration,
        build: F,
    ) -> Result<Cached, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let Some(l1) = &self.l1 else {
            return self.get_or_build(key, ttl, build).await;
        };
        let entry_key = self.keyspace.entry(key);
        if let Some(value) = l1.get(&entry_key) {
            return Ok(Cached {
                value,
                status: CacheStatus::Memory,
                stale: false,
            });
        }
        let (value, _) = self.flights.run(&entry_key, build).await?;
        self.l1_put(&entry_key, &value, ttl);
        Ok(Cached {
            value,
            status: CacheStatus::Miss,
            stale: false,
        })
    }

    /// Makes every entry of `area` stale, everywhere (this instance's L1 at once, other
    /// instances' L1 within [`L1_TTL`]). Returns the new generation.
    pub async fn bump_generation(&self, area: Area) -> Result<i64, CacheError> {
        if let Some(l1) = &self.l1 {
            l1.remove_prefix(self.keyspace.area_pattern(area).trim_end_matches('*'));
        }
        let generation_key = self.keyspace.generation(area);
        self.store.incr(generation_key).await.inspect_err(|e| {
            self.report("bump", e);
        })
    }

    /// Deletes one entry (its chunks expire on their own).
    pub async fn invalidate(&self, key: &Key) -> Result<(), CacheError> {
        let entry_key = self.keyspace.entry(key);
        if let Some(l1) = &self.l1 {
            l1.del(std::slice::from_ref(&entry_key));
        }
        self.store.del(&[entry_key]).await.map(|_| ())
    }

    /// Deletes every key matching a Redis glob (`SCAN` + `DEL` in batches of [`SCAN_BATCH`],
    /// never `KEYS`). The pattern is used as given, outside the key space: it's for operators.
    /// Returns how many keys were deleted.
    pub async fn clear_pattern(&self, pattern: &str) -> Result<u64, CacheError> {
        if let Some(l1) = &self.l1 {
            l1.del(&l1.keys_matching(pattern));
        }
        self.store.delete_matching(pattern, SCAN_BATCH).await
    }

    /// Takes the lock of `key` for `ttl` unless someone holds it (`None` then). When the cache
    /// is down the work goes ahead unguarded (logged): a job must not stop because its
    /// accelerator did.
    pub async fn try_lock(&self, key: &Key, ttl: Duration) -> Option<Lock> {
        let lock_key = self.keyspace.lock(key);
        let token = format!("{:032x}", rand::random::<u128>());
        match self.store.set_nx_px(&lock_key, &token, ttl).await {
            Ok(true) => Some(Lock {
                key: lock_key,
                token,
                held: true,
            }),
            Ok(false) => None,
            Err(e) => {
                self.report("lock", &e);
                Some(Lock {
                    key: lock_key,
                    token,
                    held: false,
                })
            }
        }
    }

    /// Releases a lock taken by [`Cache::try_lock`] (only if it is still ours).
    pub async fn unlock(&self, lock: Lock) {
        if lock.held {
            self.release_lock(&lock.key, &lock.token).await;
        }
    }

    /// Runs a script atomically on the store (see [`Script`]); for the rate limiter.
    pub async fn run_script(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<ScriptValue, CacheError> {
        self.store.run_script(script, keys, args).await
    }

    fn hit_status(&self) -> CacheStatus {
        match self.store {
            Store::Memory(_) => CacheStatus::Memory,
            _ => CacheStatus::Redis,
        }
    }

    fn l1_get(&self, entry_key: &str) -> Option<Bytes> {
        self.l1.as_ref()?.get(entry_key)
    }

    fn l1_put(&self, entry_key: &str, value: &Bytes, fresh_for: Duration) {
        if let Some(l1) = &self.l1 {
            l1.set(entry_key, value.clone(), Some(fresh_for.min(L1_TTL)));
        }
    }

    async fn generation(&self, area: Area) -> Result<i64, CacheError> {
        let got = self
            .store
            .mget(&[self.keyspace.generation(area).to_owned()])
            .await?;
        Ok(parse_generation(got.into_iter().next().flatten()))
    }

    /// One `MGET` of the area's generation and the entry (plus one `MGET` of the chunks when
    /// the entry is chunked). `Ok((generation, None))` for a missing or unreadable entry.
    async fn lookup(&self, key: &Key, entry_key: &str) -> Result<(i64, Option<Found>), CacheError> {
        let generation_key = self.keyspace.generation(key.area);
        let mut got = match &self.store {
            // In process, nothing to send: no owned copies of the keys.
            Store::Memory(m) => m.mget(&[generation_key, entry_key]),
            _ => {
                self.store
                    .mget(&[generation_key.to_owned(), entry_key.to_owned()])
                    .await?
            }
        };
        let raw = got.pop().flatten();
        let generation = parse_generation(got.pop().flatten());
        let Some(head) = raw.as_ref().and_then(chunk::decode_head) else {
            return Ok((generation, None));
        };
        let value = match head.body {
            chunk::Body::Inline(v) => v,
            chunk::Body::Chunked(m) => {
                if m.count > MAX_CHUNKS {
                    return Ok((generation, None));
                }
                let chunk_keys: Vec<String> = (0..m.count)
                    .map(|i| Keyspace::chunk(entry_key, m.set_id, i))
                    .collect();
                let chunks = self.store.mget(&chunk_keys).await?;
                match chunk::assemble(&m, chunks) {
                    Some(v) => v,
                    None => return Ok((generation, None)),
                }
            }
        };
        let now = now_ms();
        let fresh = head.generation == generation && now < head.fresh_until_ms;
        Ok((
            generation,
            Some(Found {
                value,
                fresh,
                fresh_for: Duration::from_millis(head.fresh_until_ms.saturating_sub(now)),
            }),
        ))
    }

    /// Chunks first, then the head, in one pipeline.
    async fn write(
        &self,
        entry_key: &str,
        generation: i64,
        value: &Bytes,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let fresh_until = now_ms() + ttl.as_millis() as u64;
        let kept = ttl + STALE_GRACE;
        let encoded = chunk::encode(
            value,
            generation,
            fresh_until,
            self.chunk_size,
            rand::random(),
        );
        let mut items: Vec<(String, Bytes, Duration)> = encoded
            .chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    Keyspace::chunk(entry_key, encoded.set_id, i as u32),
                    c,
                    kept + CHUNK_TTL_MARGIN,
                )
            })
            .collect();
        items.push((entry_key.to_owned(), encoded.head, kept));
        self.store.set_many(&items).await
    }

    async fn build_and_store<F, Fut, E>(
        &self,
        key: &Key,
        entry_key: &str,
        generation: i64,
        ttl: Duration,
        build: F,
    ) -> Result<Cached, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let (value, _) = self
            .flights
            .run(entry_key, || async move {
                // A build that finished between our lookup and joining the flight.
                let generation = match self.lookup(key, entry_key).await {
                    Ok((_, Some(found))) if found.fresh => return Ok(found.value),
                    Ok((generation, _)) => generation,
                    Err(_) => generation,
                };
                let value = build().await?;
                if let Err(e) = self.write(entry_key, generation, &value, ttl).await {
                    self.report("put", &e);
                }
                Ok(value)
            })
            .await?;
        self.l1_put(entry_key, &value, ttl);
        Ok(Cached {
            value,
            status: CacheStatus::Miss,
            stale: false,
        })
    }

    async fn bypass<F, Fut, E>(&self, entry_key: &str, build: F) -> Result<Cached, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let (value, _) = self.flights.run(entry_key, build).await?;
        // The L1 is this process's and unaffected by the remote store's outage: keeping the
        // value there for its usual short life means a hot page is rebuilt at most once per
        // L1_TTL per instance while Redis is down, not once per request.
        self.l1_put(entry_key, &value, L1_TTL);
        Ok(Cached {
            value,
            status: CacheStatus::Bypass,
            stale: false,
        })
    }

    async fn release_lock(&self, lock_key: &str, token: &str) {
        let released = self
            .store
            .run_script(&RELEASE_LOCK, &[lock_key.to_owned()], &[token.to_owned()])
            .await;
        if let Err(e) = released {
            // The lock expires on its own within REBUILD_LOCK_TTL.
            self.report("unlock", &e);
        }
    }

    fn report(&self, op: &'static str, e: &CacheError) {
        if let Some(suppressed) = self.errors.should_log(op, e.kind()) {
            tracing::warn!(
                backend = self.store.name(),
                op,
                kind = e.kind(),
                error = %e,
                suppressed,
                "cache error; serving from the source"
            );
        }
    }
}

/// Deletes a lock only if it still holds our token (a slow rebuild must not free a lock that
/// expired and was taken by another instance).
pub static RELEASE_LOCK: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        |txn, keys, args| {
            let (Some(key), Some(token)) = (keys.first(), args.first()) else {
                return Ok(ScriptValue::Int(0));
            };
            let held = txn.get(key).is_some_and(|v| v == token.as_bytes());
            Ok(ScriptValue::Int((held && txn.del(key)) as i64))
        },
    )
});

fn parse_generation(raw: Option<Bytes>) -> i64 {
    raw.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// (operation, error kind).
type LogSlot = (&'static str, &'static str);

/// Remembers when each (operation, error kind) was last logged, and how many were skipped.
#[derive(Default)]
struct ErrorLog {
    last: Mutex<HashMap<LogSlot, (Instant, u64)>>,
}

impl ErrorLog {
    /// `Some(suppressed since the last line)` when this one should be logged.
    fn should_log(&self, op: &'static str, kind: &'static str) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match last.get_mut(&(op, kind)) {
            Some((at, suppressed)) if now.duration_since(*at) < ERROR_LOG_INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                last.insert((op, kind), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests;
