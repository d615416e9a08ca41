//! The data layer's one error type, classified so the HTTP layer can map each kind on purpose
//! (timeouts and lost connections → 503, no row → 404).

use std::error::Error as StdError;
use std::io;

use tokio_postgres::error::SqlState;

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
        if find_io_error(&e).is_some() {
            return DbError::Unavailable(error_chain(&e));
        }
        DbError::Query(e)
    }
}

/// The first cause of type `T`, looking inside `io::Error`s (whose `source()` skips their
/// payload).
pub(crate) fn find_cause<'a, T: StdError + 'static>(
    e: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(inner) = err.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            if let Some(found) = inner.downcast_ref::<T>() {
                return Some(found);
            }
        }
        current = err.source();
    }
    None
}

pub(crate) fn find_io_error(e: &tokio_postgres::Error) -> Option<&io::Error> {
    find_cause::<io::Error>(e)
}

/// `outer: cause: cause`, since tokio-postgres's Display shows only the outermost kind.
pub(crate) fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut current = e.source();
    while let Some(err) = current {
        out.push_str(": ");
        out.push_str(&err.to_string());
        current = err.source();
    }
    out
}
