//! The cache against real stores: one suite run on memory, native Redis (127.0.0.1:6379) and
//! Upstash REST through a real `gcbb upstash-proxy` process; real faults (closed ports, a
//! killed proxy, a wrong token); the proxy's protocol over raw HTTP; `gcbb cache clear`.
//! Every test uses its own random key prefix and deletes it at the end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gcbb::cache::keys::{self, Area, Audience, Keyspace};
use gcbb::cache::{Cache, CacheError, CacheStatus, SCAN_BATCH};
use gcbb::config::CacheBackend;
use serde_json::{json, Value};

use crate::common::app::start_upstash_proxy;
use crate::common::{eventually, redis_addr, redis_url, success_stdout};
use crate::support::{binary, free_port, Server};
use gcbb_test_support::upstash::UpstashProxy;

/// Generous: the machine is shared; a closed port fails at once anyway.
const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Memory,
    Redis,
    Upstash,
}

struct Harness {
    cache: Arc<Cache>,
    prefix: String,
    proxy: Option<Server>,
}

fn random_prefix() -> String {
    format!("gcbbtest-{:016x}", rand::random::<u64>())
}

fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

async fn start_proxy(token: &str) -> Server {
    start_upstash_proxy(token).await
}

async fn harness(kind: Kind) -> Harness {
    let prefix = random_prefix();
    let (backend, proxy) = match kind {
        Kind::Memory => (CacheBackend::Memory, None),
        Kind::Redis => (CacheBackend::Redis { url: redis_url() }, None),
        Kind::Upstash => {
            let token = random_token();
            let proxy = start_proxy(&token).await;
            (
                CacheBackend::Upstash {
                    url: proxy.base.clone(),
                    token: token.into(),
                },
                Some(proxy),
            )
        }
    };
    let cache = Cache::new(&backend, reqwest::Client::new(), TIMEOUT)
        .with_namespace(&prefix)
        .without_l1();
    Harness {
        cache: Arc::new(cache),
        prefix,
        proxy,
    }
}

impl Harness {
    /// Every stored key of this test.
    async fn stored_keys(&self) -> Vec<String> {
        let mut keys = self
            .cache
            .store()
            .scan(&format!("{}:*", self.prefix), 100)
            .await
            .expect("scan");
        keys.sort();
        keys
    }

    async fn cleanup(&self) {
        let pattern = format!("{}:*", self.prefix);
        self.cache.clear_pattern(&pattern).await.expect("cleanup");
    }
}

fn page_key(n: u32) -> keys::Key {
    keys::dashboard_page(&Audience::Anonymous, Some("all ✓"), Some("q*?[]"), n, 20)
}

async fn ok_build(v: &'static [u8]) -> Result<Bytes, std::convert::Infallible> {
    Ok(Bytes::from_static(v))
}

// ---------------------------------------------------------------- the suite, per backend

async fn values_round_trip_including_binary_and_odd_unicode(kind: Kind) {
    let h = harness(kind).await;
    let binary: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let odd = "e\u{301} 🦀 \u{202e}rtl\u{0} \"quoted\" \\ ~tilde 日本語 \u{ffff}";
    let values = [
        Bytes::from(binary),
        Bytes::from(odd.to_owned()),
        Bytes::new(),
        Bytes::from_static(b"~"),
    ];
    for (i, v) in values.iter().enumerate() {
        let key = page_key(i as u32);
        h.cache
            .put(&key, v.clone(), Duration::from_secs(60))
            .await
            .expect("put");
        let got = h.cache.get(&key).await;
        assert_eq!(got.value.as_ref(), Some(v), "value {i} on {kind:?}");
        let expected = if kind == Kind::Memory {
            CacheStatus::Memory
        } else {
            CacheStatus::Redis
        };
        assert_eq!(got.status, expected);
    }
    let entry = h.cache.keyspace().entry(&page_key(0));
    assert!(h.stored_keys().await.contains(&entry), "{entry} stored");
    h.cleanup().await;
}

