//! A Lambda function for the adapter's tests: served through `gcbb_lambda` exactly as the real
//! functions are (`PROBE_MODE=streaming` or `buffered`), as the function `probe` at
//! `/api/probe`.
//!
//! `GET /api/probe?op=stream&chunks=N&gapMs=M` sends N lines, M ms apart. `GET
//! /api/probe?op=background&ms=M` answers at once and, M ms later, appends a line to the file
//! named by `PROBE_OUT`; `&afterStream=1` hands that work over only as the body ends, as a
//! reply's token accounting is. `GET /api/probe?op=look` answers with that file's content.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Query;
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use gcbb::platform::app::App;
use gcbb::platform::background::Background;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    op: String,
    #[serde(default)]
    chunks: u32,
    #[serde(default)]
    gap_ms: u64,
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    after_stream: Option<u8>,
}

#[tokio::main]
async fn main() -> Result<(), gcbb_lambda::Error> {
    static PROBE: gcbb::routes::Function = gcbb::routes::Function {
        name: "probe",
        router,
    };
    if std::env::var("PROBE_MODE").as_deref() == Ok("streaming") {
        gcbb_lambda::serve_streaming(&PROBE).await
    } else {
        gcbb_lambda::serve_buffered(&PROBE).await
    }
}

fn router(_app: Arc<App>) -> MethodRouter {
    get(probe)
}

async fn probe(bg: Background, Query(p): Query<Params>) -> Response {
    match p.op.as_str() {
        "stream" => text(Body::from_stream(lines(p.chunks, p.gap_ms))),
        "background" if p.after_stream.is_some() => text(Body::from_stream(SentThenWork {
            bg: Some(bg),
            ms: p.ms,
            sent: false,
        })),
        "background" => {
            bg.wait_until(write_later(p.ms));
            text(Body::from("sent\n"))
        }
        "look" => {
            let seen = std::env::var("PROBE_OUT")
                .ok()
                .and_then(|path| std::fs::read_to_string(path).ok())
                .unwrap_or_default();
            text(Body::from(seen))
        }
        _ => text(Body::from("unknown op\n")),
    }
}

/// "sent", then, as the body ends, the background work: handed over as a reply's token
/// accounting is, by the poll that ends the body.
struct SentThenWork {
    bg: Option<Background>,
    ms: u64,
    sent: bool,
}

impl futures_util::Stream for SentThenWork {
    type Item = Result<String, std::io::Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.sent {
            this.sent = true;
            return std::task::Poll::Ready(Some(Ok("sent\n".to_owned())));
        }
        if let Some(bg) = this.bg.take() {
            bg.wait_until(write_later(this.ms));
        }
        std::task::Poll::Ready(None)
    }
}

fn lines(
    chunks: u32,
    gap_ms: u64,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> {
    futures_util::stream::unfold(0u32, move |i| async move {
        if i >= chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        }
        Some((Ok(format!("chunk {i}\n")), i + 1))
    })
}

async fn write_later(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    if let Ok(path) = std::env::var("PROBE_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "background done").unwrap();
    }
}

fn text(body: Body) -> Response {
    Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(body)
        .unwrap()
}
