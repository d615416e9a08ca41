//! Resume and stop, the same for chat and group chat: `GET …/stream` replays the viewer's
//! stream in flight from its start and follows it to its end (204 when there is none), and
//! `POST …/stop` stops it, keeping what it said.
//!
//! A stream produced in this process is read from its memory ([`live`]); one produced by another
//! instance from the journal in the cache ([`journal`]), polled. Both are found through the
//! viewer's own pointer (chat and viewer in its key), so no request can reach another viewer's
//! stream; the handlers check first that the viewer may see the chat at all, as the history
//! does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::chat::reply::journal::{self, drain_grace, now_ms, Record, READ_POLL_INTERVAL};
use crate::chat::reply::live;
use crate::chat::reply::producer::StreamTarget;
use crate::db::messages::ReplyStatus;
use crate::id::MessageId;
use crate::platform::app::App;
use crate::platform::error::ApiError;

/// How long a stop waits for the producer to end the stream before it answers 202.
pub const STOP_WAIT: Duration = Duration::from_secs(3);
/// How often a reader of another instance's journal checks that its producer is alive.
pub const LEASE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Failed reads in a row after which a reader gives up (the cache is gone).
pub const MAX_READ_FAILURES: u32 = 40;

/// The viewer's stream in flight, from its start: from this process's memory when it runs here,
/// else from the journal (`None`: nothing in flight, or nothing the cache can replay).
pub async fn find_stream(
    app: &Arc<App>,
    target: &StreamTarget,
) -> Option<BoxStream<'static, Vec<Record>>> {
    let active = target.active_key(app);
    if let Some(stream) = live::active(app, &active) {
        return Some(stream.reader().boxed());
    }
    if !app.config.chat.resume_streams {
        return None;
    }
    let id = journal::active_stream(app, &active).await?;
    if let Some(stream) = live::find(app, &id) {
        return Some(stream.reader().boxed());
    }
    let (first, read) = journal::read(app, &id, 0).await.ok()?;
    if first.is_empty() {
        return None;
    }
    Some(follow(app.clone(), id, first, read).boxed())
}

/// Follows another instance's journal: what it holds, then what is added, until its `Done`, or
/// until its producer's lease is gone (it died) or its deadline passed.
fn follow(
    app: Arc<App>,
    id: String,
    first: Vec<Record>,
    read: usize,
) -> impl futures_util::Stream<Item = Vec<Record>> + Send + 'static {
    struct Following {
        app: Arc<App>,
        id: String,
        first: Option<Vec<Record>>,
        offset: usize,
        done: bool,
        deadline: i64,
        lease_checked: Instant,
        failures: u32,
    }
    let state = Following {
        app,
        id,
        first: Some(first),
        offset: read,
        done: false,
        deadline: i64::MAX,
        lease_checked: Instant::now(),
        failures: 0,
    };
    let note = |st: &mut Following, records: &[Record]| {
        for r in records {
            match r {
                Record::Start { deadline, .. } => st.deadline = *deadline,
                Record::Done => st.done = true,
                _ => {}
            }
        }
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        if let Some(first) = st.first.take() {
            note(&mut st, &first);
            return Some((first, st));
        }
        loop {
            if st.done {
                return None;
            }
            tokio::time::sleep(READ_POLL_INTERVAL).await;
            match journal::read(&st.app, &st.id, st.offset).await {
                Ok((records, n)) if n > 0 => {
                    st.failures = 0;
                    st.offset += n;
                    note(&mut st, &records);
                    if !records.is_empty() {
                        return Some((records, st));
                    }
                }
                Ok(_) => {
                    st.failures = 0;
                    let grace = drain_grace(st.app.config.chat.max_duration);
                    if now_ms() > st.deadline.saturating_add(grace.as_millis() as i64) {
                        return None;
                    }
                    if st.lease_checked.elapsed() >= LEASE_CHECK_INTERVAL {
                        st.lease_checked = Instant::now();
                        if !journal::is_live(&st.app, &st.id).await {
                            // The lease goes last: read once more for an end written before it.
                            let tail = journal::read(&st.app, &st.id, st.offset).await;
                            if let Ok((records, n)) = tail {
                                if n > 0 {
                                    st.offset += n;
                                    note(&mut st, &records);
                                    return Some((records, st));
                                }
                            }
                            return None;
                        }
                    }
                }
                Err(()) => {
                    st.failures += 1;
                    if st.failures >= MAX_READ_FAILURES {
                        return None;
                    }
                }
            }
        }
    })
}

