//! The anonymous fast path stands without Postgres: cached pages are served while Postgres
//! refuses connections, is black-holed or wakes slowly (through the fault proxy, a real broken
//! network), a cold instance serves what Redis holds without a Postgres connection, the
//! database's circuit breaker answers 503 at once, a companion hidden by plain SQL leaves every
//! cache layer of every instance, its CDN purge waits in the outbox until it goes through, and
//! cache keys belong to one database. Bounds that are the feature are asserted generously; the
//! figures printed (`--nocapture`) are for the record.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::common::app::{CacheKind, TestApp};
use crate::common::eventually;
use crate::common::fault::{proxy_to_postgres, OwnRedis};
use crate::common::request::TestResponse;
use crate::privacy::{app_with_vercel, edit_demo, VercelApi};

/// The anonymous page that lists every public demo companion (cached in the shared cache).
const PAGE: &str = "/api/dashboard/prefetch?pageSize=50";
/// A public demo companion, owned by `user_demo_2`.
const DEMO: &str = "cmp_demo_01";
const DEMO_OWNER: &str = "user_demo_2";
/// The query deadline of apps behind the fault proxy (`DB_QUERY_TIMEOUT_MS`).
const DEADLINE: Duration = Duration::from_millis(2000);
/// The bound a cached answer must meet whatever Postgres does.
const CACHED_BOUND: Duration = Duration::from_secs(1);
/// Slack over a bound for a shared, busy machine.
const MARGIN: Duration = Duration::from_secs(2);

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

fn lists(page: &Value, id: &str) -> bool {
    page["companions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["id"] == id))
}

/// `n` requests for `path` at once; each response with how long it took.
async fn at_once(app: &TestApp, path: &str, n: usize) -> Vec<(TestResponse, Duration)> {
    join_all((0..n).map(|_| async {
        let started = Instant::now();
        let resp = app.get(path).send().await;
        (resp, started.elapsed())
    }))
    .await
}

/// An app with the demo data on the local Redis, reaching Postgres through `port`.
async fn app_behind(port: u16, extra: &[(&str, &str)]) -> TestApp {
    let mut builder = TestApp::demo_with(CacheKind::Redis)
        .database_via(port)
        .env("DB_QUERY_TIMEOUT_MS", &DEADLINE.as_millis().to_string());
    for (name, value) in extra {
        builder = builder.env(name, value);
    }
    builder.start().await
}

/// Waits until the app answers a request that needs Postgres again.
async fn until_postgres_answers(app: &TestApp) {
    let back = eventually(|| async { app.get("/api/health").send().await.status == 200 }).await;
    assert!(back, "the app never reached Postgres again");
}

#[tokio::test]
async fn twenty_concurrent_cached_requests_are_answered_from_the_cache_while_postgres_refuses_black_holes_or_wakes_slowly(
) {
    let proxy = proxy_to_postgres().await;
    let app = app_behind(proxy.addr.port(), &[]).await;
    let warm = app.get(PAGE).send().await;
    assert_eq!(warm.status, 200, "{}", warm.text());
    let body = warm.text();

    for fault in ["refused", "black-holed", "slow to connect (1.5 s)"] {
        match fault {
            "refused" => proxy.refuse(),
            "black-holed" => proxy.black_hole(),
            _ => {
                // New connections wait, as a compute waking from zero makes them; the open ones
                // are cut, so the pool has to open new ones.
                proxy.slow_connect(Duration::from_millis(1500));
                proxy.cut();
            }
        }
        // At once, then after the L1 has expired and the epoch reading has aged past the time
        // it is served without question, with nothing else going on meanwhile.
        for pause in [Duration::ZERO, Duration::from_millis(2500)] {
            tokio::time::sleep(pause).await;
            let answers = at_once(&app, PAGE, 20).await;
            let mut took: Vec<Duration> = answers.iter().map(|(_, t)| *t).collect();
            took.sort();
            println!(
                "figure: Postgres {fault}, after {} ms idle: 20 cached requests at once, p50 {} ms, max {} ms, x-cache {:?}",
                pause.as_millis(),
                ms(took[10]),
                ms(took[19]),
                answers.iter().map(|(r, _)| r.header("x-cache").to_owned()).collect::<std::collections::BTreeSet<_>>()
            );
            for (resp, t) in &answers {
                assert_eq!(resp.status, 200, "{fault}: {}", resp.text());
                assert!(
                    ["memory", "redis"].contains(&resp.header("x-cache")),
                    "{fault}: served from {}",
                    resp.header("x-cache")
                );
                assert_eq!(resp.text(), body, "{fault}: the page as cached");
                assert!(*t < CACHED_BOUND, "{fault}: a cached request took {t:?}");
            }
        }
        proxy.cut();
        proxy.forward().await;
        until_postgres_answers(&app).await;
    }
}

#[tokio::test]
async fn past_the_outage_window_cached_pages_are_no_longer_served_and_the_answer_is_503() {
    let proxy = proxy_to_postgres().await;
    let app = app_behind(proxy.addr.port(), &[("PRIVACY_OUTAGE_WINDOW_MS", "3000")]).await;
    assert_eq!(app.get(PAGE).send().await.status, 200);
    proxy.refuse();
    // Within the window: served.
    let resp = app.get(PAGE).send().await;
    assert_eq!(resp.status, 200);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let started = Instant::now();
    let resp = app.get(PAGE).send().await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.headers.contains_key("retry-after"));
    assert_eq!(resp.json()["error"]["code"], "service_unavailable");
    assert!(started.elapsed() < DEADLINE + MARGIN);
    proxy.forward().await;
    until_postgres_answers(&app).await;
    assert_eq!(app.get(PAGE).send().await.status, 200);
}

