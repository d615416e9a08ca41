//! A TCP proxy a test puts between the app and an outside service (Redis, Postgres) to make the
//! network fail for real: while it black-holes, connections are accepted and bytes are taken
//! but nothing is delivered either way (what a dropped route or a firewall does); when it
//! opens again, the connections that lived through the outage are cut, as a real outage leaves
//! them, and new ones go through.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How often a piped connection checks whether it has been cut.
const CHECK_INTERVAL: Duration = Duration::from_millis(20);

pub struct BlackholeProxy {
    pub port: u16,
    holes: Arc<AtomicBool>,
    /// Bumped when the proxy opens again: connections from an older era are cut.
    era: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackholeProxy {
    /// A proxy on a free local port to `target` (`host:port`).
    pub async fn start(target: &str) -> BlackholeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let holes = Arc::new(AtomicBool::new(false));
        let era = Arc::new(AtomicU64::new(0));
        let target = target.to_owned();
        let task = {
            let (holes, era) = (holes.clone(), era.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (holes, era, target) = (holes.clone(), era.clone(), target.clone());
                    tokio::spawn(pipe(client, target, holes, era));
                }
            })
        };
        BlackholeProxy {
            port,
            holes,
            era,
            task,
        }
    }

    /// From now on nothing gets through.
    pub fn black_hole(&self) {
        self.holes.store(true, Ordering::SeqCst);
    }

    /// Opens again, cutting the connections that lived through the outage.
    pub fn open(&self) {
        self.era.fetch_add(1, Ordering::SeqCst);
        self.holes.store(false, Ordering::SeqCst);
    }
}

impl Drop for BlackholeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(mut client: TcpStream, target: String, holes: Arc<AtomicBool>, era: Arc<AtomicU64>) {
    let born = era.load(Ordering::SeqCst);
    // A connection opened during an outage waits for the network, as a SYN would.
    while holes.load(Ordering::SeqCst) {
        if era.load(Ordering::SeqCst) != born {
            return;
        }
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
    let Ok(mut server) = TcpStream::connect(&target).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    loop {
        if era.load(Ordering::SeqCst) != born {
            return;
        }
        tokio::select! {
            read = cr.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) if !holes.load(Ordering::SeqCst) => {
                    if sw.write_all(&up[..n]).await.is_err() { return; }
                }
                Ok(_) => {} // swallowed by the hole
            },
            read = sr.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) if !holes.load(Ordering::SeqCst) => {
                    if cw.write_all(&down[..n]).await.is_err() { return; }
                }
                Ok(_) => {}
            },
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
    }
}
