//! `POST/GET /api/chat/:chatId` in-process through the router of every function, on a fresh
//! database, against the local model server, with real Clerk-style RS256 tokens; both stream
//! formats are also read with the AI SDK's own client code (`tests/ai-sdk`, run with node).

use axum::http::{HeaderMap, Method};
use gcbb::chat::reply::cached::{anonymous_reply_key, cached_reply};
use gcbb::platform::auth::Viewer;
use gcbb::platform::error::ApiError;
use gcbb::platform::input::Prompt;
use gcbb_cli::model_server::{Failure, Script};
use serde_json::{json, Value};

use crate::common::app::{CacheKind, Served, TestApp, TestAppBuilder};
use crate::common::failing;
use crate::common::request::TestRequest;
use crate::common::session::token_for;
use crate::common::{eventually, json_strs};
use crate::support::free_port;

pub const ALICE: &str = "user_alice";
pub const BOB: &str = "user_bob";
pub const PUBLIC: &str = "comp_public";
pub const PRIVATE: &str = "comp_private_alice";

/// A category, a public companion and Alice's private one.
pub fn fixtures() -> String {
    format!(
        "INSERT INTO \"Category\" (\"id\", \"name\") VALUES ('cat_1', 'Friends');
         INSERT INTO \"Companion\" (\"id\", \"userId\", \"userName\", \"src\", \"name\", \"instructions\",
                                    \"private\", \"updatedAt\", \"categoryId\")
         VALUES ('{PUBLIC}', 'system', 'GCBB', '/a.png', 'Ada', 'You are Ada, a patient tutor.', false, now(), 'cat_1'),
                ('{PRIVATE}', '{ALICE}', 'alice', '/b.png', 'Secret', 'You are Alice''s secret friend.', true, now(), 'cat_1');"
    )
}

/// An app on the chat fixtures whose model is the local model server answering with `script`.
pub fn chat_app(script: Script) -> TestAppBuilder {
    TestApp::builder().model(script).fixtures(fixtures())
}

/// `POST /api/chat/:id` with a prompt.
fn chat(app: &TestApp, companion: &str, prompt: &str) -> TestRequest {
    app.post_json(
        &format!("/api/chat/{companion}"),
        &json!({ "prompt": prompt }),
    )
}

