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
    /// Duration of the run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
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
}

pub async fn run(args: &HttpArgs, json: bool) -> anyhow::Result<()> {
    let url = url::Url::parse(&args.url)?;
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
    for h in &args.headers {
        request.push_str(h.trim());
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let request = request.into_bytes();

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            let request = request.clone();
            let host = host.clone();
            tokio::spawn(async move { drive(&host, port, &request, deadline).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut non_2xx, mut errors) = (0, 0);
    for t in tasks {
        let r = t.await?;
        latencies.extend(r.latencies);
        non_2xx += r.non_2xx;
        errors += r.errors;
    }
    let seconds = started.elapsed().as_secs_f64();
    let report = Report {
        url: args.url.clone(),
        connections: args.connections,
        seconds,
        requests: latencies.len(),
        requests_per_second: latencies.len() as f64 / seconds,
        non_2xx,
        errors,
        latency: Summary::of(&mut latencies),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
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
    }
    Ok(())
}

#[derive(Default)]
struct ConnectionResult {
    latencies: Vec<Duration>,
    non_2xx: usize,
    errors: usize,
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
                Some(status) => {
                    result.latencies.push(t.elapsed());
                    if !(200..300).contains(&status) && status != 304 {
                        result.non_2xx += 1;
                    }
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

/// Reads one response; returns its status, or `None` if the connection broke.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
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
    Some(status)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
