//! What a query function runs its SQL on: the seam that puts every request-path statement
//! under a deadline without any call site having to remember it.
//!
//! The queries of `db::<table>` take `&impl Querier`. A [`super::PooledClient`] (the request
//! path's connection; its impl is beside it in [`super::pool`]) runs each statement under the
//! pool's deadline and cancels it on the server when it overruns; a plain
//! `tokio_postgres::Client` (the `gcbb` tool's own connections, the tests) runs it as is, with
//! the tool's own settings. A [`Transaction`] of a pooled connection keeps the deadline for each
//! of its statements and for its commit.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{CancelToken, Client, Row};

use super::deadline::Deadline;
use super::DbError;

/// Typed parameters of one statement, as `Client::query_typed` takes them.
pub type Params<'a> = [(&'a (dyn ToSql + Sync), Type)];

/// Runs one unnamed statement with typed parameters (one round trip; works through PgBouncer in
/// transaction mode).
pub trait Querier: Sync {
    fn query_typed(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> impl Future<Output = Result<Vec<Row>, DbError>> + Send;
}

/// A tool's own connection: no deadline beyond the tool's settings.
impl Querier for Client {
    async fn query_typed(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, DbError> {
        Client::query_typed(self, sql, params)
            .await
            .map_err(DbError::from)
    }
}

/// A transaction on a pooled connection: each statement, and the commit, under the deadline;
/// one that overruns cancels on the server and abandons the connection (dropping the
/// transaction rolls it back).
pub struct Transaction<'a> {
    tx: tokio_postgres::Transaction<'a>,
    deadline: Deadline,
    abandoned: &'a AtomicBool,
    token: CancelToken,
}

impl<'a> Transaction<'a> {
    pub(crate) fn new(
        tx: tokio_postgres::Transaction<'a>,
        deadline: Deadline,
        abandoned: &'a AtomicBool,
        token: CancelToken,
    ) -> Self {
        Transaction {
            tx,
            deadline,
            abandoned,
            token,
        }
    }

    async fn bounded<T>(
        &self,
        statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, DbError> {
        match tokio::time::timeout(self.deadline.limit, statement).await {
            Ok(result) => {
                self.deadline.observe(&result);
                result.map_err(DbError::from)
            }
            Err(_elapsed) => {
                self.deadline.overran();
                if !self.abandoned.swap(true, Ordering::AcqRel) {
                    self.deadline.cancel(self.token.clone());
                }
                tracing::warn!(
                    limit_ms = self.deadline.limit.as_millis() as u64,
                    "postgres statement in a transaction overran its deadline; cancelled"
                );
                Err(DbError::Timeout)
            }
        }
    }

    /// Statements without parameters or results (`SET LOCAL …`).
    pub async fn batch_execute(&self, sql: &str) -> Result<(), DbError> {
        self.bounded(self.tx.batch_execute(sql)).await
    }

    pub async fn commit(self) -> Result<(), DbError> {
        let limit = self.deadline.limit;
        let deadline = self.deadline.clone();
        match tokio::time::timeout(limit, self.tx.commit()).await {
            Ok(result) => {
                deadline.observe(&result);
                result.map_err(DbError::from)
            }
            Err(_elapsed) => {
                deadline.overran();
                if !self.abandoned.swap(true, Ordering::AcqRel) {
                    deadline.cancel(self.token.clone());
                }
                Err(DbError::Timeout)
            }
        }
    }
}

impl Querier for Transaction<'_> {
    async fn query_typed(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, DbError> {
        self.bounded(self.tx.query_typed(sql, params)).await
    }
}
