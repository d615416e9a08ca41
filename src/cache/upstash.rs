//! Upstash Redis over its REST API: `POST {url}` with a JSON command array, `POST
//! {url}/pipeline` with an array of them, `Authorization: Bearer {token}`; replies are
//! `{"result":…}` or `{"error":"…"}`.
//!
//! Our own thin client on the shared `reqwest` client (rustls): the crate `upstash-redis-rs`
//! needs nightly Rust.
//!
//! Binary safety: JSON strings can't carry arbitrary bytes, so values this client writes are
//! stored as `~` followed by their standard base64, and read values starting with `~` are
//! decoded. Values written by INCR or by scripts (integers, lock tokens) are stored as sent
//! and read back as their UTF-8 bytes; `~` is not a base64 or digit character, so the two
//! never mix. Keys are ASCII by construction (see `keys`). `gcbb upstash-proxy` needs no
//! special support for this; it also implements Upstash's `Upstash-Encoding: base64` reply
//! header for other clients.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use super::script::{Script, ScriptValue};
use super::CacheError;

/// Marks a value stored base64-encoded by this client.
pub const VALUE_TAG: char = '~';
/// Largest body of one pipeline request: Upstash refuses requests over 1 MB on its smaller
/// plans, so a write larger than this goes out as several pipelines, in order (chunks before
/// the manifest, so a reader never sees a manifest before its chunks).
pub const MAX_PIPELINE_BYTES: usize = 900 * 1024;

pub struct UpstashStore {
    url: String,
    pipeline_url: String,
    token: String,
    http: reqwest::Client,
    timeout: Duration,
}

impl UpstashStore {
    pub fn new(url: &str, token: &str, http: reqwest::Client, timeout: Duration) -> Self {
        let url = url.trim_end_matches('/').to_owned();
        UpstashStore {
            pipeline_url: format!("{url}/pipeline"),
            url,
            token: token.to_owned(),
            http,
            timeout,
        }
    }

