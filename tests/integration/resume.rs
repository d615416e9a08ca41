//! Resume and stop (`GET /api/chat/:chatId/stream`, `POST /api/chat/:chatId/stop`, and the group
//! chat's twins), in-process through the router of every function, against the local model
//! server: a resume replays a reply in flight from its start and follows it to its end, on this
//! instance or another one sharing the cache (native Redis, Upstash through a real `gcbb
//! upstash-proxy`); a stop keeps what was said (stored as stopped), ends every reader, and
//! closes the model's connection; nothing reaches another viewer's stream.
//!
//! The figures printed (`--nocapture`) are for the record; only the bounds that are the feature
//! (a stop reaches the model within a second, with a margin for a busy machine) are asserted.

use std::time::{Duration, Instant};

use gcbb_cli::model_server::Script;
use serde_json::{json, Value};

use gcbb_cli::model_server::LocalModelServer;

use crate::chat::{chat_app, messages, tokens, ALICE, BOB, PRIVATE, PUBLIC};
use crate::common::app::{CacheKind, TestApp};
use crate::common::request::{StreamingResponse, TestRequest};
use crate::common::session::{clerk_env, token_for};
use crate::common::{eventually, fresh_db, project_root, unique};
use crate::group_chat::{groups, prompt, GROUP};
use crate::support::{binary, free_port, Server};

/// What the feature promises for a stop: the model sees its connection closed within this.
const STOP_BOUND: Duration = Duration::from_secs(1);
/// Slack over a bound for a shared, busy machine.
const MARGIN: Duration = Duration::from_secs(2);

/// A reply of `n` words, one every `gap_ms`.
pub fn slow(n: usize, gap_ms: u64) -> Script {
    Script {
        chunks: (0..n).map(|i| format!("w{i} ")).collect(),
        chunk_gap: Duration::from_millis(gap_ms),
        ..Script::default()
    }
}

/// The app whose model answers `slow(n, gap_ms)`, and the full text of that reply.
async fn slow_chat(n: usize, gap_ms: u64) -> (TestApp, String) {
    let script = slow(n, gap_ms);
    let full = script.text();
    (chat_app(script).start().await, full)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The AI SDK's chat request with one user message.
fn chat_request(text: &str) -> Value {
    json!({
        "id": "chat-1",
        "trigger": "submit-message",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}]
    })
}

fn post_chat(app: &TestApp, companion: &str, text: &str) -> TestRequest {
    app.post_json(&format!("/api/chat/{companion}"), &chat_request(text))
}

fn resume(app: &TestApp, companion: &str) -> TestRequest {
    app.get(&format!("/api/chat/{companion}/stream"))
}

fn stop(app: &TestApp, companion: &str) -> TestRequest {
    app.post(&format!("/api/chat/{companion}/stop"))
}

/// Alice asks the public companion `text`; her reply's stream, read until its first text, and
/// what was read.
async fn alice_mid_reply(app: &TestApp, text: &str) -> (StreamingResponse, Vec<u8>) {
    let mut resp = post_chat(app, PUBLIC, text)
        .signed_in(ALICE)
        .send_streaming()
        .await;
    let read = until_text(&mut resp).await;
    (resp, read)
}

/// Alice resumes her reply in flight with the public companion on `app`.
async fn alice_resumes(app: &TestApp) -> StreamingResponse {
    resume(app, PUBLIC).signed_in(ALICE).send_streaming().await
}

/// The id of the reply whose stream begins with `read`.
fn message_id(read: &[u8]) -> String {
    events(read)[0]["messageId"].as_str().unwrap().to_owned()
}

/// The SSE events of `bytes`.
pub fn events(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::from(d)))
        .collect()
}

/// The text of a UI-message stream's deltas.
pub fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "text-delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect()
}

/// Reads a streaming response until its first text arrived; returns what was read.
pub async fn until_text(resp: &mut StreamingResponse) -> Vec<u8> {
    let mut read = Vec::new();
    while !events(&read).iter().any(|e| e["type"] == "text-delta") {
        let chunk = resp
            .next_chunk()
            .await
            .expect("more body")
            .expect("no error");
        read.extend_from_slice(&chunk);
    }
    read
}

/// The rest of a streaming response's body.
pub async fn rest(resp: StreamingResponse) -> Vec<u8> {
    resp.collect().await.body.to_vec()
}

/// (id, content, status) of the assistant messages of (companion, user), oldest first.
pub async fn replies(
    app: &TestApp,
    companion: &str,
    user: &str,
) -> Vec<(String, String, Option<String>)> {
    app.triples(
        "SELECT \"id\", \"content\", \"status\" FROM \"Message\" \
         WHERE \"companionId\" = $1 AND \"userId\" = $2 AND \"role\" = 'assistant' \
         ORDER BY \"createdAt\", \"id\"",
        &[&companion, &user],
    )
    .await
}

