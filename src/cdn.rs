//! Vercel's CDN: the cache tags public responses carry (`Vercel-Cache-Tag`), and purging by tag
//! through Vercel's REST API when something a cached response shows has changed.
//!
//! Two kinds of purge, as Vercel's API names them: `invalidate-by-tags` marks entries stale (the
//! CDN keeps serving them while it revalidates: fine for an edited name), and
//! `dangerously-delete-by-tags` deletes them (the next request waits for the origin: what a
//! companion that became private needs, so no copy of a page listing it is served again).
//!
//! Purges are coalesced per process ([`Cdn::purge_coalesced`]): every purge asked for within
//! `CDN_PURGE_COALESCE_MS` (1 s) of the first goes out in one request per kind, its tags merged,
//! and each asker learns that request's outcome. The API's quota is what privacy purges depend
//! on; a burst of edits, or of hides drained by several requests at once, spends one call.
//!
//! Written as a small client on the shared `reqwest` client: it is two POST requests.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderValue;
use serde::Serialize;

use crate::config::CdnConfig;

/// How long one purge request may take.
pub const PURGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of a purge that failed (network, 5xx, 429), and the pause before the first retry
/// (doubled before each next one).
pub const PURGE_ATTEMPTS: u32 = 4;
pub const PURGE_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Most tags one response carries; a page of 50 companions plus its own two fits.
pub const MAX_TAGS_PER_RESPONSE: usize = 64;
/// Vercel's longest tag.
pub const MAX_TAG_CHARS: usize = 256;

/// The tag of every dashboard page.
pub const DASHBOARD_TAG: &str = "dashboard";

/// The tag of dashboard pages filtered to one category.
pub fn category_tag(category_id: &str) -> String {
    format!("dashboard:category:{category_id}")
}

/// The tag of every public response that lists the companion.
pub fn companion_tag(companion_id: &str) -> String {
    format!("companion:{companion_id}")
}

/// The `Vercel-Cache-Tag` value for `tags` (comma-separated). Tags that could break the header
/// (commas, spaces, control characters, too long) are left out; at most
/// [`MAX_TAGS_PER_RESPONSE`].
pub fn cache_tag_header<S: AsRef<str>>(tags: &[S]) -> Option<HeaderValue> {
    let value = tags
        .iter()
        .map(AsRef::as_ref)
        .filter(|t| {
            !t.is_empty()
                && t.len() <= MAX_TAG_CHARS
                && t.bytes().all(|b| b.is_ascii_graphic() && b != b',')
        })
        .take(MAX_TAGS_PER_RESPONSE)
        .collect::<Vec<_>>()
        .join(",");
    (!value.is_empty())
        .then(|| HeaderValue::from_str(&value).ok())
        .flatten()
}

/// Which purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Mark stale: served while it revalidates in the background.
    Invalidate,
    /// Delete: the next request goes to the origin.
    Delete,
}

impl Purge {
    fn path(self) -> &'static str {
        match self {
            Purge::Invalidate => "/v1/edge-cache/invalidate-by-tags",
            Purge::Delete => "/v1/edge-cache/dangerously-delete-by-tags",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purge::Invalidate => "invalidate",
            Purge::Delete => "delete",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CdnError {
    #[error("the purge request failed: {0}")]
    Request(String),
    #[error("Vercel answered HTTP {0}")]
    Status(u16),
}

impl CdnError {
    /// Worth trying again: the network, a server error, or being told to slow down.
    fn is_transient(&self) -> bool {
        match self {
            CdnError::Request(_) => true,
            CdnError::Status(s) => *s >= 500 || *s == 429,
        }
    }
}

#[derive(Serialize)]
struct PurgeBody<'a> {
    tags: &'a [String],
}

/// The purge client; off (every purge a no-op) without a token.
#[derive(Clone)]
pub struct Cdn {
    config: Option<CdnConfig>,
    http: reqwest::Client,
    /// The batch of each kind still gathering tags ([`Purge::Invalidate`], [`Purge::Delete`]).
    gathering: Arc<Mutex<[Option<Gathering>; 2]>>,
}

/// A batch gathering tags until its window closes; its request's outcome is sent to everyone
/// who added to it.
struct Gathering {
    tags: BTreeSet<String>,
    outcome: tokio::sync::watch::Receiver<Option<bool>>,
}

impl Purge {
    fn slot(self) -> usize {
        match self {
            Purge::Invalidate => 0,
            Purge::Delete => 1,
        }
    }
}

impl Cdn {
    pub fn new(config: Option<CdnConfig>, http: reqwest::Client) -> Self {
        Cdn {
            config,
            http,
            gathering: Arc::new(Mutex::new([None, None])),
        }
    }

