//! `gcbb dev`, run as a real process, since the process is what is under test: it creates,
//! migrates and seeds its database, prints its banner, serves every route of `vercel.json` and
//! `public/`, and on SIGTERM finishes the background work of the requests it answered.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::session::{clerk_env, token_for};
pub use crate::common::start_dev;
use crate::common::{absent_db, eventually, gcbb, migrations_dir, project_root, success_stdout};
use crate::support::{binary, free_port, Server};

/// Everything `gcbb dev` printed, once its banner has reached us. It binds its port before it
/// prints the banner, and the output is read by another thread, so a test that is connected may
/// still be ahead of the banner.
async fn banner(server: &Server) -> String {
    server.output_once_printed("listening on http://").await
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn gcbb_dev_creates_migrates_and_seeds_a_new_database_then_serves_health() {
    let db = absent_db();
    let mut server = start_dev(&db, &[]).await;

    let resp = reqwest::get(server.url("/api/health")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["database"]["ok"], true, "{body}");
    assert_eq!(body["cache"]["backend"], "memory");

    let out = banner(&server).await;
    assert!(out.contains("listening on http://127.0.0.1:"), "{out}");
    assert!(out.contains("/api/chat/:chatId"), "{out}");

    let client = db.client().await;
    let migrations = count(
        &client,
        "SELECT count(*) FROM _prisma_migrations WHERE finished_at IS NOT NULL",
    )
    .await;
    let files = std::fs::read_dir(migrations_dir())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("migration.sql").exists())
        .count() as i64;
    assert_eq!(migrations, files);
    assert_eq!(
        count(&client, "SELECT count(*) FROM \"Companion\"").await,
        40
    );
    assert!(count(&client, "SELECT count(*) FROM \"Companion\" WHERE private").await > 0);
    assert!(
        count(
            &client,
            "SELECT count(*) FROM \"Companion\" WHERE \"userId\" = 'system' AND NOT private"
        )
        .await
            > 0
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM \"GroupChat\" WHERE \"creatorId\" = 'system'"
        )
        .await,
        1
    );
    assert!(count(&client, "SELECT count(*) FROM \"Message\"").await > 0);

    // A second start on the same database applies nothing and seeds nothing.
    assert!(server.terminate().await);
    let server = start_dev(&db, &[]).await;
    let out = banner(&server).await;
    assert!(out.contains("0 applied now"), "{out}");
    assert!(out.contains("demo data   unchanged"), "{out}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM \"Companion\"").await,
        40
    );
}

