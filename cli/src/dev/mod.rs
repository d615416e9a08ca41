//! `gcbb dev`: one local server for every route of `vercel.json` plus `public/`, on a database
//! it creates, migrates and seeds with demo data when empty. Without a Clerk key it also signs
//! in demo users itself (`session`), for the front end. Responses are compressed (gzip or
//! brotli) when the client asks, as Vercel's edge does in front of the functions. It answers
//! only requests naming a loopback host or one it was told (`host`), and bounds how long a
//! connection may hold it without asking for anything (`connection`).

mod banner;
pub mod connection;
pub mod host;
pub mod session;

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, Extensions, HeaderMap, StatusCode, Version};
use axum::response::Response;
use axum::Router;
use tower::Layer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::services::ServeDir;

use gcbb::config::{Config, DEFAULT_DEV_DATABASE_URL};
use gcbb::db::{self, DbConfig};
use gcbb::platform::app::App;
use gcbb::routes::VercelJson;
use gcbb_migrate::config::{MigrateConfig, DEFAULT_MIGRATIONS_DIR};

use session::DevSigner;

/// How much longer than the background-write budget shutdown waits for background work
/// (`wait_until`) of finished requests: a write retrying through an outage gets its whole budget.
pub const SHUTDOWN_DRAIN_MARGIN: Duration = Duration::from_secs(10);
/// How long a connection may take to send a request's headers (a half-sent request must not
/// hold a connection open).
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Longest pause between two pieces of a request body.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 30_000;
/// How long open connections may take to finish after Ctrl-C before they are dropped.
pub const SHUTDOWN_CONNECTIONS_LIMIT: Duration = Duration::from_secs(10);
/// How long a connection may stay open with no request in flight (HTTP/1 keep-alive and
/// HTTP/2 alike; hyper has no idle timeout of its own).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;
/// How often an HTTP/2 connection is pinged…
pub const DEFAULT_H2_KEEP_ALIVE_INTERVAL_MS: u64 = 20_000;
/// …and how long the client has to answer before the connection is closed.
pub const DEFAULT_H2_KEEP_ALIVE_TIMEOUT_MS: u64 = 10_000;
/// Streams one HTTP/2 connection may have open at once (hyper's default, said out loud).
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 200;
/// How long a connection closed for being idle may take to go (an HTTP/2 GOAWAY to flush, a
/// request that raced the close to finish) while it stays idle.
pub const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = gcbb::config::DEFAULT_DEV_PORT)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Don't insert demo data into an empty database.
    #[arg(long)]
    pub no_seed: bool,
    /// Static files served for paths outside /api/.
    #[arg(long, default_value = "public")]
    pub public_dir: PathBuf,
    /// Migration history to deploy before serving.
    #[arg(long, env = "GCBB_MIGRATIONS_DIR", default_value = DEFAULT_MIGRATIONS_DIR)]
    pub migrations_dir: PathBuf,
    /// How long a client may take to send a request's headers, in ms.
    #[arg(long, env = "DEV_HEADER_READ_TIMEOUT_MS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT_MS)]
    pub header_read_timeout_ms: u64,
    /// Longest pause between two pieces of a request body, in ms.
    #[arg(long, env = "DEV_BODY_READ_TIMEOUT_MS", default_value_t = DEFAULT_BODY_READ_TIMEOUT_MS)]
    pub body_read_timeout_ms: u64,
    /// How long a connection may stay open with no request in flight, in ms.
    #[arg(long, env = "DEV_IDLE_TIMEOUT_MS", default_value_t = DEFAULT_IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u64,
    /// Interval of HTTP/2 pings, in ms.
    #[arg(long, env = "DEV_H2_KEEP_ALIVE_INTERVAL_MS", default_value_t = DEFAULT_H2_KEEP_ALIVE_INTERVAL_MS)]
    pub h2_keep_alive_interval_ms: u64,
    /// How long an HTTP/2 client has to answer a ping, in ms.
    #[arg(long, env = "DEV_H2_KEEP_ALIVE_TIMEOUT_MS", default_value_t = DEFAULT_H2_KEEP_ALIVE_TIMEOUT_MS)]
    pub h2_keep_alive_timeout_ms: u64,
    /// Streams one HTTP/2 connection may have open at once.
    #[arg(long, env = "DEV_H2_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_H2_MAX_CONCURRENT_STREAMS)]
    pub h2_max_concurrent_streams: u32,
    /// Another host name requests may name besides the loopback ones (`localhost`,
    /// `*.localhost`, 127.0.0.0/8, `[::1]`): a name, `.domain` for it and its subdomains, or an
    /// IP address; repeat or separate with commas. Any other `Host` gets 403, so a page on some
    /// other name can't reach gcbb dev through DNS rebinding.
    #[arg(
        long = "allowed-host",
        env = "DEV_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// A proxy in front of gcbb dev (an IP or a CIDR range; repeat or separate with commas)
    /// whose `X-Forwarded-For` names the client for rate limits. Without one, every forwarding
    /// header is ignored and the client is the connection's peer (whatever `TRUSTED_PROXY` says).
    #[arg(
        long = "trusted-proxy",
        env = "DEV_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,
}

