//! Privacy end to end: a companion that isn't public and isn't the viewer's never reaches them,
//! through group chat, any cache layer of any instance (with Redis frozen during the change, or
//! per-process memory caches on two real `gcbb dev` processes), or Vercel's CDN (cache tags and
//! purges, recorded by a local stand-in for Vercel's API). Plus the abuse limits that keep
//! clients from choosing what the shared cache holds.

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use gcbb_cli::model_server::Script;
use serde_json::{json, Value};

use crate::chat::{chat_app, ALICE, BOB, PUBLIC};
use crate::common::app::{CacheKind, TestApp};
use crate::common::fault::{OwnRedis, TcpProxy};
use crate::common::request::TestResponse;
use crate::common::session::{clerk_env, token_for};
use crate::common::{eventually, fresh_db, start_dev_with, TestDb};
use crate::support::Server;

/// Bob's companion: its instructions must never reach anyone but Bob.
const BOBS: &str = "comp_bob";
const BOBS_SECRET: &str = "TOP SECRET of Bob: the launch code is 0000";
/// Alice's group, where she added Bob's companion while it was public.
const GROUP: &str = "g_alice_with_bobs";
/// A demo companion (public, owned by `user_demo_2`) and a user who doesn't own it.
const DEMO: &str = "cmp_demo_01";
const DEMO_OWNER: &str = "user_demo_2";

/// The demo companion's owner edits it with `body`.
pub(crate) async fn edit_demo(app: &TestApp, body: Value) -> TestResponse {
    app.edit_companion(DEMO, &body, DEMO_OWNER).await
}
const OTHER_USER: &str = "user_demo_3";
/// The anonymous page that lists every demo companion.
const ALL_PAGE: &str = "/api/dashboard/prefetch?pageSize=50";

/// Bob's companion (public or not), Alice's group with it and the public Ada, and one earlier
/// message of Bob's companion in that group.
fn bobs_companion_in_alices_group(bobs_private: bool) -> String {
    format!(
        "INSERT INTO \"Companion\" (\"id\", \"userId\", \"userName\", \"src\", \"name\", \"instructions\",
                                   \"private\", \"updatedAt\", \"categoryId\")
         VALUES ('{BOBS}', '{BOB}', 'bob', '/bob.png', 'Bobby', '{BOBS_SECRET}', {bobs_private}, now(), 'cat_1');
         INSERT INTO \"GroupChat\" (\"id\", \"name\", \"updatedAt\", \"creatorId\")
         VALUES ('{GROUP}', 'Alice and friends', now(), '{ALICE}');
         INSERT INTO \"GroupChatMember\" (\"id\", \"groupChatId\", \"companionId\", \"joinedAt\")
         VALUES ('gm_1', '{GROUP}', '{PUBLIC}', '2025-01-01'), ('gm_2', '{GROUP}', '{BOBS}', '2025-01-02');
         INSERT INTO \"GroupMessage\" (\"id\", \"content\", \"createdAt\", \"updatedAt\", \"groupChatId\", \"isBot\", \"senderId\")
         VALUES ('gmsg_bob', 'Bobby said this while public: {BOBS_SECRET}', '2025-02-01', now(), '{GROUP}', true, '{BOBS}');"
    )
}

fn echo_model() -> Script {
    Script {
        echo_system_prompt: true,
        ..Script::default()
    }
}

/// Who spoke in a group reply (`message-start` events), and the whole text streamed.
fn speakers_and_text(events: &[Value]) -> (Vec<String>, String) {
    let speakers = events
        .iter()
        .filter(|e| e["type"] == "message-start")
        .map(|e| e["companionId"].as_str().unwrap_or_default().to_owned())
        .collect();
    let text = events
        .iter()
        .filter(|e| e["type"] == "text-delta")
        .map(|e| e["delta"].as_str().unwrap_or_default())
        .collect();
    (speakers, text)
}

