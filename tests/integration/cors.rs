//! CORS through the app under test ([`TestApp`]: the router of every function with
//! `vercel.json`'s rewrites, as `gcbb dev` serves it): every rewrite's preflight is held against
//! the methods its route serves, then the answers themselves by origin and credentials (the
//! anonymous dashboard public to all, the rest echoed to allowed origins with `Vary: Origin`),
//! and a `gcbb dev` start-up that refuses a bad origin.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method};
use serde_json::{json, Value};

use crate::common::app::TestApp;
use crate::common::request::TestResponse;
use crate::common::session::token_for;
use crate::common::{absent_db, gcbb, json_strs, project_root};
use crate::support::free_port;

const APP: &str = "https://app.gcbb.test";
const LOCAL: &str = "http://localhost:5173";
const EVIL: &str = "https://evil.example";

/// Each public route and the methods it serves (docs/api.md's route table): what its preflight must
/// allow, and nothing else. Every `vercel.json` rewrite is here, plus the one function reached
/// by its own path.
const ROUTE_METHODS: [(&str, &str); 12] = [
    ("/api/dashboard/prefetch", "GET, HEAD"),
    ("/api/chat", "GET, HEAD, POST"),
    ("/api/chat/:chatId", "GET, HEAD, POST"),
    ("/api/chat/:chatId/stream", "GET, HEAD"),
    ("/api/chat/:chatId/stop", "POST"),
    ("/api/group-chat/:groupId/chat", "POST"),
    ("/api/group-chat/:groupId/messages", "GET, HEAD"),
    ("/api/group-chat/:groupId/stream", "GET, HEAD"),
    ("/api/group-chat/:groupId/stop", "POST"),
    ("/api/companion/:companionId", "PATCH"),
    ("/api/cron/refresh", "GET, HEAD"),
    ("/api/health", "GET, HEAD"),
];

/// Methods a browser may ask a preflight about.
const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// The app with the demo data, allowing two origins (one written with a trailing slash), and
/// `extra` settings. Its requests stand for what Vercel forwards, so X-Forwarded-For names the
/// client.
async fn app_with_cors(extra: &[(&str, &str)]) -> TestApp {
    let mut builder = TestApp::builder()
        .demo_data()
        .env("CORS_ALLOWED_ORIGINS", &format!("{APP}/, {LOCAL}"));
    for (name, value) in extra {
        builder = builder.env(name, value);
    }
    builder.start().await
}

