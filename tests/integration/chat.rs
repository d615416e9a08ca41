//! `POST/GET /api/chat/:chatId` through a real `gcbb dev` process on a fresh database, against
//! the local model server, with real Clerk-style RS256 tokens; both stream formats are also
//! read with the AI SDK's own client code (`tests/ai-sdk`, run with node).

use std::process::Command;
use std::sync::LazyLock;
use std::time::Duration;

use futures_util::StreamExt;
use gcbb_cli::model_server::{Failure, LocalModelServer, Script};
use gcbb_cli::session_token::{clerk_claims, SigningKey};
use serde_json::{json, Value};

use crate::common::{fresh_db, TestDb};
use crate::model_server::{self, eventually};
use crate::support::sse_data_parts as sse_parts;
use crate::support::{binary, free_port, Server};

pub const ALICE: &str = "user_alice";
pub const BOB: &str = "user_bob";
pub const PUBLIC: &str = "comp_public";
pub const PRIVATE: &str = "comp_private_alice";
const SECOND: Duration = Duration::from_secs(1);

pub static KEYS: LazyLock<SigningKey> =
    LazyLock::new(|| SigningKey::generate().expect("RSA key generation"));

/// A session token for `user` as Clerk signs them.
pub fn token(user: &str) -> String {
    KEYS.sign(None, &clerk_claims(user, None, 300))
}

/// A fresh database, the model server, and `gcbb dev` serving both.
pub struct Env {
    /// Kept so the database lives as long as the test.
    pub _db: TestDb,
    pub pg: tokio_postgres::Client,
    pub model: LocalModelServer,
    pub server: Server,
    pub http: reqwest::Client,
}

pub async fn start(script: Script, env: &[(&str, &str)]) -> Env {
    let db = fresh_db().await;
    let pg = db.client().await;
    insert_fixtures(&pg).await;
    let model = model_server::start(script).await;
    let server = start_dev(&db, &model, env).await;
    Env {
        _db: db,
        pg,
        model,
        server,
        // No connection reuse: the server closes a connection whose body it refused unread
        // (413/415), and a reused one would race with that close.
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
    }
}

