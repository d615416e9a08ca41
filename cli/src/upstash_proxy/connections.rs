//! The proxy's connections to Redis. Single commands and pipelines share one multiplexed
//! connection, made on first use and made again after it breaks, so the proxy starts, and
//! recovers, while Redis is down. Each `/multi-exec` transaction gets a connection of its own,
//! so nothing another client sends can land between its MULTI and EXEC. Every request is
//! bounded: connecting by the connect timeout, each answer by the command timeout, the whole
//! request by their sum (plus the script time limit for a request that runs a script); past
//! that, or when Redis is down, it fails as [`Failure::Unavailable`] instead of hanging —
//! unless the proxy is stopping a script that held it ([`super::watchdog`]): then it waits
//! for the kill to land, and is answered.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError};

use super::commands::Command;
use super::encoding::server_error_text;
use super::watchdog::{self, KillOutcome, ScriptKinds, Watchdog};

/// How long the proxy waits on Redis.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To open a connection (TCP and the handshake).
    pub connect: Duration,
    /// For the answer to a command, a pipeline or a transaction.
    pub command: Duration,
    /// How long a script may run before the proxy stops it.
    pub script: Duration,
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
    /// The connection kills go over, made before a script is sent (while Redis still answers).
    control: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    watchdog: Watchdog,
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
        // No response timeout of the connection's own: a request is bounded as a whole
        // (`bounded`), which may wait longer while a script that holds it is being stopped.
        let config = AsyncConnectionConfig::new().set_connection_timeout(timeouts.connect);
        Ok(Connections {
            client,
            config,
            timeouts,
            address,
            shared: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(0),
            control: tokio::sync::Mutex::new(None),
            watchdog: Watchdog::new(timeouts.script),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Makes the shared connection now (at start-up, to say early whether Redis is there).
    pub async fn connect(&self) -> Result<(), Failure> {
        self.bounded(false, async { self.shared().await.map(|_| ()) })
            .await
    }

    /// One command on the shared connection. A Redis error reply is `Ok(ServerError)`.
    pub async fn run(&self, command: &Command) -> Result<redis::Value, Failure> {
        let cmd = to_cmd(command);
        let kinds = ScriptKinds::of(std::slice::from_ref(command));
        self.bounded(kinds.any(), async {
            let shared = self.shared().await?;
            let mut conn = shared.conn.clone();
            let (reply, killed) = self.timed(kinds, conn.req_packed_command(&cmd)).await;
            reply
                .map(|v| self.explain_kill(v, killed))
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
        let kinds = ScriptKinds::of(commands);
        self.bounded(kinds.any(), async {
            let shared = self.shared().await?;
            let mut conn = shared.conn.clone();
            let (replies, killed) = self
                .timed(kinds, conn.req_packed_commands(&pipe, 0, commands.len()))
                .await;
            replies
                .map(|vs| {
                    vs.into_iter()
                        .map(|v| self.explain_kill(v, killed))
                        .collect()
                })
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
        let kinds = ScriptKinds::of(commands);
        self.bounded(kinds.any(), async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
                .map_err(|e| self.unavailable(&e))?;
            // Skip the replies to MULTI and to each queued command; read EXEC's array.
            let (replies, killed) = self
                .timed(
                    kinds,
                    conn.req_packed_commands(&pipe, commands.len() + 1, 1),
                )
                .await;
            let mut replies = replies.map_err(|e| self.failure(e, None))?;
            match replies.pop() {
                Some(redis::Value::Array(items)) => Ok(items
                    .into_iter()
                    .map(|v| self.explain_kill(v, killed))
                    .collect()),
                Some(redis::Value::Nil) => Err(Failure::Refused("ERR transaction aborted".into())),
                Some(redis::Value::ServerError(e)) => Err(Failure::Refused(server_error_text(e))),
                _ => Err(Failure::Unavailable(
                    "ERR Redis answered EXEC with something other than an array".into(),
                )),
            }
        })
        .await
    }

    /// Runs `work` (a request that `kinds` says runs scripts, or not) under the script time
    /// limit: in the lane, one script request at a time, and stopped by a kill once it runs
    /// past the limit. Whether the proxy killed a script on the way.
    async fn timed<T>(&self, kinds: ScriptKinds, work: impl Future<Output = T>) -> (T, bool) {
        if !kinds.any() {
            return (work.await, false);
        }
        let _lane = self.watchdog.lane.lock().await;
        // Made now, while Redis answers: once a script holds it, a new connection may not be.
        let control_ready = self.control_connection().await.is_some();
        let mut work = pin!(work);
        match tokio::time::timeout(self.watchdog.limit, &mut work).await {
            Ok(out) => (out, false),
            Err(_) if !control_ready => (work.await, false),
            Err(_) => {
                let (out, outcome) = tokio::join!(&mut work, self.kill_script(kinds));
                (out, outcome == KillOutcome::Killed)
            }
        }
    }

    /// The client of a script the proxy killed gets a clear error, not Redis's.
    fn explain_kill(&self, value: redis::Value, killed: bool) -> redis::Value {
        match value {
            redis::Value::ServerError(e)
                if killed && watchdog::is_killed_error(&server_error_text(e.clone())) =>
            {
                // Redis's own error reply, parsed: the one way to build a server error value.
                let line = format!("-{}\r\n", watchdog::killed_message(self.watchdog.limit));
                redis::parse_redis_value(line.as_bytes()).unwrap_or(redis::Value::ServerError(e))
            }
            other => other,
        }
    }

    /// Sends SCRIPT KILL (or FUNCTION KILL) over the control connection; Redis reads it once
    /// the script has run for its busy-reply-threshold.
    async fn kill_script(&self, kinds: ScriptKinds) -> KillOutcome {
        let within = self.watchdog.busy_threshold() + self.timeouts.command + self.timeouts.connect;
        let kill = self.watchdog.kill_started(within);
        tracing::warn!(
            redis = %self.address,
            limit_ms = self.watchdog.limit.as_millis() as u64,
            "upstash-proxy: a script ran past its time limit; stopping it"
        );
        let outcome = match tokio::time::timeout(within, self.send_kills(kinds)).await {
            Ok(outcome) => outcome,
            Err(_) => KillOutcome::Failed(format!(
                "Redis did not answer the kill within {} ms",
                within.as_millis()
            )),
        };
        drop(kill);
        match &outcome {
            KillOutcome::Killed => {
                tracing::warn!(redis = %self.address, "upstash-proxy: script stopped")
            }
            KillOutcome::NotRunning => {}
            KillOutcome::Refused(e) | KillOutcome::Failed(e) => tracing::error!(
                redis = %self.address,
                error = %e,
                "upstash-proxy: could not stop the script; Redis stays busy until it ends"
            ),
        }
        outcome
    }

    async fn send_kills(&self, kinds: ScriptKinds) -> KillOutcome {
        let Some(mut conn) = self.control_connection().await else {
            return KillOutcome::Failed("no control connection".into());
        };
        for kill in kinds.kill_commands() {
            let reply = redis::cmd(kill[0])
                .arg(kill[1])
                .query_async::<redis::Value>(&mut conn)
                .await;
            match reply {
                Ok(redis::Value::Okay) | Ok(redis::Value::SimpleString(_)) => {
                    return KillOutcome::Killed
                }
                Err(e) if e.code() == Some("NOTBUSY") => continue,
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    *self.control.lock().await = None;
                    return KillOutcome::Failed(e.to_string());
                }
                Err(e) => return KillOutcome::Refused(server_error_text(e)),
                Ok(other) => return KillOutcome::Refused(format!("{other:?}")),
            }
        }
        KillOutcome::NotRunning
    }

    /// The control connection, made if there is none (bounded by the connect timeout).
    async fn control_connection(&self) -> Option<MultiplexedConnection> {
        let mut slot = self.control.lock().await;
        if slot.is_none() {
            match self
                .client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
            {
                Ok(conn) => *slot = Some(conn),
                Err(e) => {
                    tracing::warn!(redis = %self.address, error = %e,
                        "upstash-proxy: no control connection; an overrunning script can't be stopped");
                }
            }
        }
        slot.clone()
    }

    /// Reads Redis's `busy-reply-threshold` (`lua-time-limit` before Redis 7), the earliest a
    /// kill can land; the default when the proxy may not read it.
    async fn read_busy_threshold(&self, conn: &mut MultiplexedConnection) {
        for name in ["busy-reply-threshold", "lua-time-limit"] {
            let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(conn)
                .await;
            if let Some(ms) = reply
                .ok()
                .and_then(|pair| pair.get(1).and_then(|v| v.parse::<u64>().ok()))
            {
                let threshold = Duration::from_millis(ms);
                self.watchdog.set_busy_threshold(threshold);
                if threshold > self.watchdog.limit {
                    tracing::info!(
                        busy_reply_threshold_ms = ms,
                        script_timeout_ms = self.watchdog.limit.as_millis() as u64,
                        "upstash-proxy: Redis reads a SCRIPT KILL only after its busy-reply-threshold; \
                         an overrunning script is stopped then"
                    );
                }
                return;
            }
        }
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
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(|e| self.unavailable(&e))?;
        self.read_busy_threshold(&mut conn).await;
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

    /// Runs `work` within the connect and command timeouts together (and the script time
    /// limit when it runs a script), whatever it waits on; past that, it still waits while a
    /// kill of a script that holds it is under way.
    async fn bounded<T>(
        &self,
        runs_script: bool,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let mut limit = self.timeouts.connect + self.timeouts.command;
        if runs_script {
            limit += self.watchdog.limit;
        }
        let mut work = pin!(work);
        if let Ok(outcome) = tokio::time::timeout(limit, &mut work).await {
            return outcome;
        }
        while let Some(until) = self.watchdog.holds_until() {
            let until = tokio::time::Instant::from_std(until);
            if let Ok(outcome) = tokio::time::timeout_at(until, &mut work).await {
                return outcome;
            }
        }
        tracing::warn!(redis = %self.address, limit_ms = limit.as_millis() as u64,
            "upstash-proxy: Redis did not answer in time");
        Err(Failure::Unavailable(format!(
            "ERR Redis at {} did not answer within {} ms (gcbb upstash-proxy)",
            self.address,
            limit.as_millis()
        )))
    }
}

fn to_cmd(command: &Command) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for part in command {
        cmd.arg(part.as_slice());
    }
    cmd
}
