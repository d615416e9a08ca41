//! Real faults for the resilience tests: a TCP proxy in front of Postgres that the test
//! switches between forwarding, a black hole (connections accepted, nothing forwarded either
//! way) and refusing (nothing listens on its port); and a private `redis-server` the test
//! stops, freezes (SIGSTOP) and thaws (SIGCONT). Nothing here flips a flag in the code under
//! test: the app sees a network and a server that really behave so.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::eventually;
use crate::support::free_port;

const FORWARD: u8 = 0;
const BLACK_HOLE: u8 = 1;
const REFUSE: u8 = 2;

/// A TCP proxy to `upstream` on 127.0.0.1:`port`.
pub struct TcpProxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    mode: Arc<AtomicU8>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    pumps: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpProxy {
    /// A proxy to the test Postgres server (`TEST_DATABASE_URL`'s host and port).
    pub async fn to_postgres() -> TcpProxy {
        let server = super::server();
        let upstream = tokio::net::lookup_host((server.host.as_str(), server.port))
            .await
            .expect("resolve the test server")
            .next()
            .expect("an address");
        TcpProxy::start(upstream).await
    }

    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let port = free_port();
        let proxy = TcpProxy {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            upstream,
            mode: Arc::new(AtomicU8::new(FORWARD)),
            acceptor: Mutex::new(None),
            pumps: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.listen().await;
        proxy
    }

    async fn listen(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("bind the proxy");
        let (mode, upstream, pumps) = (self.mode.clone(), self.upstream, self.pumps.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let mode = mode.clone();
                let pump = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, mode.clone()), pump(sr, cw, mode));
                });
                pumps.lock().unwrap().push(pump);
            }
        });
        *self.acceptor.lock().unwrap() = Some(task);
    }

    /// Forwards everything again (listening again if it was refusing). Connections that lived
    /// through a black hole lost what was sent meanwhile, as on a real network that dropped it.
    pub async fn forward(&self) {
        let was = self.mode.swap(FORWARD, Ordering::SeqCst);
        if was == REFUSE {
            self.listen().await;
        }
    }

    /// Connections are accepted, and nothing is forwarded either way, on new connections and
    /// on open ones.
    pub fn black_hole(&self) {
        self.mode.store(BLACK_HOLE, Ordering::SeqCst);
    }

    /// Cuts the open connections (as a real outage leaves them), keeping the mode: after a black
    /// hole, `cut` then `forward` gives clients fresh connections rather than streams that lost
    /// bytes in the middle.
    pub fn cut(&self) {
        for pump in self.pumps.lock().unwrap().drain(..) {
            pump.abort();
        }
    }

    /// Nothing listens on the port (connections are refused) and open connections are cut.
    pub fn refuse(&self) {
        self.mode.store(REFUSE, Ordering::SeqCst);
        if let Some(task) = self.acceptor.lock().unwrap().take() {
            task.abort();
        }
        for pump in self.pumps.lock().unwrap().drain(..) {
            pump.abort();
        }
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("a database URL");
        url.set_host(Some("127.0.0.1")).expect("a host");
        url.set_port(Some(self.addr.port())).expect("a port");
        url.to_string()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(task) = self.acceptor.lock().unwrap().take() {
            task.abort();
        }
        for pump in self.pumps.lock().unwrap().drain(..) {
            pump.abort();
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // In a black hole what was read is dropped, never delivered.
        if mode.load(Ordering::SeqCst) == FORWARD && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
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
