//! A dashboard page as it is stored and answered: the JSON shape ([`Page`]), the cached form
//! with its ETag and CDN tags ([`PageBody`]), the header maps each cache entry gets once
//! ([`ReadyPage`], kept per worker thread), and the per-request headers (`Server-Timing`, the
//! 304 on a matching `If-None-Match`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    Timings, CDN_CACHE_CONTROL, PRIVATE_CACHE_CONTROL, PUBLIC_CACHE_CONTROL, VERCEL_CACHE_TAG,
};
use crate::cache::CacheStatus;
use crate::cdn;
use crate::db::categories::Category;
use crate::platform::error::ApiError;

/// The JSON of a page: the categories, the page's companions, and the total.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<C> {
    pub categories: Vec<Category>,
    pub companions: Vec<C>,
    pub total: i64,
    pub total_is_estimate: bool,
    pub page: u32,
    pub page_size: u32,
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
    pub fn from_cached(raw: &Bytes) -> Option<PageBody> {
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

pub fn serialize<C: Serialize>(page: Page<C>, tags: &[String]) -> PageBody {
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
pub(super) fn ready_page(raw: &Bytes) -> Result<Arc<ReadyPage>, ApiError> {
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

pub(super) fn respond(
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

/// `cache;dur=…, db;dur=…, total;dur=…` in milliseconds with three decimals (the one header
/// that differs on every request: written straight into its bytes).
fn server_timing(db: Duration, total: Duration) -> HeaderValue {
    fn push_ms(out: &mut Vec<u8>, d: Duration) {
        let micros = d.as_micros();
        out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
        let fraction = (micros % 1000) as u16;
        out.extend_from_slice(&[
            b'.',
            b'0' + (fraction / 100) as u8,
            b'0' + (fraction / 10 % 10) as u8,
            b'0' + (fraction % 10) as u8,
        ]);
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
