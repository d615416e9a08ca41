//! How a log line is laid out and written: the one `tracing` layer of every process, in text
//! (`2026-11-29T00:07:28.123456Z  INFO request{method=GET request_id=…}: request status=200 …`,
//! the layout of `tracing_subscriber`'s full format without targets) or, with `LOG_FORMAT=json`,
//! one JSON object per line for log drains and CloudWatch.
//!
//! Written here rather than with `tracing_subscriber::fmt`: every request of every function
//! logs a line, and the generic formatter's field visitor, style wrappers (even with colours
//! off) and twice-formatted span fields cost more than the rest of a cached request. This layer
//! renders a span's fields once when it opens, and an event into a per-thread buffer that
//! becomes one message for the writer thread.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The two layouts (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `timestamp LEVEL span{fields}: message field=value …`, coloured on a terminal.
    Text,
    /// `{"timestamp":…,"level":…,"target":…,"spans":[{"name":…,…}],"message":…,"field":…}`.
    Json,
}

impl LogFormat {
    /// `LOG_FORMAT`: `text` (the default) or `json`; `None` for anything else.
    pub fn parse(raw: Option<&str>) -> Option<LogFormat> {
        match raw.map(str::trim).filter(|v| !v.is_empty()) {
            None => Some(LogFormat::Text),
            Some(v) if v.eq_ignore_ascii_case("text") => Some(LogFormat::Text),
            Some(v) if v.eq_ignore_ascii_case("json") => Some(LogFormat::Json),
            Some(_) => None,
        }
    }
}

/// The layer: lays out every span and event it is given and hands each line to `writer`.
pub struct LogLayer {
    writer: NonBlocking,
    format: LogFormat,
    ansi: bool,
}

impl LogLayer {
    pub fn new(writer: NonBlocking, format: LogFormat, ansi: bool) -> Self {
        LogLayer {
            writer,
            format,
            ansi: ansi && format == LogFormat::Text,
        }
    }
}

/// A span's fields, rendered once when it opens: `a=1 b="x"` (text) or `"a":1,"b":"x"` (JSON).
struct SpanFields(String);

/// Bytes reserved for a span's rendered fields.
const SPAN_FIELDS_CAPACITY: usize = 64;
/// Spans a text line shows, nearest first (ours nest two deep at most).
const MAX_SPANS_SHOWN: usize = 8;

thread_local! {
    /// The line being written, and the event's fields other than its message.
    static LINE: RefCell<(String, String)> = const { RefCell::new((String::new(), String::new())) };
}

impl<S> Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::new(self.format);
        // Room for a request's method and id, so rendering them allocates once.
        fields.rest.reserve(SPAN_FIELDS_CAPACITY);
        attrs.record(&mut fields);
        span.extensions_mut().insert(SpanFields(fields.rest));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(rendered)) = extensions.get_mut::<SpanFields>() {
            let mut fields = Fields::new(self.format);
            fields.rest = std::mem::take(rendered);
            values.record(&mut fields);
            *rendered = fields.rest;
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        LINE.with_borrow_mut(|(line, rest)| {
            line.clear();
            rest.clear();
            let mut fields = Fields {
                format: self.format,
                message: String::new(),
                rest: std::mem::take(rest),
            };
            // The message goes straight into the line when it comes first; later it waits.
            event.record(&mut fields);
            match self.format {
                LogFormat::Text => self.text_line(line, event, &ctx, &fields),
                LogFormat::Json => json_line(line, event, &ctx, &fields),
            }
            *rest = fields.rest;
            line.push('\n');
            // Queued for the writer thread; a full queue makes this wait (never drops a line).
            let _ = self.writer.clone().write_all(line.as_bytes());
        });
    }
}

impl LogLayer {
    fn text_line<S>(
        &self,
        line: &mut String,
        event: &Event<'_>,
        ctx: &Context<'_, S>,
        fields: &Fields,
    ) where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        push_timestamp(line);
        let level = *event.metadata().level();
        let name = match level {
            Level::ERROR => "ERROR",
            Level::WARN => " WARN",
            Level::INFO => " INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        if self.ansi {
            let colour = match level {
                Level::ERROR => "31",
                Level::WARN => "33",
                Level::INFO => "32",
                Level::DEBUG => "34",
                Level::TRACE => "35",
            };
            let _ = write!(line, " \x1b[{colour}m{name}\x1b[0m ");
        } else {
            line.push(' ');
            line.push_str(name);
            line.push(' ');
        }
        if let Some(scope) = ctx.event_scope(event) {
            // Root first: the scope goes leaf to root, so it is collected (on the stack, no
            // allocation; the nearest MAX_SPANS_SHOWN spans) and written backwards.
            let mut spans: [Option<_>; MAX_SPANS_SHOWN] = Default::default();
            for (slot, span) in spans.iter_mut().zip(scope) {
                *slot = Some(span);
            }
            for span in spans.iter().rev().flatten() {
                line.push_str(span.name());
                if let Some(SpanFields(rendered)) = span.extensions().get::<SpanFields>() {
                    if !rendered.is_empty() {
                        line.push('{');
                        line.push_str(rendered);
                        line.push('}');
                    }
                }
                line.push(':');
            }
            line.push(' ');
        }
        line.push_str(&fields.message);
        if !fields.message.is_empty() && !fields.rest.is_empty() {
            line.push(' ');
        }
        line.push_str(&fields.rest);
    }
}

