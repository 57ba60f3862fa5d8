//! Connections: an accept loop per listener that holds a semaphore slot per open connection,
//! answers a canned 503 (HTTP/1) or closes (gRPC) beyond `max_connections`, and serves each
//! connection with hyper's own connection builder, so every limit is ours to set:
//! - HTTP/1: hyper's header read timeout (from the moment the connection is idle, so it also
//!   closes silent keep-alive connections) and head buffer limit (431 beyond it);
//! - both: an idle watchdog: a connection with no request in flight that has neither read nor
//!   written a byte for `idle_timeout` is dropped (HTTP/2 clients that open and say nothing,
//!   clients that stop reading their response);
//! - TCP_NODELAY on every connection (a response written in two parts would otherwise wait for
//!   the client's delayed ACK);
//! - accept errors (EMFILE included) pause the loop briefly instead of ending the server.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use super::{AppState, HttpConfig};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Http1,
    Http2,
}

/// The per-connection limits, shared by every listener.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    max_connections: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
    max_header_bytes: usize,
    drain_timeout: Duration,
}

impl From<&HttpConfig> for Limits {
    fn from(c: &HttpConfig) -> Limits {
        Limits {
            max_connections: c.max_connections,
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
            max_header_bytes: c.max_header_bytes,
            drain_timeout: c.drain_timeout,
        }
    }
}

/// Refusals being written at once at most; beyond it a connection over the limit is closed
/// without a word, so a flood cannot pile up refusal tasks either.
const MAX_REFUSALS: usize = 64;

pub(crate) struct Listener {
    listener: TcpListener,
    name: &'static str,
    proto: Proto,
    limits: Limits,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    st: Arc<AppState>,
}

impl Listener {
    pub fn new(l: std::net::TcpListener, name: &'static str, proto: Proto, limits: Limits, st: Arc<AppState>) -> Result<Listener> {
        let io = |e: std::io::Error| Error::io(format!("{name} listener"), e);
        l.set_nonblocking(true).map_err(io)?;
        let listener = TcpListener::from_std(l).map_err(io)?;
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        Ok(Listener { listener, name, proto, limits, slots, refusals: Arc::new(Semaphore::new(MAX_REFUSALS)), st })
    }

    /// Accept until `stop` turns true, then wait (at most the drain timeout) for the open
    /// connections to finish.
    pub async fn run<S, B>(self, svc: S, mut stop: watch::Receiver<bool>)
    where
        S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut last_accept_warning: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                r = self.listener.accept() => r,
                _ = stop.changed() => break,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ECONNABORTED...: none of them ends the server.
                    if last_accept_warning.map_or(true, |t: Instant| t.elapsed() > Duration::from_secs(10)) {
                        eprintln!("warning: {} listener: accept failed: {e} (pausing 50 ms)", self.name);
                        last_accept_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                self.st.metrics.connection_refused(self.name);
                self.refuse(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (limits, proto, svc, stop, st, name) =
                (self.limits.clone(), self.proto, svc.clone(), stop.clone(), self.st.clone(), self.name);
            tokio::spawn(async move {
                st.metrics.connection_opened(name);
                serve_connection(stream, proto, &limits, svc, stop).await;
                st.metrics.connection_closed(name);
                drop(permit);
            });
        }
        // Stopped: wait for open connections (each got the stop signal) to close.
        let all = self.limits.max_connections.min(u32::MAX as usize) as u32;
        let _ = tokio::time::timeout(self.limits.drain_timeout + Duration::from_secs(1), self.slots.acquire_many(all)).await;
    }

    /// Over the limit: HTTP/1 gets a short 503 (written within a second, or not at all); an
    /// HTTP/2 client would not understand one and is simply closed.
    fn refuse(&self, mut stream: TcpStream) {
        if self.proto == Proto::Http2 {
            return;
        }
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else { return };
        let body = serde_json::json!({
            "error": format!("connections = {}: the server is at its connection limit (--max-connections); retry later", self.limits.max_connections),
            "model_version": self.st.engine.model_version(),
        })
        .to_string();
        let msg = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = stream.write_all(msg.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
            drop(permit);
        });
    }
}

/// Milliseconds since a process-wide start, for activity stamps.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When a connection last moved a byte, and how many of its requests are being handled.
struct Activity {
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.last_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// A socket that stamps its connection's [`Activity`] on every byte moved.
struct Watched {
    inner: TcpStream,
    act: Arc<Activity>,
}

impl Watched {
    fn touch(&self) {
        self.act.last_ms.store(now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's two connection types, for [`drive`].
trait Graceful: Future<Output = std::result::Result<(), hyper::Error>> {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

async fn serve_connection<S, B>(stream: TcpStream, proto: Proto, limits: &Limits, svc: S, stop: watch::Receiver<bool>)
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let act = Arc::new(Activity { last_ms: AtomicU64::new(now_ms()), in_flight: AtomicUsize::new(0) });
    let io = TokioIo::new(Watched { inner: stream, act: act.clone() });
    let a = act.clone();
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        a.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(a.clone());
        let svc = svc.clone();
        async move {
            let r = svc.oneshot(req).await;
            drop(guard);
            r
        }
    });
    match proto {
        Proto::Http1 => {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(limits.max_header_bytes).keep_alive(true);
            drive(b.serve_connection(io, svc), &act, limits, stop).await;
        }
        Proto::Http2 => {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                // Each stream may hold a message of up to max_body_bytes while it waits for a
                // scoring thread: a small bound keeps connections x streams x bytes modest.
                .max_concurrent_streams(16)
                .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
                // No server pings: their writes (and the answers) would count as activity and
                // keep a silent connection open past the idle timeout, which also finds dead
                // peers. A client that pings keeps its channel, within the connection limit.
                .keep_alive_interval(None);
            drive(b.serve_connection(io, svc), &act, limits, stop).await;
        }
    }
}

/// Run a connection until it ends, goes idle past the limit (dropped: closed), or the server
/// stops (graceful: open requests finish, within the drain timeout).
async fn drive<C: Graceful>(conn: C, act: &Activity, limits: &Limits, mut stop: watch::Receiver<bool>) {
    tokio::pin!(conn);
    let idle_ms = limits.idle_timeout.as_millis() as u64;
    loop {
        let quiet_for = now_ms().saturating_sub(act.last_ms.load(Ordering::Relaxed));
        let wake = Duration::from_millis(idle_ms.saturating_sub(quiet_for).max(10));
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep(wake) => {
                let quiet_for = now_ms().saturating_sub(act.last_ms.load(Ordering::Relaxed));
                if act.in_flight.load(Ordering::SeqCst) == 0 && quiet_for >= idle_ms {
                    return;
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().graceful();
                    let _ = tokio::time::timeout(limits.drain_timeout, conn.as_mut()).await;
                    return;
                }
            }
        }
    }
}
