//! What the tests of the three packages (`gcbb`, `gcbb-cli`, `gcbb-lambda`) stand on, written
//! once: throwaway databases cloned from a migrated template ([`db`]), server processes and
//! their starters, `gcbb dev` among them ([`process`], [`dev`]), a private Redis a test may stop
//! ([`redis`]), the Upstash stand-in ([`upstash`]), migration directories of a test's own
//! ([`migrations`]), and the one session-signing key of a test process ([`session`]).
//!
//! Where the tests find Postgres and Redis is read from the environment, `TEST_DATABASE_URL`
//! and `TEST_REDIS_URL`, each defaulting to the local server `.ci/setup` starts.

pub mod db;
pub mod dev;
pub mod migrations;
pub mod node;
pub mod output;
pub mod process;
pub mod redis;
pub mod session;
pub mod upstash;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::Rng;

/// The Postgres server the tests use when `TEST_DATABASE_URL` is unset.
pub const DEFAULT_TEST_DATABASE_URL: &str =
    "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

/// The Redis the tests share (each under a key prefix of its own) when `TEST_REDIS_URL` is
/// unset.
pub const DEFAULT_TEST_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The test Postgres server (its `postgres` database): `TEST_DATABASE_URL`, else the default.
pub fn database_server_url() -> String {
    env_or("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
}

/// The shared test Redis: `TEST_REDIS_URL`, else the default.
pub fn redis_url() -> String {
    env_or("TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
}

/// `host:port` of the shared test Redis, for a test that talks TCP to it.
pub fn redis_addr() -> String {
    let url = url::Url::parse(&redis_url()).expect("TEST_REDIS_URL is not a valid URL");
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(6379)
    )
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The project root (every package of the workspace is one folder down from it, this one too).
pub fn project_root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .canonicalize()
        .expect("the project root exists")
}

/// The project's migrations directory.
pub fn migrations_dir() -> PathBuf {
    project_root().join("migrations")
}

/// `prefix_` followed by 12 random lowercase letters and digits.
pub fn unique(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}_{suffix}")
}

/// A directory under the system's temporary one, named `prefix_<random>`, created, and removed
/// with everything in it when dropped.
pub struct ScratchDir {
    pub path: PathBuf,
}

impl ScratchDir {
    pub fn new(prefix: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        ScratchDir { path }
    }

    /// `name` inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How long [`eventually`] waits: background work is a few queries, but the machine is shared.
pub const EVENTUALLY_LIMIT: Duration = Duration::from_secs(10);

/// Polls `check` until it holds or [`EVENTUALLY_LIMIT`] passes; returns whether it held. For
/// effects that land after the response (`wait_until` work, a cancellation seen by the model
/// server, a process that starts listening), never a fixed sleep.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < EVENTUALLY_LIMIT {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    check().await
}
