//! `GET /api/health`: is the database reachable, is the cache, and how fast. No secrets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::platform::app::App;

/// How long the database check may take before the function reports it unreachable.
pub const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router(app: Arc<App>) -> Router {
    crate::platform::routing::any_path("health", get(health)).with_state(app)
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
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let (database, cache) = tokio::join!(check_database(&app), check_cache(&app));
    let status = match (database.ok, cache.ok) {
        (false, _) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
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
    (status, [(header::CACHE_CONTROL, "no-store")], Json(report)).into_response()
}

async fn check_database(app: &App) -> Check {
    let started = Instant::now();
    let outcome = tokio::time::timeout(DB_CHECK_TIMEOUT, crate::db::health::ping(&app.db)).await;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: database check failed");
            Some("unreachable")
        }
        Err(_) => Some("timeout"),
    };
    Check {
        ok: error.is_none(),
        backend: None,
        latency_ms: millis(started.elapsed()),
        error,
    }
}

async fn check_cache(app: &App) -> Check {
    let started = Instant::now();
    let error = match app.cache.ping().await {
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "health: cache check failed");
            Some("unreachable")
        }
    };
    Check {
        ok: error.is_none(),
        backend: Some(app.cache.backend_name()),
        latency_ms: millis(started.elapsed()),
        error,
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}
