//! `gcbb bench coldstart`: each function binary started the way Vercel's runtime starts it (a
//! fresh process listening on `VERCEL_DEV_PORT`), timed from process start to its first
//! response, with the binary's size and the process's RSS after that response.
//!
//! The requests are the cheapest each function answers in full: health reads the database and
//! the cache, the dashboard builds or reads a page, the others refuse an anonymous caller (their
//! start-up is the same; their real work is measured by `bench chat` and `bench dashboard`).
//!
//! With `--redis-url`, the functions share a Redis that already holds the dashboard's page (this
//! command warms it first, as a warm instance of the deployment would have); with
//! `--database-connect-delay-ms`, each new connection to Postgres waits that long (a fault
//! proxy in front of it, as a Neon compute waking from zero makes it wait). Together they
//! measure what a cold instance's first visitor waits when Redis holds the page and the
//! database is slow to answer.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::stats::{human_bytes, Summary};

/// Longest a function may take to answer its first request before the run is abandoned.
const START_LIMIT: Duration = Duration::from_secs(20);
/// Pause between connection attempts while the process starts: short, so the figure is not
/// rounded up to it.
const POLL_INTERVAL: Duration = Duration::from_micros(200);

/// One function and the request that measures it.
struct Probe {
    function: &'static str,
    method: &'static str,
    path: &'static str,
}

const PROBES: &[Probe] = &[
    Probe {
        function: "health",
        method: "GET",
        path: "/api/health",
    },
    Probe {
        function: "dashboard-prefetch",
        method: "GET",
        path: "/api/dashboard/prefetch",
    },
    Probe {
        function: "chat-stream",
        method: "GET",
        path: "/api/chat/c1?chatId=c1",
    },
    Probe {
        function: "group-chat",
        method: "GET",
        path: "/api/group-chat/g1/messages?groupId=g1",
    },
    Probe {
        function: "companion",
        method: "PATCH",
        path: "/api/companion/c1?companionId=c1",
    },
    Probe {
        function: "cron-refresh",
        method: "GET",
        path: "/api/cron/refresh",
    },
];

#[derive(Debug, clap::Args)]
pub struct ColdstartArgs {
    /// Folder holding the function binaries (default: the folder of this `gcbb` binary, so
    /// `cargo gcbb-release bench coldstart` measures the release build).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Process starts per function.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Only these functions (repeatable).
    #[arg(long = "function")]
    pub functions: Vec<String>,
    /// A Redis the functions share (`REDIS_URL`), warmed first with the dashboard's page.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Each new Postgres connection of the functions waits this long (a fault proxy).
    #[arg(long, default_value_t = 0)]
    pub database_connect_delay_ms: u64,
}

/// The cache key prefix of the functions under `--redis-url` (and of the warming instance).
const COLDSTART_CACHE_PREFIX: &str = "gcbb-bench-coldstart";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub function: String,
    pub request: String,
    pub status: u16,
    /// `X-Cache` of the first response (`-` when none).
    pub cache: String,
    pub binary_bytes: u64,
    pub start_to_first_response: Summary,
    /// Resident set size right after the first response: median and largest of the runs.
    pub rss_kib_p50: u64,
    pub rss_kib_max: u64,
}

pub async fn run(args: &ColdstartArgs, json: bool) -> anyhow::Result<()> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| anyhow::anyhow!("no folder for the gcbb binary"))?,
    };
    let direct_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| gcbb::config::DEFAULT_DEV_DATABASE_URL.to_owned());
    let mut env: Vec<(String, String)> = vec![("DATABASE_URL".into(), direct_url.clone())];
    if let Some(redis) = &args.redis_url {
        env.push(("REDIS_URL".into(), redis.clone()));
        env.push(("CACHE_KEY_PREFIX".into(), COLDSTART_CACHE_PREFIX.into()));
        warm_dashboard(&direct_url, redis).await?;
    }
    // Kept for the whole run: the functions reach Postgres through it.
    let _proxy = match args.database_connect_delay_ms {
        0 => None,
        delay => {
            let (proxy, url) = slow_proxy(&direct_url, Duration::from_millis(delay)).await?;
            env[0].1 = url;
            Some(proxy)
        }
    };
    let mut rows = Vec::new();
    for probe in PROBES {
        if !args.functions.is_empty() && !args.functions.iter().any(|f| f == probe.function) {
            continue;
        }
        let binary = bin_dir.join(probe.function);
        anyhow::ensure!(
            binary.is_file(),
            "{} is missing: build the functions first (cargo build --release -p gcbb --bins)",
            binary.display()
        );
        let probe_row = tokio::task::block_in_place(|| measure(probe, &binary, &env, args.runs))?;
        rows.push(probe_row);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "gcbb bench coldstart — {}, {} starts per function; cache: {}; Postgres connects: {}",
        bin_dir.display(),
        args.runs,
        args.redis_url
            .as_deref()
            .map_or("memory (per process)".to_owned(), |r| format!(
                "{r}, warmed with the dashboard's page"
            )),
        match args.database_connect_delay_ms {
            0 => "direct".to_owned(),
            ms => format!("each new one waits {ms} ms (fault proxy)"),
        }
    );
    println!(
        "{:<20} {:<44} {:>6} {:>7} {:>10} {:>22} {:>20}",
        "function",
        "request",
        "status",
        "x-cache",
        "size",
        "start→response p50/p95",
        "RSS after p50/max"
    );
    for r in &rows {
        println!(
            "{:<20} {:<44} {:>6} {:>7} {:>10} {:>10.2} / {:>6.2} ms {:>9.1} / {:>5.1} MiB",
            r.function,
            r.request,
            r.status,
            r.cache,
            human_bytes(r.binary_bytes as usize),
            r.start_to_first_response.p50_ms,
            r.start_to_first_response.p95_ms,
            r.rss_kib_p50 as f64 / 1024.0,
            r.rss_kib_max as f64 / 1024.0,
        );
    }
    Ok(())
}

