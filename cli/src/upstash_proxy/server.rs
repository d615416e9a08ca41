//! The proxy's HTTP server, bounded against slow clients (what `axum::serve` is not): a
//! connection must start a request within the idle timeout of opening or of its last response,
//! and, once the head has begun, finish it within the header timeout of its first byte
//! ([`ClientDeadlines`]; hyper's own header read timer, which does not cover a keep-alive
//! connection between requests, stays as a backstop); the body must then arrive within the
//! body timeout (read in the handler: a 408). A client that dawdles is cut off.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long open connections may take to finish once the proxy is asked to stop.
pub const SHUTDOWN_CONNECTIONS_LIMIT: Duration = Duration::from_secs(5);

/// Bounds on how slowly a client may talk.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// From the connection's opening, or its last response, to a complete request head.
    pub idle: Duration,
    /// From a head's first byte to its end.
    pub header: Duration,
    /// For the whole body, once the head is in (enforced where the body is read).
    pub body: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections finish
/// for at most [`SHUTDOWN_CONNECTIONS_LIMIT`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    timeouts: ClientTimeouts,
    shutdown: impl Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle + timeouts.header);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "upstash-proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let requests = Arc::new(AtomicU64::new(0));
        let io = ClientDeadlines::new(tcp, timeouts, requests.clone());
        let service = tower::ServiceBuilder::new()
            .map_request(move |request: http::Request<_>| {
                // Counted when hyper hands the head over, so the head's timer stops here.
                requests.fetch_add(1, Ordering::Relaxed);
                request.map(axum::body::Body::new)
            })
            .service(router.clone());
        let conn = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_CONNECTIONS_LIMIT) => {}
    }
}

/// A connection whose reads fail once it has been idle for the idle timeout (since it opened or
/// since its last response was written), or once a request head has been arriving for longer
/// than the header timeout (from its first byte, read while no request is being served, until
/// the head is handed to the service: `requests` grows).
pub struct ClientDeadlines<T> {
    io: T,
    timeouts: ClientTimeouts,
    requests: Arc<AtomicU64>,
    /// The idle timer between requests, then the head's timer from its first byte.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `timer` is the head's (else it is the idle one).
    timing_head: bool,
    /// The request count when the last head was handed over: bytes read before the count
    /// moves on belong to that request (its body).
    served: u64,
    in_request: bool,
}

impl<T> ClientDeadlines<T> {
    pub fn new(io: T, timeouts: ClientTimeouts, requests: Arc<AtomicU64>) -> ClientDeadlines<T> {
        ClientDeadlines {
            io,
            timeouts,
            requests,
            timer: Some(Box::pin(tokio::time::sleep(timeouts.idle))),
            timing_head: false,
            served: 0,
            in_request: false,
        }
    }
}

impl<T> ClientDeadlines<T> {
    /// Writing is answering the request handed over: whatever is read next starts a new head.
    fn answering(&mut self) {
        self.served = self.requests.load(Ordering::Relaxed);
        self.in_request = false;
        self.timing_head = false;
        self.timer = Some(Box::pin(tokio::time::sleep(self.timeouts.idle)));
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientDeadlines<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let count = this.requests.load(Ordering::Relaxed);
        if count != this.served {
            // A head was handed over since: reads now are its body, until hyper writes the
            // response (then `poll_write` marks the connection between requests again).
            this.served = count;
            this.in_request = true;
            this.timing_head = false;
            this.timer = None;
        }
        if let Some(timer) = this.timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                let what = if this.timing_head {
                    "the request head did not arrive within the header timeout"
                } else {
                    "the connection was idle for the idle timeout"
                };
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        let got_bytes = buf.filled().len() > before;
        if got_bytes && !this.in_request && !this.timing_head {
            let mut timer = Box::pin(tokio::time::sleep(this.timeouts.header));
            // Registered now, so the timer wakes this connection even if no byte follows.
            let _ = timer.as_mut().poll(cx);
            this.timer = Some(timer);
            this.timing_head = true;
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientDeadlines<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.answering();
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.answering();
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
