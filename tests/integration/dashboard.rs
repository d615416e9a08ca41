//! The dashboard, the companion PATCH and the cron refresh, in-process through the router of
//! every function, on a fresh database with the demo data, on each cache backend (memory, native
//! Redis, Upstash REST through a real `gcbb upstash-proxy`).

use axum::http::{Method, StatusCode};
use gcbb::cache::keys::{dashboard_page, Audience};
use gcbb::db::privacy::current_privacy_epoch;
use serde_json::{json, Value};

use crate::common::app::{CacheKind, TestApp, CRON_SECRET};
use crate::common::fault::OwnRedis;
use crate::common::request::TestRequest;
use crate::common::{eventually, json_strs};

/// A fresh app on the demo data (memory cache unless a test says otherwise).
async fn demo_app() -> TestApp {
    TestApp::builder().demo_data().start().await
}

async fn ids_where(app: &TestApp, sql: &str) -> Vec<String> {
    app.pg
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn companion_ids(body: &Value) -> Vec<String> {
    body["companions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Counts dashboard page builds from now on. Every build runs `gcbb_count_dashboard` once (the
/// exact total), so the function is wrapped to take a number from a sequence first: a sequence,
/// not a table, because its numbers stay taken when the count's transaction is cancelled.
async fn count_page_builds(app: &TestApp) {
    app.pg
        .batch_execute(
            "CREATE SEQUENCE test_page_builds;
             ALTER FUNCTION gcbb_count_dashboard(text, text) RENAME TO gcbb_count_dashboard_counted;
             CREATE FUNCTION gcbb_count_dashboard(p_category_id text, p_name_contains text)
             RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
             BEGIN
                 PERFORM nextval('test_page_builds');
                 RETURN gcbb_count_dashboard_counted(p_category_id, p_name_contains);
             END $$",
        )
        .await
        .unwrap();
}

/// Page builds since [`count_page_builds`].
async fn page_builds(app: &TestApp) -> i64 {
    app.count("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM test_page_builds")
        .await
}

/// Whether the cache holds the first page (unfiltered, `page_size` long) for `audience`, under
/// the key the dashboard writes it to (the current privacy epoch's), asked of the store past the
/// app's L1.
async fn is_page_cached(app: &TestApp, audience: &Audience, page_size: u32) -> bool {
    let epoch = current_privacy_epoch(&app.pg).await.unwrap();
    let key = dashboard_page(audience, None, None, 1, page_size).at_privacy_epoch(epoch);
    let entry = app.app.cache.keyspace().entry(&key);
    app.app.cache.store().mget(&[entry]).await.unwrap()[0].is_some()
}

async fn refresh_runs(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM \"DashboardRefreshLog\"")
        .await
}

#[tokio::test]
async fn anonymous_responses_never_contain_private_companions_instructions_or_configs() {
    let app = demo_app().await;
    let private = ids_where(&app, "SELECT id FROM \"Companion\" WHERE private").await;
    assert!(!private.is_empty());

    let resp = app.get("/api/dashboard/prefetch?pageSize=50").send().await;
    assert_eq!(resp.status, 200);
    let h = &resp.headers;
    assert_eq!(h["cache-control"], "public, max-age=0, must-revalidate");
    assert_eq!(
        h["cdn-cache-control"],
        "public, s-maxage=600, stale-while-revalidate=86400"
    );
    assert!(h["etag"].to_str().unwrap().starts_with('"'));
    assert_eq!(h["x-cache"], "miss");
    assert!(h["server-timing"].to_str().unwrap().contains("total;dur="));
    let text = resp.text();
    for forbidden in [
        "instructions",
        "Config",
        "\"private\"",
        "tokensBurned",
        "userId",
    ] {
        assert!(!text.contains(forbidden), "{forbidden} leaked: {text}");
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    let shown = companion_ids(&body);
    let public_count = ids_where(&app, "SELECT id FROM \"Companion\" WHERE NOT private")
        .await
        .len();
    assert_eq!(shown.len(), public_count);
    assert_eq!(body["total"], public_count as i64);
    assert_eq!(body["totalIsEstimate"], false);
    for id in &private {
        assert!(!shown.contains(id), "private {id} shown anonymously");
    }
    let first = &body["companions"][0];
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.len(),
        7,
        "minimal fields only: id, name, src, userName, categoryId, isFree, messageCount: {keys:?}"
    );
    // Platform companions come first.
    assert_eq!(first["userName"], "GCBB");

    // The page was stored for everyone, and the second request is served from memory.
    assert!(
        is_page_cached(&app, &Audience::Anonymous, 50).await,
        "the page was not cached"
    );
    let resp = app.get("/api/dashboard/prefetch?pageSize=50").send().await;
    assert_eq!(resp.headers["x-cache"], "memory");
}

#[tokio::test]
async fn a_signed_in_user_sees_their_own_private_companions_and_never_anothers() {
    let app = demo_app().await;
    let own_private = ids_where(
        &app,
        "SELECT id FROM \"Companion\" WHERE private AND \"userId\" = 'user_demo_1'",
    )
    .await;
    let others_private = ids_where(
        &app,
        "SELECT id FROM \"Companion\" WHERE private AND \"userId\" <> 'user_demo_1'",
    )
    .await;
    assert!(!own_private.is_empty() && !others_private.is_empty());

    let resp = app
        .get("/api/dashboard/prefetch?pageSize=50")
        .signed_in("user_demo_1")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["cache-control"], "private, no-store");
    assert!(resp.headers.get("cdn-cache-control").is_none());
    let body = resp.json();
    let shown = companion_ids(&body);
    for id in &own_private {
        assert!(shown.contains(id), "own private {id} missing");
    }
    for id in &others_private {
        assert!(!shown.contains(id), "another user's private {id} shown");
    }
    let own = body["companions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == own_private[0].as_str())
        .unwrap();
    assert_eq!(own["private"], true);
    assert!(own["tokensBurned"].is_number());
    let public_count = ids_where(&app, "SELECT id FROM \"Companion\" WHERE NOT private")
        .await
        .len();
    assert_eq!(body["total"], (public_count + own_private.len()) as i64);
    // The page is cached under the viewer's own key, never where anonymous lookups go.
    let signed_in = Audience::SignedIn {
        user_id: "user_demo_1".into(),
    };
    assert!(is_page_cached(&app, &signed_in, 50).await);
    assert!(!is_page_cached(&app, &Audience::Anonymous, 50).await);

    // Another user never sees user_demo_1's private companions, even right after (cache).
    let body = app
        .get("/api/dashboard/prefetch?pageSize=50")
        .signed_in("user_demo_2")
        .send()
        .await
        .json();
    for id in &own_private {
        assert!(!companion_ids(&body).contains(id));
    }
}

#[tokio::test]
async fn a_request_with_any_credential_never_gets_public_cache_headers() {
    let app = demo_app().await;
    count_page_builds(&app).await;
    let url = "/api/dashboard/prefetch";
    let with_cookie = |cookie: &str| app.get(url).header("cookie", cookie).send();

    // An empty session cookie: anonymous data, but not publicly cacheable.
    let resp = with_cookie("theme=dark; __session=").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["cache-control"], "private, no-store");
    assert!(resp.headers.get("cdn-cache-control").is_none());

    // An invalid token is 401, never anonymous, never cacheable.
    for auth in ["Bearer not-a-token", "Basic dXNlcjpwdw=="] {
        let resp = app.get(url).header("authorization", auth).send().await;
        assert_eq!(resp.status, 401, "{auth}");
        assert_eq!(resp.headers["cache-control"], "no-store");
        assert_eq!(resp.json()["error"]["code"], "unauthorized");
    }

    // A cookie that isn't a session is no credential.
    let resp = with_cookie("theme=dark").await;
    assert_eq!(
        resp.headers["cache-control"],
        "public, max-age=0, must-revalidate"
    );
    // One page was built (for the cookie); the refused requests built nothing.
    assert_eq!(page_builds(&app).await, 1);
}

#[tokio::test]
async fn a_matching_etag_gets_304_without_a_body() {
    let app = demo_app().await;
    count_page_builds(&app).await;
    let resp = app.get("/api/dashboard/prefetch").send().await;
    let etag = resp.header("etag").to_owned();
    let resp = app
        .get("/api/dashboard/prefetch")
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(resp.status, StatusCode::NOT_MODIFIED);
    assert_eq!(resp.header("etag"), etag);
    assert!(resp.body.is_empty());

    let resp = app
        .get("/api/dashboard/prefetch")
        .header("if-none-match", "\"something-else\"")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    // Both answers came from the page built once.
    assert_eq!(page_builds(&app).await, 1);
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let app = demo_app().await;
    count_page_builds(&app).await;
    let long_q = "a".repeat(65);
    let cases = [
        ("page=0", "page"),
        ("page=abc", "page"),
        ("pageSize=1000", "pageSize"),
        (&*format!("q={long_q}"), "q"),
        ("q=%27%3B%20DROP%20TABLE%20%22Companion%22%3B%20--", "q"),
        ("q=%E2%80%AEevil", "q"),
        ("categoryId=1%20OR%201%3D1", "categoryId"),
        ("categoryId=%F0%9F%98%80", "categoryId"),
    ];
    for (query, param) in cases {
        let resp = app
            .get(&format!("/api/dashboard/prefetch?{query}"))
            .send()
            .await;
        assert_eq!(resp.status, 400, "{query}");
        let body = resp.json();
        assert_eq!(body["error"]["param"], param, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter");
    }
    // Nothing was harmed, and nothing was built: the input is refused before any query.
    assert_eq!(
        ids_where(&app, "SELECT id FROM \"Companion\"").await.len(),
        40
    );
    assert_eq!(page_builds(&app).await, 0);
}

#[tokio::test]
async fn an_unknown_category_is_200_with_an_empty_list() {
    let app = demo_app().await;
    let resp = app
        .get("/api/dashboard/prefetch?categoryId=no_such_category")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    let body = resp.json();
    assert_eq!(body["companions"], json!([]));
    assert_eq!(body["total"], 0);

    // A real category filters; a name search is case-insensitive.
    let body = app
        .get("/api/dashboard/prefetch?categoryId=cat_demo_01&pageSize=50")
        .send()
        .await
        .json();
    let in_category = body["companions"].as_array().unwrap();
    assert!(in_category.iter().all(|c| c["categoryId"] == "cat_demo_01"));
    let stored = app
        .count(
            "SELECT count(*) FROM \"Companion\" WHERE \"categoryId\" = 'cat_demo_01' AND NOT private",
        )
        .await;
    assert_eq!(
        in_category.len() as i64,
        stored,
        "every public one of the category"
    );
    let body = app.get("/api/dashboard/prefetch?q=ADA").send().await.json();
    assert_eq!(body["companions"][0]["name"], "Ada Lovelace");
    assert_eq!(body["total"], 1);
}

/// PATCH as the owner, then the very next dashboard request shows the new name.
async fn patch_then_dashboard_shows_the_change(cache: CacheKind) {
    let app = TestApp::builder().demo_data().cache(cache).start().await;
    // cmp_demo_01 is public and owned by user_demo_2 (see db::demo).
    let owner: String = app
        .pg
        .query_one(
            "SELECT \"userId\" FROM \"Companion\" WHERE id = 'cmp_demo_01'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let page = "/api/dashboard/prefetch?pageSize=50";
    for _ in 0..2 {
        let resp = app.get(page).send().await;
        assert_eq!(resp.status, 200);
    }
    let resp = app.get(page).send().await;
    assert_ne!(resp.headers["x-cache"], "miss", "the page was not cached");

    let resp = app
        .patch_json(
            "/api/companion/cmp_demo_01",
            &json!({"name": "Renamed Companion ✨"}),
        )
        .signed_in(&owner)
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["name"], "Renamed Companion ✨");
    assert_eq!(
        ids_where(
            &app,
            "SELECT name FROM \"Companion\" WHERE id = 'cmp_demo_01'"
        )
        .await,
        ["Renamed Companion ✨"]
    );

    let body = app.get(page).send().await.json();
    let shown = body["companions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "cmp_demo_01")
        .unwrap();
    assert_eq!(shown["name"], "Renamed Companion ✨");

    // Made private: gone from the anonymous dashboard at once.
    make_demo_01_private(&app, &owner).await;
    let body = app.get(page).send().await.json();
    assert!(!companion_ids(&body).contains(&"cmp_demo_01".to_owned()));
}

#[tokio::test]
async fn patch_then_dashboard_shows_the_new_name_with_the_memory_cache() {
    patch_then_dashboard_shows_the_change(CacheKind::Memory).await;
}

#[tokio::test]
async fn patch_then_dashboard_shows_the_new_name_with_native_redis() {
    patch_then_dashboard_shows_the_change(CacheKind::Redis).await;
}

#[tokio::test]
async fn patch_then_dashboard_shows_the_new_name_with_upstash_rest() {
    patch_then_dashboard_shows_the_change(CacheKind::Upstash).await;
}

#[tokio::test]
async fn patch_refuses_strangers_anonymous_callers_and_bad_input_and_stores_nothing() {
    let app = demo_app().await;
    let url = "/api/companion/cmp_demo_01";
    let snapshot =
        "SELECT name || '|' || private::text || '|' || \"categoryId\" FROM \"Companion\" ORDER BY id";
    let before = ids_where(&app, snapshot).await;

    // Not the owner: 404, as if it didn't exist.
    let resp = app
        .patch_json(url, &json!({"name": "Hijacked"}))
        .signed_in("user_stranger")
        .send()
        .await;
    assert_eq!(resp.status, 404);

    // Anonymous: 401.
    let resp = app
        .patch_json(url, &json!({"name": "Hijacked"}))
        .send()
        .await;
    assert_eq!(resp.status, 401);

    let owner = |request: TestRequest| request.signed_in("user_demo_2");
    let patch = || app.request(Method::PATCH, url);
    let cases: Vec<(TestRequest, u16, &str)> = vec![
        (
            owner(patch().body("application/json", "{\"name\": ")),
            400,
            "malformed_json",
        ),
        (
            owner(patch().body("text/plain", "{\"name\":\"x\"}")),
            415,
            "unsupported_media_type",
        ),
        (
            owner(patch().json(&json!({"name": "x".repeat(70_000)}))),
            413,
            "payload_too_large",
        ),
        (
            owner(patch().json(&json!({"userId": "user_demo_2"}))),
            400,
            "invalid_parameter",
        ),
        (
            owner(patch().json(&json!({"name": 42}))),
            400,
            "invalid_parameter",
        ),
        (
            owner(patch().json(&json!({"categoryId": "x'; DELETE FROM \"Companion\"; --"}))),
            400,
            "invalid_parameter",
        ),
        (
            owner(patch().json(&json!({"categoryId": "no_such_category"}))),
            400,
            "invalid_parameter",
        ),
        (
            owner(app.patch_json("/api/companion/does-not-exist", &json!({"name": "x"}))),
            404,
            "not_found",
        ),
        // An id that can't be one we issued is a 400 naming it, as on every route.
        (
            owner(app.patch_json("/api/companion/%27%3B--", &json!({"name": "x"}))),
            400,
            "invalid_parameter",
        ),
        (owner(app.get(url)), 405, "method_not_allowed"),
    ];
    for (request, status, code) in cases {
        let resp = request.send().await;
        assert_eq!(resp.status.as_u16(), status, "{code}");
        assert_eq!(resp.error_code(), code);
    }
    let after = ids_where(&app, snapshot).await;
    assert_eq!(before, after, "a refused request changed a companion");
}

#[tokio::test]
async fn the_cron_route_refuses_without_the_secret_and_reports_each_step_with_it() {
    let app = demo_app().await;
    let url = "/api/cron/refresh";
    let before = refresh_runs(&app).await;
    for auth in [None, Some("Bearer wrong"), Some(CRON_SECRET)] {
        let mut req = app.get(url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await;
        assert_eq!(resp.status, 401, "{auth:?}");
    }
    assert_eq!(refresh_runs(&app).await, before, "a refused call refreshed");
    let resp = app.get(url).bearer(CRON_SECRET).send().await;
    assert_eq!(resp.status, 200);
    let report = resp.json();
    assert_eq!(report["status"], "refreshed");
    let steps = json_strs(&report["steps"], "name");
    assert_eq!(
        steps,
        [
            "refreshReadModel",
            "bumpGeneration",
            "rebuildSnapshots",
            "drainPurgeOutbox",
            "drainReplyJournal"
        ]
    );
    // "all" plus each of the 8 demo categories.
    assert_eq!(report["steps"][2]["count"], 9);
    assert_eq!(refresh_runs(&app).await, before + 1);

    // The default page is now served from the static snapshot.
    let resp = app.get("/api/dashboard/prefetch").send().await;
    assert_eq!(resp.headers["x-cache"], "static");
}

#[tokio::test]
async fn a_cron_route_without_a_configured_secret_refuses_everything() {
    let app = TestApp::builder()
        .demo_data()
        .env("CRON_SECRET", "")
        .start()
        .await;
    let before = refresh_runs(&app).await;
    for auth in ["Bearer ", "Bearer undefined", "Bearer null"] {
        let resp = app
            .get("/api/cron/refresh")
            .header("authorization", auth)
            .send()
            .await;
        assert_eq!(resp.status, 401, "{auth}");
    }
    assert_eq!(refresh_runs(&app).await, before, "a refused call refreshed");
}

#[tokio::test]
async fn two_concurrent_cron_runs_refresh_once_and_the_other_is_skipped() {
    let app = TestApp::demo_with(CacheKind::Redis).start().await;
    let runs_before = refresh_runs(&app).await;
    // Hold the first refresh inside gcbb_refresh_dashboard: its log insert waits for our lock.
    let blocker = app.db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE \"DashboardRefreshLog\" IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let first = tokio::spawn(app.get("/api/cron/refresh").bearer(CRON_SECRET).send());
    // Wait until the first run is blocked on the lock, holding the job lock.
    let waiting = eventually(|| async {
        app.count(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND datname = current_database() AND query ILIKE '%gcbb_refresh_dashboard%'",
        )
        .await
            > 0
    })
    .await;
    assert!(waiting, "the first refresh never reached the lock");
    let second = app.refresh().await.json();
    assert_eq!(second["status"], "skipped", "{second}");
    blocker.batch_execute("COMMIT").await.unwrap();
    let first = first.await.unwrap().json();
    assert_eq!(first["status"], "refreshed", "{first}");
    assert_eq!(
        refresh_runs(&app).await,
        runs_before + 1,
        "exactly one run refreshed"
    );
}

#[tokio::test]
async fn with_redis_stopped_the_dashboard_is_served_from_postgres_marked_bypass() {
    let mut redis = OwnRedis::start().await;
    let app = TestApp::demo_with(CacheKind::RedisAt(redis.url()))
        .start()
        .await;
    let resp = app.get("/api/dashboard/prefetch?page=3").send().await;
    assert_eq!(resp.status, 200);
    let stored = redis.keys(&format!("{}:v1:dashboard:*", app.prefix)).await;
    assert!(!stored.is_empty(), "the page never reached Redis");
    redis.stop();
    // Past the L1's short life, every lookup reaches the stopped Redis.
    tokio::time::sleep(gcbb::cache::L1_TTL + std::time::Duration::from_millis(200)).await;
    for path in [
        "/api/dashboard/prefetch?page=3",
        "/api/dashboard/prefetch?page=2",
    ] {
        let resp = app.get(path).send().await;
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.headers["x-cache"], "bypass", "{path}");
        assert!(resp.json()["companions"].is_array());
    }
}

#[tokio::test]
async fn with_the_upstash_proxy_killed_the_dashboard_is_served_from_postgres_marked_bypass() {
    let mut app = TestApp::demo_with(CacheKind::Upstash).start().await;
    assert_eq!(app.get("/api/dashboard/prefetch").send().await.status, 200);
    assert!(
        !app.redis_keys("v1:dashboard:*").await.is_empty(),
        "the page never reached Redis through the proxy"
    );
    app.kill_upstash_proxy();
    let resp = app.get("/api/dashboard/prefetch?page=3").send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["x-cache"], "bypass");
}

#[tokio::test]
async fn a_slow_count_gives_the_page_on_time_with_an_estimated_total() {
    let app = demo_app().await;
    make_the_count_slow(&app).await;
    let resp = app.get("/api/dashboard/prefetch").send().await;
    assert_eq!(resp.status, 200);
    let body = resp.json();
    assert_eq!(body["totalIsEstimate"], true);
    let public = ids_where(&app, "SELECT id FROM \"Companion\" WHERE NOT private")
        .await
        .len();
    assert_eq!(
        body["total"], public as i64,
        "the estimate is the refreshed per-category count"
    );
    assert_eq!(body["companions"].as_array().unwrap().len(), 10);
    // The cancelled count left no query running.
    let running = app
        .count(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE '%gcbb_count_dashboard%' \
             AND state = 'active' AND datname = current_database() \
             AND pid <> pg_backend_pid()",
        )
        .await;
    assert_eq!(running, 0);
}

#[tokio::test]
async fn a_hundred_concurrent_cold_requests_for_one_page_build_it_once() {
    let app = demo_app().await;
    count_page_builds(&app).await;
    let requests = (0..100).map(|_| app.get("/api/dashboard/prefetch?page=2&pageSize=7").send());
    let responses = futures_util::future::join_all(requests).await;
    let mut etags = std::collections::HashSet::new();
    for r in responses {
        assert_eq!(r.status, 200);
        etags.insert(r.header("etag").to_owned());
    }
    assert_eq!(etags.len(), 1);
    assert_eq!(page_builds(&app).await, 1);
}

#[tokio::test]
async fn making_a_companion_private_deletes_every_cached_dashboard_page_from_redis() {
    // The pages aren't deleted one by one any more: every cached page carries the privacy
    // epoch in its key, and the PATCH bumps the epoch, so no page cached before it is read
    // again (they expire on their own). What this proves: after the PATCH, pages served from
    // a Redis full of entries listing the companion don't list it.
    let app = TestApp::demo_with(CacheKind::Redis).start().await;
    let pages = [
        "/api/dashboard/prefetch?pageSize=50",
        "/api/dashboard/prefetch?pageSize=50&categoryId=cat_demo_01",
        "/api/dashboard/prefetch?page=2&pageSize=20",
    ];
    for path in pages {
        assert_eq!(app.get(path).send().await.status, 200);
    }
    let cached = app.redis_keys("v1:dashboard:page:*").await;
    assert!(cached.len() >= 3, "{cached:?}");
    let listed = |body: &Value| {
        body["companions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "cmp_demo_01")
    };
    let before = app.get(pages[0]).send().await.json();
    assert!(listed(&before), "the demo companion is listed before");

    make_demo_01_private(&app, "user_demo_2").await;
    for path in pages {
        let body = app.get(path).send().await.json();
        assert!(
            !listed(&body),
            "{path} still lists the companion made private"
        );
    }
}

/// cmp_demo_01 made private by its owner, `owner`: answered 200 and stored.
async fn make_demo_01_private(app: &TestApp, owner: &str) {
    let resp = app
        .patch_json("/api/companion/cmp_demo_01", &json!({"private": true}))
        .signed_in(owner)
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        app.count("SELECT count(*) FROM \"Companion\" WHERE id = 'cmp_demo_01' AND private")
            .await,
        1
    );
}

/// Makes `gcbb_count_dashboard` slower than any count timeout: the server sleeps inside it.
async fn make_the_count_slow(app: &TestApp) {
    app.pg
        .batch_execute(
            "CREATE OR REPLACE FUNCTION gcbb_count_dashboard(p_category_id text, p_name_contains text) \
             RETURNS bigint LANGUAGE sql VOLATILE AS $$ SELECT pg_sleep(5)::text::bigint $$; \
             CREATE OR REPLACE FUNCTION gcbb_count_dashboard_prefix(p_category_id text, p_prefix text) \
             RETURNS bigint LANGUAGE sql VOLATILE AS $$ SELECT pg_sleep(5)::text::bigint $$",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_search_that_finds_nothing_never_reports_the_categorys_total_even_when_the_count_is_slow()
{
    let app = demo_app().await;
    make_the_count_slow(&app).await;
    for path in [
        "/api/dashboard/prefetch?q=zzzz",
        "/api/dashboard/prefetch?q=zzzz&categoryId=cat_demo_01",
    ] {
        let resp = app.get(path).send().await;
        assert_eq!(resp.status, 200, "{path}");
        let body = resp.json();
        assert_eq!(body["companions"], json!([]), "{path}");
        // The empty first page proves there is nothing: an exact zero, not an estimate.
        assert_eq!(body["total"], 0, "{path}: {body}");
        assert_eq!(body["totalIsEstimate"], false, "{path}: {body}");
    }
}

#[tokio::test]
async fn a_slow_search_count_is_estimated_from_the_search_never_from_the_category() {
    let app = demo_app().await;
    let public = app
        .count("SELECT count(*) FROM \"Companion\" WHERE NOT private")
        .await;
    // A one-letter search: names starting with it (the read model's prefix index).
    let matching = app
        .count(
            "SELECT count(*) FROM \"Companion\" WHERE NOT private AND lower(left(name, 1)) = 's'",
        )
        .await;
    assert!(
        matching > 5 && matching < public,
        "the demo data has more than a page of 5 names starting with `s`, and fewer than all: {matching}"
    );
    make_the_count_slow(&app).await;

    // A short last page: the total is what the pages hold, exactly.
    let body = app
        .get("/api/dashboard/prefetch?q=S&pageSize=50")
        .send()
        .await
        .json();
    let listed = body["companions"].as_array().unwrap().len() as i64;
    assert_eq!(listed, matching);
    assert_eq!(body["total"], matching, "{body}");
    assert_eq!(body["totalIsEstimate"], false);

    // A full page: an estimate of the matches, at least the page, at most every companion.
    let body = app
        .get("/api/dashboard/prefetch?q=s&pageSize=5")
        .send()
        .await
        .json();
    assert_eq!(body["companions"].as_array().unwrap().len(), 5);
    assert_eq!(body["totalIsEstimate"], true);
    let total = body["total"].as_i64().unwrap();
    assert!((5..=public).contains(&total), "{body}");
}

/// Trigram entries waiting in the GIN pending list of the read model's name index (every search
/// reads them one by one until they are merged).
async fn pending_trigram_entries(app: &TestApp) -> i64 {
    app.pg
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        .await
        .unwrap();
    app.count(
        "SELECT pending_tuples::bigint FROM pgstatginindex('\"CompanionDashboard_name_trgm_idx\"')",
    )
    .await
}

#[tokio::test]
async fn the_cron_refresh_leaves_no_pending_list_in_the_search_index() {
    let app = demo_app().await;
    // A day of chat: every public companion's message count changes, so a concurrent refresh
    // rewrites every row of the read model.
    let chat = |round: &'static str| {
        format!(
            "INSERT INTO \"Message\" (\"id\", \"role\", \"content\", \"createdAt\", \"updatedAt\", \
             \"companionId\", \"userId\") \
             SELECT 'msg_test_{round}_' || id, 'user', 'hi', now(), now(), id, 'user_demo_1' \
             FROM \"Companion\" WHERE NOT private"
        )
    };
    app.pg.batch_execute(&chat("one")).await.unwrap();
    // Refreshed the way it was before: the read model's changed rows queue in the pending list.
    app.pg
        .batch_execute("REFRESH MATERIALIZED VIEW CONCURRENTLY \"CompanionDashboard\"")
        .await
        .unwrap();
    assert!(
        pending_trigram_entries(&app).await > 0,
        "a concurrent refresh queues its changes in the pending list"
    );

    app.pg.batch_execute(&chat("two")).await.unwrap();
    let resp = app.refresh().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["status"], "refreshed");
    assert_eq!(pending_trigram_entries(&app).await, 0);
    // And searches see the refreshed counts.
    let body = app.get("/api/dashboard/prefetch?q=ada").send().await.json();
    assert_eq!(body["companions"][0]["name"], "Ada Lovelace");
    assert!(body["companions"][0]["messageCount"].as_i64().unwrap() >= 2);
}
