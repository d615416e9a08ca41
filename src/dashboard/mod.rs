//! `GET /api/dashboard/prefetch`: categories, one page of companions and the total.
//!
//! Anonymous visitors (no credentials at all) get the minimal public payload, served from the
//! in-process cache, then Redis, then the cron job's static snapshot, then the read model, with
//! CDN cache headers and a strong ETag. Signed-in viewers also get their own private companions
//! and the tokens they burned, cached per user for a minute, never publicly cacheable.

pub mod params;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cache::keys::{self, Audience};
use crate::cache::{CacheStatus, ANONYMOUS_TTL, SIGNED_IN_TTL};
use crate::db::categories::{self, Category};
use crate::db::companions::{self, CompanionCard, PageFilter, ViewerCompanionCard};
use crate::platform::app::App;
use crate::platform::auth::{self, Viewer};
use crate::platform::error::ApiError;
use crate::platform::input::Query;
pub use params::DashboardParams;

/// Lifetime of the static snapshots the cron job writes (first pages of "all" and of each
/// category); they are generation-checked, so an edit still invalidates them at once.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// CDN caching of anonymous pages: fresh for the same 10 minutes as our own cache, then
/// served stale while the CDN revalidates (with our ETag, usually a cheap 304).
pub const CDN_CACHE_CONTROL: &str = "public, s-maxage=600, stale-while-revalidate=86400";
/// Browsers always revalidate, so a visitor never sees an older page than the CDN has.
pub const PUBLIC_CACHE_CONTROL: &str = "public, max-age=0, must-revalidate";
pub const PRIVATE_CACHE_CONTROL: &str = "private, no-store";

pub fn router(app: Arc<App>) -> Router {
    crate::platform::routing::any_path("dashboard", get(prefetch)).with_state(app)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<C> {
    categories: Vec<Category>,
    companions: Vec<C>,
    total: i64,
    total_is_estimate: bool,
    page: u32,
    page_size: u32,
}

/// A serialized page and its strong validator, stored together so a cache hit costs no
/// hashing: the first line is the ETag, the rest is the JSON body.
#[derive(Debug, Clone)]
pub struct PageBody {
    pub etag: String,
    pub json: Bytes,
}

impl PageBody {
    fn new(json: Vec<u8>) -> PageBody {
        let digest = Sha256::digest(&json);
        PageBody {
            etag: format!("\"{}\"", hex::encode(&digest[..16])),
            json: Bytes::from(json),
        }
    }

    pub fn to_cached(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.etag.len() + 1 + self.json.len());
        out.extend_from_slice(self.etag.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&self.json);
        Bytes::from(out)
    }

    /// `None` for anything that isn't "etag\njson" (a corrupt entry is a miss, never garbage).
    fn from_cached(raw: &Bytes) -> Option<PageBody> {
        let nl = raw.iter().position(|&b| b == b'\n')?;
        let etag = std::str::from_utf8(&raw[..nl]).ok()?;
        if !(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34) {
            return None;
        }
        Some(PageBody {
            etag: etag.to_owned(),
            json: raw.slice(nl + 1..),
        })
    }
}

/// What a request cost, for `Server-Timing`.
#[derive(Default)]
pub struct Timings {
    db_micros: AtomicU64,
}

impl Timings {
    fn add_db(&self, since: Instant) {
        self.db_micros
            .fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    fn db(&self) -> Duration {
        Duration::from_micros(self.db_micros.load(Ordering::Relaxed))
    }
}

async fn prefetch(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let params = DashboardParams::parse(&Query::of(&uri))?;
    let timings = Timings::default();
    let (body, status) = match &viewer {
        Viewer::Anonymous => anonymous_page(&app, &params, &timings).await?,
        Viewer::User { user_id } => viewer_page(&app, &params, user_id, &timings).await?,
    };
    // Public only when the request carried no credentials at all: the CDN serves a cached
    // response to a request with a cookie, so a cookie (even an empty or foreign one) makes it
    // private.
    let public = matches!(viewer, Viewer::Anonymous) && !auth::has_credentials(&headers);
    Ok(respond(&body, status, public, &headers, &timings, started))
}

/// The anonymous page: memory → Redis → static snapshot → read model.
pub async fn anonymous_page(
    app: &App,
    params: &DashboardParams,
    timings: &Timings,
) -> Result<(PageBody, CacheStatus), ApiError> {
    let key = keys::dashboard_page(
        &Audience::Anonymous,
        params.category_id.as_deref(),
        params.q.as_deref(),
        params.page,
        params.page_size,
    );
    let from_snapshot = std::sync::atomic::AtomicBool::new(false);
    let cached = app
        .cache
        .get_or_build(&key, ANONYMOUS_TTL, || async {
            if params.is_snapshot_page() {
                let snapshot = app
                    .cache
                    .get(&keys::dashboard_snapshot(params.category_id.as_deref()))
                    .await;
                if let Some(raw) = snapshot
                    .value
                    .filter(|v| PageBody::from_cached(v).is_some())
                {
                    from_snapshot.store(true, Ordering::Relaxed);
                    return Ok(raw);
                }
            }
            let body = build_anonymous_page(app, params, timings).await?;
            Ok::<_, ApiError>(body.to_cached())
        })
        .await?;
    let status = if from_snapshot.load(Ordering::Relaxed) {
        CacheStatus::Static
    } else {
        cached.status
    };
    decode(&cached.value, status)
}

async fn viewer_page(
    app: &App,
    params: &DashboardParams,
    user_id: &str,
    timings: &Timings,
) -> Result<(PageBody, CacheStatus), ApiError> {
    let key = keys::dashboard_page(
        &Audience::SignedIn {
            user_id: user_id.to_owned(),
        },
        params.category_id.as_deref(),
        params.q.as_deref(),
        params.page,
        params.page_size,
    );
    let cached = app
        .cache
        .get_or_build(&key, SIGNED_IN_TTL, || async {
            let body = build_viewer_page(app, params, user_id, timings).await?;
            Ok::<_, ApiError>(body.to_cached())
        })
        .await?;
    decode(&cached.value, cached.status)
}

fn decode(raw: &Bytes, status: CacheStatus) -> Result<(PageBody, CacheStatus), ApiError> {
    PageBody::from_cached(raw)
        .map(|b| (b, status))
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("undecodable dashboard entry")))
}

