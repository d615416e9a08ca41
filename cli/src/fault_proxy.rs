//! A TCP proxy that really breaks the network between a client and a server, for the
//! resilience tests and the fault benchmarks: it forwards, black-holes (connections accepted,
//! nothing forwarded either way), refuses (nothing listens on its port), cuts open connections,
//! makes each new connection wait before it reaches the server (a compute waking from zero), or
//! delays every answer (a slow database).
//! Nothing in the code under test is told: it sees a network that really behaves so.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const FORWARD: u8 = 0;
const BLACK_HOLE: u8 = 1;
const REFUSE: u8 = 2;
const SLOW_CONNECT: u8 = 3;

/// A TCP proxy to `upstream` on 127.0.0.1:`port`.
pub struct TcpProxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    mode: Arc<AtomicU8>,
    /// In `SLOW_CONNECT`, how long each new connection waits before it reaches upstream.
    connect_delay_ms: Arc<AtomicU64>,
    /// Added to every answer from upstream (each round trip takes that much longer).
    latency_ms: Arc<AtomicU64>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    pumps: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let port = free_port();
        let proxy = TcpProxy {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            upstream,
            mode: Arc::new(AtomicU8::new(FORWARD)),
            connect_delay_ms: Arc::new(AtomicU64::new(0)),
            latency_ms: Arc::new(AtomicU64::new(0)),
            acceptor: Mutex::new(None),
            pumps: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.listen().await;
        proxy
    }

    async fn listen(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("bind the proxy");
        let (mode, upstream, pumps) = (self.mode.clone(), self.upstream, self.pumps.clone());
        let delay = self.connect_delay_ms.clone();
        let latency = self.latency_ms.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let mode = mode.clone();
                let delay = delay.clone();
                let latency = latency.clone();
                let pump = tokio::spawn(async move {
                    if mode.load(Ordering::SeqCst) == SLOW_CONNECT {
                        let ms = delay.load(Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(
                        pump(cr, sw, mode.clone(), None),
                        pump(sr, cw, mode, Some(latency))
                    );
                });
                pumps.lock().unwrap().push(pump);
            }
        });
        *self.acceptor.lock().unwrap() = Some(task);
    }

    /// Every answer from upstream arrives `latency` late (a slow database or a long way to it):
    /// new and open connections alike, until [`TcpProxy::forward`].
    pub fn slow_link(&self, latency: std::time::Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Forwards everything again (listening again if it was refusing), with no added latency. Connections that lived
    /// through a black hole lost what was sent meanwhile, as on a real network that dropped it.
    pub async fn forward(&self) {
        self.latency_ms.store(0, Ordering::SeqCst);
        let was = self.mode.swap(FORWARD, Ordering::SeqCst);
        if was == REFUSE {
            self.listen().await;
        }
    }

    /// Each new connection waits `delay` before it reaches upstream (as a compute waking from
    /// zero makes it wait); open connections and the bytes on them are forwarded as usual.
    pub fn slow_connect(&self, delay: std::time::Duration) {
        self.connect_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.mode.store(SLOW_CONNECT, Ordering::SeqCst);
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
    latency_ms: Option<Arc<AtomicU64>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(ms) = latency_ms.as_ref().map(|l| l.load(Ordering::SeqCst)) {
            if ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
        }
        // In a black hole what was read is dropped, never delivered.
        if mode.load(Ordering::SeqCst) != BLACK_HOLE && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A port nothing listens on now (the OS's choice; free when this returns).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
