//! `gcbb bench faults`: what the anonymous fast path costs while Postgres fails, measured with
//! real faults (the fault proxy in front of the bench database: refusing, black-holed, slow to
//! connect) on the whole router in this process, with Redis as the cache:
//!
//! - the cached page's p50/p99 with Postgres healthy, 300 ms slower per round trip, refusing,
//!   black-holed and waking slowly (20 clients at once), and Postgres transactions per 1 000 of
//!   those requests;
//! - pages no cache holds during a black hole: the time to 503 of the first few, and once the
//!   database's breaker is open;
//! - the time from a plain-SQL `UPDATE "Companion" SET private = true` to the companion leaving
//!   every cache layer of two instances under traffic (Redis with its L1, and memory).
//!
//! The companion it hides is made public again at the end and the outbox row its hiding wrote
//! is deleted; the privacy epoch stays one higher (every cached page is rebuilt once).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use serde::Serialize;
use tower::ServiceExt;

use gcbb::config::Config;
use gcbb::db::DbConfig;
use gcbb::platform::app::App;
use gcbb::routes::VercelJson;

use super::stats::Summary;
use crate::fault_proxy::TcpProxy;

/// The page under test: the anonymous dashboard's first page.
const PAGE: &str = "/api/dashboard/prefetch";

#[derive(Debug, clap::Args)]
pub struct FaultsArgs {
    /// How long the cached page is driven under each condition.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Clients at once.
    #[arg(long, default_value_t = 20)]
    pub clients: usize,
    /// The Redis under the cache.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// How long each new connection waits in the "waking slowly" condition.
    #[arg(long, default_value_t = 1500)]
    pub connect_delay_ms: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub conditions: Vec<Condition>,
    /// Postgres transactions per 1 000 cached requests, Postgres healthy.
    pub transactions_per_thousand: f64,
    pub uncached_first_ms: Vec<f64>,
    pub uncached_breaker_open: Summary,
    /// Plain-SQL hide → gone from every layer: Redis with its L1, then memory.
    pub hidden_gone_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub postgres: String,
    pub requests: usize,
    pub not_200: usize,
    pub latency: Summary,
}

pub async fn run(args: &FaultsArgs, json: bool) -> anyhow::Result<()> {
    let db = super::bench_database()?;
    let upstream = tokio::net::lookup_host((db.host.as_str(), db.port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{} does not resolve", db.host))?;
    let proxy = TcpProxy::start(upstream).await;
    let prefix = format!("gcbb-bench-faults-{:08x}", rand::random::<u32>());
    let redis_instance = instance(&proxy, &prefix, Some(&args.redis_url))?;
    let (app, router) = &redis_instance;
    expect_ok(router, PAGE).await?;

    let mut conditions = Vec::new();
    let before = transactions(&db).await?;
    let healthy = drive(router, args).await;
    let after = transactions(&db).await?;
    // Less the two reads of the counter themselves.
    let transactions_per_thousand =
        (after - before - 1).max(0) as f64 * 1000.0 / healthy.requests.max(1) as f64;
    conditions.push(healthy.named("healthy"));
    for fault in ["300 ms slower", "refusing", "black-holed", "waking slowly"] {
        match fault {
            "300 ms slower" => proxy.slow_link(Duration::from_millis(300)),
            "refusing" => proxy.refuse(),
            "black-holed" => proxy.black_hole(),
            _ => {
                proxy.slow_connect(Duration::from_millis(args.connect_delay_ms));
                proxy.cut();
            }
        }
        conditions.push(drive(router, args).await.named(fault));
        restore(&proxy, app).await?;
    }

    // Pages no cache holds, during a black hole: the first few wait out the deadline together,
    // then the breaker answers.
    proxy.black_hole();
    let first = at_once(router, 3, 100).await;
    let mut open = at_once(router, args.clients, 200).await;
    restore(&proxy, app).await?;
    let uncached_first_ms = first.iter().map(|d| d.as_secs_f64() * 1000.0).collect();

    let hidden_gone_ms = hide_under_traffic(&db, &proxy, &prefix, args).await?;

    let report = Report {
        conditions,
        transactions_per_thousand,
        uncached_first_ms,
        uncached_breaker_open: Summary::of(&mut open),
        hidden_gone_ms,
    };
    let _ = app.cache.clear_pattern(&format!("{prefix}:*")).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report, args, &db);
    }
    Ok(())
}

