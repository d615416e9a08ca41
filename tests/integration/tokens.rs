//! Clerk-style session tokens for the tests of signed-in routes: one RSA key generated per test
//! process, its public PEM for `CLERK_JWT_KEY`, and tokens signed with it.

use std::sync::LazyLock;

use gcbb_cli::session_token::{clerk_claims, SigningKey};

/// The issuer the servers under test are configured with (`CLERK_ISSUER`).
pub const ISSUER: &str = "https://clerk.gcbb.test";

pub static KEY: LazyLock<SigningKey> =
    LazyLock::new(|| SigningKey::generate().expect("RSA key generation"));

/// A valid session token for `user_id`, as Clerk would issue it.
pub fn token_for(user_id: &str) -> String {
    KEY.sign(None, &clerk_claims(user_id, Some(ISSUER), 300))
}

/// The environment a server needs to accept [`token_for`]'s tokens.
pub fn clerk_env() -> [(&'static str, String); 2] {
    [
        ("CLERK_JWT_KEY", KEY.public_pem.clone()),
        ("CLERK_ISSUER", ISSUER.to_owned()),
    ]
}
