//! The network front of an [`Engine`]: HTTP/JSON (axum on hyper 1), gRPC (tonic) and an admin
//! listener, on tokio. `twin serve` builds the runtime, binds the sockets and calls [`serve`].
//!
//! Main listener (HTTP/1.1):
//! - `GET /health` → `{"status":"ok","model_version":N,"model":path,"backend":...}`
//! - `GET /ready` → 200 `{"ready":true,...}` while taking traffic, 503 once shutting down
//! - `POST /score` with a JSON `ScoreRequest` → `ScoreResponse` (always with `model_version`)
//! - `GET /metrics` → Prometheus text format ([`metrics`])
//! - `/admin/*` → 404: admin routes live on the admin listener only.
//!
//! Admin listener ([`admin`], only with an admin address and a token): `POST /admin/swap`
//! `{"file": "name.twm"}` with `Authorization: Bearer <token>`; files come from the model
//! directory only, by plain name.
//!
//! gRPC listener ([`grpc`], HTTP/2): `twin.v1.Scorer/Score`, the same request and response.
//!
//! Every HTTP error is `{"error": "<message naming the field and value>", "model_version": N}`:
//! 400 bad input, 401 admin without the token, 404 unknown route or file, 405 wrong method, 408
//! body not received in time, 413 body over `max_body_bytes`, 503 queue full, connection limit
//! or no answer within `request_timeout`, 500 only for a failure of the backend itself.
//!
//! What a hostile client can hold ([`conn`]): one of `max_connections` slots (beyond them a
//! connection gets a canned 503 and is closed), for at most `header_timeout` while it sends a
//! request head of at most `max_header_bytes`, `body_timeout` while it sends a body of at most
//! `max_body_bytes`, and `idle_timeout` while it neither sends nor reads anything with no
//! request in flight. Scoring runs on the runtime's blocking pool (`Engine::score` blocks), so
//! the async threads only move bytes.

pub mod admin;
mod body;
pub(crate) mod conn;
pub mod diagnose;
pub mod grpc;
pub mod metrics;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Engine;
use crate::error::{Error, Result};

/// Limits and timeouts of the listeners; [`HttpConfig::default`] suits a service behind a load
/// balancer.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest request body (HTTP and gRPC message).
    pub max_body_bytes: usize,
    /// Open connections per listener at most; beyond it a connection is answered 503 and closed.
    pub max_connections: usize,
    /// A request head must arrive whole within this long of the connection becoming idle (new,
    /// or after its previous response): slow-loris clients and silent connections are closed.
    pub header_timeout: Duration,
    /// A request body must arrive whole within this long of its head.
    pub body_timeout: Duration,
    /// A request is answered within this long of its body, or gets a 503 (the engine's queue
    /// bounds the wait; this bounds a stuck backend).
    pub request_timeout: Duration,
    /// A connection with no request in flight that neither sends nor reads a byte for this long
    /// is closed (HTTP/2 and gRPC included, and clients that stop reading their response).
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers), hyper's read buffer.
    pub max_header_bytes: usize,
    /// How long a shutdown waits for connections to finish their requests.
    pub drain_timeout: Duration,
    /// Admin listener settings; `None`: no admin routes anywhere.
    pub admin: Option<AdminConfig>,
}

/// The admin listener's secret and the only directory swaps may read.
#[derive(Clone)]
pub struct AdminConfig {
    pub token: String,
    pub model_dir: PathBuf,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("AdminConfig").field("token", &"<redacted>").field("model_dir", &self.model_dir).finish()
    }
}

/// Shortest admin token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Smallest head buffer hyper accepts.
pub const MIN_HEADER_BYTES: usize = 8192;

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 4 << 20,
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 << 10,
            drain_timeout: Duration::from_secs(10),
            admin: None,
        }
    }
}

