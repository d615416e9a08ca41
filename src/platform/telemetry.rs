//! Logging: the subscriber (`tracing` with fields, filtered by `RUST_LOG`), and one span per
//! request so every log line can be traced to the request that wrote it.
//!
//! The request path is the hot path of every function: its span holds only what is known when
//! the request arrives (method, request id), and what is known at the end (status, duration,
//! route, cache outcome) goes on the one line logged then, formatted once rather than recorded
//! into the span and printed again.
//!
//! The filter is `tracing_subscriber`'s `Targets` (`warn,gcbb=info` syntax) rather than
//! `EnvFilter`: the functions need no span-field filters, and `EnvFilter` links a regex engine
//! into every function binary.

use std::io::IsTerminal;
use std::str::FromStr;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use tracing::Instrument;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::platform::log_format::{LogFormat, LogLayer};

/// Default filter when `RUST_LOG` is unset or empty (`.env.example` ships it empty): our own
/// crates at info, libraries at warn.
pub const DEFAULT_LOG_FILTER: &str = "warn,gcbb=info,gcbb_cli=info";

/// Log lines the writer thread may hold before a request thread waits for it (never drops).
pub const LOG_QUEUE_LINES: usize = 16_384;
/// The writer thread's buffer: it writes when the buffer fills or the queue is empty.
pub const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// Keeps the writer thread's guard; dropping it ([`flush`]) writes out what is queued.
static LOG_GUARD: std::sync::Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> =
    std::sync::Mutex::new(None);

/// The filter `RUST_LOG` asks for; unset, empty or unparsable, [`DEFAULT_LOG_FILTER`].
fn log_filter(rust_log: Option<&str>) -> Targets {
    rust_log
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| Targets::from_str(v).ok())
        .unwrap_or_else(|| {
            Targets::from_str(DEFAULT_LOG_FILTER).expect("the default filter parses")
        })
}

/// Installs the global subscriber once; later calls are no-ops (tests call it freely).
///
/// Lines are formatted on the request's thread and written to stderr by a thread of their own
/// (`tracing_appender`'s non-blocking writer over a buffer), so a request never waits for a
/// write syscall: that writer takes every line queued, writes them in one go, and flushes as
/// soon as the queue is empty, so a line is out microseconds after its response head, before
/// a platform can freeze the instance. The queue is not lossy: when it is full, requests wait.
/// Colour codes only when stderr is a terminal, so logs captured to a file stay plain text.
pub fn init() {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let ansi = std::io::stderr().is_terminal();
    let format =
        LogFormat::parse(std::env::var("LOG_FORMAT").ok().as_deref()).unwrap_or_else(|| {
            eprintln!("LOG_FORMAT must be text or json; logging as text");
            LogFormat::Text
        });
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("gcbb-log")
        .finish(std::io::BufWriter::with_capacity(
            LOG_BUFFER_BYTES,
            std::io::stderr(),
        ));
    if tracing_subscriber::registry()
        .with(filter)
        .with(LogLayer::new(writer, format, ansi))
        .try_init()
        .is_ok()
    {
        *LOG_GUARD.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);
    }
}

/// Writes out every queued log line and stops the writer thread (at exit: `gcbb dev` on
/// Ctrl-C). Lines logged afterwards are dropped.
pub fn flush() {
    drop(LOG_GUARD.lock().unwrap_or_else(|p| p.into_inner()).take());
}

/// The header Vercel puts on every request it forwards (region and id); used as the request id
/// so our log lines join Vercel's own.
pub const VERCEL_ID_HEADER: &str = "x-vercel-id";
/// The response header carrying the request id back to the client.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A request id for requests that didn't come through Vercel: this process's random tag and a
/// counter, written straight into the header value (no formatting machinery, one allocation).
/// Unique within the process and cheap (no randomness per request).
fn local_request_id() -> HeaderValue {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROCESS_TAG: std::sync::LazyLock<[u8; 9]> = std::sync::LazyLock::new(|| {
        let tag: u32 = rand::random();
        let mut out = [b'-'; 9];
        for (i, byte) in out[..8].iter_mut().enumerate() {
            *byte = b"0123456789abcdef"[(tag >> (28 - 4 * i)) as usize & 0xf];
        }
        out
    });
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut id = Vec::with_capacity(9 + digits.len() - at);
    id.extend_from_slice(&*PROCESS_TAG);
    id.extend_from_slice(&digits[at..]);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(id))
        .expect("hex digits, a dash and decimal digits are a valid header value")
}

/// The request id: Vercel's when it sent one (visible ASCII, at most 128 bytes), else a local one.
fn request_id(request: &Request) -> HeaderValue {
    request
        .headers()
        .get(VERCEL_ID_HEADER)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.to_str().is_ok())
        .cloned()
        .unwrap_or_else(local_request_id)
}

/// The name of the feature that answered, set by its router on the response
/// (`platform::routing`'s layers, or the local server's dispatch) for the request's log line.
#[derive(Debug, Clone, Copy)]
pub struct RouteName(pub &'static str);

/// Runs a request (`next`) inside a `request` span with its method and request id, and logs one
/// line in that span when the response head is ready: status, duration (to the response head: a
/// streamed body goes on after), the route that answered and the cache outcome (`X-Cache`). The
/// response carries the request id back (`X-Request-Id`). No path, query or header values are
/// logged: they can hold search text, ids and tokens.
///
/// When the span is disabled (`RUST_LOG` filters it out) nothing is measured or formatted for
/// it: the request id is still made and returned.
pub async fn trace_request<F, Fut>(request: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let request_id = request_id(&request);
    let span = tracing::info_span!(
        "request",
        method = request.method().as_str(),
        request_id = request_id.to_str().unwrap_or_default(),
    );
    let mut response = if span.is_disabled() {
        next(request).await
    } else {
        let started = Instant::now();
        let response = next(request).instrument(span.clone()).await;
        let route = response
            .extensions()
            .get::<RouteName>()
            .map_or("-", |r| r.0);
        let cache = response
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let status = response.status().as_u16();
        // Milliseconds to the microsecond, a number in either layout.
        let duration_ms = started.elapsed().as_micros() as f64 / 1000.0;
        tracing::info!(parent: &span, status, duration_ms, route, cache, "request");
        response
    };
    response
        .headers_mut()
        .insert(HeaderName::from_static(REQUEST_ID_HEADER), request_id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn an_empty_or_unset_rust_log_logs_our_crates_at_info() {
        for value in [None, Some(""), Some("  "), Some("gcbb=nonsense=")] {
            let filter = log_filter(value);
            assert!(
                filter.would_enable("gcbb::dashboard", &Level::INFO),
                "{value:?}"
            );
            assert!(!filter.would_enable("hyper", &Level::INFO), "{value:?}");
        }
        assert!(!log_filter(Some("off")).would_enable("gcbb", &Level::ERROR));
        assert!(log_filter(Some("warn,gcbb=debug")).would_enable("gcbb::chat", &Level::DEBUG));
    }

    #[test]
    fn a_local_request_id_is_the_process_tag_and_a_counter() {
        let a = local_request_id();
        let b = local_request_id();
        let (tag_a, n_a) = a.to_str().unwrap().split_once('-').unwrap();
        let (tag_b, n_b) = b.to_str().unwrap().split_once('-').unwrap();
        assert_eq!(tag_a, tag_b);
        assert_eq!(tag_a.len(), 8);
        assert!(tag_a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(n_b.parse::<u64>().unwrap() > n_a.parse::<u64>().unwrap());
    }
}
