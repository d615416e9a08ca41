//! The in-process store: bounded (entries and bytes), with TTLs and sampled-LRU eviction
//! (like Redis: look at a few random entries, drop the least recently used). Used alone when
//! no Redis is configured, and as the short-lived L1 in front of Redis.
//!
//! Written here rather than taken from a crate because it must also run the rate limiter's
//! scripts atomically over the same map ([`LocalTxn`]), which caching crates don't expose.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

use super::CacheError;

/// How many random entries eviction looks at to find the least recently used.
pub const EVICTION_SAMPLES: usize = 5;

struct Slot {
    key: String,
    value: Bytes,
    expires: Option<Instant>,
    last_used: u64,
}

impl Slot {
    fn size(&self) -> usize {
        self.key.len() + self.value.len()
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

#[derive(Default)]
struct Map {
    slots: Vec<Slot>,
    index: HashMap<String, usize>,
    bytes: usize,
    tick: u64,
}

impl Map {
    fn live(&mut self, key: &str, now: Instant) -> Option<usize> {
        let i = *self.index.get(key)?;
        if self.slots[i].expired(now) {
            self.remove_at(i);
            return None;
        }
        self.tick += 1;
        self.slots[i].last_used = self.tick;
        Some(i)
    }

    fn remove_at(&mut self, i: usize) -> Slot {
        let slot = self.slots.swap_remove(i);
        self.index.remove(&slot.key);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.key.clone(), i);
        }
        self.bytes -= slot.size();
        slot
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.index.get(key) {
            Some(&i) => {
                self.remove_at(i);
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, key: String, value: Bytes, expires: Option<Instant>) {
        self.remove(&key);
        self.tick += 1;
        let slot = Slot {
            key,
            value,
            expires,
            last_used: self.tick,
        };
        self.bytes += slot.size();
        self.index.insert(slot.key.clone(), self.slots.len());
        self.slots.push(slot);
    }

    fn evict(&mut self, max_entries: usize, max_bytes: usize, now: Instant) {
        let mut rng = rand::rng();
        while !self.slots.is_empty() && (self.slots.len() > max_entries || self.bytes > max_bytes) {
            let mut victim = rng.random_range(0..self.slots.len());
            for _ in 1..EVICTION_SAMPLES {
                let i = rng.random_range(0..self.slots.len());
                if self.slots[i].expired(now) {
                    victim = i;
                    break;
                }
                if self.slots[i].last_used < self.slots[victim].last_used {
                    victim = i;
                }
            }
            self.remove_at(victim);
        }
    }
}

pub struct MemoryStore {
    map: Mutex<Map>,
    max_entries: usize,
    max_bytes: usize,
    /// Lists and sorted sets (the reply journal's), kept apart from the values: none of the
    /// value paths (the L1, scripts) ever sees them.
    collections: Mutex<Collections>,
}

impl MemoryStore {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        MemoryStore {
            map: Mutex::new(Map::default()),
            max_entries: max_entries.max(1),
            max_bytes,
            collections: Mutex::new(Collections::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        // A panic while holding the lock can't leave the map inconsistent in a way that
        // matters for a cache; keep serving.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        let mut map = self.lock();
        let i = map.live(key, Instant::now())?;
        Some(map.slots[i].value.clone())
    }

    pub fn mget<K: AsRef<str>>(&self, keys: &[K]) -> Vec<Option<Bytes>> {
        let mut map = self.lock();
        let now = Instant::now();
        keys.iter()
            .map(|k| {
                map.live(k.as_ref(), now)
                    .map(|i| map.slots[i].value.clone())
            })
            .collect()
    }

    pub fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) {
        self.set_many(std::iter::once((key.to_owned(), value, ttl)));
    }

    pub fn set_many(&self, items: impl IntoIterator<Item = (String, Bytes, Option<Duration>)>) {
        let mut map = self.lock();
        let now = Instant::now();
        for (key, value, ttl) in items {
            map.insert(key, value, ttl.map(|t| now + t));
        }
        map.evict(self.max_entries, self.max_bytes, now);
    }

    pub fn del(&self, keys: &[String]) -> u64 {
        let mut map = self.lock();
        let now = Instant::now();
        let values = keys
            .iter()
            .filter(|k| map.live(k, now).is_some() && map.remove(k))
            .count() as u64;
        drop(map);
        values + self.collections().remove(keys, now)
    }

    pub fn set_nx(&self, key: &str, value: Bytes, ttl: Duration) -> bool {
        let mut map = self.lock();
        let now = Instant::now();
        if map.live(key, now).is_some() {
            return false;
        }
        map.insert(key.to_owned(), value, Some(now + ttl));
        map.evict(self.max_entries, self.max_bytes, now);
        true
    }

    pub fn incr(&self, key: &str) -> Result<i64, CacheError> {
        self.run(|txn| txn.incr_by(key, 1))
    }

    /// Live keys matching a Redis glob pattern.
    pub fn keys_matching(&self, pattern: &str) -> Vec<String> {
        let map = self.lock();
        let now = Instant::now();
        let mut keys: Vec<String> = map
            .slots
            .iter()
            .filter(|s| !s.expired(now) && glob_match(pattern.as_bytes(), s.key.as_bytes()))
            .map(|s| s.key.clone())
            .collect();
        drop(map);
        keys.extend(self.collections().keys_matching(pattern, now));
        keys
    }

    /// Removes every key starting with `prefix` (the L1's local invalidation).
    pub fn remove_prefix(&self, prefix: &str) {
        let mut map = self.lock();
        let doomed: Vec<String> = map
            .slots
            .iter()
            .filter(|s| s.key.starts_with(prefix))
            .map(|s| s.key.clone())
            .collect();
        for key in doomed {
            map.remove(&key);
        }
    }

    /// Runs `f` with the whole map locked: the in-process equivalent of a Lua script.
    pub fn run<T>(&self, f: impl FnOnce(&mut LocalTxn<'_>) -> T) -> T {
        let mut map = self.lock();
        let now = Instant::now();
        let out = f(&mut LocalTxn { map: &mut map, now });
        map.evict(self.max_entries, self.max_bytes, now);
        out
    }

    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Most lists and sorted sets the memory store keeps at once; past this the ones closest to
/// expiring go first (each has a time to live: the reply journal sets one on every write).
pub const MAX_COLLECTIONS: usize = 10_000;

/// A list or a sorted set, with its expiry.
struct Collection<T> {
    value: T,
    expires: Option<Instant>,
}

impl<T> Collection<T> {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// The memory store's lists and sorted sets.
#[derive(Default)]
struct Collections {
    lists: HashMap<String, Collection<Vec<Bytes>>>,
    /// Member → score; ranges sort on demand (the sets here hold a few pending replies).
    sorted: HashMap<String, Collection<HashMap<String, i64>>>,
}

impl Collections {
    fn remove(&mut self, keys: &[String], now: Instant) -> u64 {
        let mut n = 0;
        for k in keys {
            n += self.lists.remove(k).is_some_and(|c| c.live(now)) as u64;
            n += self.sorted.remove(k).is_some_and(|c| c.live(now)) as u64;
        }
        n
    }

    fn keys_matching(&self, pattern: &str, now: Instant) -> Vec<String> {
        let lists = self
            .lists
            .iter()
            .filter(|(_, c)| c.live(now))
            .map(|(k, _)| k);
        let sorted = self
            .sorted
            .iter()
            .filter(|(_, c)| c.live(now))
            .map(|(k, _)| k);
        lists
            .chain(sorted)
            .filter(|k| glob_match(pattern.as_bytes(), k.as_bytes()))
            .cloned()
            .collect()
    }

    fn list(&mut self, key: &str, now: Instant) -> Option<&mut Collection<Vec<Bytes>>> {
        if self.lists.get(key).is_some_and(|c| !c.live(now)) {
            self.lists.remove(key);
        }
        self.lists.get_mut(key)
    }

    fn sorted(&mut self, key: &str, now: Instant) -> Option<&mut Collection<HashMap<String, i64>>> {
        if self.sorted.get(key).is_some_and(|c| !c.live(now)) {
            self.sorted.remove(key);
        }
        self.sorted.get_mut(key)
    }

    /// Drops expired collections, then the ones expiring soonest, down to [`MAX_COLLECTIONS`].
    fn bound(&mut self, now: Instant) {
        if self.lists.len() + self.sorted.len() <= MAX_COLLECTIONS {
            return;
        }
        self.lists.retain(|_, c| c.live(now));
        self.sorted.retain(|_, c| c.live(now));
        let excess = (self.lists.len() + self.sorted.len()).saturating_sub(MAX_COLLECTIONS);
        if excess == 0 {
            return;
        }
        let mut by_expiry: Vec<(Option<Instant>, String)> = self
            .lists
            .iter()
            .map(|(k, c)| (c.expires, k.clone()))
            .collect();
        // Those without an expiry sort last (`None` is mapped past every instant).
        by_expiry.sort_by_key(|(e, _)| e.map_or((1, now), |e| (0, e)));
        for (_, k) in by_expiry.into_iter().take(excess) {
            self.lists.remove(&k);
        }
    }
}

impl MemoryStore {
    fn collections(&self) -> std::sync::MutexGuard<'_, Collections> {
        self.collections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `RPUSH key items…` then, with a `ttl`, `PEXPIRE key ttl`: the list's new length.
    pub fn append_list(&self, key: &str, items: &[Bytes], ttl: Option<Duration>) -> u64 {
        let now = Instant::now();
        let mut c = self.collections();
        let len = match c.list(key, now) {
            Some(list) => {
                list.value.extend_from_slice(items);
                if let Some(ttl) = ttl {
                    list.expires = Some(now + ttl);
                }
                list.value.len()
            }
            None if items.is_empty() => 0,
            None => {
                c.lists.insert(
                    key.to_owned(),
                    Collection {
                        value: items.to_vec(),
                        expires: ttl.map(|t| now + t),
                    },
                );
                items.len()
            }
        };
        c.bound(now);
        len as u64
    }

    /// `LRANGE key start -1`.
    pub fn list_range(&self, key: &str, start: usize) -> Vec<Bytes> {
        let now = Instant::now();
        self.collections()
            .list(key, now)
            .map(|l| l.value.get(start..).unwrap_or_default().to_vec())
            .unwrap_or_default()
    }

    /// `PEXPIRE` of a value, a list or a sorted set: whether the key existed.
    pub fn expire(&self, key: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut c = self.collections();
        if let Some(list) = c.list(key, now) {
            list.expires = Some(now + ttl);
            return true;
        }
        if let Some(set) = c.sorted(key, now) {
            set.expires = Some(now + ttl);
            return true;
        }
        drop(c);
        self.run(|txn| txn.pexpire(key, ttl))
    }

    /// `ZADD key score member` (the score replaced when the member is there).
    pub fn zadd(&self, key: &str, score: i64, member: &str) {
        let now = Instant::now();
        let mut c = self.collections();
        match c.sorted(key, now) {
            Some(set) => {
                set.value.insert(member.to_owned(), score);
            }
            None => {
                c.sorted.insert(
                    key.to_owned(),
                    Collection {
                        value: HashMap::from([(member.to_owned(), score)]),
                        expires: None,
                    },
                );
            }
        }
        c.bound(now);
    }

    /// `ZRANGEBYSCORE key -inf max LIMIT 0 limit`: members by score, then by name.
    pub fn zrange_by_score(&self, key: &str, max: i64, limit: usize) -> Vec<String> {
        let now = Instant::now();
        let mut c = self.collections();
        let Some(set) = c.sorted(key, now) else {
            return Vec::new();
        };
        let mut found: Vec<(i64, &String)> = set
            .value
            .iter()
            .filter(|(_, &score)| score <= max)
            .map(|(m, &score)| (score, m))
            .collect();
        found.sort();
        found
            .into_iter()
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// `ZREM key member`: whether it was there.
    pub fn zrem(&self, key: &str, member: &str) -> bool {
        let now = Instant::now();
        let mut c = self.collections();
        let Some(set) = c.sorted(key, now) else {
            return false;
        };
        let removed = set.value.remove(member).is_some();
        if set.value.is_empty() {
            c.sorted.remove(key);
        }
        removed
    }
}

/// Redis-like operations on the locked map, for scripts' in-process implementations.
pub struct LocalTxn<'a> {
    map: &'a mut Map,
    now: Instant,
}

impl LocalTxn<'_> {
    pub fn get(&mut self, key: &str) -> Option<Bytes> {
        let i = self.map.live(key, self.now)?;
        Some(self.map.slots[i].value.clone())
    }

    /// `SET key value [PX ttl]`.
    pub fn set(&mut self, key: &str, value: Bytes, ttl: Option<Duration>) {
        self.map
            .insert(key.to_owned(), value, ttl.map(|t| self.now + t));
    }

    /// `INCRBY`: keeps the TTL, like Redis; a non-integer value is an error.
    pub fn incr_by(&mut self, key: &str, by: i64) -> Result<i64, CacheError> {
        let (current, expires) = match self.map.live(key, self.now) {
            Some(i) => {
                let slot = &self.map.slots[i];
                let n = std::str::from_utf8(&slot.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| {
                        CacheError::Server("ERR value is not an integer or out of range".into())
                    })?;
                (n, slot.expires)
            }
            None => (0, None),
        };
        let next = current.checked_add(by).ok_or_else(|| {
            CacheError::Server("ERR increment or decrement would overflow".into())
        })?;
        self.map
            .insert(key.to_owned(), Bytes::from(next.to_string()), expires);
        Ok(next)
    }

    /// `PTTL`: -2 when missing, -1 when it never expires.
    pub fn pttl(&mut self, key: &str) -> i64 {
        match self.map.live(key, self.now) {
            None => -2,
            Some(i) => match self.map.slots[i].expires {
                None => -1,
                Some(e) => e.saturating_duration_since(self.now).as_millis() as i64,
            },
        }
    }

    /// `PEXPIRE`: whether the key existed.
    pub fn pexpire(&mut self, key: &str, ttl: Duration) -> bool {
        match self.map.live(key, self.now) {
            None => false,
            Some(i) => {
                self.map.slots[i].expires = Some(self.now + ttl);
                true
            }
        }
    }

    pub fn del(&mut self, key: &str) -> bool {
        self.map.live(key, self.now).is_some() && self.map.remove(key)
    }
}

/// Redis `MATCH` glob: `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches one byte against the class starting at `pattern[start] == b'['`; returns whether it
/// matched and where the pattern continues, or `None` for an unterminated class.
fn class_match(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let mut lo = pattern[i];
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if lo == b'\\' && i + 1 < pattern.len() {
            i += 1;
            lo = pattern[i];
        }
        if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() && pattern[i + 2] != b']' {
            let hi = pattern[i + 2];
            let (a, b) = if lo <= hi { (lo, hi) } else { (hi, lo) };
            matched |= (a..=b).contains(&c);
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests;
