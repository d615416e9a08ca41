//! The wire formats of streamed replies: the AI SDK's text stream (`text/plain`, raw text) and
//! its UI-message stream (SSE, `x-vercel-ai-ui-message-stream: v1`), plus the SSE framing the
//! group chat's events ([`crate::chat::group::events`]) share. Each encoder turns a stream of
//! journal [`Record`]s (in batches, as a reader gets them: from this process's memory or from
//! the journal of another instance) into a response, so a reply, its resume and a cached
//! replay go out the same way.
//!
//! The formats are small and fixed, so they are written here rather than pulled from a crate;
//! the integration tests check them with the AI SDK's own parsers (`tests/ai-sdk`).

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;

use crate::chat::reply::journal::Record;
use crate::db::messages::ReplyStatus;

/// What a stream that stopped without its end says: its producer went away (its process died,
/// or the cache lost its journal).
pub const INTERRUPTED: &str = "the reply was interrupted";

/// Which format the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// AI SDK text stream (`streamProtocol: 'text'`, `TextStreamChatTransport`).
    Text,
    /// AI SDK UI-message stream (`streamProtocol: 'data'`, `DefaultChatTransport`).
    UiMessage,
}

impl StreamFormat {
    /// `Accept: text/event-stream` asks for the UI-message stream, else `Accept: text/plain` for
    /// the text stream; anything else (`*/*`, none) gets `default`, the format of the body's
    /// shape. (Quality values are not weighed: the AI SDK never sends them.)
    pub fn negotiate(headers: &axum::http::HeaderMap, default: StreamFormat) -> Self {
        let accepts = |wanted: &str| {
            headers
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|v| v.trim().starts_with(wanted))
        };
        if accepts("text/event-stream") {
            StreamFormat::UiMessage
        } else if accepts("text/plain") {
            StreamFormat::Text
        } else {
            default
        }
    }

    /// The format of a `{"prompt"}` body: the text stream unless `Accept` asks for SSE.
    pub fn from_accept(headers: &axum::http::HeaderMap) -> Self {
        Self::negotiate(headers, StreamFormat::Text)
    }
}

/// A streamed reply in `format`.
pub fn reply_response<S>(format: StreamFormat, records: S) -> Response
where
    S: Stream<Item = Vec<Record>> + Send + 'static,
{
    match format {
        StreamFormat::Text => text_stream(records),
        StreamFormat::UiMessage => ui_message_stream(records),
    }
}

/// What an encoder reads: a batch of records, or the news that the stream ended without its
/// `Done` (its producer went away).
pub enum Read {
    Batch(Vec<Record>),
    Cut,
}

/// Cuts a stream of record batches at its `Done` (a reader following a journal would otherwise
/// read on), and says when it ended without one.
pub fn until_done<S>(records: S) -> impl Stream<Item = Read> + Send
where
    S: Stream<Item = Vec<Record>> + Send + 'static,
{
    records
        .map(Some)
        .chain(futures_util::stream::once(async { None }))
        .scan(false, |done, batch| {
            let out = match batch {
                _ if *done => None,
                None => Some(Read::Cut),
                Some(mut batch) => {
                    if let Some(i) = batch.iter().position(|r| matches!(r, Record::Done)) {
                        batch.truncate(i + 1);
                        *done = true;
                    }
                    Some(Read::Batch(batch))
                }
            };
            futures_util::future::ready(out)
        })
}

/// The text stream: the reply's text as it comes. It has no way to say "error", so a reply that
/// breaks off (or a stream that loses its producer) aborts the body: the client sees an
/// incomplete chunked response, not a clean end. A stopped reply ends cleanly.
pub fn text_stream<S>(records: S) -> Response
where
    S: Stream<Item = Vec<Record>> + Send + 'static,
{
    let body = until_done(records)
        .flat_map(|read| {
            let mut items: Vec<Result<Bytes, std::io::Error>> = Vec::new();
            let mut text = Vec::new();
            let mut error = None;
            match read {
                Read::Cut => error = Some(INTERRUPTED.to_owned()),
                Read::Batch(batch) => {
                    for record in batch {
                        match record {
                            Record::Text { t } => text.extend_from_slice(t.as_bytes()),
                            Record::End { error: Some(e), .. } | Record::Error { message: e } => {
                                error = Some(e)
                            }
                            _ => {}
                        }
                    }
                }
            }
            if !text.is_empty() {
                items.push(Ok(Bytes::from(text)));
            }
            if let Some(e) = error {
                items.push(Err(std::io::Error::other(e)));
            }
            futures_util::stream::iter(items)
        })
        // Nothing after a failure: the body ends there.
        .scan(false, |failed, item| {
            let out = (!*failed).then(|| {
                *failed = item.is_err();
                item
            });
            futures_util::future::ready(out)
        });
    streaming_response(Body::from_stream(body), "text/plain; charset=utf-8", false)
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum UiChunk<'a> {
    Start {
        #[serde(rename = "messageId")]
        message_id: &'a str,
    },
    TextStart {
        id: &'a str,
    },
    TextDelta {
        id: &'a str,
        delta: &'a str,
    },
    TextEnd {
        id: &'a str,
    },
    Finish {
        #[serde(rename = "finishReason")]
        finish_reason: &'a str,
        #[serde(rename = "messageMetadata")]
        message_metadata: Ended,
    },
    Error {
        #[serde(rename = "errorText")]
        error_text: &'a str,
    },
}

