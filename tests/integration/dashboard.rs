//! The dashboard, the companion PATCH and the cron refresh, through a real `gcbb dev` process on
//! a fresh database with the demo data, on each cache backend (memory, native Redis, Upstash
//! REST through a real `gcbb upstash-proxy`).

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{fresh_db, unique, TestDb};
use crate::support::{binary, free_port, Server};
use crate::tokens::{clerk_env, token_for};

const CRON_SECRET: &str = "cron-secret-for-tests";

/// The cache a test's server uses.
enum Backend {
    Memory,
    Redis { url: String },
    Upstash { proxy: Server, token: String },
}

impl Backend {
    async fn upstash(redis_url: &str) -> Backend {
        let port = free_port();
        let token = unique("tok");
        let mut cmd = binary(env!("CARGO_BIN_EXE_gcbb"));
        cmd.args([
            "upstash-proxy",
            "--redis",
            redis_url,
            "--token",
            &token,
            "--port",
            &port.to_string(),
        ]);
        Backend::Upstash {
            proxy: Server::start(cmd, port).await,
            token,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Backend::Memory => vec![],
            Backend::Redis { url } => vec![("REDIS_URL", url.clone())],
            Backend::Upstash { proxy, token } => vec![
                ("UPSTASH_REDIS_REST_URL", proxy.base.clone()),
                ("UPSTASH_REDIS_REST_TOKEN", token.clone()),
            ],
        }
    }
}

/// A fresh database with the demo data and a refreshed read model.
async fn demo_db() -> TestDb {
    let db = fresh_db().await;
    let client = db.client().await;
    gcbb_cli::demo::insert_demo_data_if_empty(&client, "system")
        .await
        .unwrap();
    gcbb::db::read_model::refresh_read_model(&client, "system")
        .await
        .unwrap();
    db
}

