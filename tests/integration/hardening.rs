//! Abuse and edge hardening (issue 23), each attack made for real: rate-limit buckets that a
//! client can't escape by rotating addresses or naming itself, anonymous searches limited per
//! client, avatar URLs a companion owner can't aim at viewers, CDN purges coalesced, a signing
//! key rotated mid-session, CORS patterns for preview deployments. Each test prints the attack's
//! count, for the record.

use std::time::Duration;

use axum::http::{header, StatusCode};
use gcbb_cli::session_token::SigningKey;
use serde_json::{json, Value};

use crate::common::session::ISSUER;

use crate::common::app::TestApp;
use crate::common::jwks::JwksServer;
use crate::common::start_dev_with;
use crate::common::{fresh_db, project_root};
use crate::support::{free_port, Server};

/// A public companion of the demo data (Ada Lovelace, the platform's).
const DEMO_PUBLIC: &str = "cmp_demo_00";

// ---- fair buckets through gcbb dev ------------------------------------------------------------

/// `gcbb dev` on a fresh demo database with `args` and `env` added; anonymous chat allows 5
/// a minute (the default) and replies without delay.
async fn start_dev(args: &[&str], env: &[(&str, &str)]) -> (Server, crate::common::TestDb) {
    let db = fresh_db().await;
    let mut vars = vec![
        ("LLM_SCRIPTED_CHUNK_DELAY_MS", "0".to_owned()),
        // A day-long window: a burst never straddles a window boundary, where the sliding
        // window counts the previous window's requests rounded down.
        ("RATE_LIMIT_ANON_WINDOW_MS", "86400000".to_owned()),
    ];
    vars.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    (start_dev_with(&db, args, &vars).await, db)
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

    // The issue's attack: eight addresses of one /64, each sending five (40 at once).
    let (ok, limited) = anonymous_chats(&server, &rotating_64("2001:db8:1:2", 5)).await;
    println!("figure: 8 IPv6 addresses of one /64 × 5 anonymous chats: {ok} answered, {limited} refused (limit 5)");
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
        .rate_limit("SEARCH", 4, 86_400_000)
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
        "figure: 20 anonymous searches at once from one client: {} answered, {} refused (limit 4)",
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

// ---- signing-key rotation ---------------------------------------------------------------------

fn session_token(key: &SigningKey, kid: &str, user: &str) -> String {
    key.sign(
        Some(kid),
        &gcbb_cli::session_token::clerk_claims(user, Some(ISSUER), 120),
    )
}

/// What the signed-in users of the session saw.
#[derive(Default)]
struct SessionLog {
    /// Valid tokens refused with 401, by the key that signed them.
    refused_old: usize,
    refused_new: usize,
    answered: usize,
    other: Vec<u16>,
    slowest_new: Duration,
}

#[tokio::test]
async fn a_key_rotation_mid_session_signs_nobody_out() {
    let key_b = SigningKey::generate().unwrap();
    let key_a = crate::common::session::signing_key();
    let jwks = JwksServer::start(&[(key_a, "ins_a")]).await;
    let app = TestApp::builder()
        .env("CLERK_JWT_KEY", "")
        .env("CLERK_JWKS_URL", &jwks.url)
        .env("RATE_LIMIT_DASHBOARD_REQUESTS", "100000")
        .start()
        .await;
    let log = std::sync::Arc::new(std::sync::Mutex::new(SessionLog::default()));
    // Which key the users' tokens are signed with now: Clerk issues new-key tokens as soon as
    // the new key is published.
    let new_key = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = std::time::Instant::now();
    let session = Duration::from_secs(8);

    let users = (0..20).map(|u| {
        let (app, log, new_key, key_b) = (&app, log.clone(), new_key.clone(), &key_b);
        async move {
            let user = format!("user_rot_{u}");
            let (old_token, new_token) = (
                session_token(key_a, "ins_a", &user),
                session_token(key_b, "ins_b", &user),
            );
            while started.elapsed() < session {
                let new = new_key.load(std::sync::atomic::Ordering::SeqCst);
                let token = if new { &new_token } else { &old_token };
                let t = std::time::Instant::now();
                let r = app
                    .get("/api/dashboard/prefetch?pageSize=1")
                    .bearer(token)
                    .send()
                    .await;
                {
                    let mut log = log.lock().unwrap();
                    match r.status.as_u16() {
                        200 => log.answered += 1,
                        401 if new => log.refused_new += 1,
                        401 => log.refused_old += 1,
                        other => log.other.push(other),
                    }
                    if new {
                        log.slowest_new = log.slowest_new.max(t.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(50 + u * 7)).await;
            }
        }
    });
    // Meanwhile tokens with made-up kids keep the refetch interval busy, the worst case for a
    // rotation: every new-key token arrives right after some other fetch.
    let attacker = async {
        let made_up: Vec<String> = (0..10)
            .map(|i| session_token(key_a, &format!("made_up_{i}"), "user_attacker"))
            .collect();
        let mut i = 0;
        while started.elapsed() < session {
            let token = &made_up[i % made_up.len()];
            let r = app
                .get("/api/dashboard/prefetch")
                .bearer(token)
                .send()
                .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        i
    };
    let rotation = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Clerk publishes the new key beside the old, then signs with it.
        jwks.serve(&[(key_a, "ins_a"), (&key_b, "ins_b")]);
        new_key.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Later the old key is retired.
        jwks.serve(&[(&key_b, "ins_b")]);
    };
    let (_, made_up, _) = tokio::join!(futures_util::future::join_all(users), attacker, rotation);
    let log = log.lock().unwrap();
    println!(
        "figure: key rotation mid-session, 20 users, {} requests answered; valid new-key tokens refused 401: {}; slowest new-key request {} ms; {} made-up kids; JWKS fetched {} times in {:.1} s",
        log.answered,
        log.refused_new,
        log.slowest_new.as_millis(),
        made_up,
        jwks.hits(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(log.refused_new, 0, "a valid new-key token was answered 401");
    assert_eq!(log.refused_old, 0, "a valid old-key token was answered 401");
    assert!(log.other.is_empty(), "{:?}", log.other);
    assert!(log.answered > 200, "{}", log.answered);
    // At most one fetch per interval, however many made-up kids came.
    let allowed = 2
        + (started.elapsed().as_secs_f64()
            / gcbb::platform::auth::JWKS_MIN_REFETCH_INTERVAL.as_secs_f64())
        .ceil() as usize;
    assert!(
        jwks.hits() <= allowed,
        "{} fetches, at most {allowed}",
        jwks.hits()
    );
}

// ---- CORS patterns ------------------------------------------------------------------------------

/// The preview deployments of project `gcbb` in team `acme`, as Vercel names them.
const PREVIEW_PATTERN: &str = "https://gcbb-*-acme.vercel.app";

#[tokio::test]
async fn preview_deployments_match_a_pattern_of_one_label_and_look_alikes_do_not() {
    let app = TestApp::builder()
        .demo_data()
        .env(
            "CORS_ALLOWED_ORIGINS",
            &format!("https://app.gcbb.test, {PREVIEW_PATTERN}"),
        )
        .start()
        .await;
    let token = crate::common::session::token_for("user_demo_1");
    let ask = |origin: &str| {
        app.get(&format!("/api/chat/{DEMO_PUBLIC}"))
            .header("origin", origin)
            .bearer(&token)
            .send()
    };
    let preflight = |origin: &str| {
        app.request(
            axum::http::Method::OPTIONS,
            &format!("/api/chat/{DEMO_PUBLIC}"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
    };
    let mut allowed = 0;
    for origin in [
        "https://gcbb-8f3k2j1qx-acme.vercel.app",
        "https://gcbb-git-main-acme.vercel.app",
        "https://app.gcbb.test",
    ] {
        let r = preflight(origin).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{origin}");
        assert_eq!(r.header("access-control-allow-origin"), origin);
        assert!(r.header("access-control-allow-methods").contains("POST"));
        let r = ask(origin).await;
        assert_eq!(r.status, StatusCode::OK, "{origin}");
        assert_eq!(r.header("access-control-allow-origin"), origin);
        assert_eq!(r.header("vary"), "Origin");
        allowed += 1;
    }
    let mut refused = 0;
    for origin in [
        "https://gcbb-8f3k2j1qx-acme.vercel.app.evil.com",
        "https://evil-8f3k2j1qx-acme.vercel.app",
        "https://gcbb-8f3k2j1qx-evil.vercel.app",
        "https://gcbb-8f3k2j1qx-acme.vercel.app:8443",
        "http://gcbb-8f3k2j1qx-acme.vercel.app",
        "https://x.gcbb-8f3k2j1qx-acme.vercel.app",
        "https://vercel.app",
        "https://gcbb--acme.vercel.app",
        "null",
    ] {
        let r = preflight(origin).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{origin}");
        assert!(
            r.headers.get("access-control-allow-origin").is_none(),
            "{origin}"
        );
        let r = ask(origin).await;
        assert!(
            r.headers.get("access-control-allow-origin").is_none(),
            "{origin}"
        );
        refused += 1;
    }
    println!("figure: CORS pattern {PREVIEW_PATTERN}: {allowed} preview-style origins allowed, {refused} look-alikes refused");
}

#[tokio::test]
async fn a_malformed_cors_pattern_stops_gcbb_dev_naming_the_variable() {
    let db = crate::common::absent_db();
    for bad in [
        "https://*.vercel.app",
        "https://*.com",
        "https://a.*.example.com",
        "https://**.x.com",
    ] {
        let out = crate::common::gcbb()
            .args(["dev", "--port", &free_port().to_string()])
            .env("DATABASE_URL", &db.url)
            .env("LLM_PROVIDER", "scripted")
            .env("CORS_ALLOWED_ORIGINS", bad)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(
            stderr.contains("CORS_ALLOWED_ORIGINS is invalid"),
            "{bad}: {stderr}"
        );
        assert!(stderr.contains(bad), "{bad}: {stderr}");
    }
}

// ---- avatar URLs --------------------------------------------------------------------------------

/// A public companion of user_demo_1 (Pixel Knight).
const OWN_PUBLIC: &str = "cmp_demo_06";

/// `src` values a companion owner could aim at every viewer's browser.
fn hostile_avatars(port: u16) -> Vec<String> {
    vec![
        format!("http://127.0.0.1:{port}/track-http.png"),
        format!("http://localhost:{port}/track-localhost.png"),
        format!("https://127.0.0.1:{port}/track-https.png"),
        "https://tracker.io/pixel.gif?viewer=1".into(),
        "https://img.clerk.com.evil.io/a.png".into(),
        "https://img.clerk.com@evil.io/a.png".into(),
        "https://10.0.0.1/internal.png".into(),
        "https://169.254.169.254/latest/meta-data/".into(),
        "http://img.clerk.com/plain-http.png".into(),
        "//evil.io/protocol-relative.png".into(),
        "javascript:alert(1)".into(),
        "data:image/svg+xml,<svg onload=alert(1)>".into(),
        "\"><img src=x onerror=alert(1)>".into(),
    ]
}

#[tokio::test]
async fn a_patch_stores_only_https_avatars_on_an_allowed_host_and_stores_them_normalized() {
    let app = TestApp::builder().demo_data().start().await;
    let stored = || async {
        app.db
            .client()
            .await
            .query_one(
                "SELECT src FROM \"Companion\" WHERE id = $1",
                &[&OWN_PUBLIC],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    let before = stored().await;
    let hostile = hostile_avatars(9);
    let sent = hostile.iter().map(|src| {
        app.patch_json(
            &format!("/api/companion/{OWN_PUBLIC}"),
            &json!({ "src": src }),
        )
        .signed_in("user_demo_1")
        .send()
    });
    let mut accepted = 0;
    for (src, r) in hostile
        .iter()
        .zip(futures_util::future::join_all(sent).await)
    {
        if r.status == StatusCode::OK {
            accepted += 1;
            continue;
        }
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{src}");
        assert_eq!(r.json()["error"]["param"], "src", "{src}");
        assert!(
            r.text().contains("img.clerk.com"),
            "the message names the allowed hosts"
        );
    }
    println!(
        "figure: hostile avatar URLs accepted by PATCH: {accepted} of {}",
        hostile.len()
    );
    assert_eq!(accepted, 0);
    assert_eq!(stored().await, before, "nothing was stored");

    let r = app
        .patch_json(
            &format!("/api/companion/{OWN_PUBLIC}"),
            &json!({ "src": " https://IMG.Clerk.com/u/a b\"<x>.png?width=80 " }),
        )
        .signed_in("user_demo_1")
        .send()
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let normalized = "https://img.clerk.com/u/a%20b%22%3Cx%3E.png?width=80";
    assert_eq!(r.json()["src"], normalized);
    assert_eq!(stored().await, normalized);
}

/// Counts the requests a loopback port receives: where a hostile avatar would send viewers.
async fn hit_counter() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let router = axum::Router::new().fallback(move || {
        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { ([(header::CONTENT_TYPE, "image/png")], Vec::<u8>::new()) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (port, hits)
}

/// Stores `srcs` as companions named "Avatar probe N" (public, platform-owned), as another
/// writer would, then refreshes the read model so the dashboard lists them.
async fn insert_avatar_probes(db: &tokio_postgres::Client, srcs: &[String]) {
    for (i, src) in srcs.iter().enumerate() {
        db.execute(
            "INSERT INTO \"Companion\" (\"id\", \"userId\", \"userName\", \"src\", \"name\", \
             \"instructions\", \"private\", \"updatedAt\", \"categoryId\") \
             SELECT $1, 'system', 'GCBB', $2, $3, 'probe', false, now(), min(\"id\") FROM \"Category\"",
            &[&format!("cmp_probe_{i:02}"), src, &format!("Avatar probe {i:02}")],
        )
        .await
        .unwrap();
    }
    db.execute("SELECT gcbb_refresh_dashboard('system')", &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn in_chromium_no_avatar_is_fetched_from_a_host_off_the_allowlist() {
    let (port, hits) = hit_counter().await;
    let (server, db) = start_dev(&[], &[]).await;
    // The grid shows 12 cards: eleven hostile ones (all but the metadata address and the data:
    // URL, which the first ones stand for) and the control.
    let mut srcs: Vec<String> = hostile_avatars(port)
        .into_iter()
        .filter(|s| !s.contains("169.254") && !s.starts_with("data:"))
        .collect();
    // The control: an allowed avatar, which the browser does fetch (the recorder answers it).
    srcs.push("https://img.clerk.com/avatar-ok.png".into());
    insert_avatar_probes(&db.client().await, &srcs).await;

    let dir = project_root().join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci failed in tests/browser");
    }
    let base = server.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .current_dir(&dir)
            .args(["avatars.mjs", &base, "avatar probe"])
            .env("CHROMIUM", "/usr/bin/chromium")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no report ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let fetched: Vec<&str> = report["fetched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let disallowed: Vec<&&str> = fetched
        .iter()
        .filter(|u| !u.starts_with("https://img.clerk.com/"))
        .collect();
    let loopback = hits.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "figure: avatar fetches in Chromium for {} hostile stored URLs: {} off the allowlist, {} to a loopback port ({} more refused by the CSP before the network); the allowed control fetched {} time(s); {} placeholders of {} cards",
        srcs.len() - 1,
        disallowed.len(),
        loopback,
        report["attempted"].as_array().unwrap().len() - fetched.len(),
        fetched.len() - disallowed.len(),
        report["placeholders"],
        report["cards"]
    );
    assert_eq!(report["cards"], srcs.len(), "{report}");
    assert!(disallowed.is_empty(), "fetched: {disallowed:?}");
    assert_eq!(loopback, 0, "a loopback port was hit");
    assert!(
        fetched.contains(&"https://img.clerk.com/avatar-ok.png"),
        "the recorder saw no fetch at all, so it proves nothing: {report}"
    );
    assert_eq!(report["placeholders"], srcs.len() - 1, "{report}");
    assert_eq!(report["problems"], json!([]), "{report}");
    let csp = report["headers"]["content-security-policy"]
        .as_str()
        .unwrap();
    assert!(
        csp.contains("img-src 'self' data: https://img.clerk.com "),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(report["headers"]["x-content-type-options"], "nosniff");
    assert_eq!(
        report["notFound"],
        json!({"shown": true, "dashboardHidden": true})
    );
}

// ---- CDN purges -----------------------------------------------------------------------------------

/// The public companions of the demo users: (id, owner).
async fn public_owned(app: &TestApp) -> Vec<(String, String)> {
    app.db
        .client()
        .await
        .query(
            "SELECT id, \"userId\" FROM \"Companion\" WHERE NOT private AND \"userId\" <> 'system' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Each of `edits` ((companion, owner) pairs) PATCHed with `body(id)` by its owner, all at once;
/// each answered 200. Waits for their background work.
async fn edit_all_at_once<'a>(
    app: &TestApp,
    edits: impl IntoIterator<Item = &'a (String, String)>,
    body: impl Fn(&str) -> Value,
) {
    let edits = edits.into_iter().map(|(id, owner)| {
        let body = body(id);
        async move { app.edit_companion(id, &body, owner).await }
    });
    for r in futures_util::future::join_all(edits).await {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    app.finish_background().await;
}

/// The tags of the purge calls, all of them, sorted.
fn purged_tags(calls: &[crate::privacy::PurgeCall]) -> Vec<String> {
    let mut tags: Vec<String> = calls.iter().flat_map(|c| c.tags.clone()).collect();
    tags.sort();
    tags
}

/// The tags of the companions of `owned`, sorted.
fn companion_tags(owned: &[(String, String)]) -> Vec<String> {
    let mut expected: Vec<String> = owned
        .iter()
        .map(|(id, _)| format!("companion:{id}"))
        .collect();
    expected.sort();
    expected
}

#[tokio::test]
async fn a_burst_of_edits_spends_one_purge_request_and_no_ops_spend_none() {
    let (api, url, _server) = crate::privacy::VercelApi::start(0).await;
    let app = crate::privacy::app_with_vercel(&url).await;
    let owned = public_owned(&app).await;
    assert!(owned.len() >= 15, "{owned:?}");

    // No-op edits (public made public), repeated: nothing to purge.
    edit_all_at_once(
        &app,
        owned.iter().cycle().take(20),
        |_| json!({ "private": false }),
    )
    .await;
    let noop_calls = api.calls().len();

    // Every public companion of the demo users renamed at once: real edits.
    edit_all_at_once(
        &app,
        &owned,
        |id| json!({ "name": format!("Renamed {id}") }),
    )
    .await;
    let calls = api.calls();
    let (tags, expected) = (purged_tags(&calls), companion_tags(&owned));
    println!(
        "figure: 20 no-op PATCHes: {noop_calls} purge requests; {} renames at once: {} purge request(s) carrying {} tags",
        owned.len(),
        calls.len(),
        tags.len()
    );
    assert_eq!(noop_calls, 0);
    assert_eq!(tags, expected, "every renamed companion's tag, once");
    assert!(calls.iter().all(|c| c.path == "invalidate-by-tags"));
    assert!(calls.len() <= 2, "{} requests for one burst", calls.len());
}

#[tokio::test]
async fn a_burst_of_hides_is_purged_in_one_request_and_still_every_tag() {
    let (api, url, _server) = crate::privacy::VercelApi::start(0).await;
    let app = crate::privacy::app_with_vercel(&url).await;
    let owned = public_owned(&app).await;
    edit_all_at_once(&app, &owned, |_| json!({ "private": true })).await;
    let calls = api.calls();
    let (tags, expected) = (purged_tags(&calls), companion_tags(&owned));
    println!(
        "figure: {} companions hidden at once: {} delete request(s)",
        owned.len(),
        calls.len()
    );
    assert_eq!(tags, expected);
    assert!(calls.iter().all(|c| c.path == "dangerously-delete-by-tags"));
    assert!(calls.len() <= 3, "{} requests", calls.len());
    assert_eq!(
        app.count("SELECT count(*) FROM \"PrivacyPurgeOutbox\" WHERE \"purgedAt\" IS NULL")
            .await,
        0
    );
}

// ---- short searches -------------------------------------------------------------------------------

#[tokio::test]
async fn a_one_or_two_letter_search_lists_the_names_starting_with_it_for_everyone() {
    let app = TestApp::builder().demo_data().start().await;
    let db = app.db.client().await;
    let names = |sql: String| {
        let db = &db;
        async move {
            let mut v: Vec<String> = db
                .query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            v.sort();
            v
        }
    };
    for q in ["m", "Ma", "c", "CO", "é", "zz"] {
        let lower = q.to_lowercase();
        let n = lower.chars().count();
        let expected = names(format!(
            "SELECT name FROM \"Companion\" WHERE NOT private AND lower(left(name, {n})) = '{lower}'"
        ))
        .await;
        let (body, listed) = search(&app, q, None).await;
        assert_eq!(listed, expected, "q={q}");
        assert_eq!(body["total"], expected.len(), "q={q}: {body}");
        // Signed in: the same rule, the viewer's own private companions too.
        let own = names(format!(
            "SELECT name FROM \"Companion\" WHERE (NOT private OR \"userId\" = 'user_demo_1') \
             AND lower(left(name, {n})) = '{lower}'"
        ))
        .await;
        let (body, listed) = search(&app, q, Some("user_demo_1")).await;
        assert_eq!(listed, own, "signed in, q={q}");
        assert_eq!(body["total"], own.len(), "signed in, q={q}: {body}");
    }
    // Three letters and more: names containing them, anywhere.
    let expected =
        names("SELECT name FROM \"Companion\" WHERE NOT private AND name ILIKE '%ast%'".into())
            .await;
    let (_, listed) = search(&app, "ast", None).await;
    assert_eq!(listed, expected);
    assert!(listed.iter().any(|n| n.ends_with(" Master")), "{listed:?}");
}

/// The dashboard's answer to a search for `q` (50 a page) as `viewer` sees it, and the names it
/// lists, sorted.
async fn search(app: &TestApp, q: &str, viewer: Option<&str>) -> (Value, Vec<String>) {
    let body = app
        .get(&format!(
            "/api/dashboard/prefetch?q={}&pageSize=50",
            urlencode(q)
        ))
        .viewer(viewer)
        .send()
        .await
        .json();
    let mut listed: Vec<String> = body["companions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    (body, listed)
}

fn urlencode(q: &str) -> String {
    url::form_urlencoded::byte_serialize(q.as_bytes()).collect()
}
