//! `gcbb bench coldstart`: each function binary started the way Vercel's runtime starts it (a
//! fresh process listening on `VERCEL_DEV_PORT`), timed from process start to its first
//! response, with the binary's size and the process's RSS after that response.
//!
//! The requests are the cheapest each function answers in full: health reads the database and
//! the cache, the dashboard builds or reads a page, the others refuse an anonymous caller (their
//! start-up is the same; their real work is measured by `bench chat` and `bench dashboard`).

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
        function: "dashboard",
        method: "GET",
        path: "/api/dashboard/prefetch",
    },
    Probe {
        function: "chat",
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
        function: "refresh",
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
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub function: String,
    pub request: String,
    pub status: u16,
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
    let database_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| gcbb::config::DEFAULT_DEV_DATABASE_URL.to_owned());
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
        let probe_row =
            tokio::task::block_in_place(|| measure(probe, &binary, &database_url, args.runs))?;
        rows.push(probe_row);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "gcbb bench coldstart — {}, {} starts per function",
        bin_dir.display(),
        args.runs
    );
    println!(
        "{:<20} {:<44} {:>6} {:>10} {:>22} {:>20}",
        "function", "request", "status", "size", "start→response p50/p95", "RSS after p50/max"
    );
    for r in &rows {
        println!(
            "{:<20} {:<44} {:>6} {:>10} {:>10.2} / {:>6.2} ms {:>9.1} / {:>5.1} MiB",
            r.function,
            r.request,
            r.status,
            human_bytes(r.binary_bytes as usize),
            r.start_to_first_response.p50_ms,
            r.start_to_first_response.p95_ms,
            r.rss_kib_p50 as f64 / 1024.0,
            r.rss_kib_max as f64 / 1024.0,
        );
    }
    Ok(())
}

fn measure(probe: &Probe, binary: &Path, database_url: &str, runs: usize) -> anyhow::Result<Row> {
    let mut starts = Vec::with_capacity(runs);
    let mut rss = Vec::with_capacity(runs);
    let mut status = 0;
    for _ in 0..runs.max(1) {
        let port = free_port()?;
        let mut cmd = Command::new(binary);
        cmd.env("VERCEL_DEV_PORT", port.to_string())
            .env("DATABASE_URL", database_url)
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
        status = first_response(&mut child.0, port, probe, started)?;
        starts.push(started.elapsed());
        rss.push(rss_kib(child.0.id()).unwrap_or(0));
    }
    rss.sort_unstable();
    Ok(Row {
        function: probe.function.to_owned(),
        request: format!("{} {}", probe.method, probe.path),
        status,
        binary_bytes: std::fs::metadata(binary)?.len(),
        start_to_first_response: Summary::of(&mut starts),
        rss_kib_p50: rss[rss.len() / 2],
        rss_kib_max: rss[rss.len() - 1],
    })
}

/// Connects as soon as the port listens, sends the probe's request, and returns the status of
/// the complete response.
fn first_response(
    child: &mut Child,
    port: u16,
    probe: &Probe,
    started: Instant,
) -> anyhow::Result<u16> {
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
    let head = String::from_utf8_lossy(&response[..response.len().min(32)]).into_owned();
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{}: not an HTTP response: {head:?}", probe.function))
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
