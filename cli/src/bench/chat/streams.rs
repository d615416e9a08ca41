//! The chat bench's load: streams held open at once, resume and stop samples, and the process
//! and Redis readings taken around them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;

use super::{HeldStreams, ResumeFigures};
use crate::bench::stats::Summary;
use crate::model_server::LocalModelServer;

/// This process's user + system CPU time, from /proc/self/stat (clock ticks of 1/100 s).
fn cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) * 10.0)
        })
        .unwrap_or(0.0)
}

/// A Redis server's counter or gauge from `INFO` (`total_commands_processed`, `used_memory`).
async fn redis_info(url: &str, field: &str) -> Option<i64> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO").query_async(&mut conn).await.ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
}

/// Our resident set size, from /proc/self/status.
fn rss_kib() -> u64 {
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

/// Opens `n` streams at once and reads them to their end; what that cost.
pub(super) async fn hold_streams(
    n: usize,
    http: &reqwest::Client,
    url: &str,
    resume: bool,
    redis_url: Option<&str>,
) -> HeldStreams {
    let commands_before = match redis_url {
        Some(u) => redis_info(u, "total_commands_processed").await,
        None => None,
    };
    let memory_before = match redis_url {
        Some(u) => redis_info(u, "used_memory").await,
        None => None,
    };
    let rss_before = rss_kib();
    let cpu_before = cpu_ms();
    let started = Instant::now();
    let opened = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let req = http
            .post(url)
            .json(&serde_json::json!({"prompt": format!("stream {i} {}", rand::random::<u32>())}));
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let outcome = async {
                let resp = req.send().await?;
                anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
                let mut body = resp.bytes_stream();
                body.next().await.context("empty body")??;
                Ok((sent.elapsed(), body))
            }
            .await;
            opened.wait().await;
            let (first, mut body) = outcome?;
            while let Some(chunk) = body.next().await {
                chunk?;
            }
            anyhow::Ok(first)
        }));
    }
    opened.wait().await;
    let rss_open = rss_kib();
    let memory_open = match redis_url {
        Some(u) => redis_info(u, "used_memory").await,
        None => None,
    };
    let mut first_bytes = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(first)) => first_bytes.push(first),
            Ok(Err(e)) => {
                errors += 1;
                tracing::warn!(error = %e, "bench stream failed");
            }
            Err(_) => errors += 1,
        }
    }
    let all_ended = started.elapsed();
    let cpu = cpu_ms() - cpu_before;
    let commands_after = match redis_url {
        Some(u) => redis_info(u, "total_commands_processed").await,
        None => None,
    };
    HeldStreams {
        resume,
        streams: n,
        ok: first_bytes.len(),
        errors,
        first_byte: Summary::of(&mut first_bytes),
        all_ended_ms: all_ended.as_secs_f64() * 1000.0,
        cpu_ms: cpu,
        rss_before_kib: rss_before,
        rss_open_kib: rss_open,
        rss_per_stream_kib: rss_open.saturating_sub(rss_before) as f64 / n.max(1) as f64,
        redis_commands: commands_before
            .zip(commands_after)
            .map(|(b, a)| (a - b).max(0) as u64),
        redis_memory_open_kib: memory_before.zip(memory_open).map(|(b, o)| (o - b) / 1024),
    }
}

/// Resume and stop samples of each kind (fewer when `--requests` is smaller).
pub(super) const RESUME_SAMPLES: usize = 20;

/// `samples` times: a signed-in reply started at `producer`, read to its first byte; a resume
/// GET at `reader`, timed to its first byte; a stop POST at `reader`, timed to the model server
/// seeing its connection closed.
pub(super) async fn resume_and_stop(
    http: &reqwest::Client,
    producer: &str,
    reader: &str,
    token: &str,
    model: &LocalModelServer,
    samples: usize,
) -> anyhow::Result<ResumeFigures> {
    let mut resumes = Vec::with_capacity(samples);
    let mut stops = Vec::with_capacity(samples);
    for i in 0..samples {
        let resp = http
            .post(producer)
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .json(&serde_json::json!({"prompt": format!("resume me {i}")}))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
        let mut body = resp.bytes_stream();
        body.next().await.context("empty body")??;
        // The journal is written every 100 ms: let a write reach a shared cache.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let resumed = http
            .get(format!("{reader}/stream"))
            .bearer_auth(token)
            .send()
            .await?;
        anyhow::ensure!(
            resumed.status().as_u16() == 200,
            "resume: HTTP {}",
            resumed.status()
        );
        let mut replay = resumed.bytes_stream();
        replay.next().await.context("empty replay")??;
        resumes.push(started.elapsed());
        drop(replay);
        drop(body);
        let closed_before = model.cancelled_at().len();
        let started = Instant::now();
        let stopped = http
            .post(format!("{reader}/stop"))
            .bearer_auth(token)
            .send()
            .await?;
        anyhow::ensure!(
            stopped.status().as_u16() == 200,
            "stop: HTTP {}",
            stopped.status()
        );
        let waited = Instant::now();
        let closed = loop {
            if let Some(at) = model.cancelled_at().get(closed_before) {
                break *at;
            }
            anyhow::ensure!(
                waited.elapsed() < Duration::from_secs(10),
                "the model never saw the stop"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        stops.push(closed.saturating_duration_since(started));
    }
    Ok(ResumeFigures {
        resume_first_byte: Summary::of(&mut resumes),
        stop_to_model_closed: Summary::of(&mut stops),
    })
}
