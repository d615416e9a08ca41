//! The function binaries as Vercel runs them: each `api/*.rs` process on `VERCEL_DEV_PORT`,
//! and the runtime adapter (streaming bodies, `wait_until`, draining on SIGTERM).

mod binaries;
mod health;
mod runtime;

/// A `DELETE` of `path` on `server`: a method none of the functions' routes take.
async fn delete(server: &gcbb_test_support::process::Server, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .delete(server.url(path))
        .send()
        .await
        .unwrap()
}