fn path_of(source: &str) -> String {
    source
        .split('/')
        .map(|seg| match seg {
            ":chatId" | ":companionId" => "cmp_demo_01",
            ":groupId" => "grp_demo_round_table",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> TestResponse {
    app.request(Method::OPTIONS, path)
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
}

/// An anonymous chat message to a demo companion from `origin`, sent by the client `client`.
async fn chat_from(app: &TestApp, origin: &str, client: &str, body: Value) -> TestResponse {
    app.post_json("/api/chat/cmp_demo_01", &body)
        .header("origin", origin)
        .header("x-forwarded-for", client)
        .send()
        .await
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

fn cors_headers(h: &HeaderMap) -> Vec<String> {
    h.keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-") || k == "timing-allow-origin")
        .collect()
}

fn varies_by_origin(h: &HeaderMap) -> bool {
    h.get_all("vary")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("origin"))
}

/// What a browser needs to read our headers cross-origin.
fn assert_exposed(h: &HeaderMap) {
    let exposed = get(h, "access-control-expose-headers").unwrap_or_default();
    for name in [
        "x-cache",
        "server-timing",
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
}

#[tokio::test]
async fn every_vercel_json_route_answers_its_preflight_with_the_methods_it_serves() {
    let app = app_with_cors(&[]).await;
    let vercel: Value =
        serde_json::from_str(&std::fs::read_to_string(project_root().join("vercel.json")).unwrap())
            .unwrap();
    let rewrites: BTreeSet<&str> = json_strs(&vercel["rewrites"], "source")
        .into_iter()
        .collect();
    let listed: BTreeSet<&str> = ROUTE_METHODS
        .iter()
        .map(|(r, _)| *r)
        // Health has no rewrite: the function is reached by its own path.
        .filter(|r| *r != "/api/health")
        .collect();
    assert_eq!(
        rewrites, listed,
        "every vercel.json rewrite needs its methods in ROUTE_METHODS (and docs/api.md's table)"
    );

    for (route, methods) in ROUTE_METHODS {
        let path = path_of(route);
        let served: Vec<&str> = methods.split(", ").collect();
        for origin in [APP, LOCAL] {
            for method in METHODS {
                let resp = preflight(&app, &path, origin, method).await;
                let h = &resp.headers;
                assert_eq!(resp.status, 204, "{method} {route} from {origin}");
                assert_eq!(get(h, "access-control-allow-origin"), Some(origin));
                assert_eq!(
                    get(h, "access-control-allow-methods"),
                    Some(methods),
                    "{method} {route}"
                );
                // A method the route doesn't serve is never allowed.
                let allowed: Vec<&str> = get(h, "access-control-allow-methods")
                    .unwrap()
                    .split(", ")
                    .collect();
                assert_eq!(
                    allowed.contains(&method),
                    served.contains(&method),
                    "{method} {route}"
                );
                let headers = get(h, "access-control-allow-headers").unwrap();
                assert!(headers.contains("authorization") && headers.contains("content-type"));
                assert_eq!(get(h, "access-control-max-age"), Some("7200"));
                assert_eq!(get(h, "access-control-allow-credentials"), None);
                assert!(varies_by_origin(h), "{route}");
                assert_eq!(resp.body.len(), 0);
            }
        }
        // An origin not allowed: the route's own 405, no CORS header at all.
        let resp = preflight(&app, &path, EVIL, "POST").await;
        assert_eq!(resp.status, 405, "{route}");
        assert_eq!(cors_headers(&resp.headers), Vec::<String>::new(), "{route}");
        // Not a preflight (no request method): the route's 405, as before.
        let resp = app.request(Method::OPTIONS, &path).send().await;
        assert_eq!(resp.status, 405, "{route}");
        assert!(resp.headers.contains_key("allow"));
        assert_eq!(resp.error_code(), "method_not_allowed");
    }
    // No such route: the preflight fails with the 404.
    let resp = preflight(&app, "/api/nope", APP, "GET").await;
    assert_eq!(resp.status, 404);
    assert_eq!(get(&resp.headers, "access-control-allow-methods"), None);
}

#[tokio::test]
async fn answers_are_public_to_all_or_echoed_to_allowed_origins_only() {
    let app = app_with_cors(&[
        ("RATE_LIMIT_ANON_REQUESTS", "2"),
        ("RATE_LIMIT_ANON_WINDOW_MS", "86400000"),
    ])
    .await;
    let dashboard = "/api/dashboard/prefetch";
    let token = token_for("user_cors");

    // The anonymous dashboard: one answer for everyone, as the CDN keeps it.
    let mut etag = String::new();
    for origin in [Some(APP), Some(EVIL), None] {
        let mut req = app.get(dashboard);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let resp = req.send().await;
        let h = &resp.headers;
        assert_eq!(resp.status, 200);
        assert!(get(h, "cache-control").unwrap().starts_with("public"));
        assert_eq!(
            get(h, "access-control-allow-origin"),
            Some("*"),
            "{origin:?}"
        );
        assert_eq!(get(h, "timing-allow-origin"), Some("*"));
        assert_exposed(h);
        assert!(!varies_by_origin(h), "{origin:?}");
        assert_eq!(get(h, "access-control-allow-credentials"), None);
        etag = get(h, "etag").unwrap().to_owned();
    }
    let resp = app
        .get(dashboard)
        .header("origin", APP)
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(resp.status, 304);
    assert_eq!(get(&resp.headers, "access-control-allow-origin"), Some("*"));

    // With credentials (a bearer token, or only the cookie): echoed to an allowed origin.
    for (name, value) in [
        ("authorization", format!("Bearer {token}")),
        ("cookie", format!("__session={token}")),
    ] {
        let from = |origin: &str| {
            app.get(dashboard)
                .header("origin", origin)
                .header(name, &value)
                .send()
        };
        let resp = from(APP).await;
        let h = &resp.headers;
        assert_eq!(resp.status, 200, "{name}");
        assert_eq!(get(h, "cache-control"), Some("private, no-store"));
        assert_eq!(get(h, "access-control-allow-origin"), Some(APP), "{name}");
        assert_eq!(get(h, "timing-allow-origin"), Some(APP));
        assert_exposed(h);
        assert!(varies_by_origin(h));
        assert_eq!(get(h, "access-control-allow-credentials"), None);
        let resp = from(EVIL).await;
        assert_eq!(cors_headers(&resp.headers), Vec::<String>::new(), "{name}");
        assert!(varies_by_origin(&resp.headers));
    }

    // Chat: the stream, its rate-limit headers and then its 429, readable by the allowed origin.
    for i in 0..2 {
        let body = json!({"messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": format!("hi {i}")}]}]});
        let resp = chat_from(&app, LOCAL, "203.0.113.50", body).await;
        let h = &resp.headers;
        assert_eq!(resp.status, 200);
        assert_eq!(get(h, "access-control-allow-origin"), Some(LOCAL));
        assert_eq!(get(h, "x-vercel-ai-ui-message-stream"), Some("v1"));
        assert!(get(h, "x-ratelimit-remaining").is_some());
        assert_exposed(h);
        assert!(varies_by_origin(h));
        assert!(resp.text().contains("\"text-delta\""));
    }
    let resp = chat_from(&app, LOCAL, "203.0.113.50", json!({"prompt": "one more"})).await;
    assert_eq!(resp.status, 429);
    assert_eq!(
        get(&resp.headers, "access-control-allow-origin"),
        Some(LOCAL)
    );
    assert!(get(&resp.headers, "retry-after").is_some());
    // Another site reads nothing (the request itself is answered: CORS is not authentication).
    let resp = chat_from(&app, EVIL, "203.0.113.51", json!({"prompt": "hi"})).await;
    assert_eq!(resp.status, 200);
    assert_eq!(cors_headers(&resp.headers), Vec::<String>::new());

    // Errors are readable too: a refused token, a missing route, a group's 404.
    for (path, auth) in [
        ("/api/chat/cmp_demo_01", Some("Bearer not.a.token")),
        ("/api/nope", None),
        ("/api/group-chat/grp_nope/messages", None),
    ] {
        let mut req = app.get(path).header("origin", APP);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await;
        assert!(resp.status.is_client_error(), "{path}");
        assert_eq!(
            get(&resp.headers, "access-control-allow-origin"),
            Some(APP),
            "{path}"
        );
        assert!(varies_by_origin(&resp.headers));
    }
}

