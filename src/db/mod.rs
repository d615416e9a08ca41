//! Postgres access: connection settings parsed from Neon-style URLs, TLS, a small pool, and the
//! intent-named queries of each table (`db::<table>`).
//!
//! Request-path code takes a connection with [`Pool::get`] and hands it to the queries, which
//! take `&impl Querier` and run `client.query_typed(...)`: unnamed statements with typed
//! parameters, one round trip, and they work through Neon's PgBouncer in transaction mode (named
//! prepared statements, session `SET` and session advisory locks do not — use `SET LOCAL` inside
//! a transaction). On a pooled connection every statement runs under the pool's deadline
//! (`DB_QUERY_TIMEOUT_MS`) and is cancelled on the server when it overruns ([`querier`]).

pub mod burned_tokens;
pub mod categories;
pub mod companions;
pub mod config;
mod deadline;
pub mod error;
pub mod group_chats;
pub mod health;
pub mod hot;
pub mod messages;
pub mod page;
pub mod pool;
pub mod privacy;
pub mod querier;
pub mod read_model;
pub mod tls;

pub use config::{ChannelBinding, DbConfig, DbUrlError, SslMode};
pub use error::DbError;
pub use pool::{Pool, PooledClient, DEFAULT_POOL_ACQUIRE_TIMEOUT, DEFAULT_QUERY_TIMEOUT};
pub use querier::Querier;

/// Opens one connection (TLS as `sslmode` says), with the connect timeout and one retry,
/// and drives it on a background task.
pub async fn connect(cfg: &DbConfig) -> Result<tokio_postgres::Client, DbError> {
    pool::connect(cfg).await
}

/// Every hot query of the application: the request-path SQL whose plans must use an intended
/// index, each declared next to the code that runs it (a `HOT_QUERIES` slice in its
/// `db::<table>` module) and checked by `gcbb db verify`.
pub fn hot_queries() -> Vec<&'static hot::HotQuery> {
    companions::HOT_QUERIES
        .iter()
        .chain(messages::HOT_QUERIES)
        .chain(group_chats::HOT_QUERIES)
        .chain(burned_tokens::HOT_QUERIES)
        .collect()
}

/// A representative write per hot table (see [`hot::HotWrite`]): a chat message stored, a
/// companion edited, tokens accounted.
pub fn hot_writes() -> Vec<&'static hot::HotWrite> {
    messages::HOT_WRITES
        .iter()
        .chain(companions::HOT_WRITES)
        .chain(burned_tokens::HOT_WRITES)
        .collect()
}

/// The database functions that run hot queries of their own (see [`hot::FunctionQueries`]).
pub fn function_queries() -> Vec<&'static hot::FunctionQueries> {
    vec![
        &companions::COUNT_FUNCTION,
        &companions::COUNT_PREFIX_FUNCTION,
    ]
}
