//! Checking one Clerk session token against one key: shape, algorithm, signature, times and
//! the Clerk-specific claims (`sub`, `iss`, `azp`).
//!
//! `jsonwebtoken` does the signature and `exp`/`nbf`/`iss`; this module adds what it doesn't
//! check (`iat` in the future, non-empty `sub`, Clerk's `azp` rule) and reads the header itself
//! first so that `alg: none` or HS256 are named "unexpected algorithm" and no key lookup (and no
//! JWKS fetch) happens for a token we would refuse anyway.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::AuthError;
use crate::config::ClerkConfig;

/// Longest token we parse. Clerk session tokens are 1–2 KB; custom claims stay far below this.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The only algorithm Clerk signs session tokens with.
const ALGORITHM: Algorithm = Algorithm::RS256;

/// The verified claims of a session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: the Clerk user id.
    pub user_id: String,
    /// `sid`: the Clerk session id.
    pub session_id: Option<String>,
    /// `azp`: the origin the token was minted for.
    pub authorized_party: Option<String>,
    pub issuer: Option<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// What the header says before anything is trusted.
#[derive(Debug)]
pub(crate) struct TokenHeader {
    pub kid: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// Extensions we would have to understand (RFC 7515 §4.1.11); we understand none.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    iat: Option<serde_json::Number>,
    #[serde(default)]
    exp: Option<serde_json::Number>,
}

/// Reads the unverified header: shape, size and algorithm.
pub(crate) fn read_header(token: &str) -> Result<TokenHeader, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    if raw.alg != "RS256" {
        return Err(AuthError::UnexpectedAlgorithm);
    }
    if raw.crit.is_some() {
        return Err(AuthError::Malformed);
    }
    Ok(TokenHeader { kid: raw.kid })
}

/// The fixed part of the checks, built once from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    validation: Validation,
    leeway_secs: u64,
    /// Normalised without a trailing slash, like `CLERK_AUTHORIZED_PARTIES` in config.
    authorized_parties: HashSet<String>,
}

impl Rules {
    pub(crate) fn new(cfg: &ClerkConfig) -> Self {
        let leeway_secs = leeway_secs(cfg.leeway);
        let mut validation = Validation::new(ALGORITHM);
        validation.leeway = leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Clerk session tokens carry no `aud`; Clerk's SDK only checks it when asked to.
        validation.validate_aud = false;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &cfg.issuer {
            let issuer = issuer.trim_end_matches('/');
            validation.set_issuer(&[issuer.to_owned(), format!("{issuer}/")]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Rules {
            validation,
            leeway_secs,
            authorized_parties: cfg
                .authorized_parties
                .iter()
                .map(|p| p.trim_end_matches('/').to_owned())
                .collect(),
        }
    }

    /// Verifies signature and claims. Call `read_header` first.
    pub(crate) fn verify(&self, token: &str, key: &DecodingKey) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<RawClaims>(token, key, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let raw = data.claims;

        let now = now_secs();
        if let Some(iat) = raw.iat.as_ref().and_then(serde_json::Number::as_f64) {
            if iat > (now + self.leeway_secs) as f64 {
                return Err(AuthError::NotYetValid);
            }
        }
        let user_id = raw
            .sub
            .filter(|s| !s.trim().is_empty())
            .ok_or(AuthError::MissingClaim("sub"))?;
        // Clerk's rule (backend SDK `assertAuthorizedPartiesClaim`): a token WITH `azp` must name
        // one of the configured parties; a token without `azp` is accepted. We follow it so that
        // tokens Clerk's own middleware accepts are accepted here too. An empty `azp` is refused:
        // it is present and names no party.
        if !self.authorized_parties.is_empty() {
            if let Some(azp) = &raw.azp {
                if !self.authorized_parties.contains(azp.trim_end_matches('/')) {
                    return Err(AuthError::UnauthorizedParty);
                }
            }
        }
        Ok(Claims {
            user_id,
            session_id: raw.sid,
            authorized_party: raw.azp,
            issuer: raw.iss,
            expires_at: raw.exp.as_ref().and_then(|n| n.as_u64()).unwrap_or(0),
        })
    }
}

/// Whole seconds of leeway; a sub-second setting rounds up so it never becomes zero.
fn leeway_secs(leeway: Duration) -> u64 {
    leeway.as_millis().div_ceil(1000) as u64
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthError::UnexpectedAlgorithm,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::IssuerMismatch,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(match claim.as_str() {
            "exp" => "exp",
            "sub" => "sub",
            "iss" => "iss",
            _ => "required claim",
        }),
        // The key could not be used for RS256 (a bad JWKS entry): the signature can't be proven.
        ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            tracing::warn!(kind = ?kind, "session token key unusable");
            AuthError::InvalidSignature
        }
        _ => AuthError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn a_header_with_alg_none_is_an_unexpected_algorithm() {
        let t = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"u"}"#));
        assert!(matches!(
            read_header(&t),
            Err(AuthError::UnexpectedAlgorithm)
        ));
    }

    #[test]
    fn hs256_and_ps256_are_unexpected_algorithms() {
        for alg in ["HS256", "PS256", "ES256", "rs256"] {
            let t = format!("{}.e30.sig", b64(&format!(r#"{{"alg":"{alg}"}}"#)));
            assert!(
                matches!(read_header(&t), Err(AuthError::UnexpectedAlgorithm)),
                "{alg}"
            );
        }
    }

    #[test]
    fn the_kid_is_read_from_an_rs256_header() {
        let t = format!(
            "{}.e30.sig",
            b64(r#"{"alg":"RS256","kid":"ins_1","typ":"JWT"}"#)
        );
        assert_eq!(read_header(&t).unwrap().kid.as_deref(), Some("ins_1"));
    }

    #[test]
    fn garbage_is_malformed() {
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        for t in [
            "",
            "abc",
            "a.b.c",
            "a.b",
            "a.b.c.d",
            "é.é.é",
            "..",
            long.as_str(),
        ] {
            assert!(
                matches!(read_header(t), Err(AuthError::Malformed)),
                "{t:.20}"
            );
        }
    }

    #[test]
    fn a_critical_header_extension_is_refused() {
        let t = format!("{}.e30.sig", b64(r#"{"alg":"RS256","crit":["b64"]}"#));
        assert!(matches!(read_header(&t), Err(AuthError::Malformed)));
    }

    #[test]
    fn sub_second_leeway_rounds_up() {
        assert_eq!(leeway_secs(Duration::from_millis(1)), 1);
        assert_eq!(leeway_secs(Duration::from_secs(5)), 5);
        assert_eq!(leeway_secs(Duration::ZERO), 0);
    }

    #[test]
    fn library_errors_map_to_named_failures() {
        assert!(matches!(
            map_jwt_error(&ErrorKind::ExpiredSignature),
            AuthError::Expired
        ));
        assert!(matches!(
            map_jwt_error(&ErrorKind::InvalidAlgorithm),
            AuthError::UnexpectedAlgorithm
        ));
        assert!(matches!(
            map_jwt_error(&ErrorKind::InvalidToken),
            AuthError::Malformed
        ));
    }
}
