//! `GET /api/cron/refresh`: Vercel Cron's job (on AWS Lambda, an EventBridge schedule's).
//! Refreshes the read model, invalidates the dashboard, rebuilds the anonymous static
//! snapshots, drains the purge outbox (the CDN purges owed for companions hidden by any writer),
//! and writes the replies the reply journal still holds, reporting each step's outcome and
//! duration. A failed step makes the answer 503
//! with `"status": "partial"` and the failed steps named, so the cron's log shows the run as
//! failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Extension, Json};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::cache::keys::{self, Area};
use crate::cdn::{self, Purge};
use crate::config::Secret;
use crate::dashboard;
use crate::db::{privacy, read_model, DbError};
use crate::platform::app::App;
use crate::platform::background::Background;
use crate::platform::error::{report_unavailable, ApiError};
use crate::platform::outbox;
use crate::platform::schedule::ScheduledInvocation;

/// How long a run holds the lock that keeps runs from overlapping; longer than a refresh takes,
/// short enough that a crashed run doesn't block the next scheduled one.
pub const REFRESH_LOCK_TTL: Duration = Duration::from_secs(120);
/// Deadline of the read model's refresh statement: a refresh of a large read model takes
/// seconds, more than a page query may; within the function's `maxDuration` (60 s).
pub const REFRESH_QUERY_TIMEOUT: Duration = Duration::from_secs(45);

