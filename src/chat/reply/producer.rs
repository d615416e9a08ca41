//! A stream's producer: runs its replies to their end as background work, whoever reads them.
//!
//! A chat stream is one message; a group's is one message per responder. The producer reads the
//! model, hands each piece to the readers in this process ([`live`]) and to the journal
//! ([`journal`]), and stops early only when asked to ([`Producer::stop_of`]: a stop from this
//! process, or the stop flag another instance set, read with each journal write), when the
//! model fails, or when the stream's deadline (the function's `maxDuration`, less the time
//! storing needs) comes. Dropping the model's stream closes its connection: the model stops
//! working at once.
//!
//! When a message ends it is kept ([`Keep`]): a row stored (briefly retried) before its end
//! record goes out, so the end never claims a row that isn't there; the tokens accounted in a
//! background task of their own; what failed left in the journal, pending, for a drain.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::{NaiveDateTime, Utc};
use futures_util::Stream;

use super::journal::{now_ms, store_margin, JournalWriter, Outstanding, Record};
use super::keep::{self, Keep, WriteOutcome, REPLY_STORE_BUDGET};
use super::live::{self, LiveStream};
use super::{tokens_of, Reply};
use crate::cache::keys;
use crate::cache::ANONYMOUS_BOT_REPLY_TTL;
use crate::db::messages::ReplyStatus;
use crate::id::{CompanionId, MessageId};
use crate::llm::{ModelEvent, Usage};
use crate::platform::app::App;
use crate::platform::auth::Viewer;
use crate::platform::background::Background;
use crate::platform::ratelimit::Client;

/// Whose stream, in which chat: the key of the viewer's pointer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTarget {
    /// `chat` or `group`.
    pub scope: &'static str,
    pub chat_id: String,
    /// `u.<user id>`, or `ip.<address>` for an anonymous viewer ([`viewer_key`]).
    pub viewer: String,
}

impl StreamTarget {
    /// The pointer's full key name.
    pub fn active_key(&self, app: &App) -> String {
        app.cache
            .keyspace()
            .entry(&keys::reply_active(self.scope, &self.chat_id, &self.viewer))
    }
}

/// A viewer as streams tell them apart: a user by id, an anonymous viewer by address, the way
/// the rate limiter does.
pub fn viewer_key(viewer: &Viewer, client: &Client) -> String {
    match viewer {
        Viewer::User { user_id } => format!("u.{user_id}"),
        Viewer::Anonymous => format!("ip.{}", client.0),
    }
}

/// A message of a stream.
#[derive(Debug, Clone)]
pub struct MessageSpec {
    /// Its id: the stored row's, announced in the stream's first chunk.
    pub id: MessageId,
    /// The responding companion (group events name it).
    pub companion_id: Option<CompanionId>,
    pub name: Option<String>,
    pub keep: Keep,
}

/// How a message ended.
#[derive(Debug, Clone)]
pub struct MessageEnded {
    pub status: ReplyStatus,
    /// The model's failure, for the client.
    pub error: Option<String>,
    pub text: String,
    /// Its row is in the database.
    pub stored: bool,
    /// When it ended.
    pub at: NaiveDateTime,
}

impl MessageEnded {
    /// The stream goes on after this message only if it finished.
    pub fn finished(&self) -> bool {
        self.status == ReplyStatus::Finished
    }
}

/// The message being produced.
struct Current {
    spec: MessageSpec,
    context_tokens: u32,
    text: String,
    usage: Option<Usage>,
}

pub struct Producer {
    app: Arc<App>,
    bg: Background,
    live: Arc<LiveStream>,
    journal: JournalWriter,
    outstanding: Arc<Outstanding>,
    active: String,
    deadline: tokio::time::Instant,
    deadline_ms: i64,
    current: Option<Current>,
    had_rows: bool,
    stopped: bool,
}

