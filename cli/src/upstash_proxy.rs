//! `gcbb upstash-proxy`: the Upstash REST protocol served over a real Redis, so the Upstash
//! client is tested for real (locally and in CI) and can be benchmarked.
//!
//! `POST /` takes one command array, `POST /pipeline` an array of them (not atomic),
//! `POST /multi-exec` an array run inside MULTI/EXEC. Bearer auth; replies `{"result":…}` or
//! `{"error":"…"}` (400 for a command error, like Upstash). Redis nil is `null`, integers are
//! numbers, strings are strings; with the request header `Upstash-Encoding: base64`, bulk
//! strings are base64 (simple replies such as `OK` stay plain), as Upstash does. One
//! multiplexed connection (a `ConnectionManager`, so a restarted Redis is picked up again).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use serde_json::{json, Value};

/// Largest request body the proxy accepts (Upstash's own limit depends on the plan).
pub const PROXY_MAX_BODY: usize = 8 * 1024 * 1024;
/// Redis connect and response timeout inside the proxy.
pub const PROXY_REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// Port when `--port` is not given.
pub const DEFAULT_PROXY_PORT: u16 = 8079;

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Redis to serve.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Bearer token clients must send.
    #[arg(long, env = "UPSTASH_PROXY_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = DEFAULT_PROXY_PORT)]
    pub port: u16,
}

struct Proxy {
    redis: ConnectionManager,
    token: String,
}

pub async fn run(args: ProxyArgs) -> ExitCode {
    if args.token.is_empty() {
        eprintln!("gcbb upstash-proxy: --token must not be empty");
        return ExitCode::from(2);
    }
    let router = match router(&args.redis, &args.token).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gcbb upstash-proxy: cannot reach Redis: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "gcbb upstash-proxy: cannot listen on port {}: {e}",
                args.port
            );
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(port = args.port, "upstash-proxy listening");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return shutdown.await,
            };
        tokio::select! {
            _ = shutdown => {}
            _ = term.recv() => {}
        }
    };
    match axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gcbb upstash-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The proxy's routes over a connection to `redis_url` (connects now, so a wrong URL fails
/// at start-up).
pub async fn router(redis_url: &str, token: &str) -> Result<Router, redis::RedisError> {
    let client = redis::Client::open(redis_url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(PROXY_REDIS_TIMEOUT)
        .set_response_timeout(PROXY_REDIS_TIMEOUT)
        .set_number_of_retries(2);
    let redis = ConnectionManager::new_with_config(client, config).await?;
    let proxy = Arc::new(Proxy {
        redis,
        token: token.to_owned(),
    });
    Ok(Router::new()
        .route("/", post(single))
        .route("/pipeline", post(pipeline))
        .route("/multi-exec", post(multi_exec))
        .layer(DefaultBodyLimit::max(PROXY_MAX_BODY))
        .with_state(proxy))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A request refused before reaching Redis.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// Checks the bearer token and parses the body; the error response otherwise.
fn admit(
    proxy: &Proxy,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Value, bool), Refusal> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok: bool =
        subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), proxy.token.as_bytes()).into();
    if !ok {
        return Err(Refusal(StatusCode::UNAUTHORIZED, "Unauthorized".into()));
    }
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let status = if status == StatusCode::PAYLOAD_TOO_LARGE {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        Refusal(status, rejection.body_text())
    })?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))?;
    let base64 = headers
        .get("upstash-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("base64"));
    Ok((value, base64))
}

/// A JSON command array as a Redis command.
fn to_cmd(value: &Value) -> Result<redis::Cmd, String> {
    let Value::Array(parts) = value else {
        return Err("a command must be a JSON array".into());
    };
    let Some((name, args)) = parts.split_first() else {
        return Err("a command must not be empty".into());
    };
    let Value::String(name) = name else {
        return Err("the command name must be a string".into());
    };
    let mut cmd = redis::cmd(name);
    for arg in args {
        match arg {
            Value::String(s) => cmd.arg(s.as_bytes()),
            Value::Number(n) => cmd.arg(n.to_string()),
            Value::Bool(b) => cmd.arg(if *b { "1" } else { "0" }),
            _ => return Err("arguments must be strings or numbers".into()),
        };
    }
    Ok(cmd)
}

fn to_commands(value: &Value) -> Result<Vec<redis::Cmd>, String> {
    match value {
        Value::Array(commands) if !commands.is_empty() => commands.iter().map(to_cmd).collect(),
        _ => Err("expected a non-empty array of commands".into()),
    }
}

/// One Redis reply as an Upstash reply object.
fn reply(value: redis::Value, base64: bool) -> Value {
    match to_json(value, base64) {
        Ok(v) => json!({ "result": v }),
        Err(e) => json!({ "error": e }),
    }
}

