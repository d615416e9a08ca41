//! `GET /api/dashboard/prefetch`: categories, one page of companions and the total.
//!
//! Anonymous visitors (no credentials at all) get the minimal public payload, served from the
//! in-process cache, then Redis, then the cron job's static snapshot, then the read model, with
//! CDN cache headers and a strong ETag. Signed-in viewers also get their own private companions
//! and the tokens they burned, cached per user for a minute, never publicly cacheable.
//!
//! This module is the handler and where each page is kept (the placement policy) and built;
//! [`page`] is the stored page and the answer made of it, [`total`] the total, [`snapshot`] the
//! cron's static snapshots.

pub mod page;
pub mod params;
pub mod snapshot;
pub mod total;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use bytes::Bytes;

use crate::cache::keys::{self, Audience};
use crate::cache::{CacheStatus, ANONYMOUS_TTL, SIGNED_IN_TTL};
use crate::cdn;
use crate::db::categories::{self, Category};
use crate::db::companions::{self, CompanionCard, PageFilter, ViewerCompanionCard};
use crate::id::{CategoryId, UserId};
use crate::platform::app::App;
use crate::platform::auth::{self, Viewer};
use crate::platform::error::ApiError;
use crate::platform::input::Query;
use crate::platform::ratelimit::{self, RouteLimit};
pub use page::{Page, PageBody};
pub use params::DashboardParams;
pub use snapshot::SNAPSHOT_TTL;

use page::{ready_page, respond, serialize};
use total::{settle_total, total_public};

/// The response header Vercel's CDN reads cache tags from (and strips before the client).
pub const VERCEL_CACHE_TAG: &str = "vercel-cache-tag";
/// How long this process keeps a page that isn't worth sharing (searches, deep pages):
/// the memory store's lifetime when it is the cache; in front of Redis, the L1's.
pub const LOCAL_PAGE_TTL: Duration = Duration::from_secs(60);
/// CDN caching of anonymous pages: fresh for the same 10 minutes as our own cache, then
/// served stale while the CDN revalidates (with our ETag, usually a cheap 304).
pub const CDN_CACHE_CONTROL: &str = "public, s-maxage=600, stale-while-revalidate=86400";
/// Browsers always revalidate, so a visitor never sees an older page than the CDN has.
pub const PUBLIC_CACHE_CONTROL: &str = "public, max-age=0, must-revalidate";
pub const PRIVATE_CACHE_CONTROL: &str = "private, no-store";

pub fn router(app: Arc<App>) -> MethodRouter {
    get(prefetch).with_state(app)
}

/// What a request cost, for `Server-Timing`.
#[derive(Default)]
pub struct Timings {
    db_micros: AtomicU64,
}