/// The ids of the messages of a page of history.
pub(crate) fn page_ids(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The stored conversation of (companion, user), oldest first: (role, content).
pub async fn messages(app: &TestApp, companion: &str, user: &str) -> Vec<(String, String)> {
    app.pg
        .query(
            "SELECT \"role\"::text, \"content\" FROM \"Message\" \
             WHERE \"companionId\" = $1 AND \"userId\" = $2 ORDER BY \"createdAt\", \"id\"",
            &[&companion, &user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The companion's burned tokens, and the user's row for it.
pub async fn tokens(app: &TestApp, companion: &str, user: &str) -> (i32, Option<i32>) {
    let total: i32 = app
        .pg
        .query_one(
            "SELECT \"tokensBurned\" FROM \"Companion\" WHERE \"id\" = $1",
            &[&companion],
        )
        .await
        .unwrap()
        .get(0);
    let mine = app
        .pg
        .query_opt(
            "SELECT \"tokensBurned\" FROM \"UserBurnedTokens\" \
             WHERE \"companionId\" = $1 AND \"userId\" = $2",
            &[&companion, &user],
        )
        .await
        .unwrap()
        .map(|r| r.get(0));
    (total, mine)
}

#[tokio::test]
async fn a_signed_in_chat_streams_the_reply_stores_both_messages_and_accounts_usage_after() {
    let app = chat_app(Script::default()).start().await;
    let resp = chat(&app, PUBLIC, "Teach me Rust 🦀")
        .signed_in(ALICE)
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(resp.text(), "Hello from the model.");

    assert_eq!(
        messages(&app, PUBLIC, ALICE).await,
        vec![
            ("user".into(), "Teach me Rust 🦀".into()),
            ("assistant".into(), "Hello from the model.".into())
        ]
    );
    let req = app.model().last_request().unwrap();
    assert_eq!(
        req["messages"][0],
        json!({"role": "system", "content": "You are Ada, a patient tutor."})
    );
    assert_eq!(
        req["messages"][1],
        json!({"role": "user", "content": "Teach me Rust 🦀"})
    );
    assert_eq!(req["messages"].as_array().unwrap().len(), 2);

    // usage: 11 prompt + 5 completion, exactly.
    let arrived =
        eventually(|| async { tokens(&app, PUBLIC, ALICE).await == (16, Some(16)) }).await;
    assert!(arrived, "tokens: {:?}", tokens(&app, PUBLIC, ALICE).await);
    let updated: bool = app
        .pg
        .query_one(
            "SELECT \"updatedAt\" IS NOT NULL FROM \"UserBurnedTokens\" WHERE \"userId\" = $1",
            &[&ALICE],
        )
        .await
        .unwrap()
        .get(0);
    assert!(updated);

    // A second chat adds to both counters.
    let resp = chat(&app, PUBLIC, "More").signed_in(ALICE).send().await;
    assert_eq!(resp.text(), "Hello from the model.");
    assert!(eventually(|| async { tokens(&app, PUBLIC, ALICE).await == (32, Some(32)) }).await);
    // The second context holds the whole conversation so far.
    let req = app.model().last_request().unwrap();
    let roles = json_strs(&req["messages"], "role");
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
}

#[tokio::test]
async fn the_context_is_the_instructions_and_the_last_twenty_messages_of_that_user() {
    let app = chat_app(Script::default()).start().await;
    for i in 0..30 {
        app.pg
            .execute(
                "INSERT INTO \"Message\" (\"id\", \"role\", \"content\", \"createdAt\", \"updatedAt\", \"companionId\", \"userId\") \
                 VALUES ($1, 'user', $2, now() - make_interval(secs => 100 - $3::int), now(), $4, $5)",
                &[&format!("m{i}"), &format!("old {i}"), &i, &PUBLIC, &ALICE],
            )
            .await
            .unwrap();
    }
    // Bob's messages never reach Alice's context.
    app.pg
        .execute(
            "INSERT INTO \"Message\" (\"id\", \"role\", \"content\", \"updatedAt\", \"companionId\", \"userId\") \
             VALUES ('bob1', 'user', 'bob says', now(), $1, $2)",
            &[&PUBLIC, &BOB],
        )
        .await
        .unwrap();
    let resp = chat(&app, PUBLIC, "newest").signed_in(ALICE).send().await;
    assert_eq!(resp.status, 200);
    let req = app.model().last_request().unwrap();
    let msgs = req["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 21);
    assert_eq!(msgs[0]["role"], "system");
    assert_eq!(msgs[1]["content"], "old 11");
    assert_eq!(msgs[20]["content"], "newest");
    assert!(!req.to_string().contains("bob says"));
    // The prompt and the reply joined Alice's 30 stored messages; Bob's conversation is as it was.
    assert_eq!(messages(&app, PUBLIC, ALICE).await.len(), 32);
    assert_eq!(messages(&app, PUBLIC, BOB).await.len(), 1);
}

#[tokio::test]
async fn the_model_failing_before_the_first_token_is_502_and_the_prompt_stays_stored() {
    let app = chat_app(failing(Failure::Status(500))).start().await;
    let resp = chat(&app, PUBLIC, "hello?").signed_in(ALICE).send().await;
    assert_eq!(resp.status, 502);
    let body = resp.json();
    assert_eq!(body["error"]["code"], "model_unavailable");
    assert!(!body.to_string().contains("scripted failure"), "{body}");
    assert_eq!(
        messages(&app, PUBLIC, ALICE).await,
        vec![("user".into(), "hello?".into())]
    );
}

#[tokio::test]
async fn the_model_failing_mid_stream_ends_with_an_error_part_and_the_partial_reply_is_stored() {
    let app = chat_app(failing(Failure::ErrorEventAfter(2))).start().await;
    let resp = chat(&app, PUBLIC, "tell me")
        .signed_in(ALICE)
        .header("accept", "text/event-stream")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["x-vercel-ai-ui-message-stream"], "v1");
    assert!(resp.header("content-type").starts_with("text/event-stream"));
    let parts = resp.sse();
    let types: Vec<&str> = parts
        .iter()
        .map(|p| p["type"].as_str().unwrap_or("[DONE]"))
        .collect();
    assert_eq!(
        types,
        [
            "start",
            "text-start",
            "text-delta",
            "text-delta",
            "text-end",
            "error",
            "[DONE]"
        ]
    );
    assert_eq!(
        messages(&app, PUBLIC, ALICE).await,
        vec![
            ("user".into(), "tell me".into()),
            ("assistant".into(), "Hello from".into())
        ]
    );
    // Without usage the tokens are estimated, and still arrive.
    assert!(
        eventually(|| async {
            matches!(tokens(&app, PUBLIC, ALICE).await, (n, Some(m)) if n > 0 && n == m)
        })
        .await
    );

    // A dropped connection mid-stream aborts the text stream (no clean end) and keeps the part.
    app.model().set_script(failing(Failure::DropAfter(3)));
    let resp = chat(&app, PUBLIC, "again").signed_in(BOB).send().await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.body_error.is_some(),
        "the text stream must not end cleanly: {:?}",
        resp.text()
    );
    assert!(
        eventually(|| async {
            messages(&app, PUBLIC, BOB).await
                == vec![
                    ("user".to_string(), "again".to_string()),
                    ("assistant".to_string(), "Hello from the".to_string()),
                ]
        })
        .await
    );
}

#[tokio::test]
async fn a_model_that_hangs_is_a_504_after_the_first_token_timeout() {
    let app = chat_app(failing(Failure::Hang))
        .env("LLM_FIRST_TOKEN_TIMEOUT_MS", "400")
        .start()
        .await;
    let resp = chat(&app, PUBLIC, "wait").signed_in(ALICE).send().await;
    assert_eq!(resp.status, 504);
    assert_eq!(resp.error_code(), "model_timeout");
    assert_eq!(messages(&app, PUBLIC, ALICE).await.len(), 1);
}

/// A client that goes away is a disconnect, not a stop: the reply runs to its end as background
/// work, and is stored whole and accounted. First in-process (the body dropped, which is what
/// the server does when its client goes away), then over a real socket, because only a real
/// server shows that a TCP disconnect reaches the body at all.
#[tokio::test]
async fn a_client_that_goes_away_leaves_the_reply_running_to_its_end_stored_whole() {
    let script = Script {
        chunks: vec!["word ".into(); 40],
        chunk_gap: std::time::Duration::from_millis(20),
        ..Script::default()
    };
    let full = script.text();
    let app = chat_app(script).start().await;
    let kept = |user: &'static str| {
        let (app, full) = (&app, full.clone());
        move || {
            let full = full.clone();
            async move {
                messages(app, PUBLIC, user).await
                    == [
                        ("user".to_string(), "long story".to_string()),
                        ("assistant".to_string(), full),
                    ]
            }
        }
    };
    // `user`'s reply was kept whole, as the model's `completed`th finished call; none was cut off.
    let kept_whole = |user: &'static str, completed: usize| {
        let (kept, app) = (&kept, &app);
        async move {
            assert!(
                eventually(kept(user)).await,
                "{:?}",
                messages(app, PUBLIC, user).await
            );
            assert!(eventually(|| async { app.model().completed() == completed }).await);
            assert_eq!(app.model().cancelled(), 0, "the model was cut off");
        }
    };

    let mut resp = chat(&app, PUBLIC, "long story")
        .signed_in(ALICE)
        .send_streaming()
        .await;
    assert_eq!(resp.status, 200);
    let first = resp.next_chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"word"));
    drop(resp);
    kept_whole(ALICE, 1).await;
    // 11 + 5 tokens, as the model counted them, once.
    assert!(eventually(|| async { tokens(&app, PUBLIC, ALICE).await == (16, Some(16)) }).await);

    let served = app.serve().await;
    let resp = reqwest::Client::new()
        .post(served.url(&format!("/api/chat/{PUBLIC}")))
        .bearer_auth(token_for(BOB))
        .json(&json!({"prompt": "long story"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = futures_util::StreamExt::boxed(resp.bytes_stream());
    let first = futures_util::StreamExt::next(&mut body)
        .await
        .unwrap()
        .unwrap();
    assert!(first.starts_with(b"word"));
    drop(body);
    kept_whole(BOB, 2).await;
    assert!(eventually(|| async { tokens(&app, PUBLIC, BOB).await == (32, Some(16)) }).await);
}

#[tokio::test]
async fn a_private_companion_is_404_for_everyone_but_its_owner_in_chat_and_history() {
    let app = chat_app(Script::default()).start().await;
    let path = format!("/api/chat/{PRIVATE}");
    for user in [None, Some(BOB)] {
        let resp = chat(&app, PRIVATE, "hi").viewer(user).send().await;
        assert_eq!(resp.status, 404, "{user:?}");
        assert_eq!(resp.error_code(), "not_found");
    }
    let resp = app.get(&path).signed_in(BOB).send().await;
    assert_eq!(resp.status, 404);
    assert_eq!(app.count("SELECT count(*) FROM \"Message\"").await, 0);
    assert_eq!(app.model().requests(), 0);

    let resp = chat(&app, PRIVATE, "hi").signed_in(ALICE).send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "Hello from the model.");
    let resp = app.get(&path).signed_in(ALICE).send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["messages"].as_array().unwrap().len(), 2);
    assert_eq!(messages(&app, PRIVATE, ALICE).await.len(), 2);
}

