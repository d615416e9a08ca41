//! `gcbb bench dashboard`: the seed's "before" against the optimized dashboard, in one run on
//! the same data: cold (read model), Redis-warm (native and Upstash REST through a real
//! `gcbb upstash-proxy`), memory-warm, and signed-in cold.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use serde::Serialize;
use tower::ServiceExt;

use super::stats::{human_bytes, Payload, Summary};
use gcbb::cache::Cache;
use gcbb::config::{CacheBackend, Config};
use gcbb::dashboard::{self, DashboardParams};
use gcbb::platform::app::App;

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Samples of the "before" query (each takes seconds at bench scale).
    #[arg(long, default_value_t = 5)]
    pub before_samples: usize,
    /// Samples of each cold path.
    #[arg(long, default_value_t = 300)]
    pub cold_samples: usize,
    /// Samples of each warm path.
    #[arg(long, default_value_t = 3000)]
    pub warm_samples: usize,
    /// Native Redis for the Redis-warm figures.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub companions_public: i64,
    pub before: Row,
    pub cold_read_model: Row,
    pub redis_warm_native: Row,
    pub redis_warm_upstash: Row,
    pub memory_warm: Row,
    pub signed_in_cold: Row,
    pub before_over_cold_p50: f64,
    pub before_payload_over_optimized: f64,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub latency: Summary,
    pub payload: Payload,
}

pub async fn run(args: &DashboardArgs, json: bool) -> anyhow::Result<()> {
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    let db = super::bench_database()?;
    // Any valid URL: the database is set from the bench's own below.
    vars.insert(
        "DATABASE_URL".into(),
        gcbb::config::DEFAULT_DEV_DATABASE_URL.into(),
    );
    for v in ["UPSTASH_REDIS_REST_URL", "KV_REST_API_URL", "REDIS_URL"] {
        vars.remove(v);
    }
    let prefix = format!("gcbb-bench-{:08x}", rand::random::<u32>());
    vars.insert("CACHE_KEY_PREFIX".into(), prefix.clone());
    let mut base = Config::from_vars(&vars)?;
    base.database = db.clone();
    let default_page = DashboardParams {
        category_id: None,
        q: None,
        page: 1,
        page_size: dashboard::params::DEFAULT_PAGE_SIZE,
    };

    // Before: the seed's original query shape, no cache.
    let memory_app = App::new(base.clone());
    let (before, companions_public) = measure_before(&memory_app, args.before_samples).await?;

    // Cold: the read model, every sample a build.
    let mut samples = Vec::with_capacity(args.cold_samples);
    let mut body = None;
    for _ in 0..args.cold_samples {
        let t = Instant::now();
        let page = dashboard::build_anonymous_page(&memory_app, &default_page, &Default::default())
            .await?;
        samples.push(t.elapsed());
        body = Some(page.json);
    }
    let optimized_payload = Payload::of(body.as_deref().unwrap_or_default());
    let cold = Row {
        latency: Summary::of(&mut samples),
        payload: optimized_payload,
    };

    // Signed-in cold: a different viewer every sample.
    let mut samples = Vec::with_capacity(args.cold_samples);
    let mut body = None;
    for i in 0..args.cold_samples {
        let user = crate::bench::seed::user_id(i % 2_000);
        let t = Instant::now();
        let page =
            dashboard::build_viewer_page(&memory_app, &default_page, &user, &Default::default())
                .await?;
        samples.push(t.elapsed());
        body = Some(page.json);
    }
    let signed_in = Row {
        latency: Summary::of(&mut samples),
        payload: Payload::of(body.as_deref().unwrap_or_default()),
    };

    // Warm paths: the whole handler (auth, parameters, cache, headers) in process.
    let memory_warm = measure_handler(memory_app.clone(), args.warm_samples).await?;

    let mut redis_config = base.clone();
    redis_config.cache = CacheBackend::Redis {
        url: args.redis.clone(),
    };
    let redis_app = app_without_l1(redis_config);
    let redis_warm = measure_handler(redis_app.clone(), args.warm_samples).await?;
    let _ = redis_app.cache.clear_pattern(&format!("{prefix}:*")).await;

    let proxy = UpstashProxy::start(&args.redis).await?;
    let mut upstash_config = base.clone();
    upstash_config.cache = CacheBackend::Upstash {
        url: proxy.url.clone(),
        token: gcbb::config::Secret::new(proxy.token.clone()),
    };
    let upstash_app = app_without_l1(upstash_config);
    let upstash_warm = measure_handler(upstash_app.clone(), args.warm_samples).await?;
    let _ = upstash_app
        .cache
        .clear_pattern(&format!("{prefix}:*"))
        .await;
    drop(proxy);

    let report = Report {
        companions_public,
        before_over_cold_p50: before.latency.p50_ms / cold.latency.p50_ms,
        before_payload_over_optimized: before.payload.raw_bytes as f64
            / cold.payload.raw_bytes.max(1) as f64,
        before,
        cold_read_model: cold,
        redis_warm_native: redis_warm,
        redis_warm_upstash: upstash_warm,
        memory_warm,
        signed_in_cold: signed_in,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report, &db.redacted());
    }
    Ok(())
}

