//! An incremental parser of `text/event-stream` (the WHATWG rules the model servers follow):
//! lines end in LF, CRLF or CR; `data:` lines of one event are joined with `\n`; `:` lines are
//! comments; a blank line ends an event.
//!
//! Written here rather than taken from `eventsource-stream` because it is small and we want a
//! bound on how much an endless line may buffer (a misbehaving server must not grow memory).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` field, when given.
    pub event: Option<String>,
    pub data: String,
}

/// Longest line (and event) the parser buffers.
pub const MAX_SSE_LINE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("server-sent event larger than {MAX_SSE_LINE_BYTES} bytes")]
pub struct SseTooLarge;

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF of the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseTooLarge> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.take_line(&line) {
                        out.push(ev);
                    }
                }
                _ => {
                    self.line.push(b);
                    let pending = self.data.as_ref().map_or(0, String::len);
                    if self.line.len() + pending > MAX_SSE_LINE_BYTES {
                        return Err(SseTooLarge);
                    }
                }
            }
        }
        Ok(out)
    }

    fn take_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take()?;
            return Some(SseEvent {
                event: self.event.take(),
                data,
            });
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        chunks.iter().flat_map(|c| p.push(c).unwrap()).collect()
    }

    fn data(d: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: d.into(),
        }
    }

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let whole = b"data: {\"a\":1}\n\ndata: [DONE]\n\n";
        for cut in 0..whole.len() {
            let (a, b) = whole.split_at(cut);
            assert_eq!(
                parse_all(&[a, b]),
                vec![data("{\"a\":1}"), data("[DONE]")],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn multi_line_data_comments_and_crlf() {
        let evs = parse_all(&[
            b": keep-alive\r\n\r\nevent: x\r\ndata: one\r\ndata:two\r",
            b"\n\r\n",
        ]);
        assert_eq!(
            evs,
            vec![SseEvent {
                event: Some("x".into()),
                data: "one\ntwo".into()
            }]
        );
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut p = SseParser::new();
        let big = vec![b'a'; MAX_SSE_LINE_BYTES + 1];
        assert_eq!(p.push(&big), Err(SseTooLarge));
    }
}