fn filter_of(params: &DashboardParams) -> PageFilter {
    PageFilter {
        category_id: params.category_id.clone(),
        name_contains: params.q.clone(),
        limit: i64::from(params.page_size),
        offset: params.offset(),
    }
}

/// Builds an anonymous page from the read model: three queries on three connections at once.
pub async fn build_anonymous_page(
    app: &App,
    params: &DashboardParams,
    timings: &Timings,
) -> Result<PageBody, ApiError> {
    let started = Instant::now();
    let filter = filter_of(params);
    let (categories, companions, (total, estimated)) = tokio::try_join!(
        list_categories(app),
        async {
            let client = app.db.get().await?;
            Ok::<_, ApiError>(companions::list_public_page(&client, &filter).await?)
        },
        total_public(app, &filter),
    )?;
    timings.add_db(started);
    tracing::debug!(
        audience = "anonymous",
        page = params.page,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "dashboard page built"
    );
    Ok(serialize(Page::<CompanionCard> {
        categories,
        companions,
        total,
        total_is_estimate: estimated,
        page: params.page,
        page_size: params.page_size,
    }))
}

pub async fn build_viewer_page(
    app: &App,
    params: &DashboardParams,
    user_id: &str,
    timings: &Timings,
) -> Result<PageBody, ApiError> {
    let started = Instant::now();
    let filter = filter_of(params);
    let system_user_id = app.config.system_user_id.as_str();
    let (categories, companions, (public_total, estimated), own_private) = tokio::try_join!(
        list_categories(app),
        async {
            let client = app.db.get().await?;
            Ok::<_, ApiError>(
                companions::list_viewer_page(&client, &filter, user_id, system_user_id).await?,
            )
        },
        total_public(app, &filter),
        async {
            let client = app.db.get().await?;
            Ok::<_, ApiError>(companions::count_own_private(&client, &filter, user_id).await?)
        },
    )?;
    timings.add_db(started);
    tracing::debug!(
        audience = "signed-in",
        page = params.page,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "dashboard page built"
    );
    Ok(serialize(Page::<ViewerCompanionCard> {
        categories,
        companions,
        total: public_total + own_private,
        total_is_estimate: estimated,
        page: params.page,
        page_size: params.page_size,
    }))
}

async fn list_categories(app: &App) -> Result<Vec<Category>, ApiError> {
    let client = app.db.get().await?;
    Ok(categories::list_categories(&client).await?)
}

/// The exact public count when it finishes within the count timeout, else the estimate.
async fn total_public(app: &App, filter: &PageFilter) -> Result<(i64, bool), ApiError> {
    let mut client = app.db.get().await?;
    match companions::count_public(&mut client, filter, app.config.dashboard_count_timeout).await? {
        Some(exact) => Ok((exact, false)),
        None => {
            tracing::info!(
                category = filter.category_id.as_deref(),
                "dashboard count timed out; answering with an estimate"
            );
            Ok((companions::estimate_public(&client, filter).await?, true))
        }
    }
}

fn serialize<C: Serialize>(page: Page<C>) -> PageBody {
    // Serializing plain structs of strings and numbers can't fail.
    PageBody::new(serde_json::to_vec(&page).unwrap_or_default())
}

fn respond(
    body: &PageBody,
    status: CacheStatus,
    public: bool,
    request: &HeaderMap,
    timings: &Timings,
    started: Instant,
) -> Response {
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag_matches(v, &body.etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/json")],
            body.json.clone(),
        )
            .into_response()
    };
    let h = response.headers_mut();
    if public {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(PUBLIC_CACHE_CONTROL),
        );
        h.insert(
            "cdn-cache-control",
            HeaderValue::from_static(CDN_CACHE_CONTROL),
        );
    } else {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(PRIVATE_CACHE_CONTROL),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&body.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert("x-cache", HeaderValue::from_static(status.as_str()));
    let total = started.elapsed();
    let db = timings.db();
    let timing = format!(
        "cache;dur={:.3}, db;dur={:.3}, total;dur={:.3}",
        ms(total.saturating_sub(db)),
        ms(db),
        ms(total)
    );
    if let Ok(v) = HeaderValue::from_str(&timing) {
        h.insert("server-timing", v);
    }
    response
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `W/` prefixes are ignored.
fn etag_matches(header_value: &str, etag: &str) -> bool {
    header_value
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_page_round_trips_and_garbage_is_refused() {
        let body = PageBody::new(br#"{"companions":[]}"#.to_vec());
        let back = PageBody::from_cached(&body.to_cached()).unwrap();
        assert_eq!(back.etag, body.etag);
        assert_eq!(back.json, body.json);
        assert!(PageBody::from_cached(&Bytes::from_static(b"garbage")).is_none());
        assert!(PageBody::from_cached(&Bytes::from_static(b"\"x\"\n{}")).is_none());
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let etag = "\"abc\"";
        assert!(etag_matches("\"abc\"", etag));
        assert!(etag_matches("W/\"abc\"", etag));
        assert!(etag_matches("\"x\", \"abc\"", etag));
        assert!(etag_matches("*", etag));
        assert!(!etag_matches("\"abd\"", etag));
    }
}