#[tokio::test]
async fn without_allowed_origins_no_answer_changes() {
    let app = TestApp::builder().demo_data().start().await;
    let resp = preflight(&app, "/api/chat/cmp_demo_01", APP, "POST").await;
    assert_eq!(resp.status, 405);
    assert_eq!(cors_headers(&resp.headers), Vec::<String>::new());
    for path in ["/api/dashboard/prefetch", "/api/health"] {
        let resp = app.get(path).header("origin", APP).send().await;
        assert_eq!(resp.status, 200);
        assert_eq!(cors_headers(&resp.headers), Vec::<String>::new());
        assert!(!varies_by_origin(&resp.headers));
    }
}

#[tokio::test]
async fn an_allowed_origin_that_is_not_an_origin_stops_gcbb_dev_naming_the_variable() {
    let db = absent_db();
    for bad in ["https://app.example/app", "*", "app.example"] {
        let mut child = gcbb()
            .args(["dev", "--port", &free_port().to_string()])
            .env("DATABASE_URL", &db.url)
            .env("LLM_PROVIDER", "scripted")
            .env("CORS_ALLOWED_ORIGINS", bad)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("gcbb dev started with CORS_ALLOWED_ORIGINS={bad}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!status.success(), "{bad}");
        assert!(
            stderr.contains("CORS_ALLOWED_ORIGINS is invalid"),
            "{bad}: {stderr}"
        );
    }
}
