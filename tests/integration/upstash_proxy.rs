//! `gcbb upstash-proxy` as Upstash's own SDKs and a careless client meet it: `@upstash/redis`
//! and `@upstash/ratelimit` (`tests/upstash-sdk`, run with node) against a real proxy process;
//! Upstash's protocol over raw HTTP (base64, the path style, script flags); and the safety
//! rules — refused commands, transactions on their own connection, flushes behind a flag, and
//! a Redis that is really down, shut down or frozen.
//!
//! Every proxy here serves a Redis server the test starts on a free port (the same
//! `redis-server` as the shared one): a refused command that slipped through would flush or
//! shut down that one, not the Redis the other tests share. Effects are read back from Redis
//! directly, never through the proxy.

use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use gcbb_test_support::node::{node_json, node_project, npm_ci_unless_installed};

/// `@upstash/redis` checks in `tests/upstash-sdk/check.mjs`: 33 scenarios, run by a client
/// with auto-pipelining (its default: everything through `/pipeline`) and one without (`/`).
const REDIS_SDK_CHECKS: u64 = 66;
/// `@upstash/ratelimit` checks: 6 scenarios for each of its three limiters.
const RATELIMIT_SDK_CHECKS: u64 = 18;

/// A Redis server of the test's own, on a free port; killed when dropped.
type ScratchRedis = gcbb_test_support::redis::OwnRedis;

/// A `gcbb upstash-proxy` process in front of a Redis, and how to talk to it.
type Proxy = gcbb_test_support::upstash::UpstashProxy;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn error_text(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error reply: {body}"))
}

// ---------------------------------------------------------------- Upstash's own SDKs

static NPM_CI: Once = Once::new();

/// Runs `tests/upstash-sdk/check.mjs` (installing the pinned SDKs first when missing) and
/// returns what it printed.
fn upstash_sdk(mode: &str, url: &str, token: &str, prefix: &str) -> Value {
    let dir = node_project("upstash-sdk");
    NPM_CI.call_once(|| {
        npm_ci_unless_installed(&dir, &["@upstash/redis", "@upstash/ratelimit"]);
    });
    node_json(&dir, &["check.mjs", mode, url, token, prefix])
}

/// Runs one SDK's checks against `proxy`; asserts every one passed, and how many ran.
async fn run_sdk(proxy: &Proxy, mode: &'static str, prefix: &str, expected: u64) -> Value {
    let (url, token, prefix) = (proxy.url(""), proxy.token.clone(), prefix.to_owned());
    let out = tokio::task::spawn_blocking(move || upstash_sdk(mode, &url, &token, &prefix))
        .await
        .unwrap();
    println!(
        "{} {}: {}/{} checks pass",
        out["client"].as_str().unwrap_or("?"),
        out["version"].as_str().unwrap_or("?"),
        out["passed"],
        out["total"]
    );
    assert_eq!(
        out["failures"],
        json!([]),
        "{}",
        serde_json::to_string_pretty(&out["failures"]).unwrap()
    );
    assert_eq!(out["total"], json!(expected), "{}", out["checks"]);
    assert_eq!(out["passed"], out["total"]);
    out
}

#[tokio::test]
async fn the_upstash_redis_sdk_passes_every_check_through_the_proxy() {
    let redis = ScratchRedis::start().await;
    let proxy = Proxy::start(&redis.url(), &[]).await;
    let out = run_sdk(&proxy, "redis", "sdk", REDIS_SDK_CHECKS).await;
    assert_eq!(
        out["version"], "1.39.0",
        "the version package-lock.json pins"
    );

    // What the SDK wrote is in Redis, byte for byte.
    for client in ["auto", "direct"] {
        let large: usize = redis::cmd("STRLEN")
            .arg(format!("sdk:{client}:large"))
            .query_async(&mut redis.conn().await)
            .await
            .unwrap();
        assert_eq!(large, 5 * 1024 * 1024, "{client}");
        assert_eq!(
            redis.get(&format!("sdk:{client}:kept")).await,
            Some("kept ✓".as_bytes().to_vec()),
            "refused FLUSHALL and FLUSHDB left the data alone ({client})"
        );
        assert_eq!(
            redis.get(&format!("sdk:{client}:ключ-🔑-中文")).await,
            Some(
                "emoji 🦀 ✓ 中文 ñ \u{0} nul \u{2028} sep"
                    .as_bytes()
                    .to_vec()
            ),
        );
        assert_eq!(
            redis.get(&format!("sdk:{client}:kl")).await,
            Some(b"again".to_vec()),
            "the allow-key-locking script ran, by EVAL and by EVALSHA"
        );
        assert_eq!(redis.get(&format!("sdk:{client}:ro")).await, None);
        assert_eq!(
            redis.get(&format!("sdk:{client}:canary")).await,
            Some(b"alive".to_vec()),
            "the scripts built at run time flushed nothing ({client})"
        );
    }
}

