//! Who is asking: anonymous, or a Clerk user proven by a verified session token.
//!
//! Rules:
//! - No credentials → anonymous. A token that is present but invalid → 401 naming the kind of
//!   failure, never anonymous (a bad token must not quietly turn into the public view).
//! - RS256 only; `exp` required, `nbf`/`iat` checked with `ClerkConfig.leeway`; `sub` non-empty;
//!   `iss` when `CLERK_ISSUER` is set; `azp` when `CLERK_AUTHORIZED_PARTIES` is set, with Clerk's
//!   rule that a token without `azp` is accepted (see `token.rs`).
//! - Keys: `CLERK_JWT_KEY` (no `kid` needed) or `CLERK_JWKS_URL` (`kid` required; see `jwks.rs`).
//!   No key configured → every token is 401, requests without one are anonymous.
//! - The key set can't be fetched → 503 `Unavailable("auth keys")`, not 401: the token may be
//!   fine, and a 401 makes front ends sign the user out; nor anonymous, which would serve the
//!   wrong data. 503 tells the client to retry.
//!
//! Tokens are never logged, and no error message repeats one.

mod credentials;
mod crypto;
mod jwks;
mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::DecodingKey;

use crate::config::{ClerkConfig, ClerkKey};
use crate::id::UserId;
use crate::platform::error::ApiError;

pub use credentials::{has_credentials, read_session_token, session_token, SESSION_COOKIE};
pub use jwks::{
    JWKS_FETCH_TIMEOUT, JWKS_MAX_BYTES, JWKS_MIN_REFETCH_INTERVAL, JWKS_RETRY_AFTER_FAILURE,
};
pub use token::{Claims, MAX_TOKEN_BYTES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    Anonymous,
    User { user_id: UserId },
}

impl Viewer {
    pub fn user_id(&self) -> Option<&UserId> {
        match self {
            Viewer::Anonymous => None,
            Viewer::User { user_id } => Some(user_id),
        }
    }
}

/// Why a request's credentials were refused. Messages name the kind of failure only.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("session tokens are not accepted: no verification key is configured")]
    NoKey,
    #[error("unsupported authorization scheme (expected Bearer)")]
    UnsupportedScheme,
    #[error("malformed authorization header")]
    BadAuthorizationHeader,
    #[error("empty bearer token")]
    EmptyToken,
    #[error("malformed token")]
    Malformed,
    #[error("unexpected algorithm")]
    UnexpectedAlgorithm,
    #[error("invalid signature")]
    InvalidSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("issuer mismatch")]
    IssuerMismatch,
    #[error("unauthorized party")]
    UnauthorizedParty,
    #[error("missing claim `{0}`")]
    MissingClaim(&'static str),
    #[error("token has no key id")]
    MissingKeyId,
    #[error("unknown signing key")]
    UnknownKey,
    /// The key set could not be fetched; not the token's fault.
    #[error("session-token keys unavailable")]
    KeysUnavailable,
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::KeysUnavailable => ApiError::Unavailable("auth keys"),
            other => ApiError::Unauthorized(other.to_string()),
        }
    }
}

enum Keys {
    None,
    Pem(Arc<DecodingKey>),
    Jwks(jwks::JwksKeys),
}

pub struct Authenticator {
    keys: Keys,
    rules: token::Rules,
}

impl Authenticator {
    pub fn new(cfg: &ClerkConfig, http: reqwest::Client) -> Self {
        crypto::install();
        let keys = match &cfg.key {
            None => Keys::None,
            Some(ClerkKey::Pem(pem)) => match DecodingKey::from_rsa_pem(pem.as_bytes()) {
                Ok(key) => Keys::Pem(Arc::new(key)),
                Err(error) => {
                    // Config::from_vars already refuses a bad CLERK_JWT_KEY; this is a
                    // hand-built ClerkConfig. Refuse every token rather than panic.
                    tracing::error!(error = %error, "CLERK_JWT_KEY is not an RSA public key");
                    Keys::None
                }
            },
            Some(ClerkKey::JwksUrl(url)) => Keys::Jwks(jwks::JwksKeys::new(url.clone(), http)),
        };
        Authenticator {
            keys,
            rules: token::Rules::new(cfg),
        }
    }