fn print(report: &Report, args: &FaultsArgs, db: &DbConfig) {
    println!(
        "gcbb bench faults — {} through a fault proxy, Redis {}, {} clients for {} s per condition",
        db.redacted(),
        args.redis_url,
        args.clients,
        args.seconds
    );
    println!("cached anonymous page ({PAGE}), whole router in process");
    println!(
        "  {:<16} {:>9} {:>8} {:>10} {:>10}",
        "postgres", "requests", "not 200", "p50 ms", "p99 ms"
    );
    for c in &report.conditions {
        println!(
            "  {:<16} {:>9} {:>8} {:>10.3} {:>10.3}",
            c.postgres, c.requests, c.not_200, c.latency.p50_ms, c.latency.p99_ms
        );
    }
    println!(
        "  Postgres transactions per 1 000 cached requests (healthy): {:.2}",
        report.transactions_per_thousand
    );
    println!(
        "uncached pages, Postgres black-holed: the first 3 at once answered 503 after {} ms; \
         with the breaker open, {} at once: p50 {:.3} ms, p99 {:.3} ms",
        report
            .uncached_first_ms
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect::<Vec<_>>()
            .join(" / "),
        report.uncached_breaker_open.n,
        report.uncached_breaker_open.p50_ms,
        report.uncached_breaker_open.p99_ms
    );
    println!(
        "plain-SQL UPDATE \"Companion\" SET private = true → gone from every layer under traffic: \
         Redis + L1 {:.0} ms, memory {:.0} ms",
        report.hidden_gone_ms.first().copied().unwrap_or(f64::NAN),
        report.hidden_gone_ms.get(1).copied().unwrap_or(f64::NAN)
    );
}

/// An instance of the deployment reaching Postgres through the proxy, with Redis (or memory).
fn instance(
    proxy: &TcpProxy,
    prefix: &str,
    redis: Option<&str>,
) -> anyhow::Result<(Arc<App>, Router)> {
    let mut vars = std::collections::HashMap::from([
        (
            "DATABASE_URL".to_owned(),
            proxy.url_through(&super::bench_database_url()),
        ),
        ("CACHE_KEY_PREFIX".to_owned(), prefix.to_owned()),
        ("LLM_PROVIDER".to_owned(), "scripted".to_owned()),
    ]);
    if let Some(redis) = redis {
        vars.insert("REDIS_URL".to_owned(), redis.to_owned());
    }
    let app = App::new(Config::from_vars(&vars)?);
    let router = gcbb::routes::router(app.clone(), &VercelJson::embedded(), Router::new());
    Ok((app, router))
}

