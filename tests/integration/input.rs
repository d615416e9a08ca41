//! The input rules are one set (`gcbb::platform::input`), shared by every route: the same
//! malformed id gets the same answer wherever an id is taken, a 400 `invalid_parameter` naming
//! the parameter, before any work is done.

use axum::http::Method;
use gcbb_cli::model_server::Script;
use serde_json::{json, Value};

use crate::chat::{chat_app, ALICE, PUBLIC};
use crate::common::app::TestApp;
use crate::group_chat::{groups, GROUP};

/// Ids no route can have issued, as they appear in a URL: each breaks one rule of `Id`.
fn malformed_ids() -> [(&'static str, String); 3] {
    [
        ("a quote and a comment", "x%27%3B--".to_owned()),
        ("an RTL override", "%E2%80%AEabc".to_owned()),
        ("65 letters", "a".repeat(65)),
    ]
}

/// Every place a route takes an id: the method, the path with `{id}` where the id goes, the
/// body, and the parameter the answer must name.
fn id_routes() -> Vec<(Method, String, Option<Value>, &'static str)> {
    let prompt = Some(json!({"prompt": "hi"}));
    let routes = vec![
        (Method::POST, "/api/chat/{id}", prompt.clone(), "chatId"),
        (Method::GET, "/api/chat/{id}", None, "chatId"),
        (Method::POST, "/api/group-chat/{id}/chat", prompt, "groupId"),
        (
            Method::GET,
            "/api/group-chat/{id}/messages",
            None,
            "groupId",
        ),
        (
            Method::PATCH,
            "/api/companion/{id}",
            Some(json!({"name": "x"})),
            "companionId",
        ),
        (
            Method::GET,
            "/api/dashboard/prefetch?categoryId={id}",
            None,
            "categoryId",
        ),
        (
            Method::GET,
            "/api/chat/{PUBLIC}?before={id}",
            None,
            "before",
        ),
        (
            Method::GET,
            "/api/group-chat/{GROUP}/messages?before={id}",
            None,
            "before",
        ),
    ];
    routes
        .into_iter()
        .map(|(method, template, body, param)| {
            let path = template
                .replace("{PUBLIC}", PUBLIC)
                .replace("{GROUP}", GROUP);
            (method, path, body, param)
        })
        .collect()
}

/// What the app has stored: messages, group messages, companions as they are.
async fn stored(app: &TestApp) -> (i64, i64, Vec<String>) {
    let companions = app
        .pg
        .query(
            "SELECT id || '|' || name || '|' || private::text FROM \"Companion\" ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (
        app.count("SELECT count(*) FROM \"Message\"").await,
        app.count("SELECT count(*) FROM \"GroupMessage\"").await,
        companions,
    )
}

#[tokio::test]
async fn the_same_malformed_id_gets_the_same_400_naming_its_parameter_on_every_route() {
    let app = chat_app(Script::default()).fixtures(groups()).start().await;
    let before = stored(&app).await;
    for (what, id) in malformed_ids() {
        // The explanation, with the parameter's name taken out, is the same on every route.
        let mut explanations = Vec::new();
        for (method, template, body, param) in id_routes() {
            let path = template.replace("{id}", &id);
            let mut request = app.request(method.clone(), &path).signed_in(ALICE);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let resp = request.send().await;
            assert_eq!(resp.status, 400, "{what}: {method} {path}: {}", resp.text());
            let error = &resp.json()["error"];
            assert_eq!(
                error["code"], "invalid_parameter",
                "{what}: {method} {path}"
            );
            assert_eq!(error["param"], param, "{what}: {method} {path}");
            let message = error["message"].as_str().unwrap();
            explanations.push(message.replace(param, "<param>"));
        }
        explanations.dedup();
        assert_eq!(explanations.len(), 1, "{what}: {explanations:?}");
    }
    // Refused before any work: nothing stored, nothing changed, no model asked.
    assert_eq!(stored(&app).await, before);
    assert_eq!(app.model().requests(), 0);
}
