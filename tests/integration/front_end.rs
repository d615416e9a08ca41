//! The front end in `public/`, driven in Debian's Chromium by `tests/browser` (a Node project
//! pinning playwright-core) against a real `gcbb dev` on a fresh database with the demo data and
//! the scripted model; and `gcbb dev`'s development sign-in, which the front end uses to act as a
//! demo user without Clerk.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{fresh_db, project_root, TestDb};
use crate::support::Server;
use crate::tokens::clerk_env;
use gcbb_test_support::node::npm_ci_unless_installed;

/// The demo data's owners (`cli/src/demo.rs`), the users dev sign-in offers.
const DEMO_OWNERS: [&str; 3] = ["user_demo_1", "user_demo_2", "user_demo_3"];
/// The browser checks take about 15 s alone; the rest is headroom for a busy machine.
const BROWSER_CHECK_LIMIT: Duration = Duration::from_secs(150);
const CHROMIUM: &str = "/usr/bin/chromium";

/// `gcbb dev` seeding `db` with the demo data, answering with the scripted model.
async fn start_dev(db: &TestDb, env: &[(&str, String)]) -> Server {
    let mut vars = vec![
        // The browser sends more chat requests than the default 5 a minute allow.
        ("RATE_LIMIT_ANON_REQUESTS", "1000".to_owned()),
        ("RATE_LIMIT_USER_REQUESTS", "1000".to_owned()),
        // Slow enough that a reply arrives in many pieces the browser can be seen to show.
        ("LLM_SCRIPTED_CHUNK_DELAY_MS", "30".to_owned()),
    ];
    vars.extend_from_slice(env);
    crate::common::start_dev(db, &vars).await
}

