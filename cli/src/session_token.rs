//! Clerk-style session tokens signed locally: what `gcbb bench chat` and the tests use in place
//! of Clerk. A key pair is generated per run; its public PEM goes to `CLERK_JWT_KEY`.
//!
//! Signed here with the `rsa` crate rather than `jsonwebtoken`: the functions' `jsonwebtoken`
//! carries verification only (`gcbb::platform::auth`), so signing lives with the tools.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1v15::SigningKey as Pkcs1v15SigningKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

/// Clerk's key size.
const KEY_BITS: usize = 2048;

/// An RSA key pair that signs RS256 session tokens.
pub struct SigningKey {
    signer: Pkcs1v15SigningKey<sha2::Sha256>,
    /// The public key as SPKI PEM: the value for `CLERK_JWT_KEY`.
    pub public_pem: String,
    /// The public key's modulus and exponent, base64url: a JWKS entry's `n` and `e`.
    pub n: String,
    pub e: String,
}

impl SigningKey {
    pub fn generate() -> anyhow::Result<SigningKey> {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS)?;
        let public = private.to_public_key();
        Ok(SigningKey {
            public_pem: public.to_public_key_pem(LineEnding::LF)?,
            n: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            signer: Pkcs1v15SigningKey::new(private),
        })
    }

    /// An RS256 token over `claims`, with `kid` in its header when given.
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let input = signing_input(&header, claims);
        let signature = self.signer.sign(input.as_bytes()).to_vec();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// An HS256 token over `claims` with `secret`: the algorithm-confusion attack (a public key used
/// as an HMAC secret), which verification must refuse.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    let input = signing_input(&json!({"alg": "HS256", "typ": "JWT"}), claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Claims as Clerk puts them in a session token for `user_id`, valid for `ttl_secs`.
pub fn clerk_claims(user_id: &str, issuer: Option<&str>, ttl_secs: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "sub": user_id,
        "sid": format!("sess_{user_id}"),
        "exp": now + ttl_secs,
        "nbf": now - 5,
        "iat": now - 5,
    });
    if let Some(issuer) = issuer {
        claims["iss"] = json!(issuer);
    }
    claims
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_has_three_parts_and_names_its_key() {
        let key = SigningKey::generate().unwrap();
        let token = key.sign(Some("k1"), &clerk_claims("user_1", None, 60));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "k1");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(),
            KEY_BITS / 8
        );
    }
}