#[tokio::test]
async fn every_rewrite_in_vercel_json_reaches_a_handler() {
    let db = absent_db();
    let server = start_dev(&db, &[]).await;
    let vercel: Value =
        serde_json::from_str(&std::fs::read_to_string(project_root().join("vercel.json")).unwrap())
            .unwrap();
    let rewrites = vercel["rewrites"].as_array().unwrap();
    assert!(!rewrites.is_empty());
    let http = reqwest::Client::new();
    for rw in rewrites {
        let source = rw["source"].as_str().unwrap();
        let path: String = source
            .split('/')
            .map(|seg| if seg.starts_with(':') { "some-id" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let mut reached = false;
        for method in ["GET", "POST", "PATCH"] {
            let resp = http
                .request(method.parse().unwrap(), server.url(&path))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            assert_ne!(status, 500, "{method} {path} answered 500");
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_ne!(
                body["error"]["code"], "route_not_found",
                "{method} {path} reached no function"
            );
            if status != 405 {
                reached = true;
            }
        }
        assert!(reached, "{source}: every method was refused");
    }
}

#[tokio::test]
async fn unknown_api_paths_are_404_json_and_only_public_files_are_served() {
    let db = absent_db();
    let server = start_dev(&db, &[]).await;

    let resp = reqwest::get(server.url("/api/does-not-exist"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_not_found");

    // No id: the chat function itself answers, naming the missing parameter.
    let resp = reqwest::get(server.url("/api/chat/")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["param"], "chatId");

    let resp = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("GCBB"));

    for leak in [
        "/Cargo.toml",
        "/src/lib.rs",
        "/../Cargo.toml",
        "/.env.example",
    ] {
        let resp = reqwest::get(server.url(leak)).await.unwrap();
        assert_eq!(resp.status(), 404, "{leak} was served");
    }

    let resp =
        reqwest::get(server.url("/api/health?x=%27%3B%20DROP%20TABLE%20x%3B--&q=%F0%9F%98%80"))
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn shutdown_finishes_the_background_work_of_answered_requests() {
    let db = absent_db();
    let env: Vec<(&str, String)> = clerk_env().into_iter().collect();
    let mut server = start_dev(&db, &env).await;
    let client = db.client().await;
    // Hold the token accounting that a signed-in chat hands to `wait_until`.
    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE \"UserBurnedTokens\" IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // cmp_demo_01 is a public demo companion.
    let resp = reqwest::Client::new()
        .post(server.url("/api/chat/cmp_demo_01"))
        .bearer_auth(token_for("user_demo_1"))
        .json(&json!({"prompt": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.text().await.unwrap().is_empty());
    let accounting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                      AND query ILIKE '%UserBurnedTokens%'";
    assert!(
        eventually(|| async { count(&client, accounting).await > 0 }).await,
        "the accounting never reached the lock"
    );

    server.send_sigterm();
    // The HTTP side is idle and shuts down at once; the process stays for its background work.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !server.has_exited(),
        "gcbb dev exited with background work pending:\n{}",
        server.output()
    );
    blocker.batch_execute("COMMIT").await.unwrap();
    assert!(
        server.wait_for_exit(Duration::from_secs(30)).await,
        "gcbb dev did not exit once its background work was done"
    );
    let burned = count(
        &client,
        "SELECT COALESCE(sum(\"tokensBurned\"), 0) FROM \"UserBurnedTokens\" \
         WHERE \"userId\" = 'user_demo_1' AND \"companionId\" = 'cmp_demo_01'",
    )
    .await;
    assert!(burned > 0, "the reply's tokens were not accounted");
}

#[tokio::test]
async fn the_first_run_of_gcbb_dev_shows_the_demo_companions_and_a_signed_in_total_that_counts_them(
) {
    let db = absent_db();
    let env: Vec<(&str, String)> = clerk_env().into_iter().collect();
    let server = start_dev(&db, &env).await;
    let client = db.client().await;
    let public = count(
        &client,
        "SELECT count(*) FROM \"Companion\" WHERE NOT private",
    )
    .await;
    assert!(public > 0);

    let body: Value = reqwest::get(server.url("/api/dashboard/prefetch?pageSize=50"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["total"], public, "{body}");
    assert_eq!(
        body["companions"].as_array().unwrap().len() as i64,
        public,
        "the first anonymous request lists every public demo companion"
    );

    let own_private = count(
        &client,
        "SELECT count(*) FROM \"Companion\" WHERE private AND \"userId\" = 'user_demo_1'",
    )
    .await;
    let body: Value = reqwest::Client::new()
        .get(server.url("/api/dashboard/prefetch?pageSize=50"))
        .bearer_auth(token_for("user_demo_1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = body["companions"].as_array().unwrap().len() as i64;
    assert_eq!(body["total"], public + own_private, "{body}");
    assert_eq!(
        listed,
        public + own_private,
        "the total counts what is listed"
    );
}

#[tokio::test]
async fn gcbb_dev_closes_a_connection_that_sends_half_a_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = absent_db();
    let port = free_port();
    let mut cmd = binary(env!("CARGO_BIN_EXE_gcbb"));
    cmd.current_dir(project_root())
        .args(["dev", "--port", &port.to_string()])
        .args([
            "--header-read-timeout-ms",
            "1000",
            "--body-read-timeout-ms",
            "1000",
        ])
        .env("DATABASE_URL", &db.url)
        .env("LLM_PROVIDER", "scripted");
    let server = Server::start(cmd, port).await;
    let _ = banner(&server).await;
    let limit = Duration::from_secs(1) + Duration::from_secs(4);

    // Headers that never end.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(limit, tcp.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a half-sent header block held the connection open"
    );
    println!(
        "figure: gcbb dev closed a half-sent header block after {} ms",
        started.elapsed().as_millis()
    );

    // A body that stops half way.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(
        b"POST /api/chat/cmp_demo_01 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\":",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(limit, tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a half-sent body held the connection open");
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        answer.is_empty() || !answer.starts_with("HTTP/1.1 2"),
        "{answer}"
    );
}

/// The raw response (no decompression by the client) to a GET with `Accept-Encoding`.
async fn get_encoded(url: &str, accept: Option<&str>) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(a) = accept {
        req = req.header("accept-encoding", a);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    (headers, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn gcbb_dev_compresses_with_gzip_or_brotli_when_the_client_asks_as_vercel_does() {
    use std::io::Read;
    let db = absent_db();
    let server = start_dev(&db, &[]).await;
    let url = server.url("/api/dashboard/prefetch?pageSize=50");

    let (headers, plain) = get_encoded(&url, None).await;
    assert!(headers.get("content-encoding").is_none());
    let page: Value = serde_json::from_slice(&plain).unwrap();
    assert!(page["companions"].as_array().unwrap().len() > 10);

    let (headers, gzipped) = get_encoded(&url, Some("gzip")).await;
    assert_eq!(headers["content-encoding"], "gzip");
    assert!(
        gzipped.len() < plain.len() / 2,
        "{} vs {}",
        gzipped.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(gzipped.as_slice())
        .read_to_end(&mut unzipped)
        .unwrap();
    let unzipped: Value = serde_json::from_slice(&unzipped).unwrap();
    assert_eq!(unzipped["companions"], page["companions"]);

    let (headers, brotli) = get_encoded(&url, Some("br, gzip;q=0.5")).await;
    assert_eq!(headers["content-encoding"], "br");
    let mut unbrotlied = Vec::new();
    brotli_decompressor::Decompressor::new(brotli.as_slice(), 4096)
        .read_to_end(&mut unbrotlied)
        .unwrap();
    let unbrotlied: Value = serde_json::from_slice(&unbrotlied).unwrap();
    assert_eq!(unbrotlied["companions"], page["companions"]);
    // The validator is the page's, whatever the encoding.
    assert!(headers["etag"].to_str().unwrap().starts_with('"'));

    // A streamed reply goes out as it comes, never held back by an encoder.
    let resp = reqwest::Client::new()
        .post(server.url("/api/chat/cmp_demo_01"))
        .header("accept-encoding", "gzip, br")
        .json(&json!({"prompt": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-encoding").is_none());
    assert!(!resp.text().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_bench_anchor_serves_the_pages_bytes_and_headers_with_nothing_of_our_stack() {
    let db = absent_db();
    let server = start_dev(&db, &[]).await;
    let resp = reqwest::get(server.url("/__bench/bare")).await.unwrap();
    assert_eq!(resp.status(), 404, "gcbb dev serves no anchor of its own");

    let page_url = server.url("/api/dashboard/prefetch");
    let port = free_port();
    let mut cmd = binary(env!("CARGO_BIN_EXE_gcbb"));
    cmd.args(["bench", "anchor", "--copy-from", &page_url])
        .args(["--port", &port.to_string()]);
    let anchor_server = Server::start(cmd, port).await;
    let page = reqwest::get(&page_url).await.unwrap();
    let anchor = reqwest::get(anchor_server.url("/any/path")).await.unwrap();
    assert_eq!(anchor.status(), 200);
    for name in [
        "content-type",
        "cache-control",
        "cdn-cache-control",
        "etag",
        "vercel-cache-tag",
    ] {
        assert_eq!(anchor.headers()[name], page.headers()[name], "{name}");
    }
    assert_eq!(anchor.headers()["x-cache"], "memory", "copied warm");
    assert_eq!(
        anchor.bytes().await.unwrap(),
        page.bytes().await.unwrap(),
        "the same body"
    );

    // `bench http --anchor` starts one itself and states the share.
    let out = gcbb()
        .args(["bench", "http", "--url", &page_url, "--anchor"])
        .args(["--connections", "2", "--seconds", "1"])
        .output()
        .expect("run gcbb bench http");
    let stdout = success_stdout(&out);
    assert!(stdout.contains("of the anchor's throughput"), "{stdout}");
    assert!(stdout.contains("anchor (a copy of"), "{stdout}");
}
