//! Opening connections (timeout, one retry, error classification) and the small lazily-built
//! pool each process keeps, with the request path's deadlines (waiting, connecting, each
//! statement, which is cancelled on the server when it overruns) and its circuit breaker
//! (after a few connections that failed or statements past their deadline, requests get
//! `CircuitOpen` at once instead of each waiting out the deadline; one background probe at a
//! time closes it).
//!
//! The pool is `deadpool`'s managed pool with a manager of our own rather than
//! `deadpool-postgres`: that crate opens connections from a `tokio_postgres::Config`, and ours
//! need what `connect` adds (`sslmode=verify-full` against compiled-in roots, channel binding,
//! the connect timeout around TLS and start-up, one retry while a Neon compute wakes). Recycling
//! is a check of `Client::is_closed()`, not a ping: a ping would add a round trip to every
//! request, and a connection the server killed shows up as closed and is replaced.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::deadline::Deadline;
use super::error::{error_chain, find_cause, find_io_error};
use super::querier::{Params, Querier, Transaction};
use super::{tls, DbConfig, DbError};
use crate::breaker::{Admission, Breaker, BreakerStatus};

/// How long `Pool::get` waits for a connection another request holds before giving up.
pub const DEFAULT_POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one request-path statement, and of opening a connection (`DB_QUERY_TIMEOUT_MS`):
/// long enough for a slow page on a cold cache and a Neon compute waking up, short enough that
/// a request answers 503 well within a function's duration when Postgres is unreachable.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a cancel request may take; it is sent in the background, so this only bounds how
/// long a task lingers when the network is what failed.
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per connect: the first, plus one retry.
pub const CONNECT_ATTEMPTS: u32 = 2;
/// Pause before the retry; a suspended Neon compute takes a few hundred milliseconds to wake.
pub const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Connections that failed, or statements past their deadline, in a row that open the
/// database's circuit breaker.
pub const DB_BREAKER_FAILURES: u32 = 3;
/// How long requests skip the database the first time the breaker opens; a failed probe
/// doubles it, up to [`DB_BREAKER_MAX_OPEN`]: at most that long after the database is back,
/// requests still get 503.
pub const DB_BREAKER_MIN_OPEN: Duration = Duration::from_secs(1);
pub const DB_BREAKER_MAX_OPEN: Duration = Duration::from_secs(4);

/// Opens one connection (see [`super::connect`]).
pub(crate) async fn connect(cfg: &DbConfig) -> Result<Client, DbError> {
    connect_noting(cfg, None).await
}

/// Opens one connection, noting a failed first attempt on `breaker` (the database is in doubt
/// from then on, before the retry has decided).
async fn connect_noting(cfg: &DbConfig, breaker: Option<&Breaker>) -> Result<Client, DbError> {
    let tls = tls::make_connector(cfg)?;
    let pg = cfg.to_pg_config();
    let client = retry_once(cfg, CONNECT_RETRY_PAUSE, || async {
        let attempt = connect_once(cfg, &pg, tls.as_ref()).await;
        if let (Err(_), Some(breaker)) = (&attempt, breaker) {
            breaker.note_trouble();
        }
        attempt
    })
    .await?;
    tracing::debug!(target_db = %cfg.redacted(), sslmode = %cfg.sslmode, "postgres connected");
    Ok(client)
}

/// Why one attempt failed, and whether another could go better.
struct Failure {
    error: DbError,
    retry: bool,
}

impl Failure {
    fn retry(error: DbError) -> Self {
        Failure { error, retry: true }
    }

    fn fatal(error: DbError) -> Self {
        Failure {
            error,
            retry: false,
        }
    }
}

