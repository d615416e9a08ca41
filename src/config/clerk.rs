//! The Clerk section: where the session-token key comes from, issuer, authorized parties,
//! leeway (`CLERK_*`).

use std::time::Duration;

use super::{ConfigError, Env};

/// Clock skew allowed on `exp`, `nbf` and `iat` of session tokens.
pub const DEFAULT_CLERK_LEEWAY: Duration = Duration::from_secs(5);

/// Where the session-token verification key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClerkKey {
    /// `CLERK_JWT_KEY`: the instance's public key as PEM.
    Pem(String),
    /// `CLERK_JWKS_URL`: fetched once, cached, refetched on an unknown `kid`.
    JwksUrl(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClerkConfig {
    /// None: nobody can sign in, every request is anonymous, and any token is 401.
    pub key: Option<ClerkKey>,
    pub issuer: Option<String>,
    pub authorized_parties: Vec<String>,
    pub leeway: Duration,
}

pub(super) fn clerk_config(env: &Env) -> Result<ClerkConfig, ConfigError> {
    let key = match (env.get("CLERK_JWT_KEY"), env.http_url("CLERK_JWKS_URL")?) {
        (Some(pem), _) => {
            let pem = pem.replace("\\n", "\n");
            if !pem.contains("-----BEGIN PUBLIC KEY-----") {
                return Err(ConfigError::Invalid {
                    name: "CLERK_JWT_KEY",
                    reason: "must be a PEM public key (-----BEGIN PUBLIC KEY-----)".into(),
                });
            }
            jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                ConfigError::Invalid {
                    name: "CLERK_JWT_KEY",
                    reason: e.to_string(),
                }
            })?;
            Some(ClerkKey::Pem(pem))
        }
        (None, Some(url)) => Some(ClerkKey::JwksUrl(url)),
        (None, None) => None,
    };
    let authorized_parties = env
        .get("CLERK_AUTHORIZED_PARTIES")
        .map(|v| {
            v.split(',')
                .map(|p| p.trim().trim_end_matches('/').to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Ok(ClerkConfig {
        key,
        issuer: env.get("CLERK_ISSUER"),
        authorized_parties,
        leeway: env.millis("CLERK_LEEWAY_MS", DEFAULT_CLERK_LEEWAY)?,
    })
}
