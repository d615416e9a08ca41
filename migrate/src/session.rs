//! Talking to the migration database: opening a session, and reading what Postgres said when a
//! statement failed (the message as psql shows it; whether `lock_timeout` fired, which is retried).

use gcbb::db::DbConfig;

use super::error::MigrateError;

/// `ERROR: message` plus DETAIL/HINT/WHERE lines, as psql shows a server error.
pub(crate) fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return e.to_string();
    };
    let mut out = format!("{}: {}", db.severity(), db.message());
    if let Some(d) = db.detail() {
        out.push_str(&format!("\nDETAIL: {d}"));
    }
    if let Some(h) = db.hint() {
        out.push_str(&format!("\nHINT: {h}"));
    }
    if let Some(w) = db.where_() {
        out.push_str(&format!("\nCONTEXT: {w}"));
    }
    out
}

/// SQLSTATE 55P03 (`lock_not_available`): `lock_timeout` fired.
pub(crate) fn is_lock_timeout(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// A session of its own (not a pool): advisory locks and `SET lock_timeout` belong to one.
pub async fn connect(db: &DbConfig) -> Result<tokio_postgres::Client, MigrateError> {
    gcbb::db::connect(db).await.map_err(|e| match e {
        // The server was reached: what failed is TLS or channel binding, and saying the
        // server can't be reached would send the user looking in the wrong place.
        gcbb::db::DbError::Tls(message) => MigrateError::Database(message),
        other => MigrateError::Connect {
            target: db.redacted(),
            message: other.to_string(),
        },
    })
}
