//! Driving one model reply: wait for its first text (so a model that fails early is a clean
//! 502/504), relay the rest, and run what must happen at the end exactly once — inline when
//! the reply ends, or in the background (`wait_until`) when the client went away first.
//!
//! Streams here are produced by [`generate`]: an async block polled by the response body
//! itself, never a spawned task, so a client that disconnects drops the block, which drops
//! the model's response, which closes the upstream connection (the model stops working).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;

use crate::db::{DbError, Pool};
use crate::llm::{estimate_tokens, ChatMessage, Llm, ModelError, ModelEvent, ReplyStream, Usage};
use crate::platform::background::Background;

/// Attempts of a background database write that failed transiently.
pub const BACKGROUND_WRITE_ATTEMPTS: u32 = 3;
/// Pause before the first retry; doubled before each next one.
pub const BACKGROUND_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A stream of the items an async block sends; the block runs as the stream is polled and is
/// dropped with it.
pub fn generate<T, F, Fut>(f: F) -> impl Stream<Item = T> + Send
where
    T: Send + 'static,
    F: FnOnce(Sender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(1);
    let producer = f(Sender(tx)).into_stream().filter_map(|()| async { None });
    let items = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    // Run the block first, then look for what it sent: an item produced during this poll is
    // returned by this poll. (Polling the channel first would answer Pending, and the server
    // would flush the response head alone and send the first chunk in a second small write,
    // which Nagle's algorithm can hold back for a delayed ACK: ~40 ms.)
    futures_util::stream::select_with_strategy(items, producer, |_: &mut ()| {
        futures_util::stream::PollNext::Right
    })
}

/// The sending half given to a [`generate`] block.
pub struct Sender<T>(mpsc::Sender<T>);

impl<T> Sender<T> {
    /// Sends an item; false when the stream is gone (the block is about to be dropped anyway).
    pub async fn send(&self, item: T) -> bool {
        self.0.send(item).await.is_ok()
    }
}

/// A reply whose first text has arrived (or that ended without any).
pub struct StartedReply {
    buffered: VecDeque<ModelEvent>,
    rest: Option<ReplyStream>,
}

/// Asks the model and waits for the first text. An error before it is returned, so the
/// handler can still answer with a status code.
pub async fn start_reply(llm: &Llm, messages: &[ChatMessage]) -> Result<StartedReply, ModelError> {
    let mut stream = llm.stream_reply(messages).await?;
    let mut buffered = VecDeque::new();
    loop {
        match stream.next().await {
            None => {
                return Ok(StartedReply {
                    buffered,
                    rest: None,
                })
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(event)) => {
                let is_text = matches!(event, ModelEvent::Text(_));
                buffered.push_back(event);
                if is_text {
                    return Ok(StartedReply {
                        buffered,
                        rest: Some(stream),
                    });
                }
            }
        }
    }
}

impl StartedReply {
    /// The next event of the reply.
    pub async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        if let Some(e) = self.buffered.pop_front() {
            return Some(Ok(e));
        }
        self.rest.as_mut()?.next().await
    }
}

/// How a reply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyOutcome {
    /// The text that was produced (all of it, or what came before the failure).
    pub text: String,
    pub usage: Option<Usage>,
    pub error: Option<ModelError>,
    /// The client went away before the end.
    pub abandoned: bool,
}

impl ReplyOutcome {
    pub fn completed(&self) -> bool {
        self.error.is_none() && !self.abandoned
    }

    /// Tokens to account: the model's count, else an estimate from the context and the text.
    pub fn tokens(&self, context: &[ChatMessage]) -> i32 {
        let total = match self.usage {
            Some(u) => u.total(),
            None => {
                context
                    .iter()
                    .map(|m| estimate_tokens(&m.content))
                    .sum::<u32>()
                    + estimate_tokens(&self.text)
            }
        };
        i32::try_from(total).unwrap_or(i32::MAX)
    }
}

