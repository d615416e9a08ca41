//! Clerk-style session tokens for the tests of signed-in routes: one RSA key generated per test
//! process, its public PEM for `CLERK_JWT_KEY`, and tokens signed with it.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::json;

/// The issuer the servers under test are configured with (`CLERK_ISSUER`).
pub const ISSUER: &str = "https://clerk.gcbb.test";

pub struct SigningKey {
    encoding: EncodingKey,
    /// The value for `CLERK_JWT_KEY`.
    pub public_pem: String,
}

pub static KEY: LazyLock<SigningKey> = LazyLock::new(|| {
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA keygen");
    let private_pem = private.to_pkcs1_pem(LineEnding::LF).expect("private PEM");
    SigningKey {
        encoding: EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("encoding key"),
        public_pem: private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public PEM"),
    }
});

/// A valid session token for `user_id`, as Clerk would issue it.
pub fn token_for(user_id: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let claims = json!({
        "sub": user_id,
        "iss": ISSUER,
        "sid": format!("sess_{user_id}"),
        "exp": now + 300,
        "nbf": now - 5,
        "iat": now - 5,
    });
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &KEY.encoding)
        .expect("signing a token")
}

/// The environment a server needs to accept [`token_for`]'s tokens.
pub fn clerk_env() -> [(&'static str, String); 2] {
    [
        ("CLERK_JWT_KEY", KEY.public_pem.clone()),
        ("CLERK_ISSUER", ISSUER.to_owned()),
    ]
}
