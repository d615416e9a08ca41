//! The backend seam: the primitive operations every layer above needs, dispatched over the
//! three stores by an enum (no boxing, no `dyn` futures).

use std::time::Duration;

use bytes::Bytes;

use super::breaker::{BreakerStatus, Guarded};
use super::list::{Appended, ListAppend};
use super::memory::MemoryStore;
use super::redis::RedisStore;
use super::script::{Script, ScriptValue};
use super::upstash::UpstashStore;
use super::CacheError;

/// One of the three stores; the remote ones behind their circuit breaker ([`super::breaker`]).
pub enum Store {
    Memory(MemoryStore),
    Redis(Guarded<RedisStore>),
    Upstash(Guarded<UpstashStore>),
}

impl Store {
    pub fn name(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
            Store::Upstash(_) => "upstash",
        }
    }

    /// The circuit breaker's state; `None` for the in-process store, which has none.
    pub fn breaker_status(&self) -> Option<BreakerStatus> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(r) => Some(r.breaker().status()),
            Store::Upstash(u) => Some(u.breaker().status()),
        }
    }

    /// `MGET`: one value (or none) per key, in order.
    pub async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Memory(m) => Ok(m.mget(keys)),
            Store::Redis(r) => r.call(|s| s.mget(keys)).await,
            Store::Upstash(u) => u.call(|s| s.mget(keys)).await,
        }
    }

    /// `SET key value PX ttl` for each item, in one pipeline, in order.
    pub async fn set_many(&self, items: &[(String, Bytes, Duration)]) -> Result<(), CacheError> {
        if items.is_empty() {
            return Ok(());
        }
        match self {
            Store::Memory(m) => {
                m.set_many(
                    items
                        .iter()
                        .map(|(k, v, t)| (k.clone(), v.clone(), Some(*t))),
                );
                Ok(())
            }
            Store::Redis(r) => r.call(|s| s.set_many(items)).await,
            Store::Upstash(u) => u.call(|s| s.set_many(items)).await,
        }
    }

    /// `DEL`: how many existed.
    pub async fn del(&self, keys: &[String]) -> Result<u64, CacheError> {
        if keys.is_empty() {
            return Ok(0);
        }
        match self {
            Store::Memory(m) => Ok(m.del(keys)),
            Store::Redis(r) => r.call(|s| s.del(keys)).await,
            Store::Upstash(u) => u.call(|s| s.del(keys)).await,
        }
    }

    /// `INCR`.
    pub async fn incr(&self, key: &str) -> Result<i64, CacheError> {
        match self {
            Store::Memory(m) => m.incr(key),
            Store::Redis(r) => r.call(|s| s.incr(key)).await,
            Store::Upstash(u) => u.call(|s| s.incr(key)).await,
        }
    }

    /// `SET key value NX PX ttl`: whether this call set it (took the lock). `value` is a
    /// token (ASCII), stored as is on every backend.
    pub async fn set_nx_px(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        match self {
            Store::Memory(m) => Ok(m.set_nx(key, Bytes::copy_from_slice(value.as_bytes()), ttl)),
            Store::Redis(r) => r.call(|s| s.set_nx_px(key, value, ttl)).await,
            Store::Upstash(u) => u.call(|s| s.set_nx_px(key, value, ttl)).await,
        }
    }

    /// Every key matching a glob, by `SCAN MATCH … COUNT batch` (never `KEYS`).
    pub async fn scan(&self, pattern: &str, batch: usize) -> Result<Vec<String>, CacheError> {
        let mut found = Vec::new();
        let mut cursor = "0".to_owned();
        loop {
            let (next, keys) = self.scan_page(&cursor, pattern, batch).await?;
            found.extend(keys);
            if next == "0" {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// Deletes every key matching a glob: `SCAN` a batch, `DEL` it, repeat. Deleting keys
    /// SCAN already returned is safe; a key returned twice counts once (DEL of a gone key is 0).
    pub async fn delete_matching(&self, pattern: &str, batch: usize) -> Result<u64, CacheError> {
        let mut deleted = 0u64;
        let mut cursor = "0".to_owned();
        loop {
            let (next, keys) = self.scan_page(&cursor, pattern, batch).await?;
            for group in keys.chunks(batch.max(1)) {
                deleted += self.del(group).await?;
            }
            if next == "0" {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// One `SCAN` step: the next cursor (`"0"` when done) and the keys of this step.
    async fn scan_page(
        &self,
        cursor: &str,
        pattern: &str,
        batch: usize,
    ) -> Result<(String, Vec<String>), CacheError> {
        let batch = batch.max(1);
        match self {
            Store::Memory(m) => Ok(("0".to_owned(), m.keys_matching(pattern))),
            Store::Redis(r) => r.call(|s| s.scan(cursor, pattern, batch)).await,
            Store::Upstash(u) => u.call(|s| s.scan(cursor, pattern, batch)).await,
        }
    }

    /// `RPUSH` the items and `PEXPIRE` the list (when a time to live is given), set the lease,
    /// read the watched key: one round trip on every backend (a pipeline: the commands run in
    /// order, not as a transaction).
    pub async fn append_list(&self, append: &ListAppend<'_>) -> Result<Appended, CacheError> {
        match self {
            Store::Memory(m) => {
                let len = m.append_list(append.key, append.items, append.ttl);
                if let Some((lease, ttl)) = append.lease {
                    m.set(lease, Bytes::from_static(b"1"), Some(ttl));
                }
                let watched = append.watch.and_then(|k| m.get(k));
                Ok(Appended { len, watched })
            }
            Store::Redis(r) => r.call(|s| s.append_list(append)).await,
            Store::Upstash(u) => u.call(|s| s.append_list(append)).await,
        }
    }

    /// `LRANGE key start -1`: the list's items from `start` on (none when it is missing).
    pub async fn list_range(&self, key: &str, start: usize) -> Result<Vec<Bytes>, CacheError> {
        match self {
            Store::Memory(m) => Ok(m.list_range(key, start)),
            Store::Redis(r) => r.call(|s| s.list_range(key, start)).await,
            Store::Upstash(u) => u.call(|s| s.list_range(key, start)).await,
        }
    }

    /// `PEXPIRE key ttl`: whether the key exists.
    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, CacheError> {
        match self {
            Store::Memory(m) => Ok(m.expire(key, ttl)),
            Store::Redis(r) => r.call(|s| s.expire(key, ttl)).await,
            Store::Upstash(u) => u.call(|s| s.expire(key, ttl)).await,
        }
    }

    /// `ZADD key score member`.
    pub async fn zadd(&self, key: &str, score: i64, member: &str) -> Result<(), CacheError> {
        match self {
            Store::Memory(m) => {
                m.zadd(key, score, member);
                Ok(())
            }
            Store::Redis(r) => r.call(|s| s.zadd(key, score, member)).await,
            Store::Upstash(u) => u.call(|s| s.zadd(key, score, member)).await,
        }
    }

    /// `ZRANGEBYSCORE key -inf max LIMIT 0 limit`.
    pub async fn zrange_by_score(
        &self,
        key: &str,
        max: i64,
        limit: usize,
    ) -> Result<Vec<String>, CacheError> {
        match self {
            Store::Memory(m) => Ok(m.zrange_by_score(key, max, limit)),
            Store::Redis(r) => r.call(|s| s.zrange_by_score(key, max, limit)).await,
            Store::Upstash(u) => u.call(|s| s.zrange_by_score(key, max, limit)).await,
        }
    }

    /// `ZREM key member`: whether it was there.
    pub async fn zrem(&self, key: &str, member: &str) -> Result<bool, CacheError> {
        match self {
            Store::Memory(m) => Ok(m.zrem(key, member)),
            Store::Redis(r) => r.call(|s| s.zrem(key, member)).await,
            Store::Upstash(u) => u.call(|s| s.zrem(key, member)).await,
        }
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<(), CacheError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => r.call(|s| s.ping()).await,
            Store::Upstash(u) => u.call(|s| s.ping()).await,
        }
    }

    /// Runs a script atomically: Lua on Redis and Upstash, its Rust twin in memory.
    pub async fn run_script(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<ScriptValue, CacheError> {
        match self {
            Store::Memory(m) => m.run(|txn| script.run_local(txn, keys, args)),
            Store::Redis(r) => r.call(|s| s.run_script(script, keys, args)).await,
            Store::Upstash(u) => u.call(|s| s.run_script(script, keys, args)).await,
        }
    }
}
