//! Redis replies as Upstash's JSON, and the request's encoding. A reply is `{"result": …}` or
//! `{"error": "…"}`; nil is `null`, integers are numbers, arrays are arrays. Strings are text
//! (invalid UTF-8 replaced), or, with the request header `Upstash-Encoding: base64`, base64:
//! every string, bulk or simple (`PONG`, `string` from TYPE) and at any depth, except a
//! top-level `OK` — what Upstash documents, and what its SDKs decode (they base64-decode every
//! string but a top-level "OK"). Errors are never encoded.

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

/// How strings in a result are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Text,
    Base64,
}

impl Encoding {
    /// From `Upstash-Encoding`, and `Upstash-Response-Format` (only `json` is served: RESP2
    /// bodies are not implemented). The error text when the request asks for what isn't served.
    pub fn from_headers(headers: &HeaderMap) -> Result<Encoding, String> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(format) = header("upstash-response-format") {
            if !format.eq_ignore_ascii_case("json") {
                return Err(format!(
                    "ERR Upstash-Response-Format {format:?} is not served by gcbb upstash-proxy (json only)"
                ));
            }
        }
        Ok(match header("upstash-encoding") {
            Some(v) if v.eq_ignore_ascii_case("base64") => Encoding::Base64,
            _ => Encoding::Text,
        })
    }

    fn string(self, bytes: &[u8]) -> Value {
        match self {
            Encoding::Base64 => Value::String(STANDARD.encode(bytes)),
            Encoding::Text => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        }
    }
}

/// One Redis reply as an Upstash reply object.
pub fn reply(value: redis::Value, encoding: Encoding) -> Value {
    match result(value, encoding) {
        Ok(v) => json!({ "result": v }),
        Err(e) => json!({ "error": e }),
    }
}

/// The `result` of a reply: a top-level `OK` is left as it is, in any encoding.
fn result(value: redis::Value, encoding: Encoding) -> Result<Value, String> {
    match value {
        redis::Value::Okay => Ok(json!("OK")),
        redis::Value::SimpleString(s) if s == "OK" => Ok(json!("OK")),
        other => to_json(other, encoding),
    }
}

fn to_json(value: redis::Value, encoding: Encoding) -> Result<Value, String> {
    use redis::Value as R;
    let all = |items: Vec<R>| -> Result<Value, String> {
        items
            .into_iter()
            .map(|v| to_json(v, encoding))
            .collect::<Result<_, _>>()
            .map(Value::Array)
    };
    Ok(match value {
        R::Nil => Value::Null,
        R::Int(n) => json!(n),
        R::BulkString(b) => encoding.string(&b),
        R::SimpleString(s) => encoding.string(s.as_bytes()),
        R::Okay => encoding.string(b"OK"),
        // RESP3 types, answered as RESP2 (what Upstash speaks over REST) would answer them.
        R::Double(d) => encoding.string(d.to_string().as_bytes()),
        R::Boolean(b) => json!(b as i64),
        R::VerbatimString { text, .. } => encoding.string(text.as_bytes()),
        R::BigNumber(n) => encoding.string(n.to_string().as_bytes()),
        R::Array(items) | R::Set(items) => all(items)?,
        R::Map(pairs) => all(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())?,
        R::Attribute { data, .. } => to_json(*data, encoding)?,
        R::Push { data, .. } => all(data)?,
        R::ServerError(e) => return Err(server_error_text(e)),
    })
}

/// A Redis error as Redis prints it: `CODE detail`.
pub fn server_error_text(e: impl Into<redis::RedisError>) -> String {
    let e: redis::RedisError = e.into();
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value as R;

    #[test]
    fn text_replies_map_like_upstash() {
        let t = Encoding::Text;
        assert_eq!(reply(R::Nil, t), json!({"result": null}));
        assert_eq!(reply(R::Int(3), t), json!({"result": 3}));
        assert_eq!(
            reply(R::SimpleString("PONG".into()), t),
            json!({"result": "PONG"})
        );
        assert_eq!(
            reply(
                R::Array(vec![R::BulkString(b"a".to_vec()), R::Nil, R::Int(1)]),
                t
            ),
            json!({"result": ["a", null, 1]})
        );
    }

    #[test]
    fn base64_encodes_every_string_but_a_top_level_ok() {
        let b = Encoding::Base64;
        assert_eq!(reply(R::Okay, b), json!({"result": "OK"}));
        assert_eq!(
            reply(R::SimpleString("OK".into()), b),
            json!({"result": "OK"})
        );
        assert_eq!(
            reply(R::SimpleString("PONG".into()), b),
            json!({"result": "UE9ORw=="})
        );
        assert_eq!(
            reply(R::BulkString(b"\xff\x00".to_vec()), b),
            json!({"result": "/wA="})
        );
        assert_eq!(
            reply(
                R::Array(vec![
                    R::Okay,
                    R::SimpleString("string".into()),
                    R::Array(vec![R::BulkString(b"v".to_vec()), R::Nil]),
                    R::Int(7)
                ]),
                b
            ),
            json!({"result": ["T0s=", "c3RyaW5n", ["dg==", null], 7]})
        );
    }

    #[test]
    fn the_encoding_comes_from_the_headers_and_resp2_is_refused() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        assert_eq!(Encoding::from_headers(&headers(&[])), Ok(Encoding::Text));
        assert_eq!(
            Encoding::from_headers(&headers(&[("upstash-encoding", "BASE64")])),
            Ok(Encoding::Base64)
        );
        assert_eq!(
            Encoding::from_headers(&headers(&[("upstash-response-format", "json")])),
            Ok(Encoding::Text)
        );
        assert!(Encoding::from_headers(&headers(&[("upstash-response-format", "resp2")])).is_err());
    }

    #[test]
    fn errors_are_never_encoded() {
        let err = redis::parse_redis_value(b"-WRONGTYPE Operation against a key\r\n").unwrap();
        assert_eq!(
            reply(err, Encoding::Base64),
            json!({"error": "WRONGTYPE Operation against a key"})
        );
    }
}