#[tokio::test]
async fn the_upstash_ratelimit_sdk_limits_gets_remaining_and_resets_through_the_proxy() {
    let redis = ScratchRedis::start().await;
    let proxy = Proxy::start(&redis.url(), &[]).await;
    let out = run_sdk(&proxy, "ratelimit", "rl-test", RATELIMIT_SDK_CHECKS).await;
    assert_eq!(
        out["version"], "2.2.0",
        "the version package-lock.json pins"
    );

    // After the reset each limiter counted user-1 once more: the counters in Redis say so.
    let mut conn = redis.conn().await;
    for window in ["slidingWindow", "fixedWindow"] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("rl-test:rl:{window}:user-1:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!keys.is_empty(), "{window} keeps user-1's counter");
        let mut used = 0;
        for key in keys {
            let n: i64 = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            used += n;
        }
        assert_eq!(used, 1, "{window}: one request since the reset");
    }
    let tokens: String = redis::cmd("HGET")
        .arg("rl-test:rl:tokenBucket:user-1")
        .arg("tokens")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        tokens, "2",
        "the bucket holds 3 less the one taken since the reset"
    );
}

// ---------------------------------------------------------------- Upstash's protocol

#[tokio::test]
async fn simple_strings_are_base64_like_bulk_strings_and_only_a_top_level_ok_stays_plain() {
    let redis = ScratchRedis::start().await;
    let proxy = Proxy::start(&redis.url(), &[]).await;

    assert_eq!(
        proxy.post_base64("/", json!(["SET", "k", "vé"])).await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(redis.get("k").await, Some("vé".as_bytes().to_vec()));
    for (command, result) in [
        (json!(["PING"]), json!(b64(b"PONG"))),
        (json!(["TYPE", "k"]), json!(b64(b"string"))),
        (json!(["GET", "k"]), json!(b64("vé".as_bytes()))),
        (json!(["GET", "missing"]), Value::Null),
        (json!(["APPEND", "k", "!"]), json!(4)),
        (
            json!([
                "EVAL",
                "return {redis.status_reply('OK'), 'x', {1, false}}",
                0
            ]),
            json!([b64(b"OK"), b64(b"x"), [1, null]]),
        ),
        (
            json!(["EVAL", "return redis.status_reply('OK')", 0]),
            json!("OK"),
        ),
    ] {
        assert_eq!(
            proxy.post_base64("/", command.clone()).await,
            (200, json!({ "result": result })),
            "{command}"
        );
    }
    // Each reply of a pipeline and of a transaction is encoded on its own; errors never are.
    let batch = json!([["SET", "t", "x"], ["PING"], ["GET", "t"], ["INCR", "t"]]);
    let expected = json!([
        {"result": "OK"},
        {"result": b64(b"PONG")},
        {"result": b64(b"x")},
        {"error": "ERR value is not an integer or out of range"}
    ]);
    assert_eq!(
        proxy.post_base64("/pipeline", batch.clone()).await,
        (200, expected.clone())
    );
    assert_eq!(
        proxy.post_base64("/multi-exec", batch).await,
        (200, expected)
    );
    assert_eq!(redis.get("t").await, Some(b"x".to_vec()));
    // Without the header, strings are text.
    assert_eq!(
        proxy.post("/", json!(["PING"])).await,
        (200, json!({"result": "PONG"}))
    );
}

#[tokio::test]
async fn path_style_commands_run_with_a_bearer_or_a_token_query_and_append_the_post_body() {
    let redis = ScratchRedis::start().await;
    let proxy = Proxy::start(&redis.url(), &[]).await;

    assert_eq!(proxy.get("/ping").await, (200, json!({"result": "PONG"})));
    assert_eq!(
        proxy.get("/set/a%2Fb%20c/x+y").await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(redis.get("a/b c").await, Some(b"x+y".to_vec()));
    let with_query = |path: &str, token: &str| format!("{}?_token={token}", proxy.url(path));
    let resp = proxy
        .http
        .get(with_query("/get/a%2Fb%20c", &proxy.token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"result": "x+y"})
    );

    // A POST body is the last argument, binary as it is; the query's parameters follow it.
    let resp = proxy
        .http
        .post(format!("{}?EX=100", proxy.url("/set/bin")))
        .bearer_auth(&proxy.token)
        .body(b"\xff\x00{\"j\":1}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(redis.get("bin").await, Some(b"\xff\x00{\"j\":1}".to_vec()));
    let ttl: i64 = redis::cmd("TTL")
        .arg("bin")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert!(
        (1..=100).contains(&ttl),
        "EX 100 came from the query: {ttl}"
    );
    let resp = proxy
        .http
        .get(proxy.url("/get/bin"))
        .bearer_auth(&proxy.token)
        .header("Upstash-Encoding", "base64")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"result": b64(b"\xff\x00{\"j\":1}")})
    );

    // A wrong or missing token is 401 and runs nothing.
    for url in [
        with_query("/set/denied/1", "wrong"),
        proxy.url("/set/denied/1"),
    ] {
        let resp = proxy.http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"error": "Unauthorized"})
        );
    }
    assert_eq!(redis.get("denied").await, None);

    // Methods Upstash doesn't serve are 405, with Allow.
    let resp = proxy
        .http
        .delete(proxy.url("/del/a%2Fb%20c"))
        .bearer_auth(&proxy.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "HEAD, GET, POST, PUT");
    assert_eq!(redis.get("a/b c").await, Some(b"x+y".to_vec()));
    let (status, _) = proxy.get("/pipeline").await;
    assert_eq!(status, 405, "a pipeline is a POST");
    let (status, body) = proxy.get("/").await;
    assert_eq!(status, 400);
    assert!(error_text(&body).starts_with("ERR no command"), "{body}");
}