pub fn router(app: Arc<App>) -> MethodRouter {
    get(refresh).with_state(app)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `refreshed` (every step worked: 200), `partial` (some failed: 503) or `skipped`
    /// (another run holds the lock: 200).
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// Names of the steps that failed, so a cron log line says what went wrong.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed: Vec<&'static str>,
    steps: Vec<Step>,
    total_ms: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Step {
    name: &'static str,
    ok: bool,
    ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    /// What failed, in words (no secrets, no addresses).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Step {
    fn new(name: &'static str, started: Instant, outcome: Result<Option<usize>, String>) -> Step {
        let (ok, count, error) = match outcome {
            Ok(count) => (true, count, None),
            Err(e) => (false, None, Some(e)),
        };
        if let Some(error) = &error {
            tracing::warn!(step = name, error = %error, "cron refresh step failed");
        }
        Step {
            name,
            ok,
            ms: ms(started),
            count,
            error,
        }
    }
}

async fn refresh(
    State(app): State<Arc<App>>,
    bg: Background,
    scheduled: Option<Extension<ScheduledInvocation>>,
    headers: HeaderMap,
) -> Response {
    // A schedule the platform delivered needs no secret: no client can make one (see
    // `platform::schedule`); every HTTP call, the function URL's too, needs it.
    if scheduled.is_none() {
        if let Err(e) = authorize(
            app.config.cron_secret.as_ref().map(Secret::expose),
            &headers,
        ) {
            return e.into_response();
        }
    }
    let started = Instant::now();
    let Some(lock) = app
        .cache
        .try_lock(&keys::job_lock("refresh"), REFRESH_LOCK_TTL)
        .await
    else {
        return Json(Report {
            status: "skipped",
            reason: Some("another refresh is running"),
            failed: Vec::new(),
            steps: Vec::new(),
            total_ms: ms(started),
        })
        .into_response();
    };
    let mut steps = Vec::new();
    if !lock.is_held() {
        steps.push(Step::new(
            "takeLock",
            started,
            Err("the cache is unreachable: ran without the lock that keeps runs apart".into()),
        ));
    }
    steps.extend(run_steps(&app, &bg).await);
    app.cache.unlock(lock).await;
    let failed: Vec<&'static str> = steps.iter().filter(|s| !s.ok).map(|s| s.name).collect();
    let report = Report {
        status: if failed.is_empty() {
            "refreshed"
        } else {
            "partial"
        },
        reason: None,
        failed,
        steps,
        total_ms: ms(started),
    };
    if report.failed.is_empty() {
        return Json(report).into_response();
    }
    // Non-2xx so Vercel's cron log shows the run as failed; the body says which step.
    report_unavailable(report)
}

/// Every step, each run whatever the others did (a snapshot rebuild still helps when the
/// refresh failed), each with its outcome.
async fn run_steps(app: &Arc<App>, bg: &Background) -> Vec<Step> {
    let mut steps = Vec::new();

    let t = Instant::now();
    let refreshed = async {
        // The refresh legitimately takes longer than a page query: its own deadline.
        let db = app.db.with_statement_deadline(REFRESH_QUERY_TIMEOUT);
        let client = db.get().await?;
        read_model::refresh_read_model(&client, &app.system_user_id).await?;
        Ok::<_, DbError>(None)
    }
    .await
    .map_err(describe_db_error);
    steps.push(Step::new("refreshReadModel", t, refreshed));

    // Bump first, so the snapshots below are written under the new generation.
    let t = Instant::now();
    let bumped = app
        .cache
        .bump_generation(Area::Dashboard)
        .await
        .map(|_| None)
        .map_err(|e| format!("cache: {}", e.kind()));
    steps.push(Step::new("bumpGeneration", t, bumped));

    let t = Instant::now();
    let rebuilt = dashboard::snapshot::rebuild_all(app)
        .await
        .map(Some)
        .map_err(|e| match e {
            dashboard::snapshot::RebuildError::Db(e) => describe_db_error(e),
            other => other.to_string(),
        });
    steps.push(Step::new("rebuildSnapshots", t, rebuilt));

    // Purges owed for companions hidden since (by any writer), whatever failed before; then the
    // rows the refreshed read model no longer needs.
    let t = Instant::now();
    let drained = async {
        let purged = outbox::drain(app).await.map_err(|e| match e {
            outbox::DrainError::Db(e) => describe_db_error(e),
            other => other.to_string(),
        })?;
        let client = app.db.get().await.map_err(describe_db_error)?;
        privacy::prune_purged(&client)
            .await
            .map_err(describe_db_error)?;
        Ok::<_, String>(Some(purged))
    }
    .await;
    steps.push(Step::new("drainPurgeOutbox", t, drained));
    // Replies whose database write failed (or whose process died mid-reply) are written from
    // their journal, idempotently by message id.
    let t = Instant::now();
    let drained = drain_reply_journal(app).await;
    steps.push(Step::new("drainReplyJournal", t, drained));

    // The CDN's copies of every page are marked stale (served while they revalidate), so the
    // refreshed order and counts reach visitors without waiting out s-maxage. Retried after
    // the response if Vercel's API fails.
    if app.cdn.is_enabled() {
        let cdn = app.cdn.clone();
        bg.wait_until(async move {
            cdn.purge_with_retry(Purge::Invalidate, vec![cdn::DASHBOARD_TAG.to_owned()])
                .await;
        });
    }
    steps
}

/// Writes the due journals of the reply journal; `Ok(written)` unless some still failed.
async fn drain_reply_journal(app: &Arc<App>) -> Result<Option<usize>, String> {
    let drained = crate::chat::reply::journal::drain_due(app, DRAIN_LIMIT).await?;
    if drained.failed > 0 {
        return Err(format!(
            "database: a due reply could not be written; {} were, the rest wait for the next run",
            drained.written
        ));
    }
    Ok(Some(drained.written))
}

/// Journals one cron run drains at most (more wait for the next run, or the next request).
pub const DRAIN_LIMIT: usize = 1000;

fn describe_db_error(e: DbError) -> String {
    match e {
        DbError::Timeout => "database: timed out".to_owned(),
        DbError::PoolExhausted => "database: no connection available".to_owned(),
        DbError::Unavailable(_) => "database: unavailable".to_owned(),
        DbError::CircuitOpen => {
            "database: skipped (circuit open after repeated failures)".to_owned()
        }
        other => {
            tracing::error!(error = %other, "cron refresh: database error");
            "database: error (logged)".to_owned()
        }
    }
}

/// Vercel Cron sends `Authorization: Bearer $CRON_SECRET`. Compared in constant time (of
/// digests, so the secret's length doesn't leak either); with no secret configured nothing
/// passes.
fn authorize(secret: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(secret) = secret else {
        return Err(ApiError::Unauthorized(
            "the cron route is disabled: CRON_SECRET is not set".to_owned(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let expected = format!("Bearer {secret}");
    let ok = Sha256::digest(given).ct_eq(&Sha256::digest(expected.as_bytes()));
    if bool::from(ok) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("invalid cron secret".to_owned()))
    }
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn only_the_exact_secret_passes() {
        assert!(authorize(Some("s3cret"), &bearer("Bearer s3cret")).is_ok());
        assert!(authorize(Some("s3cret"), &bearer("Bearer s3cre")).is_err());
        assert!(authorize(Some("s3cret"), &bearer("Bearer s3cret ")).is_err());
        assert!(authorize(Some("s3cret"), &bearer("s3cret")).is_err());
        assert!(authorize(Some("s3cret"), &HeaderMap::new()).is_err());
    }

    #[test]
    fn without_a_configured_secret_nothing_passes() {
        assert!(authorize(None, &bearer("Bearer ")).is_err());
        assert!(authorize(None, &HeaderMap::new()).is_err());
    }
}
