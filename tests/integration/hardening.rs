//! Abuse and edge hardening (issue 23), each attack made for real: rate-limit buckets that a
//! client can't escape by rotating addresses or naming itself, anonymous searches limited per
//! client, avatar URLs a companion owner can't aim at viewers, CDN purges coalesced, a signing
//! key rotated mid-session, CORS patterns for preview deployments. Each test prints the attack's
//! count, for the record.

use axum::http::{header, StatusCode};
use serde_json::json;

use crate::common::app::TestApp;
use crate::common::{fresh_db, project_root};
use crate::support::{binary, free_port, Server};

/// A public companion of the demo data (Ada Lovelace, the platform's).
const DEMO_PUBLIC: &str = "cmp_demo_00";

// ---- fair buckets through gcbb dev ------------------------------------------------------------

/// `gcbb dev` on a fresh demo database with `args` and `env` added; anonymous chat allows 5
/// a minute (the default) and replies without delay.
async fn start_dev(args: &[&str], env: &[(&str, &str)]) -> (Server, crate::common::TestDb) {
    let db = fresh_db().await;
    let port = free_port();
    let mut cmd = binary(env!("CARGO_BIN_EXE_gcbb"));
    cmd.current_dir(project_root())
        .args(["dev", "--port", &port.to_string()])
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("LLM_PROVIDER", "scripted")
        .env("LLM_SCRIPTED_CHUNK_DELAY_MS", "0")
        .env_remove("TRUSTED_PROXY")
        .env_remove("DEV_TRUSTED_PROXIES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    (Server::start(cmd, port).await, db)
}

/// Sends one anonymous chat message per entry of `forwarded` (its `X-Forwarded-For`), all at
/// once; returns (answered 200, refused 429). Anything else fails the test.
async fn anonymous_chats(server: &Server, forwarded: &[String]) -> (usize, usize) {
    let client = reqwest::Client::new();
    let url = server.url(&format!("/api/chat/{DEMO_PUBLIC}"));
    let sent = forwarded.iter().enumerate().map(|(i, xff)| {
        client
            .post(&url)
            .header("x-forwarded-for", xff)
            .json(&json!({ "prompt": format!("hello {i}") }))
            .send()
    });
    let (mut ok, mut limited) = (0, 0);
    for resp in futures_util::future::join_all(sent).await {
        let resp = resp.expect("an answer");
        match resp.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(resp.headers().contains_key(header::RETRY_AFTER));
                assert_eq!(resp.headers()["x-ratelimit-limit"], "5");
                limited += 1;
            }
            other => panic!("{other}: {}", resp.text().await.unwrap_or_default()),
        }
    }
    (ok, limited)
}

/// Eight addresses of one IPv6 /64, `per` requests each.
fn rotating_64(prefix: &str, per: usize) -> Vec<String> {
    (1..=8u32)
        .flat_map(|i| std::iter::repeat_n(format!("{prefix}:{i:x}:{i:x}00::{i}"), per))
        .collect()
}

#[tokio::test]
async fn behind_a_trusted_proxy_an_ipv6_client_rotating_through_its_64_gets_one_limit() {
    let (server, _db) = start_dev(&["--trusted-proxy", "127.0.0.1,::1"], &[]).await;
    let banner = server.output_once_printed("listening on http://").await;
    assert!(
        banner.contains("X-Forwarded-For from 127.0.0.1/32, ::1/128"),
        "{banner}"
    );

    // The attack: eight addresses of one /64, each sending five (40 at once).
    let (ok, limited) = anonymous_chats(&server, &rotating_64("2001:db8:1:2", 5)).await;
    println!("figure: 8 IPv6 addresses of one /64 × 5 anonymous chats: {ok} answered, {limited} refused (limit 5 a minute)");
    assert_eq!((ok, limited), (5, 35));
    // Another /64 is another client; so is each IPv4 address.
    let (ok, _) = anonymous_chats(&server, &rotating_64("2001:db8:1:3", 1)).await;
    assert_eq!(ok, 5);
    let two_v4: Vec<String> = ["198.51.100.1", "198.51.100.2"]
        .iter()
        .flat_map(|a| std::iter::repeat_n(a.to_string(), 6))
        .collect();
    assert_eq!(anonymous_chats(&server, &two_v4).await, (10, 2));
    // Hops left of the client's own are the client's say: the proxy appended the real one.
    let spoofed: Vec<String> = (0..6)
        .map(|i| format!("203.0.113.{i}, 2001:db8:1:4::{i}"))
        .collect();
    assert_eq!(anonymous_chats(&server, &spoofed).await, (5, 1));
}