/// What the end of a message says of it (the finish chunk's `messageMetadata`): how it ended,
/// whether it is in the history, and whether it is kept to be written there later. It never
/// says a reply is stored that isn't.
#[derive(Serialize)]
struct Ended {
    status: ReplyStatus,
    stored: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pending: bool,
}

/// One SSE `data:` event holding `value` as JSON.
pub fn sse_event<T: Serialize>(value: &T) -> Bytes {
    let mut out = Vec::new();
    write_event(&mut out, value);
    Bytes::from(out)
}

/// Appends one SSE `data:` event holding `value` as JSON to a batch being written: the one
/// framing both streams (the UI-message stream and the group chat's) use.
pub fn write_event<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

/// The end-of-stream marker both SSE formats send last.
pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// The UI-message stream: `start` (with the message's id: the stored row's), `text-start`,
/// `text-delta`…, `text-end`, then `finish` (its `finishReason`: `stop` for a reply that
/// finished, `other` for one stopped or cut short) or `error`, then `[DONE]`.
pub fn ui_message_stream<S>(records: S) -> Response
where
    S: Stream<Item = Vec<Record>> + Send + 'static,
{
    let mut texts = 0usize;
    let mut text_id = String::from("text-0");
    let body = until_done(records).map(move |read| {
        let mut out = Vec::new();
        let batch = match read {
            Read::Batch(batch) => batch,
            Read::Cut => {
                write_event(
                    &mut out,
                    &UiChunk::Error {
                        error_text: INTERRUPTED,
                    },
                );
                out.extend_from_slice(SSE_DONE);
                return Ok::<_, Infallible>(Bytes::from(out));
            }
        };
        for record in batch {
            match record {
                Record::Start { .. } => {}
                Record::Message { id, .. } => {
                    text_id = format!("text-{texts}");
                    texts += 1;
                    write_event(
                        &mut out,
                        &UiChunk::Start {
                            message_id: id.as_str(),
                        },
                    );
                    write_event(&mut out, &UiChunk::TextStart { id: &text_id });
                }
                Record::Text { t } => write_event(
                    &mut out,
                    &UiChunk::TextDelta {
                        id: &text_id,
                        delta: &t,
                    },
                ),
                Record::End {
                    status,
                    error,
                    stored,
                    pending,
                    ..
                } => {
                    write_event(&mut out, &UiChunk::TextEnd { id: &text_id });
                    match error {
                        Some(e) => write_event(&mut out, &UiChunk::Error { error_text: &e }),
                        None => write_event(
                            &mut out,
                            &UiChunk::Finish {
                                finish_reason: if status == ReplyStatus::Finished {
                                    "stop"
                                } else {
                                    "other"
                                },
                                message_metadata: Ended {
                                    status,
                                    stored,
                                    pending,
                                },
                            },
                        ),
                    }
                }
                Record::Error { message } => write_event(
                    &mut out,
                    &UiChunk::Error {
                        error_text: &message,
                    },
                ),
                Record::Done => out.extend_from_slice(SSE_DONE),
            }
        }
        Ok(Bytes::from(out))
    });
    let body =
        body.filter(|chunk| futures_util::future::ready(!matches!(chunk, Ok(b) if b.is_empty())));
    streaming_response(Body::from_stream(body), "text/event-stream", true)
}