    /// Purges `tags` together with every other purge of the same kind asked for in this
    /// process within the coalescing window; returns whether the request that carried them went
    /// through (after its retries). The request is sent by a task of its own, so an asker that
    /// gives up cancels nothing for the others.
    pub async fn purge_coalesced(&self, purge: Purge, tags: Vec<String>) -> bool {
        let Some(config) = &self.config else {
            return true;
        };
        if tags.is_empty() {
            return true;
        }
        let window = config.coalesce_window;
        let mut outcome = {
            let mut gathering = self
                .gathering
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &mut gathering[purge.slot()] {
                Some(batch) => {
                    batch.tags.extend(tags);
                    batch.outcome.clone()
                }
                slot @ None => {
                    let (sender, outcome) = tokio::sync::watch::channel(None);
                    *slot = Some(Gathering {
                        tags: tags.into_iter().collect(),
                        outcome: outcome.clone(),
                    });
                    let cdn = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(window).await;
                        let batch = cdn
                            .gathering
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)[purge.slot()]
                        .take();
                        let tags: Vec<String> = batch
                            .map(|b| b.tags.into_iter().collect())
                            .unwrap_or_default();
                        let ok = cdn.purge_with_retry(purge, tags).await;
                        let _ = sender.send(Some(ok));
                    });
                    outcome
                }
            }
        };
        loop {
            if let Some(ok) = *outcome.borrow_and_update() {
                return ok;
            }
            if outcome.changed().await.is_err() {
                return false;
            }
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.config.is_some()
    }

    /// One purge request.
    pub async fn purge(&self, purge: Purge, tags: &[String]) -> Result<(), CdnError> {
        let Some(config) = &self.config else {
            return Ok(());
        };
        let mut query = vec![("projectIdOrName", config.project.as_str())];
        if let Some(team) = &config.team {
            query.push(("teamId", team.as_str()));
        }
        let response = self
            .http
            .post(format!("{}{}", config.api_url, purge.path()))
            .query(&query)
            .bearer_auth(config.token.expose())
            .timeout(PURGE_TIMEOUT)
            .json(&PurgeBody { tags })
            .send()
            .await
            .map_err(|e| CdnError::Request(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(CdnError::Status(status.as_u16()))
        }
    }

    /// Purges, retrying transient failures with backoff; logs the outcome. Returns whether it
    /// went through. Meant to run after the response (`wait_until`): a purge never fails the
    /// request that made it necessary.
    pub async fn purge_with_retry(&self, purge: Purge, tags: Vec<String>) -> bool {
        if !self.is_enabled() || tags.is_empty() {
            return true;
        }
        let mut pause = PURGE_RETRY_PAUSE;
        for attempt in 1..=PURGE_ATTEMPTS {
            match self.purge(purge, &tags).await {
                Ok(()) => {
                    tracing::info!(
                        purge = purge.as_str(),
                        tags = tags.len(),
                        attempt,
                        "CDN purged"
                    );
                    return true;
                }
                Err(e) if e.is_transient() && attempt < PURGE_ATTEMPTS => {
                    tracing::warn!(purge = purge.as_str(), attempt, error = %e, "CDN purge failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    tracing::error!(
                        purge = purge.as_str(),
                        tags = ?tags,
                        attempt,
                        error = %e,
                        "CDN purge failed; cached copies stay until they expire"
                    );
                    return false;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_header_joins_safe_tags_and_drops_the_rest() {
        let tags = vec![
            DASHBOARD_TAG.to_owned(),
            companion_tag("comp_1"),
            "has space".to_owned(),
            "a,b".to_owned(),
            "x".repeat(MAX_TAG_CHARS + 1),
        ];
        assert_eq!(
            cache_tag_header(&tags).unwrap(),
            "dashboard,companion:comp_1"
        );
        assert!(cache_tag_header::<String>(&[]).is_none());
    }

    #[tokio::test]
    async fn without_a_token_purging_is_off_and_succeeds_silently() {
        let cdn = Cdn::new(None, reqwest::Client::new());
        assert!(!cdn.is_enabled());
        assert!(cdn.purge_with_retry(Purge::Delete, vec!["x".into()]).await);
        assert!(cdn.purge_coalesced(Purge::Delete, vec!["x".into()]).await);
    }
}
