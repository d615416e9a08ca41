//! Clerk's signing keys from `CLERK_JWKS_URL`: fetched on first use, kept for the life of the
//! process, and fetched again when a token names a `kid` we don't hold (key rotation).
//!
//! Refetches are limited to one per `JWKS_MIN_REFETCH_INTERVAL`, so tokens with made-up `kid`s
//! can't turn us into a load generator against Clerk. Fetches are serialised by one async
//! mutex: concurrent requests on a cold process cause one fetch, the others wait for it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::AuthError;

/// Shortest time between two fetches of the key set (after a successful fetch).
pub const JWKS_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Shortest time between two attempts after a failed fetch: short, because until it succeeds
/// every signed-in request is 503.
pub const JWKS_RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Whole-request timeout of one fetch (connect, headers and body).
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set we read; Clerk's holds one or two keys (about 1 KB).
pub const JWKS_MAX_BYTES: usize = 256 * 1024;

type KeyMap = HashMap<String, Arc<DecodingKey>>;

pub(crate) struct JwksKeys {
    url: String,
    http: reqwest::Client,
    pub(crate) min_refetch_interval: Duration,
    pub(crate) fetch_timeout: Duration,
    /// Read on every request without waiting for a fetch in progress.
    keys: RwLock<Arc<KeyMap>>,
    fetch: tokio::sync::Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_ok: bool,
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
            keys: RwLock::new(Arc::new(KeyMap::new())),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
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
        let mut state = self.fetch.lock().await;
        // Another request may have fetched while we waited for the lock.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        if let Some(at) = state.last_attempt {
            let wait = if state.last_ok {
                self.min_refetch_interval
            } else {
                self.min_refetch_interval.min(JWKS_RETRY_AFTER_FAILURE)
            };
            if at.elapsed() < wait {
                return Err(if state.last_ok {
                    AuthError::UnknownKey
                } else {
                    AuthError::KeysUnavailable
                });
            }
        }
        state.last_attempt = Some(Instant::now());
        match self.fetch_keys().await {
            Ok(keys) => {
                state.last_ok = true;
                tracing::info!(keys = keys.len(), "fetched session-token keys");
                let found = keys.get(kid).cloned();
                // A rotated-out key disappears here on purpose: the set replaces, never merges.
                if let Ok(mut slot) = self.keys.write() {
                    *slot = Arc::new(keys);
                }
                found.ok_or(AuthError::UnknownKey)
            }
            Err(error) => {
                state.last_ok = false;
                tracing::warn!(error = %error, "session-token key fetch failed");
                Err(AuthError::KeysUnavailable)
            }
        }
    }

    fn cached(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        let keys = self.keys.read().ok()?;
        keys.get(kid).cloned()
    }

    async fn fetch_keys(&self) -> Result<KeyMap, FetchError> {
        let mut response = self
            .http
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.fetch_timeout)
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