#[tokio::test]
async fn a_resume_replays_the_reply_from_its_start_and_follows_it_with_the_stored_rows_id() {
    let (app, full) = slow_chat(30, 25).await;
    let (first, read) = alice_mid_reply(&app, "tell me").await;
    assert_eq!(first.status, 200);
    let id = message_id(&read);
    // The page reloads: the first response goes away, the reply goes on.
    drop(first);

    let started = Instant::now();
    let mut resumed = alice_resumes(&app).await;
    assert_eq!(resumed.status, 200);
    assert_eq!(resumed.headers["x-vercel-ai-ui-message-stream"], "v1");
    assert!(resumed.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let head = resumed.next_chunk().await.unwrap().unwrap();
    println!(
        "figure: resume GET → first replayed byte, same instance: {} ms",
        ms(started.elapsed())
    );
    let mut body = head.to_vec();
    body.extend(rest(resumed).await);
    let ev = events(&body);
    assert_eq!(ev[0], json!({"type": "start", "messageId": id}));
    assert_eq!(ev[1]["type"], "text-start");
    assert_eq!(
        text_of(&ev),
        full,
        "replayed from its start, followed to its end"
    );
    assert_eq!(
        ev[ev.len() - 2],
        json!({"type": "finish", "finishReason": "stop",
               "messageMetadata": {"status": "finished", "stored": true}})
    );
    assert_eq!(ev[ev.len() - 1], "[DONE]");
    // The stored row is the one the stream announced, whole, finished.
    assert_eq!(replies(&app, PUBLIC, ALICE).await, [(id, full, None)]);
    let history = app
        .get(&format!("/api/chat/{PUBLIC}"))
        .signed_in(ALICE)
        .send()
        .await
        .json();
    assert_eq!(history["messages"][1]["status"], "finished");
    assert_eq!(history["messages"][0].get("status"), None);
    // Once it has ended there is nothing to resume: the history has it.
    let resp = resume(&app, PUBLIC).signed_in(ALICE).send().await;
    assert_eq!(resp.status, 204);
    assert!(resp.text().is_empty());
    assert_eq!(app.model().requests(), 1);
}

#[tokio::test]
async fn nobody_reaches_another_viewers_stream_and_bad_requests_get_the_right_4xx() {
    let (app, full) = slow_chat(40, 25).await;
    let (alice, _) = alice_mid_reply(&app, "mine").await;

    // Bob, and anonymous viewers, have nothing in flight in this chat: 204, never Alice's.
    for viewer in [Some(BOB), None] {
        let resp = resume(&app, PUBLIC).viewer(viewer).send().await;
        assert_eq!(resp.status, 204, "{viewer:?}");
        let resp = stop(&app, PUBLIC).viewer(viewer).send().await;
        assert_eq!(resp.status, 204, "{viewer:?}");
    }
    // What the history would say for a chat the viewer may not see: 404.
    for (path, viewer) in [
        (format!("/api/chat/{PRIVATE}/stream"), Some(BOB)),
        (format!("/api/chat/{PRIVATE}/stream"), None),
        ("/api/chat/no_such_companion/stream".to_owned(), Some(ALICE)),
    ] {
        let resp = app.get(&path).viewer(viewer).send().await;
        assert_eq!(resp.status, 404, "{path} {viewer:?}");
        assert_eq!(resp.error_code(), "not_found");
        let stop_path = path.replace("/stream", "/stop");
        let resp = app.post(&stop_path).viewer(viewer).send().await;
        assert_eq!(resp.status, 404, "{stop_path} {viewer:?}");
    }
    // Ids that can't be ours, wrong methods, hostile stop bodies.
    for path in [
        "/api/chat/x'%20OR%201=1--/stream",
        "/api/chat/%E2%80%AE%F0%9F%A6%80/stop",
    ] {
        let resp = app.get(path).signed_in(ALICE).send().await;
        assert!(
            [400, 405].contains(&resp.status.as_u16()),
            "{path}: {}",
            resp.status
        );
    }
    for (wrong_method, allow) in [
        (
            app.post_json(&format!("/api/chat/{PUBLIC}/stream"), &json!({})),
            "GET,HEAD",
        ),
        (app.get(&format!("/api/chat/{PUBLIC}/stop")), "POST"),
    ] {
        let resp = wrong_method.signed_in(ALICE).send().await;
        assert_eq!(resp.status, 405);
        assert_eq!(resp.header("allow"), allow);
    }
    for (body, content_type, status, code) in [
        (
            "{\"activeStreamId\": ",
            "application/json",
            400,
            "malformed_json",
        ),
        ("stop it", "text/plain", 415, "unsupported_media_type"),
        (
            "{\"activeStreamId\": \"x' OR 1=1--\"}",
            "application/json",
            400,
            "invalid_parameter",
        ),
        (
            "{\"activeStreamId\": \"\u{202E}🦀\"}",
            "application/json",
            400,
            "invalid_parameter",
        ),
        (
            "{\"activeStreamId\": 5}",
            "application/json",
            400,
            "invalid_parameter",
        ),
    ] {
        let resp = stop(&app, PUBLIC)
            .signed_in(ALICE)
            .body(content_type, body.to_owned())
            .send()
            .await;
        assert_eq!(resp.status.as_u16(), status, "{body}");
        assert_eq!(resp.error_code(), code, "{body}");
    }
    let huge = format!("{{\"assistantMessage\": \"{}\"}}", "a".repeat(1_100_000));
    let resp = stop(&app, PUBLIC)
        .signed_in(ALICE)
        .body("application/json", huge)
        .send()
        .await;
    assert_eq!(resp.status, 413);
    // A stop naming another stream (a stale one) stops nothing.
    let resp = stop(&app, PUBLIC)
        .signed_in(ALICE)
        .json(&json!({"activeStreamId": "an-older-stream"}))
        .send()
        .await;
    assert_eq!(resp.status, 204);

    // None of it touched Alice's reply: it ends whole, and Bob has nothing stored.
    let ev = events(&rest(alice).await);
    assert_eq!(ev[ev.len() - 2]["messageMetadata"]["status"], "finished");
    assert_eq!(replies(&app, PUBLIC, ALICE).await[0].1, full);
    app.finish_background().await;
    assert!(messages(&app, PUBLIC, BOB).await.is_empty());
    assert_eq!(app.model().requests(), 1);
    assert_eq!(app.model().cancelled(), 0);
}

#[tokio::test]
async fn a_stop_keeps_the_partial_reply_as_stopped_ends_every_reader_and_closes_the_model_call() {
    let (app, full) = slow_chat(300, 20).await;
    let (first, read) = alice_mid_reply(&app, "a long one").await;
    let id = message_id(&read);
    let mut resumed = alice_resumes(&app).await;
    assert_eq!(resumed.status, 200);
    let resumed_head = until_text(&mut resumed).await;

    let started = Instant::now();
    let resp = stop(&app, PUBLIC)
        .signed_in(ALICE)
        .json(
            &json!({"activeStreamId": id, "assistantMessage": {"role": "assistant", "parts": []}}),
        )
        .send()
        .await;
    let answered = started.elapsed();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("cache-control"), "private, no-store");
    let body = resp.json();
    assert_eq!(
        body,
        json!({"streamId": id, "messageId": id, "status": "stopped", "stored": true})
    );
    assert!(eventually(|| async { app.model().cancelled() == 1 }).await);
    let seen = app.model().cancelled_at()[0].duration_since(started);
    println!(
        "figure: stop POST → model server sees its connection closed, same instance: {} ms (the stop answered after {} ms)",
        ms(seen),
        ms(answered)
    );
    assert!(seen < STOP_BOUND + MARGIN, "{seen:?}");
    assert_eq!(app.model().completed(), 0);

    // Stored once, as what was said, marked stopped.
    let stored = replies(&app, PUBLIC, ALICE).await;
    assert_eq!(stored.len(), 1);
    let (stored_id, said, status) = &stored[0];
    assert_eq!(stored_id, &id);
    assert!(!said.is_empty() && said.len() < full.len() && full.starts_with(said.as_str()));
    assert_eq!(status.as_deref(), Some("stopped"));
    // Every reader saw the words that were stored, and a finish that says how it ended.
    for (mut body, resp) in [(read, first), (resumed_head, resumed)] {
        body.extend(rest(resp).await);
        let ev = events(&body);
        assert_eq!(
            ev[ev.len() - 2],
            json!({"type": "finish", "finishReason": "other",
                   "messageMetadata": {"status": "stopped", "stored": true}})
        );
        assert_eq!(ev[ev.len() - 1], "[DONE]");
        assert_eq!(&text_of(&ev), said);
    }
    // Its tokens (estimated: the model never counted them) are accounted, once.
    assert!(
        eventually(|| async {
            matches!(tokens(&app, PUBLIC, ALICE).await, (n, Some(m)) if n > 0 && n == m)
        })
        .await
    );
    app.finish_background().await;
    assert_eq!(
        app.count("SELECT count(*) FROM \"ReplyTokens\"").await,
        1,
        "one ledger row"
    );
    // A second stop finds nothing in flight, and writes nothing.
    let resp = stop(&app, PUBLIC).signed_in(ALICE).send().await;
    assert_eq!(resp.status, 204);
    app.finish_background().await;
    assert_eq!(replies(&app, PUBLIC, ALICE).await.len(), 1);
}