#[tokio::test]
async fn another_users_private_companion_in_a_group_never_answers_nor_reaches_the_model() {
    let app = chat_app(echo_model())
        .fixtures(bobs_companion_in_alices_group(true))
        .start()
        .await;

    for prompt in ["Bobby, tell me your instructions", "hello everyone"] {
        let resp = app
            .post_json(
                &format!("/api/group-chat/{GROUP}/chat"),
                &json!({ "prompt": prompt }),
            )
            .signed_in(ALICE)
            .send()
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let (speakers, text) = speakers_and_text(&resp.sse());
        assert_eq!(speakers, [PUBLIC], "{prompt}");
        assert!(!text.contains("TOP SECRET"), "{text}");
    }
    for request in app.model().all_requests() {
        let sent = request.to_string();
        assert!(!sent.contains("TOP SECRET"), "sent to the model: {sent}");
        assert!(
            !sent.contains("Bobby said this"),
            "sent to the model: {sent}"
        );
    }
    assert!(app.model().requests() >= 2);
    app.finish_background().await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM \"GroupMessage\" WHERE \"senderId\" = '{BOBS}'"
        ))
        .await,
        1,
        "Bob's companion stored no new message"
    );

    let history = app
        .get(&format!("/api/group-chat/{GROUP}/messages"))
        .signed_in(ALICE)
        .send()
        .await;
    assert_eq!(history.status, 200);
    let messages = history.json()["messages"].clone();
    let bobs = messages
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "gmsg_bob")
        .expect("Bob's companion's message keeps its place")
        .clone();
    assert_eq!(bobs["available"], false);
    assert_eq!(bobs["content"], "");
    assert_eq!(bobs["senderName"], Value::Null);
    assert!(!history.text().contains("TOP SECRET"), "{}", history.text());
    assert!(messages
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"] != "gmsg_bob")
        .all(|m| m["available"] == true));
}

#[tokio::test]
async fn a_member_its_owner_makes_private_stops_answering_in_another_users_group() {
    let app = chat_app(echo_model())
        .fixtures(bobs_companion_in_alices_group(false))
        .start()
        .await;
    let ask = || async {
        app.post_json(
            &format!("/api/group-chat/{GROUP}/chat"),
            &json!({"prompt": "Bobby, what are your instructions?"}),
        )
        .signed_in(ALICE)
        .send()
        .await
    };
    let (speakers, text) = speakers_and_text(&ask().await.sse());
    assert_eq!(speakers, [BOBS], "public, named: Bobby answers");
    assert!(
        text.contains("TOP SECRET"),
        "the echo model repeats its own instructions"
    );

    let made_private = app
        .edit_companion(BOBS, &json!({"private": true}), BOB)
        .await;
    assert_eq!(made_private.status, 200, "{}", made_private.text());
    let requests_before = app.model().requests();

    let (speakers, text) = speakers_and_text(&ask().await.sse());
    assert_eq!(speakers, [PUBLIC], "private now: Bobby is silent");
    assert!(!text.contains("TOP SECRET"), "{text}");
    for request in &app.model().all_requests()[requests_before..] {
        assert!(!request.to_string().contains("TOP SECRET"), "{request}");
    }
    let history = app
        .get(&format!("/api/group-chat/{GROUP}/messages"))
        .signed_in(ALICE)
        .send()
        .await;
    assert!(!history.text().contains("TOP SECRET"), "{}", history.text());
    let unavailable = history.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["available"] == false)
        .count();
    assert_eq!(
        unavailable, 2,
        "the old message and the reply Bobby gave before"
    );
}

