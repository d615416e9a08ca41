//! `GET /api/cron/refresh`: Vercel Cron's job. Refreshes the read model, invalidates the
//! dashboard, and rebuilds the anonymous static snapshots, reporting each step's duration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::cache::keys::{self, Area};
use crate::cdn::{self, Purge};
use crate::config::Secret;
use crate::dashboard::{self, DashboardParams};
use crate::db::{categories, read_model};
use crate::platform::app::App;
use crate::platform::background::Background;
use crate::platform::error::ApiError;

/// How long a run holds the lock that keeps runs from overlapping; longer than a refresh takes,
/// short enough that a crashed run doesn't block the next scheduled one.
pub const REFRESH_LOCK_TTL: Duration = Duration::from_secs(120);

pub fn router(app: Arc<App>) -> Router {
    crate::platform::routing::any_path("refresh", get(refresh)).with_state(app)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    steps: Vec<Step>,
    total_ms: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Step {
    name: &'static str,
    ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
}

async fn refresh(
    State(app): State<Arc<App>>,
    bg: Background,
    headers: HeaderMap,
) -> Result<Json<Report>, ApiError> {
    authorize(
        app.config.cron_secret.as_ref().map(Secret::expose),
        &headers,
    )?;
    let started = Instant::now();
    let Some(lock) = app
        .cache
        .try_lock(&keys::job_lock("refresh"), REFRESH_LOCK_TTL)
        .await
    else {
        return Ok(Json(Report {
            status: "skipped",
            reason: Some("another refresh is running"),
            steps: Vec::new(),
            total_ms: ms(started),
        }));
    };
    let outcome = run_steps(&app, &bg).await;
    app.cache.unlock(lock).await;
    let steps = outcome?;
    Ok(Json(Report {
        status: "refreshed",
        reason: None,
        steps,
        total_ms: ms(started),
    }))
}

async fn run_steps(app: &Arc<App>, bg: &Background) -> Result<Vec<Step>, ApiError> {
    let mut steps = Vec::new();

    let t = Instant::now();
    {
        let client = app.db.get().await?;
        read_model::refresh_read_model(&client, &app.config.system_user_id).await?;
    }
    steps.push(Step {
        name: "refreshReadModel",
        ms: ms(t),
        count: None,
    });

    // Bump first, so the snapshots below are written under the new generation.
    let t = Instant::now();
    let _ = app.cache.bump_generation(Area::Dashboard).await;
    steps.push(Step {
        name: "bumpGeneration",
        ms: ms(t),
        count: None,
    });

    let t = Instant::now();
    // Read now, not the process's recent view: snapshots are served by every instance, and one
    // written under an epoch older than the database's would never be read anyway.
    let epoch = app.privacy.read_now(&app.db).await?;
    let categories = {
        let client = app.db.get().await?;
        categories::list_categories(&client).await?
    };
    let mut written = 0;
    for category_id in std::iter::once(None).chain(categories.into_iter().map(|c| Some(c.id))) {
        let params = DashboardParams {
            category_id: category_id.clone(),
            q: None,
            page: 1,
            page_size: dashboard::params::DEFAULT_PAGE_SIZE,
        };
        let page = dashboard::build_anonymous_page(app, &params, &Default::default()).await?;
        let key = keys::dashboard_snapshot(category_id.as_deref()).at_privacy_epoch(epoch);
        if app
            .cache
            .put(&key, page.to_cached(), dashboard::SNAPSHOT_TTL)
            .await
            .is_ok()
        {
            written += 1;
        }
    }
    steps.push(Step {
        name: "rebuildSnapshots",
        ms: ms(t),
        count: Some(written),
    });

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
    Ok(steps)
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
