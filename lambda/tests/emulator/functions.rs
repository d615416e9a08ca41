//! The six functions under the emulator, reached by the paths a function URL delivers (the real
//! path, no rewrite), answering as `gcbb dev` does on the same database: the router `gcbb dev`
//! serves (`gcbb::routes::router`), on a socket in this process, is the reference.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use gcbb::config::Config;
use gcbb::platform::app::App;
use gcbb::routes::VercelJson;
use serde_json::{json, Value};

use gcbb_test_support::db::{demo_db, TestDb};
use gcbb_test_support::session::{clerk_env, token_for};

use crate::harness::{ms, Emulator, Function, Streamed, CRON_SECRET};

/// The functions' environment: the database, the cron secret, the session-token key.
fn environment(db: &TestDb) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("CRON_SECRET", CRON_SECRET.to_owned()),
    ];
    env.extend(clerk_env());
    env
}

/// Starts the Lambda function `gcbb-<name>` (the binary this test run built).
fn start(emulator: &Emulator, db: &TestDb, name: &str) -> Function {
    start_with(emulator, db, name, &[])
}

/// Starts `gcbb-<name>` with variables over the common ones.
pub(crate) fn start_with(
    emulator: &Emulator,
    db: &TestDb,
    name: &str,
    extra: &[(&'static str, String)],
) -> Function {
    let binary = match name {
        "health" => env!("CARGO_BIN_EXE_gcbb-health"),
        "dashboard-prefetch" => env!("CARGO_BIN_EXE_gcbb-dashboard-prefetch"),
        "chat-stream" => env!("CARGO_BIN_EXE_gcbb-chat-stream"),
        "group-chat" => env!("CARGO_BIN_EXE_gcbb-group-chat"),
        "companion" => env!("CARGO_BIN_EXE_gcbb-companion"),
        "cron-refresh" => env!("CARGO_BIN_EXE_gcbb-cron-refresh"),
        other => panic!("no function {other}"),
    };
    let mut env = environment(db);
    env.extend_from_slice(extra);
    emulator.start_function(binary, &format!("gcbb-{name}"), &env)
}

/// `gcbb dev`'s router over the same database and configuration, on a socket; stops when
/// dropped.
struct GcbbDev {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl GcbbDev {
    async fn start(db: &TestDb) -> GcbbDev {
        GcbbDev::start_with(db, &[]).await
    }

    async fn start_with(db: &TestDb, extra: &[(&'static str, String)]) -> GcbbDev {
        let mut vars: HashMap<String, String> = environment(db)
            .into_iter()
            .chain(extra.iter().cloned())
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        vars.insert("LLM_PROVIDER".into(), "scripted".into());
        let app = App::new(Config::from_vars(&vars).expect("a valid configuration"));
        let router = gcbb::routes::router(app, &VercelJson::embedded(), Router::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        // As in `gcbb dev`: no Nagle delay on a stream's first chunk.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        GcbbDev { base, task }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for GcbbDev {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = client.get(url).send().await.expect("an answer");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The names in a `Server-Timing` header, without their durations.
fn timing_names(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    headers
        .get("server-timing")
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
        .split(',')
        .map(|m| m.split(';').next().unwrap_or_default().trim().to_owned())
        .collect()
}

/// Process start to first response of each function: the first request waits in the emulator
/// until the process asks for it. Each answers its first request as `gcbb dev` answers it.
#[tokio::test]
async fn every_function_starts_under_the_emulator_and_answers_its_first_request() {
    let db = demo_db().await;
    let emulator = Emulator::start().await;
    let dev = GcbbDev::start(&db).await;
    let client = reqwest::Client::new();
    let checks = [
        ("health", reqwest::Method::GET, "/api/health"),
        (
            "dashboard-prefetch",
            reqwest::Method::GET,
            "/api/dashboard/prefetch",
        ),
        ("chat-stream", reqwest::Method::GET, "/api/chat/c1"),
        (
            "group-chat",
            reqwest::Method::GET,
            "/api/group-chat/g1/messages",
        ),
        ("companion", reqwest::Method::PATCH, "/api/companion/c1"),
        ("cron-refresh", reqwest::Method::GET, "/api/cron/refresh"),
    ];
    let mut figures = Vec::new();
    for (name, method, path) in checks {
        let request = |url: String| {
            client
                .request(method.clone(), url)
                .json(&json!({"name": "x"}))
        };
        let function = start(&emulator, &db, name);
        let resp = request(emulator.url(&format!("gcbb-{name}"), path))
            .send()
            .await
            .expect("an answer");
        let cold_start = function.started.elapsed();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let dev_resp = request(dev.url(path)).send().await.unwrap();
        let dev_status = dev_resp.status().as_u16();
        let dev_body: Value = dev_resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, dev_status, "{name}: {body} {}", function.output());
        if status >= 400 {
            assert_eq!(body, dev_body, "{name}");
        }
        figures.push(format!("{name} {} ({status})", ms(cold_start)));
    }
    eprintln!(
        "lambda cold start under the emulator (process start → first response, {} build): {}",
        build_profile(),
        figures.join(", ")
    );
}

#[tokio::test]
async fn health_answers_through_a_function_url_as_under_gcbb_dev() {
    let db = demo_db().await;
    let emulator = Emulator::start().await;
    let dev = GcbbDev::start(&db).await;
    let _health = start(&emulator, &db, "health");
    let client = reqwest::Client::new();
    let (status, headers, body) = get(&client, &emulator.url("gcbb-health", "/api/health")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"]["ok"], true);
    let (_, dev_headers, dev_body) = get(&client, &dev.url("/api/health")).await;
    assert_eq!(body["cache"]["backend"], dev_body["cache"]["backend"]);
    assert_eq!(
        headers.get("cache-control"),
        dev_headers.get("cache-control")
    );
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn the_dashboard_answers_as_under_gcbb_dev_header_for_header_and_304s_its_etag() {
    let db = demo_db().await;
    let emulator = Emulator::start().await;
    let dev = GcbbDev::start(&db).await;
    let dashboard = start(&emulator, &db, "dashboard-prefetch");
    let client = reqwest::Client::new();
    let url = emulator.url("gcbb-dashboard-prefetch", "/api/dashboard/prefetch");
    let (status, headers, page) = get(&client, &url).await;
    assert_eq!(status, 200, "{page} {}", dashboard.output());
    let (_, dev_headers, dev_page) = get(&client, &dev.url("/api/dashboard/prefetch")).await;
    assert!(!page["companions"].as_array().unwrap().is_empty());
    assert_eq!(page, dev_page, "the pages differ");
    for name in [
        "content-type",
        "cache-control",
        "cdn-cache-control",
        "etag",
        "vercel-cache-tag",
    ] {
        assert!(headers.contains_key(name), "{name} is missing");
        assert_eq!(headers.get(name), dev_headers.get(name), "{name}");
    }
    assert_eq!(timing_names(&headers), timing_names(&dev_headers));
    assert!(headers.contains_key("x-cache"));
    assert!(headers.contains_key("x-request-id"));

    // The page's ETag back: 304, no body, the same validators.
    let etag = headers["etag"].clone();
    let resp = client
        .get(&url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers().get("etag"), Some(&etag));
    assert_eq!(
        resp.headers().get("cache-control"),
        headers.get("cache-control")
    );
    assert!(resp.bytes().await.unwrap().is_empty());

    // Errors: the same 400, naming the parameter, on the same query.
    let (status, _, error) = get(&client, &format!("{url}?pageSize=51")).await;
    let (dev_status, _, dev_error) =
        get(&client, &dev.url("/api/dashboard/prefetch?pageSize=51")).await;
    assert_eq!((status, &error), (dev_status, &dev_error));
    assert_eq!(error["error"]["param"], "pageSize");
}

/// Also the figure: the first byte of a warm reply, median of a few, beside `gcbb dev`'s.
#[tokio::test]
async fn a_streamed_chat_reply_arrives_in_pieces_as_under_gcbb_dev() {
    const SAMPLES: usize = 5;
    let db = demo_db().await;
    let emulator = Emulator::start().await;
    // Every request comes from 127.0.0.1: room for the samples under the anonymous limit.
    let room = [("RATE_LIMIT_ANON_REQUESTS", "100".to_owned())];
    let dev = GcbbDev::start_with(&db, &room).await;
    let chat = start_with(&emulator, &db, "chat-stream", &room);
    let client = reqwest::Client::new();
    let companion = public_companion(&db).await;
    let path = format!("/api/chat/{companion}");
    let ask = |url: String, prompt: &str| client.post(url).json(&json!({ "prompt": prompt }));
    // Warm both (the first request opens the database pool); every prompt differs, so no reply
    // is a replay of a cached one.
    Streamed::read(ask(emulator.url("gcbb-chat-stream", &path), "warm up")).await;
    Streamed::read(ask(dev.url(&path), "warm up")).await;

    let (mut lambda_first, mut dev_first) = (Vec::new(), Vec::new());
    for i in 0..SAMPLES {
        let prompt = format!("hello there {i}");
        let lambda = Streamed::read(ask(emulator.url("gcbb-chat-stream", &path), &prompt)).await;
        assert_eq!(lambda.status, 200, "{}", chat.output());
        assert!(lambda.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert!(
            lambda.pieces.len() >= 3
                && lambda.ended() - lambda.first_byte > Duration::from_millis(50),
            "the reply arrived in {} piece(s), not streamed",
            lambda.pieces.len()
        );
        let local = Streamed::read(ask(dev.url(&path), &prompt)).await;
        assert_eq!(lambda.text(), local.text());
        lambda_first.push(lambda.first_byte);
        dev_first.push(local.first_byte);
    }
    lambda_first.sort();
    dev_first.sort();
    eprintln!(
        "first byte of a streamed chat reply (warm, anonymous, scripted model, median of {SAMPLES}, {} builds): Lambda under the emulator {}, gcbb dev {}",
        build_profile(),
        ms(lambda_first[SAMPLES / 2]),
        ms(dev_first[SAMPLES / 2])
    );
}

#[tokio::test]
async fn group_chat_streams_its_events_through_a_function_url() {
    let db = demo_db().await;
    let emulator = Emulator::start().await;
    let group_chat = start(&emulator, &db, "group-chat");
    let client = reqwest::Client::new();
    let streamed = Streamed::read(
        client
            .post(emulator.url(
                "gcbb-group-chat",
                "/api/group-chat/grp_demo_round_table/chat",
            ))
            .json(&json!({ "prompt": "hello everyone" })),
    )
    .await;
    assert_eq!(streamed.status, 200, "{}", group_chat.output());
    assert!(streamed.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = streamed.text();
    assert!(
        text.contains("text-delta") && text.trim_end().ends_with("[DONE]"),
        "{text}"
    );
    assert!(
        streamed.pieces.len() >= 3,
        "{} piece(s)",
        streamed.pieces.len()
    );
}

/// The signed-in reply is stored and its tokens accounted through `wait_until`, before the
/// invocation ends: the function's next invocation (the history) starts only after that, so
/// the rows are read at its answer, without waiting.
#[tokio::test]
async fn a_signed_in_reply_is_stored_with_its_tokens_before_the_next_invocation() {
    let db = demo_db().await;
    let emulator = Emulator::start().await;
    let chat = start(&emulator, &db, "chat-stream");
    let client = reqwest::Client::new();
    let companion = public_companion(&db).await;
    let user = "user_demo_1";
    let token = token_for(user);
    let tokens_before = db
        .count(&format!(
            "SELECT \"tokensBurned\"::bigint FROM \"Companion\" WHERE id = '{companion}'"
        ))
        .await;
    let path = format!("/api/chat/{companion}");

    let reply = Streamed::read(
        client
            .post(emulator.url("gcbb-chat-stream", &path))
            .bearer_auth(&token)
            .json(&json!({ "prompt": "remember me" })),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", chat.output());
    let text = reply.text();
    assert!(!text.is_empty());

    let (status, _, history) =
        get_signed_in(&client, &emulator.url("gcbb-chat-stream", &path), &token).await;
    assert_eq!(status, 200, "{history}");
    let messages = history["messages"].as_array().unwrap();
    let last_two: Vec<(&str, &str)> = messages[messages.len() - 2..]
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        last_two,
        [("user", "remember me"), ("assistant", text.as_str())]
    );
    let tokens_after = db
        .count(&format!(
            "SELECT \"tokensBurned\"::bigint FROM \"Companion\" WHERE id = '{companion}'"
        ))
        .await;
    assert!(
        tokens_after > tokens_before,
        "{tokens_before} → {tokens_after}"
    );
    let user_tokens = db
        .count(&format!(
            "SELECT coalesce(sum(\"tokensBurned\"), 0)::bigint FROM \"UserBurnedTokens\" \
             WHERE \"userId\" = '{user}' AND \"companionId\" = '{companion}'"
        ))
        .await;
    assert_eq!(user_tokens, tokens_after - tokens_before);
}

/// On Lambda a client that goes away doesn't end the invocation, and a reply no longer depends
/// on its client anyway: it runs to its end as the invocation's background work, is stored whole
/// with its tokens, and the function's next invocation starts only after that.
#[tokio::test]
async fn a_reply_whose_client_went_away_is_stored_whole_before_the_next_invocation() {
    use gcbb::llm::{scripted::reply_text, ChatMessage, Role};
    let db = demo_db().await;
    let emulator = Emulator::start().await;
    let slow = [("LLM_SCRIPTED_CHUNK_DELAY_MS", "60".to_owned())];
    let chat = start_with(&emulator, &db, "chat-stream", &slow);
    let client = reqwest::Client::new();
    let companion = public_companion(&db).await;
    let user = "user_demo_2";
    let token = token_for(user);
    let path = format!("/api/chat/{companion}");
    let prompt = "I will not stay for the end";
    let full = reply_text(&[ChatMessage::new(Role::User, prompt)]);

    let mut resp = client
        .post(emulator.url("gcbb-chat-stream", &path))
        .bearer_auth(&token)
        .json(&json!({ "prompt": prompt }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", chat.output());
    let first = resp.chunk().await.unwrap().expect("a first piece");
    assert!(full.starts_with(std::str::from_utf8(&first).unwrap()));
    assert!(first.len() < full.len(), "the whole reply came at once");
    drop(resp);

    let (status, _, history) =
        get_signed_in(&client, &emulator.url("gcbb-chat-stream", &path), &token).await;
    assert_eq!(status, 200, "{history}");
    let messages = history["messages"].as_array().unwrap();
    let last_two: Vec<(&str, &str)> = messages[messages.len() - 2..]
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(last_two, [("user", prompt), ("assistant", full.as_str())]);
    assert_eq!(messages.last().unwrap()["status"], "finished");
    let ledger = db
        .count(&format!(
            "SELECT count(*) FROM \"ReplyTokens\" WHERE \"userId\" = '{user}'"
        ))
        .await;
    assert_eq!(ledger, 1, "its tokens, accounted once");
}

#[tokio::test]
async fn the_cron_refuses_a_call_without_its_secret_and_refreshes_with_it() {
    let db = demo_db().await;
    let emulator = Emulator::start().await;
    let dev = GcbbDev::start(&db).await;
    let refresh = start(&emulator, &db, "cron-refresh");
    let client = reqwest::Client::new();
    let url = emulator.url("gcbb-cron-refresh", "/api/cron/refresh");
    let (status, _, refused) = get(&client, &url).await;
    let (dev_status, _, dev_refused) = get(&client, &dev.url("/api/cron/refresh")).await;
    assert_eq!((status, &refused), (dev_status, &dev_refused));
    assert_eq!(status, 401, "{}", refresh.output());

    let resp = client
        .get(&url)
        .bearer_auth(CRON_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["status"], "refreshed", "{report}");
}

/// Hostile requests through a function URL get the answers `gcbb dev` gives, and a body shaped
/// like an EventBridge schedule is only a body: the function URL's event is an HTTP request, so
/// the cron still wants its secret.
#[tokio::test]
async fn hostile_requests_through_a_function_url_are_refused_as_under_gcbb_dev() {
    let db = demo_db().await;
    let emulator = Emulator::start().await;
    let room = [("RATE_LIMIT_ANON_REQUESTS", "100".to_owned())];
    let dev = GcbbDev::start_with(&db, &room).await;
    let chat = start_with(&emulator, &db, "chat-stream", &room);
    let refresh = start(&emulator, &db, "cron-refresh");
    let client = reqwest::Client::new();
    let companion = public_companion(&db).await;
    let messages_before = db.count("SELECT count(*) FROM \"Message\"").await;

    let chat_path = format!("/api/chat/{companion}");
    let oversized = format!("{{\"prompt\":\"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let cases: Vec<(&str, String, &str, String)> = vec![
        (
            "malformed JSON",
            chat_path.clone(),
            "application/json",
            "{\"prompt\": ".into(),
        ),
        (
            "wrong content type",
            chat_path.clone(),
            "text/csv",
            "prompt,hi".into(),
        ),
        (
            "oversized body",
            chat_path.clone(),
            "application/json",
            oversized,
        ),
        (
            "SQL-looking id",
            "/api/chat/x'%3B%20DROP%20TABLE%20%22Message%22%3B--".into(),
            "application/json",
            json!({ "prompt": "hi" }).to_string(),
        ),
        (
            "odd Unicode id",
            "/api/chat/%E2%80%AEcmp%E2%80%8B%F0%9F%A6%80".into(),
            "application/json",
            json!({ "prompt": "hi" }).to_string(),
        ),
    ];
    for (what, path, content_type, body) in cases {
        let send = |url: String| {
            client
                .post(url)
                .header("content-type", content_type)
                .body(body.clone())
                .send()
        };
        let lambda = send(emulator.url("gcbb-chat-stream", &path)).await.unwrap();
        let local = send(dev.url(&path)).await.unwrap();
        let status = lambda.status().as_u16();
        assert_eq!(status, local.status().as_u16(), "{what}: {}", chat.output());
        assert!((400..500).contains(&status), "{what}: {status}");
        let lambda_error: Value = lambda.json().await.unwrap();
        let local_error: Value = local.json().await.unwrap();
        assert_eq!(lambda_error["error"], local_error["error"], "{what}");
        assert!(
            lambda_error["error"]["message"].is_string(),
            "{what}: {lambda_error}"
        );
    }
    assert_eq!(
        db.count("SELECT count(*) FROM \"Message\"").await,
        messages_before,
        "no hostile request stored anything"
    );

    let forged = json!({
        "version": "0",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "detail": {}
    });
    let resp = client
        .get(emulator.url("gcbb-cron-refresh", "/api/cron/refresh"))
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "{}", refresh.output());
}

/// An EventBridge rule's "Scheduled Event", invoked as EventBridge invokes (the `Invoke` API,
/// no HTTP request, no secret): the refresh runs; any other function fails the invocation.
#[tokio::test]
async fn an_eventbridge_schedule_runs_the_refresh_without_the_secret() {
    let db = demo_db().await;
    let emulator = Emulator::start().await;
    let refresh = start(&emulator, &db, "cron-refresh");
    let health = start(&emulator, &db, "health");
    let client = reqwest::Client::new();
    let schedule = json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-28T23:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/gcbb-cron-refresh"],
        "detail": {}
    });
    let started = Instant::now();
    let resp = client
        .post(emulator.invoke_url("gcbb-cron-refresh"))
        .json(&schedule)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", refresh.output());
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["status"], "refreshed", "{report}");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
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
    eprintln!(
        "scheduled refresh under the emulator: {}",
        ms(started.elapsed())
    );

    let resp = client
        .post(emulator.invoke_url("gcbb-health"))
        .json(&schedule)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500, "{}", health.output());
    let error: Value = resp.json().await.unwrap();
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("takes no schedules"),
        "{error}"
    );
}

async fn get_signed_in(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = client.get(url).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

/// A public companion of the demo data.
async fn public_companion(db: &TestDb) -> String {
    db.client()
        .await
        .query_one(
            "SELECT id FROM \"Companion\" WHERE NOT private AND \"userId\" <> 'system' ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .expect("a public companion")
        .get(0)
}

/// Which build the printed figures are of: the functions are built with the tests' profile.
fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}
