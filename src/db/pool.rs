//! Opening connections (timeout, one retry, error classification) and the small lazily-built
//! pool each process keeps.
//!
//! The pool is written here rather than taken from `deadpool-postgres` because it needs little:
//! a `Semaphore` bounds the open connections, a `Mutex<Vec<Client>>` holds the idle ones, and a
//! closed client is dropped instead of handed out. No background tasks, no health pings on
//! checkout (that would add a round trip to every request); a connection the server killed shows
//! up as `Client::is_closed()` and is replaced on the next `get()`.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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

/// A small pool of connections to one database, opened on demand. Cloning shares the pool.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    acquire_timeout: Duration,
}

struct Shared {
    cfg: DbConfig,
    size: usize,
    idle: Mutex<Vec<Client>>,
    /// One permit per connection that may exist; a checked-out client holds one.
    permits: Arc<Semaphore>,
}

impl Pool {
    /// A pool of at most `size` connections (at least one); nothing connects until `get()`.
    pub fn new(cfg: DbConfig, size: usize) -> Self {
        let size = size.max(1);
        Pool {
            shared: Arc::new(Shared {
                cfg,
                size,
                idle: Mutex::new(Vec::with_capacity(size)),
                permits: Arc::new(Semaphore::new(size)),
            }),
            acquire_timeout: DEFAULT_POOL_ACQUIRE_TIMEOUT,
        }
    }

    /// The same pool, waiting at most `timeout` in `get()` for a free connection.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    pub fn config(&self) -> &DbConfig {
        &self.shared.cfg
    }

    /// Most connections this pool opens at once.
    pub fn size(&self) -> usize {
        self.shared.size
    }

    /// Connections waiting in the pool right now (some may have been closed by the server since;
    /// those are dropped on the next `get()`).
    pub fn idle(&self) -> usize {
        self.shared.lock_idle().len()
    }

    /// A connection for this request: an idle open one, else a new one. Waits at most the
    /// acquire timeout while all `size` connections are in use (`PoolExhausted`).
    pub async fn get(&self) -> Result<PooledClient, DbError> {
        let permit = match tokio::time::timeout(
            self.acquire_timeout,
            self.shared.permits.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(DbError::PoolExhausted),
            Err(_elapsed) => {
                tracing::warn!(
                    target_db = %self.shared.cfg.redacted(),
                    size = self.shared.size,
                    "postgres pool exhausted"
                );
                return Err(DbError::PoolExhausted);
            }
        };
        let reused = {
            let mut idle = self.shared.lock_idle();
            std::iter::from_fn(|| idle.pop()).find(|c| !c.is_closed())
        };
        let client = match reused {
            Some(client) => client,
            None => connect(&self.shared.cfg).await?,
        };
        Ok(PooledClient {
            client: Some(client),
            shared: self.shared.clone(),
            _permit: permit,
        })
    }
}

impl Shared {
    /// The idle list stays consistent even if a holder panicked, so poisoning is ignored.
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A checked-out connection; derefs to `tokio_postgres::Client` and goes back to the pool when
/// dropped (unless it was closed).
pub struct PooledClient {
    /// `Some` until `drop`.
    client: Option<Client>,
    shared: Arc<Shared>,
    /// Released after `drop` has put the client back, so a waiter finds it idle.
    _permit: OwnedSemaphorePermit,
}

impl Deref for PooledClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a PooledClient holds its client until dropped")
    }
}

impl std::ops::DerefMut for PooledClient {
    /// Mutable access is what `Client::transaction` needs.
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("a PooledClient holds its client until dropped")
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                self.shared.lock_idle().push(client);
            }
        }
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
        assert_eq!(pool.size(), 1);
        assert_eq!(pool.idle(), 0);
    }
}
