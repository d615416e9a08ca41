//! `gcbb dev`, run as a real process: it creates, migrates and seeds its database, then serves
//! every route of `vercel.json` and `public/`.

use std::process::Command;

use serde_json::Value;
use tokio_postgres::NoTls;

use crate::support::{binary, free_port, Server};

/// A database that does not exist yet, dropped when the test ends.
struct NewDatabase {
    name: String,
}

impl NewDatabase {
    fn new() -> Self {
        NewDatabase {
            name: format!("gcbb_devtest_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:5432/{}?sslmode=disable",
            self.name
        )
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for NewDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

async fn start_dev(db: &NewDatabase) -> Server {
    let port = free_port();
    let mut cmd = binary(env!("CARGO_BIN_EXE_gcbb"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["dev", "--port", &port.to_string()])
        .env("DATABASE_URL", db.url());
    Server::start(cmd, port).await
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn gcbb_dev_creates_migrates_and_seeds_a_new_database_then_serves_health() {
    let db = NewDatabase::new();
    let mut server = start_dev(&db).await;

    let resp = reqwest::get(server.url("/api/health")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["database"]["ok"], true, "{body}");
    assert_eq!(body["cache"]["backend"], "memory");

    let out = server.output();
    assert!(out.contains("listening on http://127.0.0.1:"), "{out}");
    assert!(out.contains("/api/chat/:chatId"), "{out}");

    let client = db.client().await;
    let migrations = count(
        &client,
        "SELECT count(*) FROM _prisma_migrations WHERE finished_at IS NOT NULL",
    )
    .await;
    let files = std::fs::read_dir(concat!(
        concat!(env!("CARGO_MANIFEST_DIR"), "/.."),
        "/migrations"
    ))
    .unwrap()
    .filter(|e| e.as_ref().unwrap().path().join("migration.sql").exists())
    .count() as i64;
    assert_eq!(migrations, files);
    assert_eq!(
        count(&client, "SELECT count(*) FROM \"Companion\"").await,
        40
    );
    assert!(count(&client, "SELECT count(*) FROM \"Companion\" WHERE private").await > 0);
    assert!(
        count(
            &client,
            "SELECT count(*) FROM \"Companion\" WHERE \"userId\" = 'system' AND NOT private"
        )
        .await
            > 0
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM \"GroupChat\" WHERE \"creatorId\" = 'system'"
        )
        .await,
        1
    );
    assert!(count(&client, "SELECT count(*) FROM \"Message\"").await > 0);

    // A second start on the same database applies nothing and seeds nothing.
    assert!(server.terminate().await);
    let server = start_dev(&db).await;
    let out = server.output();
    assert!(out.contains("0 applied now"), "{out}");
    assert!(out.contains("demo data   unchanged"), "{out}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM \"Companion\"").await,
        40
    );
}

#[tokio::test]
async fn every_rewrite_in_vercel_json_reaches_a_handler() {
    let db = NewDatabase::new();
    let server = start_dev(&db).await;
    let vercel: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            concat!(env!("CARGO_MANIFEST_DIR"), "/.."),
            "/vercel.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let rewrites = vercel["rewrites"].as_array().unwrap();
    assert!(!rewrites.is_empty());
    let http = reqwest::Client::new();
    for rw in rewrites {
        let source = rw["source"].as_str().unwrap();
        let path: String = source
            .split('/')
            .map(|seg| if seg.starts_with(':') { "some-id" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let mut reached = false;
        for method in ["GET", "POST", "PATCH"] {
            let resp = http
                .request(method.parse().unwrap(), server.url(&path))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            assert_ne!(status, 500, "{method} {path} answered 500");
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_ne!(
                body["error"]["code"], "route_not_found",
                "{method} {path} reached no function"
            );
            if status != 405 {
                reached = true;
            }
        }
        assert!(reached, "{source}: every method was refused");
    }
}

#[tokio::test]
async fn unknown_api_paths_are_404_json_and_only_public_files_are_served() {
    let db = NewDatabase::new();
    let server = start_dev(&db).await;

    let resp = reqwest::get(server.url("/api/does-not-exist"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_not_found");

    // No id: the chat function itself answers, naming the missing parameter.
    let resp = reqwest::get(server.url("/api/chat/")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["param"], "chatId");

    let resp = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("GCBB"));

    for leak in [
        "/Cargo.toml",
        "/src/lib.rs",
        "/../Cargo.toml",
        "/.env.example",
    ] {
        let resp = reqwest::get(server.url(leak)).await.unwrap();
        assert_eq!(resp.status(), 404, "{leak} was served");
    }

    let resp =
        reqwest::get(server.url("/api/health?x=%27%3B%20DROP%20TABLE%20x%3B--&q=%F0%9F%98%80"))
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
}
