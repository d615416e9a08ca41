//! Percentiles and payload sizes for the bench reports.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

/// p50/p95/p99 of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl Summary {
    pub fn of(samples: &mut [Duration]) -> Summary {
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return f64::NAN;
            }
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i].as_secs_f64() * 1000.0
        };
        Summary {
            n: samples.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
        }
    }
}

/// Raw and gzip-compressed size of a payload (gzip at the default level, as a CDN would).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Payload {
    pub raw_bytes: usize,
    pub gzip_bytes: usize,
}

impl Payload {
    pub fn of(bytes: &[u8]) -> Payload {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = gz.write_all(bytes);
        let gzip_bytes = gz.finish().map(|v| v.len()).unwrap_or(0);
        Payload {
            raw_bytes: bytes.len(),
            gzip_bytes,
        }
    }
}

/// `1.2 KB`-style sizes for the table.
pub fn human_bytes(n: usize) -> String {
    match n {
        n if n >= 1024 * 1024 => format!("{:.2} MB", n as f64 / (1024.0 * 1024.0)),
        n if n >= 1024 => format!("{:.2} KB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_samples() {
        let mut s: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let sum = Summary::of(&mut s);
        assert_eq!(sum.n, 100);
        assert!((sum.p50_ms - 51.0).abs() < 1.01);
        assert!((sum.p99_ms - 99.0).abs() < 1.01);
    }

    #[test]
    fn gzip_shrinks_repetitive_json() {
        let json = "{\"a\":1},".repeat(200);
        let p = Payload::of(json.as_bytes());
        assert_eq!(p.raw_bytes, json.len());
        assert!(p.gzip_bytes < p.raw_bytes / 5);
    }
}
