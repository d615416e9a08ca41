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
//!   process: router, client and model server together, so an upper bound for the router);
//!   run with the reply journal off and on (`CHAT_RESUME_STREAMS`, `--resume`), each with a
//!   fresh router: the streams' first bytes, the time until all ended, this process's CPU time,
//!   and, when the cache is Redis, the commands it served and its memory while they were open.
//!
//! Signed-in requests need session tokens: the bench signs them with a throwaway key pair that
//! exists only for this purpose, and configures the router with its public half.
//!
//! The bench database is left as it was found: the bench chats with a public companion of the
//! seeded data (nothing is created, so no companion becomes the newest and no category is
//! added), as a user of its own that the seed never makes; afterwards every message and token
//! row of that user is deleted and the companion's token total restored. The row counts and
//! token totals are compared before and after, and a difference fails the run.

mod scratch;
mod streams;

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
pub use scratch::Fingerprint;
use scratch::{pick_companion, remove_scratch};
use streams::{hold_streams, resume_and_stop, RESUME_SAMPLES};

/// The user the bench chats as: no seed or demo data has it, so whatever it stored is the
/// bench's own, and is removed afterwards.
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
    /// The held streams with the reply journal off, on, or both (off first).
    #[arg(long, value_enum, default_value_t = Resume::Both)]
    pub resume: Resume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Resume {
    Off,
    On,
    Both,
}

/// Resume and stop, timed: a resume GET to its first replayed byte, and a stop POST to the
/// moment the model server sees the producer's connection closed.
#[derive(Debug, Serialize)]
pub struct ResumeFigures {
    pub resume_first_byte: Summary,
    pub stop_to_model_closed: Summary,
}