/// The App used by a warm Redis measurement: no L1, so every request reaches Redis.
fn app_without_l1(config: Config) -> Arc<App> {
    App::with_cache(config, |cache: Cache| cache.without_l1())
}

async fn measure_before(app: &App, samples: usize) -> anyhow::Result<(Row, i64)> {
    let mut times = Vec::with_capacity(samples);
    let mut payload = Vec::new();
    let mut count = 0;
    for _ in 0..samples.max(1) {
        let t = Instant::now();
        let client = app.db.get().await?;
        let (companions, total) =
            gcbb::db::companions::list_public_companions_unoptimized(&client).await?;
        let categories = gcbb::db::categories::list_categories(&client).await?;
        payload = serde_json::to_vec(&serde_json::json!({
            "categories": categories,
            "companions": companions,
            "total": total,
        }))?;
        times.push(t.elapsed());
        count = total;
    }
    Ok((
        Row {
            latency: Summary::of(&mut times),
            payload: Payload::of(&payload),
        },
        count,
    ))
}

/// Times the dashboard handler through its router, after one warm-up request.
async fn measure_handler(app: Arc<App>, samples: usize) -> anyhow::Result<Row> {
    let router = dashboard::router(app);
    let request = || {
        Request::get("/api/dashboard/prefetch")
            .body(Body::empty())
            .expect("a static request")
    };
    let warm = router.clone().oneshot(request()).await?;
    let body = axum::body::to_bytes(warm.into_body(), usize::MAX).await?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let resp = router.clone().oneshot(request()).await?;
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
        times.push(t.elapsed());
        std::hint::black_box(bytes);
    }
    Ok(Row {
        latency: Summary::of(&mut times),
        payload: Payload::of(&body),
    })
}

/// A `gcbb upstash-proxy` child process in front of the bench's Redis.
struct UpstashProxy {
    child: Child,
    url: String,
    token: String,
}

impl UpstashProxy {
    async fn start(redis: &str) -> anyhow::Result<UpstashProxy> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let token = format!("{:032x}", rand::random::<u128>());
        let child = Command::new(std::env::current_exe()?)
            .args([
                "upstash-proxy",
                "--redis",
                redis,
                "--token",
                &token,
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "gcbb upstash-proxy did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(UpstashProxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
            token,
        })
    }
}

impl Drop for UpstashProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn print_table(r: &Report, database: &str) {
    println!(
        "gcbb bench dashboard — {database}, {} public companions",
        r.companions_public
    );
    println!(
        "{:<34} {:>6} {:>10} {:>10} {:>10} {:>11} {:>10}",
        "path", "n", "p50 ms", "p95 ms", "p99 ms", "payload", "gzip"
    );
    for (name, row) in [
        ("before (seed: all columns, counts)", &r.before),
        ("cold: read model", &r.cold_read_model),
        ("warm: Redis (native)", &r.redis_warm_native),
        ("warm: Upstash REST via proxy", &r.redis_warm_upstash),
        ("warm: memory", &r.memory_warm),
        ("signed-in cold", &r.signed_in_cold),
    ] {
        println!(
            "{:<34} {:>6} {:>10.3} {:>10.3} {:>10.3} {:>11} {:>10}",
            name,
            row.latency.n,
            row.latency.p50_ms,
            row.latency.p95_ms,
            row.latency.p99_ms,
            human_bytes(row.payload.raw_bytes),
            human_bytes(row.payload.gzip_bytes)
        );
    }
    println!(
        "before / cold p50: {:.0}×   before / optimized payload: {:.0}×",
        r.before_over_cold_p50, r.before_payload_over_optimized
    );
}