async fn store_ttls_expire(kind: Kind) {
    let h = harness(kind).await;
    let k = format!("{}:raw:short", h.prefix);
    let store = h.cache.store();
    store
        .set_many(&[(
            k.clone(),
            Bytes::from_static(b"x"),
            Duration::from_millis(150),
        )])
        .await
        .unwrap();
    assert_eq!(
        store.mget(std::slice::from_ref(&k)).await.unwrap(),
        vec![Some(Bytes::from_static(b"x"))]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.mget(std::slice::from_ref(&k)).await.unwrap(),
        vec![None]
    );

    // An entry past its freshness is no longer a hit, although it is still stored (stale).
    let key = page_key(1);
    h.cache
        .put(&key, Bytes::from_static(b"v"), Duration::from_millis(150))
        .await
        .unwrap();
    assert!(h.cache.get(&key).await.value.is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = h.cache.get(&key).await;
    assert_eq!(got.value, None);
    assert_eq!(got.status, CacheStatus::Miss);
    assert!(h
        .stored_keys()
        .await
        .contains(&h.cache.keyspace().entry(&key)));
    h.cleanup().await;
}

async fn a_megabyte_round_trips_in_64k_chunks(kind: Kind) {
    let h = harness(kind).await;
    let value = Bytes::from(
        (0..1_000_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let key = page_key(2);
    h.cache
        .put(&key, value.clone(), Duration::from_secs(60))
        .await
        .unwrap();
    let got = h.cache.get(&key).await;
    assert_eq!(got.value.as_ref().map(|v| v.len()), Some(value.len()));
    assert!(got.value == Some(value), "the value came back changed");
    let entry = h.cache.keyspace().entry(&key);
    let chunks = h
        .cache
        .store()
        .scan(&format!("{entry}:chunk:*"), 100)
        .await
        .unwrap();
    assert_eq!(chunks.len(), 16, "1 MB in 64 KiB chunks");
    h.cleanup().await;
}

async fn chunk_keys(h: &Harness, key: &keys::Key) -> Vec<String> {
    let entry = h.cache.keyspace().entry(key);
    let mut chunks = h
        .cache
        .store()
        .scan(&format!("{entry}:chunk:*"), 100)
        .await
        .unwrap();
    chunks.sort();
    chunks
}

async fn a_missing_chunk_is_a_miss(kind: Kind) {
    let h = harness(kind).await;
    let key = page_key(3);
    let value = Bytes::from(vec![42u8; 300_000]);
    h.cache
        .put(&key, value, Duration::from_secs(60))
        .await
        .unwrap();
    let chunks = chunk_keys(&h, &key).await;
    assert_eq!(chunks.len(), 5);
    assert_eq!(h.cache.store().del(&chunks[2..3]).await.unwrap(), 1);
    let got = h.cache.get(&key).await;
    assert_eq!(got.value, None);
    assert_eq!(got.status, CacheStatus::Miss);
    let rebuilt = h
        .cache
        .get_or_build(&key, Duration::from_secs(60), || ok_build(b"rebuilt"))
        .await
        .unwrap();
    assert_eq!(rebuilt.value, Bytes::from_static(b"rebuilt"));
    assert_eq!(rebuilt.status, CacheStatus::Miss);
    assert_eq!(
        h.cache.get(&key).await.value,
        Some(Bytes::from_static(b"rebuilt"))
    );
    h.cleanup().await;
}

async fn a_corrupted_chunk_is_a_miss(kind: Kind) {
    let h = harness(kind).await;
    let key = page_key(4);
    let value = Bytes::from(vec![7u8; 200_000]);
    h.cache
        .put(&key, value, Duration::from_secs(60))
        .await
        .unwrap();
    let chunks = chunk_keys(&h, &key).await;
    let victim = chunks[0].clone();
    let mut garbage = vec![7u8; 64 * 1024];
    garbage[1000] = 8;
    h.cache
        .store()
        .set_many(&[(victim, Bytes::from(garbage), Duration::from_secs(60))])
        .await
        .unwrap();
    let got = h.cache.get(&key).await;
    assert_eq!(got.value, None, "a corrupt set must not be returned");
    assert_eq!(got.status, CacheStatus::Miss);
    h.cleanup().await;
}

async fn a_generation_bump_invalidates_the_area(kind: Kind) {
    let h = harness(kind).await;
    let page = page_key(5);
    let profile = keys::companion("c1");
    h.cache
        .put(&page, Bytes::from_static(b"old"), Duration::from_secs(60))
        .await
        .unwrap();
    h.cache
        .put(&profile, Bytes::from_static(b"p"), Duration::from_secs(60))
        .await
        .unwrap();
    let generation = h.cache.bump_generation(Area::Dashboard).await.unwrap();
    assert_eq!(generation, 1);
    assert_eq!(h.cache.get(&page).await.value, None);
    assert_eq!(
        h.cache.get(&profile).await.value,
        Some(Bytes::from_static(b"p")),
        "other areas keep theirs"
    );
    let builds = AtomicUsize::new(0);
    let got = h
        .cache
        .get_or_build(&page, Duration::from_secs(60), || async {
            builds.fetch_add(1, Ordering::SeqCst);
            ok_build(b"new").await
        })
        .await
        .unwrap();
    assert_eq!(
        (got.value, got.status),
        (Bytes::from_static(b"new"), CacheStatus::Miss)
    );
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(
        h.cache.get(&page).await.value,
        Some(Bytes::from_static(b"new"))
    );
    let stored = h
        .cache
        .store()
        .mget(&[h.cache.keyspace().generation(Area::Dashboard).to_owned()])
        .await
        .unwrap();
    assert_eq!(stored, vec![Some(Bytes::from_static(b"1"))]);
    h.cleanup().await;
}

async fn clear_pattern_deletes_only_matching_keys(kind: Kind) {
    let h = harness(kind).await;
    let many = SCAN_BATCH + 37;
    let mut items: Vec<(String, Bytes, Duration)> = (0..many)
        .map(|i| {
            (
                format!("{}:a:{i}", h.prefix),
                Bytes::from_static(b"1"),
                Duration::from_secs(60),
            )
        })
        .collect();
    items.extend((0..5).map(|i| {
        (
            format!("{}:b:{i}", h.prefix),
            Bytes::from_static(b"1"),
            Duration::from_secs(60),
        )
    }));
    items.push((
        format!("{}:ab", h.prefix),
        Bytes::from_static(b"1"),
        Duration::from_secs(60),
    ));
    for group in items.chunks(200) {
        h.cache.store().set_many(group).await.unwrap();
    }
    let deleted = h
        .cache
        .clear_pattern(&format!("{}:a:*", h.prefix))
        .await
        .unwrap();
    assert_eq!(deleted, many as u64);
    let left = h.stored_keys().await;
    assert_eq!(left.len(), 6, "{left:?}");
    assert!(left.iter().all(|k| !k.contains(":a:")));
    h.cleanup().await;
    assert!(h.stored_keys().await.is_empty());
}

async fn set_nx_takes_a_lock_once(kind: Kind) {
    let h = harness(kind).await;
    let lock = format!("{}:lock:x", h.prefix);
    let store = h.cache.store();
    assert!(store
        .set_nx_px(&lock, "a", Duration::from_millis(200))
        .await
        .unwrap());
    assert!(!store
        .set_nx_px(&lock, "b", Duration::from_millis(200))
        .await
        .unwrap());
    assert_eq!(
        store.mget(std::slice::from_ref(&lock)).await.unwrap(),
        vec![Some(Bytes::from_static(b"a"))]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store
            .set_nx_px(&lock, "c", Duration::from_secs(5))
            .await
            .unwrap(),
        "expired lock is free"
    );
    // The release script deletes only with the right token.
    let release = |token: &'static str| {
        let lock = lock.clone();
        let cache = h.cache.clone();
        async move {
            cache
                .run_script(&gcbb::cache::RELEASE_LOCK, &[lock], &[token.to_owned()])
                .await
                .unwrap()
                .as_int()
        }
    };
    assert_eq!(release("a").await, Some(0));
    assert_eq!(release("c").await, Some(1));
    assert_eq!(
        store.mget(std::slice::from_ref(&lock)).await.unwrap(),
        vec![None]
    );
    h.cleanup().await;
}

async fn a_hundred_concurrent_misses_build_once(kind: Kind) {
    let h = harness(kind).await;
    let builds = Arc::new(AtomicUsize::new(0));
    let key = page_key(6);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, builds, key) = (h.cache.clone(), builds.clone(), key.clone());
            tokio::spawn(async move {
                cache
                    .get_or_build(&key, Duration::from_secs(60), || async {
                        builds.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok::<_, std::convert::Infallible>(Bytes::from_static(b"built"))
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        let got = t.await.unwrap().unwrap();
        assert_eq!(got.value, Bytes::from_static(b"built"));
        assert_ne!(got.status, CacheStatus::Bypass);
    }
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    let again = h
        .cache
        .get_or_build(&key, Duration::from_secs(60), || ok_build(b"again"))
        .await
        .unwrap();
    assert_eq!(again.value, Bytes::from_static(b"built"));
    assert!(matches!(
        again.status,
        CacheStatus::Memory | CacheStatus::Redis
    ));
    h.cleanup().await;
}

async fn a_stale_entry_is_served_while_another_instance_rebuilds(kind: Kind) {
    let h = harness(kind).await;
    let key = page_key(7);
    h.cache
        .put(
            &key,
            Bytes::from_static(b"stale"),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another instance holds the rebuild lock.
    let lock = h.cache.keyspace().lock(&key);
    assert!(h
        .cache
        .store()
        .set_nx_px(&lock, "other", Duration::from_secs(5))
        .await
        .unwrap());
    let builds = AtomicUsize::new(0);
    let build = || async {
        builds.fetch_add(1, Ordering::SeqCst);
        ok_build(b"fresh").await
    };
    let got = h
        .cache
        .get_or_build(&key, Duration::from_secs(60), build)
        .await
        .unwrap();
    assert_eq!(got.value, Bytes::from_static(b"stale"));
    assert!(got.stale);
    assert_eq!(builds.load(Ordering::SeqCst), 0);
    // Lock gone: this instance rebuilds, and frees its own lock afterwards.
    h.cache
        .store()
        .del(std::slice::from_ref(&lock))
        .await
        .unwrap();
    let got = h
        .cache
        .get_or_build(&key, Duration::from_secs(60), build)
        .await
        .unwrap();
    assert_eq!(
        (got.value, got.status, got.stale),
        (Bytes::from_static(b"fresh"), CacheStatus::Miss, false)
    );
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(h.cache.store().mget(&[lock]).await.unwrap(), vec![None]);
    h.cleanup().await;
}

/// One `#[tokio::test]` per name, running the suite's function of that name on `$kind`.
macro_rules! backend_tests {
    ($kind:expr; $($test:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $test() {
            super::$test($kind).await
        }
    )*};
}

macro_rules! backend_suite {
    ($($module:ident => $kind:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            backend_tests!($kind;
                values_round_trip_including_binary_and_odd_unicode,
                store_ttls_expire,
                a_megabyte_round_trips_in_64k_chunks,
                a_missing_chunk_is_a_miss,
                a_corrupted_chunk_is_a_miss,
                a_generation_bump_invalidates_the_area,
                clear_pattern_deletes_only_matching_keys,
                set_nx_takes_a_lock_once,
                a_stale_entry_is_served_while_another_instance_rebuilds,
            );
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_hundred_concurrent_misses_build_once() {
                super::a_hundred_concurrent_misses_build_once($kind).await
            }
        }
    )*};
}

backend_suite! {
    memory => Kind::Memory,
    redis => Kind::Redis,
    upstash => Kind::Upstash,
}

// ---------------------------------------------------------------- real faults

/// `cache` serves from the source while its store is unreachable. With an L1 (`with_l1`), what
/// was built is then kept in this process's memory for the L1's short life, so a hot key isn't
/// rebuilt on every request of the outage.
async fn assert_bypasses(cache: &Cache, with_l1: bool) {
    let key = page_key(8);
    let builds = AtomicUsize::new(0);
    let got = cache
        .get_or_build(&key, Duration::from_secs(60), || async {
            builds.fetch_add(1, Ordering::SeqCst);
            ok_build(b"from postgres").await
        })
        .await
        .unwrap();
    assert_eq!(got.value, Bytes::from_static(b"from postgres"));
    assert_eq!(got.status, CacheStatus::Bypass);
    assert_eq!(builds.load(Ordering::SeqCst), 1, "served from the source");
    let again = if with_l1 {
        CacheStatus::Memory
    } else {
        CacheStatus::Bypass
    };
    assert_eq!(cache.get(&key).await.status, again);
    assert_eq!(cache.get(&page_key(77)).await.status, CacheStatus::Bypass);
    assert!(cache
        .put(&key, Bytes::from_static(b"x"), Duration::from_secs(1))
        .await
        .is_err());
    assert!(cache.ping().await.is_err());
}

#[tokio::test]
async fn redis_on_a_closed_port_is_bypassed_and_the_source_serves() {
    let backend = CacheBackend::Redis {
        url: "redis://127.0.0.1:1".into(),
    };
    let cache =
        Cache::new(&backend, reqwest::Client::new(), TIMEOUT).with_namespace(&random_prefix());
    assert_bypasses(&cache, true).await;
    // Unreachable, or already skipped by the open circuit breaker after the failures above.
    assert!(matches!(
        cache.store().incr("x").await,
        Err(CacheError::Unreachable(_) | CacheError::Timeout | CacheError::Skipped)
    ));
}

#[tokio::test]
async fn upstash_on_a_closed_port_is_bypassed_and_the_source_serves() {
    let backend = CacheBackend::Upstash {
        url: "http://127.0.0.1:1".into(),
        token: "t".into(),
    };
    let cache =
        Cache::new(&backend, reqwest::Client::new(), TIMEOUT).with_namespace(&random_prefix());
    assert_bypasses(&cache, true).await;
}

#[tokio::test]
async fn a_killed_upstash_proxy_turns_into_bypass() {
    let mut h = harness(Kind::Upstash).await;
    let key = page_key(9);
    h.cache
        .put(&key, Bytes::from_static(b"cached"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(h.cache.get(&key).await.status, CacheStatus::Redis);
    let mut proxy = h.proxy.take().expect("a proxy");
    assert!(proxy.terminate().await, "the proxy stops");
    assert_bypasses(&h.cache, false).await;
    // Clean up through native Redis (the proxy is gone).
    let native = Cache::new(
        &CacheBackend::Redis { url: redis_url() },
        reqwest::Client::new(),
        TIMEOUT,
    );
    native
        .clear_pattern(&format!("{}:*", h.prefix))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_wrong_upstash_token_is_an_error_and_a_bypass() {
    let proxy = start_proxy(&random_token()).await;
    let backend = CacheBackend::Upstash {
        url: proxy.base.clone(),
        token: "wrong".into(),
    };
    let cache =
        Cache::new(&backend, reqwest::Client::new(), TIMEOUT).with_namespace(&random_prefix());
    assert!(matches!(cache.ping().await, Err(CacheError::Unauthorized)));
    assert_bypasses(&cache, true).await;
}

/// Forwards 127.0.0.1:`port` to the real Redis until stopped; stopping drops every connection,
/// which to a client is exactly a Redis restart.
struct Forwarder {
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(port: u16) -> Forwarder {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(redis_addr()).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Forwarder { task }
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

#[tokio::test]
async fn native_redis_is_used_again_after_it_comes_back() {
    let port = free_port();
    let forwarder = Forwarder::start(port).await;
    let prefix = random_prefix();
    let cache = Cache::new(
        &CacheBackend::Redis {
            url: format!("redis://127.0.0.1:{port}"),
        },
        reqwest::Client::new(),
        TIMEOUT,
    )
    .with_namespace(&prefix)
    .without_l1();
    let key = page_key(10);
    cache
        .put(&key, Bytes::from_static(b"v"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get(&key).await.status, CacheStatus::Redis);

    forwarder.stop().await;
    assert_eq!(
        cache.get(&key).await.status,
        CacheStatus::Bypass,
        "Redis is down"
    );

    let forwarder = Forwarder::start(port).await;
    let reconnected =
        eventually(|| async { cache.get(&key).await.status == CacheStatus::Redis }).await;
    assert!(reconnected, "the same Cache reconnected");
    assert_eq!(cache.get(&key).await.value, Some(Bytes::from_static(b"v")));
    cache.clear_pattern(&format!("{prefix}:*")).await.unwrap();
    forwarder.stop().await;
}

#[tokio::test]
async fn the_l1_answers_within_its_ttl_and_a_local_bump_clears_it() {
    let prefix = random_prefix();
    let cache = Cache::new(
        &CacheBackend::Redis { url: redis_url() },
        reqwest::Client::new(),
        TIMEOUT,
    )
    .with_namespace(&prefix);
    let key = page_key(11);
    cache
        .put(&key, Bytes::from_static(b"v"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get(&key).await.status, CacheStatus::Memory);
    cache
        .store()
        .del(&[cache.keyspace().entry(&key)])
        .await
        .unwrap();
    assert_eq!(
        cache.get(&key).await.value,
        Some(Bytes::from_static(b"v")),
        "L1 still has it"
    );
    cache.bump_generation(Area::Dashboard).await.unwrap();
    assert_eq!(cache.get(&key).await.value, None);
    cache.clear_pattern(&format!("{prefix}:*")).await.unwrap();
}

// ---------------------------------------------------------------- the proxy's protocol

struct Raw {
    proxy: UpstashProxy,
    prefix: String,
}

impl Raw {
    async fn start() -> Raw {
        Raw {
            proxy: UpstashProxy::start(&redis_url(), &[]).await,
            prefix: random_prefix(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.proxy.post(path, body).await
    }

    fn key(&self, k: &str) -> String {
        format!("{}:{k}", self.prefix)
    }

    async fn cleanup(&self) {
        let native = Cache::new(
            &CacheBackend::Redis { url: redis_url() },
            reqwest::Client::new(),
            TIMEOUT,
        );
        native
            .clear_pattern(&format!("{}:*", self.prefix))
            .await
            .unwrap();
    }
}

async fn native_get(key: &str) -> Option<Bytes> {
    let native = Cache::new(
        &CacheBackend::Redis { url: redis_url() },
        reqwest::Client::new(),
        TIMEOUT,
    );
    native
        .store()
        .mget(&[key.to_owned()])
        .await
        .unwrap()
        .pop()
        .flatten()
}

#[tokio::test]
async fn the_proxy_sets_and_gets_like_upstash() {
    let raw = Raw::start().await;
    let k = raw.key("k");
    assert_eq!(
        raw.post("/", json!(["SET", k, "v"])).await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(native_get(&k).await, Some(Bytes::from_static(b"v")));
    assert_eq!(
        raw.post("/", json!(["GET", k])).await,
        (200, json!({"result": "v"}))
    );
    assert_eq!(
        raw.post("/", json!(["GET", raw.key("none")])).await,
        (200, json!({"result": null}))
    );
    assert_eq!(
        raw.post("/", json!(["INCRBY", raw.key("n"), 5])).await,
        (200, json!({"result": 5}))
    );
    assert_eq!(
        raw.proxy.post_base64("/", json!(["GET", k])).await,
        (200, json!({"result": "dg=="}))
    );
    raw.cleanup().await;
}

#[tokio::test]
async fn an_unknown_command_is_a_400_error() {
    let raw = Raw::start().await;
    let (status, body) = raw.post("/", json!(["NOSUCHCOMMAND", "x"])).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("ERR"), "{body}");
    let (status, body) = raw.post("/", json!([])).await;
    assert_eq!(status, 400);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn a_pipeline_answers_each_command() {
    let raw = Raw::start().await;
    let (a, b) = (raw.key("a"), raw.key("b"));
    let (status, body) = raw
        .post(
            "/pipeline",
            json!([
                ["SET", a, "1"],
                ["INCR", a],
                ["HGET", a, "f"],
                ["MGET", a, b]
            ]),
        )
        .await;
    assert_eq!(status, 200);
    let replies = body.as_array().unwrap();
    assert_eq!(replies[0], json!({"result": "OK"}));
    assert_eq!(replies[1], json!({"result": 2}));
    assert!(
        replies[2]["error"]
            .as_str()
            .unwrap()
            .starts_with("WRONGTYPE"),
        "{body}"
    );
    assert_eq!(replies[3], json!({"result": ["2", null]}));
    assert_eq!(native_get(&a).await, Some(Bytes::from_static(b"2")));
    raw.cleanup().await;
}

#[tokio::test]
async fn multi_exec_runs_the_commands_as_one_transaction() {
    let raw = Raw::start().await;
    let a = raw.key("a");
    let (status, body) = raw
        .post(
            "/multi-exec",
            json!([["SET", a, "x"], ["APPEND", a, "y"], ["GET", a]]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([{"result": "OK"}, {"result": 2}, {"result": "xy"}])
    );
    assert_eq!(native_get(&a).await, Some(Bytes::from_static(b"xy")));
    // A command refused at queue time aborts the whole transaction: nothing is written.
    let b = raw.key("b");
    let (status, body) = raw
        .post("/multi-exec", json!([["SET", b, "1"], ["NOSUCHCOMMAND"]]))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].is_string());
    assert_eq!(native_get(&b).await, None);
    raw.cleanup().await;
}

#[tokio::test]
async fn a_missing_or_wrong_bearer_is_401() {
    let raw = Raw::start().await;
    let k = raw.key("k");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let mut req = raw
            .proxy
            .http
            .post(raw.proxy.url("/"))
            .json(&json!(["SET", k, "v"]));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"error": "Unauthorized"})
        );
    }
    let resp = raw
        .proxy
        .http
        .post(raw.proxy.url("/pipeline"))
        .json(&json!([["PING"]]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(native_get(&k).await, None, "nothing was written");
}

#[tokio::test]
async fn malformed_json_is_400_and_a_huge_body_is_413() {
    let raw = Raw::start().await;
    let resp = raw
        .proxy
        .http
        .post(raw.proxy.url("/"))
        .bearer_auth(&raw.proxy.token)
        .body("[\"SET\", \"k\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    let k = raw.key("huge");
    let huge = json!([
        "SET",
        k,
        "x".repeat(gcbb_cli::upstash_proxy::PROXY_MAX_BODY + 1)
    ]);
    let resp = raw
        .proxy
        .http
        .post(raw.proxy.url("/"))
        .bearer_auth(&raw.proxy.token)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(native_get(&k).await, None);
}

// ---------------------------------------------------------------- gcbb cache clear

#[tokio::test]
async fn cache_clear_deletes_the_matching_keys_and_says_how_many() {
    let prefix = random_prefix();
    let cache = Cache::new(
        &CacheBackend::Redis { url: redis_url() },
        reqwest::Client::new(),
        TIMEOUT,
    )
    .with_namespace(&prefix);
    let ks = Keyspace::with_prefix(&prefix);
    for n in 0..3 {
        cache
            .put(
                &page_key(n),
                Bytes::from_static(b"v"),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
    }
    cache
        .put(
            &keys::companion("c"),
            Bytes::from_static(b"v"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let pattern = ks.area_pattern(Area::Dashboard);
    let out = binary(env!("CARGO_BIN_EXE_gcbb"))
        .args(["cache", "clear", &pattern])
        .env("REDIS_URL", redis_url())
        // The deployment whose keys these are: clear stays inside its prefix.
        .env("CACHE_KEY_PREFIX", &prefix)
        .output()
        .unwrap();
    let stdout = success_stdout(&out);
    assert!(stdout.contains("deleted 3 keys"), "{stdout}");
    let left = cache
        .store()
        .scan(&format!("{prefix}:*"), 100)
        .await
        .unwrap();
    assert_eq!(left, vec![ks.entry(&keys::companion("c"))]);
    cache.clear_pattern(&format!("{prefix}:*")).await.unwrap();
}
