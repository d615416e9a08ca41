//! `gcbb upstash-proxy`: the Upstash REST protocol served over a real Redis — the local
//! stand-in for Upstash that our Upstash client is tested (and benchmarked) against, and that
//! Upstash's own SDKs (`@upstash/redis`, `@upstash/ratelimit`) run against unchanged.
//!
//! Routes: `POST /` with one command as a JSON array; `POST /pipeline` with an array of them
//! (not atomic); `POST /multi-exec` with an array run inside MULTI/EXEC on a connection of its
//! own; and the path style, `GET|POST /<command>/<arg>/…` (see [`request`]). Auth by
//! `Authorization: Bearer <token>` or `?_token=`. Replies are `{"result": …}` or
//! `{"error": "…"}` (see [`encoding`] for `Upstash-Encoding: base64`), with Upstash's status
//! codes: 400 for a command error or a refused command, 401 for a bad token, 405 for a method
//! other than HEAD, GET, POST and PUT, 413 for a body over the limit, and (ours: Upstash has
//! no such cases) 408 for a body that does not arrive within `--body-timeout-ms`, 503 when
//! Redis is down or too slow.
//!
//! It refuses what would harm a Redis others share or the connection its clients share
//! ([`commands`]; scripts by every command they can run, [`lua`]), answers KEYS only for a
//! database of at most `--keys-limit` keys as Upstash does, rewrites Upstash-only script flags
//! for Redis ([`scripts`]), stops a script that runs too long ([`watchdog`]), and cuts off a
//! client that sends its request too slowly ([`server`]).

pub mod commands;
pub mod connections;
pub mod encoding;
pub mod lua;
pub mod request;
pub mod scripts;
pub mod server;
pub mod watchdog;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Extension;
use axum::{Json, Router};
use bytes::Bytes;
use clap::Args;
use serde_json::{json, Value};

use self::commands::{Command, Policy};
use self::connections::{Connections, Failure, Timeouts};
use self::encoding::Encoding;
use self::scripts::ScriptDigests;
use self::server::ClientTimeouts;

/// Largest request body the proxy accepts by default (Upstash's own limit depends on the plan).
pub const PROXY_MAX_BODY: usize = 8 * 1024 * 1024;
/// How long opening a connection to Redis may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long Redis may take to answer a request, by default. Blocking commands are refused, so
/// only a slow script or a huge reply comes near it.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a script may run before the proxy stops it, by default: Redis's own default
/// `busy-reply-threshold`, before which Redis reads no SCRIPT KILL anyway.
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upstash answers KEYS only for a database of at most this many keys ("This command will
/// return an error for databases containing more than 100,000 entries", its KEYS page).
pub const KEYS_LIMIT: u64 = 100_000;
/// How long a connection may sit without a complete request head, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request head may take from its first byte, by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request body may take once the head is in, by default.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Port when `--port` is not given.
pub const DEFAULT_PROXY_PORT: u16 = 8079;
/// The methods Upstash serves; any other is 405.
pub const ALLOWED_METHODS: &str = "HEAD, GET, POST, PUT";

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Redis to serve (its URL may name a user whose ACL limits what the proxy can do).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Bearer token clients must send.
    #[arg(long, env = "UPSTASH_PROXY_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = DEFAULT_PROXY_PORT)]
    pub port: u16,
    /// Run FLUSHALL, FLUSHDB and FUNCTION FLUSH (refused by default: they empty a Redis that
    /// may be shared).
    #[arg(long)]
    pub allow_flush: bool,
    /// Milliseconds to open a connection to Redis.
    #[arg(long, default_value_t = DEFAULT_CONNECT_TIMEOUT.as_millis() as u64)]
    pub connect_timeout_ms: u64,
    /// Milliseconds for Redis to answer a request.
    #[arg(long, default_value_t = DEFAULT_COMMAND_TIMEOUT.as_millis() as u64)]
    pub command_timeout_ms: u64,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = PROXY_MAX_BODY)]
    pub max_body: usize,
    /// Milliseconds a script may run before the proxy stops it with SCRIPT KILL (Redis reads
    /// the kill only after its busy-reply-threshold, 5000 by default).
    #[arg(long, default_value_t = DEFAULT_SCRIPT_TIMEOUT.as_millis() as u64)]
    pub script_timeout_ms: u64,
    /// KEYS is refused when the database holds more keys than this (Upstash's limit).
    #[arg(long, default_value_t = KEYS_LIMIT)]
    pub keys_limit: u64,
    /// Milliseconds a connection may stay open without a complete request head (after it
    /// opens or after its last response).
    #[arg(long, default_value_t = DEFAULT_IDLE_TIMEOUT.as_millis() as u64)]
    pub idle_timeout_ms: u64,
    /// Milliseconds a request head may take from its first byte.
    #[arg(long, default_value_t = DEFAULT_HEADER_TIMEOUT.as_millis() as u64)]
    pub header_timeout_ms: u64,
    /// Milliseconds a request body may take once the head is in.
    #[arg(long, default_value_t = DEFAULT_BODY_TIMEOUT.as_millis() as u64)]
    pub body_timeout_ms: u64,
}

