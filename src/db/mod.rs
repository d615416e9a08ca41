//! Postgres access: connection settings parsed from Neon-style URLs, TLS, a small pool, and the
//! intent-named queries of each table (`db::<table>`).
//!
//! Request-path code takes a connection with [`Pool::get`] and runs `client.query_typed(...)`:
//! unnamed statements with typed parameters, one round trip, and they work through Neon's
//! PgBouncer in transaction mode (named prepared statements, session `SET` and session advisory
//! locks do not — use `SET LOCAL` inside a transaction).

pub mod burned_tokens;
pub mod categories;
pub mod companions;
pub mod config;
pub mod group_chats;
pub mod health;
pub mod hot;
pub mod messages;
pub mod pool;
pub mod read_model;
pub mod tls;

pub use config::{ChannelBinding, DbConfig, DbUrlError, SslMode};
pub use pool::{Pool, PooledClient, DEFAULT_POOL_ACQUIRE_TIMEOUT};

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

/// Opens one connection (TLS as `sslmode` says), with the connect timeout and one retry,
/// and drives it on a background task.
pub async fn connect(cfg: &DbConfig) -> Result<tokio_postgres::Client, DbError> {
    pool::connect(cfg).await
}
