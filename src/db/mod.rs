//! Postgres access: connection settings parsed from Neon-style URLs, TLS, a small pool, and the
//! intent-named queries of each table (`db::<table>`).

pub mod config;
pub mod demo;
pub mod health;
pub mod pool;
pub mod tls;

pub use config::{DbConfig, DbUrlError, SslMode};
pub use pool::{Pool, PooledClient};

/// Errors of the data layer, classified so the HTTP layer can map them on purpose.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no such row")]
    NotFound,
    #[error("database timed out")]
    Timeout,
    #[error("no database connection available")]
    PoolExhausted,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
}

impl DbError {
    /// The SQLSTATE of a server error, if this is one.
    pub fn sqlstate(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            DbError::Query(e) => e.code(),
            _ => None,
        }
    }
}

/// Opens one connection (TLS as `sslmode` says), with the connect timeout and one retry,
/// and drives it on a background task.
pub async fn connect(cfg: &DbConfig) -> Result<tokio_postgres::Client, DbError> {
    pool::connect(cfg).await
}