struct Proxy {
    redis: Connections,
    token: String,
    policy: Policy,
    scripts: ScriptDigests,
    keys_limit: u64,
    max_body: usize,
    body_timeout: Duration,
}

pub async fn run(args: ProxyArgs) -> ExitCode {
    if args.token.is_empty() {
        eprintln!("gcbb upstash-proxy: --token must not be empty");
        return ExitCode::from(2);
    }
    let (router, proxy) = match build(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gcbb upstash-proxy: --redis {e}");
            return ExitCode::from(2);
        }
    };
    // Serve even when Redis is down: requests answer 503 until it is up.
    if let Err(Failure::Unavailable(e) | Failure::Refused(e)) = proxy.redis.connect().await {
        eprintln!("gcbb upstash-proxy: serving anyway, requests answer 503 until Redis is up: {e}");
    }
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
    tracing::info!(
        port = args.port,
        redis = %proxy.redis.address(),
        allow_flush = args.allow_flush,
        "upstash-proxy listening"
    );
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
    let timeouts = ClientTimeouts {
        idle: Duration::from_millis(args.idle_timeout_ms.max(1)),
        header: Duration::from_millis(args.header_timeout_ms.max(1)),
        body: Duration::from_millis(args.body_timeout_ms.max(1)),
    };
    server::serve(listener, router, timeouts, shutdown).await;
    ExitCode::SUCCESS
}

/// The proxy's routes over `args.redis`. Nothing connects yet; the error is a bad URL.
pub fn router(args: &ProxyArgs) -> Result<Router, redis::RedisError> {
    build(args).map(|(router, _)| router)
}

fn build(args: &ProxyArgs) -> Result<(Router, Arc<Proxy>), redis::RedisError> {
    let timeouts = Timeouts {
        connect: Duration::from_millis(args.connect_timeout_ms),
        command: Duration::from_millis(args.command_timeout_ms),
        script: Duration::from_millis(args.script_timeout_ms.max(1)),
    };
    let proxy = Arc::new(Proxy {
        redis: Connections::new(&args.redis, timeouts)?,
        token: args.token.clone(),
        policy: Policy {
            allow_flush: args.allow_flush,
        },
        scripts: ScriptDigests::default(),
        keys_limit: args.keys_limit,
        max_body: args.max_body,
        body_timeout: Duration::from_millis(args.body_timeout_ms.max(1)),
    });
    let router = Router::new()
        .route("/", any(handle).layer(Extension(Route::Root)))
        .route("/pipeline", any(handle).layer(Extension(Route::Pipeline)))
        .route(
            "/multi-exec",
            any(handle).layer(Extension(Route::Transaction)),
        )
        .route("/{*command}", any(handle).layer(Extension(Route::Path)))
        .with_state(proxy.clone());
    Ok((router, proxy))
}