/// Responses smaller than this go uncompressed (tower-http's own default floor).
pub const MIN_COMPRESSED_BYTES: u16 = 32;

pub async fn run(args: DevArgs) -> ExitCode {
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gcbb dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: DevArgs) -> anyhow::Result<()> {
    let mut vars = dev_vars();
    // gcbb dev trusts no proxy unless told on its own command line: a TRUSTED_PROXY meant for a
    // deployment (vercel) would let any local client name itself.
    let trusted: Vec<&str> = args
        .trusted_proxies
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect();
    if trusted
        .iter()
        .any(|p| p.parse::<std::net::IpAddr>().is_err() && !p.contains('/'))
    {
        anyhow::bail!("--trusted-proxy takes IP addresses or CIDR ranges, not {trusted:?}");
    }
    vars.insert(
        "TRUSTED_PROXY".into(),
        if trusted.is_empty() {
            "none".into()
        } else {
            trusted.join(",")
        },
    );
    let config = Config::from_vars(&vars)?;
    let bind_ip = args
        .host
        .parse::<std::net::IpAddr>()
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let allowed_hosts = Arc::new(host::AllowedHosts::new(&args.allowed_hosts, bind_ip)?);
    // With no Clerk key, gcbb dev signs tokens itself. The key is generated while the database
    // is prepared: RSA generation takes a noticeable moment.
    let signer = config.clerk.key.is_none().then(|| {
        let issuer = config.clerk.issuer.clone();
        tokio::task::spawn_blocking(move || DevSigner::generate(issuer))
    });
    // The direct URL when one is given, as `gcbb db` would use.
    let target = MigrateConfig::from_vars(&vars)?.database()?.db.clone();

    create_database_if_missing(&target).await?;
    let applied = gcbb_migrate::deploy(&target, &args.migrations_dir).await?;
    let seeded = if args.no_seed {
        false
    } else {
        let client = db::connect(&target).await?;
        crate::demo::insert_demo_data_if_empty(&client, &config.system_user_id).await?
    };
    if !seeded && !applied.applied.is_empty() {
        // A migration may have (re)built the read model from data it didn't see: refresh it
        // with the function cron uses, so the first dashboard shows what the database holds
        // (seeding refreshes it itself).
        let client = db::connect(&target).await?;
        let system_user_id = gcbb::id::UserId::issued(config.system_user_id.as_str());
        db::read_model::refresh_read_model(&client, &system_user_id).await?;
    }

    let signer = match signer {
        Some(pending) => {
            let signer = Arc::new(pending.await??);
            // The same variable a real key comes in, so the tokens take the same checks.
            vars.insert("CLERK_JWT_KEY".into(), signer.public_pem().to_owned());
            Some(signer)
        }
        None => None,
    };
    let config = Config::from_vars(&vars)?;

    let vercel = read_vercel_json()?;
    let app = App::new(config);
    let mut outside_api = Router::new();
    if let Some(signer) = &signer {
        outside_api = outside_api.merge(session::router(app.clone(), signer.clone()));
    }
    let static_headers = Arc::new(static_header_values(&app.config.avatar_hosts, &vercel));
    let outside_api = outside_api
        .fallback_service(ServeDir::new(&args.public_dir))
        .layer(axum::middleware::map_response(
            move |mut response: axum::response::Response| {
                let static_headers = static_headers.clone();
                async move {
                    for (name, value) in static_headers.iter() {
                        response.headers_mut().insert(name.clone(), value.clone());
                    }
                    response
                }
            },
        ));
    let service = gcbb::routes::service(app.clone(), &vercel, outside_api);

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let addr = listener.local_addr()?;
    banner::print_banner(
        &app,
        &vercel,
        &args,
        addr,
        &banner::Prepared {
            database: &target,
            applied: applied.applied.len(),
            seeded,
        },
        signer.as_deref(),
        &allowed_hosts,
    );

    let limits = ConnectionLimits {
        headers: Duration::from_millis(args.header_read_timeout_ms.max(1)),
        body: Duration::from_millis(args.body_read_timeout_ms.max(1)),
        idle: Duration::from_millis(args.idle_timeout_ms.max(1)),
        h2_keep_alive_interval: Duration::from_millis(args.h2_keep_alive_interval_ms.max(1)),
        h2_keep_alive_timeout: Duration::from_millis(args.h2_keep_alive_timeout_ms.max(1)),
        h2_max_concurrent_streams: args.h2_max_concurrent_streams.max(1),
    };
    let service = host::HostCheck::new(service, allowed_hosts);
    serve_connections(listener, service, limits, shutdown_signal()).await;
    let drain_limit = app.config.background_write_budget + SHUTDOWN_DRAIN_MARGIN;
    if !gcbb::platform::background::drain_local(drain_limit).await {
        eprintln!("background work still running after {drain_limit:?}; abandoned");
    }
    Ok(())
}

