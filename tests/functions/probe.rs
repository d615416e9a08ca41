//! A function binary for the runtime adapter's tests: served through `gcbb::platform::runtime` exactly as
//! the real functions are, with a slow `text/plain` stream and a `wait_until` task.
//!
//! `GET /stream?chunks=N&gapMs=M` sends N lines, M ms apart. `GET /background?ms=M` answers at
//! once and, M ms later, appends a line to the file named by `PROBE_OUT`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use gcbb::platform::background::Background;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamParams {
    chunks: u32,
    gap_ms: u64,
}

#[derive(Deserialize)]
struct BackgroundParams {
    ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    let router = Router::new()
        .route("/stream", get(stream))
        .route("/background", get(background));
    gcbb::platform::runtime::serve_router(router).await
}

async fn stream(Query(p): Query<StreamParams>) -> axum::response::Response {
    let chunks = futures_util::stream::unfold(0u32, move |i| async move {
        if i >= p.chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(p.gap_ms)).await;
        }
        Some((Ok::<_, std::io::Error>(format!("chunk {i}\n")), i + 1))
    });
    axum::response::Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from_stream(chunks))
        .unwrap()
}

async fn background(bg: Background, Query(p): Query<BackgroundParams>) -> &'static str {
    bg.wait_until(async move {
        tokio::time::sleep(Duration::from_millis(p.ms)).await;
        if let Ok(path) = std::env::var("PROBE_OUT") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            writeln!(f, "background done").unwrap();
        }
    });
    "sent"
}