/// The body `POST …/stop` takes, all of it optional: the AI SDK's documented stop request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopBody {
    /// The stream (or one of its messages) the client means to stop: a stop that arrives after
    /// a newer stream started stops nothing.
    #[serde(default)]
    active_stream_id: Option<String>,
    /// The client's copy of the partial reply: not read, the server keeps its own.
    #[serde(default)]
    #[allow(dead_code)]
    assistant_message: Option<serde_json::Value>,
}

impl StopBody {
    /// A chat's stream id is its reply's message id; a group's names any of its messages.
    pub fn expected(&self) -> Result<Option<MessageId>, ApiError> {
        Ok(self
            .active_stream_id
            .as_ref()
            .map(|raw| MessageId::parse("activeStreamId", raw))
            .transpose()?)
    }
}

/// What a stop did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stopped {
    pub stream_id: String,
    /// The last message of the stream (a chat's reply; a group's responder that was speaking).
    pub message_id: Option<MessageId>,
    /// How it ended: `stopped`, or `finished` when it ended before the stop arrived; none when
    /// its producer did not answer within the wait.
    pub status: Option<ReplyStatus>,
    /// Its row is in the database.
    pub stored: bool,
}

/// Stops the viewer's stream in flight; `None` when there is none (or `expected` names another).
/// Waits (at most [`STOP_WAIT`]) for its producer to end it.
pub async fn stop_stream(
    app: &Arc<App>,
    target: &StreamTarget,
    expected: Option<&MessageId>,
) -> Option<Stopped> {
    let active = target.active_key(app);
    let local = live::active(app, &active);
    let id = match &local {
        Some(s) => s.id.clone(),
        None if app.config.chat.resume_streams => journal::active_stream(app, &active).await?,
        None => return None,
    };
    let local = local.or_else(|| live::find(app, &id));
    if let Some(expected) = expected {
        if expected.as_str() != id && !names_a_message(app, &id, local.as_deref(), expected).await {
            return None;
        }
    }
    tracing::info!(stream_id = %id, local = local.is_some(), "stop requested");
    if let Some(stream) = &local {
        stream.stop();
    }
    if app.config.chat.resume_streams {
        journal::request_stop(app, &id).await;
    }
    let records = match &local {
        Some(stream) => {
            let _ = tokio::time::timeout(STOP_WAIT, stream.closed()).await;
            stream.snapshot()
        }
        None => wait_for_done(app, &id).await,
    };
    let ended = records.iter().any(|r| matches!(r, Record::Done));
    if app.config.chat.resume_streams {
        journal::clear_active(app, &active, &id).await;
    }
    let mut stopped = Stopped {
        stream_id: id,
        message_id: None,
        status: None,
        stored: false,
    };
    for r in &records {
        match r {
            Record::Message { id, .. } => {
                stopped.message_id = Some(id.clone());
                stopped.status = None;
                stopped.stored = false;
            }
            Record::End { status, stored, .. } if ended => {
                stopped.status = Some(*status);
                stopped.stored = *stored;
            }
            _ => {}
        }
    }
    Some(stopped)
}

/// Whether `expected` is one of the stream's message ids.
async fn names_a_message(
    app: &App,
    id: &str,
    local: Option<&live::LiveStream>,
    expected: &MessageId,
) -> bool {
    let records = match local {
        Some(stream) => stream.snapshot(),
        None => journal::read(app, id, 0)
            .await
            .map(|(r, _)| r)
            .unwrap_or_default(),
    };
    records
        .iter()
        .any(|r| matches!(r, Record::Message { id, .. } if id == expected))
}

/// The journal once it holds its `Done`, or as it is after [`STOP_WAIT`].
async fn wait_for_done(app: &App, id: &str) -> Vec<Record> {
    let started = Instant::now();
    loop {
        let records = journal::read(app, id, 0)
            .await
            .map(|(r, _)| r)
            .unwrap_or_default();
        if records.iter().any(|r| matches!(r, Record::Done)) || started.elapsed() >= STOP_WAIT {
            return records;
        }
        tokio::time::sleep(READ_POLL_INTERVAL).await;
    }
}
