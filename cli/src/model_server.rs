//! A local OpenAI-compatible chat-completions server that streams a scripted reply over real
//! HTTP: what the integration tests and `gcbb bench chat` put the model client against.
//!
//! Configurable: time to first token, the reply's chunks and the pause between them, the
//! `usage` chunk, and failures (an HTTP error before the first token, an `{"error"}` event or a
//! dropped connection after some chunks, a hang). It counts requests, remembers the last
//! request body, and notices when a client closes the connection before the reply ended.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;

/// How the scripted reply misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    None,
    /// Answer this HTTP status (with a JSON error body) instead of a stream.
    Status(u16),
    /// Send an `{"error": …}` event after this many chunks.
    ErrorEventAfter(usize),
    /// Break the connection after this many chunks.
    DropAfter(usize),
    /// Send headers, then nothing, ever.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Script {
    pub time_to_first_token: Duration,
    pub chunks: Vec<String>,
    pub chunk_gap: Duration,
    /// Sent as the last chunk (`choices: []`) when set.
    pub usage: Option<(u32, u32)>,
    pub failure: Failure,
    /// Reply with the request's system message instead of `chunks`: a model that repeats its
    /// instructions, for checking which instructions reach it.
    pub echo_system_prompt: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            time_to_first_token: Duration::ZERO,
            chunks: ["Hello", " from", " the", " model", "."]
                .map(String::from)
                .to_vec(),
            chunk_gap: Duration::ZERO,
            usage: Some((11, 5)),
            failure: Failure::None,
            echo_system_prompt: false,
        }
    }
}

impl Script {
    pub fn text(&self) -> String {
        self.chunks.concat()
    }
}

#[derive(Default)]
struct Shared {
    script: Mutex<Script>,
    requests: AtomicUsize,
    cancelled: AtomicUsize,
    /// When each cancellation was seen, in order.
    cancelled_at: Mutex<Vec<std::time::Instant>>,
    completed: AtomicUsize,
    last_request: Mutex<Option<serde_json::Value>>,
    all_requests: Mutex<Vec<serde_json::Value>>,
}

/// A running local model server; stops when dropped.
pub struct LocalModelServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalModelServer {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start(script: Script) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            script: Mutex::new(script),
            ..Default::default()
        });
        let router = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(LocalModelServer { addr, shared, task })
    }

    /// The value for `OPENAI_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set_script(&self, script: Script) {
        *lock(&self.shared.script) = script;
    }

    pub fn script(&self) -> Script {
        lock(&self.shared.script).clone()
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Replies whose client closed the connection before the end.
    pub fn cancelled(&self) -> usize {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// When the server saw each client close a reply's connection before its end, in order.
    pub fn cancelled_at(&self) -> Vec<std::time::Instant> {
        lock(&self.shared.cancelled_at).clone()
    }

    pub fn completed(&self) -> usize {
        self.shared.completed.load(Ordering::SeqCst)
    }

    /// The JSON body of the last request.
    pub fn last_request(&self) -> Option<serde_json::Value> {
        lock(&self.shared.last_request).clone()
    }

    /// The JSON bodies of every request so far, oldest first.
    pub fn all_requests(&self) -> Vec<serde_json::Value> {
        lock(&self.shared.all_requests).clone()
    }
}

impl Drop for LocalModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts a reply as cancelled if it is dropped before it finished.
struct Watch {
    shared: Arc<Shared>,
    finished: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let counter = if self.finished {
            &self.shared.completed
        } else {
            lock(&self.shared.cancelled_at).push(std::time::Instant::now());
            &self.shared.cancelled
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

fn event(value: serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn delta(text: &str) -> Bytes {
    event(serde_json::json!({
        "id": "chatcmpl-local", "object": "chat.completion.chunk", "model": "local",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]
    }))
}

async fn completions(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let request: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    *lock(&shared.last_request) = request.clone();
    if let Some(r) = &request {
        lock(&shared.all_requests).push(r.clone());
    }
    let mut script = lock(&shared.script).clone();
    if script.echo_system_prompt {
        let system = request
            .as_ref()
            .and_then(|r| r["messages"].as_array())
            .and_then(|m| m.iter().find(|m| m["role"] == "system"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_owned();
        script.chunks = vec![system];
    }
    if let Failure::Status(code) = script.failure {
        tokio::time::sleep(script.time_to_first_token).await;
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body =
            serde_json::json!({"error": {"message": "scripted failure", "type": "server_error"}});
        return (status, axum::Json(body)).into_response();
    }
    let watch = Watch {
        shared: shared.clone(),
        finished: false,
    };
    let stream = futures_util::stream::unfold(
        (script, 0usize, watch, false),
        |(script, i, mut watch, over)| async move {
            if over {
                watch.finished = true;
                drop(watch);
                return None;
            }
            let gap = if i == 0 {
                script.time_to_first_token
            } else {
                script.chunk_gap
            };
            if script.failure == Failure::Hang {
                std::future::pending::<()>().await;
            }
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            let item: Result<Bytes, std::io::Error> = match &script.failure {
                Failure::ErrorEventAfter(n) if i == *n => {
                    let e = event(
                        serde_json::json!({"error": {"message": "scripted", "type": "server_error"}}),
                    );
                    return Some((Ok(e), (script, i + 1, watch, true)));
                }
                Failure::DropAfter(n) if i == *n => {
                    // Let what came before reach the client first: hyper would otherwise
                    // drop its unflushed buffer with the connection.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    watch.finished = true;
                    Err(std::io::Error::other("scripted drop"))
                }
                _ if i < script.chunks.len() => Ok(delta(&script.chunks[i])),
                _ => {
                    let mut tail = event(serde_json::json!({
                        "id": "chatcmpl-local", "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]
                    }))
                    .to_vec();
                    if let Some((p, c)) = script.usage {
                        tail.extend_from_slice(&event(serde_json::json!({
                            "id": "chatcmpl-local", "object": "chat.completion.chunk", "choices": [],
                            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
                        })));
                    }
                    tail.extend_from_slice(b"data: [DONE]\n\n");
                    return Some((Ok(Bytes::from(tail)), (script, i + 1, watch, true)));
                }
            };
            let over = item.is_err();
            Some((item, (script, i + 1, watch, over)))
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/event-stream"),
    );
    response
}
