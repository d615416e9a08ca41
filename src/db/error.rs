//! The data layer's one error type, classified so the HTTP layer can map each kind on purpose
//! (timeouts and lost connections → 503, no row → 404).

use tokio_postgres::error::SqlState;

use super::pool;

/// Errors of the data layer, classified so the HTTP layer can map them on purpose.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no such row")]
    NotFound,
    /// Connecting, or a statement, took too long (`statement_timeout` included).
    #[error("database timed out")]
    Timeout,
    #[error("no database connection available")]
    PoolExhausted,
    /// Not tried: the database's circuit breaker is open after repeated failures.
    #[error("database skipped: its circuit is open after repeated failures")]
    CircuitOpen,
    /// The server can't be reached, went away, or is shutting down.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// TLS could not be set up or the server's certificate was refused.
    #[error("TLS: {0}")]
    Tls(String),
    /// Anything else the server or the driver said (constraint violations, bad SQL, auth...).
    #[error(transparent)]
    Query(tokio_postgres::Error),
}

impl DbError {
    /// The SQLSTATE of a server error, if this is one.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        match self {
            DbError::Query(e) => e.code(),
            _ => None,
        }
    }
}

/// Errors of a statement on an open connection. A connection that died (killed by the server,
/// network gone) is `Unavailable` so the request answers 503, not 500.
impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::QUERY_CANCELED {
                return DbError::Timeout;
            }
            if [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(code)
            {
                return DbError::Unavailable(db.message().to_owned());
            }
            return DbError::Query(e);
        }
        if e.is_closed() {
            return DbError::Unavailable("connection closed".into());
        }
        if pool::find_io_error(&e).is_some() {
            return DbError::Unavailable(pool::error_chain(&e));
        }
        DbError::Query(e)
    }
}