    async fn post(&self, url: &str, body: &Value) -> Result<Value, CacheError> {
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .timeout(self.timeout)
            .json(body)
            .send()
            .await
            .map_err(map_err)?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(CacheError::Unauthorized);
        }
        let bytes = resp.bytes().await.map_err(map_err)?;
        serde_json::from_slice(&bytes).map_err(|_| {
            CacheError::Protocol(format!("HTTP {status} with a body that is not JSON"))
        })
    }

    /// One command; its `result`, or its `error` as [`CacheError::Server`].
    pub async fn command(&self, args: Vec<Value>) -> Result<Value, CacheError> {
        let reply = self.post(&self.url, &Value::Array(args)).await?;
        unwrap_reply(reply)
    }

    /// Several commands in one request (not atomic); one result per command.
    pub async fn pipeline(
        &self,
        commands: Vec<Vec<Value>>,
    ) -> Result<Vec<Result<Value, CacheError>>, CacheError> {
        let n = commands.len();
        let body = Value::Array(commands.into_iter().map(Value::Array).collect());
        match self.post(&self.pipeline_url, &body).await? {
            Value::Array(replies) if replies.len() == n => {
                Ok(replies.into_iter().map(unwrap_reply).collect())
            }
            other => Err(unwrap_reply(other).err().unwrap_or_else(|| {
                CacheError::Protocol("pipeline reply of another length".into())
            })),
        }
    }

    pub async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        let mut args = vec![json!("MGET")];
        args.extend(keys.iter().map(|k| json!(k)));
        match self.command(args).await? {
            Value::Array(values) if values.len() == keys.len() => {
                values.into_iter().map(decode_value).collect()
            }
            _ => Err(CacheError::Protocol("MGET reply of another shape".into())),
        }
    }

    pub async fn set_many(&self, items: &[(String, Bytes, Duration)]) -> Result<(), CacheError> {
        let mut batch: Vec<Vec<Value>> = Vec::new();
        let mut batch_bytes = 0;
        for (key, value, ttl) in items {
            let encoded = encode_value(value);
            let size = key.len() + encoded.len() + 32;
            if !batch.is_empty() && batch_bytes + size > MAX_PIPELINE_BYTES {
                self.set_batch(std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += size;
            batch.push(vec![
                json!("SET"),
                json!(key),
                json!(encoded),
                json!("PX"),
                json!(ttl.as_millis().max(1) as u64),
            ]);
        }
        self.set_batch(batch).await
    }

    async fn set_batch(&self, commands: Vec<Vec<Value>>) -> Result<(), CacheError> {
        if commands.is_empty() {
            return Ok(());
        }
        for reply in self.pipeline(commands).await? {
            reply?;
        }
        Ok(())
    }

    pub async fn del(&self, keys: &[String]) -> Result<u64, CacheError> {
        let mut args = vec![json!("DEL")];
        args.extend(keys.iter().map(|k| json!(k)));
        let n = self.command(args).await?;
        n.as_u64()
            .ok_or_else(|| CacheError::Protocol("DEL reply is not a number".into()))
    }

    pub async fn incr(&self, key: &str) -> Result<i64, CacheError> {
        let n = self.command(vec![json!("INCR"), json!(key)]).await?;
        n.as_i64()
            .ok_or_else(|| CacheError::Protocol("INCR reply is not a number".into()))
    }

    pub async fn set_nx_px(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let reply = self
            .command(vec![
                json!("SET"),
                json!(key),
                json!(value),
                json!("NX"),
                json!("PX"),
                json!(ttl.as_millis().max(1) as u64),
            ])
            .await?;
        Ok(!reply.is_null())
    }

    pub async fn scan(
        &self,
        cursor: &str,
        pattern: &str,
        batch: usize,
    ) -> Result<(String, Vec<String>), CacheError> {
        let reply = self
            .command(vec![
                json!("SCAN"),
                json!(cursor),
                json!("MATCH"),
                json!(pattern),
                json!("COUNT"),
                json!(batch),
            ])
            .await?;
        let bad = || CacheError::Protocol("SCAN reply of another shape".into());
        let Value::Array(mut parts) = reply else {
            return Err(bad());
        };
        if parts.len() != 2 {
            return Err(bad());
        }
        let keys = match parts.pop() {
            Some(Value::Array(keys)) => keys
                .into_iter()
                .map(|k| k.as_str().map(str::to_owned).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(bad()),
        };
        let next = match parts.pop() {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(bad()),
        };
        Ok((next, keys))
    }

    /// One `/pipeline` request: `RPUSH` (+ `PEXPIRE` with a time to live) when there are items,
    /// else `LLEN`; the lease's `SET … PX`; the watched key's `GET`. Items that are text go as text (the
    /// journal's JSON records stay readable, and a third smaller than base64).
    pub async fn append_list(
        &self,
        append: &super::list::ListAppend<'_>,
    ) -> Result<super::list::Appended, CacheError> {
        let mut commands: Vec<Vec<Value>> = Vec::new();
        if append.items.is_empty() {
            commands.push(vec![json!("LLEN"), json!(append.key)]);
        } else {
            let mut rpush = vec![json!("RPUSH"), json!(append.key)];
            rpush.extend(append.items.iter().map(|v| json!(encode_list_value(v))));
            commands.push(rpush);
            if let Some(ttl) = append.ttl {
                commands.push(vec![
                    json!("PEXPIRE"),
                    json!(append.key),
                    json!(ttl.as_millis().max(1) as u64),
                ]);
            }
        }
        if let Some((lease, ttl)) = append.lease {
            commands.push(vec![
                json!("SET"),
                json!(lease),
                json!("1"),
                json!("PX"),
                json!(ttl.as_millis().max(1) as u64),
            ]);
        }
        if append.watch.is_some() {
            commands.push(vec![json!("GET"), json!(append.watch)]);
        }
        let mut replies = self.pipeline(commands).await?;
        let watched = match append.watch {
            Some(_) => decode_value(replies.pop().unwrap_or(Ok(Value::Null))?)?,
            None => None,
        };
        let first = replies
            .into_iter()
            .next()
            .ok_or_else(|| CacheError::Protocol("no reply to RPUSH".into()))??;
        let len = first
            .as_u64()
            .ok_or_else(|| CacheError::Protocol("RPUSH reply is not a number".into()))?;
        Ok(super::list::Appended { len, watched })
    }

    pub async fn list_range(&self, key: &str, start: usize) -> Result<Vec<Bytes>, CacheError> {
        match self
            .command(vec![json!("LRANGE"), json!(key), json!(start), json!(-1)])
            .await?
        {
            Value::Array(values) => values
                .into_iter()
                .map(|v| decode_value(v).map(Option::unwrap_or_default))
                .collect(),
            _ => Err(CacheError::Protocol("LRANGE reply of another shape".into())),
        }
    }

    pub async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, CacheError> {
        let n = self
            .command(vec![
                json!("PEXPIRE"),
                json!(key),
                json!(ttl.as_millis().max(1) as u64),
            ])
            .await?;
        Ok(n.as_i64() == Some(1))
    }

    pub async fn zadd(&self, key: &str, score: i64, member: &str) -> Result<(), CacheError> {
        self.command(vec![json!("ZADD"), json!(key), json!(score), json!(member)])
            .await
            .map(drop)
    }

    pub async fn zrange_by_score(
        &self,
        key: &str,
        max: i64,
        limit: usize,
    ) -> Result<Vec<String>, CacheError> {
        let reply = self
            .command(vec![
                json!("ZRANGEBYSCORE"),
                json!(key),
                json!("-inf"),
                json!(max),
                json!("LIMIT"),
                json!(0),
                json!(limit),
            ])
            .await?;
        let bad = || CacheError::Protocol("ZRANGEBYSCORE reply of another shape".into());
        match reply {
            Value::Array(members) => members
                .into_iter()
                .map(|m| m.as_str().map(str::to_owned).ok_or_else(bad))
                .collect(),
            _ => Err(bad()),
        }
    }

    pub async fn zrem(&self, key: &str, member: &str) -> Result<bool, CacheError> {
        let n = self
            .command(vec![json!("ZREM"), json!(key), json!(member)])
            .await?;
        Ok(n.as_i64().is_some_and(|n| n > 0))
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        self.command(vec![json!("PING")]).await.map(|_| ())
    }

    /// `EVALSHA`, falling back to `EVAL` when the script isn't loaded yet.
    pub async fn run_script(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<ScriptValue, CacheError> {
        let tail = || {
            let mut v = vec![json!(keys.len())];
            v.extend(keys.iter().map(|k| json!(k)));
            v.extend(args.iter().map(|a| json!(a)));
            v
        };
        let mut evalsha = vec![json!("EVALSHA"), json!(script.sha1())];
        evalsha.extend(tail());
        let reply = match self.command(evalsha).await {
            Err(CacheError::Server(msg)) if msg.contains("NOSCRIPT") => {
                let mut eval = vec![json!("EVAL"), json!(script.lua())];
                eval.extend(tail());
                self.command(eval).await?
            }
            other => other?,
        };
        from_json(reply)
    }
}

impl super::breaker::Probe for UpstashStore {
    fn probe(&self) -> impl std::future::Future<Output = Result<(), CacheError>> + Send {
        self.ping()
    }
}

fn unwrap_reply(reply: Value) -> Result<Value, CacheError> {
    match reply {
        Value::Object(mut map) => {
            if let Some(err) = map.remove("error") {
                let msg = err
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| err.to_string());
                return Err(if msg == "Unauthorized" {
                    CacheError::Unauthorized
                } else {
                    CacheError::Server(msg)
                });
            }
            map.remove("result")
                .ok_or_else(|| CacheError::Protocol("reply without result or error".into()))
        }
        _ => Err(CacheError::Protocol("reply is not an object".into())),
    }
}

fn encode_value(value: &[u8]) -> String {
    let mut s = String::with_capacity(1 + value.len().div_ceil(3) * 4);
    s.push(VALUE_TAG);
    STANDARD.encode_string(value, &mut s);
    s
}

/// A list item as sent: text as it is, unless it could be taken for a tagged value; anything
/// else tagged base64 like every other value. [`decode_value`] reads both.
fn encode_list_value(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if !text.starts_with(VALUE_TAG) => text.to_owned(),
        _ => encode_value(value),
    }
}

fn decode_value(value: Value) -> Result<Option<Bytes>, CacheError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => match s.strip_prefix(VALUE_TAG) {
            Some(b64) => STANDARD
                .decode(b64)
                .map(|v| Some(Bytes::from(v)))
                .map_err(|_| CacheError::Protocol("a tagged value is not base64".into())),
            None => Ok(Some(Bytes::from(s))),
        },
        Value::Number(n) => Ok(Some(Bytes::from(n.to_string()))),
        _ => Err(CacheError::Protocol("a value is not a string".into())),
    }
}

