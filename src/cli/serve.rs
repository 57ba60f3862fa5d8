//! `twin serve`: option parsing, the engine, the sockets and the tokio runtime around
//! `twin_engine::serve::http::serve` (routes, limits and their reasons are documented there).
//!
//! Threads: `--io-threads` async workers move bytes; `--threads` blocking threads (the
//! runtime's blocking pool, bounded) parse requests and wait in `Engine::score`, which batches
//! concurrent callers itself.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use twin_engine::backend::{BackendChoice, DType};
use twin_engine::serve::http::{self, AdminConfig, HttpConfig, Listeners};
use twin_engine::serve::{Engine, EngineConfig};
use twin_engine::train::Variant;

/// Options of `twin serve`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeOpts {
    /// The model file to serve (version 1).
    #[arg(long)]
    pub model: PathBuf,
    /// The variant the model was trained as.
    #[arg(long, value_enum, default_value_t = Variant::Twin)]
    pub variant: Variant,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Address to listen on; port 0 picks a free port (the line printed on start says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Scoring threads (the blocking pool: each parses a request and waits in the engine).
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// Async threads moving bytes on the sockets.
    #[arg(long, default_value_t = 2)]
    pub io_threads: usize,
    /// Largest request body accepted; larger ones are answered 413 without being read.
    #[arg(long, default_value_t = 4_194_304)]
    pub max_body_bytes: usize,
    /// Open connections per listener at most; beyond it a connection gets a 503 and is closed.
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// A request head must arrive whole within this long of the connection becoming idle (new
    /// or after its previous response): slow and silent connections are closed.
    #[arg(long, default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// A request body must arrive whole within this long of its head (else 408, closed).
    #[arg(long, default_value_t = 10_000)]
    pub body_timeout_ms: u64,
    /// A request not answered within this long of its body gets a 503 (a stuck backend).
    #[arg(long, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// A connection that moves no byte for this long with no request in flight is closed.
    #[arg(long, default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Largest request head (request line and headers); larger ones get a 431.
    #[arg(long, default_value_t = 65_536)]
    pub max_header_bytes: usize,
    /// How long a shutdown (SIGTERM, Ctrl-C) waits for open requests.
    #[arg(long, default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// Admin listener (POST /admin/swap), e.g. 127.0.0.1:9090; off unless given. Needs
    /// --admin-token-file.
    #[arg(long)]
    pub admin_addr: Option<String>,
    /// File holding the admin bearer token (read once at start; at least 16 characters).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// The only directory swaps may read, by plain file name (default: --model's directory).
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// gRPC listener (twin.v1.Scorer, proto/twin.proto), e.g. 127.0.0.1:50051; off unless given.
    #[arg(long)]
    pub grpc_addr: Option<String>,
    /// How long the first request of a batch waits for company (microseconds).
    #[arg(long, default_value_t = 500)]
    pub max_wait_us: u64,
    /// Most requests per backend call.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Score every request on its own (no dynamic batching).
    #[arg(long)]
    pub no_batching: bool,
    /// Storage of the projection tables.
    #[arg(long, value_enum, default_value_t = DType::F32)]
    pub dtype: DType,
}

fn bind(flag: &str, addr: &str) -> Result<std::net::TcpListener> {
    let a: SocketAddr = addr
        .to_socket_addrs()
        .with_context(|| format!("{flag} = {addr:?}"))?
        .next()
        .with_context(|| format!("{flag} = {addr:?}: resolves to no address"))?;
    std::net::TcpListener::bind(a).with_context(|| format!("{flag} = {addr:?}: cannot listen"))
}

/// The admin token and model directory, or why the admin listener cannot start.
fn admin_config(o: &ServeOpts) -> Result<Option<AdminConfig>> {
    let Some(addr) = &o.admin_addr else {
        if o.admin_token_file.is_some() {
            bail!("--admin-token-file given without --admin-addr: the admin listener is off unless --admin-addr names it");
        }
        return Ok(None);
    };
    let Some(tf) = &o.admin_token_file else {
        bail!("--admin-addr = {addr:?}: needs --admin-token-file (admin routes are never served without a token)");
    };
    let raw = std::fs::read(tf).with_context(|| format!("--admin-token-file = {}", tf.display()))?;
    if raw.len() > 4096 {
        bail!("--admin-token-file = {}: {} bytes; a token file holds one token (at most 4096 bytes)", tf.display(), raw.len());
    }
    let token = String::from_utf8(raw).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty() && !s.contains(char::is_whitespace));
    let Some(token) = token else {
        bail!("--admin-token-file = {}: must hold one token (UTF-8, no spaces inside)", tf.display());
    };
    if token.len() < http::MIN_TOKEN_LEN {
        bail!(
            "--admin-token-file = {}: the token has {} characters; use at least {} (a random secret)",
            tf.display(),
            token.len(),
            http::MIN_TOKEN_LEN
        );
    }
    let dir = match &o.model_dir {
        Some(d) => d.clone(),
        None => o.model.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf(),
    };
    let dir = dir.canonicalize().with_context(|| format!("--model-dir = {}", dir.display()))?;
    if !dir.is_dir() {
        bail!("--model-dir = {}: not a directory", dir.display());
    }
    Ok(Some(AdminConfig { token, model_dir: dir }))
}

