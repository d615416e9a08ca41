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

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cache::keys::{self, Audience};
use crate::cache::{CacheStatus, ANONYMOUS_TTL, SIGNED_IN_TTL};
use crate::cdn;
use crate::db::categories::{self, Category};
use crate::db::companions::{self, CompanionCard, PageFilter, ViewerCompanionCard};
use crate::platform::app::App;
use crate::platform::auth::{self, Viewer};
use crate::platform::error::ApiError;
use crate::platform::input::Query;
use crate::platform::ratelimit::{self, RouteLimit};
pub use params::DashboardParams;

/// The response header Vercel's CDN reads cache tags from (and strips before the client).
pub const VERCEL_CACHE_TAG: &str = "vercel-cache-tag";
/// How long this process keeps a page that isn't worth sharing (searches, deep pages):
/// the memory store's lifetime when it is the cache; in front of Redis, the L1's.
pub const LOCAL_PAGE_TTL: Duration = Duration::from_secs(60);
/// Lifetime of the static snapshots the cron job writes (first pages of "all" and of each
/// category); they are generation-checked, so an edit still invalidates them at once.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// CDN caching of anonymous pages: fresh for the same 10 minutes as our own cache, then
/// served stale while the CDN revalidates (with our ETag, usually a cheap 304).
pub const CDN_CACHE_CONTROL: &str = "public, s-maxage=600, stale-while-revalidate=86400";
/// Browsers always revalidate, so a visitor never sees an older page than the CDN has.
pub const PUBLIC_CACHE_CONTROL: &str = "public, max-age=0, must-revalidate";
pub const PRIVATE_CACHE_CONTROL: &str = "private, no-store";

