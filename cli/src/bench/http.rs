//! `gcbb bench http`: drives a running server with N keep-alive connections for T seconds.
//!
//! A small HTTP/1.1 client of our own rather than reqwest: a load generator sharing two cores
//! with the server under test must spend as little CPU per request as possible, and all it
//! needs is GET with keep-alive and `Content-Length`/chunked bodies.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stats::Summary;

/// Hard cap on requests per connection, so a run always ends even if the clock misbehaves.
const MAX_REQUESTS_PER_CONNECTION: usize = 5_000_000;

#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// URL to GET (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:3000/api/dashboard/prefetch")]
    pub url: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Duration of each run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Also drive a minimal server answering the URL's bytes and headers (`gcbb bench anchor`,
    /// started here as a process of its own: plain axum, no layers, no log line), alternating
    /// with the URL, and state the URL's throughput as a share of the anchor's: what the whole
    /// serving stack costs against what this machine can do at all.
    #[arg(long)]
    pub anchor: bool,
    /// Runs of each target (alternating when there are two); figures are the median run's.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub url: String,
    pub connections: usize,
    pub seconds: f64,
    pub requests: usize,
    pub requests_per_second: f64,
    pub non_2xx: usize,
    pub errors: usize,
    pub latency: Summary,
    /// Bytes of the last response's body as sent (after any compression).
    pub body_bytes: usize,
    /// `Content-Encoding` of the last response (`identity` when none).
    pub content_encoding: String,
    /// Every run of this target, in order (`requests_per_second` of each).
    pub runs: Vec<f64>,
}

/// Two targets measured in one session: the URL and the anchor.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnchoredReport {
    pub target: Report,
    pub anchor: Report,
    /// The target's requests per second as a share of the anchor's (median runs).
    pub share_of_anchor: f64,
}

/// One target: where to connect and what to send.
struct Target {
    url: String,
    host: String,
    port: u16,
    request: Vec<u8>,
}

impl Target {
    fn new(raw: &str, headers: &[String]) -> anyhow::Result<Target> {
        let url = url::Url::parse(raw)?;
        anyhow::ensure!(url.scheme() == "http", "only http:// URLs");
        let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
        anyhow::ensure!(
            matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]" | "::1"),
            "gcbb bench http only drives servers on this machine (loopback)"
        );
        let port = url.port().unwrap_or(80);
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n");
        for h in headers {
            request.push_str(h.trim());
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        Ok(Target {
            url: raw.to_owned(),
            host,
            port,
            request: request.into_bytes(),
        })
    }
}

/// The anchor's process, stopped when dropped.
struct AnchorProcess(std::process::Child);

