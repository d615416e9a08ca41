//! The shared harness of every integration test.
//!
//! - [`app`]: the app under test, in-process ([`app::TestApp`]): a fresh database, keys, a cache
//!   key prefix, the model server, the real `App` and router; [`request`] is how tests talk to it.
//! - [`session`]: the one RSA signing key of the test process and the tokens it signs.
//! - this module: throwaway databases on the real Postgres, the `gcbb` binary, and
//!   [`eventually`], the one bounded wait for effects that land after a response.
//!
//! `fresh_db()` clones a template database that holds the whole migration history
//! (`CREATE DATABASE x TEMPLATE gcbb_tpl_<hash>`: a file copy, much faster than migrating per
//! test). The template's name comes from a hash of the migrations directory, so a changed history
//! gets a new template, and it is built once per server under an advisory lock on the `postgres`
//! database, so parallel test processes (other worktrees too) neither race nor rebuild it.
//! Every `TestDb` drops its database when it goes out of scope.
#![allow(dead_code)] // each test module uses part of the harness

pub mod app;
pub mod fault;
pub mod neon;
pub mod request;
pub mod session;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gcbb::db::DbConfig;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

/// The server the tests use when `TEST_DATABASE_URL` is unset.
pub const DEFAULT_TEST_DATABASE_URL: &str =
    "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

/// Advisory lock key (on the `postgres` database) serialising template builds across processes.
const TEMPLATE_BUILD_LOCK_KEY: i64 = 0x6763_6262_7470_6c00; // "gcbbtpl\0"

/// Environment variables that must not leak from the developer's shell into a `gcbb` child.
const SCRUBBED_VARS: [&str; 3] = ["DIRECT_URL", "GCBB_MIGRATIONS_DIR", "SHADOW_DATABASE_URL"];

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A database that exists for one test.
pub struct TestDb {
    pub name: String,
    /// `postgres://…/name?…`, to hand to a `gcbb` child process as `DATABASE_URL`.
    pub url: String,
    pub config: DbConfig,
}

impl TestDb {
    pub async fn client(&self) -> tokio_postgres::Client {
        gcbb::db::connect(&self.config)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, where blocking on another future would panic:
        // do it on a thread with a runtime of its own, and wait for it.
        let admin = self.config.with_dbname("postgres");
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&self.name)
        );
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(client) = gcbb::db::connect(&admin).await {
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}

/// The server from `TEST_DATABASE_URL` (connected to its `postgres` database).
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_owned())
}

pub fn server() -> DbConfig {
    DbConfig::parse(&server_url()).expect("TEST_DATABASE_URL is not a valid postgres URL")
}

/// The project root (the tests belong to the tool's package, one folder down).
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

/// A fresh database holding the whole migration history (cloned from the template).
pub async fn fresh_db() -> TestDb {
    let template = TEMPLATE.get_or_init(build_template).await.clone();
    create_db(Some(&template)).await
}

/// A fresh, empty database (no migrations, no `_prisma_migrations`).
pub async fn empty_db() -> TestDb {
    create_db(None).await
}

/// A database name nobody uses yet, not created: for a tool that creates its own database
/// (`gcbb dev`). It is dropped at the end like any other, if it was created.
pub fn absent_db() -> TestDb {
    let name = unique("gcbb_test");
    TestDb {
        url: url_for(&name),
        config: server().with_dbname(&name),
        name,
    }
}

/// How long [`eventually`] waits: background work is a few queries, but the machine is shared.
pub const EVENTUALLY_LIMIT: Duration = Duration::from_secs(10);

/// Polls `check` until it holds or [`EVENTUALLY_LIMIT`] passes; returns whether it held. For
/// effects that land after the response (`wait_until` work, a cancellation seen by the model
/// server), never a fixed sleep.
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

/// The `gcbb` binary, with the database variables of the calling shell removed.
pub fn gcbb() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gcbb"));
    // The tool is run from the project root, where `migrations/` and `vercel.json` are.
    cmd.current_dir(project_root());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DATABASE_") {
            cmd.env_remove(&key);
        }
    }
    for key in SCRUBBED_VARS {
        cmd.env_remove(key);
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// The URL of database `name` on the test server, keeping credentials and query parameters.
pub fn url_for(name: &str) -> String {
    let mut url = url::Url::parse(&server_url()).expect("TEST_DATABASE_URL is not a valid URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn admin() -> tokio_postgres::Client {
    gcbb::db::connect(&server().with_dbname("postgres"))
        .await
        .expect("connect to the test server's postgres database")
}

/// A fresh, empty database whose name starts with `prefix` (drift's shadows need `shadow` in it).
pub async fn empty_db_named(prefix: &str) -> TestDb {
    create_named_db(prefix, None).await
}

async fn create_db(template: Option<&str>) -> TestDb {
    create_named_db("gcbb_test", template).await
}

async fn create_named_db(prefix: &str, template: Option<&str>) -> TestDb {
    let name = unique(prefix);
    let sql = match template {
        Some(t) => format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&name),
            quote_ident(t)
        ),
        None => format!("CREATE DATABASE {}", quote_ident(&name)),
    };
    admin()
        .await
        .batch_execute(&sql)
        .await
        .expect("create the test database");
    let config = server().with_dbname(&name);
    TestDb {
        url: url_for(&name),
        name,
        config,
    }
}

/// `gcbb_tpl_` + the first 12 hex digits of a hash over every migration's name and bytes.
pub fn template_name(dir: &Path) -> String {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the migrations directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("migration.sql").is_file())
        .collect();
    names.sort();
    let mut hash = Sha256::new();
    for p in names {
        hash.update(
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        hash.update([0]);
        hash.update(std::fs::read(p.join("migration.sql")).expect("read a migration"));
        hash.update([0]);
    }
    format!("gcbb_tpl_{}", &hex::encode(hash.finalize())[..12])
}

async fn build_template() -> String {
    let dir = migrations_dir();
    let name = template_name(&dir);
    let admin = admin().await;
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_BUILD_LOCK_KEY])
        .await
        .expect("template build lock");
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("look up the template")
        .is_some();
    if !exists {
        // Built under a temporary name and renamed when complete: a crash mid-build never leaves
        // a half-migrated database under the real name.
        let building = format!("{name}_building");
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&building)
            ))
            .await
            .expect("drop a stale template build");
        admin
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&building)))
            .await
            .expect("create the template");
        gcbb_migrate::deploy(&server().with_dbname(&building), &dir)
            .await
            .expect("migrate the template database");
        rename_when_idle(&admin, &building, &name).await;
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {} IS_TEMPLATE true",
                quote_ident(&name)
            ))
            .await
            .expect("mark the template");
    }
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_BUILD_LOCK_KEY])
        .await
        .expect("template build unlock");
    name
}

/// RENAME needs the database idle; the migrating session may still be closing.
async fn rename_when_idle(admin: &tokio_postgres::Client, from: &str, to: &str) {
    let sql = format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_ident(from),
        quote_ident(to)
    );
    for _ in 0..50 {
        match admin.batch_execute(&sql).await {
            Ok(()) => return,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("rename the template database: {e}"),
        }
    }
    panic!("the template database {from} stayed in use");
}
