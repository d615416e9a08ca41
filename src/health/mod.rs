//! `GET /api/health`: is the database reachable, is the cache, and how fast. No secrets.
//!
//! `degraded` (200) when the database is up but the cache is not, with the reason (a cache
//! whose circuit breaker is open is not pinged: health reports the breaker, as requests see
//! it); `unavailable` (503, with `Retry-After`) when the database is down, or skipped by its
//! own circuit breaker (reported the same way, with the reason).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;
use serde::Serialize;

use crate::db::DbError;
use crate::platform::app::App;
use crate::platform::error::report_unavailable;

/// How long the database check may take before the function reports it unreachable.
pub const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router(app: Arc<App>) -> MethodRouter {
    get(health).with_state(app)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    status: &'static str,
    database: Check,
    cache: Check,
    version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<&'static str>,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    /// Why it is not ok, in words (no secrets, no addresses).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let (database, cache) = tokio::join!(check_database(&app), check_cache(&app));
    let report = Report {
        status: match (database.ok, cache.ok) {
            (true, true) => "ok",
            (true, false) => "degraded",
            (false, _) => "unavailable",
        },
        database,
        cache,
        version: env!("CARGO_PKG_VERSION"),
    };
    if !report.database.ok {
        return report_unavailable(report);
    }
    ([(header::CACHE_CONTROL, "no-store")], Json(report)).into_response()
}

async fn check_database(app: &App) -> Check {
    let started = Instant::now();
    let outcome = tokio::time::timeout(DB_CHECK_TIMEOUT, crate::db::health::ping(&app.db)).await;
    let (error, reason) = match outcome {
        Ok(Ok(())) => (None, None),
        // Skipped at once, as requests are; when a probe is due the ping started it.
        Ok(Err(DbError::CircuitOpen)) => (
            Some("circuit_open"),
            Some(app.db.breaker_status().describe()),
        ),
        Ok(Err(DbError::Timeout)) | Err(_) => (
            Some("timeout"),
            Some("the database did not answer within its deadline".to_owned()),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: database check failed");
            (Some("unreachable"), None)
        }
    };
    Check {
        ok: error.is_none(),
        backend: None,
        latency_ms: millis(started.elapsed()),
        error,
        reason,
    }
}

async fn check_cache(app: &App) -> Check {
    let started = Instant::now();
    let (error, reason) = match app.cache.breaker_status().filter(|b| b.open) {
        Some(b) => {
            // Skipped at once; when a probe is due this starts it, so health alone (no other
            // traffic) still sees the store come back.
            let _ = app.cache.ping().await;
            (Some("circuit_open"), Some(b.describe()))
        }
        None => match app.cache.ping().await {
            Ok(_) => (None, None),
            Err(e) => {
                tracing::warn!(error = %e, "health: cache check failed");
                (
                    Some("unreachable"),
                    Some(format!("ping failed: {}", e.kind())),
                )
            }
        },
    };
    Check {
        ok: error.is_none(),
        backend: Some(app.cache.backend_name()),
        latency_ms: millis(started.elapsed()),
        error,
        reason,
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}