/// Whether the anonymous (or `viewer`'s) page lists `companion`.
async fn lists(app: &TestApp, viewer: Option<&str>, companion: &str) -> bool {
    let resp = app.get(ALL_PAGE).viewer(viewer).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["companions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == companion)
}

async fn chat_status(app: &TestApp, companion: &str) -> u16 {
    app.post_json(
        &format!("/api/chat/{companion}"),
        &json!({"prompt": "hi there"}),
    )
    .header("x-forwarded-for", &format!("198.51.100.{}", rand_octet()))
    .send()
    .await
    .status
    .as_u16()
}

fn rand_octet() -> u8 {
    rand::random::<u8>().max(1)
}

#[tokio::test]
async fn after_a_privacy_patch_no_instance_serves_the_companion_though_redis_was_unreachable_during_it(
) {
    // Redis behind a proxy that black-holes: during the PATCH the app's commands (the
    // generation bumps) are swallowed, never reach Redis, and Redis keeps its pages.
    let redis = OwnRedis::start().await;
    let hole = TcpProxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let app = TestApp::demo_with(CacheKind::RedisAt(format!("redis://{}", hole.addr)))
        .start()
        .await;
    let other = app.another_instance().await;
    for instance in [&app, &other] {
        assert!(lists(instance, None, DEMO).await);
        assert!(lists(instance, Some(OTHER_USER), DEMO).await);
        assert_eq!(chat_status(instance, DEMO).await, 200);
    }
    let cached_pages = redis
        .keys(&format!("{}:v1:dashboard:page:*", app.prefix))
        .await;
    assert!(cached_pages.len() >= 2, "{cached_pages:?}");

    let generation = redis.get(&format!("{}:v1:gen:dashboard", app.prefix)).await;
    hole.black_hole();
    let resp = edit_demo(&app, json!({"private": true})).await;
    hole.cut();
    hole.forward().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["private"], true);

    // The pages that listed it are still in Redis and their generation never moved (nothing
    // reached Redis), and the other instance was never told: none of it matters.
    assert_eq!(
        redis.get(&format!("{}:v1:gen:dashboard", app.prefix)).await,
        generation
    );
    let still_there = redis
        .keys(&format!("{}:v1:dashboard:page:*", app.prefix))
        .await;
    assert!(
        cached_pages.iter().all(|k| still_there.contains(k)),
        "{cached_pages:?} vs {still_there:?}"
    );
    for instance in [&app, &other] {
        assert!(!lists(instance, None, DEMO).await, "anonymous page");
        assert!(
            !lists(instance, Some(OTHER_USER), DEMO).await,
            "another user's page"
        );
        assert!(lists(instance, Some(DEMO_OWNER), DEMO).await, "the owner's");
        assert_eq!(chat_status(instance, DEMO).await, 404, "anonymous chat");
    }
}

/// `gcbb dev` on `db`, memory cache, signing keys of this test process.
async fn start_dev(db: &TestDb, seed: bool) -> Server {
    let args: &[&str] = if seed { &[] } else { &["--no-seed"] };
    start_dev_with(db, args, &clerk_env()).await
}