pub fn router(app: Arc<App>) -> MethodRouter {
    get(prefetch).with_state(app)
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

/// A serialized page with its strong validator and its CDN cache tags, stored together so a
/// cache hit costs no hashing and no JSON work: line one is the ETag, line two the tags
/// (`Vercel-Cache-Tag`), the rest the JSON body.
#[derive(Debug, Clone)]
pub struct PageBody {
    pub etag: String,
    pub tags: String,
    pub json: Bytes,
}

impl PageBody {
    fn new(json: Vec<u8>, tags: &[String]) -> PageBody {
        let digest = Sha256::digest(&json);
        PageBody {
            etag: format!("\"{}\"", hex::encode(&digest[..16])),
            tags: cdn::cache_tag_header(tags)
                .and_then(|v| v.to_str().ok().map(str::to_owned))
                .unwrap_or_default(),
            json: Bytes::from(json),
        }
    }

    pub fn to_cached(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.etag.len() + self.tags.len() + 2 + self.json.len());
        out.extend_from_slice(self.etag.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(self.tags.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&self.json);
        Bytes::from(out)
    }

    /// `None` for anything that isn't "etag\ntags\njson" (a corrupt entry is a miss, never
    /// garbage).
    fn from_cached(raw: &Bytes) -> Option<PageBody> {
        let first = raw.iter().position(|&b| b == b'\n')?;
        let second = first + 1 + raw[first + 1..].iter().position(|&b| b == b'\n')?;
        let etag = std::str::from_utf8(&raw[..first]).ok()?;
        if !(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34) {
            return None;
        }
        let tags = std::str::from_utf8(&raw[first + 1..second]).ok()?;
        Some(PageBody {
            etag: etag.to_owned(),
            tags: tags.to_owned(),
            json: raw.slice(second + 1..),
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
        params.category_id.as_deref(),
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
                let snapshot_key =
                    keys::dashboard_snapshot(params.category_id.as_deref()).at_privacy_epoch(epoch);
                let snapshot = app.cache.get(&snapshot_key).await;
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
    user_id: &str,
    timings: &Timings,
) -> Result<(Bytes, CacheStatus), ApiError> {
    let epoch = app.privacy.current(app).await?;
    let key = keys::dashboard_page(
        &Audience::SignedIn {
            user_id: user_id.to_owned(),
        },
        params.category_id.as_deref(),
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
    let Some(id) = params.category_id.as_deref() else {
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
    let (total, estimated) = settle_total(params, companions.len(), total, estimated);
    tracing::debug!(
        audience = "anonymous",
        page = params.page,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "dashboard page built"
    );
    let mut tags = vec![cdn::DASHBOARD_TAG.to_owned()];
    tags.extend(params.category_id.as_deref().map(cdn::category_tag));
    tags.extend(companions.iter().map(|c| cdn::companion_tag(&c.id)));
    Ok(serialize(
        Page::<CompanionCard> {
            categories,
            companions,
            total,
            total_is_estimate: estimated,
            page: params.page,
            page_size: params.page_size,
        },
        &tags,
    ))
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

async fn list_categories(app: &App) -> Result<Vec<Category>, ApiError> {
    let client = app.db.get().await?;
    Ok(categories::list_categories(&client).await?)
}

/// The exact public count when it finishes within the count timeout, else an estimate: the
/// category's count as of the last refresh, or with a search the planner's estimate of the
/// matches (never the category's count, which says nothing about the search).
async fn total_public(app: &App, filter: &PageFilter) -> Result<(i64, bool), ApiError> {
    let mut client = app.db.get().await?;
    match companions::count_public(&mut client, filter, app.config.dashboard_count_timeout).await? {
        Some(exact) => Ok((exact, false)),
        None => {
            tracing::info!(
                category = filter.category_id.as_deref(),
                search = filter.name_contains.is_some(),
                "dashboard count timed out; answering with an estimate"
            );
            let estimate = match filter.name_contains {
                None => companions::estimate_public(&client, filter).await?,
                Some(_) => companions::estimate_public_search(&client, filter).await?,
            };
            Ok((estimate, true))
        }
    }
}

/// An estimated total squared with the page itself: a page shorter than asked for is the last
/// one, so the total is exactly what came before it plus what it holds (as of the read model's
/// last refresh, like the count; an empty page past the first says nothing: the total may be
/// anywhere below its offset); a full page means at least that many. An exact count is kept as
/// it is.
fn settle_total(
    params: &DashboardParams,
    listed: usize,
    total: i64,
    estimated: bool,
) -> (i64, bool) {
    if !estimated {
        return (total, false);
    }
    let through_page = params.offset() + listed as i64;
    if listed == 0 && params.page > 1 {
        return (total, true);
    }
    if listed < params.page_size as usize {
        (through_page, false)
    } else {
        (total.max(through_page), true)
    }
}

fn serialize<C: Serialize>(page: Page<C>, tags: &[String]) -> PageBody {
    // Serializing plain structs of strings and numbers can't fail.
    PageBody::new(serde_json::to_vec(&page).unwrap_or_default(), tags)
}

/// A cached page ready to answer with: the header values of its validator and CDN tags built
/// once per cache entry, not per request, and the JSON body as a slice of the entry.
pub struct ReadyPage {
    /// The cache entry it was made from, held so that while this is kept no other value can
    /// take its place at the same address (which is how a later request recognises it).
    entry: Bytes,
    etag: HeaderValue,
    json: Bytes,
    /// The headers of a 200 for everyone (with the CDN's) and for one viewer, cloned per
    /// request: a clone copies a few pointers where building them hashes every name again.
    public_headers: HeaderMap,
    private_headers: HeaderMap,
}

impl ReadyPage {
    fn new(entry: Bytes, body: PageBody) -> Result<ReadyPage, ApiError> {
        let etag = HeaderValue::from_str(&body.etag)
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("unusable dashboard ETag")))?;
        let tags = (!body.tags.is_empty())
            .then(|| HeaderValue::from_str(&body.tags).ok())
            .flatten();
        let headers = |public: bool| {
            let mut h = HeaderMap::with_capacity(RESPONSE_HEADERS);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if public {
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(PUBLIC_CACHE_CONTROL),
                );
                h.insert(
                    CDN_CACHE_CONTROL_HEADER,
                    HeaderValue::from_static(CDN_CACHE_CONTROL),
                );
                if let Some(tags) = &tags {
                    h.insert(VERCEL_CACHE_TAG_HEADER, tags.clone());
                }
            } else {
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(PRIVATE_CACHE_CONTROL),
                );
            }
            h.insert(header::ETAG, etag.clone());
            h
        };
        Ok(ReadyPage {
            entry,
            public_headers: headers(true),
            private_headers: headers(false),
            etag,
            json: body.json,
        })
    }
}

/// Ready pages each worker thread keeps (a thread's own, so no lock): at most this many, the
/// oldest replaced first.
pub const READY_PAGES_PER_THREAD: usize = 32;

/// This thread's ready pages, and the slot the next one replaces once it is full.
type ReadyPages = (Vec<Arc<ReadyPage>>, usize);

thread_local! {
    static READY_PAGES: std::cell::RefCell<ReadyPages> =
        const { std::cell::RefCell::new((Vec::new(), 0)) };
}

/// The ready page of a cache entry: made the first time this thread sees the entry, then found
/// by the entry's identity (the cache hands out the same allocation while it keeps the value).
fn ready_page(raw: &Bytes) -> Result<Arc<ReadyPage>, ApiError> {
    let same_entry = |page: &&Arc<ReadyPage>| {
        page.entry.as_ptr() == raw.as_ptr() && page.entry.len() == raw.len()
    };
    if let Some(page) = READY_PAGES.with_borrow(|(pages, _)| pages.iter().find(same_entry).cloned())
    {
        return Ok(page);
    }
    let body = PageBody::from_cached(raw)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("undecodable dashboard entry")))?;
    let page = Arc::new(ReadyPage::new(raw.clone(), body)?);
    READY_PAGES.with_borrow_mut(|(pages, next)| {
        if pages.len() < READY_PAGES_PER_THREAD {
            pages.push(page.clone());
        } else {
            pages[*next] = page.clone();
            *next = (*next + 1) % READY_PAGES_PER_THREAD;
        }
    });
    Ok(page)
}

const CDN_CACHE_CONTROL_HEADER: HeaderName = HeaderName::from_static("cdn-cache-control");
const VERCEL_CACHE_TAG_HEADER: HeaderName = HeaderName::from_static(VERCEL_CACHE_TAG);
const X_CACHE_HEADER: HeaderName = HeaderName::from_static("x-cache");
const SERVER_TIMING_HEADER: HeaderName = HeaderName::from_static("server-timing");
/// Headers a dashboard response carries (with the rate limit's and the request id).
const RESPONSE_HEADERS: usize = 12;

fn respond(
    page: &ReadyPage,
    status: CacheStatus,
    public: bool,
    request: &HeaderMap,
    timings: &Timings,
    started: Instant,
) -> Response {
    let not_modified = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag_matches(v, page.etag.to_str().unwrap_or_default()));
    let mut h = if public {
        page.public_headers.clone()
    } else {
        page.private_headers.clone()
    };
    let mut response = if not_modified {
        h.remove(header::CONTENT_TYPE);
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Body::from(page.json.clone()))
    };
    h.insert(X_CACHE_HEADER, HeaderValue::from_static(status.as_str()));
    h.insert(
        SERVER_TIMING_HEADER,
        server_timing(timings.db(), started.elapsed()),
    );
    *response.headers_mut() = h;
    response
}