impl HttpConfig {
    /// Refuse settings that would disable a protection or size an allocation absurdly.
    pub fn check(&self) -> Result<()> {
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        let checks: [(&'static str, u64, u64, &'static str, u64); 8] = [
            ("max_body_bytes", self.max_body_bytes as u64, 1, "must be at least 1", 1 << 30),
            ("max_connections", self.max_connections as u64, 1, "must be at least 1", 1 << 20),
            ("header_timeout_ms", ms(self.header_timeout), 1, "must be at least 1", 3_600_000),
            ("body_timeout_ms", ms(self.body_timeout), 1, "must be at least 1", 3_600_000),
            ("request_timeout_ms", ms(self.request_timeout), 1, "must be at least 1", 3_600_000),
            ("idle_timeout_ms", ms(self.idle_timeout), 1, "must be at least 1", 86_400_000),
            ("drain_timeout_ms", ms(self.drain_timeout), 0, "", 3_600_000),
            (
                "max_header_bytes",
                self.max_header_bytes as u64,
                MIN_HEADER_BYTES as u64,
                "must be at least 8192 (hyper's smallest)",
                16 << 20,
            ),
        ];
        for (field, v, lo, why, hi) in checks {
            if v < lo {
                return Err(Error::BadSetting { name: field, value: v.to_string(), why: why.into() });
            }
            if v > hi {
                return Err(Error::TooLarge { field, value: v, limit: hi });
            }
        }
        if let Some(a) = &self.admin {
            if a.token.trim().len() < MIN_TOKEN_LEN {
                // The length only: the token is a secret and never goes into a message.
                return Err(Error::BadSetting {
                    name: "admin token length",
                    value: a.token.trim().len().to_string(),
                    why: format!("must be at least {MIN_TOKEN_LEN} characters (a random secret)"),
                });
            }
        }
        Ok(())
    }
}

/// The sockets to serve on, bound by the caller (so binding errors name the caller's flags).
pub struct Listeners {
    pub main: std::net::TcpListener,
    pub admin: Option<std::net::TcpListener>,
    pub grpc: Option<std::net::TcpListener>,
}

/// Everything a handler needs.
pub(crate) struct AppState {
    pub engine: Arc<Engine>,
    pub cfg: HttpConfig,
    pub metrics: metrics::Metrics,
    /// False once shutdown began: `/ready` answers 503 so load balancers move away.
    pub ready: AtomicBool,
}

/// Serve until `shutdown` resolves (e.g. on SIGTERM), then stop accepting, let open requests
/// finish for at most `drain_timeout`, and return. Must run inside a tokio runtime whose
/// blocking pool bounds the scoring threads.
pub async fn serve(
    engine: Arc<Engine>,
    cfg: HttpConfig,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    cfg.check()?;
    let metrics = metrics::Metrics::new(&engine)?;
    let st = Arc::new(AppState { engine, cfg: cfg.clone(), metrics, ready: AtomicBool::new(true) });
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = conn::Limits::from(&cfg);

    let mut tasks = Vec::new();
    let main = conn::Listener::new(listeners.main, "http", conn::Proto::Http1, limits.clone(), st.clone())?;
    let router = routes::router(st.clone());
    tasks.push(tokio::spawn(main.run(router, stop_rx.clone())));
    if let Some(l) = listeners.admin {
        if cfg.admin.is_none() {
            return Err(Error::Incompatible { what: "admin listener", why: "no admin token and model directory configured".into() });
        }
        let admin = conn::Listener::new(l, "admin", conn::Proto::Http1, limits.clone(), st.clone())?;
        tasks.push(tokio::spawn(admin.run(admin::router(st.clone()), stop_rx.clone())));
    }
    if let Some(l) = listeners.grpc {
        let grpc = conn::Listener::new(l, "grpc", conn::Proto::Http2, limits.clone(), st.clone())?;
        tasks.push(tokio::spawn(grpc.run(grpc::ScorerServer::new(st.clone()), stop_rx.clone())));
    }

    shutdown.await;
    st.ready.store(false, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// The address a listener ended up on, for the start-up lines.
pub fn local_addr(l: &std::net::TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}

/// Raise this process's soft limit on open files to its hard limit, so the connection limit
/// (not the common soft default of 1,024) is what bounds connections. Returns (old, new) soft
/// limits, or `None` where it could not be read or raised.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every platform
pub fn raise_open_file_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit into the live, properly aligned struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        let old = lim.rlim_cur as u64;
        if lim.rlim_cur >= lim.rlim_max {
            return Some((old, old));
        }
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads one rlimit from the live struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return None;
        }
        Some((old, lim.rlim_cur as u64))
    }
    #[cfg(not(unix))]
    {
        None
    }
}