fn json_line<S>(line: &mut String, event: &Event<'_>, ctx: &Context<'_, S>, fields: &Fields)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    line.push_str("{\"timestamp\":\"");
    push_timestamp(line);
    line.push_str("\",\"level\":\"");
    line.push_str(event.metadata().level().as_str());
    line.push_str("\",\"target\":");
    push_json_str(line, event.metadata().target());
    if let Some(scope) = ctx.event_scope(event) {
        line.push_str(",\"spans\":[");
        for (i, span) in scope.from_root().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str("{\"name\":");
            push_json_str(line, span.name());
            if let Some(SpanFields(rendered)) = span.extensions().get::<SpanFields>() {
                if !rendered.is_empty() {
                    line.push(',');
                    line.push_str(rendered);
                }
            }
            line.push('}');
        }
        line.push(']');
    }
    line.push_str(",\"message\":");
    push_json_str(line, &fields.message);
    if !fields.rest.is_empty() {
        line.push(',');
        line.push_str(&fields.rest);
    }
    line.push('}');
}

/// The visitor: the message apart, every other field rendered in the layout's syntax.
struct Fields {
    format: LogFormat,
    message: String,
    rest: String,
}

impl Fields {
    fn new(format: LogFormat) -> Self {
        Fields {
            format,
            message: String::new(),
            rest: String::new(),
        }
    }

    /// Starts a field: the separator and the name.
    fn name(&mut self, field: &Field) {
        match self.format {
            LogFormat::Text => {
                if !self.rest.is_empty() {
                    self.rest.push(' ');
                }
                self.rest.push_str(field.name());
                self.rest.push('=');
            }
            LogFormat::Json => {
                if !self.rest.is_empty() {
                    self.rest.push(',');
                }
                push_json_str(&mut self.rest, field.name());
                self.rest.push(':');
            }
        }
    }

    fn number(&mut self, field: &Field, digits: &str) {
        self.name(field);
        self.rest.push_str(digits);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
            return;
        }
        self.name(field);
        match self.format {
            LogFormat::Text => push_text_str(&mut self.rest, value),
            LogFormat::Json => push_json_str(&mut self.rest, value),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if !value.is_finite() && self.format == LogFormat::Json {
            return self.number(field, "null");
        }
        self.name(field);
        // Milliseconds (`…_ms`) to the microsecond, always three decimals: the same width in
        // every line, written with integer arithmetic.
        if field.name().ends_with("_ms") && value.is_finite() && value.abs() < 1e12 {
            let micros = (value * 1000.0).round() as i64;
            if micros < 0 {
                self.rest.push('-');
            }
            let micros = micros.unsigned_abs();
            self.rest
                .push_str(itoa::Buffer::new().format(micros / 1000));
            self.rest.push('.');
            let fraction = micros % 1000;
            for digit in [fraction / 100, fraction / 10 % 10, fraction % 10] {
                self.rest.push(char::from(b'0' + digit as u8));
            }
        } else {
            let _ = write!(self.rest, "{value}");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        self.name(field);
        match self.format {
            // As `tracing_subscriber` prints them: `%x` as its Display, `?x` as its Debug.
            LogFormat::Text => {
                let _ = write!(self.rest, "{value:?}");
            }
            LogFormat::Json => {
                let mut text = String::new();
                let _ = write!(text, "{value:?}");
                push_json_str(&mut self.rest, &text);
            }
        }
    }
}

/// A string field in text, as logfmt writes one: bare when it is a plain token (`GET`,
/// `dashboard`, an id), else quoted with `Debug`'s escapes.
fn push_text_str(out: &mut String, value: &str) {
    let token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'));
    if token {
        out.push_str(value);
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// A JSON string, escaped as JSON requires.
fn push_json_str(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `2026-11-29T00:07:28.123456Z`, UTC; the part up to the second is formatted once per second
/// per thread.
fn push_timestamp(out: &mut String) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != now.as_secs() {
            *second = now.as_secs();
            *text =
                chrono::DateTime::<chrono::Utc>::from(UNIX_EPOCH + Duration::from_secs(*second))
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string();
        }
        out.push_str(text);
    });
    let _ = write!(out, ".{:06}Z", now.subsec_micros());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_is_text_or_json_and_nothing_else() {
        assert_eq!(LogFormat::parse(None), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("")), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("JSON")), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse(Some("text")), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("yaml")), None);
    }

    #[test]
    fn json_strings_are_escaped_and_text_strings_quoted() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, r#""a\"b\\c\nd\u0001""#);
        let mut out = String::new();
        push_text_str(&mut out, "dashboard");
        assert_eq!(out, "dashboard");
        let mut out = String::new();
        push_text_str(&mut out, "a\"b\n");
        assert_eq!(out, "\"a\\\"b\\n\"");
        let mut out = String::new();
        push_text_str(&mut out, "two words");
        assert_eq!(out, "\"two words\"");
        let mut out = String::new();
        push_text_str(&mut out, "");
        assert_eq!(out, "\"\"");
    }

    #[test]
    fn a_timestamp_has_six_digits_of_microseconds() {
        let mut out = String::new();
        push_timestamp(&mut out);
        assert_eq!(out.len(), "2026-11-29T00:07:28.123456Z".len(), "{out}");
        assert!(out.ends_with('Z'));
    }
}