async fn dev_session(http: &reqwest::Client, server: &Server, body: Value) -> reqwest::Response {
    http.post(server.url("/__dev/session"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The chat history with Luna the Cat (cmp_demo_03, private to user_demo_1), read with `token`
/// or anonymously.
async fn luna_history(
    http: &reqwest::Client,
    server: &Server,
    token: Option<&str>,
) -> reqwest::Response {
    let request = http.get(server.url("/api/chat/cmp_demo_03"));
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.unwrap()
}

#[tokio::test]
async fn without_a_clerk_key_gcbb_dev_signs_in_the_demo_owners_and_the_functions_accept_them() {
    let db = fresh_db().await;
    let server = start_dev(&db, &[]).await;
    let banner = server.output_once_printed("listening on http://").await;
    assert!(banner.contains("dev sign-in"), "{banner}");
    assert!(banner.contains("/__dev/session"), "{banner}");
    let http = reqwest::Client::new();

    let resp = http.get(server.url("/__dev/session")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let offer: Value = resp.json().await.unwrap();
    assert_eq!(offer["users"], json!(DEMO_OWNERS), "{offer}");
    let key_id = offer["keyId"].as_str().unwrap().to_owned();

    let resp = dev_session(&http, &server, json!({"userId": "user_demo_1"})).await;
    assert_eq!(resp.status(), 200);
    let session: Value = resp.json().await.unwrap();
    assert_eq!(session["userId"], "user_demo_1");
    assert_eq!(session["keyId"], key_id.as_str());
    let token = session["token"].as_str().unwrap();

    // The functions verify it like a Clerk token: the owner reads history with a private
    // companion of theirs (Luna the Cat), which is 404 to everyone else and 401 anonymously.
    let resp = luna_history(&http, &server, Some(token)).await;
    assert_eq!(resp.status(), 200);
    let history: Value = resp.json().await.unwrap();
    assert!(
        !history["messages"].as_array().unwrap().is_empty(),
        "{history}"
    );
    let anonymous = luna_history(&http, &server, None).await;
    assert_eq!(anonymous.status(), 401);
    let other: Value = dev_session(&http, &server, json!({"userId": "user_demo_2"}))
        .await
        .json()
        .await
        .unwrap();
    let resp = luna_history(&http, &server, Some(other["token"].as_str().unwrap())).await;
    assert_eq!(resp.status(), 404);

    // Only companion owners, never the platform (it creates the demo groups), never anyone.
    for body in [
        json!({"userId": "system"}),
        json!({"userId": "user_nobody"}),
        json!({}),
        json!({"userId": "user_demo_1", "role": "admin"}),
    ] {
        let resp = dev_session(&http, &server, body.clone()).await;
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "invalid_parameter", "{body}: {err}");
    }
    let resp = http
        .post(server.url("/__dev/session"))
        .body("user_demo_1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let resp = http
        .delete(server.url("/__dev/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn with_a_clerk_key_gcbb_dev_has_no_dev_sign_in() {
    let db = fresh_db().await;
    let server = start_dev(&db, &clerk_env()).await;
    let banner = server.output_once_printed("listening on http://").await;
    assert!(banner.contains("Clerk (CLERK_JWT_KEY)"), "{banner}");
    assert!(!banner.contains("/__dev/session"), "{banner}");
    let resp = reqwest::get(server.url("/__dev/session")).await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = dev_session(
        &reqwest::Client::new(),
        &server,
        json!({"userId": "user_demo_1"}),
    )
    .await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert!(!resp.text().await.unwrap().contains("token"));
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_functions_know_nothing_of_dev_sign_in() {
    let root = project_root();
    let files: Vec<PathBuf> = ["src", "api"]
        .iter()
        .flat_map(|d| rust_files(&root.join(d)))
        .collect();
    assert!(files.len() > 10, "the functions' sources are found");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for word in ["__dev", "DevSigner", "dev_session", "dev sign-in"] {
            assert!(
                !text.contains(word),
                "{} mentions {word}: dev sign-in belongs to gcbb dev only",
                file.display()
            );
        }
    }
}

/// 24 older messages of user_demo_1 with Pixel Knight, so the chat history has two pages.
async fn insert_long_history(db: &TestDb) {
    db.client()
        .await
        .batch_execute(
            "INSERT INTO \"Message\" (\"id\", \"role\", \"content\", \"companionId\", \"userId\", \
                                      \"createdAt\", \"updatedAt\") \
             SELECT 'msg_seeded_' || n, (CASE WHEN n % 2 = 0 THEN 'user' ELSE 'assistant' END)::\"Role\", \
                    'Seeded message ' || n, 'cmp_demo_06', 'user_demo_1', \
                    now() - interval '1 day' + make_interval(secs => n), now() \
             FROM generate_series(0, 23) AS n",
        )
        .await
        .unwrap();
}

/// `target/browser-check/`, beside the build's profile folders; emptied for each run.
fn output_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary sits in target/<profile>/deps");
    let dir = target.join("browser-check");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `tests/browser/check.mjs` (installing playwright-core from its lock the first time);
/// returns its report and what it wrote to stderr.
fn run_browser_checks(base: &str, out: &Path) -> (Value, String) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run .ci/setup (it installs Debian's chromium)"
    );
    let dir = project_root().join("tests/browser");
    npm_ci_unless_installed(&dir, &["playwright-core"]);
    let report_path = out.join("report.json");
    let stderr_path = out.join("stderr.txt");
    let mut child = Command::new("node")
        .current_dir(&dir)
        .args(["check.mjs", base])
        .arg(out)
        .env("CHROMIUM", CHROMIUM)
        .stdout(std::fs::File::create(&report_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .expect("node runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BROWSER_CHECK_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the browser checks took over {BROWSER_CHECK_LIMIT:?}:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let raw = std::fs::read_to_string(&report_path).unwrap_or_default();
    let report: Value = serde_json::from_str(&raw).unwrap_or_else(|e| {
        panic!("the browser checks printed no report ({status}, {e}):\n{raw}\n{stderr}")
    });
    (report, stderr)
}

#[tokio::test]
async fn the_front_end_works_in_a_real_browser_against_gcbb_dev() {
    let db = fresh_db().await;
    let server = start_dev(&db, &[]).await;
    insert_long_history(&db).await;
    let out = output_dir();
    let (report, stderr) = tokio::task::spawn_blocking({
        let base = server.base.clone();
        let out = out.clone();
        move || run_browser_checks(&base, &out)
    })
    .await
    .unwrap();

    let figures = &report["figures"];
    println!(
        "front end: page weight {} B (public/ files as loaded, uncompressed), time to first \
         rendered grid {} ms on the first load, {} ms on a reload (304); screenshots and report \
         in {}",
        figures["pageWeightBytes"],
        figures["timeToFirstGridMs"],
        figures["timeToFirstGridWarmMs"],
        out.display()
    );
    let checks = report["checks"]
        .as_array()
        .expect("the report lists checks");
    assert!(checks.len() >= 15, "{report}");
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c["ok"] != true)
        .map(|c| format!("✗ {}\n{}", c["name"], c["detail"].as_str().unwrap_or("")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} browser check(s) failed:\n{}\n\nnode stderr:\n{stderr}\n\ngcbb dev:\n{}",
        failed.len(),
        failed.join("\n\n"),
        server.output()
    );
    assert!(
        report["screenshots"].as_array().unwrap().len() >= 8,
        "{report}"
    );
}
