//! Who is asking: anonymous, or a Clerk user proven by a verified session token.
//! STUB: the auth helper replaces the verification with the real one.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::app::App;
use crate::config::ClerkConfig;
use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    Anonymous,
    User { user_id: String },
}

impl Viewer {
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Viewer::Anonymous => None,
            Viewer::User { user_id } => Some(user_id),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("session tokens are not accepted: no verification key is configured")]
    NoKey,
    #[error("invalid session token: {0}")]
    Invalid(String),
}

pub struct Authenticator {
    _cfg: ClerkConfig,
    _http: reqwest::Client,
}

impl Authenticator {
    pub fn new(cfg: &ClerkConfig, http: reqwest::Client) -> Self {
        Authenticator {
            _cfg: cfg.clone(),
            _http: http,
        }
    }

    /// Verifies a session token and returns the user id (`sub`).
    pub async fn verify(&self, _token: &str) -> Result<String, AuthError> {
        Err(AuthError::NoKey)
    }
}

/// The session token of a request: `Authorization: Bearer` first, else the `__session` cookie.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or_default();
        return Some(v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned());
    }
    None
}

/// True when the request carries any credential at all (header or cookie), valid or not.
/// A response to such a request must never be publicly cacheable.
pub fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::AUTHORIZATION)
        || headers
            .get_all(http::header::COOKIE)
            .iter()
            .any(|c| c.to_str().unwrap_or_default().contains("__session"))
}

impl FromRequestParts<Arc<App>> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        match session_token(&parts.headers) {
            None => Ok(Viewer::Anonymous),
            Some(token) => {
                let user_id = app
                    .auth
                    .verify(&token)
                    .await
                    .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
                Ok(Viewer::User { user_id })
            }
        }
    }
}