impl Producer {
    /// A new stream for `target`, whose request arrived at `received`: registered in this
    /// process at once (a resume or stop reaching this process finds it), in the cache with its
    /// first write.
    pub fn open(
        app: &Arc<App>,
        bg: &Background,
        target: &StreamTarget,
        stream_id: &str,
        received: Instant,
    ) -> Producer {
        let max = app.config.chat.max_duration;
        let deadline_in = (max - store_margin(max)).saturating_sub(received.elapsed());
        let active = target.active_key(app);
        let live = live::open(app, stream_id, &active);
        let journal = JournalWriter::new(app.clone(), stream_id, active.clone(), deadline_in);
        let outstanding = Outstanding::new(journal.handle());
        let deadline_ms = now_ms() + deadline_in.as_millis() as i64;
        let mut producer = Producer {
            app: app.clone(),
            bg: bg.clone(),
            live,
            journal,
            outstanding,
            active,
            deadline: tokio::time::Instant::now() + deadline_in,
            deadline_ms,
            current: None,
            had_rows: false,
            stopped: false,
        };
        producer.record(Record::Start {
            at: now_ms(),
            deadline: deadline_ms,
        });
        producer
    }

    /// The stream from its start, for the response of the request that opened it.
    pub fn reader(&self) -> impl Stream<Item = Vec<Record>> + Send + 'static {
        self.live.reader()
    }

    /// Whether the stream was asked to stop (nothing more should be started).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    fn record(&mut self, record: Record) {
        self.journal.push(&record);
        self.live.push(record);
    }

    /// Starts a message with what its reply already holds (its first text): pushed now, so the
    /// response's first read finds them.
    pub fn begin(&mut self, spec: MessageSpec, reply: &mut Reply) {
        let context_tokens = match &spec.keep {
            Keep::Row(row) => row.context_tokens,
            Keep::CachedReply { .. } => reply.context_tokens(),
        };
        self.record(Record::Message {
            id: spec.id.clone(),
            companion_id: spec.companion_id.clone(),
            name: spec.name.clone(),
            row: match &spec.keep {
                Keep::Row(row) => Some(row.clone()),
                Keep::CachedReply { .. } => None,
            },
        });
        let mut current = Current {
            spec,
            context_tokens,
            text: String::new(),
            usage: None,
        };
        for event in reply.take_buffered() {
            match event {
                ModelEvent::Text(t) => {
                    current.text.push_str(&t);
                    self.record(Record::Text { t });
                }
                ModelEvent::Usage(u) => current.usage = Some(u),
            }
        }
        self.current = Some(current);
    }

    /// Asks the model for the next message of the stream (a group's next responder), keeping the
    /// journal's lease and stop flag going while the model thinks; `None` when the stream was
    /// stopped meanwhile.
    pub async fn ask(
        &mut self,
        llm: &crate::llm::Llm,
        context: Vec<crate::llm::ChatMessage>,
    ) -> Option<Result<Reply, crate::platform::error::ApiError>> {
        let live = self.live.clone();
        let asking = super::start(llm, context);
        tokio::pin!(asking);
        loop {
            let next_write = self.journal.next_write();
            let journaled = self.journal.is_enabled();
            tokio::select! {
                biased;
                _ = live.stopping() => {
                    self.stopped = true;
                    return None;
                }
                _ = tokio::time::sleep_until(next_write), if journaled => {
                    if self.journal.flush(self.deadline_ms).await.stop_requested {
                        self.stopped = true;
                        return None;
                    }
                }
                reply = &mut asking => return Some(reply),
            }
        }
    }

    /// Runs the message [`Producer::begin`] started to its end and keeps it.
    pub async fn run(&mut self, mut reply: Reply) -> MessageEnded {
        let live = self.live.clone();
        let (status, error) = loop {
            let next_write = self.journal.next_write();
            let journaled = self.journal.is_enabled();
            tokio::select! {
                biased;
                _ = live.stopping() => break (ReplyStatus::Stopped, None),
                _ = tokio::time::sleep_until(self.deadline) => {
                    tracing::warn!("a reply ran out of time; ending it");
                    break (ReplyStatus::Interrupted, Some("the reply ran out of time".to_owned()));
                }
                _ = tokio::time::sleep_until(next_write), if journaled => {
                    if self.journal.flush(self.deadline_ms).await.stop_requested {
                        break (ReplyStatus::Stopped, None);
                    }
                }
                event = reply.next() => match event {
                    None => break (ReplyStatus::Finished, None),
                    Some(Ok(ModelEvent::Text(t))) => {
                        if let Some(c) = self.current.as_mut() {
                            c.text.push_str(&t);
                        }
                        self.record(Record::Text { t });
                        if self.journal.is_full() {
                            break (
                                ReplyStatus::Interrupted,
                                Some("the reply was longer than a reply may be".to_owned()),
                            );
                        }
                        if self.journal.is_due()
                            && self.journal.flush(self.deadline_ms).await.stop_requested
                        {
                            break (ReplyStatus::Stopped, None);
                        }
                    }
                    Some(Ok(ModelEvent::Usage(u))) => {
                        if let Some(c) = self.current.as_mut() {
                            c.usage = Some(u);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(kind = e.kind(), "model failed mid-stream");
                        break (ReplyStatus::Interrupted, Some(e.to_string()));
                    }
                },
            }
        };
        // The model's connection closes here: a stopped reply stops costing at once.
        drop(reply);
        if status == ReplyStatus::Stopped {
            self.stopped = true;
            tracing::info!("reply stopped");
        }
        self.end(status, error).await
    }

    /// Keeps the current message and writes its end.
    async fn end(&mut self, status: ReplyStatus, error: Option<String>) -> MessageEnded {
        let Some(current) = self.current.take() else {
            return MessageEnded {
                status,
                error,
                text: String::new(),
                stored: false,
                at: Utc::now().naive_utc(),
            };
        };
        let Current {
            spec,
            context_tokens,
            text,
            usage,
        } = current;
        let tokens = tokens_of(usage, context_tokens, &text);
        let at = Utc::now().naive_utc();
        let mut stored = false;
        let mut failed = false;
        match &spec.keep {
            Keep::CachedReply { key } => {
                if status == ReplyStatus::Finished && !text.is_empty() {
                    let (app, key, value) = (self.app.clone(), key.clone(), text.clone());
                    self.bg.wait_until(async move {
                        let _ = app
                            .cache
                            .put(&key, Bytes::from(value), ANONYMOUS_BOT_REPLY_TTL)
                            .await;
                    });
                }
            }
            Keep::Row(row) => {
                self.had_rows = true;
                if !text.is_empty() {
                    let outcome = row
                        .store(
                            &self.app.db,
                            REPLY_STORE_BUDGET,
                            &spec.id,
                            &text,
                            status,
                            at,
                        )
                        .await;
                    stored = outcome == WriteOutcome::Written;
                    failed = outcome == WriteOutcome::Failed;
                }
            }
        }
        let pending = failed && self.journal.is_enabled();
        self.record(Record::End {
            status,
            error: error.clone(),
            tokens,
            stored,
            pending,
            at: keep::to_ms(at),
        });
        // Readers on other instances see the end at once.
        self.journal.flush(self.deadline_ms).await;
        if failed {
            if self.journal.is_whole() {
                self.outstanding.fail().await;
            } else {
                tracing::error!(
                    message_id = %spec.id,
                    tokens,
                    "reply lost: the database and the cache both failed at its end"
                );
            }
        }
        if let Keep::Row(row) = &spec.keep {
            self.outstanding.add();
            let (app, outstanding, row, id) = (
                self.app.clone(),
                self.outstanding.clone(),
                row.clone(),
                spec.id.clone(),
            );
            let whole = self.journal.is_whole();
            self.bg.wait_until(async move {
                let budget = app.config.background_write_budget;
                let outcome = keep::account_tokens(&app.db, budget, &row, &id, tokens).await;
                if outcome == WriteOutcome::Failed {
                    if whole {
                        outstanding.fail().await;
                    } else {
                        tracing::error!(
                            message_id = %id,
                            companion_id = %row.target.companion_id(),
                            user_id = %row.target.user_id(),
                            tokens,
                            "token accounting lost: add these tokens by hand (\"ReplyTokens\", \"Companion\", \"UserBurnedTokens\")"
                        );
                    }
                }
                outstanding.done(true).await;
            });
        }
        MessageEnded {
            status,
            error,
            text,
            stored,
            at,
        }
    }

    /// A failure between messages (a responder that could not start): said, and the stream
    /// ends after it.
    pub fn fail(&mut self, message: String) {
        self.record(Record::Error { message });
    }

    /// The end of the stream: the last record, the journal's pointer cleared, this process's
    /// registration gone.
    pub async fn finish(mut self) {
        self.record(Record::Done);
        self.live.close();
        self.journal.finish(self.deadline_ms).await;
        live::remove(&self.app, &self.live.id, &self.active);
        self.outstanding.done(self.had_rows).await;
    }
}
