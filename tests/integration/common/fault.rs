//! Real faults for the resilience tests: the tool's TCP proxy ([`TcpProxy`], in front of
//! Postgres: forwarding, black hole, refusing, slow connects) and a private `redis-server` the
//! test stops, freezes (SIGSTOP) and thaws (SIGCONT). Nothing here flips a flag in the code
//! under test: the app sees a network and a server that really behave so.

use std::process::{Child, Command, Stdio};

use tokio::net::TcpStream;

pub use gcbb_cli::fault_proxy::TcpProxy;

use super::eventually;
use crate::support::free_port;

/// A proxy to the test Postgres server (`TEST_DATABASE_URL`'s host and port).
pub async fn proxy_to_postgres() -> TcpProxy {
    let server = super::server();
    let upstream = tokio::net::lookup_host((server.host.as_str(), server.port))
        .await
        .expect("resolve the test server")
        .next()
        .expect("an address");
    TcpProxy::start(upstream).await
}

/// A private Redis server on its own port, so a test can really stop or freeze it.
pub struct OwnRedis {
    pub port: u16,
    child: Child,
}

impl OwnRedis {
    pub async fn start() -> OwnRedis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let listening =
            eventually(|| async { TcpStream::connect(("127.0.0.1", port)).await.is_ok() }).await;
        assert!(listening, "redis-server did not listen on {port}");
        OwnRedis { port, child }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {signal} redis-server");
    }

    /// The keys matching `pattern`, read from this server directly.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// The value of `key`, read from this server directly.
    pub async fn get(&self, key: &str) -> Option<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// Stops the server for good.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the port still accepts connections, nothing answers (a black hole).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
