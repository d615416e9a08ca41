//! A private `redis-server` on a free port, for a test that must not share the common Redis:
//! one it stops, freezes (SIGSTOP) and thaws (SIGCONT), or one a refused command that slipped
//! through would flush or shut down. Nothing flips a flag in the code under test: the app sees
//! a server that really behaves so.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::process::free_port;

/// How long a private Redis may take to answer its first PING, or to exit.
const REDIS_LIMIT: Duration = Duration::from_secs(10);

/// A Redis server of the test's own; killed when dropped.
pub struct OwnRedis {
    pub port: u16,
    child: Child,
}

impl OwnRedis {
    pub async fn start() -> OwnRedis {
        OwnRedis::start_on(free_port()).await
    }

    /// On `port` (a port a stopped one used, to play its restart).
    pub async fn start_on(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (.ci/setup installs it)");
        let redis = OwnRedis { port, child };
        let started = Instant::now();
        while started.elapsed() < REDIS_LIMIT {
            if let Ok(mut conn) = redis.try_conn().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
                {
                    return redis;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not answer on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn try_conn(&self) -> redis::RedisResult<MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// A connection straight to this server, to read back what the code under test did.
    pub async fn conn(&self) -> MultiplexedConnection {
        self.try_conn().await.expect("a direct Redis connection")
    }

    /// The keys matching `pattern`, read from this server directly.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut self.conn().await)
            .await
            .expect("KEYS")
    }

    /// The value of `key`, read from this server directly.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn().await)
            .await
            .expect("GET")
    }

    /// Sends a signal (`STOP`, `CONT`, `KILL`) to this Redis process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(status, "kill -{signal} redis-server");
    }

    /// Stops the server for good.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the port still accepts connections, nothing answers (a black hole).
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    /// Waits (bounded) until the process has exited (after a `SHUTDOWN` or a signal).
    pub async fn wait_exit(&mut self) {
        let started = Instant::now();
        while started.elapsed() < REDIS_LIMIT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not exit");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        // A frozen Redis must be thawed to die; one already gone makes `kill` complain.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
