//! `gcbb bench chat`: what our chat path adds to the model's time to first token, and how many
//! streams one process holds open.
//!
//! Everything runs in this process: a local OpenAI-compatible server with a fixed time to first
//! token, the full router (`routes::router`, as `gcbb dev` serves it) on a loopback port, and
//! the client. Measured:
//! - anonymous, cached reply: time to first byte (the model is not involved);
//! - signed-in: time to first byte minus the model's own time to first byte, both measured
//!   (rate-limit check, auth, companion lookup, the prompt's insert and the context query
//!   included);
//! - N concurrent streams held open with no error, and RSS growth per open stream (this
//!   process: router, client and model server together, so an upper bound for the router).
//!
//! Signed-in requests need session tokens: the bench signs them with a throwaway key pair that
//! exists only for this purpose (`src/bench/keys/`), and configures the router with its public
//! half.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use serde::Serialize;

use super::stats::Summary;
use crate::model_server::{LocalModelServer, Script};
use crate::session_token::{self, SigningKey};
use gcbb::config::Config;
use gcbb::platform::app::App;

const COMPANION_ID: &str = "bench_chat_companion";
const BENCH_USER: &str = "user_bench_chat";

#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Requests per measured path.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Concurrent streams held open at once.
    #[arg(long, default_value_t = 500)]
    pub streams: usize,
    /// The local model's time to first token, in ms.
    #[arg(long, default_value_t = 50)]
    pub ttft_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct ChatReport {
    pub model_ttft_ms: u64,
    pub model_first_byte: Summary,
    pub anonymous_cached_first_byte: Summary,
    pub signed_in_first_byte: Summary,
    pub signed_in_added_p50_ms: f64,
    pub signed_in_added_p95_ms: f64,
    pub streams: usize,
    pub streams_ok: usize,
    pub stream_errors: usize,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub rss_per_stream_kib: f64,
    pub cache: &'static str,
}

pub async fn run(args: &ChatArgs, json: bool) -> anyhow::Result<()> {
    let report = measure(args).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(r: &ChatReport) {
    println!(
        "gcbb bench chat (model time to first token {} ms, cache {})",
        r.model_ttft_ms, r.cache
    );
    let row = |name: &str, s: &Summary| {
        println!(
            "  {name:<34} n={:<5} p50 {:>8.2} ms  p95 {:>8.2} ms",
            s.n, s.p50_ms, s.p95_ms
        )
    };
    row("model alone: first byte", &r.model_first_byte);
    row(
        "anonymous cached: first byte",
        &r.anonymous_cached_first_byte,
    );
    row("signed-in: first byte", &r.signed_in_first_byte);
    println!(
        "  {:<34} p50 {:>8.2} ms  p95 {:>8.2} ms",
        "signed-in: added to the model", r.signed_in_added_p50_ms, r.signed_in_added_p95_ms
    );
    println!(
        "  concurrent streams: {} open, {} ok, {} errors; RSS {} KiB → {} KiB, {:.1} KiB per stream",
        r.streams, r.streams_ok, r.stream_errors, r.rss_before_kib, r.rss_open_kib, r.rss_per_stream_kib
    );
}

/// A session token for the bench user, signed with this run's key.
fn session_token(key: &SigningKey) -> anyhow::Result<String> {
    Ok(key.sign(None, &session_token::clerk_claims(BENCH_USER, None, 3600)))
}

/// Our resident set size, from /proc/self/status.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn prepare_database(config: &Config) -> anyhow::Result<()> {
    let db = config.migration_database();
    crate::migrate::deploy(
        db,
        std::path::Path::new(gcbb::config::DEFAULT_MIGRATIONS_DIR),
    )
    .await
    .context("deploying migrations to the bench database")?;
    let client = gcbb::db::connect(db).await?;
    client
        .batch_execute(&format!(
            "INSERT INTO \"Category\" (\"id\", \"name\") VALUES ('bench_chat', 'Bench') ON CONFLICT DO NOTHING;
             INSERT INTO \"Companion\" (\"id\", \"userId\", \"userName\", \"src\", \"name\", \"instructions\",
                                        \"updatedAt\", \"categoryId\")
             VALUES ('{COMPANION_ID}', 'system', 'bench', '/b.png', 'Bench', 'You answer benchmarks.', now(), 'bench_chat')
             ON CONFLICT DO NOTHING;
             DELETE FROM \"Message\" WHERE \"companionId\" = '{COMPANION_ID}';"
        ))
        .await?;
    Ok(())
}

/// Time from sending the request to the first byte of the body, and whether it ended well.
async fn first_byte(req: reqwest::RequestBuilder) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let resp = req.send().await?;
    anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
    let mut body = resp.bytes_stream();
    let first = body.next().await.context("empty body")??;
    let at = started.elapsed();
    anyhow::ensure!(!first.is_empty(), "empty first chunk");
    while let Some(chunk) = body.next().await {
        chunk?;
    }
    Ok(at)
}