/// Where a request's commands come from, and how they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `POST /`: one command as a JSON array.
    Root,
    /// `/<command>/<arg>…`: one command in the path.
    Path,
    /// `POST /pipeline`: commands in order on the shared connection.
    Pipeline,
    /// `POST /multi-exec`: commands in MULTI/EXEC on a connection of their own.
    Transaction,
}

/// Every route, told apart by the [`Route`] its layer attaches: method, token, encoding,
/// commands, refusals, then Redis.
async fn handle(
    State(proxy): State<Arc<Proxy>>,
    Extension(route): Extension<Route>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = read_body(body, proxy.max_body, proxy.body_timeout).await;
    let (encoding, mut commands) = match admit(&proxy, route, &method, &uri, &headers, body) {
        Ok(p) => p,
        Err(rejection) => return rejection.into_response(),
    };
    if let Err((index, refusal)) = commands::check_all(&commands, proxy.policy) {
        tracing::warn!(
            command = %refusal.command,
            index,
            of = commands.len(),
            route = ?route,
            "upstash-proxy: refused"
        );
        let message = match route {
            Route::Root | Route::Path => refusal.message(),
            Route::Pipeline | Route::Transaction => format!(
                "{} (command {} of {}; none of them ran)",
                refusal.message(),
                index + 1,
                commands.len()
            ),
        };
        return error(StatusCode::BAD_REQUEST, message);
    }
    if let Some(index) = commands.iter().position(|c| commands::is_keys(c)) {
        if let Err(response) = check_key_count(&proxy, route, index, commands.len()).await {
            return response;
        }
    }
    let digests: Vec<Option<String>> = commands
        .iter_mut()
        .map(|c| proxy.scripts.prepare(c))
        .collect();
    let answer = |value: redis::Value, digest: &Option<String>| {
        encoding::reply(with_client_digest(value, digest), encoding)
    };
    match route {
        Route::Root | Route::Path => match proxy.redis.run(&commands[0]).await {
            Ok(value) => {
                let body = answer(value, &digests[0]);
                let status = if body.get("error").is_some() {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::OK
                };
                (status, Json(body)).into_response()
            }
            Err(failure) => failure_response(failure),
        },
        Route::Pipeline | Route::Transaction => {
            let replies = if route == Route::Pipeline {
                proxy.redis.run_pipeline(&commands).await
            } else {
                proxy.redis.run_transaction(&commands).await
            };
            match replies {
                Ok(values) => Json(Value::Array(
                    values
                        .into_iter()
                        .zip(&digests)
                        .map(|(v, d)| answer(v, d))
                        .collect(),
                ))
                .into_response(),
                Err(failure) => failure_response(failure),
            }
        }
    }
}

/// KEYS as Upstash answers it: refused (before any command of the request runs) when the
/// database holds more than `--keys-limit` keys.
async fn check_key_count(
    proxy: &Proxy,
    route: Route,
    index: usize,
    of: usize,
) -> Result<(), Response> {
    let count = match proxy.redis.run(&vec![b"DBSIZE".to_vec()]).await {
        Ok(redis::Value::Int(n)) => n.max(0) as u64,
        Ok(other) => {
            tracing::warn!(reply = ?other, "upstash-proxy: DBSIZE answered oddly");
            return Ok(());
        }
        Err(failure) => return Err(failure_response(failure)),
    };
    if count <= proxy.keys_limit {
        return Ok(());
    }
    tracing::warn!(
        keys = count,
        limit = proxy.keys_limit,
        "upstash-proxy: refused KEYS"
    );
    let mut message = format!(
        "ERR KEYS is refused by gcbb upstash-proxy: the database holds {count} keys, over the \
         {} for which Upstash answers KEYS; use SCAN",
        proxy.keys_limit
    );
    if matches!(route, Route::Pipeline | Route::Transaction) {
        message.push_str(&format!(
            " (command {} of {of}; none of them ran)",
            index + 1
        ));
    }
    Err(error(StatusCode::BAD_REQUEST, message))
}