    /// Overrides `JWKS_MIN_REFETCH_INTERVAL` (tests of key rotation; no effect without a JWKS URL).
    pub fn with_jwks_min_refetch_interval(mut self, interval: Duration) -> Self {
        if let Keys::Jwks(jwks) = &mut self.keys {
            jwks.min_refetch_interval = interval;
        }
        self
    }

    /// Overrides `JWKS_FETCH_TIMEOUT` (no effect without a JWKS URL).
    pub fn with_jwks_fetch_timeout(mut self, timeout: Duration) -> Self {
        if let Keys::Jwks(jwks) = &mut self.keys {
            jwks.fetch_timeout = timeout;
        }
        self
    }

    /// Verifies a session token and returns the user id (`sub`).
    pub async fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        self.verify_claims(token)
            .await
            .map(|c| UserId::issued(c.user_id))
    }

    /// Verifies a session token and returns its claims.
    pub async fn verify_claims(&self, token: &str) -> Result<Claims, AuthError> {
        if matches!(self.keys, Keys::None) {
            return Err(AuthError::NoKey);
        }
        let header = token::read_header(token)?;
        let key = match &self.keys {
            Keys::None => return Err(AuthError::NoKey),
            Keys::Pem(key) => Arc::clone(key),
            Keys::Jwks(jwks) => {
                let kid = header.kid.as_deref().ok_or(AuthError::MissingKeyId)?;
                jwks.key(kid).await?
            }
        };
        self.rules.verify(token, &key)
    }

    /// Who sent these headers: anonymous, a verified user, or an error (401, or 503 when the
    /// keys can't be fetched).
    pub async fn viewer(&self, headers: &axum::http::HeaderMap) -> Result<Viewer, AuthError> {
        match read_session_token(headers)? {
            None => Ok(Viewer::Anonymous),
            Some(token) => Ok(Viewer::User {
                user_id: self.verify(&token).await?,
            }),
        }
    }
}

/// What the [`Viewer`] extractor needs from a router's state: the verifier of session tokens.
/// (The process's state implements it; this module doesn't need to know that type.)
pub trait HasAuthenticator {
    fn authenticator(&self) -> &Authenticator;
}

impl<S: HasAuthenticator + Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        state
            .authenticator()
            .viewer(&parts.headers)
            .await
            .map_err(|error| {
                if !matches!(error, AuthError::KeysUnavailable) {
                    tracing::info!(reason = %error, "credentials refused");
                }
                ApiError::from(error)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: Option<ClerkKey>) -> ClerkConfig {
        ClerkConfig {
            key,
            issuer: None,
            authorized_parties: vec![],
            leeway: crate::config::DEFAULT_CLERK_LEEWAY,
        }
    }

    #[tokio::test]
    async fn without_a_key_any_token_is_refused_and_no_token_is_anonymous() {
        let auth = Authenticator::new(&config(None), reqwest::Client::new());
        assert!(matches!(auth.verify("a.b.c").await, Err(AuthError::NoKey)));
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(auth.viewer(&headers).await.unwrap(), Viewer::Anonymous);
        headers.insert("cookie", "__session=x.y.z".parse().unwrap());
        assert!(matches!(auth.viewer(&headers).await, Err(AuthError::NoKey)));
    }

    #[tokio::test]
    async fn a_bad_pem_in_a_hand_built_config_refuses_tokens() {
        let auth = Authenticator::new(
            &config(Some(ClerkKey::Pem("not a key".into()))),
            reqwest::Client::new(),
        );
        assert!(matches!(auth.verify("a.b.c").await, Err(AuthError::NoKey)));
    }

    #[test]
    fn unavailable_keys_are_503_and_everything_else_401() {
        assert_eq!(ApiError::from(AuthError::KeysUnavailable).status(), 503);
        assert_eq!(ApiError::from(AuthError::Expired).status(), 401);
        assert_eq!(ApiError::from(AuthError::UnknownKey).status(), 401);
        assert_eq!(ApiError::from(AuthError::NoKey).status(), 401);
    }
}
