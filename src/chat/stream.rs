//! The wire formats of streamed replies: the AI SDK's text stream (`text/plain`, raw text) and
//! its UI-message stream (SSE, `x-vercel-ai-ui-message-stream: v1`), plus the SSE framing the
//! group chat's events ([`crate::chat::group::events`]) share. Each encoder turns a stream of
//! [`ReplyPart`]s into a response.
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

/// What a reply stream carries, in order: text, then at most one error (the stream ends after).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyPart {
    Text(String),
    /// The reply broke off; the message is safe to show.
    Error(String),
}

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
pub fn reply_response<S>(format: StreamFormat, parts: S) -> Response
where
    S: Stream<Item = ReplyPart> + Send + 'static,
{
    match format {
        StreamFormat::Text => text_stream(parts),
        StreamFormat::UiMessage => ui_message_stream(parts, &uuid::Uuid::new_v4().to_string()),
    }
}

/// The text stream: the reply's text as it comes. It has no way to say "error", so a reply that
/// breaks off aborts the body (the client sees an incomplete chunked response, not a clean end).
pub fn text_stream<S>(parts: S) -> Response
where
    S: Stream<Item = ReplyPart> + Send + 'static,
{
    let body = parts.map(|part| match part {
        ReplyPart::Text(t) => Ok(Bytes::from(t)),
        ReplyPart::Error(m) => Err(std::io::Error::other(m)),
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
    },
    Error {
        #[serde(rename = "errorText")]
        error_text: &'a str,
    },
}

/// One SSE `data:` event holding `value` as JSON.
pub fn sse_event<T: Serialize>(value: &T) -> Bytes {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("data: {json}\n\n"))
}

/// The end-of-stream marker both SSE formats send last.
pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// The UI-message stream: `start`, `text-start`, `text-delta`…, `text-end`, then `finish` or
/// `error`, then `[DONE]`.
pub fn ui_message_stream<S>(parts: S, message_id: &str) -> Response
where
    S: Stream<Item = ReplyPart> + Send + 'static,
{
    const TEXT_ID: &str = "text-0";
    let head = futures_util::stream::iter([
        sse_event(&UiChunk::Start { message_id }),
        sse_event(&UiChunk::TextStart { id: TEXT_ID }),
    ]);
    let mut failed = false;
    let body = parts
        .map(Some)
        .chain(futures_util::stream::once(async { None }))
        .map(move |part| match part {
            Some(ReplyPart::Text(t)) => sse_event(&UiChunk::TextDelta {
                id: TEXT_ID,
                delta: &t,
            }),
            Some(ReplyPart::Error(m)) => {
                failed = true;
                let mut b = sse_event(&UiChunk::TextEnd { id: TEXT_ID }).to_vec();
                b.extend_from_slice(&sse_event(&UiChunk::Error { error_text: &m }));
                Bytes::from(b)
            }
            None if failed => Bytes::from_static(SSE_DONE),
            None => {
                let mut b = sse_event(&UiChunk::TextEnd { id: TEXT_ID }).to_vec();
                b.extend_from_slice(&sse_event(&UiChunk::Finish {
                    finish_reason: "stop",
                }));
                b.extend_from_slice(SSE_DONE);
                Bytes::from(b)
            }
        });
    let all = head.chain(body).map(Ok::<_, Infallible>);
    streaming_response(Body::from_stream(all), "text/event-stream", true)
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

    async fn body_of(resp: Response) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_ui_stream_that_fails_ends_with_an_error_part_and_done() {
        let parts = futures_util::stream::iter([
            ReplyPart::Text("Hel".into()),
            ReplyPart::Error("the model's stream broke off".into()),
        ]);
        let body = body_of(ui_message_stream(parts, "m1")).await;
        let lines: Vec<&str> = body.split("\n\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines,
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