/// The whole body, within `within` of the head and at most `limit` bytes: a 408 (closing the
/// connection) for a body that dawdles, a 413 for one too large.
async fn read_body(body: Body, limit: usize, within: Duration) -> Result<Bytes, Rejection> {
    use http_body_util::BodyExt as _;
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(within, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Rejection {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("ERR the request body is over {limit} bytes (--max-body)"),
                allow: None,
            })
        }
        Ok(Err(e)) => Err(Rejection::bad_request(format!(
            "ERR could not read the request body: {e}"
        ))),
        Err(_) => Err(Rejection {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "ERR the request body did not arrive within {} ms (gcbb upstash-proxy)",
                within.as_millis()
            ),
            allow: None,
        }),
    }
}

/// A request turned away before it reaches Redis: the status, the `error` text, and for a 405
/// the methods allowed.
struct Rejection {
    status: StatusCode,
    message: String,
    allow: Option<&'static str>,
}

impl Rejection {
    fn bad_request(message: impl Into<String>) -> Rejection {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            allow: None,
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = error(self.status, self.message);
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of a dawdling body is not worth waiting for.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Checks method and token, reads the encoding and the commands.
fn admit(
    proxy: &Proxy,
    route: Route,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, Rejection>,
) -> Result<(Encoding, Vec<Command>), Rejection> {
    let allow = match route {
        Route::Root | Route::Path => ALLOWED_METHODS,
        Route::Pipeline | Route::Transaction => "POST, PUT",
    };
    if !allow.split(", ").any(|m| m == method.as_str()) {
        return Err(Rejection {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("ERR method {method} is not allowed here (allowed: {allow})"),
            allow: Some(allow),
        });
    }
    if !authorized(proxy, headers, uri.query()) {
        return Err(Rejection {
            status: StatusCode::UNAUTHORIZED,
            message: "Unauthorized".into(),
            allow: None,
        });
    }
    let encoding = Encoding::from_headers(headers).map_err(Rejection::bad_request)?;
    let body = body?;
    let bad = |e: String| Rejection::bad_request(e);
    let commands = match route {
        Route::Path => {
            vec![request::command_from_path(uri.path(), uri.query(), &body).map_err(bad)?]
        }
        Route::Root if !has_body(method) => {
            return Err(Rejection::bad_request(
                "ERR no command: POST a JSON array to / or put the command in the path",
            ))
        }
        Route::Root => vec![request::command_from_json(&parse_json(&body)?).map_err(bad)?],
        Route::Pipeline | Route::Transaction => {
            request::commands_from_json(&parse_json(&body)?).map_err(bad)?
        }
    };
    Ok((encoding, commands))
}

fn has_body(method: &Method) -> bool {
    method == Method::POST || method == Method::PUT
}

fn parse_json(body: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(body)
        .map_err(|e| Rejection::bad_request(format!("ERR invalid JSON: {e}")))
}

/// The bearer token, or else `?_token=`, compared in constant time.
fn authorized(proxy: &Proxy, headers: &HeaderMap, query: Option<&str>) -> bool {
    let matches = |presented: &str| -> bool {
        subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), proxy.token.as_bytes()).into()
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.is_some_and(matches) || request::token_from_query(query).is_some_and(|t| matches(&t))
}

/// SCRIPT LOAD of a rewritten script answers the digest of the script the client sent.
fn with_client_digest(value: redis::Value, digest: &Option<String>) -> redis::Value {
    match (value, digest) {
        (redis::Value::BulkString(_), Some(d)) => redis::Value::BulkString(d.clone().into_bytes()),
        (value, _) => value,
    }
}

fn failure_response(failure: Failure) -> Response {
    match failure {
        Failure::Unavailable(e) => {
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, e);
            // Like every 503 of the project: say when to try again.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(gcbb::platform::error::UNAVAILABLE_RETRY_AFTER_SECS),
            );
            response
        }
        Failure::Refused(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}