pub async fn start_dev(db: &TestDb, model: &LocalModelServer, env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let mut cmd: Command = binary(env!("CARGO_BIN_EXE_gcbb"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["dev", "--no-seed", "--port", &port.to_string()])
        .env("DATABASE_URL", &db.url)
        .env("OPENAI_BASE_URL", model.base_url())
        .env("OPENAI_API_KEY", "sk-local")
        .env("CLERK_JWT_KEY", &KEYS.public_pem);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Server::start(cmd, port).await
}

pub async fn insert_fixtures(pg: &tokio_postgres::Client) {
    pg.batch_execute(&format!(
        "INSERT INTO \"Category\" (\"id\", \"name\") VALUES ('cat_1', 'Friends');
         INSERT INTO \"Companion\" (\"id\", \"userId\", \"userName\", \"src\", \"name\", \"instructions\",
                                    \"private\", \"updatedAt\", \"categoryId\")
         VALUES ('{PUBLIC}', 'system', 'GCBB', '/a.png', 'Ada', 'You are Ada, a patient tutor.', false, now(), 'cat_1'),
                ('{PRIVATE}', '{ALICE}', 'alice', '/b.png', 'Secret', 'You are Alice''s secret friend.', true, now(), 'cat_1');"
    ))
    .await
    .unwrap();
}

impl Env {
    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    pub async fn post(&self, path: &str, user: Option<&str>, body: Value) -> reqwest::Response {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(u) = user {
            req = req.bearer_auth(token(u));
        }
        req.send().await.unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.pg.query_one(sql, &[]).await.unwrap().get(0)
    }

    pub async fn messages(&self, companion: &str, user: &str) -> Vec<(String, String)> {
        self.pg
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

    pub async fn tokens(&self, companion: &str, user: &str) -> (i32, Option<i32>) {
        let total: i32 = self
            .pg
            .query_one(
                "SELECT \"tokensBurned\" FROM \"Companion\" WHERE \"id\" = $1",
                &[&companion],
            )
            .await
            .unwrap()
            .get(0);
        let mine = self
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
}

/// Waits for an async condition.
pub async fn eventually_async<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check().await
}

#[tokio::test]
async fn a_signed_in_chat_streams_the_reply_stores_both_messages_and_accounts_usage_after() {
    let env = start(Script::default(), &[]).await;
    let resp = env
        .post(
            "/api/chat/comp_public",
            Some(ALICE),
            json!({"prompt": "Teach me Rust 🦀"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(resp.text().await.unwrap(), "Hello from the model.");

    assert_eq!(
        env.messages(PUBLIC, ALICE).await,
        vec![
            ("user".into(), "Teach me Rust 🦀".into()),
            ("assistant".into(), "Hello from the model.".into())
        ]
    );
    let req = env.model.last_request().unwrap();
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
    let arrived = eventually_async(SECOND * 10, || async {
        env.tokens(PUBLIC, ALICE).await == (16, Some(16))
    })
    .await;
    assert!(arrived, "tokens: {:?}", env.tokens(PUBLIC, ALICE).await);
    let updated: bool = env
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
    let resp = env
        .post(
            "/api/chat/comp_public",
            Some(ALICE),
            json!({"prompt": "More"}),
        )
        .await;
    assert_eq!(resp.text().await.unwrap(), "Hello from the model.");
    assert!(
        eventually_async(SECOND * 10, || async {
            env.tokens(PUBLIC, ALICE).await == (32, Some(32))
        })
        .await
    );
    // The second context holds the whole conversation so far.
    let req = env.model.last_request().unwrap();
    let roles: Vec<&str> = req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
}

#[tokio::test]
async fn the_context_is_the_instructions_and_the_last_twenty_messages_of_that_user() {
    let env = start(Script::default(), &[]).await;
    for i in 0..30 {
        env.pg
            .execute(
                "INSERT INTO \"Message\" (\"id\", \"role\", \"content\", \"createdAt\", \"updatedAt\", \"companionId\", \"userId\") \
                 VALUES ($1, 'user', $2, now() - make_interval(secs => 100 - $3::int), now(), $4, $5)",
                &[&format!("m{i}"), &format!("old {i}"), &i, &PUBLIC, &ALICE],
            )
            .await
            .unwrap();
    }
    // Bob's messages never reach Alice's context.
    env.pg
        .execute(
            "INSERT INTO \"Message\" (\"id\", \"role\", \"content\", \"updatedAt\", \"companionId\", \"userId\") \
             VALUES ('bob1', 'user', 'bob says', now(), $1, $2)",
            &[&PUBLIC, &BOB],
        )
        .await
        .unwrap();
    let resp = env
        .post(
            "/api/chat/comp_public",
            Some(ALICE),
            json!({"prompt": "newest"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    let req = env.model.last_request().unwrap();
    let msgs = req["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 21);
    assert_eq!(msgs[0]["role"], "system");
    assert_eq!(msgs[1]["content"], "old 11");
    assert_eq!(msgs[20]["content"], "newest");
    assert!(!req.to_string().contains("bob says"));
}

#[tokio::test]
async fn the_model_failing_before_the_first_token_is_502_and_the_prompt_stays_stored() {
    let env = start(
        Script {
            failure: Failure::Status(500),
            ..Script::default()
        },
        &[],
    )
    .await;
    let resp = env
        .post(
            "/api/chat/comp_public",
            Some(ALICE),
            json!({"prompt": "hello?"}),
        )
        .await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_unavailable");
    assert!(!body.to_string().contains("scripted failure"), "{body}");
    assert_eq!(
        env.messages(PUBLIC, ALICE).await,
        vec![("user".into(), "hello?".into())]
    );
}

#[tokio::test]
async fn the_model_failing_mid_stream_ends_with_an_error_part_and_the_partial_reply_is_stored() {
    let env = start(
        Script {
            failure: Failure::ErrorEventAfter(2),
            ..Script::default()
        },
        &[],
    )
    .await;
    let resp = env
        .http
        .post(env.url("/api/chat/comp_public"))
        .bearer_auth(token(ALICE))
        .header("accept", "text/event-stream")
        .json(&json!({"prompt": "tell me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-vercel-ai-ui-message-stream"], "v1");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let parts = sse_parts(&resp.text().await.unwrap());
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
        env.messages(PUBLIC, ALICE).await,
        vec![
            ("user".into(), "tell me".into()),
            ("assistant".into(), "Hello from".into())
        ]
    );
    // Without usage the tokens are estimated, and still arrive.
    assert!(
        eventually_async(SECOND * 10, || async {
            matches!(env.tokens(PUBLIC, ALICE).await, (n, Some(m)) if n > 0 && n == m)
        })
        .await
    );

    // A dropped connection mid-stream aborts the text stream (no clean end) and keeps the part.
    env.model.set_script(Script {
        failure: Failure::DropAfter(3),
        ..Script::default()
    });
    let resp = env
        .post(
            "/api/chat/comp_public",
            Some(BOB),
            json!({"prompt": "again"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text().await.is_err(),
        "the text stream must not end cleanly"
    );
    assert!(
        eventually_async(SECOND * 5, || async {
            env.messages(PUBLIC, BOB).await
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
    let env = start(
        Script {
            failure: Failure::Hang,
            ..Script::default()
        },
        &[("LLM_FIRST_TOKEN_TIMEOUT_MS", "400")],
    )
    .await;
    let resp = env
        .post(
            "/api/chat/comp_public",
            Some(ALICE),
            json!({"prompt": "wait"}),
        )
        .await;
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_timeout");
    assert_eq!(env.messages(PUBLIC, ALICE).await.len(), 1);
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_request_and_the_part_is_kept() {
    let env = start(
        Script {
            chunks: vec!["word ".into(); 100],
            chunk_gap: Duration::from_millis(50),
            ..Script::default()
        },
        &[],
    )
    .await;
    let resp = env
        .post(
            "/api/chat/comp_public",
            Some(ALICE),
            json!({"prompt": "long story"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"word"));
    drop(body);
    assert!(
        eventually(SECOND * 10, || env.model.cancelled() == 1).await,
        "the model server never saw the cancellation (completed: {})",
        env.model.completed()
    );
    assert_eq!(env.model.completed(), 0);
    // What was produced before the disconnect is stored, through wait_until.
    assert!(
        eventually_async(SECOND * 10, || async {
            let m = env.messages(PUBLIC, ALICE).await;
            m.len() == 2 && m[1].0 == "assistant" && m[1].1.starts_with("word ")
        })
        .await
    );
}

#[tokio::test]
async fn a_private_companion_is_404_for_everyone_but_its_owner_in_chat_and_history() {
    let env = start(Script::default(), &[]).await;
    let path = format!("/api/chat/{PRIVATE}");
    for user in [None, Some(BOB)] {
        let resp = env.post(&path, user, json!({"prompt": "hi"})).await;
        assert_eq!(resp.status(), 404, "{user:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    let resp = env
        .http
        .get(env.url(&path))
        .bearer_auth(token(BOB))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(env.count("SELECT count(*) FROM \"Message\"").await, 0);
    assert_eq!(env.model.requests(), 0);

    let resp = env.post(&path, Some(ALICE), json!({"prompt": "hi"})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "Hello from the model.");
    let resp = env
        .http
        .get(env.url(&path))
        .bearer_auth(token(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn history_is_the_viewers_own_messages_paged_with_a_before_cursor() {
    let env = start(Script::default(), &[]).await;
    for i in 0..7 {
        for (id, user) in [(format!("a{i}"), ALICE), (format!("b{i}"), BOB)] {
            env.pg
                .execute(
                    "INSERT INTO \"Message\" (\"id\", \"role\", \"content\", \"createdAt\", \"updatedAt\", \"companionId\", \"userId\") \
                     VALUES ($1, 'user', $1, timestamp '2025-01-01' + make_interval(secs => $2::int), now(), $3, $4)",
                    &[&id, &i, &PUBLIC, &user],
                )
                .await
                .unwrap();
        }
    }
    let get = |query: String, user: Option<&'static str>| {
        let mut req = env.http.get(env.url(&format!("/api/chat/{PUBLIC}{query}")));
        if let Some(u) = user {
            req = req.bearer_auth(token(u));
        }
        req.send()
    };
    let resp = get("?limit=3".into(), Some(ALICE)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    let page: Value = resp.json().await.unwrap();
    let ids = |p: &Value| -> Vec<String> {
        p["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&page), ["a4", "a5", "a6"]);
    assert_eq!(page["nextCursor"], "a4");
    assert_eq!(page["messages"][0]["role"], "user");
    assert!(page["messages"][0]["createdAt"]
        .as_str()
        .unwrap()
        .starts_with("2025-01-01T00:00:04"));
    let page: Value = get("?limit=3&before=a4".into(), Some(ALICE))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&page), ["a1", "a2", "a3"]);
    let page: Value = get("?limit=3&before=a1".into(), Some(ALICE))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&page), ["a0"]);
    assert_eq!(page["nextCursor"], Value::Null);

    // Bob's cursor is not Alice's; bad paging parameters are named; anonymous is 401.
    for (query, param) in [
        ("?before=b3", "before"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=abc", "limit"),
    ] {
        let resp = get(query.into(), Some(ALICE)).await.unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["param"], param, "{query}");
    }
    let resp = get(String::new(), None).await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = env
        .http
        .get(env.url("/api/chat/nope"))
        .bearer_auth(token(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn an_anonymous_chat_streams_and_stores_nothing() {
    let env = start(Script::default(), &[]).await;
    let resp = env
        .post("/api/chat/comp_public", None, json!({"prompt": "hi there"}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "Hello from the model.");
    let req = env.model.last_request().unwrap();
    assert_eq!(req["messages"].as_array().unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.count("SELECT count(*) FROM \"Message\"").await, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM \"UserBurnedTokens\"").await,
        0
    );
    assert_eq!(env.tokens(PUBLIC, ALICE).await.0, 0);
}

#[tokio::test]
async fn hostile_inputs_get_the_right_4xx_and_store_nothing() {
    let env = start(Script::default(), &[]).await;
    let url = env.url("/api/chat/comp_public");
    let alice = token(ALICE);
    let send = |body: reqwest::Body, content_type: &'static str| {
        env.http
            .post(&url)
            .bearer_auth(&alice)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(&str, reqwest::Body, &str, u16, &str)> = vec![
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
            "huge body",
            format!("{{\"prompt\":\"{}\"}}", "a".repeat(70_000)).into(),
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
            format!("{{\"prompt\":\"{}\"}}", "é".repeat(4001)).into(),
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
        let resp = send(body, ct).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{name}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
    }
    // A huge body: the server answers 413 without reading it all, so write it over a raw
    // socket (ignoring the broken pipe) and read the answer.
    let (status, body) = raw_post(&env.server, "/api/chat/comp_public", &alice, 1_000_000).await;
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
        let resp = env
            .http
            .post(env.url(path))
            .bearer_auth(&alice)
            .json(&json!({"prompt": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
    }
    let resp = env
        .http
        .post(&url)
        .header("authorization", "Bearer not.a.token")
        .json(&json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = env.http.delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(env.count("SELECT count(*) FROM \"Message\"").await, 0);
    assert_eq!(env.model.requests(), 0);

    // SQL-looking and odd Unicode prompts are just text, stored exactly.
    let odd = "'); DROP TABLE \"Message\"; -- \u{202E}ʇxǝʇ 👩‍👩‍👧 e\u{301} \u{FEFF}";
    let resp = env
        .post("/api/chat/comp_public", Some(ALICE), json!({"prompt": odd}))
        .await;
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();
    assert_eq!(env.messages(PUBLIC, ALICE).await[0].1, odd);
}

/// POSTs a JSON body of about `size` bytes over a raw connection; returns the status and body.
pub async fn raw_post(server: &Server, path: &str, token: &str, size: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://").to_owned();
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

/// Runs the AI SDK check script; installs the `ai` package first when missing.
fn ai_sdk(mode: &str, url: &str, prompt: &str, token: Option<&str>) -> Value {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("tests/ai-sdk");
    if !dir.join("node_modules/ai").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci failed in tests/ai-sdk");
    }
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir).args(["check.mjs", mode, url, prompt]);
    if let Some(t) = token {
        cmd.arg(t);
    }
    let out = cmd.output().expect("node runs");
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

#[tokio::test]
async fn the_ai_sdk_reads_both_stream_formats() {
    let env = start(Script::default(), &[]).await;
    let url = env.url("/api/chat/comp_public");
    let alice = token(ALICE);
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

    // The SDK sees a mid-stream failure as an error with the partial text.
    env.model.set_script(Script {
        failure: Failure::ErrorEventAfter(1),
        ..Script::default()
    });
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
    let env = start(
        Script::default(),
        &[
            ("RATE_LIMIT_USER_REQUESTS", "3"),
            // A day: windows are aligned to the epoch, and a test that straddles a boundary
            // would see the previous window's count weighted down (the algorithm, not a bug).
            ("RATE_LIMIT_USER_WINDOW_MS", "86400000"),
        ],
    )
    .await;
    for i in 0..3 {
        let resp = env
            .post(
                "/api/chat/comp_public",
                Some(ALICE),
                json!({"prompt": format!("q{i}")}),
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-ratelimit-limit"], "3");
        assert_eq!(
            resp.headers()["x-ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
        resp.text().await.unwrap();
    }
    let resp = env
        .post(
            "/api/chat/comp_public",
            Some(ALICE),
            json!({"prompt": "one more"}),
        )
        .await;
    assert_eq!(resp.status(), 429);
    let h = resp.headers();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert_eq!(h["x-ratelimit-limit"], "3");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert!(h.contains_key("x-ratelimit-reset"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(
        env.messages(PUBLIC, ALICE).await.len(),
        6,
        "the refused prompt is not stored"
    );
    assert_eq!(env.model.requests(), 3);

    let resp = env
        .post("/api/chat/comp_public", Some(BOB), json!({"prompt": "hi"}))
        .await;
    assert_eq!(resp.status(), 200);
}

async fn anonymous_from(env_server: &Server, ip: &str, prompt: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(env_server.url("/api/chat/comp_public"))
        .header("x-forwarded-for", ip)
        .json(&json!({"prompt": prompt}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_anonymous_limit_holds_across_two_processes_sharing_redis() {
    let redis = [
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        // A day-long window, so the test never straddles a window boundary.
        ("RATE_LIMIT_ANON_WINDOW_MS", "86400000"),
    ];
    let env = start(Script::default(), &redis).await;
    let second = start_dev(&env._db, &env.model, &redis).await;
    // A fresh documentation address per run: the counters live in the shared Redis.
    let client_ip = format!(
        "2001:db8::{:x}, 10.0.0.1",
        uuid::Uuid::new_v4().as_u128() as u16
    );
    let mut statuses = Vec::new();
    for i in 0..6 {
        let server = if i % 2 == 0 { &env.server } else { &second };
        let resp = anonymous_from(server, &client_ip, &format!("question {i}")).await;
        statuses.push(resp.status().as_u16());
        let _ = resp.bytes().await;
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    // Another address is not limited.
    let other = format!("2001:db8::1:{:x}", uuid::Uuid::new_v4().as_u128() as u16);
    assert_eq!(anonymous_from(&second, &other, "hi").await.status(), 200);
}

#[tokio::test]
async fn with_redis_down_a_per_process_limiter_takes_over_and_says_so() {
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let env = start(
        Script::default(),
        &[
            ("REDIS_URL", dead.as_str()),
            ("CACHE_TIMEOUT_MS", "200"),
            ("RATE_LIMIT_ANON_WINDOW_MS", "86400000"),
        ],
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let resp = anonymous_from(&env.server, "203.0.113.7", &format!("q {i}")).await;
        statuses.push(resp.status().as_u16());
        let _ = resp.bytes().await;
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    assert!(
        env.server.output().contains("per-process limiter"),
        "{}",
        env.server.output()
    );
}

#[tokio::test]
async fn an_anonymous_reply_is_cached_and_replayed_for_the_same_normalized_prompt() {
    let env = start(Script::default(), &[]).await;
    let resp = env
        .post(
            "/api/chat/comp_public",
            None,
            json!({"prompt": "What is Rust?"}),
        )
        .await;
    assert_eq!(resp.headers()["x-cache"], "miss");
    assert_eq!(resp.text().await.unwrap(), "Hello from the model.");
    let replayed = eventually_async(SECOND * 5, || async {
        let resp = env
            .post(
                "/api/chat/comp_public",
                None,
                json!({"prompt": "  what is   RUST? "}),
            )
            .await;
        let hit = resp.headers()["x-cache"] == "hit";
        let text = resp.text().await.unwrap();
        hit && text == "Hello from the model."
    })
    .await;
    assert!(replayed);
    assert_eq!(env.model.requests(), 1);
    // The UI-message stream replays it too.
    let resp = env
        .http
        .post(env.url("/api/chat/comp_public"))
        .header("accept", "text/event-stream")
        .json(&json!({"prompt": "what is rust?"}))
        .send()
        .await
        .unwrap();
    let parts = sse_parts(&resp.text().await.unwrap());
    assert_eq!(parts[2]["delta"], "Hello from the model.");
    assert_eq!(env.model.requests(), 1);
    assert_eq!(env.count("SELECT count(*) FROM \"Message\"").await, 0);
}
