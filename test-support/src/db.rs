//! Throwaway databases on the test Postgres server.
//!
//! [`fresh_db`] clones a template database that holds the whole migration history
//! (`CREATE DATABASE x TEMPLATE gcbb_tpl_<hash>`: a file copy, much faster than migrating per
//! test). The template's name comes from a hash of the migrations directory, so a changed history
//! gets a new template, and it is built once per server under an advisory lock on the `postgres`
//! database, so parallel test processes (other worktrees too) neither race nor rebuild it.
//! Every [`TestDb`] drops its database when it goes out of scope.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gcbb::db::DbConfig;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio_postgres::types::{FromSql, ToSql};

use crate::{database_server_url, migrations_dir, unique};

/// Advisory lock key (on the `postgres` database) serialising template builds across processes.
const TEMPLATE_BUILD_LOCK_KEY: i64 = 0x6763_6262_7470_6c00; // "gcbbtpl\0"

/// The owner of the demo data (`SYSTEM_USER_ID`'s default).
pub const DEMO_SYSTEM_USER: &str = "system";

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A database that exists for one test.
pub struct TestDb {
    pub name: String,
    /// `postgres://…/name?…`, to hand to a child process as `DATABASE_URL`.
    pub url: String,
    pub config: DbConfig,
}

impl TestDb {
    pub async fn client(&self) -> tokio_postgres::Client {
        gcbb::db::connect(&self.config)
            .await
            .expect("connect to the test database")
    }

    /// The single number a query returns (`SELECT count(*) …`), on a connection of its own.
    pub async fn count(&self, sql: &str) -> i64 {
        self.one(sql, &[]).await
    }

    /// The first column of the one row `sql` returns.
    pub async fn one<T>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> T
    where
        T: for<'a> FromSql<'a>,
    {
        self.client()
            .await
            .query_one(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// The first column of every row `sql` returns.
    pub async fn column<T>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<T>
    where
        T: for<'a> FromSql<'a>,
    {
        rows_column(&self.client().await, sql, params).await
    }
}

/// The first column of every row `sql` returns on `client`.
async fn rows_column<T>(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Vec<T>
where
    T: for<'a> FromSql<'a>,
{
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The databases of the test server whose names start with `prefix`.
pub async fn databases_starting_with(prefix: &str) -> Vec<String> {
    let sql = "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)";
    rows_column(&admin().await, sql, &[&prefix]).await
}

/// Drops the databases `names` (those that exist) before returning: for `Drop`, which can't
/// await and runs inside the test's runtime, where blocking on another future would panic, so
/// it is done on a thread with a runtime of its own.
pub fn drop_databases_now(names: Vec<String>) {
    let admin = server().with_dbname("postgres");
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            if let Ok(client) = gcbb::db::connect(&admin).await {
                for name in names {
                    let sql = format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_ident(&name)
                    );
                    let _ = client.batch_execute(&sql).await;
                }
            }
        });
    })
    .join();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_databases_now(vec![self.name.clone()]);
    }
}

/// The test server (`TEST_DATABASE_URL`), connected to its `postgres` database.
pub fn server_url() -> String {
    database_server_url()
}

pub fn server() -> DbConfig {
    DbConfig::parse(&server_url()).expect("TEST_DATABASE_URL is not a valid postgres URL")
}

/// A fresh database holding the whole migration history (cloned from the template).
pub async fn fresh_db() -> TestDb {
    let template = TEMPLATE.get_or_init(build_template).await.clone();
    create_named_db("gcbb_test", Some(&template)).await
}

/// A fresh database with the whole history and `gcbb dev`'s demo data.
pub async fn demo_db() -> TestDb {
    let db = fresh_db().await;
    gcbb_cli::demo::insert_demo_data_if_empty(&db.client().await, DEMO_SYSTEM_USER)
        .await
        .expect("insert the demo data");
    db
}

/// A fresh, empty database (no migrations, no `_prisma_migrations`).
pub async fn empty_db() -> TestDb {
    create_named_db("gcbb_test", None).await
}

/// A fresh, empty database whose name starts with `prefix` (drift's shadows need `shadow` in it).
pub async fn empty_db_named(prefix: &str) -> TestDb {
    create_named_db(prefix, None).await
}

/// A database name nobody uses yet, not created: for a tool that creates its own database
/// (`gcbb dev`). It is dropped at the end like any other, if it was created.
pub fn absent_db() -> TestDb {
    absent_db_named("gcbb_test")
}

/// [`absent_db`] with a name that starts with `prefix`.
pub fn absent_db_named(prefix: &str) -> TestDb {
    let name = unique(prefix);
    TestDb {
        url: url_for(&name),
        config: server().with_dbname(&name),
        name,
    }
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

/// A connection to the test server's `postgres` database.
pub async fn admin() -> tokio_postgres::Client {
    gcbb::db::connect(&server().with_dbname("postgres"))
        .await
        .expect("connect to the test server's postgres database")
}

async fn create_named_db(prefix: &str, template: Option<&str>) -> TestDb {
    let db = absent_db_named(prefix);
    let sql = match template {
        Some(t) => format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&db.name),
            quote_ident(t)
        ),
        None => format!("CREATE DATABASE {}", quote_ident(&db.name)),
    };
    admin()
        .await
        .batch_execute(&sql)
        .await
        .expect("create the test database");
    db
}

/// The names of the migrations in `dir` (folders holding a `migration.sql`), in order.
pub fn migration_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read a migrations directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("migration.sql").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `gcbb_tpl_` + the first 12 hex digits of a hash over every migration's name and bytes.
pub fn template_name(dir: &Path) -> String {
    let mut hash = Sha256::new();
    for name in migration_names(dir) {
        let file: PathBuf = dir.join(&name).join("migration.sql");
        hash.update(name);
        hash.update([0]);
        hash.update(std::fs::read(file).expect("read a migration"));
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
