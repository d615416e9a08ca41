//! The group chat's stream: SSE events, one JSON object per `data:` line —
//! `message-start` (companionId, name, messageId), `text-delta` (companionId, delta),
//! `message-end` (companionId, status, stored), `error` (message) — then `data: [DONE]`.
//! Written from journal records ([`Record`]), so a reply, its resume and a cached replay go out
//! the same way.

use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;

use crate::chat::reply::journal::Record;
use crate::chat::stream::{
    sse_event, streaming_response, until_done, write_event, Read, INTERRUPTED, SSE_DONE,
};
use crate::db::messages::ReplyStatus;

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum GroupEvent<'a> {
    MessageStart {
        #[serde(rename = "companionId")]
        companion_id: &'a str,
        name: &'a str,
        #[serde(rename = "messageId")]
        message_id: &'a str,
    },
    TextDelta {
        #[serde(rename = "companionId")]
        companion_id: &'a str,
        delta: &'a str,
    },
    MessageEnd {
        #[serde(rename = "companionId")]
        companion_id: &'a str,
        status: ReplyStatus,
        /// In the group's history (a demo group's replies never are).
        stored: bool,
    },
    Error {
        message: &'a str,
    },
}

impl GroupEvent<'_> {
    pub fn encode(&self) -> Bytes {
        sse_event(self)
    }

    /// Appends this event's SSE frame to a batch being written.
    fn write_to(&self, out: &mut Vec<u8>) {
        write_event(out, self);
    }
}

/// The events of a group stream, as an SSE response.
pub fn group_stream<S>(records: S) -> Response
where
    S: Stream<Item = Vec<Record>> + Send + 'static,
{
    let mut companion = String::new();
    let body = until_done(records)
        .map(move |read| {
            let mut out = Vec::new();
            let batch = match read {
                Read::Batch(batch) => batch,
                Read::Cut => {
                    GroupEvent::Error {
                        message: INTERRUPTED,
                    }
                    .write_to(&mut out);
                    out.extend_from_slice(SSE_DONE);
                    return Ok::<_, std::convert::Infallible>(Bytes::from(out));
                }
            };
            for record in batch {
                match record {
                    Record::Start { .. } => {}
                    Record::Message {
                        id,
                        companion_id,
                        name,
                        ..
                    } => {
                        companion = companion_id.map(|c| c.to_string()).unwrap_or_default();
                        GroupEvent::MessageStart {
                            companion_id: &companion,
                            name: name.as_deref().unwrap_or_default(),
                            message_id: id.as_str(),
                        }
                        .write_to(&mut out);
                    }
                    Record::Text { t } => GroupEvent::TextDelta {
                        companion_id: &companion,
                        delta: &t,
                    }
                    .write_to(&mut out),
                    Record::End {
                        status,
                        error,
                        stored,
                        ..
                    } => {
                        GroupEvent::MessageEnd {
                            companion_id: &companion,
                            status,
                            stored,
                        }
                        .write_to(&mut out);
                        if let Some(message) = error {
                            tracing::warn!(message = %message, "group reply failed");
                            GroupEvent::Error { message: &message }.write_to(&mut out);
                        }
                    }
                    Record::Error { message } => {
                        GroupEvent::Error { message: &message }.write_to(&mut out)
                    }
                    Record::Done => out.extend_from_slice(SSE_DONE),
                }
            }
            Ok(Bytes::from(out))
        })
        .filter(|chunk| futures_util::future::ready(!matches!(chunk, Ok(b) if b.is_empty())));
    streaming_response(
        axum::body::Body::from_stream(body),
        "text/event-stream",
        false,
    )
}