/// A response that streams: no caching, no proxy buffering.
pub fn streaming_response(body: Body, content_type: &'static str, ui_stream: bool) -> Response {
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if ui_stream {
        h.insert(
            "x-vercel-ai-ui-message-stream",
            HeaderValue::from_static("v1"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(resp: Response) -> (String, bool) {
        let mut body = resp.into_body();
        let mut text = Vec::new();
        let mut failed = false;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => text.extend_from_slice(f.data_ref().unwrap()),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        (String::from_utf8(text).unwrap(), failed)
    }

    fn message(id: &str) -> Record {
        Record::Message {
            id: crate::id::MessageId::issued(id),
            companion_id: None,
            name: None,
            row: None,
        }
    }

    fn end(status: ReplyStatus, error: Option<&str>) -> Record {
        Record::End {
            status,
            error: error.map(str::to_owned),
            tokens: 1,
            stored: true,
            pending: false,
            at: 0,
        }
    }

    fn text(t: &str) -> Record {
        Record::Text { t: t.into() }
    }

    fn events(body: &str) -> Vec<&str> {
        body.split("\n\n").filter(|l| !l.is_empty()).collect()
    }

    #[tokio::test]
    async fn a_ui_stream_that_fails_ends_with_an_error_part_and_done() {
        let records = futures_util::stream::iter([
            vec![message("m1"), text("Hel")],
            vec![
                end(
                    ReplyStatus::Interrupted,
                    Some("the model's stream broke off"),
                ),
                Record::Done,
            ],
        ]);
        let (body, _) = body_of(ui_message_stream(records)).await;
        assert_eq!(
            events(&body),
            vec![
                r#"data: {"type":"start","messageId":"m1"}"#,
                r#"data: {"type":"text-start","id":"text-0"}"#,
                r#"data: {"type":"text-delta","id":"text-0","delta":"Hel"}"#,
                r#"data: {"type":"text-end","id":"text-0"}"#,
                r#"data: {"type":"error","errorText":"the model's stream broke off"}"#,
                "data: [DONE]",
            ]
        );
    }

    #[tokio::test]
    async fn a_finish_says_how_the_reply_ended_and_whether_it_is_stored() {
        for (status, reason) in [
            (ReplyStatus::Finished, "stop"),
            (ReplyStatus::Stopped, "other"),
        ] {
            let records = futures_util::stream::iter([vec![
                message("m1"),
                text("Hi"),
                end(status, None),
                Record::Done,
                // A reader following a journal never reads past the end.
                text("after"),
            ]]);
            let (body, _) = body_of(ui_message_stream(records)).await;
            let ev = events(&body);
            assert_eq!(
                ev[ev.len() - 2],
                format!(
                    r#"data: {{"type":"finish","finishReason":"{reason}","messageMetadata":{{"status":"{}","stored":true}}}}"#,
                    status.as_str()
                )
            );
            assert_eq!(ev[ev.len() - 1], "data: [DONE]");
        }
    }

    #[tokio::test]
    async fn a_stream_that_loses_its_producer_says_so() {
        let records = futures_util::stream::iter([vec![message("m1"), text("Hal")]]);
        let (body, _) = body_of(ui_message_stream(records)).await;
        let ev = events(&body);
        assert_eq!(
            &ev[ev.len() - 2..],
            [
                format!(r#"data: {{"type":"error","errorText":"{INTERRUPTED}"}}"#).as_str(),
                "data: [DONE]"
            ]
        );
        let records = futures_util::stream::iter([vec![message("m1"), text("Hal")]]);
        let (body, failed) = body_of(text_stream(records)).await;
        assert_eq!(body, "Hal");
        assert!(failed, "the text stream must not end cleanly");
    }

    #[tokio::test]
    async fn the_text_stream_is_the_text_and_breaks_off_on_a_failure() {
        let ok = futures_util::stream::iter([
            vec![message("m1"), text("Hel")],
            vec![text("lo"), end(ReplyStatus::Stopped, None), Record::Done],
        ]);
        assert_eq!(body_of(text_stream(ok)).await, ("Hello".to_owned(), false));
        let broken = futures_util::stream::iter([vec![
            message("m1"),
            text("Hel"),
            end(ReplyStatus::Interrupted, Some("x")),
            Record::Done,
        ]]);
        assert_eq!(body_of(text_stream(broken)).await, ("Hel".to_owned(), true));
    }

    #[test]
    fn accept_picks_the_format() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(StreamFormat::from_accept(&h), StreamFormat::Text);
        h.insert(
            header::ACCEPT,
            "application/json, text/event-stream;q=0.9".parse().unwrap(),
        );
        assert_eq!(StreamFormat::from_accept(&h), StreamFormat::UiMessage);
    }
}