async fn retry_once<T, F, Fut>(
    cfg: &DbConfig,
    pause: Duration,
    mut attempt: F,
) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(f) if f.retry && tries < CONNECT_ATTEMPTS => {
                tracing::warn!(
                    target_db = %cfg.redacted(),
                    attempt = tries,
                    error = %f.error,
                    "postgres connect failed; retrying"
                );
                tokio::time::sleep(pause).await;
            }
            Err(f) => {
                return Err(match f.error {
                    DbError::Unavailable(m) if tries > 1 => {
                        DbError::Unavailable(format!("{m} ({tries} attempts)"))
                    }
                    other => other,
                })
            }
        }
    }
}

async fn connect_once(
    cfg: &DbConfig,
    pg: &tokio_postgres::Config,
    tls: Option<&MakeRustlsConnect>,
) -> Result<Client, Failure> {
    // tokio-postgres bounds only the TCP connect; this bounds TLS and start-up as well.
    let attempt = async {
        match tls {
            None => pg.connect(NoTls).await.map(|(client, conn)| {
                spawn_connection(conn);
                client
            }),
            Some(tls) => pg.connect(tls.clone()).await.map(|(client, conn)| {
                spawn_connection(conn);
                client
            }),
        }
    };
    match tokio::time::timeout(cfg.connect_timeout, attempt).await {
        Err(_elapsed) => Err(Failure::retry(DbError::Timeout)),
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(classify_connect_error(e, cfg)),
    }
}

/// Drives a connection's socket until the client is dropped or the server goes away.
fn spawn_connection<F>(conn: F)
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %error_chain(&e), "postgres connection ended");
        }
    });
}

/// Auth and certificate problems won't fix themselves in half a second: only network trouble,
/// timeouts and a starting server are retried.
fn classify_connect_error(e: tokio_postgres::Error, cfg: &DbConfig) -> Failure {
    if let Some(db) = e.as_db_error() {
        if *db.code() == SqlState::CANNOT_CONNECT_NOW {
            return Failure::retry(DbError::Unavailable(format!(
                "{}: {}",
                cfg.redacted(),
                db.message()
            )));
        }
        return Failure::fatal(DbError::Query(e));
    }
    if let Some(tls_err) = find_cause::<rustls::Error>(&e) {
        return Failure::fatal(DbError::Tls(tls::describe_tls_error(tls_err, cfg)));
    }
    if let Some(io_err) = find_io_error(&e) {
        let error = if io_err.kind() == io::ErrorKind::TimedOut {
            DbError::Timeout
        } else {
            DbError::Unavailable(format!("{}: {}", cfg.redacted(), error_chain(&e)))
        };
        return Failure::retry(error);
    }
    // tokio-postgres's error kinds are private; its Display is the stable way to tell them.
    let kind = e.to_string();
    if kind.starts_with("authentication error") && error_chain(&e).contains("channel binding") {
        return Failure::fatal(DbError::Tls(format!(
            "{} (sslmode={}, channel_binding={}): the server did not use channel binding \
             (SCRAM-SHA-256-PLUS over TLS), which channel_binding=require demands; check that \
             TLS is on and the server authenticates with SCRAM, or use channel_binding=prefer",
            cfg.redacted(),
            cfg.sslmode,
            cfg.channel_binding.as_str()
        )));
    }
    if kind.starts_with("error performing TLS handshake") {
        return Failure::fatal(DbError::Tls(format!(
            "{} (sslmode={}): {}",
            cfg.redacted(),
            cfg.sslmode,
            error_chain(&e)
        )));
    }
    if kind.starts_with("timeout waiting for server") {
        return Failure::retry(DbError::Timeout);
    }
    if e.is_closed() {
        return Failure::retry(DbError::Unavailable(format!(
            "{}: server closed the connection",
            cfg.redacted()
        )));
    }
    Failure::fatal(DbError::Query(e))
}

/// Opens and recycles the pool's connections.
struct Manager {
    cfg: DbConfig,
    breaker: Arc<Breaker>,
}

impl deadpool::managed::Manager for Manager {
    type Type = Client;
    type Error = DbError;