fn to_json(value: redis::Value, base64: bool) -> Result<Value, String> {
    use redis::Value as R;
    Ok(match value {
        R::Nil => Value::Null,
        R::Int(n) => json!(n),
        R::BulkString(b) if base64 => json!(STANDARD.encode(b)),
        R::BulkString(b) => json!(String::from_utf8_lossy(&b)),
        R::SimpleString(s) => json!(s),
        R::Okay => json!("OK"),
        R::Double(d) => json!(d),
        R::Boolean(b) => json!(b as i64),
        R::Array(items) | R::Set(items) => Value::Array(
            items
                .into_iter()
                .map(|v| to_json(v, base64))
                .collect::<Result<_, _>>()?,
        ),
        R::Map(pairs) => Value::Array(
            pairs
                .into_iter()
                .flat_map(|(k, v)| [to_json(k, base64), to_json(v, base64)])
                .collect::<Result<_, _>>()?,
        ),
        R::VerbatimString { text, .. } => json!(text),
        R::BigNumber(n) => json!(n.to_string()),
        R::ServerError(e) => return Err(server_error_text(e)),
        other => json!(format!("{other:?}")),
    })
}

fn server_error_text(e: impl Into<redis::RedisError>) -> String {
    let e: redis::RedisError = e.into();
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => e.to_string(),
    }
}

fn redis_error(e: &redis::RedisError) -> Response {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        tracing::warn!(error = %e, "upstash-proxy: Redis unavailable");
        return error(StatusCode::SERVICE_UNAVAILABLE, "Redis is unavailable");
    }
    let text = match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    };
    error(StatusCode::BAD_REQUEST, text)
}

async fn single(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (value, base64) = match admit(&proxy, &headers, body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let cmd = match to_cmd(&value) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut conn = proxy.redis.clone();
    match conn.req_packed_command(&cmd).await {
        Ok(v) => {
            let body = reply(v, base64);
            let status = if body.get("error").is_some() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            (status, Json(body)).into_response()
        }
        Err(e) => redis_error(&e),
    }
}

async fn pipeline(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run_many(&proxy, &headers, body, false).await
}

async fn multi_exec(
    State(proxy): State<Arc<Proxy>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run_many(&proxy, &headers, body, true).await
}

async fn run_many(
    proxy: &Proxy,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    atomic: bool,
) -> Response {
    let (value, base64) = match admit(proxy, headers, body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let commands = match to_commands(&value) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let n = commands.len();
    let mut pipe = redis::pipe();
    if atomic {
        pipe.atomic();
    }
    for cmd in commands {
        pipe.add_command(cmd);
    }
    let mut conn = proxy.redis.clone();
    // MULTI/EXEC: skip the MULTI and QUEUED replies, read EXEC's array.
    let (offset, count) = if atomic { (n + 1, 1) } else { (0, n) };
    let replies = match conn.req_packed_commands(&pipe, offset, count).await {
        Ok(r) => r,
        Err(e) => return redis_error(&e),
    };
    let replies = match (atomic, replies) {
        (true, mut exec) => match exec.pop() {
            Some(redis::Value::Array(items)) => items,
            Some(redis::Value::Nil) => {
                return error(StatusCode::BAD_REQUEST, "transaction aborted")
            }
            Some(redis::Value::ServerError(e)) => {
                return error(StatusCode::BAD_REQUEST, server_error_text(e))
            }
            _ => return error(StatusCode::BAD_GATEWAY, "unexpected EXEC reply"),
        },
        (false, replies) => replies,
    };
    Json(Value::Array(
        replies.into_iter().map(|v| reply(v, base64)).collect(),
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_strings_and_numbers() {
        assert!(to_cmd(&json!(["SET", "k", 1])).is_ok());
        assert!(to_cmd(&json!([])).is_err());
        assert!(to_cmd(&json!([1, "k"])).is_err());
        assert!(to_cmd(&json!(["SET", {"a": 1}])).is_err());
        assert!(to_cmd(&json!("PING")).is_err());
        assert!(to_commands(&json!([])).is_err());
    }

    #[test]
    fn replies_map_like_upstash() {
        use redis::Value as R;
        assert_eq!(reply(R::Nil, false), json!({"result": null}));
        assert_eq!(reply(R::Int(3), false), json!({"result": 3}));
        assert_eq!(reply(R::Okay, true), json!({"result": "OK"}));
        assert_eq!(
            reply(R::BulkString(b"\xff\x00".to_vec()), true),
            json!({"result": "/wA="})
        );
        assert_eq!(
            reply(
                R::Array(vec![R::BulkString(b"a".to_vec()), R::Nil, R::Int(1)]),
                false
            ),
            json!({"result": ["a", null, 1]})
        );
    }
}