async fn start(db: &TestDb, backend: &Backend, extra: &[(&str, &str)]) -> Server {
    let port = free_port();
    let mut cmd = binary(env!("CARGO_BIN_EXE_gcbb"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["dev", "--no-seed", "--port", &port.to_string()])
        .env("DATABASE_URL", &db.url)
        .env("CACHE_KEY_PREFIX", unique("t"))
        .env("CRON_SECRET", CRON_SECRET)
        .env("RUST_LOG", "warn,gcbb::dashboard=debug");
    for (k, v) in clerk_env() {
        cmd.env(k, v);
    }
    for (k, v) in backend.env() {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Server::start(cmd, port).await
}

async fn get(server: &Server, path: &str) -> reqwest::Response {
    reqwest::get(server.url(path)).await.unwrap()
}

async fn get_as(server: &Server, path: &str, user: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token_for(user))
        .send()
        .await
        .unwrap()
}

async fn ids_where(db: &TestDb, sql: &str) -> Vec<String> {
    let client = db.client().await;
    client
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

#[tokio::test]
async fn anonymous_responses_never_contain_private_companions_instructions_or_configs() {
    let db = demo_db().await;
    let server = start(&db, &Backend::Memory, &[]).await;
    let private = ids_where(&db, "SELECT id FROM \"Companion\" WHERE private").await;
    assert!(!private.is_empty());

    let resp = get(&server, "/api/dashboard/prefetch?pageSize=50").await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["cache-control"], "public, max-age=0, must-revalidate");
    assert_eq!(
        h["cdn-cache-control"],
        "public, s-maxage=600, stale-while-revalidate=86400"
    );
    assert!(h["etag"].to_str().unwrap().starts_with('"'));
    assert_eq!(h["x-cache"], "miss");
    assert!(h["server-timing"].to_str().unwrap().contains("total;dur="));
    let text = resp.text().await.unwrap();
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
    let public_count = ids_where(&db, "SELECT id FROM \"Companion\" WHERE NOT private")
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

    // The second request is served from memory.
    let resp = get(&server, "/api/dashboard/prefetch?pageSize=50").await;
    assert_eq!(resp.headers()["x-cache"], "memory");
}

#[tokio::test]
async fn a_signed_in_user_sees_their_own_private_companions_and_never_anothers() {
    let db = demo_db().await;
    let server = start(&db, &Backend::Memory, &[]).await;
    let own_private = ids_where(
        &db,
        "SELECT id FROM \"Companion\" WHERE private AND \"userId\" = 'user_demo_1'",
    )
    .await;
    let others_private = ids_where(
        &db,
        "SELECT id FROM \"Companion\" WHERE private AND \"userId\" <> 'user_demo_1'",
    )
    .await;
    assert!(!own_private.is_empty() && !others_private.is_empty());

    let resp = get_as(
        &server,
        "/api/dashboard/prefetch?pageSize=50",
        "user_demo_1",
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    assert!(resp.headers().get("cdn-cache-control").is_none());
    let body: Value = resp.json().await.unwrap();
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
    let public_count = ids_where(&db, "SELECT id FROM \"Companion\" WHERE NOT private")
        .await
        .len();
    assert_eq!(body["total"], (public_count + own_private.len()) as i64);

    // Another user never sees user_demo_1's private companions, even right after (cache).
    let body: Value = get_as(
        &server,
        "/api/dashboard/prefetch?pageSize=50",
        "user_demo_2",
    )
    .await
    .json()
    .await
    .unwrap();
    for id in &own_private {
        assert!(!companion_ids(&body).contains(id));
    }
}

#[tokio::test]
async fn a_request_with_any_credential_never_gets_public_cache_headers() {
    let db = demo_db().await;
    let server = start(&db, &Backend::Memory, &[]).await;
    let http = reqwest::Client::new();
    let url = server.url("/api/dashboard/prefetch");

    // An empty session cookie: anonymous data, but not publicly cacheable.
    let resp = http
        .get(&url)
        .header("cookie", "theme=dark; __session=")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    assert!(resp.headers().get("cdn-cache-control").is_none());

    // An invalid token is 401, never anonymous, never cacheable.
    for auth in ["Bearer not-a-token", "Basic dXNlcjpwdw=="] {
        let resp = http
            .get(&url)
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{auth}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }

    // A cookie that isn't a session is no credential.
    let resp = http
        .get(&url)
        .header("cookie", "theme=dark")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["cache-control"],
        "public, max-age=0, must-revalidate"
    );
}

#[tokio::test]
async fn a_matching_etag_gets_304_without_a_body() {
    let db = demo_db().await;
    let server = start(&db, &Backend::Memory, &[]).await;
    let resp = get(&server, "/api/dashboard/prefetch").await;
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let resp = reqwest::Client::new()
        .get(server.url("/api/dashboard/prefetch"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    assert!(resp.bytes().await.unwrap().is_empty());

    let resp = reqwest::Client::new()
        .get(server.url("/api/dashboard/prefetch"))
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let db = demo_db().await;
    let server = start(&db, &Backend::Memory, &[]).await;
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
        let resp = get(&server, &format!("/api/dashboard/prefetch?{query}")).await;
        assert_eq!(resp.status(), 400, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["param"], param, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter");
    }
    // Nothing was harmed.
    assert_eq!(
        ids_where(&db, "SELECT id FROM \"Companion\"").await.len(),
        40
    );
}

#[tokio::test]
async fn an_unknown_category_is_200_with_an_empty_list() {
    let db = demo_db().await;
    let server = start(&db, &Backend::Memory, &[]).await;
    let resp = get(
        &server,
        "/api/dashboard/prefetch?categoryId=no_such_category",
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["companions"], json!([]));
    assert_eq!(body["total"], 0);

    // A real category filters; a name search is case-insensitive.
    let body: Value = get(
        &server,
        "/api/dashboard/prefetch?categoryId=cat_demo_01&pageSize=50",
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(body["companions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["categoryId"] == "cat_demo_01"));
    let body: Value = get(&server, "/api/dashboard/prefetch?q=ADA")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["companions"][0]["name"], "Ada Lovelace");
    assert_eq!(body["total"], 1);
}

/// PATCH as the owner, then the very next dashboard request shows the new name.
async fn patch_then_dashboard_shows_the_change(backend: Backend) {
    let db = demo_db().await;
    let server = start(&db, &backend, &[]).await;
    // cmp_demo_01 is public and owned by user_demo_2 (see db::demo).
    let owner: String = db
        .client()
        .await
        .query_one(
            "SELECT \"userId\" FROM \"Companion\" WHERE id = 'cmp_demo_01'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let page = "/api/dashboard/prefetch?pageSize=50";
    for _ in 0..2 {
        let resp = get(&server, page).await;
        assert_eq!(resp.status(), 200);
    }
    let resp = get(&server, page).await;
    assert_ne!(resp.headers()["x-cache"], "miss", "the page was not cached");

    let resp = reqwest::Client::new()
        .patch(server.url("/api/companion/cmp_demo_01"))
        .bearer_auth(token_for(&owner))
        .json(&json!({"name": "Renamed Companion ✨"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let updated: Value = resp.json().await.unwrap();
    assert_eq!(updated["name"], "Renamed Companion ✨");

    let body: Value = get(&server, page).await.json().await.unwrap();
    let shown = body["companions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "cmp_demo_01")
        .unwrap();
    assert_eq!(shown["name"], "Renamed Companion ✨");

    // Made private: gone from the anonymous dashboard at once.
    let resp = reqwest::Client::new()
        .patch(server.url("/api/companion/cmp_demo_01"))
        .bearer_auth(token_for(&owner))
        .json(&json!({"private": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = get(&server, page).await.json().await.unwrap();
    assert!(!companion_ids(&body).contains(&"cmp_demo_01".to_owned()));
}

#[tokio::test]
async fn patch_then_dashboard_shows_the_new_name_with_the_memory_cache() {
    patch_then_dashboard_shows_the_change(Backend::Memory).await;
}

#[tokio::test]
async fn patch_then_dashboard_shows_the_new_name_with_native_redis() {
    patch_then_dashboard_shows_the_change(Backend::Redis {
        url: "redis://127.0.0.1:6379".into(),
    })
    .await;
}

#[tokio::test]
async fn patch_then_dashboard_shows_the_new_name_with_upstash_rest() {
    patch_then_dashboard_shows_the_change(Backend::upstash("redis://127.0.0.1:6379").await).await;
}

#[tokio::test]
async fn patch_refuses_strangers_anonymous_callers_and_bad_input_and_stores_nothing() {
    let db = demo_db().await;
    let server = start(&db, &Backend::Memory, &[]).await;
    let http = reqwest::Client::new();
    let url = server.url("/api/companion/cmp_demo_01");
    let before: Vec<String> = ids_where(
        &db,
        "SELECT name || '|' || private::text || '|' || \"categoryId\" FROM \"Companion\" ORDER BY id",
    )
    .await;

    // Not the owner: 404, as if it didn't exist.
    let resp = http
        .patch(&url)
        .bearer_auth(token_for("user_stranger"))
        .json(&json!({"name": "Hijacked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Anonymous: 401.
    let resp = http
        .patch(&url)
        .json(&json!({"name": "Hijacked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let owner = token_for("user_demo_2");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.patch(&url)
                .bearer_auth(&owner)
                .header("content-type", "application/json")
                .body("{\"name\": "),
            400,
            "malformed_json",
        ),
        (
            http.patch(&url)
                .bearer_auth(&owner)
                .header("content-type", "text/plain")
                .body("{\"name\":\"x\"}"),
            415,
            "unsupported_media_type",
        ),
        (
            http.patch(&url)
                .bearer_auth(&owner)
                .json(&json!({"name": "x".repeat(70_000)})),
            413,
            "payload_too_large",
        ),
        (
            http.patch(&url)
                .bearer_auth(&owner)
                .json(&json!({"userId": "user_demo_2"})),
            400,
            "invalid_parameter",
        ),
        (
            http.patch(&url)
                .bearer_auth(&owner)
                .json(&json!({"name": 42})),
            400,
            "invalid_parameter",
        ),
        (
            http.patch(&url)
                .bearer_auth(&owner)
                .json(&json!({"categoryId": "x'; DELETE FROM \"Companion\"; --"})),
            400,
            "invalid_parameter",
        ),
        (
            http.patch(&url)
                .bearer_auth(&owner)
                .json(&json!({"categoryId": "no_such_category"})),
            400,
            "invalid_parameter",
        ),
        (
            http.patch(server.url("/api/companion/does-not-exist"))
                .bearer_auth(&owner)
                .json(&json!({"name": "x"})),
            404,
            "not_found",
        ),
        // An id that can't be one we issued is a 400 naming it, as on every route.
        (
            http.patch(server.url("/api/companion/%27%3B--"))
                .bearer_auth(&owner)
                .json(&json!({"name": "x"})),
            400,
            "invalid_parameter",
        ),
        (
            http.get(&url).bearer_auth(&owner),
            405,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{code}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code);
    }
    let after: Vec<String> = ids_where(
        &db,
        "SELECT name || '|' || private::text || '|' || \"categoryId\" FROM \"Companion\" ORDER BY id",
    )
    .await;
    assert_eq!(before, after, "a refused request changed a companion");
}

#[tokio::test]
async fn the_cron_route_refuses_without_the_secret_and_reports_each_step_with_it() {
    let db = demo_db().await;
    let server = start(&db, &Backend::Memory, &[]).await;
    let http = reqwest::Client::new();
    let url = server.url("/api/cron/refresh");
    for auth in [None, Some("Bearer wrong"), Some(CRON_SECRET)] {
        let mut req = http.get(&url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
    }
    let before: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM \"DashboardRefreshLog\"", &[])
        .await
        .unwrap()
        .get(0);
    let resp = http
        .get(&url)
        .bearer_auth(CRON_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["status"], "refreshed");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["refreshReadModel", "bumpGeneration", "rebuildSnapshots"]
    );
    // "all" plus each of the 8 demo categories.
    assert_eq!(report["steps"][2]["count"], 9);
    let after: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM \"DashboardRefreshLog\"", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, before + 1);

    // The default page is now served from the static snapshot.
    let resp = get(&server, "/api/dashboard/prefetch").await;
    assert_eq!(resp.headers()["x-cache"], "static");
}

#[tokio::test]
async fn a_cron_route_without_a_configured_secret_refuses_everything() {
    let db = demo_db().await;
    let port = free_port();
    let mut cmd = binary(env!("CARGO_BIN_EXE_gcbb"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["dev", "--no-seed", "--port", &port.to_string()])
        .env("DATABASE_URL", &db.url);
    let server = Server::start(cmd, port).await;
    for auth in ["Bearer ", "Bearer undefined", "Bearer null"] {
        let resp = reqwest::Client::new()
            .get(server.url("/api/cron/refresh"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{auth}");
    }
}

#[tokio::test]
async fn two_concurrent_cron_runs_refresh_once_and_the_other_is_skipped() {
    let db = demo_db().await;
    let server = start(
        &db,
        &Backend::Redis {
            url: "redis://127.0.0.1:6379".into(),
        },
        &[],
    )
    .await;
    let runs_before: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM \"DashboardRefreshLog\"", &[])
        .await
        .unwrap()
        .get(0);
    // Hold the first refresh inside gcbb_refresh_dashboard: its log insert waits for our lock.
    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE \"DashboardRefreshLog\" IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let first = tokio::spawn({
        let req = http
            .get(server.url("/api/cron/refresh"))
            .bearer_auth(CRON_SECRET);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    });
    // Wait until the first run is blocked on the lock, holding the job lock.
    let watcher = db.client().await;
    let mut waiting = false;
    for _ in 0..200 {
        let n: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query ILIKE '%gcbb_refresh_dashboard%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(waiting, "the first refresh never reached the lock");
    let second: Value = http
        .get(server.url("/api/cron/refresh"))
        .bearer_auth(CRON_SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["status"], "skipped", "{second}");
    blocker.batch_execute("COMMIT").await.unwrap();
    let first = first.await.unwrap();
    assert_eq!(first["status"], "refreshed", "{first}");
    let runs: i64 = watcher
        .query_one("SELECT count(*) FROM \"DashboardRefreshLog\"", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, runs_before + 1, "exactly one run refreshed");
}

/// A private Redis server on its own port, so a test can really stop it.
struct OwnRedis {
    port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        OwnRedis { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn with_redis_stopped_the_dashboard_is_served_from_postgres_marked_bypass() {
    let db = demo_db().await;
    let mut redis = OwnRedis::start().await;
    let server = start(&db, &Backend::Redis { url: redis.url() }, &[]).await;
    let resp = get(&server, "/api/dashboard/prefetch?page=3").await;
    assert_eq!(resp.status(), 200);
    redis.stop();
    // Past the L1's short life, every lookup reaches the stopped Redis.
    tokio::time::sleep(gcbb::cache::L1_TTL + std::time::Duration::from_millis(200)).await;
    for path in [
        "/api/dashboard/prefetch?page=3",
        "/api/dashboard/prefetch?page=2",
    ] {
        let resp = get(&server, path).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["x-cache"], "bypass", "{path}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["companions"].is_array());
    }
}

#[tokio::test]
async fn with_the_upstash_proxy_killed_the_dashboard_is_served_from_postgres_marked_bypass() {
    let db = demo_db().await;
    let backend = Backend::upstash("redis://127.0.0.1:6379").await;
    let server = start(&db, &backend, &[]).await;
    assert_eq!(get(&server, "/api/dashboard/prefetch").await.status(), 200);
    let Backend::Upstash { proxy, .. } = backend else {
        unreachable!()
    };
    drop(proxy);
    let resp = get(&server, "/api/dashboard/prefetch?page=3").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cache"], "bypass");
}

#[tokio::test]
async fn a_slow_count_gives_the_page_on_time_with_an_estimated_total() {
    let db = demo_db().await;
    // Make the count really slow: the server sleeps inside it.
    db.client()
        .await
        .batch_execute(
            "CREATE OR REPLACE FUNCTION gcbb_count_dashboard(p_category_id text, p_name_contains text) \
             RETURNS bigint LANGUAGE sql VOLATILE AS $$ SELECT pg_sleep(5)::text::bigint $$",
        )
        .await
        .unwrap();
    let server = start(&db, &Backend::Memory, &[]).await;
    let resp = get(&server, "/api/dashboard/prefetch").await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["totalIsEstimate"], true);
    let public = ids_where(&db, "SELECT id FROM \"Companion\" WHERE NOT private")
        .await
        .len();
    assert_eq!(
        body["total"], public as i64,
        "the estimate is the refreshed per-category count"
    );
    assert_eq!(body["companions"].as_array().unwrap().len(), 10);
    // The cancelled count left no query running.
    let running: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE '%gcbb_count_dashboard%' \
             AND state = 'active' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 0);
}

#[tokio::test]
async fn a_hundred_concurrent_cold_requests_for_one_page_build_it_once() {
    let db = demo_db().await;
    let server = start(&db, &Backend::Memory, &[]).await;
    let http = reqwest::Client::new();
    let requests = (0..100).map(|_| {
        let req = http.get(server.url("/api/dashboard/prefetch?page=2&pageSize=7"));
        async move { req.send().await.unwrap() }
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut etags = std::collections::HashSet::new();
    for r in responses {
        assert_eq!(r.status(), 200);
        etags.insert(r.headers()["etag"].to_str().unwrap().to_owned());
    }
    assert_eq!(etags.len(), 1);
    let builds = server.output().matches("dashboard page built").count();
    assert_eq!(builds, 1, "{}", server.output());
}

#[tokio::test]
async fn making_a_companion_private_deletes_every_cached_dashboard_page_from_redis() {
    // The pages aren't deleted one by one any more: every cached page carries the privacy
    // epoch in its key, and the PATCH bumps the epoch, so no page cached before it is read
    // again (they expire on their own). What this proves: after the PATCH, pages served from
    // a Redis full of entries listing the companion don't list it.
    let db = demo_db().await;
    let prefix = unique("t");
    let server = start(
        &db,
        &Backend::Redis {
            url: "redis://127.0.0.1:6379".into(),
        },
        &[("CACHE_KEY_PREFIX", &prefix)],
    )
    .await;
    let pages = [
        "/api/dashboard/prefetch?pageSize=50",
        "/api/dashboard/prefetch?pageSize=50&categoryId=cat_demo_01",
        "/api/dashboard/prefetch?page=2&pageSize=20",
    ];
    for path in pages {
        assert_eq!(get(&server, path).await.status(), 200);
    }
    let redis = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let pattern = format!("{prefix}:v1:dashboard:page:*");
    let cached: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(cached.len() >= 3, "{cached:?}");
    let listed = |body: &Value| {
        body["companions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "cmp_demo_01")
    };
    let before: Value = get(&server, pages[0]).await.json().await.unwrap();
    assert!(listed(&before), "the demo companion is listed before");

    let resp = reqwest::Client::new()
        .patch(server.url("/api/companion/cmp_demo_01"))
        .bearer_auth(token_for("user_demo_2"))
        .json(&json!({"private": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for path in pages {
        let body: Value = get(&server, path).await.json().await.unwrap();
        assert!(
            !listed(&body),
            "{path} still lists the companion made private"
        );
    }
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&left)
        .arg(format!("{prefix}:v1:gen:dashboard"))
        .arg(format!("{prefix}:v1:gen:botreply"))
        .query_async(&mut conn)
        .await
        .unwrap();
}
