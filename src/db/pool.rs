//! Opening connections (timeout, one retry, error classification) and the small lazily-built
//! pool each process keeps.
//!
//! The pool is `deadpool`'s managed pool with a manager of our own rather than
//! `deadpool-postgres`: that crate opens connections from a `tokio_postgres::Config`, and ours
//! need what `connect` adds (`sslmode=verify-full` against compiled-in roots, channel binding,
//! the connect timeout around TLS and start-up, one retry while a Neon compute wakes). Recycling
//! is a check of `Client::is_closed()`, not a ping: a ping would add a round trip to every
//! request, and a connection the server killed shows up as closed and is replaced.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{tls, DbConfig, DbError};

/// How long `Pool::get` waits for a connection another request holds before giving up.
pub const DEFAULT_POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per connect: the first, plus one retry.
pub const CONNECT_ATTEMPTS: u32 = 2;
/// Pause before the retry; a suspended Neon compute takes a few hundred milliseconds to wake.
pub const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Opens one connection (see [`super::connect`]).
pub(crate) async fn connect(cfg: &DbConfig) -> Result<Client, DbError> {
    let tls = tls::make_connector(cfg)?;
    let pg = cfg.to_pg_config();
    let client = retry_once(cfg, CONNECT_RETRY_PAUSE, || {
        connect_once(cfg, &pg, tls.as_ref())
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

/// The first cause of type `T`, looking inside `io::Error`s (whose `source()` skips their
/// payload).
fn find_cause<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
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

/// Opens and recycles the pool's connections.
struct Manager {
    cfg: DbConfig,
}

impl deadpool::managed::Manager for Manager {
    type Type = Client;
    type Error = DbError;

    async fn create(&self) -> Result<Client, DbError> {
        connect(&self.cfg).await
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
#[derive(Clone)]
pub struct Pool {
    inner: deadpool::managed::Pool<Manager>,
    cfg: DbConfig,
}

/// A checked-out connection; derefs to `tokio_postgres::Client` (mutably too, for
/// `Client::transaction`) and goes back to the pool when dropped, unless the server closed it:
/// then it is let go at once, so the pool never counts a dead connection as available.
pub struct PooledClient(Option<deadpool::managed::Object<Manager>>);

impl std::ops::Deref for PooledClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.0
            .as_ref()
            .expect("a PooledClient holds its connection until dropped")
    }
}

impl std::ops::DerefMut for PooledClient {
    fn deref_mut(&mut self) -> &mut Client {
        self.0
            .as_mut()
            .expect("a PooledClient holds its connection until dropped")
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            if object.is_closed() {
                drop(deadpool::managed::Object::take(object));
            }
        }
    }
}

impl Pool {
    /// A pool of at most `size` connections (at least one); nothing connects until `get()`.
    pub fn new(cfg: DbConfig, size: usize) -> Self {
        Self::build(cfg, size.max(1), DEFAULT_POOL_ACQUIRE_TIMEOUT)
    }

    fn build(cfg: DbConfig, size: usize, acquire_timeout: Duration) -> Self {
        let inner = deadpool::managed::Pool::builder(Manager { cfg: cfg.clone() })
            .max_size(size)
            .wait_timeout(Some(acquire_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("a pool with a runtime and a size builds");
        Pool { inner, cfg }
    }

    /// The same settings in a new pool that waits at most `timeout` in `get()` for a free
    /// connection.
    pub fn with_acquire_timeout(self, timeout: Duration) -> Self {
        Self::build(self.cfg, self.inner.status().max_size, timeout)
    }

    pub fn config(&self) -> &DbConfig {
        &self.cfg
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

    /// A connection for this request: an idle open one, else a new one. Waits at most the
    /// acquire timeout while all `size` connections are in use (`PoolExhausted`).
    pub async fn get(&self) -> Result<PooledClient, DbError> {
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
            PoolError::Timeout(_) => DbError::Timeout,
            PoolError::Closed | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
                DbError::PoolExhausted
            }
        })?;
        Ok(PooledClient(Some(object)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn cfg() -> DbConfig {
        DbConfig::parse("postgres://u@db.example/d").expect("parses")
    }

    async fn run(outcomes: &[fn() -> Failure]) -> (Result<u32, DbError>, u32) {
        let calls = AtomicU32::new(0);
        let result = retry_once(&cfg(), Duration::ZERO, || {
            let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
            let outcome = outcomes.get(n).map(|f| f());
            async move {
                match outcome {
                    Some(failure) => Err(failure),
                    None => Ok(7),
                }
            }
        })
        .await;
        (result, calls.load(Ordering::SeqCst))
    }

    fn refused() -> Failure {
        Failure::retry(DbError::Unavailable("refused".into()))
    }

    fn bad_cert() -> Failure {
        Failure::fatal(DbError::Tls("bad cert".into()))
    }

    #[tokio::test]
    async fn a_network_failure_is_retried_exactly_once() {
        let (result, calls) = run(&[refused, refused, refused]).await;
        assert_eq!(calls, 2);
        match result {
            Err(DbError::Unavailable(m)) => assert_eq!(m, "refused (2 attempts)"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_retry_that_succeeds_returns_the_connection() {
        let (result, calls) = run(&[refused]).await;
        assert_eq!(calls, 2);
        assert_eq!(result.expect("second attempt works"), 7);
    }

    #[tokio::test]
    async fn a_certificate_failure_is_not_retried() {
        let (result, calls) = run(&[bad_cert, refused]).await;
        assert_eq!(calls, 1);
        assert!(matches!(result, Err(DbError::Tls(m)) if m == "bad cert"));
    }

    #[tokio::test]
    async fn a_new_pool_opens_nothing_and_counts_at_least_one_slot() {
        let pool = Pool::new(cfg(), 0);
        assert_eq!(pool.max_size(), 1);
        assert_eq!(pool.idle(), 0);
    }
}