async fn expect_ok(router: &Router, path: &str) -> anyhow::Result<serde_json::Value> {
    let request = Request::get(path).body(Body::empty())?;
    let Ok(response) = router.clone().oneshot(request).await;
    anyhow::ensure!(
        response.status().is_success(),
        "{path} answered {}",
        response.status()
    );
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// What one condition measured.
struct Run {
    requests: usize,
    not_200: usize,
    latencies: Vec<Duration>,
}

impl Run {
    fn named(mut self, postgres: &str) -> Condition {
        Condition {
            postgres: postgres.to_owned(),
            requests: self.requests,
            not_200: self.not_200,
            latency: Summary::of(&mut self.latencies),
        }
    }
}

/// `args.clients` clients asking for the cached page for `args.seconds`.
async fn drive(router: &Router, args: &FaultsArgs) -> Run {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let clients: Vec<_> = (0..args.clients.max(1))
        .map(|_| {
            let router = router.clone();
            tokio::spawn(async move {
                let (mut latencies, mut not_200) = (Vec::new(), 0);
                while Instant::now() < deadline {
                    let request = Request::get(PAGE).body(Body::empty()).expect("a request");
                    let started = Instant::now();
                    let Ok(response) = router.clone().oneshot(request).await;
                    let ok = response.status().is_success();
                    let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
                    latencies.push(started.elapsed());
                    not_200 += usize::from(!ok);
                    // As a client across a network would: a cached answer is ready at once, and
                    // twenty clients that never yield would starve the process's own I/O (the
                    // cache's replies among it), which no real load does.
                    tokio::task::yield_now().await;
                }
                (latencies, not_200)
            })
        })
        .collect();
    let mut run = Run {
        requests: 0,
        not_200: 0,
        latencies: Vec::new(),
    };
    for client in clients {
        if let Ok((latencies, not_200)) = client.await {
            run.requests += latencies.len();
            run.not_200 += not_200;
            run.latencies.extend(latencies);
        }
    }
    run
}

/// `n` requests at once for pages no cache holds (`pageSize` from `size_from` up); how long
/// each took.
async fn at_once(router: &Router, n: usize, size_from: usize) -> Vec<Duration> {
    let requests = (0..n).map(|i| {
        let router = router.clone();
        async move {
            let path = format!("{PAGE}?page=6&pageSize={}", (size_from + i) % 50 + 1);
            let request = Request::get(path).body(Body::empty()).expect("a request");
            let started = Instant::now();
            let _ = router.oneshot(request).await;
            started.elapsed()
        }
    });
    futures_util::future::join_all(requests).await
}

/// Forwards again and waits until the app reaches Postgres (its breaker closed, its epoch
/// confirmed).
async fn restore(proxy: &TcpProxy, app: &Arc<App>) -> anyhow::Result<()> {
    proxy.cut();
    proxy.forward().await;
    let started = Instant::now();
    loop {
        let answered = async {
            let client = app.db.get().await?;
            gcbb::db::privacy::current_privacy_epoch(&client).await
        }
        .await;
        if answered.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "Postgres did not answer again through the proxy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Postgres transactions of the bench database so far (committed and rolled back), as its
/// statistics say once they are flushed.
async fn transactions(db: &DbConfig) -> anyhow::Result<i64> {
    // Backends flush their counters at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let client = gcbb::db::connect(db).await?;
    let row = client
        .query_one(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Hides the first companion of the page by plain SQL while two instances serve it under
/// traffic; how long until each no longer lists it. Restores the companion afterwards.
async fn hide_under_traffic(
    db: &DbConfig,
    proxy: &TcpProxy,
    prefix: &str,
    args: &FaultsArgs,
) -> anyhow::Result<Vec<f64>> {
    let instances = [
        instance(proxy, prefix, Some(&args.redis_url))?,
        instance(proxy, prefix, None)?,
    ];
    let page = expect_ok(&instances[0].1, PAGE).await?;
    let id = page["companions"][0]["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the bench database lists no companion"))?
        .to_owned();
    for (_, router) in &instances {
        expect_ok(router, PAGE).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let traffic: Vec<_> = instances
        .iter()
        .map(|(_, router)| {
            let (router, stop) = (router.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let request = Request::get(PAGE).body(Body::empty()).expect("a request");
                    let _ = router.clone().oneshot(request).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = gcbb::db::connect(db).await?;
    let last_outbox: i64 = client
        .query_one(
            "SELECT COALESCE(max(\"id\"), 0) FROM \"PrivacyPurgeOutbox\"",
            &[],
        )
        .await?
        .get(0);
    let hidden_at = Instant::now();
    client
        .execute(
            "UPDATE \"Companion\" SET \"private\" = true WHERE \"id\" = $1",
            &[&id],
        )
        .await?;
    let mut gone = vec![None; instances.len()];
    while gone.iter().any(Option::is_none) && hidden_at.elapsed() < Duration::from_secs(30) {
        for (i, (_, router)) in instances.iter().enumerate() {
            if gone[i].is_none() {
                let page = expect_ok(router, PAGE).await?;
                let listed = page["companions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["id"] == id.as_str()));
                if !listed {
                    gone[i] = Some(hidden_at.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in traffic {
        let _ = task.await;
    }
    client
        .execute(
            "UPDATE \"Companion\" SET \"private\" = false WHERE \"id\" = $1",
            &[&id],
        )
        .await?;
    client
        .execute(
            "DELETE FROM \"PrivacyPurgeOutbox\" WHERE \"id\" > $1 AND \"companionId\" = $2",
            &[&last_outbox, &id],
        )
        .await?;
    Ok(gone.into_iter().map(|g| g.unwrap_or(f64::NAN)).collect())
}
