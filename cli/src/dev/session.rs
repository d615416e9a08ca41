//! Development-only sign-in: with no Clerk key configured, `gcbb dev` signs session tokens itself
//! for the owners of the companions in its database (the demo data's `user_demo_1..3`), so the
//! front end can be used signed in without Clerk.
//!
//! Only `gcbb dev`'s router has this route, and only when it generated the key: the functions'
//! library never learns about it, and a deployment (which verifies Clerk's tokens) cannot
//! reach it. The key pair is new on every start, so tokens die with the process.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gcbb::db::querier::Querier;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::types::{ToSql, Type};

use gcbb::platform::app::App;
use gcbb::platform::error::ApiError;
use gcbb::platform::http::JsonBody;

use crate::session_token::{clerk_claims, SigningKey};

/// The route: `GET` lists the users one may sign in as, `POST` issues a token for one of them.
pub const SESSION_PATH: &str = "/__dev/session";
/// Lifetime of an issued token; the page asks for a new one before it runs out.
pub const TOKEN_TTL: Duration = Duration::from_secs(60 * 60);
/// How many companion owners are offered (a benchmark-seeded database has thousands).
const MAX_OFFERED_USERS: i64 = 10;

/// The key pair `gcbb dev` signs its development tokens with.
pub struct DevSigner {
    key: SigningKey,
    /// Fingerprint of the public key, sent as the tokens' `kid`: a page holding a token from an
    /// earlier run sees the key changed and asks for a new token instead of getting a 401.
    key_id: String,
    /// `CLERK_ISSUER` when set, so the tokens pass the same checks as Clerk's.
    issuer: Option<String>,
}

impl DevSigner {
    /// A new RSA key pair (a few hundred milliseconds: run it off the async threads).
    pub fn generate(issuer: Option<String>) -> anyhow::Result<DevSigner> {
        let key = SigningKey::generate()?;
        let digest = Sha256::digest(key.public_pem.as_bytes());
        Ok(DevSigner {
            key_id: format!("dev-{}", hex::encode(&digest[..8])),
            key,
            issuer,
        })
    }

    /// The public key as PEM: the value `gcbb dev` gives `CLERK_JWT_KEY`.
    pub fn public_pem(&self) -> &str {
        &self.key.public_pem
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn issue(&self, user_id: &str) -> IssuedSession {
        let ttl = TOKEN_TTL.as_secs() as i64;
        let claims = clerk_claims(user_id, self.issuer.as_deref(), ttl);
        IssuedSession {
            token: self.key.sign(Some(&self.key_id), &claims),
            user_id: user_id.to_owned(),
            expires_at: claims["exp"].as_i64().unwrap_or_default(),
            key_id: self.key_id.clone(),
        }
    }
}

#[derive(Clone)]
struct SessionState {
    app: Arc<App>,
    signer: Arc<DevSigner>,
}

/// The development sign-in route, to merge into `gcbb dev`'s router.
pub fn router(app: Arc<App>, signer: Arc<DevSigner>) -> Router {
    Router::new()
        .route(SESSION_PATH, get(list_users).post(issue_session))
        .with_state(SessionState { app, signer })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserList {
    users: Vec<String>,
    key_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SessionRequest {
    user_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct IssuedSession {
    token: String,
    user_id: String,
    /// Unix seconds.
    expires_at: i64,
    key_id: String,
}

/// `GET`: the users one may sign in as.
async fn list_users(State(state): State<SessionState>) -> Result<Response, ApiError> {
    let users = list_companion_owners(&state.app).await?;
    Ok(no_store(Json(UserList {
        users,
        key_id: state.signer.key_id.clone(),
    })))
}

/// `POST {"userId"}`: a session token for that user, who must be one of [`list_users`]'s.
async fn issue_session(
    State(state): State<SessionState>,
    JsonBody(request): JsonBody<SessionRequest>,
) -> Result<Response, ApiError> {
    let users = list_companion_owners(&state.app).await?;
    if !users.contains(&request.user_id) {
        return Err(ApiError::bad_parameter(
            "userId",
            format!(
                "not a user gcbb dev signs in; one of: {}",
                if users.is_empty() {
                    "none (the database has no companion owners)".to_owned()
                } else {
                    users.join(", ")
                }
            ),
        ));
    }
    let session = state.signer.issue(&request.user_id);
    tracing::info!(user_id = %session.user_id, "dev session issued");
    Ok(no_store(Json(session)))
}

/// The owners of companions, the platform excluded (signing in as it would make one the
/// creator of every demo group).
async fn list_companion_owners(app: &App) -> Result<Vec<String>, ApiError> {
    let client = app.db.get().await?;
    let rows = client
        .query_typed(
            "SELECT \"userId\" FROM \"Companion\" WHERE \"userId\" <> $1 \
             GROUP BY \"userId\" ORDER BY \"userId\" LIMIT $2",
            &[
                (
                    &app.config.system_user_id as &(dyn ToSql + Sync),
                    Type::TEXT,
                ),
                (&MAX_OFFERED_USERS, Type::INT8),
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Tokens are personal: never stored by a cache.
fn no_store(body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::Value;

    fn part(token: &str, i: usize) -> Value {
        let raw = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(i).unwrap())
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    }

    #[test]
    fn an_issued_token_names_its_key_user_and_issuer_and_expires_in_an_hour() {
        let signer = DevSigner::generate(Some("https://clerk.example".into())).unwrap();
        let session = signer.issue("user_demo_1");
        assert_eq!(part(&session.token, 0)["kid"], signer.key_id());
        let claims = part(&session.token, 1);
        assert_eq!(claims["sub"], "user_demo_1");
        assert_eq!(claims["iss"], "https://clerk.example");
        assert_eq!(claims["exp"].as_i64(), Some(session.expires_at));
        let ttl = session.expires_at - chrono::Utc::now().timestamp();
        assert!((3590..=3600).contains(&ttl), "{ttl}");
        assert!(signer
            .public_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----"));
    }
}