/// Puts the dashboard's first page in Redis, as a warm instance of the deployment would have
/// (which also shares the privacy epoch there).
async fn warm_dashboard(database_url: &str, redis_url: &str) -> anyhow::Result<()> {
    use tower::ServiceExt;
    let vars = std::collections::HashMap::from([
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("REDIS_URL".to_owned(), redis_url.to_owned()),
        (
            "CACHE_KEY_PREFIX".to_owned(),
            COLDSTART_CACHE_PREFIX.to_owned(),
        ),
        ("LLM_PROVIDER".to_owned(), "scripted".to_owned()),
    ]);
    let app = gcbb::platform::app::App::new(gcbb::config::Config::from_vars(&vars)?);
    let router = gcbb::dashboard::router(app.clone());
    let request = http::Request::get("/api/dashboard/prefetch").body(axum::body::Body::empty())?;
    let Ok(response) = router.oneshot(request).await;
    anyhow::ensure!(
        response.status() == http::StatusCode::OK,
        "warming the dashboard's page: {}",
        response.status()
    );
    Ok(())
}

/// A fault proxy in front of the database whose new connections wait `delay`; the URL through it.
async fn slow_proxy(
    database_url: &str,
    delay: Duration,
) -> anyhow::Result<(crate::fault_proxy::TcpProxy, String)> {
    let db = gcbb::db::DbConfig::parse(database_url)?;
    let upstream = tokio::net::lookup_host((db.host.as_str(), db.port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{} does not resolve", db.host))?;
    let proxy = crate::fault_proxy::TcpProxy::start(upstream).await;
    proxy.slow_connect(delay);
    let url = proxy.url_through(database_url);
    Ok((proxy, url))
}

fn measure(
    probe: &Probe,
    binary: &Path,
    env: &[(String, String)],
    runs: usize,
) -> anyhow::Result<Row> {
    let mut starts = Vec::with_capacity(runs);
    let mut rss = Vec::with_capacity(runs);
    let (mut status, mut cache) = (0, String::new());
    for _ in 0..runs.max(1) {
        let port = free_port()?;
        let mut cmd = Command::new(binary);
        cmd.env("VERCEL_DEV_PORT", port.to_string())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if std::env::var_os("OPENAI_API_KEY").is_none()
            && std::env::var_os("LLM_PROVIDER").is_none()
        {
            cmd.env("LLM_PROVIDER", "scripted");
        }
        let started = Instant::now();
        let mut child = KillOnDrop(cmd.spawn()?);
        (status, cache) = first_response(&mut child.0, port, probe, started)?;
        starts.push(started.elapsed());
        rss.push(rss_kib(child.0.id()).unwrap_or(0));
    }
    rss.sort_unstable();
    Ok(Row {
        function: probe.function.to_owned(),
        request: format!("{} {}", probe.method, probe.path),
        status,
        cache,
        binary_bytes: std::fs::metadata(binary)?.len(),
        start_to_first_response: Summary::of(&mut starts),
        rss_kib_p50: rss[rss.len() / 2],
        rss_kib_max: rss[rss.len() - 1],
    })
}

/// Connects as soon as the port listens, sends the probe's request, and returns the status and
/// `X-Cache` of the complete response.
fn first_response(
    child: &mut Child,
    port: u16,
    probe: &Probe,
    started: Instant,
) -> anyhow::Result<(u16, String)> {
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) => {
                if let Some(exit) = child.try_wait()? {
                    anyhow::bail!("{} exited with {exit} before listening", probe.function);
                }
                anyhow::ensure!(
                    started.elapsed() < START_LIMIT,
                    "{} did not listen within {START_LIMIT:?}",
                    probe.function
                );
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    };
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(START_LIMIT))?;
    let body = if probe.method == "PATCH" { "{}" } else { "" };
    write!(
        stream,
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        probe.method,
        probe.path,
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: not an HTTP response: {:?}",
                probe.function,
                &head[..head.len().min(32)]
            )
        })?;
    let cache = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-cache")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| "-".to_owned());
    Ok((status, cache))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Resident set size of process `pid`, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
