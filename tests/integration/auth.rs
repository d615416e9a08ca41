//! Session-token verification with real RSA keys, real signed tokens, a real local JWKS server,
//! and the viewer a request is taken for, through the router of every function in-process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gcbb::config::{ClerkConfig, ClerkKey};
use gcbb::platform::auth::{AuthError, Authenticator};
use gcbb::platform::error::ApiError;
use gcbb_cli::session_token::{sign_hs256, SigningKey};
use serde_json::{json, Value};

use crate::common::app::TestApp;
use crate::common::jwks::{jwks, JwksServer};
use crate::common::request::TestResponse;
use crate::common::session::{signing_key, ISSUER};

const PARTY: &str = "http://localhost:3000";
const USER: &str = "user_2abcDEF";

type TestKey = SigningKey;

/// The key apps under test trust: the harness's one key of the test process.
fn key_a() -> &'static TestKey {
    signing_key()
}

/// A second key, which nothing trusts: a test input for "signed by another key" and rotation.
static KEY_B: LazyLock<TestKey> =
    LazyLock::new(|| SigningKey::generate().expect("RSA key generation"));

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims as Clerk puts them in a session token.
fn clerk_claims() -> Value {
    let now = now();
    json!({
        "sub": USER,
        "iss": ISSUER,
        "azp": PARTY,
        "sid": "sess_2xyz",
        "exp": now + 60,
        "nbf": now - 10,
        "iat": now - 10,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn sign(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
    key.sign(kid, claims)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn clerk_config(key: ClerkKey) -> ClerkConfig {
    ClerkConfig {
        key: Some(key),
        issuer: Some(ISSUER.to_owned()),
        authorized_parties: vec![PARTY.to_owned()],
        leeway: Duration::from_secs(5),
    }
}

fn pem_auth() -> Authenticator {
    Authenticator::new(
        &clerk_config(ClerkKey::Pem(key_a().public_pem.clone())),
        reqwest::Client::new(),
    )
}

/// Verifies and checks the 401 message names the failure and never repeats the token.
async fn refused(auth: &Authenticator, token: &str) -> AuthError {
    let err = auth
        .verify(token)
        .await
        .expect_err("the token must be refused");
    let api = ApiError::from(err.clone());
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED, "{err}");
    let message = api.to_string();
    for part in token.split('.').filter(|p| p.len() > 3) {
        assert!(
            !message.contains(part),
            "message echoes the token: {message}"
        );
    }
    err
}

// ---- PEM key ----------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_clerk_token_yields_its_user_id_and_claims() {
    let auth = pem_auth();
    let token = sign(key_a(), Some("ins_1"), &clerk_claims());
    assert_eq!(auth.verify(&token).await.unwrap(), USER);
    let claims = auth.verify_claims(&token).await.unwrap();
    assert_eq!(claims.session_id.as_deref(), Some("sess_2xyz"));
    assert_eq!(claims.authorized_party.as_deref(), Some(PARTY));
}

#[tokio::test]
async fn a_pem_key_needs_no_kid() {
    let token = sign(key_a(), None, &clerk_claims());
    assert_eq!(pem_auth().verify(&token).await.unwrap(), USER);
}

#[tokio::test]
async fn an_expired_token_is_401_token_expired() {
    let token = sign(
        key_a(),
        None,
        &with(clerk_claims(), "exp", json!(now() - 60)),
    );
    let err = refused(&pem_auth(), &token).await;
    assert!(matches!(err, AuthError::Expired), "{err}");
    assert_eq!(err.to_string(), "token expired");
}

#[tokio::test]
async fn a_token_expired_within_the_leeway_is_still_valid() {
    let token = sign(
        key_a(),
        None,
        &with(clerk_claims(), "exp", json!(now() - 2)),
    );
    assert_eq!(pem_auth().verify(&token).await.unwrap(), USER);
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let token = sign(key_a(), None, &without(clerk_claims(), "exp"));
    let err = refused(&pem_auth(), &token).await;
    assert!(matches!(err, AuthError::MissingClaim("exp")), "{err}");
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let token = sign(
        key_a(),
        None,
        &with(clerk_claims(), "nbf", json!(now() + 60)),
    );
    let err = refused(&pem_auth(), &token).await;
    assert!(matches!(err, AuthError::NotYetValid), "{err}");
    assert_eq!(err.to_string(), "token not yet valid");
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let claims = with(clerk_claims(), "iat", json!(now() + 60));
    let token = sign(key_a(), None, &without(claims, "nbf"));
    let err = refused(&pem_auth(), &token).await;
    assert!(matches!(err, AuthError::NotYetValid), "{err}");
}

#[tokio::test]
async fn a_token_issued_within_the_leeway_ahead_is_valid() {
    let token = sign(
        key_a(),
        None,
        &with(clerk_claims(), "iat", json!(now() + 2)),
    );
    assert_eq!(pem_auth().verify(&token).await.unwrap(), USER);
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_an_invalid_signature() {
    let token = sign(&KEY_B, None, &clerk_claims());
    let err = refused(&pem_auth(), &token).await;
    assert!(matches!(err, AuthError::InvalidSignature), "{err}");
    assert_eq!(err.to_string(), "invalid signature");
}

#[tokio::test]
async fn a_token_whose_payload_was_swapped_is_an_invalid_signature() {
    let token = sign(key_a(), None, &clerk_claims());
    let forged_payload = b64(with(clerk_claims(), "sub", json!("user_admin"))
        .to_string()
        .as_bytes());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let err = refused(&pem_auth(), &forged).await;
    assert!(matches!(err, AuthError::InvalidSignature), "{err}");
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_refused() {
    let claims = clerk_claims().to_string();
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
    ] {
        let token = format!("{}.{}.", b64(header.as_bytes()), b64(claims.as_bytes()));
        let err = refused(&pem_auth(), &token).await;
        assert!(matches!(err, AuthError::UnexpectedAlgorithm), "{err}");
        assert_eq!(err.to_string(), "unexpected algorithm");
        // And with some signature bytes appended.
        let token = format!("{token}{}", b64(b"sig"));
        assert!(matches!(
            pem_auth().verify(&token).await,
            Err(AuthError::UnexpectedAlgorithm)
        ));
    }
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_as_secret_is_refused() {
    let token = sign_hs256(key_a().public_pem.as_bytes(), &clerk_claims());
    let err = refused(&pem_auth(), &token).await;
    assert!(matches!(err, AuthError::UnexpectedAlgorithm), "{err}");
}

#[tokio::test]
async fn a_token_for_another_party_is_refused() {
    let token = sign(
        key_a(),
        None,
        &with(clerk_claims(), "azp", json!("https://evil.example")),
    );
    let err = refused(&pem_auth(), &token).await;
    assert!(matches!(err, AuthError::UnauthorizedParty), "{err}");
    assert_eq!(err.to_string(), "unauthorized party");
}

#[tokio::test]
async fn an_authorized_party_with_a_trailing_slash_matches() {
    let token = sign(
        key_a(),
        None,
        &with(clerk_claims(), "azp", json!(format!("{PARTY}/"))),
    );
    assert_eq!(pem_auth().verify(&token).await.unwrap(), USER);
}

/// Clerk's backend SDK accepts a token without `azp` even when parties are configured; so do we.
#[tokio::test]
async fn a_token_without_azp_is_accepted_when_parties_are_configured() {
    let token = sign(key_a(), None, &without(clerk_claims(), "azp"));
    assert_eq!(pem_auth().verify(&token).await.unwrap(), USER);
}

/// An empty `azp` is present and names no party: refused (Clerk's SDK would treat it as absent).
#[tokio::test]
async fn an_empty_azp_is_refused_when_parties_are_configured() {
    let token = sign(key_a(), None, &with(clerk_claims(), "azp", json!("")));
    let err = refused(&pem_auth(), &token).await;
    assert!(matches!(err, AuthError::UnauthorizedParty), "{err}");
}

#[tokio::test]
async fn any_azp_is_accepted_when_no_parties_are_configured() {
    let mut cfg = clerk_config(ClerkKey::Pem(key_a().public_pem.clone()));
    cfg.authorized_parties.clear();
    let auth = Authenticator::new(&cfg, reqwest::Client::new());
    let token = sign(
        key_a(),
        None,
        &with(clerk_claims(), "azp", json!("https://elsewhere.example")),
    );
    assert_eq!(auth.verify(&token).await.unwrap(), USER);
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let token = sign(
        key_a(),
        None,
        &with(clerk_claims(), "iss", json!("https://clerk.other.example")),
    );
    let err = refused(&pem_auth(), &token).await;
    assert!(matches!(err, AuthError::IssuerMismatch), "{err}");
    assert_eq!(err.to_string(), "issuer mismatch");
}

#[tokio::test]
async fn the_issuer_tolerates_a_trailing_slash_either_way() {
    let token = sign(
        key_a(),
        None,
        &with(clerk_claims(), "iss", json!(format!("{ISSUER}/"))),
    );
    assert_eq!(pem_auth().verify(&token).await.unwrap(), USER);

    let mut cfg = clerk_config(ClerkKey::Pem(key_a().public_pem.clone()));
    cfg.issuer = Some(format!("{ISSUER}/"));
    let auth = Authenticator::new(&cfg, reqwest::Client::new());
    let token = sign(key_a(), None, &clerk_claims());
    assert_eq!(auth.verify(&token).await.unwrap(), USER);
}

#[tokio::test]
async fn a_token_without_iss_is_refused_when_an_issuer_is_configured() {
    let token = sign(key_a(), None, &without(clerk_claims(), "iss"));
    let err = refused(&pem_auth(), &token).await;
    assert!(matches!(err, AuthError::MissingClaim("iss")), "{err}");
}

#[tokio::test]
async fn a_token_without_a_subject_is_refused() {
    let token = sign(key_a(), None, &without(clerk_claims(), "sub"));
    let err = refused(&pem_auth(), &token).await;
    assert!(matches!(err, AuthError::MissingClaim("sub")), "{err}");
    for empty in ["", "   "] {
        let token = sign(key_a(), None, &with(clerk_claims(), "sub", json!(empty)));
        let err = refused(&pem_auth(), &token).await;
        assert!(matches!(err, AuthError::MissingClaim("sub")), "{err}");
    }
}

#[tokio::test]
async fn a_subject_of_the_wrong_type_is_malformed() {
    let token = sign(key_a(), None, &with(clerk_claims(), "sub", json!(42)));
    let err = refused(&pem_auth(), &token).await;
    assert!(matches!(err, AuthError::Malformed), "{err}");
}

#[tokio::test]
async fn garbage_tokens_are_malformed() {
    let huge = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"RS256"}"#),
        "A".repeat(100 * 1024),
        "B"
    );
    let auth = pem_auth();
    for token in [
        "abc",
        "a.b.c",
        "...",
        "Bearer",
        "ünïcødé.tøkén.✓",
        "\u{0}\u{1}.\u{2}.\u{3}",
        huge.as_str(),
    ] {
        let err = refused(&auth, token).await;
        assert!(matches!(err, AuthError::Malformed), "{token:.30}: {err}");
        assert_eq!(err.to_string(), "malformed token");
    }
}

#[tokio::test]
async fn without_a_key_every_token_is_refused() {
    let mut cfg = clerk_config(ClerkKey::Pem(key_a().public_pem.clone()));
    cfg.key = None;
    let auth = Authenticator::new(&cfg, reqwest::Client::new());
    let token = sign(key_a(), None, &clerk_claims());
    let err = refused(&auth, &token).await;
    assert!(matches!(err, AuthError::NoKey), "{err}");
}

// ---- JWKS ---------------------------------------------------------------------------------

/// An authenticator that fetches its keys from `server`.
fn jwks_auth(server: &JwksServer) -> Authenticator {
    Authenticator::new(
        &clerk_config(ClerkKey::JwksUrl(server.url.clone())),
        reqwest::Client::new(),
    )
}

/// An address where nothing listens.
async fn dead_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

#[tokio::test]
async fn a_jwks_key_verifies_and_is_fetched_once_for_many_tokens() {
    let server = JwksServer::start(&[(key_a(), "ins_a")]).await;
    let auth = Arc::new(jwks_auth(&server));
    // A cold process hit by concurrent requests fetches once.
    let concurrent = (0..16).map(|i| {
        let auth = auth.clone();
        let token = sign(
            key_a(),
            Some("ins_a"),
            &with(clerk_claims(), "sub", json!(format!("user_{i}"))),
        );
        tokio::spawn(async move { auth.verify(&token).await })
    });
    for (i, result) in futures_util::future::join_all(concurrent)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(result.unwrap().unwrap(), format!("user_{i}"));
    }
    for _ in 0..10 {
        let token = sign(key_a(), Some("ins_a"), &clerk_claims());
        assert_eq!(auth.verify(&token).await.unwrap(), USER);
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_rotated_key_triggers_one_refetch_and_then_verifies() {
    let server = JwksServer::start(&[(key_a(), "ins_a")]).await;
    let auth = jwks_auth(&server).with_jwks_min_refetch_interval(Duration::ZERO);
    let old = sign(key_a(), Some("ins_a"), &clerk_claims());
    assert_eq!(auth.verify(&old).await.unwrap(), USER);
    assert_eq!(server.hits(), 1);

    server.serve(&[(&KEY_B, "ins_b")]);
    let new = sign(&KEY_B, Some("ins_b"), &clerk_claims());
    assert_eq!(auth.verify(&new).await.unwrap(), USER);
    assert_eq!(server.hits(), 2);
    assert_eq!(auth.verify(&new).await.unwrap(), USER);
    assert_eq!(server.hits(), 2, "a known kid must not refetch");

    // The replaced set no longer holds the old key: its tokens now fail.
    let err = auth.verify(&old).await.unwrap_err();
    assert!(matches!(err, AuthError::UnknownKey), "{err}");
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn a_kid_still_unknown_after_refetch_is_401() {
    let server = JwksServer::start(&[(key_a(), "ins_a")]).await;
    let auth = jwks_auth(&server).with_jwks_min_refetch_interval(Duration::ZERO);
    let good = sign(key_a(), Some("ins_a"), &clerk_claims());
    assert_eq!(auth.verify(&good).await.unwrap(), USER);
    assert_eq!(server.hits(), 1);
    let token = sign(key_a(), Some("ins_nope"), &clerk_claims());
    let err = refused(&auth, &token).await;
    assert!(matches!(err, AuthError::UnknownKey), "{err}");
    assert_eq!(err.to_string(), "unknown signing key");
    assert_eq!(server.hits(), 2, "exactly one refetch for the unknown kid");
}

#[tokio::test]
async fn made_up_kids_cannot_make_us_hammer_the_jwks_endpoint() {
    let server = JwksServer::start(&[(key_a(), "ins_a")]).await;
    let auth =
        Arc::new(jwks_auth(&server).with_jwks_min_refetch_interval(Duration::from_millis(800)));
    let good = sign(key_a(), Some("ins_a"), &clerk_claims());
    assert_eq!(auth.verify(&good).await.unwrap(), USER);
    // Two waves of 20 made-up kids: each wave waits for the one refetch at the end of the
    // interval, and is refused after it.
    for wave in 0..2 {
        let started = std::time::Instant::now();
        let tokens = (0..20).map(|i| {
            let token = sign(
                key_a(),
                Some(&format!("garbage_{wave}_{i}")),
                &clerk_claims(),
            );
            let auth = auth.clone();
            tokio::spawn(async move { auth.verify(&token).await })
        });
        for outcome in futures_util::future::join_all(tokens).await {
            assert!(matches!(outcome.unwrap(), Err(AuthError::UnknownKey)));
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(server.hits(), 2 + wave, "one refetch per wave");
    }
    // A known key never waits for any of that.
    let t = std::time::Instant::now();
    assert_eq!(auth.verify(&good).await.unwrap(), USER);
    assert!(t.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn a_jwks_token_without_kid_is_refused_without_fetching() {
    let server = JwksServer::start(&[(key_a(), "ins_a")]).await;
    let token = sign(key_a(), None, &clerk_claims());
    let err = refused(&jwks_auth(&server), &token).await;
    assert!(matches!(err, AuthError::MissingKeyId), "{err}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn a_refused_algorithm_never_reaches_the_jwks_endpoint() {
    let server = JwksServer::start(&[(key_a(), "ins_a")]).await;
    let token = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"ins_a"}"#),
        b64(clerk_claims().to_string().as_bytes())
    );
    let err = refused(&jwks_auth(&server), &token).await;
    assert!(matches!(err, AuthError::UnexpectedAlgorithm), "{err}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn a_jwks_server_that_is_down_is_unavailable_not_anonymous_or_401() {
    let url = format!("http://{}/jwks.json", dead_address().await);
    let auth = Authenticator::new(
        &clerk_config(ClerkKey::JwksUrl(url)),
        reqwest::Client::new(),
    );
    let token = sign(key_a(), Some("ins_a"), &clerk_claims());
    let err = auth.verify(&token).await.unwrap_err();
    assert!(matches!(err, AuthError::KeysUnavailable), "{err}");
    let api = ApiError::from(err);
    assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.code(), "service_unavailable");
}

#[tokio::test]
async fn a_jwks_server_that_hangs_times_out_as_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts connections and never answers.
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let auth = Authenticator::new(
        &clerk_config(ClerkKey::JwksUrl(format!("http://{addr}/jwks.json"))),
        reqwest::Client::new(),
    )
    .with_jwks_fetch_timeout(Duration::from_millis(300));
    let token = sign(key_a(), Some("ins_a"), &clerk_claims());
    assert!(matches!(
        auth.verify(&token).await,
        Err(AuthError::KeysUnavailable)
    ));
    hold.abort();
}

#[tokio::test]
async fn a_jwks_endpoint_answering_an_error_or_junk_is_unavailable() {
    let server = JwksServer::start(&[]).await;
    let auth = jwks_auth(&server).with_jwks_min_refetch_interval(Duration::ZERO);
    let token = sign(key_a(), Some("ins_a"), &clerk_claims());
    // An empty key set.
    assert!(matches!(
        auth.verify(&token).await,
        Err(AuthError::KeysUnavailable)
    ));
    server.serve_document(json!({"not": "a key set"}));
    assert!(matches!(
        auth.verify(&token).await,
        Err(AuthError::KeysUnavailable)
    ));
    // Once the endpoint serves the key, the same token verifies.
    server.serve(&[(key_a(), "ins_a")]);
    assert_eq!(auth.verify(&token).await.unwrap(), USER);
}

// ---- through the router ------------------------------------------------------------------

/// A companion only USER may see: the dashboard lists it for USER alone, so a page shows whom
/// the request was taken for.
const OWN_PRIVATE: &str = "comp_auth_own";

fn own_private_companion() -> String {
    format!(
        "INSERT INTO \"Category\" (\"id\", \"name\") VALUES ('cat_auth', 'Auth');
         INSERT INTO \"Companion\" (\"id\", \"userId\", \"userName\", \"src\", \"name\", \"instructions\",
                                    \"private\", \"updatedAt\", \"categoryId\")
         VALUES ('{OWN_PRIVATE}', '{USER}', 'me', '/me.png', 'Mine', 'Only mine.', true, now(), 'cat_auth');"
    )
}

/// An app that accepts the harness key's tokens for [`PARTY`], with `env` over that.
async fn auth_app(env: &[(&str, &str)]) -> TestApp {
    let mut builder = TestApp::builder()
        .fixtures(own_private_companion())
        .env("CLERK_AUTHORIZED_PARTIES", PARTY);
    for (name, value) in env {
        builder = builder.env(name, value);
    }
    builder.start().await
}

/// The dashboard, with `headers`.
async fn dashboard(app: &TestApp, headers: &[(header::HeaderName, &str)]) -> TestResponse {
    let mut request = app.get("/api/dashboard/prefetch");
    for (name, value) in headers {
        request = request.header(name.as_str(), value);
    }
    request.send().await
}

/// Whether the page was taken for USER: only USER is shown USER's private companion.
fn shows_users_private_companion(resp: &TestResponse) -> bool {
    resp.json()["companions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == OWN_PRIVATE && c["private"] == true)
}

/// Dashboard pages in the app's cache: a refused request must not have built one.
async fn cached_pages(app: &TestApp) -> usize {
    app.app
        .cache
        .store()
        .scan(&format!("{}:v1:dashboard:*", app.prefix), 100)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_request_without_credentials_is_anonymous() {
    let app = auth_app(&[]).await;
    let resp = dashboard(&app, &[(header::COOKIE, "theme=dark")]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.headers[header::CACHE_CONTROL],
        "public, max-age=0, must-revalidate"
    );
    assert!(!shows_users_private_companion(&resp));
    assert!(!resp.text().contains("tokensBurned"), "{}", resp.text());
}

#[tokio::test]
async fn a_valid_bearer_token_is_the_user() {
    let app = auth_app(&[]).await;
    let token = sign(key_a(), Some("ins_1"), &clerk_claims());
    let auth = format!("Bearer {token}");
    let resp = dashboard(&app, &[(header::AUTHORIZATION, &auth)]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.headers[header::CACHE_CONTROL], "private, no-store");
    assert!(shows_users_private_companion(&resp), "{}", resp.text());
}

#[tokio::test]
async fn a_valid_session_cookie_is_the_user() {
    let app = auth_app(&[]).await;
    let token = sign(key_a(), Some("ins_1"), &clerk_claims());
    let cookie = format!("__client_uat=1700000000; __session={token}; theme=dark");
    let resp = dashboard(
        &app,
        &[
            (header::COOKIE, "__session_abc=other"),
            (header::COOKIE, &cookie),
        ],
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(shows_users_private_companion(&resp), "{}", resp.text());
}

#[tokio::test]
async fn an_invalid_token_is_401_with_the_error_shape_and_www_authenticate() {
    let app = auth_app(&[]).await;
    let token = sign(
        key_a(),
        None,
        &with(clerk_claims(), "exp", json!(now() - 600)),
    );
    let auth = format!("Bearer {token}");
    for headers in [
        vec![(header::AUTHORIZATION, auth.as_str())],
        vec![(header::COOKIE, &*format!("__session={token}"))],
    ] {
        let resp = dashboard(&app, &headers).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
        assert_eq!(resp.headers[header::CACHE_CONTROL], "no-store");
        let body = resp.json();
        assert_eq!(body["error"]["code"], "unauthorized");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("token expired"), "{message}");
        assert!(!body.to_string().contains(&token[..40]));
    }
    assert_eq!(cached_pages(&app).await, 0);
}

#[tokio::test]
async fn basic_auth_and_empty_bearers_are_401_not_anonymous() {
    let app = auth_app(&[]).await;
    for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token abc"] {
        let resp = dashboard(&app, &[(header::AUTHORIZATION, value)]).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{value}");
        assert_eq!(resp.error_code(), "unauthorized");
    }
    assert_eq!(cached_pages(&app).await, 0);
}

#[tokio::test]
async fn a_garbage_cookie_is_401_not_anonymous() {
    let app = auth_app(&[]).await;
    let resp = dashboard(&app, &[(header::COOKIE, "__session=abc")]).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json()["error"]["message"],
        "authentication failed: malformed token"
    );
    assert_eq!(cached_pages(&app).await, 0);
}

#[tokio::test]
async fn without_a_configured_key_tokens_are_401_and_no_token_is_anonymous() {
    let app = auth_app(&[("CLERK_JWT_KEY", "")]).await;
    let token = sign(key_a(), None, &clerk_claims());
    let auth = format!("Bearer {token}");
    let resp = dashboard(&app, &[(header::AUTHORIZATION, &auth)]).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    let resp = dashboard(&app, &[]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(!shows_users_private_companion(&resp));
    assert_eq!(
        resp.headers[header::CACHE_CONTROL],
        "public, max-age=0, must-revalidate"
    );
}

#[tokio::test]
async fn a_down_jwks_server_is_503_through_http() {
    let url = format!("http://{}/jwks.json", dead_address().await);
    let app = auth_app(&[("CLERK_JWT_KEY", ""), ("CLERK_JWKS_URL", &url)]).await;
    let token = sign(key_a(), Some("ins_a"), &clerk_claims());
    let auth = format!("Bearer {token}");
    let resp = dashboard(&app, &[(header::AUTHORIZATION, &auth)]).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.error_code(), "service_unavailable");
    assert_eq!(cached_pages(&app).await, 0);
}

#[tokio::test]
async fn a_jwks_configured_app_verifies_through_http() {
    let server = JwksServer::start(&[(key_a(), "ins_a")]).await;
    let app = auth_app(&[("CLERK_JWT_KEY", ""), ("CLERK_JWKS_URL", &server.url)]).await;
    let token = sign(key_a(), Some("ins_a"), &clerk_claims());
    let auth = format!("Bearer {token}");
    let resp = dashboard(&app, &[(header::AUTHORIZATION, &auth)]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(shows_users_private_companion(&resp), "{}", resp.text());
    assert_eq!(server.hits(), 1);
}

// ---- JWKS under a hung endpoint -----------------------------------------------------------

/// An endpoint that accepts connections and never answers, counting them (each is one fetch).
async fn hung_endpoint() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (format!("http://{addr}/jwks.json"), accepted, hold)
}

#[tokio::test]
async fn concurrent_requests_share_one_fetch_of_a_hung_jwks_endpoint_and_its_failure_is_remembered()
{
    let (url, accepted, hold) = hung_endpoint().await;
    let timeout = Duration::from_millis(1000);
    let auth = Arc::new(
        Authenticator::new(
            &clerk_config(ClerkKey::JwksUrl(url)),
            reqwest::Client::new(),
        )
        .with_jwks_fetch_timeout(timeout),
    );
    let token = sign(key_a(), Some("ins_a"), &clerk_claims());
    let started = std::time::Instant::now();
    let waits = (0..6).map(|_| {
        let (auth, token) = (auth.clone(), token.clone());
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let outcome = auth.verify(&token).await;
            (t.elapsed(), outcome)
        })
    });
    let results = futures_util::future::join_all(waits).await;
    let mut times = Vec::new();
    for r in results {
        let (took, outcome) = r.unwrap();
        assert!(matches!(outcome, Err(AuthError::KeysUnavailable)));
        times.push(took.as_millis());
    }
    println!(
        "figure: six concurrent requests, hung JWKS (fetch timeout {timeout:?}): {times:?} ms"
    );
    assert!(
        started.elapsed() < timeout + Duration::from_secs(3),
        "the six waited {:?}: serialised?",
        started.elapsed()
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one fetch for all six");
    // Right after, the failure is remembered: answered at once, no new fetch.
    let t = std::time::Instant::now();
    assert!(matches!(
        auth.verify(&token).await,
        Err(AuthError::KeysUnavailable)
    ));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    hold.abort();
}

#[tokio::test]
async fn a_known_key_verifies_at_once_while_a_refresh_hangs() {
    // Serves the key set once, then hangs every later request.
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let count = count.clone();
            async move {
                if count.fetch_add(1, Ordering::SeqCst) > 0 {
                    std::future::pending::<()>().await;
                }
                Json(jwks(&[(key_a(), "ins_a")]))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let auth = Arc::new(
        Authenticator::new(
            &clerk_config(ClerkKey::JwksUrl(format!("http://{addr}/jwks.json"))),
            reqwest::Client::new(),
        )
        .with_jwks_min_refetch_interval(Duration::ZERO)
        .with_jwks_fetch_timeout(Duration::from_secs(3)),
    );
    let known = sign(key_a(), Some("ins_a"), &clerk_claims());
    assert_eq!(auth.verify(&known).await.unwrap(), USER);

    // A token naming a new kid starts a refresh, which hangs.
    let rotated = sign(&KEY_B, Some("ins_b"), &clerk_claims());
    let refresh = {
        let auth = auth.clone();
        tokio::spawn(async move { auth.verify(&rotated).await })
    };
    assert!(
        crate::common::eventually(|| async { served.load(Ordering::SeqCst) == 2 }).await,
        "the refresh never reached the endpoint"
    );
    let t = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(auth.verify(&known).await.unwrap(), USER);
    }
    println!(
        "figure: signed-in with a cached key while the JWKS endpoint hangs: 5 verifications in {} ms",
        t.elapsed().as_millis()
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(matches!(
        refresh.await.unwrap(),
        Err(AuthError::KeysUnavailable)
    ));
    server.abort();
}
