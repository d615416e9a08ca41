//! `gcbb bench dashboard`: the seed's "before" against the optimized dashboard, in one run on
//! the same data: cold (read model), searches missing every cache (a set of realistic queries,
//! through the handler), Redis-warm (native and Upstash REST through a real
//! `gcbb upstash-proxy`), memory-warm, and signed-in cold.
//!
//! The report starts with the state of the database it ran on (row counts, when each table was
//! last vacuumed, how much of it is all-visible), because the figures depend on it: the seed's
//! "before" query takes three times longer on a database that was never vacuumed.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use bytes::Bytes;
use serde::Serialize;
use tokio_postgres::types::Type;
use tower::ServiceExt;

use super::stats::{human_bytes, Payload, Summary};
use gcbb::cache::keys::{self, Audience};
use gcbb::cache::Cache;
use gcbb::config::{CacheBackend, Config};
use gcbb::dashboard::{self, DashboardParams};
use gcbb::db::querier::Querier;
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
    /// Samples of each search of the search row (each one a miss of every cache).
    #[arg(long, default_value_t = 30)]
    pub search_samples: usize,
    /// Native Redis for the Redis-warm figures.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub database_state: DatabaseState,
    pub companions_public: i64,
    pub before: Row,
    pub cold_read_model: Row,
    pub search_miss: Row,
    pub searches: Vec<SearchRow>,
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

/// One search of the search row.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRow {
    pub q: &'static str,
    pub category_id: Option<&'static str>,
    pub what: &'static str,
    pub total: i64,
    pub latency: Summary,
}

/// The searches of the search row: what visitors type, common and rare, with and without a
/// category. The seed's names are a first name and a title ("Ezra Stormborn", "Søren the Wise").
pub const SEARCHES: &[(&str, Option<&str>, &str)] = &[
    ("ada", None, "common first name"),
    ("ada", Some("cat_03"), "common first name, in a category"),
    ("the wise", None, "common title"),
    ("the wise", Some("cat_07"), "common title, in a category"),
    ("moon", None, "common word"),
    ("søren", None, "non-ASCII name"),
    ("ezra storm", None, "rare full name"),
    (
        "ezra storm",
        Some("cat_03"),
        "rare full name, in a category",
    ),
    ("nightingale", Some("cat_11"), "title, in a category"),
    ("zzzz", None, "nothing matches"),
    ("zzzz", Some("cat_05"), "nothing matches, in a category"),
    (
        "le",
        None,
        "two letters: names starting with them (prefix index)",
    ),
];

