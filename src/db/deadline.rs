//! What a statement of the request path may take: its time limit, the circuit breaker told how
//! each statement went, and the cancel request sent to the server when one overruns. Shared by
//! the pool's connections ([`super::pool`]) and their transactions ([`super::querier`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::{error_chain, find_io_error};
use crate::breaker::Breaker;

/// What a statement of the request path may take, and how to cancel it on the server.
#[derive(Clone)]
pub(crate) struct Deadline {
    pub(crate) limit: Duration,
    /// The TLS settings of the connections, for the cancel request (its own connection).
    tls: Option<MakeRustlsConnect>,
    /// Bound on the cancel request: it crosses the same network that just failed us.
    cancel_limit: Duration,
    /// The pool's circuit breaker, told how each statement went.
    pub(crate) breaker: Arc<Breaker>,
}

impl Deadline {
    pub(crate) fn new(
        limit: Duration,
        tls: Option<MakeRustlsConnect>,
        cancel_limit: Duration,
        breaker: Arc<Breaker>,
    ) -> Self {
        Deadline {
            limit,
            tls,
            cancel_limit,
            breaker,
        }
    }

    /// Tells the breaker how a statement that finished (within its deadline) went: an answer
    /// from the server, errors included, shows it is up; a connection that broke does not.
    pub(crate) fn observe<T>(&self, outcome: &Result<T, tokio_postgres::Error>) {
        match outcome {
            Err(e)
                if e.as_db_error().is_none() && (e.is_closed() || find_io_error(e).is_some()) =>
            {
                self.breaker.record_failure("unreachable")
            }
            _ => self.breaker.record_success(),
        }
    }

    /// Tells the breaker a statement overran its deadline.
    pub(crate) fn overran(&self) {
        self.breaker.record_failure("timeout");
    }

    /// Asks the server, on a connection of its own and in the background, to cancel what
    /// `client` is running. Works through PgBouncer, which forwards cancel requests.
    pub(crate) fn cancel(&self, token: tokio_postgres::CancelToken) {
        let tls = self.tls.clone();
        let limit = self.cancel_limit;
        tokio::spawn(async move {
            let sent = tokio::time::timeout(limit, async move {
                match tls {
                    None => token.cancel_query(NoTls).await,
                    Some(tls) => token.cancel_query(tls).await,
                }
            })
            .await;
            match sent {
                Ok(Ok(())) => tracing::debug!("postgres statement cancelled after its deadline"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %error_chain(&e), "postgres cancel request failed")
                }
                Err(_) => tracing::warn!(
                    limit_ms = limit.as_millis() as u64,
                    "postgres cancel request timed out"
                ),
            }
        });
    }
}