    async fn create(&self) -> Result<Client, DbError> {
        connect_noting(&self.cfg, Some(&self.breaker)).await
    }

    async fn recycle(
        &self,
        client: &mut Client,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<DbError> {
        if client.is_closed() {
            return Err(deadpool::managed::RecycleError::message(
                "the server closed the connection",
            ));
        }
        Ok(())
    }
}

/// A small pool of connections to one database, opened on demand. Cloning shares the pool.
///
/// Every wait of the request path is bounded here, so no call site has to remember it:
/// waiting for a free connection (the acquire timeout), opening a new one (the query
/// deadline, retries included), and each statement run through the [`PooledClient`] it hands
/// out (the query deadline, after which the statement is cancelled on the server).
#[derive(Clone)]
pub struct Pool {
    inner: deadpool::managed::Pool<Manager>,
    cfg: DbConfig,
    acquire_timeout: Duration,
    deadline: Deadline,
}

/// A checked-out connection of the request path. Its statements run under the pool's query
/// deadline ([`super::Querier`]); it goes back to the pool when dropped, unless the server
/// closed it or a statement overran its deadline: then it is let go at once, so the pool never
/// counts a dead or stuck connection as available, and the next request opens a fresh one.
pub struct PooledClient {
    object: Option<deadpool::managed::Object<Manager>>,
    deadline: Deadline,
    /// Set when a statement overran its deadline: the connection may be stuck behind a black
    /// hole, or still busy with a cancelled statement.
    abandoned: AtomicBool,
}

impl PooledClient {
    /// The connection itself, for [`super::Querier`]: statements run on it must go through
    /// [`PooledClient::bounded`].
    pub(crate) fn raw(&self) -> &Client {
        self.object
            .as_ref()
            .expect("a PooledClient holds its connection until dropped")
    }

    /// The deadline each statement on this connection runs under.
    pub fn query_timeout(&self) -> Duration {
        self.deadline.limit
    }

    /// Runs `statement` (one or more round trips on this connection) under the deadline;
    /// past it, cancels on the server, abandons the connection and answers `Timeout`.
    pub(crate) async fn bounded<T, F>(&self, statement: F) -> Result<T, DbError>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        if self.abandoned.load(Ordering::Acquire) {
            return Err(DbError::Unavailable(
                "connection abandoned after a statement overran its deadline".into(),
            ));
        }
        match tokio::time::timeout(self.deadline.limit, statement).await {
            Ok(result) => {
                self.deadline.observe(&result);
                result.map_err(DbError::from)
            }
            Err(_elapsed) => {
                self.deadline.overran();
                self.abandon();
                tracing::warn!(
                    limit_ms = self.deadline.limit.as_millis() as u64,
                    "postgres statement overran its deadline; cancelled"
                );
                Err(DbError::Timeout)
            }
        }
    }

    fn abandon(&self) {
        if !self.abandoned.swap(true, Ordering::AcqRel) {
            self.deadline.cancel(self.raw().cancel_token());
        }
    }

    /// Starts a transaction whose statements (and commit) run under the same deadline.
    pub async fn transaction(&mut self) -> Result<Transaction<'_>, DbError> {
        let deadline = self.deadline.clone();
        if self.abandoned.load(Ordering::Acquire) {
            return Err(DbError::Unavailable(
                "connection abandoned after a statement overran its deadline".into(),
            ));
        }
        let abandoned = &self.abandoned;
        let object = self
            .object
            .as_mut()
            .expect("a PooledClient holds its connection until dropped");
        let token = object.cancel_token();
        let tx = match tokio::time::timeout(deadline.limit, object.transaction()).await {
            Ok(tx) => {
                deadline.observe(&tx);
                tx?
            }
            Err(_) => {
                deadline.overran();
                abandoned.store(true, Ordering::Release);
                deadline.cancel(token);
                return Err(DbError::Timeout);
            }
        };
        Ok(Transaction::new(tx, deadline, abandoned, token))
    }

    /// Whether the server closed this connection.
    pub fn is_closed(&self) -> bool {
        self.raw().is_closed()
    }
}

