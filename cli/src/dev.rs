//! `gcbb dev`: one local server for every route of `vercel.json` plus `public/`, on a database
//! it creates, migrates and seeds with demo data when empty. Responses are compressed (gzip or
//! brotli) when the client asks, as Vercel's edge does in front of the functions.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Extensions, HeaderMap, StatusCode, Version};
use axum::Router;
use tower::ServiceExt;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::services::ServeDir;

use gcbb::config::{ClerkKey, Config, DEFAULT_DEV_DATABASE_URL, DEFAULT_MIGRATIONS_DIR};
use gcbb::db::{self, DbConfig};
use gcbb::platform::app::App;
use gcbb::routes::{VercelJson, FUNCTIONS};

/// How long shutdown waits for background work (`wait_until`) of finished requests.
pub const SHUTDOWN_DRAIN_LIMIT: Duration = Duration::from_secs(30);

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
    /// Also serve `/__bench/bare` (for `gcbb bench http --anchor`): the anonymous dashboard
    /// page's bytes and headers, copied once at start, through the same router and layers but
    /// with no work per request. Never part of a function.
    #[arg(long)]
    pub bench_anchor: bool,
}

/// The path of the bench anchor (`--bench-anchor`).
pub const BENCH_ANCHOR_PATH: &str = "/__bench/bare";

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
    let config = dev_config()?;
    let target = config.migration_database().clone();

    create_database_if_missing(&target).await?;
    let applied = crate::migrate::deploy(&target, &args.migrations_dir).await?;
    let seeded = if args.no_seed {
        false
    } else {
        let client = db::connect(&target).await?;
        crate::demo::insert_demo_data_if_empty(&client, &config.system_user_id).await?
    };

    let vercel = read_vercel_json()?;
    let app = App::new(config);
    let mut statics = Router::new().fallback_service(ServeDir::new(&args.public_dir));
    if args.bench_anchor {
        statics = statics.merge(bench_anchor(&app).await?);
    }
    let router = gcbb::routes::router(app.clone(), &vercel, statics).layer(compression());

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let addr = listener.local_addr()?;
    print_banner(&app, &vercel, &args, addr, applied.applied.len(), seeded);

    // Without TCP_NODELAY a streamed reply's first chunk waits behind Nagle's algorithm.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    if !gcbb::platform::background::drain_local(SHUTDOWN_DRAIN_LIMIT).await {
        eprintln!("background work still running after {SHUTDOWN_DRAIN_LIMIT:?}; abandoned");
    }
    Ok(())
}

/// Compression as Vercel's edge applies it: gzip or brotli by the client's `Accept-Encoding`,
/// for responses whose length is known. A streamed body (chat replies, SSE) has none and goes
/// out as it comes: an encoder would hold its first bytes back.
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

/// `/__bench/bare`: what the anonymous dashboard page answers (asked twice in process, so its
/// `X-Cache` is the warm one), served as it is on every request.
async fn bench_anchor(app: &Arc<App>) -> anyhow::Result<Router> {
    let page = || async {
        let request =
            http::Request::get("/api/dashboard/prefetch").body(axum::body::Body::empty())?;
        let Ok(response) = gcbb::dashboard::router(app.clone()).oneshot(request).await;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "the dashboard answered {} for the bench anchor",
            response.status()
        );
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await?;
        Ok::<_, anyhow::Error>((parts.headers, body))
    };
    page().await?;
    let (headers, body) = page().await?;
    Ok(Router::new().route(
        BENCH_ANCHOR_PATH,
        axum::routing::get(move || {
            let (headers, body) = (headers.clone(), body.clone());
            async move { (headers, body) }
        }),
    ))
}

/// The environment with dev defaults: a local database when `DATABASE_URL` is unset.
fn dev_config() -> anyhow::Result<Config> {
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
    Ok(Config::from_vars(&vars)?)
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

fn print_banner(
    app: &Arc<App>,
    vercel: &VercelJson,
    args: &DevArgs,
    addr: std::net::SocketAddr,
    applied: usize,
    seeded: bool,
) {
    let c = &app.config;
    let auth = match &c.clerk.key {
        Some(ClerkKey::Pem(_)) => "Clerk (CLERK_JWT_KEY)",
        Some(ClerkKey::JwksUrl(_)) => "Clerk (CLERK_JWKS_URL)",
        None => "none: every request is anonymous",
    };
    println!("gcbb dev");
    println!("  database    {}", c.migration_database().redacted());
    println!("  migrations  {applied} applied now");
    println!(
        "  demo data   {}",
        if seeded { "inserted" } else { "unchanged" }
    );
    println!("  cache       {}", c.cache.name());
    println!(
        "  cdn purge   {}",
        match &c.cdn {
            Some(cdn) => format!("on (project {})", cdn.project),
            None => "off: VERCEL_TOKEN unset".to_owned(),
        }
    );
    println!("  auth        {auth}");
    println!(
        "  cron        {}",
        if c.cron_secret.is_some() {
            "CRON_SECRET set"
        } else {
            "CRON_SECRET unset: /api/cron/refresh refuses every call"
        }
    );
    println!("  static      {}/", args.public_dir.display());
    println!("routes");
    for r in &vercel.rewrites {
        println!(
            "  {:<36} → api{}.rs",
            r.source,
            r.destination.trim_start_matches("/api")
        );
    }
    for f in FUNCTIONS {
        println!("  /api/{:<31} → api/{}.rs", f.name, f.name);
    }
    println!("listening on http://{addr}");
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
