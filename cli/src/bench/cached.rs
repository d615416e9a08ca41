//! `gcbb bench cached`: the cached anonymous dashboard page through the whole router (the one
//! `gcbb dev` serves and each function wraps: request span, JSON errors, `vercel.json`'s
//! rewrites), in this process, one request after another. Nothing but the router runs, so a
//! profiler sees only what a cached request costs:
//!
//! ```sh
//! valgrind --tool=callgrind gcbb bench cached --requests 20000 2>/dev/null
//! ```
//!
//! Instructions per request are the difference of two such runs (say 2 000 and 22 000
//! requests) divided by the difference in requests, which takes start-up and the warm-up out.

use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use serde::Serialize;
use tower::ServiceExt;

use gcbb::config::Config;
use gcbb::platform::app::App;
use gcbb::routes::VercelJson;

#[derive(Debug, clap::Args)]
pub struct CachedArgs {
    /// Requests after the warm-up.
    #[arg(long, default_value_t = 100_000)]
    pub requests: usize,
    /// What is asked for (a page that is cached after the first request).
    #[arg(long, default_value = "/api/dashboard/prefetch")]
    pub path: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub path: String,
    pub requests: usize,
    pub cache: String,
    pub body_bytes: usize,
    pub seconds: f64,
    pub micros_per_request: f64,
}

pub async fn run(args: &CachedArgs, json: bool) -> anyhow::Result<()> {
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    let db = super::bench_database()?;
    vars.insert(
        "DATABASE_URL".into(),
        gcbb::config::DEFAULT_DEV_DATABASE_URL.into(),
    );
    // The in-process memory cache: a cached page never leaves the process.
    for v in ["UPSTASH_REDIS_REST_URL", "KV_REST_API_URL", "REDIS_URL"] {
        vars.remove(v);
    }
    let mut config = Config::from_vars(&vars)?;
    config.database = db;
    let app = App::new(config);
    let router = gcbb::routes::router(app, &VercelJson::embedded(), axum::Router::new());
    let request = || {
        Request::get(args.path.as_str())
            .body(Body::empty())
            .expect("a valid path")
    };
    let warm = router.clone().oneshot(request()).await?;
    anyhow::ensure!(
        warm.status().is_success(),
        "{} answered {}",
        args.path,
        warm.status()
    );
    axum::body::to_bytes(warm.into_body(), usize::MAX).await?;
    let mut cache = String::new();
    let mut body_bytes = 0;
    let started = Instant::now();
    for _ in 0..args.requests {
        let resp = router.clone().oneshot(request()).await?;
        cache = resp
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
        body_bytes = body.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    let report = Report {
        path: args.path.clone(),
        requests: args.requests,
        cache,
        body_bytes,
        seconds,
        micros_per_request: seconds * 1e6 / args.requests.max(1) as f64,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "gcbb bench cached — {} ×{} through the whole router in process: {:.2} µs per request \
             (X-Cache: {}, {} B body)",
            report.path,
            report.requests,
            report.micros_per_request,
            report.cache,
            report.body_bytes
        );
    }
    Ok(())
}
