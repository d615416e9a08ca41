//! `/api/health` served by the real `health` function binary.

use serde_json::Value;

use gcbb_test_support::process::{binary, free_port, start_vercel_function, Server};
use gcbb_test_support::{database_server_url, redis_url};

async fn start_health(database_url: &str, redis_url: Option<&str>) -> Server {
    let mut env = vec![("DATABASE_URL", database_url)];
    env.extend(redis_url.map(|r| ("REDIS_URL", r)));
    start_vercel_function(env!("CARGO_BIN_EXE_health"), &env).await
}

async fn get_json(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap();
    (status, body)
}

#[tokio::test]
async fn health_reports_the_database_and_redis_reachable() {
    let server = start_health(&database_server_url(), Some(&redis_url())).await;
    let (status, body) = get_json(&server.url("/api/health")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"]["ok"], true);
    assert!(body["database"]["latencyMs"].as_f64().unwrap() >= 0.0);
    assert_eq!(body["cache"]["backend"], "redis");
    assert_eq!(body["cache"]["ok"], true);
}

#[tokio::test]
async fn health_is_503_without_secrets_when_the_database_is_unreachable() {
    // Port 1 is closed: a real refused connection, not a flag.
    let server = start_health(
        "postgres://admin:s3cret-pw@127.0.0.1:1/prod?sslmode=disable",
        None,
    )
    .await;
    let resp = reqwest::get(server.url("/api/health")).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let text = resp.text().await.unwrap();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!text.contains("admin"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["database"]["ok"], false);
    assert_eq!(body["cache"]["backend"], "memory");
}

#[tokio::test]
async fn health_is_degraded_but_200_when_only_redis_is_down() {
    // Port 1 is closed: a real refused connection.
    let server = start_health(&database_server_url(), Some("redis://127.0.0.1:1")).await;
    let (status, body) = get_json(&server.url("/api/health")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["cache"]["ok"], false);
    assert_eq!(body["database"]["ok"], true);
}

#[tokio::test]
async fn a_function_with_a_bad_variable_refuses_to_start_and_names_it() {
    let out = binary(env!("CARGO_BIN_EXE_health"))
        .env("DATABASE_URL", "mysql://nope")
        .env("VERCEL_DEV_PORT", free_port().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[tokio::test]
async fn health_answers_wrong_methods_with_405_and_allow() {
    let server = start_health(&database_server_url(), None).await;
    let resp = crate::delete(&server, "/api/health").await;
    assert_eq!(resp.status(), 405);
    let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET"), "{allow}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}
