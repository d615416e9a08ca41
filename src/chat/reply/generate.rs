//! Streams written as async blocks: the block runs as the response body polls the stream and is
//! dropped with it, never a spawned task. So a client that disconnects drops the block, which
//! drops the model's response, which closes the upstream connection (the model stops working).

use std::future::Future;

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;

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