#[tokio::test]
async fn without_a_trusted_proxy_gcbb_dev_ignores_a_client_supplied_forwarded_for() {
    // TRUSTED_PROXY meant for a deployment doesn't reach gcbb dev: only its own flag does.
    let (server, _db) = start_dev(&[], &[("TRUSTED_PROXY", "vercel")]).await;
    let banner = server.output_once_printed("listening on http://").await;
    assert!(banner.contains("forwarding headers ignored"), "{banner}");
    // Every request names another client; they all come from this one connection's address.
    let claims: Vec<String> = (0..20).map(|i| format!("198.51.100.{i}")).collect();
    let (ok, limited) = anonymous_chats(&server, &claims).await;
    println!("figure: 20 anonymous chats each naming another X-Forwarded-For, no trusted proxy: {ok} answered, {limited} refused");
    assert_eq!((ok, limited), (5, 15));
}

#[tokio::test]
async fn a_proxy_that_is_not_the_configured_one_is_not_believed() {
    let (server, _db) = start_dev(&["--trusted-proxy", "10.0.0.0/8"], &[]).await;
    let claims = rotating_64("2001:db8:7:7", 1)
        .into_iter()
        .chain((0..8).map(|i| format!("192.0.2.{i}")))
        .collect::<Vec<_>>();
    assert_eq!(anonymous_chats(&server, &claims).await, (5, 11));
}

// ---- anonymous searches -----------------------------------------------------------------------

#[tokio::test]
async fn anonymous_searches_are_limited_per_client_and_the_limit_never_travels_with_a_shared_page()
{
    let app = TestApp::builder()
        .demo_data()
        .env("RATE_LIMIT_SEARCH_REQUESTS", "4")
        .start()
        .await;
    let search = |ip: &'static str, q: String| {
        app.get(&format!("/api/dashboard/prefetch?q={q}"))
            .header("x-forwarded-for", ip)
            .send()
    };
    // 20 at once from one client, each a different search (every one would be a build).
    let sent = (0..20).map(|i| search("203.0.113.70", format!("ad{i}")));
    let answers = futures_util::future::join_all(sent).await;
    let ok: Vec<_> = answers
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    let limited: Vec<_> = answers
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    println!(
        "figure: 20 anonymous searches at once from one client: {} answered, {} refused (limit 4 per 10 s)",
        ok.len(),
        limited.len()
    );
    assert_eq!((ok.len(), limited.len()), (4, 16));
    for r in &limited {
        assert_eq!(r.error_code(), "rate_limited");
        assert!(r.header("retry-after").parse::<u64>().unwrap() >= 1);
        assert_eq!(r.header("x-ratelimit-limit"), "4");
        assert_eq!(r.header("x-ratelimit-remaining"), "0");
        assert_eq!(r.header("cache-control"), "no-store");
    }
    for r in &ok {
        // The page is public and shared by the CDN: no one client's count on it.
        assert!(r.header("cache-control").starts_with("public"));
        assert!(r.headers.get("x-ratelimit-remaining").is_none());
    }
    // Another client searches on; pages without a search aren't limited at all.
    assert_eq!(
        search("203.0.113.71", "ada".into()).await.status,
        StatusCode::OK
    );
    for _ in 0..10 {
        let r = app
            .get("/api/dashboard/prefetch?page=2")
            .header("x-forwarded-for", "203.0.113.70")
            .send()
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Signed in, the viewer's own dashboard limit applies, not the anonymous one.
    let r = app
        .get("/api/dashboard/prefetch?q=ada")
        .header("x-forwarded-for", "203.0.113.70")
        .signed_in("user_demo_1")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-ratelimit-limit"), "60");
}