fn from_json(value: Value) -> Result<ScriptValue, CacheError> {
    Ok(match value {
        Value::Null => ScriptValue::Nil,
        Value::Number(n) => ScriptValue::Int(
            n.as_i64()
                .ok_or_else(|| CacheError::Protocol("a number is not an integer".into()))?,
        ),
        Value::String(s) => match decode_value(Value::String(s))? {
            Some(b) => ScriptValue::Data(b),
            None => ScriptValue::Nil,
        },
        Value::Array(items) => {
            ScriptValue::Array(items.into_iter().map(from_json).collect::<Result<_, _>>()?)
        }
        Value::Bool(b) => ScriptValue::Int(b as i64),
        Value::Object(_) => return Err(CacheError::Protocol("unexpected object".into())),
    })
}

fn map_err(e: reqwest::Error) -> CacheError {
    if e.is_timeout() {
        CacheError::Timeout
    } else {
        CacheError::Unreachable(e.without_url().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_the_tag() {
        for v in [&b""[..], b"\x00\xff\xfe", "é🦀".as_bytes(), b"~abc"] {
            let enc = encode_value(v);
            assert_eq!(
                decode_value(Value::String(enc)).unwrap(),
                Some(Bytes::copy_from_slice(v))
            );
        }
    }

    #[test]
    fn list_items_go_as_text_when_they_can() {
        let record = br#"{"k":"text","t":"hi"}"#;
        assert_eq!(encode_list_value(record), r#"{"k":"text","t":"hi"}"#);
        for v in [&b"~looks tagged"[..], b"\xff\x00"] {
            let enc = encode_list_value(v);
            assert!(enc.starts_with(VALUE_TAG));
            assert_eq!(
                decode_value(Value::String(enc)).unwrap(),
                Some(Bytes::copy_from_slice(v))
            );
        }
    }

    #[test]
    fn untagged_values_are_their_bytes() {
        assert_eq!(
            decode_value(json!("42")).unwrap(),
            Some(Bytes::from_static(b"42"))
        );
        assert_eq!(decode_value(Value::Null).unwrap(), None);
        assert!(decode_value(json!("~not base64!")).is_err());
    }

    #[test]
    fn replies_map_to_results_and_errors() {
        assert_eq!(unwrap_reply(json!({"result": "OK"})).unwrap(), json!("OK"));
        assert!(matches!(
            unwrap_reply(json!({"error": "ERR x"})),
            Err(CacheError::Server(m)) if m == "ERR x"
        ));
        assert!(matches!(
            unwrap_reply(json!({"error": "Unauthorized"})),
            Err(CacheError::Unauthorized)
        ));
        assert!(matches!(
            unwrap_reply(json!([1])),
            Err(CacheError::Protocol(_))
        ));
    }
}
