//! The proxy's connections to Redis. Single commands and pipelines share one multiplexed
//! connection, made on first use and made again after it breaks, so the proxy starts, and
//! recovers, while Redis is down. Each `/multi-exec` transaction gets a connection of its own,
//! so nothing another client sends can land between its MULTI and EXEC. Every request is
//! bounded: connecting by the connect timeout, each answer by the command timeout, the whole
//! request by their sum; past that, or when Redis is down, it fails as
//! [`Failure::Unavailable`] instead of hanging.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError};

use super::commands::Command;
use super::encoding::server_error_text;

/// How long the proxy waits on Redis.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To open a connection (TCP and the handshake).
    pub connect: Duration,
    /// For the answer to a command, a pipeline or a transaction.
    pub command: Duration,
}

/// Why a request got no answer from Redis.
#[derive(Debug)]
pub enum Failure {
    /// Redis is down, unreachable or too slow: the client should retry later (503).
    Unavailable(String),
    /// Redis refused the request as a whole, such as a transaction it aborted (400).
    Refused(String),
}

pub struct Connections {
    client: Client,
    config: AsyncConnectionConfig,
    timeouts: Timeouts,
    /// `host:port` of Redis, for messages (never the URL: it may hold a password).
    address: String,
    shared: Mutex<Option<Shared>>,
    /// Held while the shared connection is being made, so concurrent requests make one.
    connecting: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
}

/// The shared connection and a number telling it from the ones before it, so a request that
/// saw an old connection break doesn't drop a new one.
#[derive(Clone)]
struct Shared {
    id: u64,
    conn: MultiplexedConnection,
}

impl Connections {
    /// Connections to `url`, none made yet; the error when the URL is not a Redis URL.
    pub fn new(url: &str, timeouts: Timeouts) -> Result<Connections, RedisError> {
        let client = Client::open(url)?;
        let address = client.get_connection_info().addr.to_string();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(timeouts.connect)
            .set_response_timeout(timeouts.command);
        Ok(Connections {
            client,
            config,
            timeouts,
            address,
            shared: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(0),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Makes the shared connection now (at start-up, to say early whether Redis is there).
    pub async fn connect(&self) -> Result<(), Failure> {
        self.bounded(async { self.shared().await.map(|_| ()) })
            .await
    }

    /// One command on the shared connection. A Redis error reply is `Ok(ServerError)`.
    pub async fn run(&self, command: &Command) -> Result<redis::Value, Failure> {
        let cmd = to_cmd(command);
        self.bounded(async {
            let shared = self.shared().await?;
            let mut conn = shared.conn.clone();
            conn.req_packed_command(&cmd)
                .await
                .map_err(|e| self.failure(e, Some(shared.id)))
        })
        .await
    }

    /// Commands in one pipeline on the shared connection (not atomic); one reply each.
    pub async fn run_pipeline(&self, commands: &[Command]) -> Result<Vec<redis::Value>, Failure> {
        let mut pipe = redis::pipe();
        commands.iter().for_each(|c| {
            pipe.add_command(to_cmd(c));
        });
        self.bounded(async {
            let shared = self.shared().await?;
            let mut conn = shared.conn.clone();
            conn.req_packed_commands(&pipe, 0, commands.len())
                .await
                .map_err(|e| self.failure(e, Some(shared.id)))
        })
        .await
    }

    /// Commands inside MULTI/EXEC on a connection of their own; EXEC's replies. A command
    /// Redis refuses while queueing aborts the whole transaction ([`Failure::Refused`]).
    pub async fn run_transaction(
        &self,
        commands: &[Command],
    ) -> Result<Vec<redis::Value>, Failure> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        commands.iter().for_each(|c| {
            pipe.add_command(to_cmd(c));
        });
        self.bounded(async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
                .map_err(|e| self.unavailable(&e))?;
            // Skip the replies to MULTI and to each queued command; read EXEC's array.
            let mut replies = conn
                .req_packed_commands(&pipe, commands.len() + 1, 1)
                .await
                .map_err(|e| self.failure(e, None))?;
            match replies.pop() {
                Some(redis::Value::Array(items)) => Ok(items),
                Some(redis::Value::Nil) => Err(Failure::Refused("ERR transaction aborted".into())),
                Some(redis::Value::ServerError(e)) => Err(Failure::Refused(server_error_text(e))),
                _ => Err(Failure::Unavailable(
                    "ERR Redis answered EXEC with something other than an array".into(),
                )),
            }
        })
        .await
    }

    /// The shared connection, made now if there is none.
    async fn shared(&self) -> Result<Shared, Failure> {
        if let Some(shared) = self.current() {
            return Ok(shared);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(shared) = self.current() {
            return Ok(shared);
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(|e| self.unavailable(&e))?;
        let shared = Shared {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            conn,
        };
        *self.lock_shared() = Some(shared.clone());
        tracing::info!(redis = %self.address, "upstash-proxy: connected to Redis");
        Ok(shared)
    }

    fn current(&self) -> Option<Shared> {
        self.lock_shared().clone()
    }

    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Option<Shared>> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sorts a Redis error into unavailability or refusal; a broken shared connection
    /// (`shared` is its id) is dropped, so the next request makes a new one.
    fn failure(&self, e: RedisError, shared: Option<u64>) -> Failure {
        let broken = e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error();
        if let (true, Some(id)) = (broken, shared) {
            let mut slot = self.lock_shared();
            if slot.as_ref().is_some_and(|s| s.id == id) {
                *slot = None;
            }
        }
        if broken || e.is_timeout() || e.is_connection_refusal() {
            self.unavailable(&e)
        } else {
            Failure::Refused(server_error_text(e))
        }
    }

    fn unavailable(&self, e: &RedisError) -> Failure {
        tracing::warn!(redis = %self.address, error = %e, "upstash-proxy: Redis unavailable");
        Failure::Unavailable(if e.is_timeout() {
            format!(
                "ERR Redis at {} did not answer within {} ms (gcbb upstash-proxy)",
                self.address,
                self.timeouts.command.as_millis()
            )
        } else {
            format!(
                "ERR Redis at {} is unavailable (gcbb upstash-proxy): {e}",
                self.address
            )
        })
    }

    /// Runs `work` within the connect and command timeouts together, whatever it waits on.
    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let limit = self.timeouts.connect + self.timeouts.command;
        match tokio::time::timeout(limit, work).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(redis = %self.address, limit_ms = limit.as_millis() as u64,
                    "upstash-proxy: Redis did not answer in time");
                Err(Failure::Unavailable(format!(
                    "ERR Redis at {} did not answer within {} ms (gcbb upstash-proxy)",
                    self.address,
                    limit.as_millis()
                )))
            }
        }
    }
}

fn to_cmd(command: &Command) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for part in command {
        cmd.arg(part.as_slice());
    }
    cmd
}
