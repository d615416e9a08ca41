//! Clerk's signing keys from `CLERK_JWKS_URL`: fetched on first use, kept for the life of the
//! process, and fetched again when a token names a `kid` we don't hold (key rotation).
//!
//! - One fetch at a time, shared by every request waiting for it (a single flight run on a task
//!   of its own, so a waiter that gives up doesn't cancel it for the others); each waiter waits
//!   at most the fetch's own timeout.
//! - Known keys never wait: a request whose `kid` we hold is verified at once, even while a
//!   refresh hangs.
//! - Refetches are limited to one per `JWKS_MIN_REFETCH_INTERVAL` (a few seconds) after a
//!   success, so tokens with made-up `kid`s can't turn us into a load generator against Clerk.
//!   A token with an unknown `kid` that arrives sooner doesn't get a 401 for it: it waits for
//!   the one refetch that starts when the interval is over (shared by every such request), then
//!   verifies or fails. During a key rotation, the first tokens signed with the new key
//!   arrive right after some other fetch as often as not; answering them 401 would sign their
//!   users out.
//! - A failure is remembered for `JWKS_RETRY_AFTER_FAILURE`, stamped when the fetch *ended*, so
//!   requests arriving meanwhile answer 503 at once instead of each waiting for a fetch of its
//!   own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::AuthError;

/// Shortest time between two fetches of the key set (after a successful fetch); an unknown
/// `kid` arriving sooner waits for the fetch at the end of it.
pub const JWKS_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(3);
/// How long a failed fetch is remembered (requests meanwhile answer 503 without fetching):
/// short, because until a fetch succeeds every signed-in request with an unknown key is 503.
pub const JWKS_RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Whole-request timeout of one fetch (connect, headers and body).
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set we read; Clerk's holds one or two keys (about 1 KB).
pub const JWKS_MAX_BYTES: usize = 256 * 1024;

type KeyMap = HashMap<String, Arc<DecodingKey>>;
/// The fetch in flight, awaited by every request that needs it; `None` when it failed.
type Flight = Shared<BoxFuture<'static, Option<Arc<KeyMap>>>>;

pub(crate) struct JwksKeys {
    url: String,
    http: reqwest::Client,
    pub(crate) min_refetch_interval: Duration,
    pub(crate) fetch_timeout: Duration,
    shared: Arc<SharedKeys>,
}

/// What the fetch task and the requests share.
struct SharedKeys {
    /// Read on every request without waiting for a fetch in progress.
    keys: RwLock<Arc<KeyMap>>,
    fetch: Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    /// The fetch in flight (perhaps still waiting for its turn) and when it will have ended.
    in_flight: Option<(Flight, Instant)>,
    /// When the last fetch ended, and whether it worked.
    last: Option<(Instant, bool)>,
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("key set larger than {JWKS_MAX_BYTES} bytes")]
    TooLarge,
    #[error("not a JSON Web Key Set: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no usable RS256 signing key with a kid")]
    NoUsableKey,
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

impl JwksKeys {
    pub(crate) fn new(url: String, http: reqwest::Client) -> Self {
        JwksKeys {
            url,
            http,
            min_refetch_interval: JWKS_MIN_REFETCH_INTERVAL,
            fetch_timeout: JWKS_FETCH_TIMEOUT,
            shared: Arc::new(SharedKeys {
                keys: RwLock::new(Arc::new(KeyMap::new())),
                fetch: Mutex::new(FetchState::default()),
            }),
        }
    }

