//! The `_prisma_migrations` table and Prisma's advisory lock: every SQL statement `gcbb db` runs
//! against the history lives here, behind an intent-named function. The DDL, the lock key and
//! the row life cycle are Prisma Migrate's, so either tool can take over from the other.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::error::MigrateError;
use super::session;

/// Prisma Migrate's advisory lock key (`pg_advisory_lock(72707369)`): holding the same key makes
/// `gcbb db` and `prisma migrate` exclude each other.
pub const ADVISORY_LOCK_KEY: i64 = 72707369;

/// Prisma's DDL, byte for byte in effect (the primary key gets the name `_prisma_migrations_pkey`).
const CREATE_MIGRATIONS_TABLE: &str = r#"CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)"#;

/// Prisma stores its timestamps with millisecond precision; so do we, so rows look the same.
const NOW_MS: &str = "date_trunc('milliseconds', clock_timestamp())";

/// One row of `_prisma_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRow {
    pub id: String,
    pub checksum: String,
    pub finished_at: Option<DateTime<Utc>>,
    pub migration_name: String,
    pub logs: Option<String>,
    pub rolled_back_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub applied_steps_count: i32,
}

impl MigrationRow {
    /// Started and neither finished nor rolled back: blocks every further deploy (P3009).
    pub fn is_failed(&self) -> bool {
        self.finished_at.is_none() && self.rolled_back_at.is_none()
    }

    pub fn is_applied(&self) -> bool {
        self.finished_at.is_some() && self.rolled_back_at.is_none()
    }
}

fn db_err(e: tokio_postgres::Error) -> MigrateError {
    MigrateError::Database(session::describe_pg_error(&e))
}

/// How often a deploy waiting for Prisma's advisory lock asks for it again.
pub const ADVISORY_LOCK_POLL: Duration = Duration::from_millis(100);

/// Waits at most `timeout` for Prisma's advisory lock, asking with `pg_try_advisory_lock` every
/// [`ADVISORY_LOCK_POLL`] rather than waiting inside one `pg_advisory_lock` statement: a
/// statement waiting holds a snapshot, and `CREATE INDEX CONCURRENTLY` in the deploy holding the
/// lock waits for every older snapshot to end, so the two would wait for each other until one
/// is killed as a deadlock. Between two tries this session holds nothing.
pub async fn acquire_lock(client: &Client, timeout: Duration) -> Result<(), MigrateError> {
    set_lock_timeout(client, timeout).await?;
    let started = std::time::Instant::now();
    loop {
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&ADVISORY_LOCK_KEY])
            .await
            .map_err(db_err)?
            .get(0);
        if got {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(MigrateError::AdvisoryLockTimeout {
                timeout_ms: timeout.as_millis(),
            });
        }
        tokio::time::sleep(ADVISORY_LOCK_POLL.min(timeout.saturating_sub(started.elapsed()))).await;
    }
}

/// Releases the lock early; dropping the connection releases it too.
pub async fn release_lock(client: &Client) -> Result<(), MigrateError> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&ADVISORY_LOCK_KEY])
        .await
        .map_err(db_err)?;
    Ok(())
}

/// `lock_timeout` for this session; zero turns it off.
pub async fn set_lock_timeout(client: &Client, timeout: Duration) -> Result<(), MigrateError> {
    let value = format!("{}ms", timeout.as_millis());
    client
        .execute("SELECT set_config('lock_timeout', $1, false)", &[&value])
        .await
        .map_err(db_err)?;
    Ok(())
}

pub async fn migrations_table_exists(client: &Client) -> Result<bool, MigrateError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables \
             WHERE schemaname = current_schema() AND tablename = '_prisma_migrations')",
            &[],
        )
        .await
        .map_err(db_err)?;
    Ok(row.get(0))
}

/// True when the current schema holds no table, view, sequence or enum (what Prisma calls an
/// empty database: deploying into it needs no baseline).
pub async fn schema_is_empty(client: &Client) -> Result<bool, MigrateError> {
    let row = client
        .query_one(
            "SELECT NOT EXISTS (
                 SELECT 1 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
                 UNION ALL
                 SELECT 1 FROM pg_catalog.pg_type t
                 JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
                 WHERE n.nspname = current_schema() AND t.typtype = 'e'
             )",
            &[],
        )
        .await
        .map_err(db_err)?;
    Ok(row.get(0))
}

pub async fn create_migrations_table(client: &Client) -> Result<(), MigrateError> {
    client
        .batch_execute(CREATE_MIGRATIONS_TABLE)
        .await
        .map_err(db_err)
}