#[tokio::test]
async fn a_cold_instance_serves_a_page_redis_holds_without_ever_reaching_postgres() {
    let warm = TestApp::demo_with(CacheKind::Redis).start().await;
    let page = warm.get(PAGE).send().await;
    assert_eq!(page.status, 200);

    // A new instance of the same deployment whose network to Postgres is a black hole: it can
    // only answer from Redis, with the epoch the warm instance shared there.
    let proxy = proxy_to_postgres().await;
    proxy.black_hole();
    let cold = warm.another_instance_via(proxy.addr.port()).await;
    let started = Instant::now();
    let resp = cold.get(PAGE).send().await;
    let took = started.elapsed();
    println!(
        "figure: cold instance, Postgres black-holed, shared epoch just confirmed: {} ms",
        ms(took)
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-cache"), "redis");
    assert_eq!(resp.text(), page.text());
    assert!(took < CACHED_BOUND, "{took:?}");

    // The shared epoch two seconds old (nobody confirmed it since): a second cold instance
    // gives Postgres a moment, then serves what Redis holds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let colder = warm.another_instance_via(proxy.addr.port()).await;
    let started = Instant::now();
    let resp = colder.get(PAGE).send().await;
    let took = started.elapsed();
    println!(
        "figure: cold instance, Postgres black-holed, shared epoch 2 s old: {} ms",
        ms(took)
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-cache"), "redis");
    assert!(took < CACHED_BOUND, "{took:?}");
}

#[tokio::test]
async fn anonymous_chat_on_a_cold_instance_answers_from_the_cached_profile_and_404s_once_the_companion_is_hidden(
) {
    let warm = TestApp::demo_with(CacheKind::Redis)
        .env("DB_QUERY_TIMEOUT_MS", "1000")
        .start()
        .await;
    let first = warm
        .post_json(&format!("/api/chat/{DEMO}"), &json!({"prompt": "hello"}))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let cached = eventually(|| async {
        !warm
            .redis_keys(&format!("v1:companion:profile:{DEMO}:*"))
            .await
            .is_empty()
    })
    .await;
    assert!(cached, "the profile was cached");

    let proxy = proxy_to_postgres().await;
    proxy.black_hole();
    let cold = warm.another_instance_via(proxy.addr.port()).await;
    let resp = cold
        .post_json(&format!("/api/chat/{DEMO}"), &json!({"prompt": "hi again"}))
        .header("x-forwarded-for", "203.0.113.8")
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    // Hidden by plain SQL: the warm instance, under traffic, confirms the new epoch and shares
    // it; the cold one then reads a new key and never the cached profile.
    warm.pg
        .batch_execute(&format!(
            "UPDATE \"Companion\" SET \"private\" = true WHERE \"id\" = '{DEMO}'"
        ))
        .await
        .unwrap();
    // Each request from a client address of its own: the anonymous limit is 5 a minute.
    let client = std::sync::atomic::AtomicU32::new(0);
    let next_ip = || {
        let n = client.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("198.51.100.{}", n % 250)
    };
    let gone = eventually(|| async {
        let on_warm = warm
            .post_json(&format!("/api/chat/{DEMO}"), &json!({"prompt": "x"}))
            .header("x-forwarded-for", &next_ip())
            .send()
            .await
            .status;
        let on_cold = cold
            .post_json(&format!("/api/chat/{DEMO}"), &json!({"prompt": "y"}))
            .header("x-forwarded-for", &next_ip())
            .send()
            .await
            .status;
        on_warm == 404 && on_cold != 200
    })
    .await;
    assert!(gone, "the hidden companion still answered anonymously");
}

#[tokio::test]
async fn a_companion_hidden_by_plain_sql_leaves_every_cache_layer_of_every_instance_within_a_second_and_the_total_agrees_at_once(
) {
    let redis_one = TestApp::demo_with(CacheKind::Redis).start().await;
    let redis_two = redis_one.another_instance().await;
    let memory = redis_one.another_instance_with(&[("REDIS_URL", "")]).await;
    assert_eq!(memory.app.cache.backend_name(), "memory");
    let instances = [&redis_one, &redis_two, &memory];
    let mut before_total = 0;
    for app in instances {
        let page = app.get(PAGE).send().await.json();
        assert!(lists(&page, DEMO));
        before_total = page["total"].as_i64().unwrap();
        assert_eq!(page["totalIsEstimate"], false);
    }

    // Traffic on every instance, as in production.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic: Vec<_> = instances
        .iter()
        .map(|app| {
            let router = app.router.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let request = axum::http::Request::get(PAGE)
                        .body(axum::body::Body::empty())
                        .expect("a request");
                    let _ = tower::ServiceExt::oneshot(router.clone(), request).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let hidden_at = Instant::now();
    redis_one
        .pg
        .batch_execute(&format!(
            "UPDATE \"Companion\" SET \"private\" = true WHERE \"id\" = '{DEMO}'"
        ))
        .await
        .unwrap();
    let mut left = [None; 3];
    while left.iter().any(Option::is_none) && hidden_at.elapsed() < Duration::from_secs(10) {
        for (i, app) in instances.iter().enumerate() {
            if left[i].is_some() {
                continue;
            }
            let page = app.get(PAGE).send().await.json();
            if !lists(&page, DEMO) {
                left[i] = Some(hidden_at.elapsed());
                assert_eq!(
                    page["total"].as_i64().unwrap(),
                    before_total - 1,
                    "the total agrees with the list at once"
                );
                assert_eq!(page["totalIsEstimate"], false);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in traffic {
        let _ = task.await;
    }
    println!(
        "figure: plain-SQL UPDATE private = true → gone from every layer: redis+L1 {:?}, redis+L1 (2nd) {:?}, memory {:?}",
        left[0].map(ms),
        left[1].map(ms),
        left[2].map(ms)
    );
    for (i, took) in left.iter().enumerate() {
        let took = took.unwrap_or_else(|| panic!("instance {i} still lists the companion"));
        assert!(
            took < Duration::from_secs(1) + MARGIN,
            "instance {i} took {took:?}"
        );
    }
    // A signed-in stranger's total agrees too.
    let page = redis_one
        .get(PAGE)
        .signed_in("user_demo_3")
        .send()
        .await
        .json();
    assert!(!lists(&page, DEMO));
    let listed = page["companions"].as_array().unwrap().len() as i64;
    assert_eq!(page["total"].as_i64().unwrap(), listed);
    // And the owner's, who still sees it (private now) and counts it once.
    let page = redis_one
        .get(PAGE)
        .signed_in(DEMO_OWNER)
        .send()
        .await
        .json();
    assert!(lists(&page, DEMO));
    let listed = page["companions"].as_array().unwrap().len() as i64;
    assert_eq!(page["total"].as_i64().unwrap(), listed);
}

#[tokio::test]
async fn a_companion_hidden_by_plain_sql_is_purged_from_the_cdn_by_an_instance_that_sees_the_epoch_move(
) {
    let (api, url, _server) = VercelApi::start(0).await;
    let app = app_with_vercel(&url).await;
    assert_eq!(app.get(PAGE).send().await.status, 200);
    app.pg
        .batch_execute(&format!(
            "DELETE FROM \"Companion\" WHERE \"id\" = '{DEMO}'"
        ))
        .await
        .unwrap();
    // No cron, no PATCH: only traffic.
    let purged = eventually(|| async {
        let _ = app.get(PAGE).send().await;
        api.calls().iter().any(|c| {
            c.path == "dangerously-delete-by-tags" && c.tags == [format!("companion:{DEMO}")]
        })
    })
    .await;
    assert!(purged, "calls: {:?}", api.calls());
    // Marked done once the purge has gone out (in the drain's transaction, just after it).
    let done = eventually(|| async {
        app.count("SELECT count(*) FROM \"PrivacyPurgeOutbox\" WHERE \"purgedAt\" IS NULL")
            .await
            == 0
    })
    .await;
    assert!(done, "the outbox row stayed pending");
    // The cron finds nothing left to purge for it.
    let report = app.refresh().await;
    assert_eq!(report.status, 200, "{}", report.text());
    let deletes = api
        .calls()
        .iter()
        .filter(|c| c.path == "dangerously-delete-by-tags")
        .count();
    assert_eq!(deletes, 1);
}

#[tokio::test]
async fn a_purge_that_keeps_failing_stays_in_the_outbox_until_a_later_drain_gets_it_through() {
    // Vercel fails every purge until told otherwise.
    let (api, url, _server) = VercelApi::start(usize::MAX).await;
    let app = app_with_vercel(&url).await;
    let resp = edit_demo(&app, json!({"private": true})).await;
    assert_eq!(resp.status, 200);
    app.finish_background().await;
    assert!(api.calls().len() >= gcbb::cdn::PURGE_ATTEMPTS as usize);
    let pending = "SELECT count(*) FROM \"PrivacyPurgeOutbox\" WHERE \"purgedAt\" IS NULL";
    assert_eq!(app.count(pending).await, 1, "still owed after the failures");
    // A cron run while Vercel still fails: the step says so, and the purge stays owed.
    let report = app.refresh().await;
    assert_eq!(report.status, 503, "{}", report.text());
    assert!(report.json()["failed"]
        .as_array()
        .unwrap()
        .contains(&json!("drainPurgeOutbox")));
    assert_eq!(app.count(pending).await, 1);

    api.fail_next(0);

    let step = app.refresh_step("drainPurgeOutbox").await;
    assert_eq!(step["ok"], true);
    assert_eq!(step["count"], 1);
    assert_eq!(app.count(pending).await, 0);
    let last_delete = api
        .calls()
        .into_iter()
        .rfind(|c| c.path == "dangerously-delete-by-tags")
        .unwrap();
    assert_eq!(last_delete.tags, [format!("companion:{DEMO}")]);
}

#[tokio::test]
async fn the_outbox_written_while_no_instance_ran_is_drained_by_the_next_one() {
    let (api, url, _server) = VercelApi::start(0).await;
    // Hidden by plain SQL before any app exists (as if every instance had crashed between the
    // trigger and a drain): the rows are in the table.
    let app = TestApp::builder()
        .demo_data()
        .fixtures(
            "UPDATE \"Companion\" SET \"private\" = true WHERE \"id\" IN ('cmp_demo_01', 'cmp_demo_02')",
        )
        .env("VERCEL_TOKEN", "vercel-token-for-tests")
        .env("VERCEL_PROJECT_ID", "prj_gcbb")
        .env("VERCEL_API_URL", &url)
        .start()
        .await;
    assert_eq!(
        app.count("SELECT count(*) FROM \"PrivacyPurgeOutbox\" WHERE \"purgedAt\" IS NULL")
            .await,
        2
    );
    let report = app.refresh().await;
    assert_eq!(report.status, 200, "{}", report.text());
    let mut tags: Vec<String> = api.calls().into_iter().flat_map(|c| c.tags).collect();
    tags.retain(|t| t.starts_with("companion:"));
    tags.sort();
    assert_eq!(tags, ["companion:cmp_demo_01", "companion:cmp_demo_02"]);
    assert_eq!(
        app.count("SELECT count(*) FROM \"PrivacyPurgeOutbox\" WHERE \"purgedAt\" IS NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn twenty_drains_on_two_instances_at_once_purge_each_hidden_companion_exactly_once() {
    let (api, url, _server) = VercelApi::start(0).await;
    let first = app_with_vercel(&url).await;
    let second = first.another_instance().await;
    // 24 companions hidden (the demo has 40), more than one purge batch.
    first
        .pg
        .batch_execute(
            "UPDATE \"Companion\" SET \"private\" = true \
             WHERE \"id\" IN (SELECT \"id\" FROM \"Companion\" WHERE NOT \"private\" ORDER BY \"id\" LIMIT 24)",
        )
        .await
        .unwrap();
    let hidden = first
        .count("SELECT count(*) FROM \"PrivacyPurgeOutbox\" WHERE \"purgedAt\" IS NULL")
        .await;
    assert_eq!(hidden, 24);
    let drains = join_all((0..20).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        gcbb::platform::outbox::drain(&app.app)
    }))
    .await;
    let done: usize = drains.into_iter().map(|d| d.expect("a drain")).sum();
    assert_eq!(done, 24);
    let mut tags: Vec<String> = api.calls().into_iter().flat_map(|c| c.tags).collect();
    let all = tags.len();
    tags.sort();
    tags.dedup();
    assert_eq!(all, 24, "each tag purged once");
    assert_eq!(tags.len(), 24);
    assert_eq!(
        first
            .count("SELECT count(*) FROM \"PrivacyPurgeOutbox\" WHERE \"purgedAt\" IS NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn an_owners_edit_that_changes_nothing_purges_nothing_and_a_real_one_purges_only_what_changed(
) {
    let (api, url, _server) = VercelApi::start(0).await;
    let app = app_with_vercel(&url).await;
    let name: String = app
        .pg
        .query_one(
            "SELECT \"name\" FROM \"Companion\" WHERE \"id\" = $1",
            &[&DEMO],
        )
        .await
        .unwrap()
        .get(0);
    for body in [json!({"private": false}), json!({"name": name})] {
        let resp = app
            .patch_json(&format!("/api/companion/{DEMO}"), &body)
            .signed_in(DEMO_OWNER)
            .send()
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    app.finish_background().await;
    assert!(api.calls().is_empty(), "{:?}", api.calls());

    // Instructions are on no public page: nothing for the CDN.
    let resp = edit_demo(&app, json!({"instructions": "Be brief."})).await;
    assert_eq!(resp.status, 200);
    app.finish_background().await;
    assert!(api.calls().is_empty(), "{:?}", api.calls());

    // A move to another category: the pages listing it, and that category's.
    let resp = edit_demo(&app, json!({"categoryId": "cat_demo_05"})).await;
    assert_eq!(resp.status, 200);
    assert!(eventually(|| async { api.calls().len() == 1 }).await);
    let call = &api.calls()[0];
    assert_eq!(call.path, "invalidate-by-tags");
    assert_eq!(
        call.tags,
        [
            format!("companion:{DEMO}"),
            "dashboard:category:cat_demo_05".to_owned()
        ]
    );
}

#[tokio::test]
async fn with_redis_and_postgres_both_down_requests_get_a_clear_503_with_retry_after_and_none_hangs(
) {
    let mut redis = OwnRedis::start().await;
    let proxy = proxy_to_postgres().await;
    let app = TestApp::demo_with(CacheKind::RedisAt(redis.url()))
        .database_via(proxy.addr.port())
        .env("DB_QUERY_TIMEOUT_MS", &DEADLINE.as_millis().to_string())
        .start()
        .await;
    assert_eq!(app.get(PAGE).send().await.status, 200);
    redis.stop();
    proxy.refuse();
    // Past the L1's life: nothing in this process holds the page any more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for path in [PAGE, "/api/dashboard/prefetch?page=2&pageSize=11"] {
        let answers = at_once(&app, path, 20).await;
        let mut took: Vec<Duration> = answers.iter().map(|(_, t)| *t).collect();
        took.sort();
        println!(
            "figure: Redis and Postgres down, {path}: 20 at once, p50 {} ms, max {} ms",
            ms(took[10]),
            ms(took[19])
        );
        for (resp, t) in &answers {
            assert_eq!(resp.status, 503, "{path}: {}", resp.text());
            assert!(resp.headers.contains_key("retry-after"), "{path}");
            assert_eq!(resp.json()["error"]["code"], "service_unavailable");
            assert!(*t < DEADLINE + MARGIN, "{path}: {t:?}");
        }
    }
    let health = app.get("/api/health").send().await;
    assert_eq!(health.status, 503);
    assert!(health.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn after_a_few_deadline_expiries_the_database_breaker_answers_503_at_once_health_says_so_and_one_probe_closes_it(
) {
    let proxy = proxy_to_postgres().await;
    let app = app_behind(proxy.addr.port(), &[]).await;
    let history = "/api/chat/cmp_demo_01";
    assert_eq!(
        app.get(history)
            .signed_in("user_demo_1")
            .send()
            .await
            .status,
        200
    );
    proxy.black_hole();
    let mut first = Vec::new();
    for _ in 0..gcbb::db::pool::DB_BREAKER_FAILURES {
        let started = Instant::now();
        let resp = app.get(history).signed_in("user_demo_1").send().await;
        assert_eq!(resp.status, 503);
        first.push(started.elapsed());
    }
    let answers = join_all((0..20).map(|_| async {
        let started = Instant::now();
        let resp = app.get(history).signed_in("user_demo_1").send().await;
        (resp, started.elapsed())
    }))
    .await;
    let mut took: Vec<Duration> = answers.iter().map(|(_, t)| *t).collect();
    took.sort();
    println!(
        "figure: black-holed Postgres, uncached requests: the first {} took {:?} ms; with the breaker open, 20 at once p50 {} ms, max {} ms",
        first.len(),
        first.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        ms(took[10]),
        ms(took[19])
    );
    for (resp, t) in &answers {
        assert_eq!(resp.status, 503);
        assert_eq!(resp.header("retry-after"), "2");
        assert!(*t < DEADLINE / 2, "the open breaker answered after {t:?}");
    }
    let health = app.get("/api/health").send().await;
    assert_eq!(health.status, 503);
    let report = health.json();
    assert_eq!(report["database"]["error"], "circuit_open", "{report}");
    assert!(report["database"]["reason"]
        .as_str()
        .unwrap()
        .contains("failures in a row"));

    proxy.cut();
    proxy.forward().await;
    let back = eventually(|| async {
        app.get(history)
            .signed_in("user_demo_1")
            .send()
            .await
            .status
            == 200
    })
    .await;
    assert!(back, "the breaker never closed after Postgres came back");
    assert!(!app.app.db.breaker_status().open);
}

#[tokio::test]
async fn deployments_on_different_databases_sharing_one_redis_never_read_each_others_entries() {
    // Two databases (production and a preview's branch, say), one Redis, no CACHE_KEY_PREFIX.
    let unprefixed = || TestApp::demo_with(CacheKind::Redis).env("CACHE_KEY_PREFIX", "");
    let production = unprefixed().start().await;
    let preview = unprefixed()
        .fixtures(format!(
            "UPDATE \"Companion\" SET \"name\" = 'Only On The Branch' WHERE \"id\" = '{DEMO}'"
        ))
        .start()
        .await;
    assert!(production.prefix.starts_with("gcbb-"));
    assert!(preview.prefix.starts_with("gcbb-"));
    assert_ne!(production.prefix, preview.prefix);

    let on_preview = preview.get(PAGE).send().await;
    assert!(on_preview.text().contains("Only On The Branch"));
    let on_production = production.get(PAGE).send().await;
    assert_eq!(on_production.status, 200);
    assert!(!on_production.text().contains("Only On The Branch"));
    let again = production.get(PAGE).send().await;
    assert!(!again.text().contains("Only On The Branch"));

    // Anonymous chat: the preview caches the profile of a companion that is private in
    // production's own database; production must answer 404 all the same.
    production
        .pg
        .batch_execute(&format!(
            "UPDATE \"Companion\" SET \"private\" = true WHERE \"id\" = '{DEMO}'"
        ))
        .await
        .unwrap();
    let chat = preview
        .post_json(&format!("/api/chat/{DEMO}"), &json!({"prompt": "hello"}))
        .header("x-forwarded-for", "203.0.113.20")
        .send()
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    let cached = eventually(|| async {
        !preview
            .redis_keys(&format!("v1:companion:profile:{DEMO}:*"))
            .await
            .is_empty()
    })
    .await;
    assert!(cached);
    let chat = production
        .post_json(&format!("/api/chat/{DEMO}"), &json!({"prompt": "hello"}))
        .header("x-forwarded-for", "203.0.113.21")
        .send()
        .await;
    assert_eq!(chat.status, 404, "{}", chat.text());
}