/// The headers of `public/` (a CSP limiting images to `AVATAR_HOSTS`, `nosniff`, no framing),
/// set on everything served outside `/api/`. `vercel.json` carries the same for Vercel, built
/// from the default hosts: a deployment that changes `AVATAR_HOSTS` changes it there too, and
/// gcbb dev says so when they differ.
fn static_header_values(
    hosts: &gcbb::config::AvatarHosts,
    vercel: &VercelJson,
) -> Vec<(header::HeaderName, header::HeaderValue)> {
    let csp = gcbb::platform::http::content_security_policy(hosts);
    if vercel.header_value("content-security-policy").as_deref() != Some(csp.as_str()) {
        eprintln!(
            "note: vercel.json's Content-Security-Policy is not the one AVATAR_HOSTS makes \
             ({}): on Vercel, avatars on the other hosts would not show",
            hosts.describe()
        );
    }
    gcbb::platform::http::static_file_headers(hosts)
        .into_iter()
        .filter_map(|(name, value)| {
            Some((
                header::HeaderName::from_static(name),
                header::HeaderValue::from_str(&value).ok()?,
            ))
        })
        .collect()
}

/// Compression as Vercel's edge applies it: gzip or brotli by the client's `Accept-Encoding`,
/// for responses whose length is known. A streamed body (chat replies, SSE) has none and goes
/// out as it comes: an encoder would hold its first bytes back. A request that asks for no
/// encoding skips the compression layer altogether.
fn compression() -> tower_http::compression::CompressionLayer<impl Predicate> {
    let known_length = |_: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions| {
        headers.contains_key(header::CONTENT_LENGTH)
    };
    tower_http::compression::CompressionLayer::new()
        .gzip(true)
        .br(true)
        .compress_when(
            SizeAbove::new(MIN_COMPRESSED_BYTES)
                .and(NotForContentType::IMAGES)
                .and(NotForContentType::SSE)
                .and(KnownLength(known_length)),
        )
}

/// `inner` as it is for requests without `Accept-Encoding`, through [`compression`] otherwise:
/// the compression layer costs every request it sees, and most clients of a local server (and
/// every function behind Vercel's edge) ask for nothing.
#[derive(Clone)]
struct CompressWhenAsked<S, C> {
    plain: S,
    compressed: C,
}

impl<S, C, B> tower::Service<Request> for CompressWhenAsked<S, C>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
    C: tower::Service<Request, Response = http::Response<B>, Error = Infallible>,
    C::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = futures_util::future::Either<
        S::Future,
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Infallible>> + Send>>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.headers().contains_key(header::ACCEPT_ENCODING) {
            let compressed = self.compressed.call(request);
            futures_util::future::Either::Right(Box::pin(async move {
                let Ok(response) = compressed.await;
                Ok(response.map(axum::body::Body::new))
            }))
        } else {
            futures_util::future::Either::Left(self.plain.call(request))
        }
    }
}

/// A predicate over the response head only: tower-http's predicates see the body's size hint,
/// which says "unknown" for a full body axum hasn't measured yet; the head says it for sure.
#[derive(Clone)]
struct KnownLength<F>(F);

impl<F> Predicate for KnownLength<F>
where
    F: Fn(StatusCode, Version, &HeaderMap, &Extensions) -> bool + Clone,
{
    fn should_compress<B: http_body::Body>(&self, response: &http::Response<B>) -> bool {
        response.body().size_hint().exact().is_some()
            || (self.0)(
                response.status(),
                response.version(),
                response.headers(),
                response.extensions(),
            )
    }
}

