//! Clerk-style session tokens for the tests of signed-in routes: one RSA key per test process
//! (generating one takes a noticeable moment, so every test shares it), the configuration that
//! makes an app accept its tokens, and tokens signed with it.

use std::sync::LazyLock;

use gcbb_cli::session_token::{clerk_claims, SigningKey};

/// The issuer every app under test is configured with (`CLERK_ISSUER`).
pub const ISSUER: &str = "https://clerk.gcbb.test";

/// How long a test token is valid: longer than any test, short like Clerk's.
const TOKEN_TTL_SECS: i64 = 300;

static KEY: LazyLock<SigningKey> =
    LazyLock::new(|| SigningKey::generate().expect("RSA key generation"));

/// The key apps under test trust (its public half is their `CLERK_JWT_KEY`).
pub fn signing_key() -> &'static SigningKey {
    &KEY
}

/// A valid session token for `user_id`, as Clerk would issue it.
pub fn token_for(user_id: &str) -> String {
    KEY.sign(None, &clerk_claims(user_id, Some(ISSUER), TOKEN_TTL_SECS))
}

/// The environment an app needs to accept [`token_for`]'s tokens.
pub fn clerk_env() -> [(&'static str, String); 2] {
    [
        ("CLERK_JWT_KEY", KEY.public_pem.clone()),
        ("CLERK_ISSUER", ISSUER.to_owned()),
    ]
}