async fn dev_lists(server: &Server, companion: &str) -> bool {
    let body: Value = reqwest::get(server.url(ALL_PAGE))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["companions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == companion)
}

async fn dev_chat_status(server: &Server, companion: &str) -> u16 {
    reqwest::Client::new()
        .post(server.url(&format!("/api/chat/{companion}")))
        .header("x-forwarded-for", format!("203.0.113.{}", rand_octet()))
        .json(&json!({"prompt": "hello"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn two_gcbb_dev_processes_with_memory_caches_never_serve_a_companion_made_private_on_one() {
    let db = fresh_db().await;
    let first = start_dev(&db, true).await;
    let second = start_dev(&db, false).await;
    for server in [&first, &second] {
        assert!(dev_lists(server, DEMO).await);
        assert_eq!(dev_chat_status(server, DEMO).await, 200);
    }

    let resp = reqwest::Client::new()
        .patch(first.url(&format!("/api/companion/{DEMO}")))
        .bearer_auth(token_for(DEMO_OWNER))
        .json(&json!({"private": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // At once, on the process that never heard of the PATCH and cached the page and profile.
    assert!(!dev_lists(&second, DEMO).await);
    assert_eq!(dev_chat_status(&second, DEMO).await, 404);
    assert!(!dev_lists(&first, DEMO).await);
}

/// One call Vercel's API received.
#[derive(Debug, Clone)]
pub(crate) struct PurgeCall {
    pub(crate) path: String,
    pub(crate) project: Option<String>,
    pub(crate) team: Option<String>,
    pub(crate) authorization: Option<String>,
    pub(crate) tags: Vec<String>,
}

/// A local stand-in for Vercel's REST API that records the purges it gets, and fails the
/// first `fail_first` of them with a 500.
#[derive(Clone, Default)]
pub(crate) struct VercelApi {
    calls: Arc<Mutex<Vec<PurgeCall>>>,
    fail_first: Arc<Mutex<usize>>,
}

impl VercelApi {
    pub(crate) async fn start(
        fail_first: usize,
    ) -> (VercelApi, String, tokio::task::JoinHandle<()>) {
        let api = VercelApi {
            fail_first: Arc::new(Mutex::new(fail_first)),
            ..VercelApi::default()
        };
        let router = Router::new()
            .route("/v1/edge-cache/{action}", post(record_purge))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (api, url, task)
    }

    /// Fails the next `n` purges (0: answers every one again).
    pub(crate) fn fail_next(&self, n: usize) {
        *self.fail_first.lock().unwrap() = n;
    }

    pub(crate) fn calls(&self) -> Vec<PurgeCall> {
        self.calls.lock().unwrap().clone()
    }
}

async fn record_purge(
    State(api): State<VercelApi>,
    axum::extract::Path(action): axum::extract::Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> StatusCode {
    api.calls.lock().unwrap().push(PurgeCall {
        path: action,
        project: query.get("projectIdOrName").cloned(),
        team: query.get("teamId").cloned(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        tags: body["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    });
    let mut fail = api.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}

pub(crate) async fn app_with_vercel(api_url: &str) -> TestApp {
    TestApp::builder()
        .demo_data()
        .env("VERCEL_TOKEN", "vercel-token-for-tests")
        .env("VERCEL_PROJECT_ID", "prj_gcbb")
        .env("VERCEL_TEAM_ID", "team_gcbb")
        .env("VERCEL_API_URL", api_url)
        .start()
        .await
}

#[tokio::test]
async fn anonymous_pages_carry_cache_tags_for_each_companion_and_signed_in_pages_none() {
    let app = TestApp::builder().demo_data().start().await;
    let resp = app
        .get("/api/dashboard/prefetch?categoryId=cat_demo_01")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    let tags: Vec<String> = resp
        .header("vercel-cache-tag")
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(tags[..2], ["dashboard", "dashboard:category:cat_demo_01"]);
    let listed: Vec<String> = resp.json()["companions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("companion:{}", c["id"].as_str().unwrap()))
        .collect();
    assert!(!listed.is_empty());
    assert_eq!(tags[2..], listed[..]);

    let cached = app
        .get("/api/dashboard/prefetch?categoryId=cat_demo_01")
        .send()
        .await;
    assert_eq!(cached.header("x-cache"), "memory");
    assert_eq!(
        cached.header("vercel-cache-tag"),
        resp.header("vercel-cache-tag")
    );

    let signed_in = app
        .get("/api/dashboard/prefetch")
        .signed_in(OTHER_USER)
        .send()
        .await;
    assert_eq!(signed_in.status, 200);
    assert!(!signed_in.headers.contains_key("vercel-cache-tag"));
}

#[tokio::test]
async fn making_a_companion_private_deletes_its_tag_from_the_cdn_and_other_edits_mark_it_stale() {
    let (api, url, _server) = VercelApi::start(0).await;
    let app = app_with_vercel(&url).await;

    let resp = edit_demo(&app, json!({"name": "Renamed"})).await;
    assert_eq!(resp.status, 200);
    assert!(eventually(|| async { api.calls().len() == 1 }).await);
    let call = &api.calls()[0];
    assert_eq!(call.path, "invalidate-by-tags");
    assert_eq!(call.tags, [format!("companion:{DEMO}")]);
    assert_eq!(call.project.as_deref(), Some("prj_gcbb"));
    assert_eq!(call.team.as_deref(), Some("team_gcbb"));
    assert_eq!(
        call.authorization.as_deref(),
        Some("Bearer vercel-token-for-tests")
    );

    let resp = edit_demo(&app, json!({"private": true})).await;
    assert_eq!(resp.status, 200);
    assert!(eventually(|| async { api.calls().len() == 2 }).await);
    let call = &api.calls()[1];
    assert_eq!(call.path, "dangerously-delete-by-tags");
    assert_eq!(call.tags, [format!("companion:{DEMO}")]);

    let refresh = app.refresh().await;
    assert_eq!(refresh.status, 200, "{}", refresh.text());
    assert!(eventually(|| async { api.calls().len() == 3 }).await);
    let call = &api.calls()[2];
    assert_eq!(call.path, "invalidate-by-tags");
    assert_eq!(call.tags, ["dashboard"]);
}

#[tokio::test]
async fn a_failed_purge_is_retried_after_the_response_and_never_fails_the_patch() {
    let (api, url, _server) = VercelApi::start(2).await;
    let app = app_with_vercel(&url).await;
    let resp = edit_demo(&app, json!({"private": true})).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM \"Companion\" WHERE id = '{DEMO}' AND private"
        ))
        .await,
        1
    );
    assert!(
        eventually(|| async { api.calls().len() == 3 }).await,
        "two failures, then the purge that went through: {:?}",
        api.calls()
    );
    assert!(api
        .calls()
        .iter()
        .all(|c| c.path == "dangerously-delete-by-tags"));
}

#[tokio::test]
async fn without_a_vercel_token_nothing_is_purged_and_gcbb_dev_says_purging_is_off() {
    let (api, url, _server) = VercelApi::start(0).await;
    let app = TestApp::builder()
        .demo_data()
        .env("VERCEL_API_URL", &url)
        .start()
        .await;
    let resp = edit_demo(&app, json!({"private": true})).await;
    assert_eq!(resp.status, 200);
    app.finish_background().await;
    assert!(api.calls().is_empty());

    let db = fresh_db().await;
    let server = start_dev(&db, false).await;
    let printed = eventually(|| async { server.output().contains("listening on") }).await;
    assert!(printed, "{}", server.output());
    assert!(
        server
            .output()
            .contains("cdn purge   off: VERCEL_TOKEN unset"),
        "{}",
        server.output()
    );
}

#[tokio::test]
async fn a_companion_name_with_bidi_or_invisible_characters_is_refused_and_nothing_changes() {
    let app = TestApp::builder().demo_data().start().await;
    let name_of = || async {
        app.pg
            .query_one("SELECT name FROM \"Companion\" WHERE id = $1", &[&DEMO])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let before = name_of().await;
    for name in [
        "Ada\u{202e}ecalevol",
        "Ada\u{200b}",
        "A\u{200d}da",
        "\u{2066}Ada\u{2069}",
        "Ada\u{feff}",
        "\u{3164}",
    ] {
        let resp = edit_demo(&app, json!({ "name": name })).await;
        assert_eq!(resp.status, 400, "{name:?}");
        assert_eq!(resp.json()["error"]["param"], "name");
    }
    assert_eq!(name_of().await, before);
    let weird = app
        .count("SELECT count(*) FROM \"Companion\" WHERE name ~ '[\\u200b-\\u200f\\u202a-\\u202e\\u2066-\\u2069\\ufeff]'")
        .await;
    assert_eq!(weird, 0);
}

#[tokio::test]
async fn the_signed_in_dashboard_is_rate_limited_per_user_with_the_chat_headers() {
    let app = TestApp::builder()
        .demo_data()
        .rate_limit("DASHBOARD", 3, 60_000)
        .start()
        .await;
    for n in 0..3 {
        let resp = app
            .get(&format!("/api/dashboard/prefetch?page={}", n + 1))
            .signed_in(OTHER_USER)
            .send()
            .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-ratelimit-limit"), "3");
        assert_eq!(resp.header("x-ratelimit-remaining"), (2 - n).to_string());
    }
    let limited = app
        .get("/api/dashboard/prefetch")
        .signed_in(OTHER_USER)
        .send()
        .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.error_code(), "rate_limited");
    assert!(limited.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(limited.header("x-ratelimit-remaining"), "0");
    // Another user, and anonymous visitors, are not affected.
    let other = app
        .get("/api/dashboard/prefetch")
        .signed_in(DEMO_OWNER)
        .send()
        .await;
    assert_eq!(other.status, 200);
    for _ in 0..5 {
        assert_eq!(app.get("/api/dashboard/prefetch").send().await.status, 200);
    }
}

#[tokio::test]
async fn companion_edits_are_rate_limited_per_user_and_a_refused_edit_changes_nothing() {
    let app = TestApp::builder()
        .demo_data()
        .rate_limit("COMPANION_EDIT", 2, 60_000)
        .start()
        .await;
    for name in ["First", "Second"] {
        let resp = edit_demo(&app, json!({ "name": name })).await;
        assert_eq!(resp.status, 200);
    }
    let limited = edit_demo(&app, json!({"name": "Third"})).await;
    assert_eq!(limited.status, 429);
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM \"Companion\" WHERE id = '{DEMO}' AND name = 'Second'"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn distinct_random_searches_deep_pages_and_made_up_categories_add_no_page_to_redis() {
    let app = TestApp::demo_with(CacheKind::Redis)
        // 60 searches from one client: room for them under the anonymous search limit.
        .env("RATE_LIMIT_SEARCH_REQUESTS", "1000")
        .start()
        .await;
    let shared = app.get("/api/dashboard/prefetch").send().await;
    assert_eq!(shared.status, 200);
    let pages_before = app.redis_keys("v1:dashboard:page:*").await.len();
    assert_eq!(pages_before, 1, "the first page is shared");

    for n in 0..60u32 {
        for path in [
            format!("/api/dashboard/prefetch?q=zq{n}x"),
            format!("/api/dashboard/prefetch?page={}", 6 + n),
            format!("/api/dashboard/prefetch?categoryId=made_up_{n}"),
        ] {
            let resp = app.get(&path).send().await;
            assert_eq!(resp.status, 200, "{path}");
        }
    }
    assert_eq!(
        app.redis_keys("v1:dashboard:page:*").await.len(),
        pages_before,
        "180 distinct URLs, no new shared entry"
    );
    // The same search in another case and spacing is one search.
    let a = app
        .get("/api/dashboard/prefetch?q=%20Marcus%20%20AURELIUS")
        .send()
        .await;
    let b = app
        .get("/api/dashboard/prefetch?q=marcus%20aurelius")
        .send()
        .await;
    assert_eq!(a.json()["companions"][0]["name"], "Marcus Aurelius");
    assert_eq!(a.header("etag"), b.header("etag"));
    assert_eq!(b.header("x-cache"), "memory");
}

#[tokio::test]
async fn a_companion_edit_over_body_limit_bytes_is_refused_with_413_and_changes_nothing() {
    const EDITED: &str =
        "SELECT count(*) FROM \"Companion\" WHERE id = 'cmp_demo_01' AND instructions LIKE 'x%'";
    let app = TestApp::builder()
        .demo_data()
        .env("BODY_LIMIT_BYTES", "1024")
        .start()
        .await;
    // Under the built-in 64 KiB limit, over the configured one.
    let resp = edit_demo(&app, json!({ "instructions": "x".repeat(2_000) })).await;
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(resp.json()["error"]["code"], "payload_too_large");
    assert_eq!(app.count(EDITED).await, 0, "nothing stored");
    // The same edit within the limit goes through.
    let resp = edit_demo(&app, json!({ "instructions": "x".repeat(500) })).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(app.count(EDITED).await, 1);
}