/// Bounds on how slowly a client may send a request and how long a connection may idle.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// An HTTP/1 request head, and the first request of any connection, must arrive within it.
    pub headers: Duration,
    /// Longest pause between two pieces of a request body.
    pub body: Duration,
    /// Longest time with no request in flight.
    pub idle: Duration,
    pub h2_keep_alive_interval: Duration,
    pub h2_keep_alive_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
}

/// Serves `service` (compressed when the client asks) on `listener` until `shutdown`
/// resolves, then lets open connections finish (at most [`SHUTDOWN_CONNECTIONS_LIMIT`]).
/// Unlike `axum::serve`, a connection that sends its headers or its body too slowly is closed
/// (hyper's header read timeout, and a body timeout between frames), and so is one that begins
/// no request within the header timeout or has none in flight for the idle timeout, over
/// HTTP/1 or HTTP/2 ([`connection`]), so neither half-sent requests nor silent connections
/// can pile up.
pub async fn serve_connections<S>(
    listener: tokio::net::TcpListener,
    service: S,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) where
    S: tower::Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let service = tower::ServiceBuilder::new()
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            limits.body,
        ))
        .map_request(|request: http::Request<_>| request.map(axum::body::Body::new))
        .service(CompressWhenAsked {
            compressed: compression().layer(service.clone()),
            plain: service,
        });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.h2_keep_alive_interval)
        .keep_alive_timeout(limits.h2_keep_alive_timeout)
        .max_concurrent_streams(limits.h2_max_concurrent_streams);
    let builder = Arc::new(builder);
    // Every connection's task holds a sender: once they have all ended, `recv` says so.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Without TCP_NODELAY a streamed reply's first chunk waits behind Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        // The peer's address, for rate limits (`PeerAddr`: whose X-Forwarded-For counts).
        let peer = axum::Extension(gcbb::platform::client::PeerAddr(peer.ip()));
        let activity = Arc::new(connection::Activity::default());
        let service = TowerToHyperService::new(connection::Tracked::new(
            tower::Layer::layer(&peer, service.clone()),
            activity.clone(),
        ));
        let (builder, open, mut stopping) = (builder.clone(), open.clone(), stopping.clone());
        tokio::spawn(async move {
            let _open = open;
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            let idle = tokio::select! {
                _ = conn.as_mut() => return,
                _ = activity.idle_too_long(limits.headers, limits.idle) => true,
                _ = stopping.wait_for(|stop| *stop) => false,
            };
            // HTTP/2 gets a GOAWAY, HTTP/1 is closed once its request (if any) is answered.
            conn.as_mut().graceful_shutdown();
            if idle {
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = activity.idle_too_long(IDLE_CLOSE_GRACE, IDLE_CLOSE_GRACE) => {}
                }
            } else {
                let _ = conn.await;
            }
        });
    }
    drop(listener);
    drop(open);
    let _ = stop.send(true);
    tokio::select! {
        _ = all_closed.recv() => {}
        _ = tokio::time::sleep(SHUTDOWN_CONNECTIONS_LIMIT) => {}
    }
}

/// The environment with dev defaults: a local database when `DATABASE_URL` is unset.
fn dev_vars() -> std::collections::HashMap<String, String> {
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    vars.entry("DATABASE_URL".into())
        .or_insert_with(|| DEFAULT_DEV_DATABASE_URL.into());
    // Without a key or a model server, gcbb dev answers with the offline scripted model.
    if ["OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_PROVIDER"]
        .iter()
        .all(|k| vars.get(*k).is_none_or(|v| v.trim().is_empty()))
    {
        vars.insert("LLM_PROVIDER".into(), "scripted".into());
    }
    vars
}

/// `vercel.json` from the working directory, else the copy built into the binary.
fn read_vercel_json() -> anyhow::Result<VercelJson> {
    match std::fs::read_to_string("vercel.json") {
        Ok(text) => Ok(serde_json::from_str(&text)?),
        Err(_) => Ok(VercelJson::embedded()),
    }
}

async fn create_database_if_missing(target: &DbConfig) -> anyhow::Result<()> {
    let name = target.dbname();
    anyhow::ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "database name `{name}` must be letters, digits, `_` or `-` for gcbb dev to create it"
    );
    let admin = db::connect(&target.with_dbname("postgres")).await?;
    let exists = admin
        .query_typed(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[(&name, tokio_postgres::types::Type::TEXT)],
        )
        .await?;
    if exists.is_empty() {
        // CREATE DATABASE takes no parameters; the name was checked above and is quoted.
        let sql = format!("CREATE DATABASE \"{name}\"");
        match admin.batch_execute(&sql).await {
            Ok(()) => tracing::info!(database = name, "created database"),
            // Another process created it between our check and now.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = ctrl_c => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
