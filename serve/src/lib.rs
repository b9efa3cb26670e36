//! The one accept loop every listener uses, on the hub (the appliances' and the operators'
//! listeners, metrics) and on the appliance (the LAN proxy, its plain page, the first-boot
//! enrolment page). What a stranger can cost a listener is decided here, once:
//!
//! - a TLS handshake has `handshake` to finish;
//! - a request's head has `header_read` to arrive (hyper's timer, which also bounds the wait for
//!   the next request on a kept-alive connection);
//! - a connection that moves no byte either way for `idle` is closed, a body sent one byte a
//!   minute included;
//! - `lifetime`, when set, closes a connection after that long whatever it does;
//! - at most `max_connections` are open at once: the next is accepted only when one closes;
//! - at most `per_peer` of them from one address: a connection over that is closed at once, so
//!   one source cannot fill the listener and make everyone else wait in the backlog;
//! - on stop, no new connection is accepted, open ones finish the request they are in (HTTP/1.1
//!   graceful shutdown) and `serve` returns once they have, or after `drain`.

pub mod client;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// What one listener allows a connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For the logs: which listener.
    pub name: &'static str,
    pub handshake: Duration,
    pub header_read: Duration,
    pub idle: Duration,
    pub lifetime: Option<Duration>,
    pub max_connections: usize,
    /// At most this many connections from one address (a clinic's appliance is one address at
    /// the hub: its listener sets this high).
    pub per_peer: usize,
    pub keep_alive: bool,
    pub drain: Duration,
}

impl Limits {
    /// The defaults for a listener that browsers and appliances use: 15 s for the handshake and
    /// for a request's head, 120 s without a byte, 1,024 connections, 10 s to drain.
    pub const fn web(name: &'static str) -> Limits {
        Limits {
            name,
            handshake: Duration::from_secs(15),
            header_read: Duration::from_secs(15),
            idle: Duration::from_secs(120),
            lifetime: None,
            max_connections: 1024,
            per_peer: 64,
            keep_alive: true,
            drain: Duration::from_secs(10),
        }
    }
}

/// What a service is told about the connection it serves.
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
    /// The client's certificate chain, as verified by the TLS configuration (TLS only).
    pub certs: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A service `serve` can run on a connection: hyper's, answering with a body `B`.
pub trait HttpService<B>:
    Service<
        Request<Incoming>,
        Response = Response<B>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Send
    + 'static
{
}
impl<S, B> HttpService<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// A body `serve` can send.
pub trait HttpBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}
impl<B> HttpBody for B where B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

/// Serves HTTP/1.1 on `listener` (over TLS when `tls` is given), one `make(conn)` service per
/// connection, within `limits`, until `stop` turns true; then drains and returns.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    make: M,
    mut stop: watch::Receiver<bool>,
) where
    M: Fn(&Conn) -> S + Send + Sync + 'static,
    S: HttpService<B>,
    B: HttpBody,
{
    let make = Arc::new(make);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let peers: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> =
        Default::default();
    let (drain_tx, drain_rx) = watch::channel(false);
    loop {
        if *stop.borrow() {
            break;
        }
        // A free place first, then the next connection: at the cap, new ones wait in the
        // kernel's backlog instead of costing a task each.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(listener = limits.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Some(seat) = Seat::take(&peers, peer.ip(), limits.per_peer) else {
            tracing::debug!(listener = limits.name, peer = %peer, "closed: too many connections from this address");
            drop(tcp);
            continue;
        };
        let (make, acceptor, drain) = (make.clone(), acceptor.clone(), drain_rx.clone());
        tokio::spawn(async move {
            connection(tcp, peer, acceptor, limits, make.as_ref(), drain).await;
            drop(seat);
            drop(permit);
        });
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let all = limits.max_connections as u32;
    if tokio::time::timeout(limits.drain, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            listener = limits.name,
            open = limits.max_connections - permits.available_permits(),
            "stopped with connections still open after the drain time"
        );
    }
}

async fn connection<M, S, B>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    make: &M,
    mut drain: watch::Receiver<bool>,
) where
    M: Fn(&Conn) -> S,
    S: HttpService<B>,
    B: HttpBody,
{
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().ok();
    let clock = Clock::new();
    let (io, certs): (Box<dyn Io>, _) = match acceptor {
        Some(a) => match tokio::time::timeout(limits.handshake, a.accept(tcp)).await {
            Ok(Ok(t)) => {
                let certs = t
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
                (
                    Box::new(Watched {
                        inner: t,
                        clock: clock.clone(),
                    }),
                    certs,
                )
            }
            Ok(Err(e)) => {
                tracing::debug!(listener = limits.name, peer = %peer, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => return,
        },
        None => (
            Box::new(Watched {
                inner: tcp,
                clock: clock.clone(),
            }),
            None,
        ),
    };
    let svc = make(&Conn { peer, local, certs });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(limits.keep_alive);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    let born = Instant::now();
    let mut draining = false;
    let tick = (limits.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            r = drain.changed(), if !draining => {
                draining = true;
                if r.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep(tick) => {
                if clock.quiet_for() >= limits.idle {
                    tracing::debug!(listener = limits.name, peer = %peer, "closed: idle");
                    return;
                }
                if limits.lifetime.is_some_and(|l| born.elapsed() >= l) {
                    tracing::debug!(listener = limits.name, peer = %peer, "closed: lifetime over");
                    return;
                }
            }
        }
    }
}

/// One connection's place among its address's, given back when it closes.
struct Seat {
    peers: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl Seat {
    fn take(
        peers: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
        most: usize,
    ) -> Option<Seat> {
        let mut m = peers.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= most {
            return None;
        }
        *n += 1;
        Some(Seat {
            peers: peers.clone(),
            ip,
        })
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut m = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// When a connection last moved a byte.
#[derive(Clone)]
struct Clock {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        self.base
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream that tells its clock whenever bytes move.
struct Watched<T> {
    inner: T,
    clock: Clock,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
