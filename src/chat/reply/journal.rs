//! The reply journal: every stream in flight written to the cache store (Redis, Upstash, or this
//! process's memory), record by record, as a capped list with a time to live. It is what a
//! resume replays on any instance, what a stop is signalled through, and what a reply whose
//! database write failed (or whose process died) is written from later, by the next request or
//! the cron ([`drain_due`]), idempotently by message id.
//!
//! Keys (`cache::keys`): the journal itself (a list of JSON [`Record`]s), the viewer's pointer to
//! the stream in flight (`active`), the producer's lease (`live`, renewed with every write), a
//! stop flag, and one sorted set of the journals whose replies are not all in the database yet
//! (`pending`, scored by when a drain may take them).
//!
//! One idea, kept in one file on purpose (over 600 lines): the journal's record format, its writer
//! and its readers and drain, which must agree on every key and record.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::keep::{self, from_ms, RowSpec, WriteOutcome};
use crate::cache::keys;
use crate::cache::list::ListAppend;
use crate::cache::RELEASE_LOCK;
use crate::db::messages::ReplyStatus;
use crate::id::{CompanionId, MessageId};
use crate::llm::estimate_tokens;
use crate::platform::app::App;
use crate::platform::background::Background;

/// How often a producer writes what it has (text arrives faster; it is batched).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A batch is written early once it holds this much text.
pub const FLUSH_BYTES: usize = 4 * 1024;
/// How often a producer with nothing new still renews its lease and reads its stop flag:
/// bounds how long a stop from another instance takes to arrive.
pub const IDLE_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// The producer's lease: a reader that finds it gone (and no end) stops following.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often the lease is renewed (with the write that falls due).
pub const LEASE_RENEWAL: Duration = Duration::from_secs(1);
/// How often a reader following the journal of another instance reads it again.
pub const READ_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Most records one journal holds; a stream past it is cut (at 10 a second this is longer than
/// any stream may run).
pub const MAX_RECORDS: usize = 8192;
/// Most text one journal holds (a reply of `LLM_MAX_TOKENS` is a few KB).
pub const MAX_TEXT_BYTES: usize = 2 * 1024 * 1024;
/// A journal outlives its stream's deadline by this much (a resume after the end still finds it
/// while the pointer does).
pub const TTL_MARGIN: Duration = Duration::from_secs(60);
/// A journal whose replies are not all in the database is kept this long: a week of outage.
pub const PENDING_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The time a producer keeps free before the function's `maxDuration` to store what it has:
/// its deadline is `maxDuration` less this.
pub fn store_margin(max_duration: Duration) -> Duration {
    (super::keep::REPLY_STORE_BUDGET * 2).min(max_duration / 10)
}

/// How long after its stream's deadline a journal without an end may still be written to by
/// its producer (storing what it has): past it, the producer is gone (on Vercel and Lambda the
/// function's `maxDuration` is over) and a drain takes the journal as interrupted.
pub fn drain_grace(max_duration: Duration) -> Duration {
    store_margin(max_duration) + Duration::from_secs(1)
}
/// The journal of a stream that ended with everything stored is kept this briefly (a resume
/// that read the pointer just before it was cleared still replays it).
pub const DONE_TTL: Duration = Duration::from_secs(60);
/// A "next request" drain runs at most this often per process.
pub const DRAIN_SOON_INTERVAL: Duration = Duration::from_secs(2);

/// One entry of a journal (and of a stream in this process's memory: [`super::live`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "kebab-case")]
pub enum Record {
    /// The stream began; its producer runs until `deadline` (ms since the epoch) at the latest.
    Start { at: i64, deadline: i64 },
    /// A message began: a chat's reply, or one responder's in a group.
    Message {
        id: MessageId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        companion_id: Option<CompanionId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Where it is stored when it ends (signed-in); none for replies nobody stores.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        row: Option<RowSpec>,
    },
    /// Text of the current message.
    Text { t: String },
    /// The current message ended: how, what it cost, whether it is in the database.
    End {
        status: ReplyStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        tokens: i32,
        stored: bool,
        /// Kept to be written later (its database write failed).
        #[serde(default)]
        pending: bool,
        at: i64,
    },
    /// A failure between messages (a responder that could not start); the stream ends.
    Error { message: String },
    /// Nothing follows.
    Done,
}

impl Record {
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(raw: &[u8]) -> Option<Record> {
        serde_json::from_slice(raw).ok()
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The full key names of one stream's journal.
#[derive(Debug, Clone)]
pub struct StreamKeys {
    pub journal: String,
    pub lease: String,
    pub stop: String,
}

impl StreamKeys {
    pub fn of(app: &App, stream_id: &str) -> StreamKeys {
        let ks = app.cache.keyspace();
        StreamKeys {
            journal: ks.entry(&keys::reply_journal(stream_id)),
            lease: ks.entry(&keys::reply_lease(stream_id)),
            stop: ks.entry(&keys::reply_stop(stream_id)),
        }
    }
}

fn pending_key(app: &App) -> String {
    app.cache.keyspace().entry(&keys::reply_pending())
}

/// What a flush learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Another instance asked this stream to stop.
    pub stop_requested: bool,
}

/// The producer's side of a journal: records are buffered and written in batches, with the
/// lease and the stop flag in the same round trip. When the cache fails, the batch is kept and
/// written with the next one (the circuit breaker makes a failing cache cost nothing), so the
/// journal stays whole when the cache comes back; past the caps it is given up.
pub struct JournalWriter {
    app: Arc<App>,
    enabled: bool,
    stream_id: String,
    keys: StreamKeys,
    active: String,
    ttl: Duration,
    begun: bool,
    /// Records waiting to be written.
    batch: Vec<Bytes>,
    /// Text waiting to become one [`Record::Text`].
    text: String,
    records: usize,
    text_bytes: usize,
    /// The journal lost records (the caps, or a cache that never came back): it can't be
    /// replayed whole or drained from.
    broken: bool,
    last_write: tokio::time::Instant,
    /// When the lease was last renewed.
    leased: Option<tokio::time::Instant>,
    /// The list's time to live was set (with its first items).
    expiring: bool,
    /// The stream has rows to store (it is in the pending set until they are).
    rows: bool,
}

impl JournalWriter {
    /// A writer for stream `stream_id`, pointed to by the viewer's `active` key; `deadline_in`
    /// is how long the stream may run.
    pub fn new(app: Arc<App>, stream_id: &str, active: String, deadline_in: Duration) -> Self {
        JournalWriter {
            enabled: app.config.chat.resume_streams,
            keys: StreamKeys::of(&app, stream_id),
            app,
            stream_id: stream_id.to_owned(),
            active,
            ttl: deadline_in + TTL_MARGIN,
            begun: false,
            batch: Vec::new(),
            text: String::new(),
            records: 0,
            text_bytes: 0,
            broken: false,
            last_write: tokio::time::Instant::now(),
            leased: None,
            expiring: false,
            rows: false,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Past the caps: the stream must end here.
    pub fn is_full(&self) -> bool {
        self.records >= MAX_RECORDS || self.text_bytes >= MAX_TEXT_BYTES
    }

    /// Buffers a record (text is merged into the next text record).
    pub fn push(&mut self, record: &Record) {
        if !self.enabled {
            return;
        }
        if let Record::Message { row: Some(_), .. } = record {
            self.rows = true;
        }
        match record {
            Record::Text { t } => {
                self.text_bytes += t.len();
                self.text.push_str(t);
            }
            other => {
                self.take_text();
                self.records += 1;
                self.batch.push(other.encode());
            }
        }
    }

    fn take_text(&mut self) {
        if !self.text.is_empty() {
            let t = std::mem::take(&mut self.text);
            self.records += 1;
            self.batch.push(Record::Text { t }.encode());
        }
    }

    /// When the next write is due: soon when something waits, else the idle check.
    pub fn next_write(&self) -> tokio::time::Instant {
        if !self.batch.is_empty() || !self.text.is_empty() {
            self.last_write + FLUSH_INTERVAL
        } else {
            self.last_write + IDLE_CHECK_INTERVAL
        }
    }

    /// Whether enough text waits to write it before the interval is up.
    pub fn is_due(&self) -> bool {
        self.text.len() >= FLUSH_BYTES
    }

    /// The first write: the viewer's pointer, and, when the stream has rows to store, its place
    /// in the pending set, due after its deadline (so a dead producer's reply is found).
    async fn begin(&mut self, deadline_ms: i64) {
        self.begun = true;
        let store = self.app.cache.store();
        let pointer_item = [(
            self.active.clone(),
            Bytes::from(self.stream_id.clone()),
            self.ttl,
        )];
        let pointer = store.set_many(&pointer_item);
        let due = deadline_ms + drain_grace(self.app.config.chat.max_duration).as_millis() as i64;
        let pending_set = pending_key(&self.app);
        let pending = async {
            if self.rows {
                store.zadd(&pending_set, due, &self.stream_id).await
            } else {
                Ok(())
            }
        };
        let (a, b) = tokio::join!(pointer, pending);
        if let Err(e) = a.and(b) {
            tracing::warn!(
                kind = e.kind(),
                "reply journal: could not register the stream"
            );
        }
    }

    /// Writes what is buffered (or, with nothing buffered, renews the lease and reads the stop
    /// flag).
    pub async fn flush(&mut self, deadline_ms: i64) -> Flushed {
        if !self.enabled {
            return Flushed::default();
        }
        self.take_text();
        if !self.begun {
            self.begin(deadline_ms).await;
        }
        self.last_write = tokio::time::Instant::now();
        if self.broken {
            return Flushed::default();
        }
        // Each write costs a command or two (the stop flag is read every time); the list's time
        // to live is set once, the lease renewed every second.
        let now = tokio::time::Instant::now();
        let renew = self.leased.is_none_or(|at| now >= at + LEASE_RENEWAL);
        let expire = !self.expiring && !self.batch.is_empty();
        let append = ListAppend {
            key: &self.keys.journal,
            items: &self.batch,
            ttl: expire.then_some(self.ttl),
            lease: renew.then_some((self.keys.lease.as_str(), LEASE_TTL)),
            watch: Some(&self.keys.stop),
        };
        match self.app.cache.store().append_list(&append).await {
            Ok(done) => {
                self.batch.clear();
                self.expiring |= expire;
                if renew {
                    self.leased = Some(now);
                }
                Flushed {
                    stop_requested: done.watched.is_some(),
                }
            }
            Err(e) => {
                if self.batch.len() > MAX_RECORDS {
                    tracing::warn!(
                        kind = e.kind(),
                        "reply journal: the cache stayed down; this stream's journal is incomplete"
                    );
                    self.broken = true;
                    self.batch.clear();
                }
                Flushed::default()
            }
        }
    }

    /// Whether every record reached the journal (it can be drained from).
    pub fn is_whole(&self) -> bool {
        self.enabled && !self.broken && self.batch.is_empty() && self.text.is_empty()
    }

    /// The end of the stream: the last records written, the viewer's pointer cleared (only if
    /// it still names this stream), the lease dropped.
    pub async fn finish(&mut self, deadline_ms: i64) {
        if !self.enabled {
            return;
        }
        self.flush(deadline_ms).await;
        let store = self.app.cache.store();
        let clear = store.run_script(
            &RELEASE_LOCK,
            std::slice::from_ref(&self.active),
            std::slice::from_ref(&self.stream_id),
        );
        let lease = store.del(std::slice::from_ref(&self.keys.lease));
        let _ = tokio::join!(clear, lease);
    }

    pub fn handle(&self) -> JournalHandle {
        JournalHandle {
            app: self.app.clone(),
            enabled: self.enabled,
            stream_id: self.stream_id.clone(),
            journal: self.keys.journal.clone(),
        }
    }
}

/// What outlives the producer: marks the journal pending or written.
#[derive(Clone)]
pub struct JournalHandle {
    app: Arc<App>,
    enabled: bool,
    stream_id: String,
    journal: String,
}

impl JournalHandle {
    /// Some write failed: the journal is kept (a week) and due for a drain now.
    pub async fn mark_pending(&self) {
        if !self.enabled {
            return;
        }
        note_pending_here(&self.app);
        let store = self.app.cache.store();
        let pending_set = pending_key(&self.app);
        let due = store.zadd(&pending_set, now_ms(), &self.stream_id);
        let keep = store.expire(&self.journal, PENDING_TTL);
        if let (Err(e), _) | (_, Err(e)) = tokio::join!(due, keep) {
            tracing::error!(
                kind = e.kind(),
                stream_id = %self.stream_id,
                "reply journal: could not keep a reply whose write failed; it is lost unless the cache answers again"
            );
        }
    }

    /// Everything of the stream is in the database: off the pending set, the journal kept only
    /// briefly.
    pub async fn mark_written(&self) {
        if !self.enabled {
            return;
        }
        let store = self.app.cache.store();
        let pending_set = pending_key(&self.app);
        let _ = tokio::join!(
            store.zrem(&pending_set, &self.stream_id),
            store.expire(&self.journal, DONE_TTL)
        );
    }
}

/// Rows still being written for one stream (its messages' stores and token accounting, some in
/// their own background tasks): the last one to finish marks the journal written or pending.
pub struct Outstanding {
    left: AtomicU64,
    failed: AtomicBool,
    journal: JournalHandle,
}

impl Outstanding {
    pub fn new(journal: JournalHandle) -> Arc<Outstanding> {
        // The producer's own share, released by `done` at its end.
        Arc::new(Outstanding {
            left: AtomicU64::new(1),
            failed: AtomicBool::new(false),
            journal,
        })
    }

    pub fn add(&self) {
        self.left.fetch_add(1, Ordering::SeqCst);
    }

    /// A write failed: the journal is pending from now on.
    pub async fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.journal.mark_pending().await;
    }

    /// One share done; the last marks the journal. When a write failed, it first tries once
    /// more from the journal (the database may be back by now, and a drain may have written it
    /// already: both writes are idempotent), and leaves it pending only if that fails too.
    pub async fn done(&self, had_rows: bool) {
        if self.left.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        if self.failed.load(Ordering::SeqCst) {
            let app = &self.journal.app;
            match drain_one(app, &self.journal.stream_id).await {
                DrainOne::Written => self.journal.mark_written().await,
                _ => self.journal.mark_pending().await,
            }
        } else if had_rows {
            self.journal.mark_written().await;
        }
    }
}

/// The records of a journal from entry `from` on (none: it is missing or expired), and how many
/// entries were read (an entry that isn't a record is skipped, and still counts).
pub async fn read(app: &App, stream_id: &str, from: usize) -> Result<(Vec<Record>, usize), ()> {
    let key = app.cache.keyspace().entry(&keys::reply_journal(stream_id));
    match app.cache.store().list_range(&key, from).await {
        Ok(raw) => Ok((
            raw.iter().filter_map(|r| Record::decode(r)).collect(),
            raw.len(),
        )),
        Err(e) => {
            tracing::debug!(kind = e.kind(), "reply journal: read failed");
            Err(())
        }
    }
}

/// Whether the producer's lease is held (it ran within [`LEASE_TTL`]).
pub async fn is_live(app: &App, stream_id: &str) -> bool {
    let key = app.cache.keyspace().entry(&keys::reply_lease(stream_id));
    matches!(
        app.cache.store().mget(&[key]).await.as_deref(),
        Ok([Some(_)])
    )
}

/// Asks the producer of `stream_id` to stop, whichever instance runs it.
pub async fn request_stop(app: &App, stream_id: &str) -> bool {
    let key = app.cache.keyspace().entry(&keys::reply_stop(stream_id));
    let ttl = app.config.chat.max_duration + TTL_MARGIN;
    app.cache
        .store()
        .set_many(&[(key, Bytes::from_static(b"1"), ttl)])
        .await
        .is_ok()
}

/// The stream in flight behind a viewer's pointer (full key name), if any.
pub async fn active_stream(app: &App, active: &str) -> Option<String> {
    match app.cache.store().mget(&[active.to_owned()]).await {
        Ok(mut v) => v
            .pop()
            .flatten()
            .and_then(|b| String::from_utf8(b.to_vec()).ok()),
        Err(_) => None,
    }
}

/// Clears a viewer's pointer if it still names `stream_id`.
pub async fn clear_active(app: &App, active: &str, stream_id: &str) {
    let _ = app
        .cache
        .store()
        .run_script(&RELEASE_LOCK, &[active.to_owned()], &[stream_id.to_owned()])
        .await;
}

// --- Draining: replies written from their journal -------------------------------------------

/// What a drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drained {
    /// Journals whose replies are now all in the database.
    pub written: usize,
    /// Journals not due yet (their producer may still run).
    pub waiting: usize,
    /// Journals whose writes failed again (kept for the next drain).
    pub failed: usize,
}

/// Per instance of the app (tests run several in one process): whether it left a journal
/// pending since its last drain, and when it last started a "next request" drain (ms).
#[derive(Default, Clone, Copy)]
struct DrainState {
    pending: bool,
    last: i64,
}

static DRAIN_STATES: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<usize, DrainState>>,
> = std::sync::LazyLock::new(Default::default);

fn with_drain_state<T>(app: &App, f: impl FnOnce(&mut DrainState) -> T) -> T {
    let mut states = DRAIN_STATES.lock().unwrap_or_else(|p| p.into_inner());
    f(states.entry(app as *const App as usize).or_default())
}

fn note_pending_here(app: &App) {
    with_drain_state(app, |s| s.pending = true);
}

/// The "next request" drain: when this instance left a reply pending, the next chat request it
/// serves writes it (in the background, at most every [`DRAIN_SOON_INTERVAL`]).
pub fn drain_soon(app: &Arc<App>, bg: &Background) {
    let now = now_ms();
    let due = with_drain_state(app, |s| {
        let due = s.pending && now - s.last >= DRAIN_SOON_INTERVAL.as_millis() as i64;
        if due {
            s.pending = false;
            s.last = now;
        }
        due
    });
    if !due {
        return;
    }
    let app = app.clone();
    bg.wait_until(async move {
        match drain_due(&app, DRAIN_BATCH).await {
            Ok(d) if d.failed > 0 || d.waiting > 0 => note_pending_here(&app),
            Ok(_) => {}
            Err(_) => note_pending_here(&app),
        }
    });
}

/// How long a drain retries one write (a connection the outage left broken fails once).
pub const DRAIN_WRITE_BUDGET: Duration = Duration::from_secs(2);

/// Journals one drain takes at most.
pub const DRAIN_BATCH: usize = 200;

/// Writes the replies of every pending journal that is due (at most `limit` journals): each
/// message stored and its tokens accounted, idempotently by its id, as its end record says; a
/// message with no end whose stream is past its deadline (its process died) as interrupted,
/// with the text the journal holds. `Err` when the pending set can't be read.
pub async fn drain_due(app: &Arc<App>, limit: usize) -> Result<Drained, String> {
    let pending = pending_key(app);
    let due = app
        .cache
        .store()
        .zrange_by_score(&pending, now_ms(), limit)
        .await
        .map_err(|e| format!("cache: {}", e.kind()))?;
    let mut drained = Drained::default();
    for stream_id in due {
        match drain_one(app, &stream_id).await {
            DrainOne::Written => {
                drained.written += 1;
                let handle = JournalHandle {
                    app: app.clone(),
                    enabled: true,
                    journal: app.cache.keyspace().entry(&keys::reply_journal(&stream_id)),
                    stream_id,
                };
                handle.mark_written().await;
            }
            DrainOne::Waiting(due) => {
                drained.waiting += 1;
                let _ = app.cache.store().zadd(&pending, due, &stream_id).await;
            }
            DrainOne::Failed => {
                // The database is likely still away: the rest wait for the next drain.
                drained.failed += 1;
                break;
            }
        }
    }
    if drained.written + drained.failed > 0 {
        tracing::info!(
            written = drained.written,
            failed = drained.failed,
            waiting = drained.waiting,
            "reply journal drained"
        );
    }
    Ok(drained)
}

enum DrainOne {
    Written,
    /// Not due before this time (ms).
    Waiting(i64),
    Failed,
}

/// One message as its journal holds it.
struct Journaled {
    id: MessageId,
    row: RowSpec,
    text: String,
    end: Option<(ReplyStatus, i32, i64)>,
}

async fn drain_one(app: &Arc<App>, stream_id: &str) -> DrainOne {
    let Ok((records, _)) = read(app, stream_id, 0).await else {
        return DrainOne::Failed;
    };
    if records.is_empty() {
        // Expired (a week) or never written: nothing left to write from.
        tracing::warn!(stream_id, "reply journal: a pending journal is gone");
        return DrainOne::Written;
    }
    let mut deadline = None;
    let mut messages: Vec<Journaled> = Vec::new();
    let mut current: Option<Journaled> = None;
    for record in records {
        match record {
            Record::Start { deadline: d, .. } => deadline = Some(d),
            Record::Message { id, row, .. } => {
                messages.extend(current.take());
                current = row.map(|row| Journaled {
                    id,
                    row,
                    text: String::new(),
                    end: None,
                });
            }
            Record::Text { t } => {
                if let Some(m) = current.as_mut() {
                    m.text.push_str(&t);
                }
            }
            Record::End {
                status, tokens, at, ..
            } => {
                if let Some(mut m) = current.take() {
                    m.end = Some((status, tokens, at));
                    messages.push(m);
                }
            }
            Record::Error { .. } | Record::Done => {}
        }
    }
    messages.extend(current);
    let due = deadline.unwrap_or(0) + drain_grace(app.config.chat.max_duration).as_millis() as i64;
    if messages.iter().any(|m| m.end.is_none()) && now_ms() < due {
        return DrainOne::Waiting(due);
    }
    for m in messages {
        let (status, tokens, at) = match m.end {
            Some(end) => end,
            None => {
                // Its process died mid-reply: what the journal holds is what was said.
                let tokens = m
                    .row
                    .context_tokens
                    .saturating_add(estimate_tokens(&m.text));
                (
                    ReplyStatus::Interrupted,
                    i32::try_from(tokens).unwrap_or(i32::MAX),
                    m.row.after_ms,
                )
            }
        };
        let budget = DRAIN_WRITE_BUDGET;
        if !m.text.is_empty() {
            let stored = m
                .row
                .store(&app.db, budget, &m.id, &m.text, status, from_ms(at))
                .await;
            if stored == WriteOutcome::Failed {
                return DrainOne::Failed;
            }
        }
        if keep::account_tokens(&app.db, budget, &m.row, &m.id, tokens).await
            == WriteOutcome::Failed
        {
            return DrainOne::Failed;
        }
    }
    DrainOne::Written
}

#[cfg(test)]
mod tests;