#[tokio::test]
async fn upstash_only_script_flags_are_dropped_and_evalsha_finds_the_script_by_the_clients_digest()
{
    let redis = ScratchRedis::start().await;
    let proxy = Proxy::start(&redis.url(), &[]).await;
    let script = "#!lua flags=allow-key-locking\nreturn redis.call('SET', KEYS[1], ARGV[1])";
    let sent_digest = redis::Script::new(script).get_hash().to_owned();
    let redis_digest = redis::Script::new("#!lua\nreturn redis.call('SET', KEYS[1], ARGV[1])")
        .get_hash()
        .to_owned();

    assert_eq!(
        proxy
            .post("/", json!(["EVAL", script, 1, "k", "by-eval"]))
            .await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(redis.get("k").await, Some(b"by-eval".to_vec()));
    assert_eq!(
        proxy.post("/", json!(["SCRIPT", "LOAD", script])).await,
        (200, json!({"result": sent_digest})),
        "SCRIPT LOAD answers the digest of the script sent, as Upstash does"
    );
    assert_eq!(
        proxy
            .post("/", json!(["EVALSHA", sent_digest, 1, "k", "by-evalsha"]))
            .await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(redis.get("k").await, Some(b"by-evalsha".to_vec()));
    assert_eq!(
        proxy
            .post(
                "/",
                json!(["SCRIPT", "EXISTS", sent_digest, "0".repeat(40)])
            )
            .await,
        (200, json!({"result": [1, 0]}))
    );
    // Redis itself holds the script without the Upstash flag.
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&redis_digest)
        .arg(&sent_digest)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(exists, [1, 0]);

    // Flags Redis knows are kept (a read-only script still can't write)...
    let (status, body) = proxy
        .post(
            "/",
            json!([
                "EVAL",
                "#!lua flags=no-writes,allow-key-locking\nreturn redis.call('SET', KEYS[1], 'x')",
                1,
                "ro"
            ]),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        error_text(&body).contains("Write commands are not allowed"),
        "{body}"
    );
    assert_eq!(redis.get("ro").await, None);
    // ...and a flag neither knows is still Redis's error.
    let (status, body) = proxy
        .post(
            "/",
            json!(["EVAL", "#!lua flags=allow-key-lockin\nreturn 1", 0]),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error_text(&body).contains("Unexpected flag"), "{body}");
}

// ---------------------------------------------------------------- safety

#[tokio::test]
async fn every_refused_command_family_is_a_400_and_reaches_no_redis() {
    let redis = ScratchRedis::start().await;
    let proxy = Proxy::start(&redis.url(), &[]).await;
    let mut direct = redis.conn().await;
    let _: () = redis::cmd("SET")
        .arg("sentinel")
        .arg("here")
        .query_async(&mut direct)
        .await
        .unwrap();
    let maxmemory_before: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut direct)
        .await
        .unwrap();

    let started = Instant::now();
    for (command, named) in [
        (json!(["FLUSHALL"]), "FLUSHALL"),
        (json!(["flushdb", "ASYNC"]), "FLUSHDB"),
        (json!(["Config", "SET", "maxmemory", "1"]), "CONFIG"),
        (json!(["SHUTDOWN", "NOSAVE"]), "SHUTDOWN"),
        (json!(["CLIENT", "KILL", "TYPE", "normal"]), "CLIENT KILL"),
        (json!(["client", "pause", "5000"]), "CLIENT PAUSE"),
        (json!(["SELECT", "3"]), "SELECT"),
        (json!(["HELLO", "3"]), "HELLO"),
        (json!(["MONITOR"]), "MONITOR"),
        (json!(["SUBSCRIBE", "c"]), "SUBSCRIBE"),
        (json!(["psubscribe", "c*"]), "PSUBSCRIBE"),
        (json!(["SSUBSCRIBE", "c"]), "SSUBSCRIBE"),
        (json!(["UNSUBSCRIBE"]), "UNSUBSCRIBE"),
        (json!(["BLPOP", "q", 0]), "BLPOP"),
        (json!(["brpop", "q", 0]), "BRPOP"),
        (json!(["BLMOVE", "q", "r", "LEFT", "RIGHT", 0]), "BLMOVE"),
        (json!(["BRPOPLPUSH", "q", "r", 0]), "BRPOPLPUSH"),
        (json!(["BLMPOP", 0, 1, "q", "LEFT"]), "BLMPOP"),
        (json!(["BZPOPMIN", "z", 0]), "BZPOPMIN"),
        (json!(["BZPOPMAX", "z", 0]), "BZPOPMAX"),
        (json!(["BZMPOP", 0, 1, "z", "MIN"]), "BZMPOP"),
        (json!(["XREAD", "BLOCK", 0, "STREAMS", "s", "$"]), "XREAD"),
        (
            json!([
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                0,
                "STREAMS",
                "s",
                ">"
            ]),
            "XREADGROUP",
        ),
        (json!(["WAIT", 1, 0]), "WAIT"),
        (json!(["WAITAOF", 1, 1, 0]), "WAITAOF"),
        (json!(["MULTI"]), "MULTI"),
        (json!(["EXEC"]), "EXEC"),
        (json!(["DISCARD"]), "DISCARD"),
        (json!(["WATCH", "k"]), "WATCH"),
        (json!(["UNWATCH"]), "UNWATCH"),
        (json!(["DEBUG", "SLEEP", "3"]), "DEBUG"),
        (json!(["SAVE"]), "SAVE"),
        (json!(["BGSAVE"]), "BGSAVE"),
        (json!(["REPLICAOF", "127.0.0.1", "1"]), "REPLICAOF"),
        (json!(["SLAVEOF", "127.0.0.1", "1"]), "SLAVEOF"),
        (
            json!(["MIGRATE", "127.0.0.1", 1, "sentinel", 0, 1000]),
            "MIGRATE",
        ),
        (json!(["MODULE", "LIST"]), "MODULE"),
        (json!(["ACL", "SETUSER", "intruder", "on"]), "ACL"),
        (json!(["FAILOVER"]), "FAILOVER"),
        (json!(["SWAPDB", 0, 1]), "SWAPDB"),
        (json!(["SCRIPT", "KILL"]), "SCRIPT KILL"),
        (json!(["FUNCTION", "FLUSH"]), "FUNCTION FLUSH"),
        (
            json!(["EVAL", "return redis.call('FLUSHDB')", 0]),
            "a script",
        ),
    ] {
        let (status, body) = proxy.post("/", command.clone()).await;
        assert_eq!(status, 400, "{command}: {body}");
        let text = error_text(&body);
        assert!(
            text.starts_with(&format!("ERR {named} is refused by gcbb upstash-proxy: ")),
            "{command}: {text}"
        );
    }
    // The path style is checked the same way.
    let (status, body) = proxy.get("/flushall").await;
    assert_eq!(status, 400);
    assert!(error_text(&body).starts_with("ERR FLUSHALL is refused"));

    // Nothing was run: nothing blocked or slept, the data, the settings, the database and our
    // own connection to Redis are as they were, and the proxy still answers.
    assert!(started.elapsed() < Duration::from_secs(3), "nothing waited");
    assert_eq!(redis.get("sentinel").await, Some(b"here".to_vec()));
    let maxmemory_after: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(maxmemory_after, maxmemory_before);
    let pong: String = redis::cmd("PING").query_async(&mut direct).await.unwrap();
    assert_eq!(pong, "PONG", "CLIENT KILL did not reach Redis");
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(users, ["default"]);
    assert_eq!(
        proxy.post("/", json!(["SET", "after", "1"])).await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(
        redis.get("after").await,
        Some(b"1".to_vec()),
        "in database 0"
    );
}

#[tokio::test]
async fn a_pipeline_or_transaction_with_one_refused_command_runs_none_of_it() {
    let redis = ScratchRedis::start().await;
    let proxy = Proxy::start(&redis.url(), &[]).await;
    for path in ["/pipeline", "/multi-exec"] {
        let (status, body) = proxy
            .post(
                path,
                json!([
                    ["SET", "a", "1"],
                    ["INCR", "n"],
                    ["flushAll"],
                    ["SET", "b", "2"]
                ]),
            )
            .await;
        assert_eq!(status, 400, "{path}: {body}");
        let text = error_text(&body);
        assert!(text.starts_with("ERR FLUSHALL is refused"), "{text}");
        assert!(text.contains("command 3 of 4; none of them ran"), "{text}");
        for key in ["a", "n", "b"] {
            assert_eq!(redis.get(key).await, None, "{path}: {key} was not written");
        }
    }
}

#[tokio::test]
async fn a_multi_sent_to_the_root_is_refused_and_the_next_client_is_unaffected() {
    let redis = ScratchRedis::start().await;
    let proxy = Proxy::start(&redis.url(), &[]).await;
    let (status, body) = proxy.post("/", json!(["MULTI"])).await;
    assert_eq!(status, 400);
    assert!(error_text(&body).contains("/multi-exec"), "{body}");

    // Another client: its SET runs at once (it is not queued in a transaction).
    let other = reqwest::Client::new();
    let resp = other
        .post(proxy.url("/"))
        .bearer_auth(&proxy.token)
        .json(&json!(["SET", "k", "v"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"result": "OK"}));
    assert_eq!(redis.get("k").await, Some(b"v".to_vec()));
    assert_eq!(
        proxy.post("/", json!(["GET", "k"])).await,
        (200, json!({"result": "v"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_exec_transactions_never_interleave_with_other_clients() {
    let redis = ScratchRedis::start().await;
    let proxy = std::sync::Arc::new(Proxy::start(&redis.url(), &[]).await);
    const ROUNDS: usize = 25;
    const STEPS: usize = 5;
    let incrs = || Value::Array(vec![json!(["INCR", "counter"]); STEPS]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..ROUNDS {
        let (p, body) = (proxy.clone(), incrs());
        tasks.spawn(async move { ("tx", p.post("/multi-exec", body).await) });
        let (p, body) = (proxy.clone(), incrs());
        tasks.spawn(async move { ("pipeline", p.post("/pipeline", body).await) });
        let p = proxy.clone();
        tasks.spawn(async move { ("single", p.post("/", json!(["INCR", "counter"])).await) });
    }
    while let Some(done) = tasks.join_next().await {
        let (kind, (status, body)) = done.unwrap();
        assert_eq!(status, 200, "{kind}: {body}");
        match kind {
            "single" => assert!(body["result"].is_i64(), "{body}"),
            _ => {
                let values: Vec<i64> = body
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["result"].as_i64().unwrap_or_else(|| panic!("{body}")))
                    .collect();
                assert_eq!(values.len(), STEPS);
                if kind == "tx" {
                    // Nothing landed between the transaction's INCRs.
                    let first = values[0];
                    let consecutive: Vec<i64> = (first..first + STEPS as i64).collect();
                    assert_eq!(values, consecutive, "{body}");
                }
            }
        }
    }
    let total: i64 = redis::cmd("GET")
        .arg("counter")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(
        total,
        (ROUNDS * (2 * STEPS + 1)) as i64,
        "every INCR ran once"
    );

    // The transactions ran on connections of their own, closed after each: once the last one
    // is done, no connection to Redis has EXEC as its last command (the shared one would).
    let (status, _) = proxy.post("/multi-exec", incrs()).await;
    assert_eq!(status, 200);
    let mut direct = redis.conn().await;
    let mut clients = String::new();
    for _ in 0..100 {
        clients = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut direct)
            .await
            .unwrap();
        if !clients.contains(" cmd=exec ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!clients.contains(" cmd=exec "), "{clients}");
    assert!(
        clients.contains(" cmd=incr "),
        "the shared connection: {clients}"
    );
}

#[tokio::test]
async fn flushing_works_only_when_the_proxy_was_started_with_allow_flush() {
    let redis = ScratchRedis::start().await;
    let guarded = Proxy::start(&redis.url(), &[]).await;
    let allowed = Proxy::start(&redis.url(), &["--allow-flush"]).await;

    assert_eq!(
        guarded.post("/", json!(["SET", "k", "v"])).await,
        (200, json!({"result": "OK"}))
    );
    for command in [json!(["FLUSHDB"]), json!(["FLUSHALL", "SYNC"])] {
        let (status, body) = guarded.post("/", command).await;
        assert_eq!(status, 400);
        assert!(error_text(&body).contains("--allow-flush"), "{body}");
    }
    assert_eq!(redis.get("k").await, Some(b"v".to_vec()));

    assert_eq!(
        allowed.post("/", json!(["FLUSHDB"])).await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(redis.get("k").await, None);
    let _: () = redis::cmd("SET")
        .arg("k2")
        .arg("v")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(
        allowed.get("/flushall").await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(redis.get("k2").await, None);
    // The flag allows flushing, nothing else.
    let (status, _) = allowed.post("/", json!(["SWAPDB", 0, 1])).await;
    assert_eq!(status, 400);
}

/// Connect and command timeouts of the fault tests: short, so "within the timeout" is quick.
const FAULT_FLAGS: [&str; 4] = [
    "--connect-timeout-ms",
    "1000",
    "--command-timeout-ms",
    "1000",
];
/// The most a request may take with [`FAULT_FLAGS`]: both timeouts, and slack for a busy machine.
const FAULT_BOUND: Duration = Duration::from_millis(3500);

#[tokio::test]
async fn a_proxy_in_front_of_a_closed_port_starts_and_answers_503_at_once() {
    let proxy = Proxy::start("redis://127.0.0.1:1", &FAULT_FLAGS).await;
    for (path, body) in [
        ("/", json!(["PING"])),
        ("/pipeline", json!([["SET", "k", "v"]])),
        ("/multi-exec", json!([["SET", "k", "v"]])),
    ] {
        let started = Instant::now();
        let (status, reply) = proxy.post(path, body).await;
        assert!(
            started.elapsed() < FAULT_BOUND,
            "{path}: {:?}",
            started.elapsed()
        );
        assert_eq!(status, 503, "{path}: {reply}");
        let text = error_text(&reply);
        assert!(
            text.contains("Redis at 127.0.0.1:1 is unavailable"),
            "{path}: {text}"
        );
    }
    let (status, _) = proxy.get("/ping").await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn a_redis_shut_down_under_the_proxy_is_a_503_within_the_timeout_and_is_used_again_when_back()
{
    let mut redis = ScratchRedis::start().await;
    let port = redis.port;
    let proxy = Proxy::start(&redis.url(), &FAULT_FLAGS).await;
    assert_eq!(
        proxy.get("/set/k/before").await,
        (200, json!({"result": "OK"}))
    );

    // SHUTDOWN closes the connection it came on before answering.
    let _ = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async::<()>(&mut redis.conn().await)
        .await;
    redis.wait_exit().await;
    for _ in 0..2 {
        let started = Instant::now();
        let (status, body) = proxy.get("/get/k").await;
        assert!(started.elapsed() < FAULT_BOUND, "{:?}", started.elapsed());
        assert_eq!(status, 503, "{body}");
        assert!(
            error_text(&body).contains(&format!("Redis at 127.0.0.1:{port}")),
            "{body}"
        );
    }

    // A Redis back on the same port is used again by the same proxy.
    let redis = ScratchRedis::start_on(port).await;
    let mut answer = (0, Value::Null);
    for _ in 0..50 {
        answer = proxy.get("/set/k/after").await;
        if answer.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, (200, json!({"result": "OK"})));
    assert_eq!(redis.get("k").await, Some(b"after".to_vec()));
}

#[tokio::test]
async fn a_frozen_then_killed_redis_is_a_503_within_the_timeout() {
    let redis = ScratchRedis::start().await;
    let proxy = Proxy::start(&redis.url(), &FAULT_FLAGS).await;
    assert_eq!(proxy.get("/set/k/v").await, (200, json!({"result": "OK"})));

    // Frozen: the connection is open, nothing answers.
    redis.signal("STOP");
    for (path, body) in [
        ("/", json!(["GET", "k"])),
        ("/pipeline", json!([["GET", "k"]])),
        ("/multi-exec", json!([["GET", "k"]])),
    ] {
        let started = Instant::now();
        let (status, reply) = proxy.post(path, body).await;
        let took = started.elapsed();
        assert!(took < FAULT_BOUND, "{path}: {took:?}");
        assert_eq!(status, 503, "{path}: {reply}");
        assert!(
            error_text(&reply).contains("did not answer within"),
            "{reply}"
        );
    }
    redis.signal("CONT");
    let mut answer = (0, Value::Null);
    for _ in 0..50 {
        answer = proxy.get("/get/k").await;
        if answer.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        answer,
        (200, json!({"result": "v"})),
        "answers again once thawed"
    );

    // Killed: the connection drops, and a new one is refused at once.
    redis.signal("KILL");
    for _ in 0..2 {
        let started = Instant::now();
        let (status, body) = proxy.get("/get/k").await;
        assert!(started.elapsed() < FAULT_BOUND, "{:?}", started.elapsed());
        assert_eq!(status, 503, "{body}");
        assert!(error_text(&body).contains("unavailable"), "{body}");
    }
}

// ---------------------------------------------------------------- scripts, as strict as Upstash

/// Scripts that try to reach FLUSHALL past a check of the script's words: built names,
/// variables, arguments, aliases, indexing, the global table, compiled code, the debug library.
const FLUSH_BYPASSES: [&str; 16] = [
    "return redis.call('FLUSH'..'ALL')",
    "local c = 'FLUSH' return redis.call(c .. 'ALL')",
    "return redis.call(ARGV[1])",
    "return redis.call(string.char(70, 76, 85, 83, 72, 65, 76, 76))",
    "return redis.call(string.reverse('LLAHSULF'))",
    "return redis.call('FLUSH\\65LL')",
    "local r = redis return r.call(string.upper('flushall'))",
    "local c = redis.call return c(ARGV[1])",
    "return redis['call'](ARGV[1])",
    "return pcall(redis.call, ARGV[1])",
    "return redis.pcall(ARGV[1])",
    "return _G['re' .. 'dis'].call(ARGV[1])",
    "return getfenv(1).redis.call(ARGV[1])",
    "return loadstring('return redis.call(ARGV[1])')()",
    "return rawget(getfenv(0), 'redis').call(ARGV[1])",
    "return debug.getregistry()",
];

#[tokio::test]
async fn scripts_that_build_a_flush_at_run_time_are_refused_and_the_canary_key_stays() {
    let redis = ScratchRedis::start().await;
    let proxy = Proxy::start(&redis.url(), &[]).await;
    let mut direct = redis.conn().await;
    let _: () = redis::cmd("SET")
        .arg("canary")
        .arg("alive")
        .query_async(&mut direct)
        .await
        .unwrap();

    for script in FLUSH_BYPASSES {
        for command in [
            json!(["EVAL", script, 0, "FLUSHALL"]),
            json!(["EVAL_RO", script, 0, "FLUSHALL"]),
            json!(["SCRIPT", "LOAD", script]),
        ] {
            let (status, body) = proxy.post("/", command.clone()).await;
            assert_eq!(status, 400, "{command}: {body}");
            assert!(
                error_text(&body).starts_with("ERR a script is refused by gcbb upstash-proxy: "),
                "{command}: {body}"
            );
        }
        // In a pipeline, nothing of it runs.
        let (status, body) = proxy
            .post(
                "/pipeline",
                json!([["SET", "before", "1"], ["EVAL", script, 0, "FLUSHALL"]]),
            )
            .await;
        assert_eq!(status, 400, "{script}: {body}");
        assert_eq!(redis.get("before").await, None, "{script}");
        assert_eq!(
            redis.get("canary").await,
            Some(b"alive".to_vec()),
            "{script}"
        );
    }

    // A flushing script someone loaded into Redis directly, unchecked, is unknown to the
    // proxy: EVALSHA of its digest answers NOSCRIPT (as Upstash does for a script its database
    // never saw), and SCRIPT EXISTS says 0.
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('FLUSHALL')")
        .query_async(&mut direct)
        .await
        .unwrap();
    for path in ["/", "/pipeline"] {
        let command = json!(["EVALSHA", sha, 0]);
        let body = match path {
            "/" => command,
            _ => json!([command]),
        };
        let (_, reply) = proxy.post(path, body).await;
        let reply = if path == "/" { reply } else { reply[0].clone() };
        assert!(
            error_text(&reply).starts_with("NOSCRIPT"),
            "{path}: {reply}"
        );
    }
    assert_eq!(
        proxy.post("/", json!(["SCRIPT", "EXISTS", sha])).await,
        (200, json!({"result": [0]}))
    );

    // A function library is checked the same way.
    let (status, body) = proxy
        .post(
            "/",
            json!([
                "FUNCTION",
                "LOAD",
                "#!lua name=evil\nredis.register_function('f', function(k, a) return redis.call(a[1]) end)"
            ]),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Legitimate scripts still run: literal names, pcall's error, EVAL then EVALSHA.
    let script = "redis.call('SET', KEYS[1], ARGV[1]) return redis.pcall('INCR', KEYS[1])";
    let (status, body) = proxy
        .post("/", json!(["EVAL", script, 1, "k", "text"]))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("not an integer"), "{body}");
    let sha = redis::Script::new(script).get_hash().to_owned();
    assert_eq!(
        proxy.post("/", json!(["EVALSHA", sha, 1, "k", "5"])).await,
        (200, json!({"result": 6}))
    );
    assert_eq!(redis.get("canary").await, Some(b"alive".to_vec()));
    let keys: i64 = redis::cmd("DBSIZE").query_async(&mut direct).await.unwrap();
    assert_eq!(keys, 2, "the canary and k, nothing flushed");
}

/// Redis's default `busy-reply-threshold`: it reads a SCRIPT KILL only once a script has run
/// this long, so a runaway script is stopped after it however short the proxy's limit.
const REDIS_BUSY_THRESHOLD: Duration = Duration::from_millis(5000);

/// Starts `script_command` (a script that never ends) through `proxy`, then 20 other clients
/// at once; asserts the script's client gets the proxy's error, the others their answers.
async fn a_runaway_script_is_stopped(proxy: std::sync::Arc<Proxy>, script_command: Value) {
    let started = Instant::now();
    let runaway = {
        let proxy = proxy.clone();
        tokio::spawn(async move { proxy.post("/", script_command).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut others = tokio::task::JoinSet::new();
    for n in 0..20 {
        let proxy = proxy.clone();
        others.spawn(async move {
            let (path, body) = if n % 2 == 0 {
                ("/", json!(["GET", "canary"]))
            } else {
                ("/pipeline", json!([["INCR", "counter"], ["GET", "canary"]]))
            };
            (path, proxy.post(path, body).await, started.elapsed())
        });
    }
    let (status, body) = runaway.await.unwrap();
    let stopped_after = started.elapsed();
    assert_eq!(status, 400, "{body}");
    assert!(
        error_text(&body).contains("stopped it with SCRIPT KILL"),
        "{body}"
    );
    assert!(
        stopped_after < REDIS_BUSY_THRESHOLD + Duration::from_secs(3),
        "{stopped_after:?}"
    );
    let mut answered = 0;
    while let Some(done) = others.join_next().await {
        let (path, (status, body), took) = done.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        let canary = if path == "/" { &body } else { &body[1] };
        assert_eq!(canary, &json!({"result": "alive"}), "{path}: {body}");
        assert!(
            took < REDIS_BUSY_THRESHOLD + Duration::from_secs(4),
            "{took:?}"
        );
        answered += 1;
    }
    assert_eq!(answered, 20);
    println!("runaway script stopped after {stopped_after:?}; 20 other clients answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_script_is_killed_by_the_proxy_and_twenty_other_clients_are_answered() {
    let redis = ScratchRedis::start().await;
    let proxy =
        std::sync::Arc::new(Proxy::start(&redis.url(), &["--script-timeout-ms", "500"]).await);
    let mut direct = redis.conn().await;
    let _: () = redis::cmd("SET")
        .arg("canary")
        .arg("alive")
        .query_async(&mut direct)
        .await
        .unwrap();

    a_runaway_script_is_stopped(proxy.clone(), json!(["EVAL", "while true do end", 0])).await;
    // One that reads in its loop is stopped the same way (it wrote nothing).
    a_runaway_script_is_stopped(
        proxy.clone(),
        json!([
            "EVAL",
            "while true do redis.call('GET', KEYS[1]) end",
            1,
            "canary"
        ]),
    )
    .await;

    // Redis itself is answering again, to anyone: no BUSY.
    let pong: String = redis::cmd("PING").query_async(&mut direct).await.unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(redis.get("canary").await, Some(b"alive".to_vec()));
    let counter: i64 = redis::cmd("GET")
        .arg("counter")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(counter, 20, "each pipeline's INCR ran once");
    // And a short script still runs, not killed.
    assert_eq!(
        proxy
            .post(
                "/",
                json!(["EVAL", "return redis.call('GET', KEYS[1])", 1, "canary"])
            )
            .await,
        (200, json!({"result": "alive"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_function_is_killed_with_function_kill() {
    let redis = ScratchRedis::start().await;
    let proxy =
        std::sync::Arc::new(Proxy::start(&redis.url(), &["--script-timeout-ms", "500"]).await);
    let _: () = redis::cmd("SET")
        .arg("canary")
        .arg("alive")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let library =
        "#!lua name=spin\nredis.register_function('spin', function() while true do end end)";
    assert_eq!(
        proxy.post("/", json!(["FUNCTION", "LOAD", library])).await,
        (200, json!({"result": "spin"}))
    );
    a_runaway_script_is_stopped(proxy.clone(), json!(["FCALL", "spin", 0])).await;
}

#[tokio::test]
async fn script_flush_needs_allow_flush_and_keys_is_refused_past_upstashs_limit() {
    let redis = ScratchRedis::start().await;
    let proxy = Proxy::start(&redis.url(), &["--keys-limit", "10"]).await;
    let flusher = Proxy::start(&redis.url(), &["--allow-flush"]).await;

    // SCRIPT FLUSH would empty the script cache every client of the Redis shares.
    let (_, sha) = proxy.post("/", json!(["SCRIPT", "LOAD", "return 1"])).await;
    let sha = sha["result"].as_str().unwrap().to_owned();
    let (status, body) = proxy.post("/", json!(["SCRIPT", "FLUSH"])).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_text(&body).starts_with("ERR SCRIPT FLUSH is refused by gcbb upstash-proxy: "),
        "{body}"
    );
    let cached: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(cached, [1], "the script cache was not flushed");
    assert_eq!(
        flusher.post("/", json!(["SCRIPT", "FLUSH"])).await,
        (200, json!({"result": "OK"}))
    );

    // KEYS is answered for a database of up to --keys-limit keys, as Upstash does up to
    // 100,000, and refused past it (SCAN works at any size).
    let mut direct = redis.conn().await;
    for n in 0..10 {
        let _: () = redis::cmd("SET")
            .arg(format!("key:{n}"))
            .arg(n)
            .query_async(&mut direct)
            .await
            .unwrap();
    }
    let (status, body) = proxy.post("/", json!(["KEYS", "*"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"].as_array().unwrap().len(), 10);
    let _: () = redis::cmd("SET")
        .arg("key:10")
        .arg(10)
        .query_async(&mut direct)
        .await
        .unwrap();
    for (path, body) in [
        ("/", json!(["keys", "*"])),
        (
            "/pipeline",
            json!([["SET", "written", "1"], ["KEYS", "key:*"]]),
        ),
        (
            "/multi-exec",
            json!([["SET", "written", "1"], ["KEYS", "key:*"]]),
        ),
    ] {
        let (status, reply) = proxy.post(path, body).await;
        assert_eq!(status, 400, "{path}: {reply}");
        let text = error_text(&reply);
        assert!(
            text.starts_with(
                "ERR KEYS is refused by gcbb upstash-proxy: the database holds 11 keys"
            ),
            "{text}"
        );
        assert!(text.contains("use SCAN"), "{text}");
    }
    assert_eq!(
        redis.get("written").await,
        None,
        "nothing of the pipeline ran"
    );
    let (status, body) = proxy.get("/keys/*").await;
    assert_eq!(status, 400, "the path style too: {body}");
    let (status, body) = proxy
        .post("/", json!(["SCAN", 0, "MATCH", "key:*", "COUNT", 100]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"][1].as_array().unwrap().len(), 11);
    // Scripts use SCAN: KEYS is not among the commands a script may run.
    let (status, _) = proxy
        .post("/", json!(["EVAL", "return redis.call('KEYS', '*')", 0]))
        .await;
    assert_eq!(status, 400);
}

// ---------------------------------------------------------------- slow clients

/// Flags of the slow-client test: short, so each cut-off is quick to see.
const SLOW_CLIENT_FLAGS: [&str; 6] = [
    "--header-timeout-ms",
    "500",
    "--idle-timeout-ms",
    "1500",
    "--body-timeout-ms",
    "500",
];

/// Reads until the server closes the connection (or 10 s pass); what it sent, and when it
/// closed, counted from `since`.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream, since: Instant) -> (String, Duration) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let limit = Duration::from_secs(10);
    loop {
        match tokio::time::timeout(limit, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), since.elapsed())
}

#[tokio::test]
async fn a_client_that_sends_half_a_head_a_slow_body_or_nothing_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let redis = ScratchRedis::start().await;
    let proxy = Proxy::start(&redis.url(), &SLOW_CLIENT_FLAGS).await;
    let addr = proxy
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let connect = || async { tokio::net::TcpStream::connect(&addr).await.unwrap() };
    let slack = Duration::from_millis(700);

    // Half a head: cut off at the header timeout, well before the idle timeout.
    let mut tcp = connect().await;
    let started = Instant::now();
    tcp.write_all(b"POST / HTTP/1.1\r\nHost: proxy\r\nAuthori")
        .await
        .unwrap();
    let (reply, took) = read_until_closed(&mut tcp, started).await;
    assert!(
        took < Duration::from_millis(500) + slack,
        "half a head: {took:?}"
    );
    assert!(!reply.contains("200 OK"), "{reply}");

    // A head sent a byte at a time, each before the idle timeout: still cut off.
    let mut tcp = connect().await;
    let started = Instant::now();
    let head = format!(
        "GET /ping HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {}\r\n\r\n",
        proxy.token
    );
    let mut cut = false;
    for byte in head.as_bytes() {
        if tcp.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let (reply, took) = read_until_closed(&mut tcp, started).await;
    assert!(
        cut || !reply.contains("PONG"),
        "the dribbled head was served: {reply}"
    );
    assert!(took < Duration::from_secs(4), "dribbled head: {took:?}");

    // Nothing at all: cut off at the idle timeout.
    let mut tcp = connect().await;
    let started = Instant::now();
    let (_, took) = read_until_closed(&mut tcp, started).await;
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(1500) + slack,
        "idle: {took:?}"
    );

    // A body that stops, or dribbles: 408 at the body timeout, and the connection closes.
    for dribble in [false, true] {
        let mut tcp = connect().await;
        let body = br#"["SET","slow","1"]"#;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            proxy.token,
            body.len() + 100
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        tcp.write_all(&body[..4]).await.unwrap();
        if dribble {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if tcp.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
        let (reply, took) = read_until_closed(&mut tcp, started).await;
        assert!(
            reply.starts_with("HTTP/1.1 408"),
            "dribble {dribble}: {reply}"
        );
        assert!(reply.contains("did not arrive within 500 ms"), "{reply}");
        assert!(
            took < Duration::from_millis(500) + slack + Duration::from_millis(1500),
            "dribble {dribble}: {took:?}"
        );
    }
    assert_eq!(redis.get("slow").await, None);

    // A client that keeps its connection idle after a request is cut off too, while a brisk
    // one is served on the same connection as often as it asks.
    let mut tcp = connect().await;
    let request = format!(
        "GET /set/brisk/1 HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {}\r\n\r\n",
        proxy.token
    );
    for _ in 0..3 {
        use tokio::io::AsyncReadExt;
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let started = Instant::now();
    let (_, took) = read_until_closed(&mut tcp, started).await;
    assert!(
        took < Duration::from_millis(1500) + slack,
        "idle after a response: {took:?}"
    );
    assert_eq!(redis.get("brisk").await, Some(b"1".to_vec()));
}