/// Every row, oldest first (Prisma's order).
pub async fn list_rows(client: &Client) -> Result<Vec<MigrationRow>, MigrateError> {
    let rows = client
        .query(
            "SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, \
             applied_steps_count FROM \"_prisma_migrations\" ORDER BY started_at ASC, migration_name ASC",
            &[],
        )
        .await
        .map_err(db_err)?;
    Ok(rows
        .iter()
        .map(|r| MigrationRow {
            id: r.get(0),
            checksum: r.get(1),
            finished_at: r.get(2),
            migration_name: r.get(3),
            logs: r.get(4),
            rolled_back_at: r.get(5),
            started_at: r.get(6),
            applied_steps_count: r.get(7),
        })
        .collect())
}

/// Inserts the "started" row before the script runs, so a crash mid-way leaves a failed row.
pub async fn record_started(
    client: &Client,
    name: &str,
    checksum: &str,
) -> Result<String, MigrateError> {
    let id = uuid::Uuid::new_v4().to_string();
    let sql = format!(
        "INSERT INTO \"_prisma_migrations\" (id, checksum, started_at, migration_name, applied_steps_count) \
         VALUES ($1, $2, {NOW_MS}, $3, 0)"
    );
    client
        .execute(&sql, &[&id, &checksum, &name])
        .await
        .map_err(db_err)?;
    Ok(id)
}

pub async fn record_finished(client: &Client, id: &str) -> Result<(), MigrateError> {
    let sql = format!(
        "UPDATE \"_prisma_migrations\" SET finished_at = {NOW_MS}, applied_steps_count = applied_steps_count + 1 \
         WHERE id = $1"
    );
    client.execute(&sql, &[&id]).await.map_err(db_err)?;
    Ok(())
}

pub async fn record_failed(client: &Client, id: &str, logs: &str) -> Result<(), MigrateError> {
    client
        .execute(
            "UPDATE \"_prisma_migrations\" SET logs = $2 WHERE id = $1",
            &[&id, &logs],
        )
        .await
        .map_err(db_err)?;
    Ok(())
}

pub async fn mark_rolled_back(client: &Client, id: &str) -> Result<(), MigrateError> {
    let sql = format!("UPDATE \"_prisma_migrations\" SET rolled_back_at = {NOW_MS} WHERE id = $1");
    client.execute(&sql, &[&id]).await.map_err(db_err)?;
    Ok(())
}

/// `resolve --applied`: a finished row without running anything (Prisma records 0 steps).
pub async fn insert_applied(
    client: &Client,
    name: &str,
    checksum: &str,
) -> Result<(), MigrateError> {
    let id = uuid::Uuid::new_v4().to_string();
    let sql = format!(
        "INSERT INTO \"_prisma_migrations\" (id, checksum, started_at, finished_at, migration_name, applied_steps_count) \
         VALUES ($1, $2, {NOW_MS}, {NOW_MS}, $3, 0)"
    );
    client
        .execute(&sql, &[&id, &checksum, &name])
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Inserts `row` as it is, id and timestamps included: a schema-only copy gets the history of
/// the database it copies (its rows are data, which a schema-only dump leaves out).
pub async fn insert_row(client: &Client, row: &MigrationRow) -> Result<(), MigrateError> {
    client
        .execute(
            "INSERT INTO \"_prisma_migrations\" (id, checksum, finished_at, migration_name, logs, \
             rolled_back_at, started_at, applied_steps_count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &row.id,
                &row.checksum,
                &row.finished_at,
                &row.migration_name,
                &row.logs,
                &row.rolled_back_at,
                &row.started_at,
                &row.applied_steps_count,
            ],
        )
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Names of the indexes left INVALID on `table` (only `index` when given), e.g. by a failed
/// `CREATE INDEX CONCURRENTLY`.
pub async fn invalid_indexes(
    client: &Client,
    schema: Option<&str>,
    table: &str,
    index: Option<&str>,
) -> Result<Vec<(String, String)>, MigrateError> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
             JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
             WHERE NOT i.indisvalid AND t.relname = $2
               AND n.nspname = COALESCE($1, current_schema())
               AND ($3::text IS NULL OR c.relname = $3)",
            &[&schema, &table, &index],
        )
        .await
        .map_err(db_err)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Non-system schemas the current user owns, plus `public`: what `reset` drops.
pub async fn owned_schemas(client: &Client) -> Result<Vec<String>, MigrateError> {
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_catalog.pg_namespace
             WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
               AND (nspname = 'public' OR nspowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user))
             ORDER BY nspname",
            &[],
        )
        .await
        .map_err(db_err)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Drops every schema of `schemas` with everything in it, then recreates an empty `public`.
pub async fn drop_schemas(client: &Client, schemas: &[String]) -> Result<(), MigrateError> {
    for schema in schemas {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(schema));
        client.batch_execute(&sql).await.map_err(db_err)?;
    }
    client
        .batch_execute("CREATE SCHEMA IF NOT EXISTS \"public\"")
        .await
        .map_err(db_err)
}

/// `"name"` with inner quotes doubled: identifiers cannot be bound as parameters.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
