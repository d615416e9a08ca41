//! `POST /api/group-chat/:groupId/chat` and `GET …/messages` in-process through the router of
//! every function, with the local model server and real tokens.

use axum::http::Method;
use gcbb::chat::reply::cached::{cached_reply, demo_reply_key};
use gcbb::id::{CompanionId, GroupId};
use gcbb::platform::input::Prompt;
use gcbb_cli::model_server::{Failure, Script};
use serde_json::{json, Value};

use crate::chat::{chat_app, page_ids, tokens, ALICE, BOB, PUBLIC};
use crate::common::app::TestApp;
use crate::common::eventually;
use crate::common::failing;
use crate::common::request::{TestRequest, TestResponse};

pub const GROUP: &str = "g_alice";
const DEMO: &str = "g_demo";

/// Two more companions, Alice's group of three and a demo group of two, one message each.
pub fn groups() -> String {
    format!(
            "INSERT INTO \"Companion\" (\"id\", \"userId\", \"userName\", \"src\", \"name\", \"instructions\",
                                        \"updatedAt\", \"categoryId\")
             VALUES ('comp_cy', 'system', 'GCBB', '/c.png', 'Cyrus', 'You are Cyrus.', now(), 'cat_1'),
                    ('comp_dora', 'system', 'GCBB', '/d.png', 'Dora', 'You are Dora.', now(), 'cat_1');
             INSERT INTO \"GroupChat\" (\"id\", \"name\", \"updatedAt\", \"creatorId\")
             VALUES ('{GROUP}', 'Study group', now(), '{ALICE}'), ('{DEMO}', 'Demo', now(), 'system');
             INSERT INTO \"GroupChatMember\" (\"id\", \"groupChatId\", \"companionId\", \"joinedAt\")
             VALUES ('m1', '{GROUP}', '{PUBLIC}', '2025-01-01'), ('m2', '{GROUP}', 'comp_cy', '2025-01-02'),
                    ('m3', '{GROUP}', 'comp_dora', '2025-01-03'),
                    ('m4', '{DEMO}', '{PUBLIC}', '2025-01-01'), ('m5', '{DEMO}', 'comp_cy', '2025-01-02');
             INSERT INTO \"GroupMessage\" (\"id\", \"content\", \"createdAt\", \"updatedAt\", \"groupChatId\", \"isBot\", \"senderId\")
             VALUES ('gm_old', 'I spoke before', '2025-02-01', now(), '{GROUP}', true, '{PUBLIC}'),
                    ('gm_demo', 'Welcome to the demo', '2025-02-01', now(), '{DEMO}', true, '{PUBLIC}');"
    )
}

async fn setup(script: Script) -> TestApp {
    chat_app(script).fixtures(groups()).start().await
}

/// `POST` a prompt to a group.
pub(crate) fn prompt(app: &TestApp, group: &str, prompt: &str) -> TestRequest {
    app.post_json(
        &format!("/api/group-chat/{group}/chat"),
        &json!({ "prompt": prompt }),
    )
}

/// The SSE events of a group reply.
fn events(resp: &TestResponse) -> Vec<Value> {
    resp.sse()
}

/// `type[:companionId]` of each event, deltas merged per companion into their text.
fn summary(events: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let s = match e["type"].as_str() {
            Some("message-start") => format!(
                "start:{}:{}",
                e["companionId"].as_str().unwrap(),
                e["name"].as_str().unwrap()
            ),
            Some("text-delta") => {
                let d = e["delta"].as_str().unwrap();
                if let Some(last) = out.last_mut().filter(|l| l.starts_with("text:")) {
                    last.push_str(d);
                    continue;
                }
                format!("text:{d}")
            }
            Some("message-end") => format!("end:{}", e["companionId"].as_str().unwrap()),
            Some("error") => format!("error:{}", e["message"].as_str().unwrap()),
            _ => e.as_str().unwrap_or("?").to_owned(),
        };
        out.push(s);
    }
    out
}

/// The summary of a whole stream in which each of `speakers` (id, name), in turn, said the
/// scripted "Hello from the model.".
fn each_said_hello(speakers: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (id, name) in speakers {
        out.push(format!("start:{id}:{name}"));
        out.push("text:Hello from the model.".to_owned());
        out.push(format!("end:{id}"));
    }
    out.push("[DONE]".to_owned());
    out
}

/// A stored reply of companion `id`: (isBot, senderId, content).
fn bot(id: &str, content: &str) -> (bool, String, String) {
    (true, id.to_owned(), content.to_owned())
}

/// Alice, the group's creator, prompts her group with `text`.
async fn alice_prompts(app: &TestApp, text: &str) -> TestResponse {
    prompt(app, GROUP, text).signed_in(ALICE).send().await
}

