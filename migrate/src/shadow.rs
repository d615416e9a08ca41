//! The safety of the shadow database, which `gcbb db drift` empties on every run. Emptying the
//! wrong database is the one unrecoverable mistake of the tool, so a shadow is refused when it is
//! the target itself (compared by URL before connecting, and by the server's identity once
//! connected, because two URLs can reach one database), when its name lacks `shadow`, and when it
//! holds a migration history; `--force` overrides the last two only. They concern the database,
//! not the comparison, which is why they are not part of `drift`.

use gcbb::db::DbConfig;
use tokio_postgres::Client;

use super::error::MigrateError;
use super::{history, session};

/// A shadow database's name must contain this (unless `--force`): it is emptied on every run.
pub const SHADOW_NAME_MARK: &str = "shadow";

/// True when the two URLs reach the same server: the same host and port, where `localhost`,
/// `127.0.0.1`, `::1` and a Unix socket all count as one host.
pub fn same_server(a: &DbConfig, b: &DbConfig) -> bool {
    let same_host = a.host.eq_ignore_ascii_case(&b.host) || (a.is_local() && b.is_local());
    same_host && a.port == b.port
}

/// True when the two URLs name the same database of the same server.
pub fn same_url_database(a: &DbConfig, b: &DbConfig) -> bool {
    same_server(a, b) && a.dbname == b.dbname
}

/// Why a shadow database is refused.
pub fn check_shadow(target: &DbConfig, shadow: &DbConfig, force: bool) -> Result<(), MigrateError> {
    if same_url_database(target, shadow) {
        return Err(MigrateError::ShadowRefused {
            shadow: shadow.redacted(),
            reason: "it is the target database itself".to_owned(),
        });
    }
    if !force && !shadow.dbname.to_lowercase().contains(SHADOW_NAME_MARK) {
        return Err(MigrateError::ShadowRefused {
            shadow: shadow.redacted(),
            reason: format!(
                "its name does not contain `{SHADOW_NAME_MARK}`; drift empties the shadow database on every run \
                 (pass --force if this database really is a disposable shadow)"
            ),
        });
    }
    Ok(())
}

/// Connects to `target` and `shadow`, refusing a shadow that is the target reached by another URL,
/// or (unless `force`) one that holds a migration history. Call [`check_shadow`] first: it needs
/// no connection.
pub async fn open(
    target: &DbConfig,
    shadow: &DbConfig,
    force: bool,
) -> Result<(Client, Client), MigrateError> {
    let target_client = session::connect(target).await?;
    let shadow_client = session::connect(shadow).await?;
    if database_identity(&target_client).await? == database_identity(&shadow_client).await? {
        return Err(MigrateError::ShadowRefused {
            shadow: shadow.redacted(),
            reason: "it is the target database itself (same server and database)".to_owned(),
        });
    }
    check_shadow_contents(&shadow_client, shadow, force).await?;
    Ok((target_client, shadow_client))
}

/// Refuses a shadow that holds a recorded history (`_prisma_migrations` with rows): drift leaves
/// its shadow empty, so rows mean someone else's database, or a run that died half-way
/// (`--force` to empty it anyway).
async fn check_shadow_contents(
    client: &Client,
    shadow: &DbConfig,
    force: bool,
) -> Result<(), MigrateError> {
    if force || !history::migrations_table_exists(client).await? {
        return Ok(());
    }
    let rows = history::list_rows(client).await?;
    if rows.is_empty() {
        return Ok(());
    }
    Err(MigrateError::ShadowRefused {
        shadow: shadow.redacted(),
        reason: format!(
            "it holds a migration history ({} row(s) in _prisma_migrations); drift would erase it \
             (pass --force if this database really is a disposable shadow)",
            rows.len()
        ),
    })
}

/// Whether `other` is connected to the database that the session `probe` is connected to, where
/// `probe` was opened with the application name `probe_app`, unique to it. Proof by sight: a
/// session sees every session of its own server in `pg_stat_activity` (application name and
/// database are shown to every role), so `other` finding `probe_app` on its own database means
/// one database, however the two URLs spell it. A Neon branch is a copy of its parent that may
/// report the parent's system identifier and database name, so comparing identities alone
/// would take a branch for its parent; the sighting does not. Only when `other` cannot see even
/// itself does this fall back to the identities.
pub async fn same_database(
    probe: &Client,
    probe_app: &str,
    other: &Client,
) -> Result<bool, MigrateError> {
    let db_err = |e: tokio_postgres::Error| MigrateError::Database(session::describe_pg_error(&e));
    let row = other
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity \
                            WHERE application_name = $1 AND datname = current_database()), \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE pid = pg_backend_pid())",
            &[&probe_app],
        )
        .await
        .map_err(db_err)?;
    let (seen, sees_itself): (bool, bool) = (row.get(0), row.get(1));
    if seen || sees_itself {
        return Ok(seen);
    }
    Ok(database_identity(probe).await? == database_identity(other).await?)
}

/// What makes a database itself whatever URL reached it: the cluster's system identifier (when
/// the role may read it), the server's address and port, and the database name.
async fn database_identity(client: &Client) -> Result<String, MigrateError> {
    let db_err = |e: tokio_postgres::Error| MigrateError::Database(session::describe_pg_error(&e));
    let system = match client
        .query_one("SELECT system_identifier::text FROM pg_catalog.pg_control_system()", &[])
        .await
    {
        Ok(row) => row.get::<_, String>(0),
        // Not granted on some managed servers: the address and port then stand for the server.
        Err(_) => client
            .query_one(
                "SELECT COALESCE(host(inet_server_addr()), 'socket') || ':' || COALESCE(inet_server_port(), 0)",
                &[],
            )
            .await
            .map_err(db_err)?
            .get(0),
    };
    let name: String = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(db_err)?
        .get(0);
    Ok(format!("{system}/{name}"))
}

/// Drops every extension and every user schema the current user owns (and `public`), then
/// recreates an empty `public`.
pub async fn empty_database(client: &Client) -> Result<(), MigrateError> {
    let db_err = |e: tokio_postgres::Error| MigrateError::Database(session::describe_pg_error(&e));
    let extensions = client
        .query(
            "SELECT extname::text FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql'",
            &[],
        )
        .await
        .map_err(db_err)?;
    for row in extensions {
        let name: String = row.get(0);
        client
            .batch_execute(&format!(
                "DROP EXTENSION IF EXISTS {} CASCADE",
                history::quote_ident(&name)
            ))
            .await
            .map_err(db_err)?;
    }
    let schemas = history::owned_schemas(client).await?;
    history::drop_schemas(client, &schemas).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_itself_is_never_a_shadow_even_with_force() {
        let target = DbConfig::parse("postgres://u@db.example:5432/app").expect("url");
        let same = DbConfig::parse("postgres://other@DB.example:5432/app").expect("url");
        assert!(check_shadow(&target, &same, true).is_err());
        let unmarked = target.with_dbname("app_copy");
        assert!(check_shadow(&target, &unmarked, false).is_err());
        assert!(check_shadow(&target, &unmarked, true).is_ok());
        assert!(check_shadow(&target, &target.with_dbname("app_shadow"), false).is_ok());
        let local = DbConfig::parse("postgres://u@127.0.0.1:5432/app_shadow").expect("url");
        let alias = DbConfig::parse("postgres://u@localhost:5432/app_shadow").expect("url");
        assert!(check_shadow(&local, &alias, true).is_err());
    }
}
