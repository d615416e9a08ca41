//! The model client: any OpenAI-compatible `POST {base}/chat/completions` with `stream: true`,
//! read as server-sent events, or the built-in scripted model for offline development.
//!
//! A reply is a [`ReplyStream`] of [`ModelEvent`]s. Dropping the stream drops the HTTP response
//! body, which closes the upstream connection: that is how a client that went away cancels the
//! model's work. Timeouts: connect (on the HTTP client), first token (from the request to the
//! first text), and idle (between two chunks once text has started).

pub mod scripted;
pub mod sse;

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{LlmConfig, LlmProvider};
use sse::SseParser;

/// Who said a message of the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// Token counts the model reported (`stream_options.include_usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u32,
    #[serde(default)]
    pub completion_tokens: u32,
    #[serde(default)]
    pub total_tokens: u32,
}

impl Usage {
    pub fn total(&self) -> u32 {
        self.total_tokens
            .max(self.prompt_tokens.saturating_add(self.completion_tokens))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelEvent {
    /// A piece of the reply's text (never empty).
    Text(String),
    Usage(Usage),
}

/// Why a reply failed. Messages never repeat what the upstream said (it may name keys).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("the model server could not be reached")]
    Connect,
    #[error("the model server answered HTTP {0}")]
    Status(u16),
    #[error("the model did not answer in time")]
    Timeout,
    #[error("the model reported an error")]
    Upstream,
    #[error("the model's stream broke off")]
    Interrupted,
    #[error("the model's stream was not understood")]
    Protocol,
}

impl ModelError {
    /// The kind, for logs and error codes.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelError::Connect => "connect",
            ModelError::Status(_) => "status",
            ModelError::Timeout => "timeout",
            ModelError::Upstream => "upstream_error",
            ModelError::Interrupted => "interrupted",
            ModelError::Protocol => "protocol",
        }
    }
}

pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<ModelEvent, ModelError>> + Send>>;

/// The model, built once per process.
pub struct Llm {
    config: LlmConfig,
    http: reqwest::Client,
}

#[derive(Serialize)]
struct CompletionRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    stream_options: StreamOptions,
    max_tokens: u32,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl Llm {
    pub fn new(config: &LlmConfig) -> Self {
        // A client of its own: the model needs its own connect timeout and no overall timeout
        // (a reply may stream for minutes).
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("gcbb/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with static settings");
        Llm {
            config: config.clone(),
            http,
        }
    }

    pub fn provider_name(&self) -> &'static str {
        match self.config.provider {
            LlmProvider::OpenAi { .. } => "openai",
            LlmProvider::Scripted => "scripted",
        }
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Starts a reply; resolves once the server accepted the request (or failed to).
    pub async fn stream_reply(&self, messages: &[ChatMessage]) -> Result<ReplyStream, ModelError> {
        let (base_url, api_key) = match &self.config.provider {
            LlmProvider::Scripted => {
                return Ok(scripted::reply(messages, self.config.scripted_chunk_delay))
            }
            LlmProvider::OpenAi { base_url, api_key } => (base_url, api_key),
        };
        let deadline = Instant::now() + self.config.first_token_timeout;
        let body = CompletionRequest {
            model: &self.config.model,
            messages,
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            max_tokens: self.config.max_tokens,
        };
        let mut request = self
            .http
            .post(format!("{base_url}/chat/completions"))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body);
        if let Some(key) = api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => return Err(ModelError::Timeout),
            Ok(Err(e)) if e.is_timeout() => return Err(ModelError::Timeout),
            Ok(Err(e)) => {
                tracing::warn!(error = %e.without_url(), "model request failed");
                return Err(ModelError::Connect);
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if !status.is_success() {
            tracing::warn!(status = status.as_u16(), "model server refused the request");
            return Err(ModelError::Status(status.as_u16()));
        }
        let state = Reading {
            body: Box::pin(response.bytes_stream()),
            parser: SseParser::new(),
            pending: VecDeque::new(),
            deadline,
            idle: self.config.idle_timeout,
            started: false,
            finished: false,
            over: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(state, Reading::next)))
    }
}

type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// The state of one upstream reply being read.
struct Reading {
    body: BodyStream,
    parser: SseParser,
    pending: VecDeque<Result<ModelEvent, ModelError>>,
    /// Before the first text: when the first-token timeout runs out.
    deadline: Instant,
    idle: Duration,
    started: bool,
    /// `[DONE]` or a `finish_reason` was seen: the end of the body is the normal end.
    finished: bool,
    /// Nothing more will be yielded.
    over: bool,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

impl Reading {
    async fn next(mut self) -> Option<(Result<ModelEvent, ModelError>, Self)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                if item.is_err() {
                    self.over = true;
                    self.pending.clear();
                }
                return Some((item, self));
            }
            if self.over {
                return None;
            }
            let deadline = if self.started {
                Instant::now() + self.idle
            } else {
                self.deadline
            };
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => self.fail(ModelError::Timeout),
                Ok(None) if self.finished => self.over = true,
                Ok(None) => self.fail(ModelError::Interrupted),
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e.without_url(), "model stream broke off");
                    self.fail(ModelError::Interrupted)
                }
                Ok(Some(Ok(bytes))) => self.read(&bytes),
            }
        }
    }

    fn fail(&mut self, error: ModelError) {
        self.pending.push_back(Err(error));
    }

    fn read(&mut self, bytes: &[u8]) {
        let events = match self.parser.push(bytes) {
            Ok(events) => events,
            Err(_) => return self.fail(ModelError::Protocol),
        };
        for event in events {
            let data = event.data.trim();
            if data == "[DONE]" {
                self.finished = true;
                self.over = true;
                break;
            }
            if data.is_empty() {
                continue;
            }
            let chunk: Chunk = match serde_json::from_str(data) {
                Ok(c) => c,
                Err(_) => return self.fail(ModelError::Protocol),
            };
            if chunk.error.is_some() || event.event.as_deref() == Some("error") {
                tracing::warn!("the model sent an error event");
                return self.fail(ModelError::Upstream);
            }
            for choice in chunk.choices {
                if let Some(text) = choice.delta.and_then(|d| d.content) {
                    if !text.is_empty() {
                        self.started = true;
                        self.pending.push_back(Ok(ModelEvent::Text(text)));
                    }
                }
                if choice.finish_reason.is_some() {
                    // The usage chunk may still follow; keep reading until [DONE] or the end.
                    self.finished = true;
                }
            }
            if let Some(usage) = chunk.usage {
                self.pending.push_back(Ok(ModelEvent::Usage(usage)));
            }
        }
    }
}

/// A rough token count for text the model did not count for us (~4 characters per token, the
/// usual rule of thumb for English with OpenAI's tokenizers).
pub fn estimate_tokens(text: &str) -> u32 {
    let chars = text.chars().count() as u32;
    chars.div_ceil(4)
}
