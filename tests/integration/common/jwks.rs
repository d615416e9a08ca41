//! A JWKS endpoint on a real socket whose key set a test swaps, counting fetches: what the
//! session-token and the key-rotation tests stand up in place of Clerk's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::{Json, Router};
use gcbb_cli::session_token::SigningKey;
use serde_json::{json, Value};

/// A real HTTP server serving a JWKS that the test can swap, counting requests.
pub struct JwksServer {
    pub url: String,
    hits: Arc<AtomicUsize>,
    body: Arc<Mutex<Value>>,
}

impl JwksServer {
    /// Serves `keys` (each with its `kid`) at `url`.
    pub async fn start(keys: &[(&SigningKey, &str)]) -> JwksServer {
        let hits = Arc::new(AtomicUsize::new(0));
        let body = Arc::new(Mutex::new(jwks(keys)));
        let (h, b) = (hits.clone(), body.clone());
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let (h, b) = (h.clone(), b.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let doc = b.lock().unwrap().clone();
                    Json(doc)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        JwksServer {
            url: format!("http://{addr}/.well-known/jwks.json"),
            hits,
            body,
        }
    }

    /// From now on, serves `keys` instead.
    pub fn serve(&self, keys: &[(&SigningKey, &str)]) {
        self.serve_document(jwks(keys));
    }

    /// From now on, serves `doc`, whatever it is.
    pub fn serve_document(&self, doc: Value) {
        *self.body.lock().unwrap() = doc;
    }

    /// How many times the key set was fetched.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The JWKS document of `keys` (RSA public keys, each with its `kid`).
pub fn jwks(keys: &[(&SigningKey, &str)]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(k, kid)| {
            json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": k.n, "e": k.e})
        })
        .collect();
    json!({ "keys": keys })
}