/// The request path's connection: each statement under the pool's deadline.
impl Querier for PooledClient {
    async fn query_typed(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, DbError> {
        let client = self.raw();
        self.bounded(client.query_typed(sql, params)).await
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            if object.is_closed() || self.abandoned.load(Ordering::Acquire) {
                drop(deadpool::managed::Object::take(object));
            }
        }
    }
}

impl Pool {
    /// A pool of at most `size` connections (at least one); nothing connects until `get()`.
    /// Statements run under [`DEFAULT_QUERY_TIMEOUT`] until [`Pool::with_query_timeout`].
    pub fn new(cfg: DbConfig, size: usize) -> Self {
        Self::build(
            cfg,
            size.max(1),
            DEFAULT_POOL_ACQUIRE_TIMEOUT,
            DEFAULT_QUERY_TIMEOUT,
        )
    }

    fn build(cfg: DbConfig, size: usize, acquire_timeout: Duration, query: Duration) -> Self {
        let breaker = Arc::new(Breaker::new(
            "postgres",
            DB_BREAKER_FAILURES,
            DB_BREAKER_MIN_OPEN,
            DB_BREAKER_MAX_OPEN,
        ));
        let manager = Manager {
            cfg: cfg.clone(),
            breaker: Arc::clone(&breaker),
        };
        let inner = deadpool::managed::Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(acquire_timeout))
            // Opening a connection (both attempts) is bounded like a statement: a black-holed
            // server must not hold a request for the driver's connect timeout twice over.
            .create_timeout(Some(query))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("a pool with a runtime and a size builds");
        // A TLS connector that can't be built fails every connect the same way; the cancel
        // then goes without TLS, which a server requiring TLS refuses (harmless).
        let tls = tls::make_connector(&cfg).ok().flatten();
        let deadline = Deadline::new(query, tls, cfg.connect_timeout.min(CANCEL_TIMEOUT), breaker);
        Pool {
            inner,
            cfg,
            acquire_timeout,
            deadline,
        }
    }

    /// The same settings in a new pool that waits at most `timeout` in `get()` for a free
    /// connection.
    pub fn with_acquire_timeout(self, timeout: Duration) -> Self {
        Self::build(
            self.cfg,
            self.inner.status().max_size,
            timeout,
            self.deadline.limit,
        )
    }

    /// The same settings in a new pool whose statements, and connection attempts, each run
    /// under `timeout` (`DB_QUERY_TIMEOUT_MS`).
    pub fn with_query_timeout(self, timeout: Duration) -> Self {
        Self::build(
            self.cfg,
            self.inner.status().max_size,
            self.acquire_timeout,
            timeout,
        )
    }

    /// This pool's connections, sharing it, but whose statements run under `timeout` instead
    /// (the cron's read-model refresh legitimately takes longer than a page query).
    pub fn with_statement_deadline(&self, timeout: Duration) -> Self {
        let mut pool = self.clone();
        pool.deadline.limit = timeout;
        pool
    }

    pub fn config(&self) -> &DbConfig {
        &self.cfg
    }

    /// The deadline of each statement.
    pub fn query_timeout(&self) -> Duration {
        self.deadline.limit
    }

    /// Most connections this pool opens at once.
    pub fn max_size(&self) -> usize {
        self.inner.status().max_size
    }

    /// Connections waiting in the pool right now (some may have been closed by the server since;
    /// those are replaced on the next `get()`).
    pub fn idle(&self) -> usize {
        self.inner.status().available
    }

    /// The circuit breaker's state, for health.
    pub fn breaker_status(&self) -> BreakerStatus {
        self.deadline.breaker.status()
    }

    /// Whether anything went wrong with the database since it last answered (a failed
    /// connection attempt, a statement past its deadline, the breaker open).
    pub fn is_troubled(&self) -> bool {
        self.deadline.breaker.is_troubled()
    }

    /// A connection for this request: an idle open one, else a new one. Waits at most the
    /// acquire timeout while all `size` connections are in use (`PoolExhausted`), and at most
    /// the query deadline for a new connection to open (`Timeout`). While the breaker is open,
    /// `CircuitOpen` at once (starting the background probe when one is due).
    pub async fn get(&self) -> Result<PooledClient, DbError> {
        match self.deadline.breaker.admit() {
            Admission::Go => {}
            Admission::Skip => return Err(DbError::CircuitOpen),
            Admission::Probe => {
                self.spawn_probe();
                return Err(DbError::CircuitOpen);
            }
        }
        // A request still waiting for a connection when the breaker opens (others found the
        // database unreachable meanwhile) gives up with them instead of waiting out its own
        // deadline.
        let checked_out = tokio::select! {
            checked_out = self.checkout() => checked_out,
            () = self.deadline.breaker.opened() => return Err(DbError::CircuitOpen),
        };
        match &checked_out {
            Err(DbError::Timeout) => self.deadline.breaker.record_failure("timeout"),
            Err(DbError::Unavailable(_)) => self.deadline.breaker.record_failure("unreachable"),
            // Waiting out the acquire timeout is contention while the database answers, and
            // one more sign of an outage once it has stopped answering.
            Err(DbError::PoolExhausted) if self.deadline.breaker.is_troubled() => {
                self.deadline.breaker.record_failure("pool_exhausted")
            }
            _ => {}
        }
        checked_out
    }

    /// One probe of a database the breaker skips: a connection and `SELECT 1`, under the
    /// deadline, in the background; its outcome closes the breaker or keeps it open longer.
    fn spawn_probe(&self) {
        let pool = self.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.deadline.breaker.probed(Ok(()));
            return;
        };
        runtime.spawn(async move {
            let outcome = async {
                let client = pool.checkout().await?;
                let limit = client.deadline.limit;
                match tokio::time::timeout(limit, client.raw().simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(DbError::from(e)),
                    Err(_) => {
                        client.abandon();
                        Err(DbError::Timeout)
                    }
                }
            }
            .await;
            match outcome {
                Ok(()) | Err(DbError::Query(_)) => pool.deadline.breaker.probed(Ok(())),
                Err(DbError::Timeout) => pool.deadline.breaker.probed(Err("timeout")),
                Err(_) => pool.deadline.breaker.probed(Err("unreachable")),
            }
        });
    }

    /// A connection from the pool, past the breaker.
    async fn checkout(&self) -> Result<PooledClient, DbError> {
        use deadpool::managed::{PoolError, TimeoutType};
        // Boxed: deadpool's checkout future is about 17 KB, and every handler future that awaits
        // a connection would otherwise carry it inline (enough to overflow a worker's stack in
        // a debug build).
        let object = Box::pin(self.inner.get()).await.map_err(|e| match e {
            PoolError::Backend(e) => e,
            PoolError::Timeout(TimeoutType::Wait) => {
                tracing::warn!(
                    target_db = %self.cfg.redacted(),
                    size = self.max_size(),
                    "postgres pool exhausted"
                );
                DbError::PoolExhausted
            }
            PoolError::Timeout(_) => {
                tracing::warn!(
                    target_db = %self.cfg.redacted(),
                    limit_ms = self.deadline.limit.as_millis() as u64,
                    "postgres connect overran the query deadline"
                );
                DbError::Timeout
            }
            PoolError::Closed | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
                DbError::PoolExhausted
            }
        })?;
        Ok(PooledClient {
            object: Some(object),
            deadline: self.deadline.clone(),
            abandoned: AtomicBool::new(false),
        })
    }
}

#[cfg(test)]
mod tests;