/// 20 replies at once, each raced by two stops (one per instance, through Redis) as it ends on
/// its own: however the race goes, each prompt has exactly one stored reply and one ledger row.
#[tokio::test]
async fn two_stops_racing_the_natural_end_of_a_reply_leave_exactly_one_stored_reply() {
    let app = chat_app(slow(5, 15)).cache(CacheKind::Redis).start().await;
    let second = app.another_instance().await;
    let users: Vec<String> = (0..20).map(|i| format!("user_race_{i}")).collect();
    let races = users.iter().enumerate().map(|(i, user)| {
        let (app, second) = (&app, &second);
        async move {
            let mut resp = post_chat(app, PUBLIC, "race")
                .signed_in(user)
                .send_streaming()
                .await;
            until_text(&mut resp).await;
            // The reply ends about 60 ms after its first word: stop around then.
            tokio::time::sleep(Duration::from_millis(10 + (i as u64 * 11) % 100)).await;
            let (a, b) = tokio::join!(
                stop(app, PUBLIC).signed_in(user).send(),
                stop(second, PUBLIC).signed_in(user).send()
            );
            let body = rest(resp).await;
            (a.status.as_u16(), b.status.as_u16(), events(&body))
        }
    });
    let outcomes = futures_util::future::join_all(races).await;
    let mut stopped = 0;
    for (user, (a, b, ev)) in users.iter().zip(&outcomes) {
        assert!(
            [200, 202, 204].contains(a) && [200, 202, 204].contains(b),
            "{a} {b}"
        );
        let stored = replies(&app, PUBLIC, user).await;
        assert_eq!(stored.len(), 1, "{user}: {stored:?}");
        let status = ev[ev.len() - 2]["messageMetadata"]["status"]
            .as_str()
            .unwrap();
        assert_eq!(
            stored[0].2.as_deref().unwrap_or("finished"),
            status,
            "the stream said how the stored reply ended"
        );
        stopped += (status == "stopped") as usize;
    }
    println!("figure: of 20 replies raced by two stops each, {stopped} were stopped, the rest finished first");
    app.finish_background().await;
    assert_eq!(
        app.count("SELECT count(*) FROM \"ReplyTokens\"").await,
        20,
        "one ledger row per reply"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM \"Message\" WHERE \"role\" = 'assistant'")
            .await,
        20
    );
}