async fn group_messages(app: &TestApp, group: &str) -> Vec<(bool, String, String)> {
    app.triples(
        "SELECT \"isBot\", \"senderId\", \"content\" FROM \"GroupMessage\" \
         WHERE \"groupChatId\" = $1 ORDER BY \"createdAt\", \"id\"",
        &[&group],
    )
    .await
}

#[tokio::test]
async fn the_creators_prompt_is_answered_by_the_least_recently_spoken_and_every_reply_is_stored() {
    let app = setup(Script::default()).await;
    let resp = alice_prompts(&app, "hello all").await;
    assert_eq!(resp.status, 200);
    assert!(resp.header("content-type").starts_with("text/event-stream"));
    let got = summary(&events(&resp));
    assert_eq!(
        got,
        each_said_hello(&[("comp_cy", "Cyrus"), ("comp_dora", "Dora")])
    );
    assert_eq!(app.model().requests(), 2);
    // Dora's context holds Cyrus's reply, named.
    let req = app.model().last_request().unwrap();
    let text = req["messages"].to_string();
    assert!(text.contains("Cyrus: Hello from the model."), "{text}");
    assert!(text.contains("hello all"));
    let stored = group_messages(&app, GROUP).await;
    assert_eq!(
        stored[1..],
        [
            (false, ALICE.to_string(), "hello all".to_string()),
            bot("comp_cy", "Hello from the model."),
            bot("comp_dora", "Hello from the model."),
        ]
    );
    assert!(
        eventually(|| async {
            tokens(&app, "comp_cy", ALICE).await == (16, Some(16))
                && tokens(&app, "comp_dora", ALICE).await == (16, Some(16))
        })
        .await
    );
}

#[tokio::test]
async fn a_companion_named_in_the_prompt_answers_whatever_the_case() {
    let app = setup(Script::default()).await;
    let resp = alice_prompts(&app, "what does ADA think?").await;
    let got = summary(&events(&resp));
    assert_eq!(got, each_said_hello(&[("comp_public", "Ada")]));
    // Ada's reply is the one stored after the prompt.
    let stored = group_messages(&app, GROUP).await;
    assert_eq!(
        stored.last().unwrap(),
        &bot(PUBLIC, "Hello from the model.")
    );
    assert_eq!(stored.len(), 3);
}

#[tokio::test]
async fn only_the_creator_reaches_a_group_and_anonymous_only_demo_groups() {
    let app = setup(Script::default()).await;
    for (group, user) in [
        (GROUP, Some(BOB)),
        (GROUP, None),
        ("g_unknown", Some(ALICE)),
    ] {
        let resp = prompt(&app, group, "hi").viewer(user).send().await;
        assert_eq!(resp.status, 404, "{group} {user:?}");
        let resp = app
            .get(&format!("/api/group-chat/{group}/messages"))
            .signed_in(user.unwrap_or(BOB))
            .send()
            .await;
        assert_eq!(resp.status, 404, "{group} {user:?}");
    }
    assert_eq!(app.model().requests(), 0);
    assert_eq!(group_messages(&app, GROUP).await.len(), 1);
}

#[tokio::test]
async fn an_anonymous_demo_chat_has_one_responder_and_stores_nothing() {
    let app = setup(Script::default()).await;
    let resp = prompt(&app, DEMO, "Cyrus, hi!").send().await;
    assert_eq!(resp.status, 200);
    let got = summary(&events(&resp));
    assert_eq!(got, each_said_hello(&[("comp_cy", "Cyrus")]));
    assert_eq!(app.model().requests(), 1);
    let resp = prompt(&app, DEMO, "hello there").send().await;
    let got = summary(&events(&resp));
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(app.model().requests(), 2);
    // The reply is cached after the response, through wait_until...
    let key = demo_reply_key(
        &GroupId::issued(DEMO),
        &CompanionId::issued("comp_cy"),
        &Prompt::parse("Cyrus, hi!".into()).unwrap(),
    );
    let cached = eventually(|| async {
        cached_reply(&app.app, &key).await.as_deref() == Some("Hello from the model.")
    })
    .await;
    assert!(cached, "the demo reply was never cached");
    // ...and the same prompt again (normalized) is replayed from it: no model call.
    let resp = prompt(&app, DEMO, "cyrus,   HI!").send().await;
    assert_eq!(
        summary(&events(&resp)),
        each_said_hello(&[("comp_cy", "Cyrus")])
    );
    assert_eq!(app.model().requests(), 2);
    // Nothing stored, once every piece of background work has run.
    app.finish_background().await;
    assert_eq!(group_messages(&app, DEMO).await.len(), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM \"UserBurnedTokens\"").await,
        0
    );
}