/// `cache;dur=…, db;dur=…, total;dur=…` in milliseconds with three decimals, written digit by
/// digit (it is the one header that differs on every request).
fn server_timing(db: Duration, total: Duration) -> HeaderValue {
    fn push_ms(out: &mut Vec<u8>, d: Duration) {
        let micros = d.as_micros();
        push_digits(out, micros / 1000);
        out.push(b'.');
        let frac = micros % 1000;
        out.extend_from_slice(&[
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
    }
    fn push_digits(out: &mut Vec<u8>, mut n: u128) {
        let mut digits = [0u8; 39];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[at..]);
    }
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"cache;dur=");
    push_ms(&mut out, total.saturating_sub(db));
    out.extend_from_slice(b", db;dur=");
    push_ms(&mut out, db);
    out.extend_from_slice(b", total;dur=");
    push_ms(&mut out, total);
    HeaderValue::from_maybe_shared(Bytes::from(out))
        .expect("digits, letters and punctuation are a valid header value")
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
        let body = PageBody::new(
            br#"{"companions":[]}"#.to_vec(),
            &["dashboard".to_owned(), "companion:c1".to_owned()],
        );
        let back = PageBody::from_cached(&body.to_cached()).unwrap();
        assert_eq!(back.etag, body.etag);
        assert_eq!(back.tags, "dashboard,companion:c1");
        assert_eq!(back.json, body.json);
        assert!(PageBody::from_cached(&Bytes::from_static(b"garbage")).is_none());
        assert!(PageBody::from_cached(&Bytes::from_static(b"\"x\"\n\n{}")).is_none());
    }

    #[test]
    fn an_estimate_is_squared_with_the_page_it_came_with() {
        let params = |page, q: Option<&str>| DashboardParams {
            category_id: None,
            q: q.map(str::to_owned),
            page,
            page_size: 10,
        };
        // A search that found nothing on the first page has no matches at all.
        assert_eq!(
            settle_total(&params(1, Some("zzzz")), 0, 1618, true),
            (0, false)
        );
        // A short page is the last one.
        assert_eq!(
            settle_total(&params(3, Some("ada")), 4, 1618, true),
            (24, false)
        );
        // A full page: at least what it reaches, still an estimate.
        assert_eq!(
            settle_total(&params(2, Some("ada")), 10, 5, true),
            (20, true)
        );
        assert_eq!(settle_total(&params(2, None), 10, 1618, true), (1618, true));
        // An empty page past the first proves nothing.
        assert_eq!(settle_total(&params(9, None), 0, 40, true), (40, true));
        // An exact count stands.
        assert_eq!(settle_total(&params(1, None), 3, 7, false), (7, false));
    }

    #[test]
    fn a_category_is_found_in_the_cached_list_only_where_an_entry_begins() {
        let list = serde_json::to_vec(&[
            Category {
                id: "cat_01".into(),
                name: "Games".into(),
            },
            Category {
                id: "cat_02".into(),
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

    #[test]
    fn server_timing_is_written_in_milliseconds_with_three_decimals() {
        let v = server_timing(
            Duration::from_micros(1_234),
            Duration::from_micros(5_000_007),
        );
        assert_eq!(
            v.to_str().unwrap(),
            "cache;dur=4998.773, db;dur=1.234, total;dur=5000.007"
        );
        let v = server_timing(Duration::ZERO, Duration::from_nanos(900));
        assert_eq!(
            v.to_str().unwrap(),
            "cache;dur=0.000, db;dur=0.000, total;dur=0.000"
        );
    }

    #[test]
    fn a_ready_page_is_made_once_per_cache_entry() {
        let body = PageBody::new(br#"{"companions":[]}"#.to_vec(), &["dashboard".to_owned()]);
        let entry = body.to_cached();
        let first = ready_page(&entry).unwrap();
        let again = ready_page(&entry.clone()).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(first.etag.to_str().unwrap(), body.etag);
        assert_eq!(first.public_headers[VERCEL_CACHE_TAG], "dashboard");
        assert!(first.private_headers.get(VERCEL_CACHE_TAG).is_none());
        assert_eq!(first.json, body.json);
        // The same bytes in another allocation are another entry.
        let copy = Bytes::copy_from_slice(&entry);
        assert!(!Arc::ptr_eq(&first, &ready_page(&copy).unwrap()));
        assert!(ready_page(&Bytes::from_static(b"garbage")).is_err());
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