type OnEnd = Box<dyn FnOnce(ReplyOutcome) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Collects a reply's text and runs `on_end` once: [`ReplyGuard::finish`] inline, or from
/// `Drop` through `wait_until` when the reply was abandoned.
pub struct ReplyGuard {
    bg: Background,
    on_end: Option<OnEnd>,
    pub text: String,
    pub usage: Option<Usage>,
}

impl ReplyGuard {
    pub fn new<F, Fut>(bg: Background, on_end: F) -> Self
    where
        F: FnOnce(ReplyOutcome) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        ReplyGuard {
            bg,
            on_end: Some(Box::new(move |o| Box::pin(on_end(o)))),
            text: String::new(),
            usage: None,
        }
    }

    /// Relays the reply's text to `tx` until it ends; returns the error it ended with.
    pub async fn relay<T>(
        &mut self,
        reply: &mut StartedReply,
        tx: &Sender<T>,
        wrap: impl Fn(String) -> T,
    ) -> Option<ModelError> {
        while let Some(event) = reply.next().await {
            match event {
                Ok(ModelEvent::Text(t)) => {
                    self.text.push_str(&t);
                    if !tx.send(wrap(t)).await {
                        return None;
                    }
                }
                Ok(ModelEvent::Usage(u)) => self.usage = Some(u),
                Err(e) => return Some(e),
            }
        }
        None
    }

    /// Runs the end-of-reply work now and waits for it.
    pub async fn finish(mut self, error: Option<ModelError>) {
        if let Some(on_end) = self.on_end.take() {
            let outcome = ReplyOutcome {
                text: std::mem::take(&mut self.text),
                usage: self.usage,
                error,
                abandoned: false,
            };
            on_end(outcome).await;
        }
    }
}

impl Drop for ReplyGuard {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            tracing::info!(chars = self.text.len(), "client went away; reply cancelled");
            let outcome = ReplyOutcome {
                text: std::mem::take(&mut self.text),
                usage: self.usage,
                error: None,
                abandoned: true,
            };
            self.bg.wait_until(on_end(outcome));
        }
    }
}

/// The message a client sees for a model failure (never the upstream's own words).
pub fn client_message(e: &ModelError) -> String {
    e.to_string()
}

/// The answer when the model failed before its first token: 504 on a timeout, else 502, in
/// the JSON error shape.
pub fn model_error_response(e: &ModelError) -> Response {
    tracing::warn!(kind = e.kind(), "model failed before the first token");
    let (status, code) = match e {
        ModelError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "model_timeout"),
        _ => (StatusCode::BAD_GATEWAY, "model_unavailable"),
    };
    let body = serde_json::json!({"error": {"code": code, "message": client_message(e)}});
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether a failed write may work when tried again.
pub fn is_transient(e: &DbError) -> bool {
    match e {
        DbError::Timeout | DbError::PoolExhausted | DbError::Unavailable(_) => true,
        // Class 40: serialization failure, deadlock.
        other => other.sqlstate().is_some_and(|s| s.code().starts_with("40")),
    }
}

/// Runs a database write with a pooled connection, retrying transient failures.
pub async fn write_with_retry<F, Fut>(db: &Pool, what: &'static str, write: F) -> bool
where
    F: Fn(crate::db::PooledClient) -> Fut,
    Fut: Future<Output = Result<(), DbError>>,
{
    let mut pause = BACKGROUND_RETRY_PAUSE;
    for attempt in 1..=BACKGROUND_WRITE_ATTEMPTS {
        let result = match db.get().await {
            Ok(client) => write(client).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return true,
            Err(e) if is_transient(&e) && attempt < BACKGROUND_WRITE_ATTEMPTS => {
                tracing::warn!(what, attempt, error = %e, "background write failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => {
                tracing::error!(what, attempt, error = %e, "background write failed");
                return false;
            }
        }
    }
    false
}
