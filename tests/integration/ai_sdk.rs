//! The Vercel AI SDK's own client code, run by node (`tests/ai-sdk/clients.mjs`), against
//! `POST /api/chat/:chatId` served on real sockets: for each installed version — `ai` as pinned
//! first (6.x) and the latest `ai@5` (the npm alias `ai5`) — `useChat`'s framework-free `Chat`
//! with `DefaultChatTransport` and with `TextStreamChatTransport`, `callCompletionApi` in both
//! stream protocols, and `readUIMessageStream` on a plain fetch; through multi-turn chats,
//! regenerate, `stop()` mid-stream (a disconnect), resume after a reload (`resumeStream`, on the
//! SDK's default routes and on ours), `reconnectToStream`, the documented explicit stop
//! (`POST …/stop`), the last-message body, 429 and model failures before and after the first
//! token. The script counts what works per client; this test requires all of it and checks what
//! the server kept (stored exchanges, replies finished after their client left, the stopped
//! reply, cancelled model calls).

use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use gcbb::platform::cors::ALLOWED_HEADERS;
use gcbb_cli::model_server::{Failure, Script};
use serde_json::{json, Value};

use crate::chat::{chat_app, messages, ALICE, BOB, PUBLIC};
use crate::resume::replies;

/// The users of the slow server's resume, reconnect and stop scenarios.
const RESUMER: &str = "user_resumer";
const RECONNECTER: &str = "user_reconnecter";
const STOPPER: &str = "user_stopper";
use crate::common::app::{Served, TestApp};
use crate::common::eventually;
use crate::common::failing;
use crate::common::session::token_for;
use gcbb_test_support::node::{node_json, npm_ci_unless_installed};

/// The project of the SDK's client code.
pub fn node_project() -> PathBuf {
    gcbb_test_support::node::node_project("ai-sdk")
}

static NPM_CI: Once = Once::new();

/// Runs `node <args>` in `tests/ai-sdk` (installing the locked packages first when one is
/// missing or not the version the lock pins) and returns the JSON it printed.
pub fn run_node(args: &[&str]) -> Value {
    let dir = node_project();
    NPM_CI.call_once(|| npm_ci_unless_installed(&dir, &["ai", "ai5"]));
    node_json(&dir, args)
}

/// The slow reply: long enough that a client can always stop it half-way.
fn slow_script() -> Script {
    Script {
        chunks: vec!["word ".into(); 200],
        chunk_gap: Duration::from_millis(20),
        ..Script::default()
    }
}

/// Limits no scenario reaches, for the servers that are not about rate limits.
fn unlimited(builder: crate::common::app::TestAppBuilder) -> crate::common::app::TestAppBuilder {
    builder
        .env("RATE_LIMIT_ANON_REQUESTS", "100000")
        .env("RATE_LIMIT_USER_REQUESTS", "100000")
}

/// Checks of each client in `clients.mjs`, per version (the script runs the same ones for both).
const EXPECTED: [(&str, u64); 4] = [
    ("useChat/DefaultChatTransport", 13),
    ("useChat/TextStreamChatTransport", 7),
    ("useCompletion/callCompletionApi", 12),
    ("readUIMessageStream", 4),
];

/// Request headers no preflight needs to allow: the CORS-safelisted ones, and the test's own
/// stand-in for the address Vercel's proxy adds.
const SAFELISTED: [&str; 4] = [
    "accept",
    "accept-language",
    "content-language",
    "x-forwarded-for",
];