pub fn run(o: &ServeOpts) -> Result<()> {
    let (variant, backend, dtype) = (o.variant, o.backend, o.dtype);
    for (flag, v) in [("--threads", o.threads), ("--io-threads", o.io_threads), ("--max-batch", o.max_batch)] {
        if v == 0 {
            bail!("{flag} = 0: must be at least 1");
        }
    }
    for (flag, v) in [("--threads", o.threads), ("--io-threads", o.io_threads)] {
        if v > 4096 {
            bail!("{flag} = {v}: at most 4096");
        }
    }
    let cfg = HttpConfig {
        max_body_bytes: o.max_body_bytes,
        max_connections: o.max_connections,
        header_timeout: Duration::from_millis(o.header_timeout_ms),
        body_timeout: Duration::from_millis(o.body_timeout_ms),
        request_timeout: Duration::from_millis(o.request_timeout_ms),
        idle_timeout: Duration::from_millis(o.idle_timeout_ms),
        max_header_bytes: o.max_header_bytes,
        drain_timeout: Duration::from_millis(o.drain_timeout_ms),
        admin: admin_config(o)?,
    };
    // The library names each limit by its field; the flag is the same name with dashes.
    let flag = |field: &str| format!("--{}", field.replace('_', "-"));
    cfg.check().map_err(|e| match e {
        twin_engine::Error::BadSetting { name, value, why } if name.contains('_') => {
            anyhow::anyhow!("{} = {value}: {why}", flag(name))
        }
        twin_engine::Error::TooLarge { field, value, limit } if field.contains('_') => {
            anyhow::anyhow!("{} = {value} exceeds the limit {limit}", flag(field))
        }
        e => e.into(),
    })?;

    let engine_cfg = EngineConfig {
        backend,
        dtype,
        variant,
        batching: !o.no_batching,
        max_batch_requests: o.max_batch,
        max_wait: Duration::from_micros(o.max_wait_us),
        ..EngineConfig::default()
    };
    let engine = Engine::open(&o.model, engine_cfg).with_context(|| format!("--model = {}", o.model.display()))?;
    let engine = Arc::new(engine);

    if let Some((old, new)) = http::raise_open_file_limit() {
        if new > old {
            eprintln!("note: open-file limit raised from {old} to {new}");
        }
    }
    let main = bind("--addr", &o.addr)?;
    let admin = o.admin_addr.as_deref().map(|a| bind("--admin-addr", a)).transpose()?;
    let grpc = o.grpc_addr.as_deref().map(|a| bind("--grpc-addr", a)).transpose()?;

    eprintln!(
        "serving {} ({} variant, {}; batching {}, max batch {}, max wait {} us, {} scoring threads, max body {} bytes, max {} connections)",
        o.model.display(),
        variant,
        engine.backend_note(),
        if o.no_batching { "off" } else { "on" },
        o.max_batch,
        o.max_wait_us,
        o.threads,
        o.max_body_bytes,
        o.max_connections
    );
    let shown = |l: &std::net::TcpListener| http::local_addr(l).map_or_else(|| "?".to_string(), |a| a.to_string());
    println!("listening on http://{} (model version {}, backend {})", shown(&main), engine.model_version(), engine.backend().describe());
    if let (Some(l), Some(a)) = (&admin, &cfg.admin) {
        println!("admin on http://{} (bearer token required; swaps from {})", shown(l), a.model_dir.display());
    }
    if let Some(l) = &grpc {
        println!("grpc on {} (twin.v1.Scorer)", shown(l));
    }
    std::io::stdout().flush().context("stdout")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.io_threads)
        .max_blocking_threads(o.threads)
        .thread_keep_alive(Duration::from_secs(5))
        .thread_name("twin-serve")
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(http::serve(engine, cfg, Listeners { main, admin, grpc }, shutdown_signal()))?;
    eprintln!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM: the server stops accepting and drains.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