    /// The key named `kid`, fetching the set when we don't hold it and may fetch.
    ///
    /// Unknown after a fetch (or with a fetch not yet allowed) → `UnknownKey` (401); a failed
    /// fetch → `KeysUnavailable` (503): the token may well be valid, we just can't tell now.
    pub(crate) async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let (flight, done_by) = {
            let mut state = self.shared.fetch.lock().unwrap_or_else(|p| p.into_inner());
            // A fetch may have ended between the look-up above and taking the lock.
            if let Some(key) = self.cached(kid) {
                return Ok(key);
            }
            match &state.in_flight {
                Some(flight) => flight.clone(),
                None => {
                    let mut delay = Duration::ZERO;
                    if let Some((ended, ok)) = state.last {
                        let since = ended.elapsed();
                        if ok && since < self.min_refetch_interval {
                            // Too soon to fetch again: this request waits for the fetch at
                            // the end of the interval rather than hearing "unknown key".
                            delay = self.min_refetch_interval - since;
                        } else if !ok
                            && since < self.min_refetch_interval.min(JWKS_RETRY_AFTER_FAILURE)
                        {
                            return Err(AuthError::KeysUnavailable);
                        }
                    }
                    let flight = (
                        self.start_fetch(delay),
                        Instant::now() + delay + self.fetch_timeout,
                    );
                    state.in_flight = Some(flight.clone());
                    flight
                }
            }
        };
        // The fetch is bounded by its own timeout; this bounds the wait even if the task were
        // never scheduled.
        let deadline = tokio::time::Instant::from_std(done_by + Duration::from_millis(100));
        match tokio::time::timeout_at(deadline, flight).await {
            Ok(Some(keys)) => keys.get(kid).cloned().ok_or(AuthError::UnknownKey),
            Ok(None) | Err(_) => Err(AuthError::KeysUnavailable),
        }
    }

    fn cached(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        let keys = self.shared.keys.read().ok()?;
        keys.get(kid).cloned()
    }

    /// Starts the one fetch on a task of its own (after `delay`), which records its outcome
    /// when it ends.
    fn start_fetch(&self, delay: Duration) -> Flight {
        let http = self.http.clone();
        let url = self.url.clone();
        let timeout = self.fetch_timeout;
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let outcome = fetch_keys(&http, &url, timeout).await;
            let mut state = shared.fetch.lock().unwrap_or_else(|p| p.into_inner());
            state.in_flight = None;
            state.last = Some((Instant::now(), outcome.is_ok()));
            match outcome {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), "fetched session-token keys");
                    let keys = Arc::new(keys);
                    // A rotated-out key disappears here on purpose: the set replaces, never
                    // merges.
                    if let Ok(mut slot) = shared.keys.write() {
                        *slot = Arc::clone(&keys);
                    }
                    Some(keys)
                }
                Err(error) => {
                    tracing::warn!(error = %error, "session-token key fetch failed");
                    None
                }
            }
        });
        async move { task.await.ok().flatten() }.boxed().shared()
    }
}

async fn fetch_keys(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<KeyMap, FetchError> {
    let mut response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(timeout)
        .send()
        .await?
        .error_for_status()?;
    if response
        .content_length()
        .is_some_and(|n| n > JWKS_MAX_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > JWKS_MAX_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let keys = parse_key_set(&body)?;
    if keys.is_empty() {
        return Err(FetchError::NoUsableKey);
    }
    Ok(keys)
}

/// The RS256 signing keys of a JWKS document, by `kid`. Entries we can't use (other key types,
/// encryption keys, no `kid`) are skipped one by one rather than failing the whole set.
fn parse_key_set(body: &[u8]) -> Result<KeyMap, serde_json::Error> {
    let raw: RawKeySet = serde_json::from_slice(body)?;
    let mut keys = KeyMap::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if !matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256)) {
            continue;
        }
        if !matches!(
            jwk.common.public_key_use,
            None | Some(PublicKeyUse::Signature)
        ) {
            continue;
        }
        let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_rsa_components(&rsa.n, &rsa.e) {
            keys.insert(kid, Arc::new(key));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_entries_are_skipped_not_fatal() {
        let body = br#"{"keys":[
            {"kty":"RSA","kid":"good","alg":"RS256","use":"sig","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","alg":"RS256","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","kid":"ps","alg":"PS256","n":"AQAB","e":"AQAB"},
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
            {"kty":"weird","kid":"w"}
        ]}"#;
        let keys = parse_key_set(body).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["good"]);
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(parse_key_set(b"{}").is_err());
        assert!(parse_key_set(b"<html>").is_err());
    }
}