async fn run_clients(package: &'static str) -> Value {
    let ok = unlimited(chat_app(Script::default())).start().await;
    let slow = unlimited(chat_app(slow_script())).start().await;
    let failing = unlimited(chat_app(failing(Failure::ErrorEventAfter(2))))
        .start()
        .await;
    let down = unlimited(chat_app(crate::common::failing(Failure::Status(500))))
        .start()
        .await;
    let limited = chat_app(Script::default())
        .env("RATE_LIMIT_ANON_REQUESTS", "1")
        // A day: windows are aligned to the epoch, so a shorter one could roll over mid-test.
        .env("RATE_LIMIT_ANON_WINDOW_MS", "86400000")
        .start()
        .await;
    let apps: [&TestApp; 5] = [&ok, &slow, &failing, &down, &limited];
    let mut served: Vec<Served> = Vec::new();
    for app in apps {
        served.push(app.serve().await);
    }
    let url = |s: &Served| s.url(&format!("/api/chat/{PUBLIC}"));
    let config = json!({
        "ok": url(&served[0]),
        "slow": url(&served[1]),
        "failing": url(&served[2]),
        "down": url(&served[3]),
        "limited": url(&served[4]),
        "okBase": served[0].base,
        "slowBase": served[1].base,
        "companion": PUBLIC,
        "token": token_for(ALICE),
        "slowToken": token_for(BOB),
        "resumeToken": token_for(RESUMER),
        "reconnectToken": token_for(RECONNECTER),
        "stopToken": token_for(STOPPER),
        "reply": Script::default().text(),
        "slowReply": slow_script().text(),
    })
    .to_string();
    let out = tokio::task::spawn_blocking(move || run_node(&["clients.mjs", package, &config]))
        .await
        .unwrap();
    println!(
        "{package} {}: {}/{} calls work — {}",
        out["version"].as_str().unwrap_or("?"),
        out["passed"],
        out["total"],
        EXPECTED
            .iter()
            .map(|(client, _)| format!(
                "{client} {}/{}",
                out["clients"][client]["passed"], out["clients"][client]["total"]
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(
        out["failures"],
        json!([]),
        "{}",
        serde_json::to_string_pretty(&out["failures"]).unwrap()
    );
    for (client, total) in EXPECTED {
        assert_eq!(
            out["clients"][client],
            json!({"passed": total, "total": total}),
            "{client}: {}",
            out["checks"]
        );
    }

    // TextStreamChatTransport posts exactly what DefaultChatTransport posts: without
    // `Accept: text/plain` it gets the UI-message stream and shows it as text.
    let raw = out["notes"]["textTransportWithoutAccept"].as_str().unwrap();
    assert!(raw.starts_with(r#"data: {"type":"start""#), "{raw}");

    // Every header a client sent is one the CORS preflight allows, or needs no allowance.
    let allowed: Vec<&str> = ALLOWED_HEADERS.split(", ").collect();
    for (client, names) in out["sentHeaders"].as_object().unwrap() {
        for name in names.as_array().unwrap() {
            let name = name.as_str().unwrap();
            assert!(
                allowed.contains(&name) || SAFELISTED.contains(&name),
                "{client} sends `{name}`, which the preflight does not allow"
            );
        }
    }

    // Every signed-in exchange was stored, once.
    let exchanges = out["signedIn"].as_u64().unwrap() as usize;
    assert_eq!(
        exchanges, 10,
        "two turns of each Chat, of the trimmed one and of the last-message one, one call of each protocol"
    );
    let stored = messages(&ok, PUBLIC, ALICE).await;
    assert_eq!(stored.len(), exchanges * 2, "{stored:?}");
    for pair in stored.chunks(2) {
        assert_eq!(pair[0].0, "user");
        assert_eq!(pair[1], ("assistant".into(), Script::default().text()));
    }

    // stop() is a disconnect: each reply its client left ran to its end and was stored whole.
    let full = slow_script().text();
    let disconnected = out["disconnected"].as_u64().unwrap() as usize;
    assert_eq!(disconnected, 4);
    // (The next prompt may be stored before the reply a client left has ended.)
    let whole = || async {
        let stored = messages(&slow, PUBLIC, BOB).await;
        let prompts = stored.iter().filter(|(role, _)| role == "user").count();
        let replies: Vec<&String> = stored
            .iter()
            .filter(|(role, _)| role == "assistant")
            .map(|(_, text)| text)
            .collect();
        prompts == disconnected
            && replies.len() == disconnected
            && replies.iter().all(|t| **t == full)
    };
    assert!(
        eventually(whole).await,
        "{:?}",
        messages(&slow, PUBLIC, BOB).await
    );
    // The resumed reply is the stored one, under the id the client has.
    let resumed = replies(&slow, PUBLIC, RESUMER).await;
    assert_eq!(
        resumed,
        [(
            out["notes"]["resumed"]["id"].as_str().unwrap().to_owned(),
            full.clone(),
            None
        )]
    );
    assert!(eventually(|| async { replies(&slow, PUBLIC, RECONNECTER).await.len() == 1 }).await);
    // The explicit stop: what the client showed is what was stored, marked stopped, and the
    // model's call was the one cut off.
    let stopped = replies(&slow, PUBLIC, STOPPER).await;
    assert_eq!(
        stopped,
        [(
            out["notes"]["stopped"]["id"].as_str().unwrap().to_owned(),
            out["notes"]["stopped"]["text"].as_str().unwrap().to_owned(),
            Some("stopped".to_owned())
        )]
    );
    assert!(eventually(|| async { slow.model().cancelled() == 1 }).await);
    // Every other slow reply ran to its end: the disconnected ones, the two resumed, the
    // reconnected one.
    assert!(
        eventually(|| async { slow.model().completed() == disconnected + 3 }).await,
        "completed {}",
        slow.model().completed()
    );
    assert_eq!(slow.model().cancelled(), 1);
    out
}

#[tokio::test]
async fn every_call_of_the_pinned_ai_sdk_works() {
    let out = run_clients("ai").await;
    assert_eq!(
        out["version"], "6.0.333",
        "the version package-lock.json pins"
    );
}

#[tokio::test]
async fn every_call_of_ai_sdk_5_works() {
    let out = run_clients("ai5").await;
    let version = out["version"].as_str().unwrap();
    assert!(version.starts_with("5."), "{version}");
    assert_eq!(version, "5.0.285", "the version package-lock.json pins");
}