#[tokio::test]
async fn the_model_failing_is_502_before_the_first_token_and_an_error_event_after() {
    let app = setup(failing(Failure::Status(503))).await;
    let resp = alice_prompts(&app, "hello").await;
    assert_eq!(resp.status, 502);
    assert_eq!(
        group_messages(&app, GROUP).await.len(),
        2,
        "the prompt is stored"
    );

    app.model().set_script(failing(Failure::ErrorEventAfter(2)));
    let resp = alice_prompts(&app, "again").await;
    assert_eq!(resp.status, 200);
    let got = summary(&events(&resp));
    assert_eq!(
        got,
        [
            "start:comp_cy:Cyrus",
            "text:Hello from",
            "end:comp_cy",
            "error:the model reported an error",
            "[DONE]"
        ]
    );
    let stored = group_messages(&app, GROUP).await;
    assert_eq!(stored.last().unwrap(), &bot("comp_cy", "Hello from"));
    assert_eq!(
        app.model().requests(),
        2,
        "no second responder after a failure"
    );
}

#[tokio::test]
async fn group_history_is_paged_and_bad_requests_are_4xx() {
    let app = setup(Script::default()).await;
    for i in 0..5 {
        app.pg
            .execute(
                "INSERT INTO \"GroupMessage\" (\"id\", \"content\", \"createdAt\", \"updatedAt\", \"groupChatId\", \"isBot\", \"senderId\") \
                 VALUES ($1, $1, timestamp '2025-03-01' + make_interval(secs => $2::int), now(), $3, false, $4)",
                &[&format!("u{i}"), &i, &GROUP, &ALICE],
            )
            .await
            .unwrap();
    }
    let history = format!("/api/group-chat/{GROUP}/messages");
    let get = |q: &str, user: Option<&str>| app.get(&(history.clone() + q)).viewer(user).send();
    let page = get("?limit=4", Some(ALICE)).await.json();
    assert_eq!(page_ids(&page), ["u1", "u2", "u3", "u4"]);
    assert_eq!(page["nextCursor"], "u1");
    let page = get("?limit=4&before=u1", Some(ALICE)).await.json();
    assert_eq!(page_ids(&page), ["gm_old", "u0"]);
    assert_eq!(page["messages"][0]["isBot"], true);
    assert_eq!(page["messages"][0]["senderName"], "Ada");
    assert_eq!(page["nextCursor"], Value::Null);
    for (q, param) in [
        ("?limit=0", "limit"),
        ("?limit=1000", "limit"),
        ("?before=gm_demo", "before"),
    ] {
        let resp = get(q, Some(ALICE)).await;
        assert_eq!(resp.status, 400, "{q}");
        assert_eq!(resp.json()["error"]["param"], param);
    }
    // Demo history is open to anyone.
    let resp = app
        .get(&format!("/api/group-chat/{DEMO}/messages"))
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["messages"][0]["content"], "Welcome to the demo");

    // Wrong method for each route.
    let resp = app
        .get(&format!("/api/group-chat/{GROUP}/chat"))
        .send()
        .await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.headers["allow"], "POST");
    let resp = app
        .post_json(
            &format!("/api/group-chat/{GROUP}/messages"),
            &json!({"prompt": "x"}),
        )
        .signed_in(ALICE)
        .send()
        .await;
    assert_eq!(resp.status, 405);
    // Any other method names the methods of the route the path names, not the function's.
    for (route, allow) in [("chat", "POST"), ("messages", "GET,HEAD")] {
        for method in [Method::DELETE, Method::OPTIONS, Method::PATCH] {
            let resp = app
                .request(method.clone(), &format!("/api/group-chat/{GROUP}/{route}"))
                .send()
                .await;
            assert_eq!(resp.status, 405, "{method} {route}");
            assert_eq!(resp.headers["allow"], allow, "{method} {route}");
        }
    }

    // Hostile bodies: nothing stored, no model call.
    let url = format!("/api/group-chat/{GROUP}/chat");
    for (body, ct, status) in [
        ("{\"prompt\":", "application/json", 400),
        ("{\"prompt\":\"hi\"}", "text/plain", 415),
        ("{\"prompt\":\"\"}", "application/json", 400),
        ("{\"prompt\":7}", "application/json", 400),
    ] {
        let resp = app.post_body(&url, ct, body).signed_in(ALICE).send().await;
        assert_eq!(resp.status.as_u16(), status, "{body}");
    }
    let big = format!("{{\"prompt\":\"{}\"}}", "x".repeat(5000));
    let resp = app
        .post_body(&url, "application/json", big)
        .signed_in(ALICE)
        .send()
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(app.model().requests(), 0);
    assert_eq!(group_messages(&app, GROUP).await.len(), 6);
}
