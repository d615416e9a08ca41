//! The group chat's stream: SSE events, one JSON object per `data:` line —
//! `message-start` (companionId, name), `text-delta` (companionId, delta), `message-end`
//! (companionId), `error` (message) — then `data: [DONE]`.

use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;

use crate::chat::reply::Sender;
use crate::chat::stream::{sse_event, streaming_response, SSE_DONE};

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum GroupEvent<'a> {
    MessageStart {
        #[serde(rename = "companionId")]
        companion_id: &'a str,
        name: &'a str,
    },
    TextDelta {
        #[serde(rename = "companionId")]
        companion_id: &'a str,
        delta: &'a str,
    },
    MessageEnd {
        #[serde(rename = "companionId")]
        companion_id: &'a str,
    },
    Error {
        message: &'a str,
    },
}

impl GroupEvent<'_> {
    pub fn encode(&self) -> Bytes {
        sse_event(self)
    }
}

/// The end of every group stream.
pub fn done() -> Bytes {
    Bytes::from_static(SSE_DONE)
}

pub async fn send(tx: &Sender<Bytes>, event: GroupEvent<'_>) {
    tx.send(event.encode()).await;
}

/// A stream of encoded events as an SSE response.
pub fn sse_response<S>(events: S) -> Response
where
    S: futures_util::Stream<Item = Bytes> + Send + 'static,
{
    use futures_util::StreamExt;
    streaming_response(
        axum::body::Body::from_stream(events.map(Ok::<_, std::convert::Infallible>)),
        "text/event-stream",
        false,
    )
}
