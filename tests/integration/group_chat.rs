//! `POST /api/group-chat/:groupId/chat` and `GET …/messages` through a real `gcbb dev` process,
//! with the local model server and real tokens.

use std::time::Duration;

use gcbb_cli::model_server::{Failure, Script};
use serde_json::{json, Value};

use crate::chat::{eventually_async, start, token, Env, ALICE, BOB, PUBLIC};
use crate::support::sse_data_parts as events;

const GROUP: &str = "g_alice";
const DEMO: &str = "g_demo";

async fn insert_groups(env: &Env) {
    env.pg
        .batch_execute(&format!(
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
        ))
        .await
        .unwrap();
}

async fn setup(script: Script) -> Env {
    let env = start(script, &[]).await;
    insert_groups(&env).await;
    env
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

async fn group_messages(env: &Env, group: &str) -> Vec<(bool, String, String)> {
    env.pg
        .query(
            "SELECT \"isBot\", \"senderId\", \"content\" FROM \"GroupMessage\" \
             WHERE \"groupChatId\" = $1 ORDER BY \"createdAt\", \"id\"",
            &[&group],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn the_creators_prompt_is_answered_by_the_least_recently_spoken_and_every_reply_is_stored() {
    let env = setup(Script::default()).await;
    let resp = env
        .post(
            &format!("/api/group-chat/{GROUP}/chat"),
            Some(ALICE),
            json!({"prompt": "hello all"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let got = summary(&events(&resp.text().await.unwrap()));
    assert_eq!(
        got,
        [
            "start:comp_cy:Cyrus",
            "text:Hello from the model.",
            "end:comp_cy",
            "start:comp_dora:Dora",
            "text:Hello from the model.",
            "end:comp_dora",
            "[DONE]"
        ]
    );
    assert_eq!(env.model.requests(), 2);
    // Dora's context holds Cyrus's reply, named.
    let req = env.model.last_request().unwrap();
    let text = req["messages"].to_string();
    assert!(text.contains("Cyrus: Hello from the model."), "{text}");
    assert!(text.contains("hello all"));
    let stored = group_messages(&env, GROUP).await;
    assert_eq!(
        stored[1..],
        [
            (false, ALICE.to_string(), "hello all".to_string()),
            (
                true,
                "comp_cy".to_string(),
                "Hello from the model.".to_string()
            ),
            (
                true,
                "comp_dora".to_string(),
                "Hello from the model.".to_string()
            ),
        ]
    );
    assert!(
        eventually_async(Duration::from_secs(10), || async {
            env.tokens("comp_cy", ALICE).await == (16, Some(16))
                && env.tokens("comp_dora", ALICE).await == (16, Some(16))
        })
        .await
    );
}

#[tokio::test]
async fn a_companion_named_in_the_prompt_answers_whatever_the_case() {
    let env = setup(Script::default()).await;
    let resp = env
        .post(
            &format!("/api/group-chat/{GROUP}/chat"),
            Some(ALICE),
            json!({"prompt": "what does ADA think?"}),
        )
        .await;
    let got = summary(&events(&resp.text().await.unwrap()));
    assert_eq!(
        got,
        [
            "start:comp_public:Ada",
            "text:Hello from the model.",
            "end:comp_public",
            "[DONE]"
        ]
    );
}

#[tokio::test]
async fn only_the_creator_reaches_a_group_and_anonymous_only_demo_groups() {
    let env = setup(Script::default()).await;
    for (group, user) in [
        (GROUP, Some(BOB)),
        (GROUP, None),
        ("g_unknown", Some(ALICE)),
    ] {
        let resp = env
            .post(
                &format!("/api/group-chat/{group}/chat"),
                user,
                json!({"prompt": "hi"}),
            )
            .await;
        assert_eq!(resp.status(), 404, "{group} {user:?}");
        let resp = env
            .http
            .get(env.url(&format!("/api/group-chat/{group}/messages")))
            .bearer_auth(token(user.unwrap_or(BOB)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{group} {user:?}");
    }
    assert_eq!(env.model.requests(), 0);
    assert_eq!(group_messages(&env, GROUP).await.len(), 1);
}

#[tokio::test]
async fn an_anonymous_demo_chat_has_one_responder_and_stores_nothing() {
    let env = setup(Script::default()).await;
    let resp = env
        .post(
            &format!("/api/group-chat/{DEMO}/chat"),
            None,
            json!({"prompt": "Cyrus, hi!"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let got = summary(&events(&resp.text().await.unwrap()));
    assert_eq!(
        got,
        [
            "start:comp_cy:Cyrus",
            "text:Hello from the model.",
            "end:comp_cy",
            "[DONE]"
        ]
    );
    assert_eq!(env.model.requests(), 1);
    let resp = env
        .post(
            &format!("/api/group-chat/{DEMO}/chat"),
            None,
            json!({"prompt": "hello there"}),
        )
        .await;
    let got = summary(&events(&resp.text().await.unwrap()));
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(env.model.requests(), 2);
    // The same prompt again (normalized) is replayed from the cache: no model call.
    let replayed = eventually_async(Duration::from_secs(5), || async {
        let resp = env
            .post(
                &format!("/api/group-chat/{DEMO}/chat"),
                None,
                json!({"prompt": "cyrus,   HI!"}),
            )
            .await;
        summary(&events(&resp.text().await.unwrap()))
            == [
                "start:comp_cy:Cyrus",
                "text:Hello from the model.",
                "end:comp_cy",
                "[DONE]",
            ]
            && env.model.requests() == 2
    })
    .await;
    assert!(replayed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(group_messages(&env, DEMO).await.len(), 1);
    assert_eq!(
        env.count("SELECT count(*) FROM \"UserBurnedTokens\"").await,
        0
    );
}

#[tokio::test]
async fn the_model_failing_is_502_before_the_first_token_and_an_error_event_after() {
    let env = setup(Script {
        failure: Failure::Status(503),
        ..Script::default()
    })
    .await;
    let path = format!("/api/group-chat/{GROUP}/chat");
    let resp = env
        .post(&path, Some(ALICE), json!({"prompt": "hello"}))
        .await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        group_messages(&env, GROUP).await.len(),
        2,
        "the prompt is stored"
    );

    env.model.set_script(Script {
        failure: Failure::ErrorEventAfter(2),
        ..Script::default()
    });
    let resp = env
        .post(&path, Some(ALICE), json!({"prompt": "again"}))
        .await;
    assert_eq!(resp.status(), 200);
    let got = summary(&events(&resp.text().await.unwrap()));
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
    let stored = group_messages(&env, GROUP).await;
    assert_eq!(
        stored.last().unwrap(),
        &(true, "comp_cy".to_string(), "Hello from".to_string())
    );
    assert_eq!(
        env.model.requests(),
        2,
        "no second responder after a failure"
    );
}

#[tokio::test]
async fn group_history_is_paged_and_bad_requests_are_4xx() {
    let env = setup(Script::default()).await;
    for i in 0..5 {
        env.pg
            .execute(
                "INSERT INTO \"GroupMessage\" (\"id\", \"content\", \"createdAt\", \"updatedAt\", \"groupChatId\", \"isBot\", \"senderId\") \
                 VALUES ($1, $1, timestamp '2025-03-01' + make_interval(secs => $2::int), now(), $3, false, $4)",
                &[&format!("u{i}"), &i, &GROUP, &ALICE],
            )
            .await
            .unwrap();
    }
    let get = |q: &str, user: Option<&str>| {
        let mut req = env
            .http
            .get(env.url(&format!("/api/group-chat/{GROUP}/messages{q}")));
        if let Some(u) = user {
            req = req.bearer_auth(token(u));
        }
        req.send()
    };
    let page: Value = get("?limit=4", Some(ALICE))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["u1", "u2", "u3", "u4"]);
    assert_eq!(page["nextCursor"], "u1");
    let page: Value = get("?limit=4&before=u1", Some(ALICE))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gm_old", "u0"]);
    assert_eq!(page["messages"][0]["isBot"], true);
    assert_eq!(page["messages"][0]["senderName"], "Ada");
    assert_eq!(page["nextCursor"], Value::Null);
    for (q, param) in [
        ("?limit=0", "limit"),
        ("?limit=1000", "limit"),
        ("?before=gm_demo", "before"),
    ] {
        let resp = get(q, Some(ALICE)).await.unwrap();
        assert_eq!(resp.status(), 400, "{q}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["param"], param);
    }
    // Demo history is open to anyone.
    let resp = env
        .http
        .get(env.url(&format!("/api/group-chat/{DEMO}/messages")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page: Value = resp.json().await.unwrap();
    assert_eq!(page["messages"][0]["content"], "Welcome to the demo");

    // Wrong method for each route.
    let resp = env
        .http
        .get(env.url(&format!("/api/group-chat/{GROUP}/chat")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = env
        .post(
            &format!("/api/group-chat/{GROUP}/messages"),
            Some(ALICE),
            json!({"prompt": "x"}),
        )
        .await;
    assert_eq!(resp.status(), 405);

    // Hostile bodies: nothing stored, no model call.
    let url = env.url(&format!("/api/group-chat/{GROUP}/chat"));
    for (body, ct, status) in [
        ("{\"prompt\":", "application/json", 400),
        ("{\"prompt\":\"hi\"}", "text/plain", 415),
        ("{\"prompt\":\"\"}", "application/json", 400),
        ("{\"prompt\":7}", "application/json", 400),
    ] {
        let resp = env
            .http
            .post(&url)
            .bearer_auth(token(ALICE))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{body}");
    }
    let big = format!("{{\"prompt\":\"{}\"}}", "x".repeat(5000));
    let resp = env
        .http
        .post(&url)
        .bearer_auth(token(ALICE))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(env.model.requests(), 0);
    assert_eq!(group_messages(&env, GROUP).await.len(), 6);
}
