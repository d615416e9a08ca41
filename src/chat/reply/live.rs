//! The streams this process is producing, in memory: the response of the request that started
//! one reads it from here, and so do a resume and a stop that reach the same process (no cache
//! round trip, no polling). A stream stays readable until its producer ends it; a reader that
//! goes away takes nothing with it.
//!
//! Per instance of the app: streams are registered under the [`App`] that produces them (tests
//! run several instances in one process, each standing for a process of its own, and one must
//! not find another's streams in memory: it must go through the cache, as across processes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::Stream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::journal::Record;
use crate::platform::app::App;

/// Which instance of the app a stream belongs to: the address of its [`App`], unique while it
/// lives (one per process in production).
fn instance(app: &App) -> usize {
    app as *const App as usize
}

/// A stream being produced here.
pub struct LiveStream {
    pub id: String,
    state: Mutex<State>,
    notify: Notify,
    stop: CancellationToken,
}

#[derive(Default)]
struct State {
    records: Vec<Record>,
    done: bool,
}

impl LiveStream {
    fn new(id: String) -> Arc<LiveStream> {
        Arc::new(LiveStream {
            id,
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            stop: CancellationToken::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, record: Record) {
        self.lock().records.push(record);
        self.notify.notify_waiters();
    }

    /// Nothing follows; readers end once they have read everything.
    pub fn close(&self) {
        self.lock().done = true;
        self.notify.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().done
    }

    /// The records so far.
    pub fn snapshot(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// Asks the producer to stop.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Resolves when a stop was asked for.
    pub fn stopping(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// Resolves when the stream is closed.
    pub async fn closed(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// The records from `read` on, waiting for some when there are none yet; `None` once
    /// everything was read and the stream is closed.
    async fn next_batch(&self, read: usize) -> Option<(Vec<Record>, usize)> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.lock();
                if read < state.records.len() {
                    return Some((state.records[read..].to_vec(), state.records.len()));
                }
                if state.done {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Everything from the start, then what follows, in batches, until it is closed.
    pub fn reader(self: &Arc<Self>) -> impl Stream<Item = Vec<Record>> + Send + 'static {
        futures_util::stream::unfold((self.clone(), 0usize), |(stream, read)| async move {
            let (batch, read) = stream.next_batch(read).await?;
            Some((batch, (stream, read)))
        })
    }
}

#[derive(Default)]
struct Registry {
    /// (instance, stream id) → stream.
    streams: HashMap<(usize, String), Arc<LiveStream>>,
    /// (instance, a viewer's pointer: its full cache key name) → the id of their newest stream.
    active: HashMap<(usize, String), String>,
}

static REGISTRY: std::sync::LazyLock<Mutex<Registry>> =
    std::sync::LazyLock::new(|| Mutex::new(Registry::default()));

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// A new stream, registered under its id and as the viewer's newest (`active`).
pub fn open(app: &App, id: &str, active: &str) -> Arc<LiveStream> {
    let stream = LiveStream::new(id.to_owned());
    let at = instance(app);
    let mut r = registry();
    r.streams.insert((at, id.to_owned()), stream.clone());
    r.active.insert((at, active.to_owned()), id.to_owned());
    stream
}

/// The viewer's stream in flight here, if any.
pub fn active(app: &App, active: &str) -> Option<Arc<LiveStream>> {
    let at = instance(app);
    let r = registry();
    let id = r.active.get(&(at, active.to_owned()))?;
    r.streams.get(&(at, id.clone())).cloned()
}

/// The stream `id`, if it is produced here.
pub fn find(app: &App, id: &str) -> Option<Arc<LiveStream>> {
    registry()
        .streams
        .get(&(instance(app), id.to_owned()))
        .cloned()
}

/// Forgets a stream that ended (its pointer only if it still names it).
pub fn remove(app: &App, id: &str, active: &str) {
    let at = instance(app);
    let mut r = registry();
    r.streams.remove(&(at, id.to_owned()));
    let key = (at, active.to_owned());
    if r.active.get(&key).is_some_and(|a| a == id) {
        r.active.remove(&key);
    }
}

/// How many streams this process is producing.
pub fn in_flight() -> usize {
    registry().streams.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_reader_gets_everything_from_the_start_then_what_follows() {
        let s = LiveStream::new("s-live-1".into());
        s.push(Record::Text { t: "a".into() });
        let mut early = Box::pin(s.reader());
        assert_eq!(
            early.next().await,
            Some(vec![Record::Text { t: "a".into() }])
        );
        s.push(Record::Text { t: "b".into() });
        let mut late = Box::pin(s.reader());
        assert_eq!(late.next().await.unwrap().len(), 2);
        let waiting = tokio::spawn(async move { early.concat().await });
        tokio::task::yield_now().await;
        s.push(Record::Done);
        s.close();
        assert_eq!(
            waiting.await.unwrap(),
            vec![Record::Text { t: "b".into() }, Record::Done]
        );
        assert_eq!(late.next().await, Some(vec![Record::Done]));
        assert_eq!(late.next().await, None);
        assert_eq!(s.snapshot().len(), 3);
    }
}
