//! Every function binary starts the way Vercel starts it (`VERCEL_DEV_PORT`) and serves its own
//! route, reached by the path the public rewrite delivers. Each check is one the handler answers
//! before it needs the schema, so these run against the server's `postgres` database.

use serde_json::Value;

use gcbb_test_support::database_server_url;
use gcbb_test_support::process::{start_vercel_function, Server};

async fn start(path: &str) -> Server {
    start_with(path, &[]).await
}

/// The function on the server's `postgres` database and the offline model, with `extra`.
async fn start_with(path: &str, extra: &[(&str, &str)]) -> Server {
    let database = database_server_url();
    let mut env = vec![
        ("DATABASE_URL", database.as_str()),
        ("LLM_PROVIDER", "scripted"),
    ];
    env.extend_from_slice(extra);
    start_vercel_function(path, &env).await
}

/// Sends `request`: the status and our error shape's code.
async fn error_code(request: reqwest::RequestBuilder) -> (u16, String) {
    let resp = request.send().await.expect("the function answers");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("a JSON error body");
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn the_dashboard_function_validates_its_parameters_on_the_public_path() {
    let server = start(env!("CARGO_BIN_EXE_dashboard-prefetch")).await;
    let http = reqwest::Client::new();
    let (status, code) =
        error_code(http.get(server.url("/api/dashboard/prefetch?pageSize=51"))).await;
    assert_eq!((status, code.as_str()), (400, "invalid_parameter"));
}

#[tokio::test]
async fn the_chat_function_refuses_a_body_that_is_not_json() {
    let server = start(env!("CARGO_BIN_EXE_chat-stream")).await;
    let request = reqwest::Client::new()
        .post(server.url("/api/chat/some-companion?chatId=some-companion"))
        .header("content-type", "text/plain")
        .body("hello");
    let (status, _) = error_code(request).await;
    assert_eq!(status, 415);
}

#[tokio::test]
async fn the_group_chat_function_asks_for_a_session_to_read_history() {
    let server = start(env!("CARGO_BIN_EXE_group-chat")).await;
    let resp = crate::delete(&server, "/api/group-chat/g1/messages?groupId=g1").await;
    assert_eq!(resp.status(), 405);
    assert!(resp.headers().contains_key("allow"));
}

#[tokio::test]
async fn the_companion_function_refuses_an_anonymous_edit() {
    let server = start(env!("CARGO_BIN_EXE_companion")).await;
    let request = reqwest::Client::new()
        .patch(server.url("/api/companion/c1?companionId=c1"))
        .json(&serde_json::json!({"name": "x"}));
    let (status, _) = error_code(request).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_cron_function_refuses_every_call_without_its_secret() {
    let server = start(env!("CARGO_BIN_EXE_cron-refresh")).await;
    let http = reqwest::Client::new();
    let (status, _) = error_code(http.get(server.url("/api/cron/refresh"))).await;
    assert_eq!(status, 401);
}

/// The function as Vercel runs it gets the same CORS layer as `gcbb dev` (through
/// `runtime::serve`), each of its routes answering a preflight with its own methods.
#[tokio::test]
async fn the_group_chat_function_answers_preflights_with_each_routes_methods() {
    const ORIGIN: &str = "https://app.gcbb.test";
    let server = start_with(
        env!("CARGO_BIN_EXE_group-chat"),
        &[("CORS_ALLOWED_ORIGINS", ORIGIN)],
    )
    .await;
    for (route, methods) in [("chat", "POST"), ("messages", "GET, HEAD")] {
        let resp = reqwest::Client::new()
            .request(
                reqwest::Method::OPTIONS,
                server.url(&format!("/api/group-chat/g1/{route}?groupId=g1")),
            )
            .header("origin", ORIGIN)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "{route}");
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], ORIGIN);
        assert_eq!(h["access-control-allow-methods"], methods, "{route}");
    }
    // An origin not allowed reads nothing.
    let resp = reqwest::Client::new()
        .delete(server.url("/api/group-chat/g1/messages?groupId=g1"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
}
