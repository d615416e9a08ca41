//! Logging: the subscriber (`tracing` with fields, filtered by `RUST_LOG`), and one span per
//! request so every log line can be traced to the request that wrote it.
//!
//! The filter is `tracing_subscriber`'s `Targets` (`warn,gcbb=info` syntax) rather than
//! `EnvFilter`: the functions need no span-field filters, and `EnvFilter` links a regex engine
//! into every function binary.

use std::io::IsTerminal;
use std::str::FromStr;
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::field::Empty;
use tracing::Instrument;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Default filter when `RUST_LOG` is unset: our own crates at info, libraries at warn.
pub const DEFAULT_LOG_FILTER: &str = "warn,gcbb=info,gcbb_cli=info";

/// Installs the global subscriber once; later calls are no-ops (tests call it freely).
///
/// Colour codes only when stderr is a terminal, so logs captured to a file stay plain text.
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| Targets::from_str(&v).ok())
        .unwrap_or_else(|| {
            Targets::from_str(DEFAULT_LOG_FILTER).expect("the default filter parses")
        });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}

/// The header Vercel puts on every request it forwards (region and id); used as the request id
/// so our log lines join Vercel's own.
pub const VERCEL_ID_HEADER: &str = "x-vercel-id";
/// The response header carrying the request id back to the client.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A request id for requests that didn't come through Vercel: this process's random tag and a
/// counter. Unique within the process and cheap (no randomness per request).
fn local_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROCESS_TAG: std::sync::LazyLock<u32> = std::sync::LazyLock::new(rand::random);
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:08x}-{}",
        *PROCESS_TAG,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The name of the feature that answered, set by its router on the response
/// ([`crate::platform::routing::any_path`]) for the request span's `route` field.
#[derive(Debug, Clone, Copy)]
pub struct RouteName(pub &'static str);

/// Runs a request inside a `request` span with its method, route, request id, status, duration
/// (to the response head: a streamed body goes on after) and cache outcome (`X-Cache`), and
/// logs one line when the response is ready. No path, query or header values are logged: they
/// can hold search text, ids and tokens.
pub async fn trace_request(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(VERCEL_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(local_request_id);
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        request_id = %request_id,
        route = Empty,
        status = Empty,
        duration_ms = Empty,
        cache = Empty,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let route = response
        .extensions()
        .get::<RouteName>()
        .map_or("-", |r| r.0);
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let status = response.status().as_u16();
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.record("route", route);
    span.record("status", status);
    span.record("duration_ms", duration_ms);
    span.record("cache", cache.as_str());
    span.in_scope(|| tracing::info!(status, duration_ms, route, cache, "request"));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}