async fn measure(args: &ChatArgs) -> anyhow::Result<ChatReport> {
    // A key pair made for this run only: the bench signs its own session tokens.
    let key = SigningKey::generate()?;
    let ttft = Duration::from_millis(args.ttft_ms);
    let model = LocalModelServer::start(Script {
        time_to_first_token: ttft,
        ..Script::default()
    })
    .await?;
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    // The bench database (as `bench_database` picks it) serves the router too.
    let db_url = ["DATABASE_URL_UNPOOLED", "DIRECT_URL", "DATABASE_URL"]
        .iter()
        .find_map(|v| vars.get(*v).filter(|s| !s.is_empty()).cloned())
        .unwrap_or_else(|| gcbb::config::DEFAULT_DEV_DATABASE_URL.to_owned());
    vars.insert("DATABASE_URL".into(), db_url);
    for (k, v) in [
        ("OPENAI_BASE_URL", model.base_url()),
        ("OPENAI_API_KEY", "sk-bench".to_owned()),
        ("LLM_PROVIDER", "openai".to_owned()),
        ("CLERK_JWT_KEY", key.public_pem.clone()),
        ("RATE_LIMIT_USER_REQUESTS", "100000000".to_owned()),
        ("RATE_LIMIT_ANON_REQUESTS", "100000000".to_owned()),
        ("DB_POOL_SIZE", "8".to_owned()),
    ] {
        vars.insert(k.into(), v);
    }
    vars.remove("CLERK_JWKS_URL");
    vars.remove("CLERK_ISSUER");
    vars.remove("CLERK_AUTHORIZED_PARTIES");
    vars.remove("VERCEL_ENV");
    let config = Config::from_vars(&vars)?;
    prepare_database(&config).await?;
    let app: Arc<App> = App::new(config);
    let cache = app.cache.backend_name();
    let router = gcbb::routes::router(
        app.clone(),
        &gcbb::routes::VercelJson::embedded(),
        axum::Router::new(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let url = format!("http://{addr}/api/chat/{COMPANION_ID}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.streams + 16)
        .build()?;
    let token = session_token(&key)?;

    // The model alone.
    let mut model_samples = Vec::with_capacity(args.requests);
    let model_url = format!("{}/chat/completions", model.base_url());
    for _ in 0..args.requests {
        let req = http
            .post(&model_url)
            .json(&serde_json::json!({"model": "m", "messages": [], "stream": true}));
        model_samples.push(first_byte(req).await?);
    }

    // Anonymous, cached reply (warm the cache first).
    let anon = || {
        http.post(&url)
            .json(&serde_json::json!({"prompt": "cached question"}))
    };
    first_byte(anon()).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut anon_samples = Vec::with_capacity(args.requests);
    for _ in 0..args.requests {
        anon_samples.push(first_byte(anon()).await?);
    }

    // Signed-in.
    let mut signed_samples = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let req = http
            .post(&url)
            .bearer_auth(&token)
            .json(&serde_json::json!({"prompt": format!("question {i}")}));
        signed_samples.push(first_byte(req).await?);
    }

    // N streams held open: a long, slow reply; count each once its first byte arrived.
    model.set_script(Script {
        time_to_first_token: Duration::ZERO,
        chunks: vec!["tick ".into(); 40],
        chunk_gap: Duration::from_millis(250),
        ..Script::default()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_kib();
    let opened = Arc::new(tokio::sync::Barrier::new(args.streams + 1));
    let mut tasks = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let req = http
            .post(&url)
            .json(&serde_json::json!({"prompt": format!("stream {i}")}));
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = async {
                let resp = req.send().await?;
                anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
                let mut body = resp.bytes_stream();
                body.next().await.context("empty body")??;
                Ok(body)
            }
            .await;
            opened.wait().await;
            let mut body = outcome?;
            while let Some(chunk) = body.next().await {
                chunk?;
            }
            anyhow::Ok(())
        }));
    }
    opened.wait().await;
    let rss_open = rss_kib();
    let mut ok = 0;
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                errors += 1;
                tracing::warn!(error = %e, "bench stream failed");
            }
            Err(_) => errors += 1,
        }
    }
    server.abort();

    let model_first_byte = Summary::of(&mut model_samples);
    let signed_in_first_byte = Summary::of(&mut signed_samples);
    Ok(ChatReport {
        model_ttft_ms: args.ttft_ms,
        model_first_byte,
        anonymous_cached_first_byte: Summary::of(&mut anon_samples),
        signed_in_added_p50_ms: signed_in_first_byte.p50_ms - model_first_byte.p50_ms,
        signed_in_added_p95_ms: signed_in_first_byte.p95_ms - model_first_byte.p95_ms,
        signed_in_first_byte,
        streams: args.streams,
        streams_ok: ok,
        stream_errors: errors,
        rss_before_kib: rss_before,
        rss_open_kib: rss_open,
        rss_per_stream_kib: rss_open.saturating_sub(rss_before) as f64 / args.streams.max(1) as f64,
        cache,
    })
}