#[tokio::test]
async fn history_is_the_viewers_own_messages_paged_with_a_before_cursor() {
    let app = chat_app(Script::default()).start().await;
    for i in 0..7 {
        for (id, user) in [(format!("a{i}"), ALICE), (format!("b{i}"), BOB)] {
            app.pg
                .execute(
                    "INSERT INTO \"Message\" (\"id\", \"role\", \"content\", \"createdAt\", \"updatedAt\", \"companionId\", \"userId\") \
                     VALUES ($1, 'user', $1, timestamp '2025-01-01' + make_interval(secs => $2::int), now(), $3, $4)",
                    &[&id, &i, &PUBLIC, &user],
                )
                .await
                .unwrap();
        }
    }
    let get = |query: &str, user: Option<&str>| {
        app.get(&format!("/api/chat/{PUBLIC}{query}"))
            .viewer(user)
            .send()
    };
    let resp = get("?limit=3", Some(ALICE)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["cache-control"], "private, no-store");
    let page = resp.json();
    assert_eq!(page_ids(&page), ["a4", "a5", "a6"]);
    assert_eq!(page["nextCursor"], "a4");
    assert_eq!(page["messages"][0]["role"], "user");
    assert!(page["messages"][0]["createdAt"]
        .as_str()
        .unwrap()
        .starts_with("2025-01-01T00:00:04"));
    let page = get("?limit=3&before=a4", Some(ALICE)).await.json();
    assert_eq!(page_ids(&page), ["a1", "a2", "a3"]);
    let page = get("?limit=3&before=a1", Some(ALICE)).await.json();
    assert_eq!(page_ids(&page), ["a0"]);
    assert_eq!(page["nextCursor"], Value::Null);

    // Bob's cursor is not Alice's; bad paging parameters are named; anonymous is 401.
    for (query, param) in [
        ("?before=b3", "before"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=abc", "limit"),
    ] {
        let resp = get(query, Some(ALICE)).await;
        assert_eq!(resp.status, 400, "{query}");
        assert_eq!(resp.json()["error"]["param"], param, "{query}");
    }
    let resp = get("", None).await;
    assert_eq!(resp.status, 401);
    let resp = app.get("/api/chat/nope").signed_in(ALICE).send().await;
    assert_eq!(resp.status, 404);
    // Reading stored nothing.
    assert_eq!(app.count("SELECT count(*) FROM \"Message\"").await, 14);
}

#[tokio::test]
async fn an_anonymous_chat_streams_and_stores_nothing() {
    let app = chat_app(Script::default()).start().await;
    let resp = chat(&app, PUBLIC, "hi there").send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "Hello from the model.");
    let req = app.model().last_request().unwrap();
    assert_eq!(req["messages"].as_array().unwrap().len(), 2);
    // What an anonymous reply leaves behind is a cache entry, written after the response...
    let key = anonymous_reply_key(PUBLIC, &Prompt::parse("hi there".into()).unwrap());
    let cached = eventually(|| async {
        cached_reply(&app.app, &key).await.as_deref() == Some("Hello from the model.")
    })
    .await;
    assert!(cached, "the reply was never cached");
    // ...and nothing else, once every piece of background work has run.
    app.finish_background().await;
    assert_eq!(app.count("SELECT count(*) FROM \"Message\"").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM \"UserBurnedTokens\"").await,
        0
    );
    assert_eq!(tokens(&app, PUBLIC, ALICE).await.0, 0);
}