impl Timings {
    pub(super) fn add_db(&self, since: Instant) {
        self.db_micros
            .fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    pub(super) fn db(&self) -> Duration {
        Duration::from_micros(self.db_micros.load(Ordering::Relaxed))
    }
}

async fn prefetch(
    State(app): State<Arc<App>>,
    viewer: Viewer,
    request: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (headers, uri) = (request.headers(), request.uri());
    let params = DashboardParams::parse(&Query::of(uri))?;
    // Anonymous visitors aren't limited here: no check to make, and no future to build for it.
    // (The larger futures below are boxed where they are rarely needed, so the handler's own
    // future stays small: every layer of the router moves it.)
    let limit = dashboard_limit(&app, &params);
    let allowed = if limit.applies_to(&viewer) {
        let client = ratelimit::Client::of(&app, headers, request.extensions());
        Box::pin(ratelimit::check(&app, limit, &viewer, &client)).await?
    } else {
        None
    };
    let timings = Timings::default();
    let (raw, status) = match &viewer {
        Viewer::Anonymous => anonymous_page(&app, &params, &timings).await?,
        Viewer::User { user_id } => Box::pin(viewer_page(&app, &params, user_id, &timings)).await?,
    };
    // Public only when the request carried no credentials at all: the CDN serves a cached
    // response to a request with a cookie, so a cookie (even an empty or foreign one) makes it
    // private.
    let public = matches!(viewer, Viewer::Anonymous) && !auth::has_credentials(headers);
    let page = ready_page(&raw)?;
    let response = respond(&page, status, public, headers, &timings, started);
    // A public answer is shared by the CDN with everyone who asks the same URL: one client's
    // remaining count must not travel with it (a 429 is `no-store` and keeps its headers).
    let allowed = allowed.filter(|_| !public);
    Ok(ratelimit::apply(allowed, response))
}

/// Signed-in viewers are limited per user (each distinct page they ask for may be a build).
/// Anonymous ones only when they search, per client bucket: the CDN answers most of them, the
/// pages without a search are shared, and each search that reaches us is database work.
fn dashboard_limit(app: &App, params: &DashboardParams) -> RouteLimit {
    RouteLimit {
        route: "dashboard",
        signed_in: app.config.dashboard_rate_limit,
        anonymous: params
            .q
            .is_some()
            .then_some(app.config.anonymous_search_rate_limit),
    }
}

/// Where a page is kept: the shared cache for pages many visitors ask for; this process's
/// memory only for searches, deep pages and unknown categories, so a stream of distinct URLs
/// can't grow the shared cache without bound. Keys carry the privacy epoch
/// ([`crate::platform::privacy`]): nothing cached before a companion was hidden is read after.
async fn cached_page<F, Fut>(
    app: &App,
    key: keys::Key,
    shared: bool,
    ttl: Duration,
    build: F,
) -> Result<crate::cache::Cached, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Bytes, ApiError>>,
{
    if shared {
        app.cache.get_or_build(&key, ttl, build).await
    } else {
        app.cache
            .get_or_build_local(&key, LOCAL_PAGE_TTL, build)
            .await
    }
}

/// The anonymous page: memory → Redis → static snapshot → read model.
pub async fn anonymous_page(
    app: &Arc<App>,
    params: &DashboardParams,
    timings: &Timings,
) -> Result<(Bytes, CacheStatus), ApiError> {
    let epoch = app.privacy.current(app).await?;
    let key = keys::dashboard_page(
        &Audience::Anonymous,
        params.category_id.as_ref().map(CategoryId::as_str),
        params.q.as_deref(),
        params.page,
        params.page_size,
    )
    .at_privacy_epoch(epoch);
    let shared = params.is_worth_sharing()
        && (params.category_id.is_none() || Box::pin(is_known_category(app, params)).await?);
    let from_snapshot = std::sync::atomic::AtomicBool::new(false);
    // The build is boxed: only a miss needs it, and inline it would make every hit's future
    // as large as a build's.
    let cached = cached_page(app, key, shared, ANONYMOUS_TTL, || {
        Box::pin(async {
            if shared && params.is_snapshot_page() {
                if let Some(raw) = snapshot::read(
                    app,
                    params.category_id.as_ref().map(CategoryId::as_str),
                    epoch,
                )
                .await
                {
                    from_snapshot.store(true, Ordering::Relaxed);
                    return Ok(raw);
                }
            }
            let body = build_anonymous_page(app, params, timings).await?;
            Ok::<_, ApiError>(body.to_cached())
        })
    })
    .await?;
    let status = if from_snapshot.load(Ordering::Relaxed) {
        CacheStatus::Static
    } else {
        cached.status
    };
    Ok((cached.value, status))
}

async fn viewer_page(
    app: &Arc<App>,
    params: &DashboardParams,
    user_id: &UserId,
    timings: &Timings,
) -> Result<(Bytes, CacheStatus), ApiError> {
    let epoch = app.privacy.current(app).await?;
    let key = keys::dashboard_page(
        &Audience::SignedIn {
            user_id: user_id.to_string(),
        },
        params.category_id.as_ref().map(CategoryId::as_str),
        params.q.as_deref(),
        params.page,
        params.page_size,
    )
    .at_privacy_epoch(epoch);
    let shared = params.is_worth_sharing();
    let cached = cached_page(app, key, shared, SIGNED_IN_TTL, || async {
        let body = build_viewer_page(app, params, user_id, timings).await?;
        Ok::<_, ApiError>(body.to_cached())
    })
    .await?;
    Ok((cached.value, cached.status))
}

/// Whether the page's category (if any) exists: pages of made-up categories are empty, and
/// must not each take a shared cache entry.
async fn is_known_category(app: &App, params: &DashboardParams) -> Result<bool, ApiError> {
    let Some(id) = params.category_id.as_ref().map(CategoryId::as_str) else {
        return Ok(true);
    };
    let cached = app
        .cache
        .get_or_build(&keys::dashboard_categories(), ANONYMOUS_TTL, || {
            Box::pin(async {
                let categories = list_categories(app).await?;
                Ok::<_, ApiError>(Bytes::from(
                    serde_json::to_vec(&categories).unwrap_or_default(),
                ))
            })
        })
        .await?;
    Ok(lists_category(&cached.value, id))
}

/// Whether the cached categories (`[{"id":"…","name":"…"},…]`, as `serde_json` writes
/// [`Category`]) hold `id`, found in the bytes rather than by parsing the list on every request.
/// Exact: an id is letters, digits, `_` and `-` (validated), so it is written unescaped, and a
/// quote inside a name is escaped, so `{"id":"<id>",` only occurs where an entry begins.
fn lists_category(categories_json: &[u8], id: &str) -> bool {
    let mut needle = Vec::with_capacity(id.len() + 10);
    needle.extend_from_slice(b"{\"id\":\"");
    needle.extend_from_slice(id.as_bytes());
    needle.extend_from_slice(b"\",");
    categories_json
        .windows(needle.len())
        .any(|window| window == needle.as_slice())
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
    let (categories, (companions, total)) =
        tokio::try_join!(list_categories(app), public_page_and_total(app, params))?;
    timings.add_db(started);
    Ok(anonymous_body(
        params, categories, companions, total, started,
    ))
}

/// An anonymous page with categories listed once for several pages (the cron's snapshots).
pub async fn build_anonymous_page_with(
    app: &App,
    params: &DashboardParams,
    categories: Vec<Category>,
) -> Result<PageBody, ApiError> {
    let started = Instant::now();
    let (companions, total) = public_page_and_total(app, params).await?;
    Ok(anonymous_body(
        params, categories, companions, total, started,
    ))
}

/// The page's companions and their total (two queries on two connections at once).
async fn public_page_and_total(
    app: &App,
    params: &DashboardParams,
) -> Result<(Vec<CompanionCard>, (i64, bool)), ApiError> {
    let filter = filter_of(params);
    tokio::try_join!(
        async {
            let client = app.db.get().await?;
            Ok::<_, ApiError>(companions::list_public_page(&client, &filter).await?)
        },
        total_public(app, &filter),
    )
}

fn anonymous_body(
    params: &DashboardParams,
    categories: Vec<Category>,
    companions: Vec<CompanionCard>,
    (total, estimated): (i64, bool),
    started: Instant,
) -> PageBody {
    let (total, estimated) = settle_total(params, companions.len(), total, estimated);
    tracing::debug!(
        audience = "anonymous",
        page = params.page,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "dashboard page built"
    );
    let mut tags = vec![cdn::DASHBOARD_TAG.to_owned()];
    tags.extend(
        params
            .category_id
            .as_ref()
            .map(CategoryId::as_str)
            .map(cdn::category_tag),
    );
    tags.extend(companions.iter().map(|c| cdn::companion_tag(c.id.as_str())));
    serialize(
        Page::<CompanionCard> {
            categories,
            companions,
            total,
            total_is_estimate: estimated,
            page: params.page,
            page_size: params.page_size,
        },
        &tags,
    )
}

pub async fn build_viewer_page(
    app: &App,
    params: &DashboardParams,
    user_id: &UserId,
    timings: &Timings,
) -> Result<PageBody, ApiError> {
    let started = Instant::now();
    let filter = filter_of(params);
    let system_user_id = &app.system_user_id;
    let (categories, companions, (public_total, estimated), own) = tokio::try_join!(
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
            Ok::<_, ApiError>(companions::count_own_adjustment(&client, &filter, user_id).await?)
        },
    )?;
    timings.add_db(started);
    let (total, estimated) = settle_total(
        params,
        companions.len(),
        (public_total + own).max(0),
        estimated,
    );
    tracing::debug!(
        audience = "signed-in",
        page = params.page,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "dashboard page built"
    );
    // Never publicly cached, so no CDN tags.
    Ok(serialize(
        Page::<ViewerCompanionCard> {
            categories,
            companions,
            total,
            total_is_estimate: estimated,
            page: params.page,
            page_size: params.page_size,
        },
        &[],
    ))
}

pub(super) async fn list_categories(app: &App) -> Result<Vec<Category>, ApiError> {
    let client = app.db.get().await?;
    Ok(categories::list_categories(&client).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_category_is_found_in_the_cached_list_only_where_an_entry_begins() {
        let list = serde_json::to_vec(&[
            Category {
                id: CategoryId::issued("cat_01"),
                name: "Games".into(),
            },
            Category {
                id: CategoryId::issued("cat_02"),
                name: "{\"id\":\"cat_99\",".into(),
            },
        ])
        .unwrap();
        assert!(lists_category(&list, "cat_01"));
        assert!(lists_category(&list, "cat_02"));
        assert!(!lists_category(&list, "cat_0"));
        assert!(!lists_category(&list, "cat_99"), "a name is no entry");
        assert!(!lists_category(b"", "cat_01"));
    }
}