/// What N streams held open at once cost, with the reply journal on or off.
#[derive(Debug, Serialize)]
pub struct HeldStreams {
    pub resume: bool,
    pub streams: usize,
    pub ok: usize,
    pub errors: usize,
    pub first_byte: Summary,
    /// From the first request to the last stream's end.
    pub all_ended_ms: f64,
    /// This process's user + system CPU time over the run.
    pub cpu_ms: f64,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub rss_per_stream_kib: f64,
    /// Commands Redis served during the run (the whole server's: others' traffic included).
    pub redis_commands: Option<u64>,
    /// Redis's `used_memory` with the streams open, less before them.
    pub redis_memory_open_kib: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct ChatReport {
    pub model_ttft_ms: u64,
    pub model_first_byte: Summary,
    pub anonymous_cached_first_byte: Summary,
    pub signed_in_first_byte: Summary,
    pub signed_in_added_p50_ms: f64,
    pub signed_in_added_p95_ms: f64,
    /// A reply in flight resumed, then stopped, on the instance producing it.
    pub resume_here: ResumeFigures,
    /// The same from a second instance sharing the cache (none with the memory cache, whose
    /// journal no other instance sees).
    pub resume_elsewhere: Option<ResumeFigures>,
    pub held: Vec<HeldStreams>,
    pub cache: &'static str,
    /// The seeded companion the bench chatted with.
    pub companion_id: String,
    /// Rows the bench stored and removed again (messages and token rows).
    pub scratch_rows_removed: u64,
    /// Row counts and token totals were the same after the run as before it.
    pub database_left_as_found: bool,
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
    let resumed = |label: &str, f: &ResumeFigures| {
        println!(
            "  {label:<34} resume → first replayed byte p50 {:>6.2} ms p95 {:>6.2} ms; stop → model connection closed p50 {:>6.2} ms p95 {:>6.2} ms (n={})",
            f.resume_first_byte.p50_ms,
            f.resume_first_byte.p95_ms,
            f.stop_to_model_closed.p50_ms,
            f.stop_to_model_closed.p95_ms,
            f.resume_first_byte.n
        )
    };
    resumed("resume and stop, same instance:", &r.resume_here);
    match &r.resume_elsewhere {
        Some(f) => resumed("resume and stop, another instance:", f),
        None => println!("  resume and stop, another instance: not measured (the memory cache is this process's)"),
    }
    for h in &r.held {
        println!(
            "  {} concurrent streams, resume {}: {} ok, {} errors; first byte p50 {:.2} ms p95 {:.2} ms; all ended in {:.0} ms; CPU {:.0} ms; RSS {} KiB → {} KiB, {:.1} KiB per stream",
            h.streams,
            if h.resume { "on " } else { "off" },
            h.ok,
            h.errors,
            h.first_byte.p50_ms,
            h.first_byte.p95_ms,
            h.all_ended_ms,
            h.cpu_ms,
            h.rss_before_kib,
            h.rss_open_kib,
            h.rss_per_stream_kib
        );
        if let (Some(commands), Some(memory)) = (h.redis_commands, h.redis_memory_open_kib) {
            println!(
                "    Redis: {commands} commands ({:.1} per stream), used_memory {memory:+} KiB with the streams open ({:.2} KiB per stream)",
                commands as f64 / h.streams.max(1) as f64,
                memory as f64 / h.streams.max(1) as f64
            );
        }
    }
    println!(
        "  chatted with {} as {BENCH_USER}; {} scratch rows removed; database left as found: {}",
        r.companion_id,
        r.scratch_rows_removed,
        if r.database_left_as_found {
            "yes"
        } else {
            "NO"
        }
    );
}

/// A session token for the bench user, signed with this run's key.
fn session_token(key: &SigningKey) -> anyhow::Result<String> {
    Ok(key.sign(None, &session_token::clerk_claims(BENCH_USER, None, 3600)))
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
    let db = super::bench_database()?;
    let client = gcbb::db::connect(&db).await?;
    let (companion_id, tokens_before) = pick_companion(&client).await?;
    // Leftovers of an interrupted run go first, so "as found" means as found before it.
    remove_scratch(&client, &companion_id, tokens_before).await?;
    let before = Fingerprint::read(&client).await?;
    let measured = measure_on(args, &companion_id).await;
    // Whatever happened, the reply writes handed to `wait_until` finish, then everything the
    // bench stored goes.
    gcbb::platform::background::drain_local(Duration::from_secs(30)).await;
    let removed = remove_scratch(&client, &companion_id, tokens_before).await?;
    let after = Fingerprint::read(&client).await?;
    let differences = before.differences(&after);
    let mut report = measured?;
    report.scratch_rows_removed = removed;
    report.database_left_as_found = differences.is_empty();
    anyhow::ensure!(
        differences.is_empty(),
        "gcbb bench chat left the database changed: {}",
        differences.join(", ")
    );
    Ok(report)
}

async fn measure_on(args: &ChatArgs, companion_id: &str) -> anyhow::Result<ChatReport> {
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
    // Cached replies go under a key prefix of this run's own, cleared at the end.
    let prefix = format!("gcbb-bench-chat-{:08x}", rand::random::<u32>());
    vars.insert("CACHE_KEY_PREFIX".into(), prefix.clone());
    let config = Config::from_vars(&vars)?;
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
    let url = format!("http://{addr}/api/chat/{companion_id}");
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

    // Resume and stop, signed-in, on this instance, then (with a shared cache) on a second one.
    let samples = args.requests.min(RESUME_SAMPLES);
    model.set_script(Script {
        time_to_first_token: Duration::ZERO,
        chunks: vec!["tick ".into(); 400],
        chunk_gap: Duration::from_millis(10),
        ..Script::default()
    });
    let resume_here = resume_and_stop(&http, &url, &url, &token, &model, samples).await?;
    let resume_elsewhere = if cache == "memory" {
        None
    } else {
        let other_app: Arc<App> = App::new(Config::from_vars(&vars)?);
        let router = gcbb::routes::router(
            other_app,
            &gcbb::routes::VercelJson::embedded(),
            axum::Router::new(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let other = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let other_url = format!("http://{addr}/api/chat/{companion_id}");
        let figures = resume_and_stop(&http, &url, &other_url, &token, &model, samples).await;
        other.abort();
        Some(figures?)
    };

    // N streams held open: a long, slow reply; count each once its first byte arrived. With
    // the journal off, then on, each on a router of its own.
    model.set_script(Script {
        time_to_first_token: Duration::ZERO,
        chunks: vec!["tick ".into(); 40],
        chunk_gap: Duration::from_millis(250),
        ..Script::default()
    });
    let redis_url = match &app.config.cache {
        gcbb::config::CacheBackend::Redis { url } => Some(url.clone()),
        _ => None,
    };
    let modes: &[bool] = match args.resume {
        Resume::Off => &[false],
        Resume::On => &[true],
        Resume::Both => &[false, true],
    };
    let mut held = Vec::new();
    for &resume in modes {
        let mut vars = vars.clone();
        vars.insert("CHAT_RESUME_STREAMS".into(), resume.to_string());
        let app: Arc<App> = App::new(Config::from_vars(&vars)?);
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
        let url = format!("http://{addr}/api/chat/{companion_id}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        held.push(hold_streams(args.streams, &http, &url, resume, redis_url.as_deref()).await);
        // The replies' writes (the journal's last records, the cached replies) finish first.
        gcbb::platform::background::drain_local(Duration::from_secs(30)).await;
        server.abort();
    }
    server.abort();
    let _ = app.cache.clear_pattern(&format!("{prefix}:*")).await;

    let model_first_byte = Summary::of(&mut model_samples);
    let signed_in_first_byte = Summary::of(&mut signed_samples);
    Ok(ChatReport {
        model_ttft_ms: args.ttft_ms,
        model_first_byte,
        anonymous_cached_first_byte: Summary::of(&mut anon_samples),
        signed_in_added_p50_ms: signed_in_first_byte.p50_ms - model_first_byte.p50_ms,
        signed_in_added_p95_ms: signed_in_first_byte.p95_ms - model_first_byte.p95_ms,
        signed_in_first_byte,
        resume_here,
        resume_elsewhere,
        held,
        cache,
        companion_id: companion_id.to_owned(),
        scratch_rows_removed: 0,
        database_left_as_found: false,
    })
}