#[tokio::test]
async fn hostile_inputs_get_the_right_4xx_and_store_nothing() {
    let app = chat_app(Script::default()).start().await;
    let url = format!("/api/chat/{PUBLIC}");
    let alice = token_for(ALICE);
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "malformed json",
            "{\"prompt\": ".into(),
            "application/json",
            400,
            "malformed_json",
        ),
        (
            "wrong content type",
            "{\"prompt\":\"hi\"}".into(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            // Over chat's own limit (1 MiB: `useChat` sends whole conversations).
            "huge body",
            format!("{{\"prompt\":\"{}\"}}", "a".repeat(1_100_000)),
            "application/json",
            413,
            "payload_too_large",
        ),
        (
            "empty prompt",
            "{\"prompt\":\"\"}".into(),
            "application/json",
            400,
            "invalid_parameter",
        ),
        (
            "blank prompt",
            "{\"prompt\":\"  \\n \"}".into(),
            "application/json",
            400,
            "invalid_parameter",
        ),
        (
            "oversized prompt",
            format!("{{\"prompt\":\"{}\"}}", "é".repeat(4001)),
            "application/json",
            400,
            "invalid_parameter",
        ),
        (
            "number prompt",
            "{\"prompt\":42}".into(),
            "application/json",
            400,
            "invalid_parameter",
        ),
        (
            "array prompt",
            "{\"prompt\":[\"hi\"]}".into(),
            "application/json",
            400,
            "invalid_parameter",
        ),
        (
            "null prompt",
            "{\"prompt\":null}".into(),
            "application/json",
            400,
            "invalid_parameter",
        ),
        (
            "missing prompt",
            "{\"message\":\"hi\"}".into(),
            "application/json",
            400,
            "invalid_parameter",
        ),
        (
            "NUL in prompt",
            "{\"prompt\":\"a\\u0000b\"}".into(),
            "application/json",
            400,
            "invalid_parameter",
        ),
        (
            "not an object",
            "[1,2]".into(),
            "application/json",
            400,
            "invalid_parameter",
        ),
    ];
    for (name, body, ct, status, code) in cases {
        let resp = app.post_body(&url, ct, body).bearer(&alice).send().await;
        assert_eq!(resp.status.as_u16(), status, "{name}");
        assert_eq!(resp.error_code(), code, "{name}: {}", resp.text());
    }
    // A huge body: the server answers 413 without reading it all, which only a real socket
    // shows, so write it over one (ignoring the broken pipe) and read the answer.
    let served = app.serve().await;
    let (status, body) = raw_post(&served, &url, &alice, 2_000_000).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    // An id that can't be one we issued is a 400 naming `chatId`, as on every route.
    for (path, status) in [
        ("/api/chat/unknown_companion", 404),
        ("/api/chat/x'%20OR%201=1--", 400),
        ("/api/chat/%E2%80%AE%F0%9F%A6%80", 400),
        (&*format!("/api/chat/{}", "a".repeat(300)), 400),
        ("/api/chat/a%00b", 400),
        ("/api/chat", 400),
    ] {
        let resp = app
            .post_json(path, &json!({"prompt": "hi"}))
            .bearer(&alice)
            .send()
            .await;
        assert_eq!(resp.status.as_u16(), status, "{path}");
    }
    let resp = app
        .post_json(&url, &json!({"prompt": "hi"}))
        .bearer("not.a.token")
        .send()
        .await;
    assert_eq!(resp.status, 401);
    let resp = app.request(Method::DELETE, &url).send().await;
    assert_eq!(resp.status, 405);
    assert_eq!(app.count("SELECT count(*) FROM \"Message\"").await, 0);
    assert_eq!(app.model().requests(), 0);

    // SQL-looking and odd Unicode prompts are just text, stored exactly.
    let odd = "'); DROP TABLE \"Message\"; -- \u{202E}ʇxǝʇ 👩‍👩‍👧 e\u{301} \u{FEFF}";
    let resp = chat(&app, PUBLIC, odd).signed_in(ALICE).send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(messages(&app, PUBLIC, ALICE).await[0].1, odd);
}