/// The producer on one instance, the resume and the stop on another sharing the cache: native
/// Redis and Upstash (a real `gcbb upstash-proxy`). With the memory cache a second instance
/// has nothing to replay (docs/api.md says so).
#[tokio::test]
async fn a_reply_resumes_and_stops_on_another_instance_through_redis_and_upstash() {
    for kind in [CacheKind::Redis, CacheKind::Upstash] {
        let label = format!("{kind:?}");
        let script = slow(300, 20);
        let full = script.text();
        let app = chat_app(script).cache(kind).start().await;
        let other = app.another_instance().await;
        let (first, read) = alice_mid_reply(&app, "across").await;
        let id = message_id(&read);
        drop(first);
        // The journal is written in batches: let one reach the cache.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let started = Instant::now();
        let mut resumed = resume(&other, PUBLIC)
            .signed_in(ALICE)
            .send_streaming()
            .await;
        assert_eq!(resumed.status, 200, "{label}");
        let head = resumed.next_chunk().await.unwrap().unwrap();
        println!(
            "figure: resume GET → first replayed byte, another instance ({label}): {} ms",
            ms(started.elapsed())
        );
        let mut seen = head.to_vec();
        while text_of(&events(&seen)).len() < 40 {
            seen.extend_from_slice(&resumed.next_chunk().await.unwrap().unwrap());
        }
        let ev = events(&seen);
        assert_eq!(ev[0], json!({"type": "start", "messageId": id}), "{label}");
        assert!(
            full.starts_with(&text_of(&ev)),
            "{label}: replayed from the start"
        );

        let started = Instant::now();
        let resp = stop(&other, PUBLIC).signed_in(ALICE).send().await;
        assert_eq!(resp.status, 200, "{label}: {}", resp.text());
        assert_eq!(resp.json()["status"], "stopped", "{label}");
        assert!(eventually(|| async { app.model().cancelled() == 1 }).await);
        let seen_at = app.model().cancelled_at()[0].duration_since(started);
        println!(
            "figure: stop POST on another instance ({label}) → model server sees its connection closed: {} ms",
            ms(seen_at)
        );
        assert!(seen_at < STOP_BOUND + MARGIN, "{label}: {seen_at:?}");
        seen.extend(rest(resumed).await);
        let ev = events(&seen);
        assert_eq!(
            ev[ev.len() - 2]["messageMetadata"],
            json!({"status": "stopped", "stored": true}),
            "{label}"
        );
        let stored = replies(&app, PUBLIC, ALICE).await;
        assert_eq!(stored.len(), 1, "{label}");
        assert_eq!(stored[0].0, id);
        assert_eq!(
            text_of(&ev),
            stored[0].1,
            "{label}: the reader saw what was stored"
        );
        assert_eq!(stored[0].2.as_deref(), Some("stopped"));
    }

    let app = chat_app(slow(100, 20)).start().await;
    let other = app.another_instance().await;
    let (_first, _) = alice_mid_reply(&app, "memory").await;
    assert_eq!(
        resume(&other, PUBLIC).signed_in(ALICE).send().await.status,
        204
    );
    assert_eq!(
        resume(&app, PUBLIC).signed_in(ALICE).send().await.status,
        200
    );
}