pub async fn run(args: &DashboardArgs, json: bool) -> anyhow::Result<()> {
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    let db = super::bench_database()?;
    // Any valid URL: the database is set from the bench's own below.
    vars.insert(
        "DATABASE_URL".into(),
        gcbb::config::DEFAULT_DEV_DATABASE_URL.into(),
    );
    // Every search is one client's: the anonymous search limit would refuse most of them.
    vars.insert("RATE_LIMIT_SEARCH_REQUESTS".into(), "1000000000".into());
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
    let database_state = DatabaseState::read(&memory_app).await?;
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

    // Searches, each request a miss of every cache, through the handler.
    let (search_miss, searches) = measure_searches(memory_app.clone(), args.search_samples).await?;

    // Signed-in cold: a different viewer every sample.
    let mut samples = Vec::with_capacity(args.cold_samples);
    let mut body = None;
    for i in 0..args.cold_samples {
        let user = gcbb::id::UserId::issued(crate::bench::seed::user_id(i % 2_000));
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
        database_state,
        companions_public,
        before_over_cold_p50: before.latency.p50_ms / cold.latency.p50_ms,
        before_payload_over_optimized: before.payload.raw_bytes as f64
            / cold.payload.raw_bytes.max(1) as f64,
        before,
        cold_read_model: cold,
        search_miss,
        searches,
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

/// Each search of [`SEARCHES`] through the handler, round after round, every request a miss:
/// the page's entry is deleted before each one (outside the timing), so every sample builds
/// the page (page, count and categories queries) as the first visitor to search it would.
async fn measure_searches(app: Arc<App>, samples: usize) -> anyhow::Result<(Row, Vec<SearchRow>)> {
    let router = dashboard::router(app.clone());
    let mut per_search: Vec<Vec<Duration>> = vec![Vec::with_capacity(samples); SEARCHES.len()];
    let mut totals = vec![0i64; SEARCHES.len()];
    let mut all = Vec::with_capacity(samples * SEARCHES.len());
    let mut body = Bytes::new();
    for _ in 0..samples.max(1) {
        for (i, (q, category, _)) in SEARCHES.iter().enumerate() {
            let epoch = app.privacy.current(&app).await?;
            let key = keys::dashboard_page(
                &Audience::Anonymous,
                *category,
                Some(q),
                1,
                dashboard::params::DEFAULT_PAGE_SIZE,
            )
            .at_privacy_epoch(epoch);
            let _ = app.cache.invalidate(&key).await;
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("q", q);
            if let Some(c) = category {
                query.append_pair("categoryId", c);
            }
            let uri = format!("/api/dashboard/prefetch?{}", query.finish());
            let t = Instant::now();
            let resp = router
                .clone()
                .oneshot(Request::get(&uri).body(Body::empty())?)
                .await?;
            let cache = resp
                .headers()
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
            let took = t.elapsed();
            anyhow::ensure!(cache == "miss", "{uri} was not a miss (X-Cache: {cache})");
            per_search[i].push(took);
            all.push(took);
            let page: serde_json::Value = serde_json::from_slice(&bytes)?;
            totals[i] = page["total"].as_i64().unwrap_or(-1);
            body = bytes;
        }
    }
    let rows = SEARCHES
        .iter()
        .zip(per_search.iter_mut())
        .zip(totals)
        .map(|(((q, category, what), times), total)| SearchRow {
            q,
            category_id: *category,
            what,
            total,
            latency: Summary::of(times),
        })
        .collect();
    Ok((
        Row {
            latency: Summary::of(&mut all),
            payload: Payload::of(&body),
        },
        rows,
    ))
}

/// What the figures stood on: the size of the tables the dashboard reads, and whether they were
/// vacuumed (the visibility map lets index-only scans skip the heap; a never-vacuumed table has
/// none, which makes every scan of it slower).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseState {
    pub tables: Vec<TableState>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableState {
    pub table: String,
    pub rows: i64,
    pub dead_rows: i64,
    /// The last VACUUM, by hand or by autovacuum (`None`: never).
    pub last_vacuum: Option<String>,
    pub last_analyze: Option<String>,
    /// Share of the table's pages the visibility map marks all-visible.
    pub all_visible: f64,
}

impl DatabaseState {
    /// The tables the dashboard benches read.
    const TABLES: [&'static str; 3] = ["Companion", "Message", "CompanionDashboard"];

    async fn read(app: &App) -> anyhow::Result<DatabaseState> {
        let client = app.db.get().await?;
        let mut tables = Vec::new();
        for table in Self::TABLES {
            // Exact counts: estimates are what an unanalyzed table gets wrong.
            let rows: i64 = client
                .query_typed(&format!("SELECT count(*) FROM \"{table}\""), &[])
                .await?
                .first()
                .map_or(0, |r| r.get(0));
            let stats = client
                .query_typed(
                    "SELECT s.n_dead_tup, \
                            to_char(greatest(s.last_vacuum, s.last_autovacuum), 'YYYY-MM-DD HH24:MI:SS'), \
                            to_char(greatest(s.last_analyze, s.last_autoanalyze), 'YYYY-MM-DD HH24:MI:SS'), \
                            CASE WHEN c.relpages > 0 \
                                 THEN c.relallvisible::float8 / c.relpages ELSE 0 END \
                     FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
                     WHERE s.relname = $1",
                    &[(&table, Type::TEXT)],
                )
                .await?
                .into_iter()
                .next();
            let (dead_rows, last_vacuum, last_analyze, all_visible) = match stats {
                Some(r) => (r.get(0), r.get(1), r.get(2), r.get(3)),
                None => (0, None, None, 0.0),
            };
            tables.push(TableState {
                table: table.to_owned(),
                rows,
                dead_rows,
                last_vacuum,
                last_analyze,
                all_visible,
            });
        }
        Ok(DatabaseState { tables })
    }

    fn print(&self) {
        println!("database state:");
        for t in &self.tables {
            println!(
                "  {:<20} {:>9} rows {:>7} dead  vacuumed: {:<19}  analyzed: {:<19}  all-visible {:>3.0} %",
                t.table,
                t.rows,
                t.dead_rows,
                t.last_vacuum.as_deref().unwrap_or("never"),
                t.last_analyze.as_deref().unwrap_or("never"),
                t.all_visible * 100.0
            );
        }
    }
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
    r.database_state.print();
    println!(
        "{:<34} {:>6} {:>10} {:>10} {:>10} {:>11} {:>10}",
        "path", "n", "p50 ms", "p95 ms", "p99 ms", "raw body", "as gzip"
    );
    for (name, row) in [
        ("before (seed: all columns, counts)", &r.before),
        ("cold: read model", &r.cold_read_model),
        ("search miss (the searches below)", &r.search_miss),
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
        "before / cold p50: {:.0}×   before / optimized payload: {:.0}× (raw bodies)",
        r.before_over_cold_p50, r.before_payload_over_optimized
    );
    println!(
        "payload: the body as the handler writes it (raw) and gzip-compressed at the default \
         level (what a client asking for gzip receives from Vercel's edge or `gcbb dev`)"
    );
    println!("searches (each sample a miss of every cache, through the handler):");
    println!(
        "  {:<13} {:<8} {:>6} {:>9} {:>9}  what",
        "q", "category", "total", "p50 ms", "p95 ms"
    );
    for s in &r.searches {
        println!(
            "  {:<13} {:<8} {:>6} {:>9.3} {:>9.3}  {}",
            s.q,
            s.category_id.unwrap_or("-"),
            s.total,
            s.latency.p50_ms,
            s.latency.p95_ms,
            s.what
        );
    }
}