impl AnchorProcess {
    /// `gcbb bench anchor` serving a copy of `url`, once it listens.
    async fn start(url: &str) -> anyhow::Result<(AnchorProcess, u16)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(std::env::current_exe()?)
            .args([
                "bench",
                "anchor",
                "--copy-from",
                url,
                "--port",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let process = AnchorProcess(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "the bench anchor did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((process, port))
    }
}

impl Drop for AnchorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run(args: &HttpArgs, json: bool) -> anyhow::Result<()> {
    let target = Target::new(&args.url, &args.headers)?;
    let rounds = args.rounds.max(1);
    if !args.anchor {
        let mut runs = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            runs.push(drive_target(&target, args).await);
        }
        let report = median_run(runs);
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report, args);
        }
        return Ok(());
    }
    let (_process, port) = AnchorProcess::start(&args.url).await?;
    let mut anchor = Target::new(&format!("http://127.0.0.1:{port}/"), &args.headers)?;
    anchor.url = format!("anchor (a copy of {})", args.url);
    let (mut target_runs, mut anchor_runs) = (Vec::new(), Vec::new());
    // Alternating, starting with the anchor and the target in turn, so neither always runs
    // on a warmer (or busier) machine.
    for round in 0..rounds {
        if round % 2 == 0 {
            anchor_runs.push(drive_target(&anchor, args).await);
            target_runs.push(drive_target(&target, args).await);
        } else {
            target_runs.push(drive_target(&target, args).await);
            anchor_runs.push(drive_target(&anchor, args).await);
        }
    }
    let report = AnchoredReport {
        target: median_run(target_runs),
        anchor: median_run(anchor_runs),
        share_of_anchor: 0.0,
    };
    let report = AnchoredReport {
        share_of_anchor: report.target.requests_per_second
            / report.anchor.requests_per_second.max(f64::MIN_POSITIVE),
        ..report
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report.anchor, args);
        print_report(&report.target, args);
        println!(
            "  {} at {:.0} % of the anchor's throughput (median of {rounds} alternating run{} each)",
            report.target.url,
            report.share_of_anchor * 100.0,
            if rounds == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

fn print_report(report: &Report, args: &HttpArgs) {
    println!(
        "gcbb bench http — {} with {} connections for {:.1} s",
        report.url, report.connections, report.seconds
    );
    println!(
        "  {} requests, {:.0} requests/s, p50 {:.3} ms, p99 {:.3} ms, non-2xx {}, errors {}",
        report.requests,
        report.requests_per_second,
        report.latency.p50_ms,
        report.latency.p99_ms,
        report.non_2xx,
        report.errors
    );
    println!(
        "  body {} B as sent ({}){}",
        report.body_bytes,
        report.content_encoding,
        if report.runs.len() > 1 {
            format!(
                "; runs: {} requests/s",
                report
                    .runs
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        }
    );
    let _ = args;
}

/// The run with the median throughput, with every run's throughput listed.
fn median_run(mut runs: Vec<Report>) -> Report {
    let all: Vec<f64> = runs.iter().map(|r| r.requests_per_second).collect();
    runs.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    let mut median = runs.swap_remove(runs.len() / 2);
    median.runs = all;
    median
}

async fn drive_target(target: &Target, args: &HttpArgs) -> Report {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            let request = target.request.clone();
            let host = target.host.clone();
            let port = target.port;
            tokio::spawn(async move { drive(&host, port, &request, deadline).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut non_2xx, mut errors) = (0, 0);
    let mut last = LastResponse::default();
    for t in tasks {
        match t.await {
            Ok(r) => {
                latencies.extend(r.latencies);
                non_2xx += r.non_2xx;
                errors += r.errors;
                if r.last.body_bytes > 0 {
                    last = r.last;
                }
            }
            Err(_) => errors += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Report {
        url: target.url.clone(),
        connections: args.connections,
        seconds,
        requests: latencies.len(),
        requests_per_second: latencies.len() as f64 / seconds,
        non_2xx,
        errors,
        latency: Summary::of(&mut latencies),
        body_bytes: last.body_bytes,
        content_encoding: last.content_encoding,
        runs: Vec::new(),
    }
}

/// What the last response of a connection looked like.
#[derive(Default)]
struct LastResponse {
    body_bytes: usize,
    content_encoding: String,
}

#[derive(Default)]
struct ConnectionResult {
    latencies: Vec<Duration>,
    non_2xx: usize,
    errors: usize,
    last: LastResponse,
}

async fn drive(host: &str, port: u16, request: &[u8], deadline: Instant) -> ConnectionResult {
    let mut result = ConnectionResult::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    'connections: while Instant::now() < deadline {
        let Ok(mut stream) = TcpStream::connect((host.trim_matches(['[', ']']), port)).await else {
            result.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        while Instant::now() < deadline && result.latencies.len() < MAX_REQUESTS_PER_CONNECTION {
            let t = Instant::now();
            if stream.write_all(request).await.is_err() {
                result.errors += 1;
                continue 'connections;
            }
            match read_response(&mut stream, &mut buf).await {
                Some((status, last)) => {
                    result.latencies.push(t.elapsed());
                    if !(200..300).contains(&status) && status != 304 {
                        result.non_2xx += 1;
                    }
                    result.last = last;
                }
                None => {
                    result.errors += 1;
                    continue 'connections;
                }
            }
        }
        break;
    }
    result
}

/// Reads one response; returns its status and what it looked like, or `None` if the connection
/// broke.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u16, LastResponse)> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end]).ok()?;
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(len) => {
            while buf.len() < header_end + len {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        None if lower.contains("transfer-encoding: chunked") => {
            while find(&buf[header_end..], b"0\r\n\r\n").is_none() {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        None => {}
    }
    let content_encoding = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-encoding:"))
        .map_or("identity", str::trim)
        .to_owned();
    Some((
        status,
        LastResponse {
            body_bytes: buf.len() - header_end,
            content_encoding,
        },
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