/// POSTs a JSON body of about `size` bytes over a raw connection; returns the status and body.
pub async fn raw_post(served: &Served, path: &str, token: &str, size: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = served.addr().to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = format!("{{\"prompt\":\"{}\"}}", "a".repeat(size));
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(body.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Runs the AI SDK check script (`tests/ai-sdk/check.mjs`, the pinned `ai`).
fn ai_sdk(mode: &str, url: &str, prompt: &str, token: Option<&str>) -> Value {
    let mut args = vec!["check.mjs", mode, url, prompt];
    args.extend(token);
    crate::ai_sdk::run_node(&args)
}

/// The AI SDK is a real HTTP client run by node, so the router is served on a real socket.
#[tokio::test]
async fn the_ai_sdk_reads_both_stream_formats() {
    let app = chat_app(Script::default()).start().await;
    let served = app.serve().await;
    let url = served.url(&format!("/api/chat/{PUBLIC}"));
    let alice = token_for(ALICE);
    let text = tokio::task::spawn_blocking({
        let url = url.clone();
        let alice = alice.clone();
        move || ai_sdk("text", &url, "hello", Some(&alice))
    })
    .await
    .unwrap();
    assert_eq!(text["completion"], "Hello from the model.", "{text}");
    assert_eq!(text["error"], Value::Null);

    let data = tokio::task::spawn_blocking({
        let url = url.clone();
        move || ai_sdk("data", &url, "hello", Some(&alice))
    })
    .await
    .unwrap();
    assert_eq!(data["completion"], "Hello from the model.", "{data}");
    assert_eq!(data["error"], Value::Null, "{data}");
    assert_eq!(data["invalid"], json!([]), "{data}");
    assert_eq!(data["text"], "Hello from the model.", "{data}");
    assert_eq!(data["headers"]["x-vercel-ai-ui-message-stream"], "v1");
    let types = data["chunkTypes"].as_array().unwrap();
    assert_eq!(types.first().unwrap(), "start");
    assert_eq!(types.last().unwrap(), "finish");
    // Every exchange was stored: one in text mode, two in data mode (the SDK's call, then the
    // script's own read of the same stream).
    let exchange = [
        ("user".to_string(), "hello".to_string()),
        ("assistant".to_string(), "Hello from the model.".to_string()),
    ];
    let three: Vec<(String, String)> = exchange.iter().cycle().take(6).cloned().collect();
    assert_eq!(messages(&app, PUBLIC, ALICE).await, three);

    // The SDK sees a mid-stream failure as an error with the partial text.
    app.model().set_script(failing(Failure::ErrorEventAfter(1)));
    let failed = tokio::task::spawn_blocking(move || ai_sdk("data", &url, "again", None))
        .await
        .unwrap();
    assert_eq!(failed["error"], "the model reported an error", "{failed}");
    assert_eq!(failed["text"], "Hello", "{failed}");
    assert_eq!(
        failed["chunkTypes"].as_array().unwrap().last().unwrap(),
        "error"
    );
}

#[tokio::test]
async fn the_limit_plus_first_request_is_429_with_headers_and_users_are_independent() {
    let app = chat_app(Script::default())
        .env("RATE_LIMIT_USER_REQUESTS", "3")
        // A day: windows are aligned to the epoch, and a test that straddles a boundary
        // would see the previous window's count weighted down (the algorithm, not a bug).
        .env("RATE_LIMIT_USER_WINDOW_MS", "86400000")
        .start()
        .await;
    for i in 0..3 {
        let resp = chat(&app, PUBLIC, &format!("q{i}"))
            .signed_in(ALICE)
            .send()
            .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.headers["x-ratelimit-limit"], "3");
        assert_eq!(
            resp.headers["x-ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
    }
    let resp = chat(&app, PUBLIC, "one more").signed_in(ALICE).send().await;
    assert_eq!(resp.status, 429);
    let h = &resp.headers;
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert_eq!(h["x-ratelimit-limit"], "3");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert!(h.contains_key("x-ratelimit-reset"));
    assert_eq!(resp.error_code(), "rate_limited");
    assert_eq!(
        messages(&app, PUBLIC, ALICE).await.len(),
        6,
        "the refused prompt is not stored"
    );
    assert_eq!(app.model().requests(), 3);

    let resp = chat(&app, PUBLIC, "hi").signed_in(BOB).send().await;
    assert_eq!(resp.status, 200);
}

fn anonymous_from(app: &TestApp, ip: &str, prompt: &str) -> TestRequest {
    chat(app, PUBLIC, prompt).header("x-forwarded-for", ip)
}

/// Two instances of the app stand for two processes: each has its own in-process state (L1
/// cache, per-process limiter), so only Redis can carry the count from one to the other.
#[tokio::test]
async fn the_anonymous_limit_holds_across_two_processes_sharing_redis() {
    let app = chat_app(Script::default())
        .cache(CacheKind::Redis)
        // A day-long window, so the test never straddles a window boundary.
        .env("RATE_LIMIT_ANON_WINDOW_MS", "86400000")
        .start()
        .await;
    let second = app.another_instance().await;
    // A fresh documentation /64 per run (a client's bucket is its /64).
    let client_ip = format!(
        "2001:db8:{:x}::1, 10.0.0.1",
        uuid::Uuid::new_v4().as_u128() as u16
    );
    let mut statuses = Vec::new();
    for i in 0..6 {
        let instance = if i % 2 == 0 { &app } else { &second };
        let resp = anonymous_from(instance, &client_ip, &format!("question {i}"))
            .send()
            .await;
        statuses.push(resp.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    // The count is in Redis, under the deployment's prefix.
    // Counted in the client's bucket: its IPv6 /64.
    let first_address = client_ip.split(',').next().unwrap();
    let bucket = gcbb::platform::client::ClientKey::of(first_address.parse().unwrap());
    let counter = app
        .app
        .cache
        .keyspace()
        .entry(&gcbb::cache::keys::rate_limit(
            "chat",
            &format!("ip:{bucket}"),
        ));
    let stored = app
        .redis_keys(&format!(
            "{}:*",
            counter.strip_prefix(&format!("{}:", app.prefix)).unwrap()
        ))
        .await;
    assert_eq!(stored.len(), 1, "one window's counter: {stored:?}");
    assert_eq!(
        app.model().requests(),
        5,
        "the refused question reached no model"
    );
    // Another address is not limited.
    let other = format!("2001:db8::1:{:x}", uuid::Uuid::new_v4().as_u128() as u16);
    assert_eq!(
        anonymous_from(&second, &other, "hi").send().await.status,
        200
    );
}

#[tokio::test]
async fn with_redis_down_a_per_process_limiter_takes_over_and_says_so() {
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let app = chat_app(Script::default())
        .cache(CacheKind::RedisAt(dead))
        .env("CACHE_TIMEOUT_MS", "200")
        .env("RATE_LIMIT_ANON_WINDOW_MS", "86400000")
        .start()
        .await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let resp = anonymous_from(&app, "203.0.113.7", &format!("q {i}"))
            .send()
            .await;
        statuses.push(resp.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    assert_eq!(
        app.model().requests(),
        5,
        "the refused question reached no model"
    );
    // The limiter says where the count is: in this process, since the cache is down.
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
    let limit = gcbb::chat::chat_limit(&app.app);
    let client = gcbb::platform::ratelimit::Client::of(&app.app, &headers, &Default::default());
    match gcbb::platform::ratelimit::check(&app.app, limit, &Viewer::Anonymous, &client).await {
        Err(ApiError::TooManyRequests(decision)) => {
            assert!(decision.local, "{decision:?}");
            assert_eq!(decision.remaining, 0);
        }
        other => panic!("the sixth question was let through: {other:?}"),
    }
}

#[tokio::test]
async fn an_anonymous_reply_is_cached_and_replayed_for_the_same_normalized_prompt() {
    let app = chat_app(Script::default()).start().await;
    let resp = chat(&app, PUBLIC, "What is Rust?").send().await;
    assert_eq!(resp.headers["x-cache"], "miss");
    assert_eq!(resp.text(), "Hello from the model.");
    // The reply is cached after the response, through wait_until.
    let key = anonymous_reply_key(PUBLIC, &Prompt::parse("What is Rust?".into()).unwrap());
    let cached = eventually(|| async {
        cached_reply(&app.app, &key).await.as_deref() == Some("Hello from the model.")
    })
    .await;
    assert!(cached, "the reply was never cached");
    let resp = chat(&app, PUBLIC, "  what is   RUST? ").send().await;
    assert_eq!(resp.headers["x-cache"], "hit");
    assert_eq!(resp.text(), "Hello from the model.");
    assert_eq!(app.model().requests(), 1);
    // The UI-message stream replays it too.
    let resp = chat(&app, PUBLIC, "what is rust?")
        .header("accept", "text/event-stream")
        .send()
        .await;
    let parts = resp.sse();
    assert_eq!(parts[2]["delta"], "Hello from the model.");
    assert_eq!(app.model().requests(), 1);
    assert_eq!(app.count("SELECT count(*) FROM \"Message\"").await, 0);
}