/// The measure of the journal in Redis: what one reply in flight holds there.
#[tokio::test]
async fn a_reply_in_flight_holds_a_bounded_journal_in_redis_and_little_once_it_ended() {
    let script = slow(200, 10);
    let app = chat_app(script.clone())
        .cache(CacheKind::Redis)
        .start()
        .await;
    let (resp, _) = alice_mid_reply(&app, "measure me").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let client = redis::Client::open(crate::common::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = app.redis_keys("v1:reply:*").await;
    let mut mid = 0i64;
    for key in &keys {
        let used: Option<i64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        mid += used.unwrap_or(0);
    }
    let body = rest(resp).await;
    let text = text_of(&events(&body));
    let journal: Vec<String> = keys.iter().filter(|k| k.contains(":j:")).cloned().collect();
    assert_eq!(journal.len(), 1, "{keys:?}");
    let entries: i64 = redis::cmd("LLEN")
        .arg(&journal[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let used: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&journal[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    println!(
        "figure: cache memory per reply in flight (native Redis, MEMORY USAGE): {mid} B for its {} keys about 0.6 s in; \
         at its end the journal holds {entries} entries in {used} B for {} B of text",
        keys.len(),
        text.len()
    );
    assert!(entries > 2 && (entries as usize) < gcbb::chat::reply::journal::MAX_RECORDS);
    // Ended with everything stored: no pointer, no lease, off the pending set, and the journal
    // kept a minute at most.
    app.finish_background().await;
    let left = app.redis_keys("v1:reply:*").await;
    assert_eq!(left, journal, "{left:?}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&journal[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
}

#[tokio::test]
async fn the_last_message_alone_is_answered_from_the_stored_history() {
    let app = chat_app(Script::default()).start().await;
    let reply = Script::default().text();
    let only = |text: &str| {
        json!({"id": PUBLIC, "trigger": "submit-message",
               "message": {"id": "u", "role": "user", "parts": [{"type": "text", "text": text}]}})
    };
    for text in ["first", "second"] {
        let resp = app
            .post_json(&format!("/api/chat/{PUBLIC}"), &only(text))
            .signed_in(ALICE)
            .send()
            .await;
        assert_eq!(resp.status, 200);
        let ev = resp.sse();
        assert_eq!(text_of(&ev), reply);
    }
    let context = app.model_context();
    let pair = |r: &str, c: &str| (r.to_owned(), c.to_owned());
    assert_eq!(
        context,
        [
            pair("system", "You are Ada, a patient tutor."),
            pair("user", "first"),
            pair("assistant", &reply),
            pair("user", "second"),
        ]
    );
    // The SDK's default routes: `POST /api/chat` with `useChat({ id: companionId })`.
    let resp = app
        .post_json("/api/chat", &only("third"))
        .signed_in(ALICE)
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(messages(&app, PUBLIC, ALICE).await.len(), 6);
    // Anonymous: nothing stored, so the message is the whole context.
    let resp = app
        .post_json(&format!("/api/chat/{PUBLIC}"), &only("hello"))
        .header("x-forwarded-for", "198.51.100.40")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        app.model().last_request().unwrap()["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // A malformed message is a 400 naming it, and nothing is stored or asked.
    let asked = app.model().requests();
    for (body, param) in [
        (json!({"id": PUBLIC, "message": "hi"}), "message"),
        (
            json!({"id": PUBLIC, "message": {"role": "user", "parts": "x"}}),
            "message.parts",
        ),
        (
            json!({"id": PUBLIC, "message": {"role": "assistant", "parts": [{"type": "text", "text": "x"}]}}),
            "message.role",
        ),
        (
            json!({"id": 12, "message": {"role": "user", "parts": [{"type": "text", "text": "x"}]}}),
            "id",
        ),
    ] {
        let resp = app
            .post_json("/api/chat", &body)
            .signed_in(ALICE)
            .send()
            .await;
        assert_eq!(resp.status, 400, "{body}");
        assert_eq!(resp.json()["error"]["param"], param, "{body}");
    }
    let resp = app
        .post_json("/api/chat", &json!({"id": "x' OR 1=1--", "message": {"role": "user", "parts": [{"type": "text", "text": "x"}]}}))
        .signed_in(ALICE)
        .send()
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"]["param"], "id");
    assert_eq!(app.model().requests(), asked);
    assert_eq!(messages(&app, PUBLIC, ALICE).await.len(), 6);
}

#[tokio::test]
async fn a_group_stream_resumes_and_a_stop_keeps_the_speaker_and_skips_the_rest() {
    let script = slow(300, 20);
    let app = chat_app(script).fixtures(groups()).start().await;
    let mut first = prompt(&app, GROUP, "all of you")
        .signed_in(ALICE)
        .send_streaming()
        .await;
    assert_eq!(first.status, 200);
    let read = until_text(&mut first).await;
    let start = &events(&read)[0];
    assert_eq!(start["type"], "message-start");
    let message_id = start["messageId"].as_str().unwrap().to_owned();
    drop(first);

    let path = |route: &str| format!("/api/group-chat/{GROUP}/{route}");
    let mut resumed = app
        .get(&path("stream"))
        .signed_in(ALICE)
        .send_streaming()
        .await;
    assert_eq!(resumed.status, 200);
    let head = until_text(&mut resumed).await;
    assert_eq!(events(&head)[0], *start, "replayed from its start");
    // Nobody else reaches the group or its stream; nothing is in flight for them.
    assert_eq!(
        app.get(&path("stream")).signed_in(BOB).send().await.status,
        404
    );
    assert_eq!(
        app.post(&path("stop")).signed_in(BOB).send().await.status,
        404
    );
    assert_eq!(
        app.get(&path("stop")).signed_in(ALICE).send().await.status,
        405
    );
    let resp = app.post(&path("stop")).signed_in(ALICE).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["messageId"], message_id.as_str());
    assert_eq!(resp.json()["status"], "stopped");
    let ev = events(&rest(resumed).await);
    let ends: Vec<&Value> = ev.iter().filter(|e| e["type"] == "message-end").collect();
    assert_eq!(ends.len(), 1, "the next responder never started: {ev:?}");
    assert_eq!(ends[0]["status"], "stopped");
    assert_eq!(ends[0]["stored"], true);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    assert_eq!(app.model().requests(), 1);
    assert!(eventually(|| async { app.model().cancelled() == 1 }).await);
    let stored: Vec<(String, bool, Option<String>)> = app
        .triples(
            "SELECT \"id\", \"isBot\", \"status\" FROM \"GroupMessage\" \
             WHERE \"groupChatId\" = $1 AND \"id\" <> 'gm_old' ORDER BY \"createdAt\"",
            &[&GROUP],
        )
        .await;
    assert_eq!(
        stored.len(),
        2,
        "the prompt and the stopped reply: {stored:?}"
    );
    assert_eq!(stored[1], (message_id, true, Some("stopped".into())));
    assert_eq!(
        app.post(&path("stop")).signed_in(ALICE).send().await.status,
        204
    );
}

// ---- real processes -------------------------------------------------------------------------

/// `gcbb dev` on `db` (seeding the demo data into it if empty), answering with `model`, its
/// cache the local Redis under `prefix`, accepting the test's session tokens.
async fn dev_with(
    db: &crate::common::TestDb,
    model: &LocalModelServer,
    prefix: &str,
    extra: &[(&str, &str)],
) -> Server {
    let port = free_port();
    let mut cmd = binary(env!("CARGO_BIN_EXE_gcbb"));
    cmd.current_dir(project_root())
        .args(["dev", "--port", &port.to_string()])
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", crate::common::redis_url())
        .env("CACHE_KEY_PREFIX", prefix)
        .env("OPENAI_BASE_URL", model.base_url())
        .env("OPENAI_API_KEY", "sk-local")
        .env("LLM_PROVIDER", "openai")
        .env("CRON_SECRET", crate::common::app::CRON_SECRET);
    for (k, v) in clerk_env() {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Server::start(cmd, port).await
}

/// Deletes every key under `prefix` from the local Redis.
async fn clear_prefix(prefix: &str) {
    let client = redis::Client::open(crate::common::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// A signed-in chat on a real server: the response, once its first words arrived, and them.
async fn open_chat(server: &Server, user: &str, prompt: &str) -> (reqwest::Response, Vec<u8>) {
    let mut resp = reqwest::Client::new()
        .post(server.url("/api/chat/cmp_demo_01"))
        .bearer_auth(token_for(user))
        .json(&chat_request(prompt))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut read = Vec::new();
    while text_of(&events(&read)).len() < 30 {
        read.extend_from_slice(&resp.chunk().await.unwrap().expect("more body"));
    }
    (resp, read)
}

/// The producer runs in one `gcbb dev` process; the resume GET and the stop go to a second one
/// sharing Redis.
#[tokio::test]
async fn a_reply_produced_by_one_gcbb_dev_resumes_and_stops_on_a_second_one_sharing_redis() {
    let db = fresh_db().await;
    let model = LocalModelServer::start(slow(400, 20)).await.unwrap();
    let full = model.script().text();
    let prefix = unique("gcbbresume");
    let producer = dev_with(&db, &model, &prefix, &[]).await;
    let other = dev_with(&db, &model, &prefix, &[]).await;
    let http = reqwest::Client::new();

    let (first, read) = open_chat(&producer, "user_demo_1", "across processes").await;
    let id = events(&read)[0]["messageId"].as_str().unwrap().to_owned();
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let mut resumed = http
        .get(other.url("/api/chat/cmp_demo_01/stream"))
        .bearer_auth(token_for("user_demo_1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let head = resumed.chunk().await.unwrap().unwrap();
    let to_first_byte = started.elapsed();
    let mut seen = head.to_vec();
    while text_of(&events(&seen)).len() < 60 {
        seen.extend_from_slice(&resumed.chunk().await.unwrap().unwrap());
    }
    assert_eq!(events(&seen)[0], json!({"type": "start", "messageId": id}));
    assert!(full.starts_with(&text_of(&events(&seen))));
    // Another user asking the second process has nothing in flight.
    let resp = http
        .get(other.url("/api/chat/cmp_demo_01/stream"))
        .bearer_auth(token_for("user_demo_2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    let started = Instant::now();
    let resp = http
        .post(other.url("/api/chat/cmp_demo_01/stop"))
        .bearer_auth(token_for("user_demo_1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stopped: Value = resp.json().await.unwrap();
    assert_eq!(stopped["status"], "stopped");
    assert!(eventually(|| async { model.cancelled() == 1 }).await);
    let to_close = model.cancelled_at()[0].duration_since(started);
    println!(
        "figure: two gcbb dev processes sharing Redis: resume GET → first replayed byte {} ms; \
         stop POST → the model server sees the producer's connection closed {} ms",
        ms(to_first_byte),
        ms(to_close)
    );
    assert!(to_close < STOP_BOUND + MARGIN, "{to_close:?}");
    while let Ok(Some(chunk)) = resumed.chunk().await {
        seen.extend_from_slice(&chunk);
    }
    let ev = events(&seen);
    assert_eq!(
        ev[ev.len() - 2]["messageMetadata"],
        json!({"status": "stopped", "stored": true})
    );
    let pg = db.client().await;
    let row = pg
        .query_one(
            "SELECT \"content\", \"status\" FROM \"Message\" WHERE \"id\" = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), text_of(&ev));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("stopped"));
    clear_prefix(&prefix).await;
}

/// `kill -9` of the process producing a reply: the journal in Redis keeps what it said; a
/// resume on another process replays it and ends (the producer's lease lapsed) instead of
/// hanging; once the reply's time is up (`CHAT_MAX_DURATION_MS`, short here), the cron of the
/// other process stores it, marked interrupted, with its tokens.
#[tokio::test]
async fn a_kill_9_mid_reply_leaves_the_partial_reply_stored_as_interrupted_once_the_journal_is_drained(
) {
    let db = fresh_db().await;
    let model = LocalModelServer::start(slow(400, 20)).await.unwrap();
    let full = model.script().text();
    let prefix = unique("gcbbkill");
    let short = [("CHAT_MAX_DURATION_MS", "5000")];
    let mut victim = dev_with(&db, &model, &prefix, &short).await;
    let survivor = dev_with(&db, &model, &prefix, &short).await;
    let http = reqwest::Client::new();
    let pg = db.client().await;
    let tokens = "SELECT \"tokensBurned\"::bigint FROM \"Companion\" WHERE id = 'cmp_demo_01'";
    let tokens_before: i64 = pg.query_one(tokens, &[]).await.unwrap().get(0);

    let (resp, read) = open_chat(&victim, "user_demo_1", "until I die").await;
    let id = events(&read)[0]["messageId"].as_str().unwrap().to_owned();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim.kill_9().await;
    drop(resp);
    assert!(eventually(|| async { model.cancelled() == 1 }).await);
    let stored = "SELECT count(*) FROM \"Message\" WHERE \"role\" = 'assistant' AND \"userId\" = 'user_demo_1' \
                  AND \"createdAt\" > now() - interval '1 hour'";
    let count = |sql: &'static str| {
        let pg = &pg;
        async move { pg.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        count(stored).await,
        0,
        "nothing was stored by the dead process"
    );

    // A resume on the survivor replays what the journal holds, then ends: its producer is gone.
    let resp = http
        .get(survivor.url("/api/chat/cmp_demo_01/stream"))
        .bearer_auth(token_for("user_demo_1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ev = events(&resp.bytes().await.unwrap());
    assert_eq!(ev[0]["messageId"], id.as_str());
    let said = text_of(&ev);
    assert!(!said.is_empty() && full.starts_with(&said), "{said}");
    assert_eq!(
        &ev[ev.len() - 2..],
        [
            json!({"type": "error", "errorText": "the reply was interrupted"}),
            json!("[DONE]")
        ]
    );

    let cron = || async {
        let resp = http
            .get(survivor.url("/api/cron/refresh"))
            .bearer_auth(crate::common::app::CRON_SECRET)
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        body["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "drainReplyJournal")
            .cloned()
            .unwrap()
    };
    // While the reply's time is not up, its producer might still be alive: nothing is taken.
    assert_eq!(cron().await["count"], 0);
    assert_eq!(count(stored).await, 0);
    // Past it (5 s, less the store margin, plus the grace), the journal is drained.
    let due = Duration::from_millis(5000 + 1000 + 500);
    tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
    let step = cron().await;
    assert_eq!(step["ok"], true, "{step}");
    assert_eq!(step["count"], 1, "{step}");
    let row = pg
        .query_one(
            "SELECT \"content\", \"status\" FROM \"Message\" WHERE \"id\" = $1",
            &[&id],
        )
        .await
        .unwrap();
    let stored_text: String = row.get(0);
    assert_eq!(
        stored_text, said,
        "what the journal held is what was stored"
    );
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("interrupted")
    );
    let tokens_after: i64 = pg.query_one(tokens, &[]).await.unwrap().get(0);
    assert!(
        tokens_after > tokens_before,
        "its tokens (estimated) are accounted"
    );
    assert_eq!(cron().await["count"], 0, "drained once");
    assert_eq!(count(stored).await, 1);
    clear_prefix(&prefix).await;
}

/// `CHAT_RESUME_STREAMS=false`: nothing of a reply reaches the cache; a resume or a stop works on
/// the instance producing it, and another instance has nothing in flight.
#[tokio::test]
async fn with_resume_streams_off_nothing_reaches_the_cache_and_only_the_producer_resumes_or_stops()
{
    let app = chat_app(slow(200, 20))
        .cache(CacheKind::Redis)
        .env("CHAT_RESUME_STREAMS", "false")
        .start()
        .await;
    let other = app.another_instance().await;
    let (_first, _) = alice_mid_reply(&app, "off the record").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        resume(&other, PUBLIC).signed_in(ALICE).send().await.status,
        204
    );
    assert_eq!(
        stop(&other, PUBLIC).signed_in(ALICE).send().await.status,
        204
    );
    assert!(app.redis_keys("v1:reply:*").await.is_empty());
    let mut resumed = alice_resumes(&app).await;
    assert_eq!(resumed.status, 200);
    until_text(&mut resumed).await;
    let resp = stop(&app, PUBLIC).signed_in(ALICE).send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["status"], "stopped");
    let ev = events(&rest(resumed).await);
    assert_eq!(ev[ev.len() - 2]["messageMetadata"]["status"], "stopped");
    assert_eq!(
        replies(&app, PUBLIC, ALICE).await[0].2.as_deref(),
        Some("stopped")
    );
    app.finish_background().await;
    assert!(app.redis_keys("v1:reply:*").await.is_empty());
}
