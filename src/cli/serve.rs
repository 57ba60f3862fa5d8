//! `twin serve`: HTTP/JSON in front of an [`Engine`], and `twin loadtest`: a keep-alive load
//! generator that replays users' histories from a dataset against it.
//!
//! Routes:
//! - `GET /health` → `{"status":"ok","model_version":N,"model":path,"backend":...}`
//! - `POST /score` with a JSON `ScoreRequest` → `ScoreResponse` (always with `model_version`)
//! - `POST /admin/swap` with `{"path": "..."}` → `{"model_version": new}`; a file that fails to
//!   load is refused with an error and the old version keeps serving.
//!
//! Every error is `{"error": "<message naming the field and value>", "model_version": N}`: 400 bad
//! input, 404 unknown route, 405 wrong method, 413 body over `--max-body-bytes`, 503 queue full
//! (`Error::Overloaded`), 500 otherwise.
//!
//! Threads: tiny_http runs one thread per open connection that parses request heads (and reads
//! bodies of at most 1 KiB); `--threads` workers each take requests with `Server::recv`, read the
//! body (capped at `--max-body-bytes + 1`), and call `Engine::score`, which batches concurrent
//! callers itself. A panic while handling one request is caught and answered with a 500; the
//! worker carries on.
//!
//! tiny_http 0.12 needs four work-arounds, all here:
//! - It sets no `TCP_NODELAY`, so a response written in two parts (head, then a body over ~1 KiB)
//!   waits for the client's delayed ACK: ~48 ms more per keep-alive request (measured: p50 55.9
//!   vs 7.3 ms). We set it on the listening socket, which Linux copies to accepted sockets.
//! - Its connection thread pool can leave a new connection queued, unserved, until some other
//!   connection closes (see [`start_unsticker`]).
//! - A request answered without reading its body has the rest of the body discarded when it
//!   drops, at the client's pace: such answers (413, 404, 405 with a body) are sent from a
//!   short-lived drain thread so no worker waits on a client.
//! - That discard first allocates a buffer the size of what is left, and a failed allocation
//!   aborts the process: a request declaring an absurd length (over 64 MiB and twice the limit)
//!   gets its 413 and its connection is abandoned (left open, one parked thread) instead.
//!
//! What remains (put a reverse proxy in front for untrusted clients): no socket timeouts, so a
//! client that declares a body under the limit and sends it slowly holds one worker while it is
//! read, an idle keep-alive connection holds a tiny_http thread, and header lines are unbounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use twin_engine::backend::DType;
use twin_engine::error::Error;
use twin_engine::serve::{Behaviour, Engine, EngineConfig, ScoreRequest};

/// Options of `twin serve`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeOpts {
    /// The model file to serve (version 1).
    #[arg(long)]
    pub model: PathBuf,
    /// The variant the model was trained as: twin, twin-v2, sim-soft, din-short or no-seq.
    #[arg(long, default_value = "twin")]
    pub variant: String,
    /// auto, cpu, cuda or wgpu.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Address to listen on; port 0 picks a free port (the line printed on start says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Worker threads taking requests (each blocks in `Engine::score` while its batch runs).
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// Largest request body accepted; larger ones are answered 413 without being read.
    #[arg(long, default_value_t = 4_194_304)]
    pub max_body_bytes: usize,
    /// How long the first request of a batch waits for company (microseconds).
    #[arg(long, default_value_t = 500)]
    pub max_wait_us: u64,
    /// Most requests per backend call.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Score every request on its own (no dynamic batching).
    #[arg(long)]
    pub no_batching: bool,
    /// Storage of the projection tables: f32 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

/// Options of `twin loadtest`.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadtestOpts {
    /// The server, e.g. http://127.0.0.1:8080 (requests go to /score unless the URL has a path).
    #[arg(long)]
    pub url: String,
    /// Dataset whose users' histories become the requests.
    #[arg(long)]
    pub data: PathBuf,
    /// Client threads per level, comma separated; each level runs for --seconds.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub concurrency: Vec<usize>,
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Candidates per request: the user's real next item, then pseudo-random items.
    #[arg(long, default_value_t = 100)]
    pub candidates: usize,
    /// Most recent behaviours per request's long sequence.
    #[arg(long, default_value_t = 1000)]
    pub max_len: usize,
    /// Most recent behaviours per request's short sequence.
    #[arg(long, default_value_t = 50)]
    pub short_len: usize,
    /// Socket timeout (connect, read, write); a level never runs longer than --seconds plus this.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

// ---------------------------------------------------------------------------------------------
// twin serve
// ---------------------------------------------------------------------------------------------

/// Bodies up to this size are read by tiny_http before the request is handed over.
const PREREAD_BYTES: usize = 1024;
/// Largest --max-body-bytes.
const MAX_BODY_LIMIT: usize = 1 << 30;
/// A request answered unread whose declared body is larger than this (and than twice the body
/// limit) has its connection abandoned rather than drained: tiny_http would allocate the whole
/// remaining length at once, and a failed allocation aborts the process.
const ABANDON_BYTES: usize = 64 << 20;
/// Drain threads at most at once; beyond it a worker drains inline.
const MAX_DRAINS: usize = 64;
/// See [`start_unsticker`].
const UNSTICK_PERIOD: Duration = Duration::from_millis(20);

struct State {
    engine: Arc<Engine>,
    max_body: usize,
    /// Declared unread bodies above this are abandoned, not drained.
    abandon_above: usize,
    /// Drain threads running.
    drains: Arc<AtomicUsize>,
}

/// One answer: status, JSON body, and the `Allow` header of a 405.
struct Reply {
    status: u16,
    body: Vec<u8>,
    allow: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply { status, body: serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()), allow: None }
    }
    fn error(st: &State, status: u16, msg: impl Into<String>) -> Reply {
        Reply::json(status, &json!({"error": msg.into(), "model_version": st.engine.model_version()}))
    }
}

pub fn cmd_serve(o: &ServeOpts) -> Result<()> {
    let variant = crate::parse_variant(&o.variant)?;
    let backend = crate::parse_backend(&o.backend)?;
    let dtype = match o.dtype.as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        other => bail!("--dtype = {other:?}: expected f32 or f16"),
    };
    for (flag, v) in [("--threads", o.threads), ("--max-batch", o.max_batch), ("--max-body-bytes", o.max_body_bytes)] {
        if v == 0 {
            bail!("{flag} = 0: must be at least 1");
        }
    }
    if o.threads > 4096 {
        bail!("--threads = {}: at most 4096", o.threads);
    }
    if o.max_body_bytes > MAX_BODY_LIMIT {
        bail!("--max-body-bytes = {}: at most {MAX_BODY_LIMIT}", o.max_body_bytes);
    }
    let cfg = EngineConfig {
        backend,
        dtype,
        variant,
        batching: !o.no_batching,
        max_batch_requests: o.max_batch,
        max_wait: Duration::from_micros(o.max_wait_us),
        ..EngineConfig::default()
    };
    let engine = Engine::open(&o.model, cfg).with_context(|| format!("--model = {}", o.model.display()))?;
    let engine = Arc::new(engine);

    let addr: SocketAddr = o
        .addr
        .to_socket_addrs()
        .with_context(|| format!("--addr = {:?}", o.addr))?
        .next()
        .with_context(|| format!("--addr = {:?}: resolves to no address", o.addr))?;
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("--addr = {:?}: cannot listen", o.addr))?;
    nodelay::set_on_listener(&listener);
    let bound = listener.local_addr().with_context(|| format!("--addr = {:?}", o.addr))?;
    let http = tiny_http::Server::from_listener(listener, None).map_err(|e| anyhow::anyhow!("--addr = {:?}: {e}", o.addr))?;
    let http = Arc::new(http);

    eprintln!(
        "serving {} ({} variant, {}; batching {}, max batch {}, max wait {} us, {} workers, max body {} bytes)",
        o.model.display(),
        variant,
        engine.backend_note(),
        if o.no_batching { "off" } else { "on" },
        o.max_batch,
        o.max_wait_us,
        o.threads,
        o.max_body_bytes
    );
    println!("listening on http://{bound} (model version {}, backend {})", engine.model_version(), engine.backend().describe());
    std::io::stdout().flush().context("stdout")?;

    start_unsticker(bound);

    let st = Arc::new(State {
        engine,
        max_body: o.max_body_bytes,
        abandon_above: ABANDON_BYTES.max(2 * o.max_body_bytes),
        drains: Arc::new(AtomicUsize::new(0)),
    });
    let mut workers = Vec::with_capacity(o.threads);
    for i in 0..o.threads {
        let (st, http) = (st.clone(), http.clone());
        let h = std::thread::Builder::new()
            .name(format!("twin-http-{i}"))
            .spawn(move || worker(&st, &http))
            .with_context(|| format!("start worker thread {i}"))?;
        workers.push(h);
    }
    for h in workers {
        let _ = h.join();
    }
    Ok(())
}

/// tiny_http 0.12 runs each connection as a task of its thread pool, and `TaskPool::spawn`
/// counts a waiter it has just woken as still idle: when connections arrive in a burst, one can
/// be queued with no thread to run it, and then waits until some other connection closes (for
/// keep-alive clients, indefinitely). Every empty connection we open and close hands the pool a
/// task that a fresh thread runs at once and then frees, after which that thread takes whatever
/// was queued. So a connection is never stuck for more than one period.
fn start_unsticker(bound: SocketAddr) {
    let mut target = bound;
    if bound.ip().is_unspecified() {
        target.set_ip(if bound.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let spawned = std::thread::Builder::new().name("twin-http-unstick".into()).spawn(move || loop {
        std::thread::sleep(UNSTICK_PERIOD);
        drop(TcpStream::connect_timeout(&target, Duration::from_secs(1)));
    });
    if let Err(e) = spawned {
        eprintln!("note: could not start the connection-pool unsticker: {e}");
    }
}

fn worker(st: &State, http: &tiny_http::Server) {
    loop {
        match http.recv() {
            Ok(rq) => {
                // A panic drops the request, and tiny_http answers a dropped request with a 500.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(st, rq))).is_err() {
                    eprintln!("warning: a request handler panicked; answered 500, worker continues");
                }
            }
            Err(e) => {
                // tiny_http's accept loop has stopped: the server can no longer take connections.
                eprintln!("error: the HTTP listener failed: {e}");
                std::process::exit(1);
            }
        }
    }
}

fn handle(st: &State, mut rq: tiny_http::Request) {
    use tiny_http::Method;
    let path = rq.url().split('?').next().unwrap_or("").to_string();
    let method = rq.method().clone();
    let mut body_read = false;
    let reply = match (path.as_str(), &method) {
        ("/health", Method::Get | Method::Head) => health(st),
        ("/score", Method::Post) => {
            body_read = true;
            score(st, &mut rq)
        }
        ("/admin/swap", Method::Post) => {
            body_read = true;
            swap(st, &mut rq)
        }
        ("/health", _) => not_allowed(st, &method, &path, "GET"),
        ("/score" | "/admin/swap", _) => not_allowed(st, &method, &path, "POST"),
        _ => Reply::error(st, 404, format!("route = {path:?}: not found (routes: GET /health, POST /score, POST /admin/swap)")),
    };
    send(st, rq, reply, body_read);
}

fn not_allowed(st: &State, method: &tiny_http::Method, path: &str, allow: &'static str) -> Reply {
    let mut r = Reply::error(st, 405, format!("method = {method} on {path}: not allowed (use {allow})"));
    r.allow = Some(allow);
    r
}

fn health(st: &State) -> Reply {
    let e = &st.engine;
    Reply::json(
        200,
        &json!({
            "status": "ok",
            "model_version": e.model_version(),
            "model": e.model_source().display().to_string(),
            "backend": e.backend().describe(),
            "backend_note": e.backend_note(),
            "variant": e.config().variant.name(),
            "batching": e.config().batching,
        }),
    )
}

/// The request body, capped: a declared length over the limit is refused before reading, and
/// the read stops one byte past the limit whatever the client sends.
fn read_body(st: &State, rq: &mut tiny_http::Request) -> std::result::Result<Vec<u8>, Reply> {
    let too_big = |n: String| Reply::error(st, 413, format!("request body = {n} bytes exceeds --max-body-bytes = {}", st.max_body));
    if let Some(n) = rq.body_length() {
        if n > st.max_body {
            return Err(too_big(n.to_string()));
        }
    }
    let mut buf = Vec::with_capacity(rq.body_length().unwrap_or(0).min(st.max_body));
    match rq.as_reader().take(st.max_body as u64 + 1).read_to_end(&mut buf) {
        Ok(_) if buf.len() > st.max_body => Err(too_big(format!("more than {}", st.max_body))),
        Ok(_) => Ok(buf),
        Err(e) => Err(Reply::error(st, 400, format!("request body: reading failed after {} bytes: {e}", buf.len()))),
    }
}

fn status_of(e: &Error) -> u16 {
    match e {
        Error::Overloaded { .. } => 503,
        Error::Device { .. } | Error::BackendUnavailable { .. } | Error::ForeignTable { .. } => 500,
        // Everything else names a bad value in the request (or the file a swap named).
        _ => 400,
    }
}

fn score(st: &State, rq: &mut tiny_http::Request) -> Reply {
    let body = match read_body(st, rq) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req: ScoreRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return Reply::error(st, 400, diagnose(&body, &e)),
    };
    match st.engine.score(&req) {
        Ok(resp) => match serde_json::to_vec(&resp) {
            Ok(b) => Reply { status: 200, body: b, allow: None },
            Err(e) => Reply::error(st, 500, format!("encoding the response: {e}")),
        },
        Err(e) => Reply::error(st, status_of(&e), e.to_string()),
    }
}

fn swap(st: &State, rq: &mut tiny_http::Request) -> Reply {
    let body = match read_body(st, rq) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Reply::error(st, 400, format!("malformed JSON: {e}")),
    };
    let path = match v.get("path") {
        Some(Value::String(p)) if !p.is_empty() => PathBuf::from(p),
        Some(other) => return Reply::error(st, 400, format!("path = {}: expected a model file path (a non-empty string)", show(other))),
        None => return Reply::error(st, 400, "path: missing (send {\"path\": \"model.twm\"})"),
    };
    let old = st.engine.model_version();
    // Loading and building the tables runs off the request path; the other workers keep serving.
    match st.engine.swap_in_background(path.clone()).join() {
        Ok(Ok(version)) => {
            eprintln!("swapped to {} (model version {version}, was {old})", path.display());
            Reply::json(200, &json!({"model_version": version, "previous_version": old, "model": path.display().to_string()}))
        }
        Ok(Err(e)) => Reply::error(
            st,
            status_of(&e),
            format!("path = {:?}: refused, version {} keeps serving: {e}", path.display().to_string(), st.engine.model_version()),
        ),
        Err(_) => {
            Reply::error(st, 500, format!("path = {:?}: loading panicked; the old version keeps serving", path.display().to_string()))
        }
    }
}

fn send(st: &State, rq: tiny_http::Request, reply: Reply, body_read: bool) {
    let status = reply.status;
    let mut resp = tiny_http::Response::from_data(reply.body).with_status_code(status).with_chunked_threshold(usize::MAX);
    if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]) {
        resp.add_header(h);
    }
    if let Some(allow) = reply.allow {
        if let Ok(h) = tiny_http::Header::from_bytes(&b"Allow"[..], allow.as_bytes()) {
            resp.add_header(h);
        }
    }
    // An unread body over PREREAD_BYTES is drained by tiny_http when the request drops, from the
    // socket, at the client's pace: keep that off the worker.
    let unread = match rq.body_length() {
        Some(n) if n > PREREAD_BYTES && (!body_read || status == 413) => n,
        _ => 0,
    };
    if unread == 0 {
        let _ = rq.respond(resp);
    } else if unread > st.abandon_above {
        abandon(rq, resp, unread);
    } else if st.drains.fetch_add(1, Ordering::SeqCst) < MAX_DRAINS {
        let drains = st.drains.clone();
        let spawned = std::thread::Builder::new().name("twin-http-drain".into()).spawn(move || {
            let _ = rq.respond(resp);
            drains.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            // The closure (and the request in it) is gone; tiny_http answered it with a 500.
            st.drains.fetch_sub(1, Ordering::SeqCst);
        }
    } else {
        st.drains.fetch_sub(1, Ordering::SeqCst);
        let _ = rq.respond(resp);
    }
}

/// Answer without ever dropping the body reader (whose drop would allocate `declared` bytes):
/// the connection is left open and its tiny_http thread parked. Only for forged lengths.
fn abandon(rq: tiny_http::Request, resp: tiny_http::Response<std::io::Cursor<Vec<u8>>>, declared: usize) {
    let from = rq.remote_addr().map(|a| a.to_string()).unwrap_or_default();
    let status = resp.status_code();
    let body = resp.into_reader().into_inner();
    let mut stream = rq.upgrade("close", tiny_http::Response::empty(status));
    let _ = stream.write_all(&body);
    let _ = stream.flush();
    std::mem::forget(stream);
    eprintln!("warning: abandoned the connection from {from}: it declared a {declared}-byte body");
}

/// `TCP_NODELAY` on the listening socket, which Linux hands down to every accepted connection
/// (tiny_http sets none itself); see the module notes.
mod nodelay {
    #[cfg(target_os = "linux")]
    pub fn set_on_listener(l: &std::net::TcpListener) {
        use std::os::fd::AsRawFd;
        extern "C" {
            fn setsockopt(fd: i32, level: i32, name: i32, value: *const std::ffi::c_void, len: u32) -> i32;
        }
        const IPPROTO_TCP: i32 = 6;
        const TCP_NODELAY: i32 = 1;
        let one: i32 = 1;
        // SAFETY: a valid open socket descriptor and a pointer to a live i32 of the given size.
        let rc = unsafe { setsockopt(l.as_raw_fd(), IPPROTO_TCP, TCP_NODELAY, &one as *const i32 as *const _, 4) };
        if rc != 0 {
            eprintln!("note: could not set TCP_NODELAY on the listener: {}", std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    pub fn set_on_listener(_: &std::net::TcpListener) {}
}

/// A JSON value for an error message, cut to a readable length.
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// Why a body is not a `ScoreRequest`, naming the field (with its index) and the value. Runs
/// only after the fast typed parse failed.
fn diagnose(body: &[u8], typed: &serde_json::Error) -> String {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return "request body is empty: expected a JSON ScoreRequest {\"request_time\", \"long\", \"short\", \"candidates\"}".into();
    }
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return format!("malformed JSON: {e}"),
    };
    let Some(o) = v.as_object() else {
        return format!("request body = {}: expected a JSON object (a ScoreRequest)", show(&v));
    };
    check_request(o).unwrap_or_else(|| format!("invalid request: {typed}"))
}

fn check_request(o: &Map<String, Value>) -> Option<String> {
    let int = |path: &str, v: Option<&Value>, required: bool, max: Option<u64>| -> Option<String> {
        match v {
            None if required => Some(format!("{path}: missing (required)")),
            None => None,
            Some(x) => {
                let ok = match max {
                    Some(m) => x.as_u64().is_some_and(|n| n <= m),
                    None => x.as_i64().is_some(),
                };
                let what = if max.is_some() { "an unsigned 32-bit integer" } else { "a 64-bit integer (seconds)" };
                (!ok).then(|| format!("{path} = {}: expected {what}", show(x)))
            }
        }
    };
    let num = |path: String, v: Option<&Value>| -> Option<String> {
        match v {
            None => Some(format!("{path}: missing (required)")),
            // Numbers are f32 on the engine side: 1e39 is a number in JSON but not a finite f32.
            Some(x) if x.as_f64().is_some_and(|f| (f as f32).is_finite()) => None,
            Some(x) => Some(format!("{path} = {}: expected a finite number (32-bit float)", show(x))),
        }
    };
    if let Some(e) = int("request_time", o.get("request_time"), true, None) {
        return Some(e);
    }
    for seq in ["long", "short"] {
        let Some(v) = o.get(seq) else { continue };
        let Some(a) = v.as_array() else {
            return Some(format!("{seq} = {}: expected an array of behaviours", show(v)));
        };
        for (i, b) in a.iter().enumerate() {
            let Some(bo) = b.as_object() else {
                return Some(format!(
                    "{seq}[{i}] = {}: expected a behaviour {{\"item\", \"timestamp\", \"play_time\", \"completion\"}}",
                    show(b)
                ));
            };
            let e = int(&format!("{seq}[{i}].item"), bo.get("item"), true, Some(u32::MAX as u64))
                .or_else(|| int(&format!("{seq}[{i}].timestamp"), bo.get("timestamp"), true, None))
                .or_else(|| num(format!("{seq}[{i}].play_time"), bo.get("play_time")))
                .or_else(|| num(format!("{seq}[{i}].completion"), bo.get("completion")))
                .or_else(|| int(&format!("{seq}[{i}].size"), bo.get("size"), false, Some(u32::MAX as u64)));
            if e.is_some() {
                return e;
            }
        }
    }
    match o.get("candidates") {
        None => return Some("candidates: missing (required): expected an array of item ids".into()),
        Some(Value::Array(a)) => {
            for (i, c) in a.iter().enumerate() {
                if let Some(e) = int(&format!("candidates[{i}]"), Some(c), true, Some(u32::MAX as u64)) {
                    return Some(e.replace("an unsigned 32-bit integer", "an item id (unsigned 32-bit integer)"));
                }
            }
        }
        Some(v) => return Some(format!("candidates = {}: expected an array of item ids", show(v))),
    }
    match o.get("debug") {
        Some(v) if !v.is_boolean() => Some(format!("debug = {}: expected true or false", show(v))),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// twin loadtest
// ---------------------------------------------------------------------------------------------

/// `http://host:port[/path]` → (address, Host header, request target).
fn parse_url(url: &str) -> Result<(SocketAddr, String, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("--url = {url:?}: expected http://HOST:PORT (plain HTTP)");
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        bail!("--url = {url:?}: no host");
    }
    let with_port = if host.rsplit(':').next().is_some_and(|p| p.parse::<u16>().is_ok()) && host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("--url = {url:?}: cannot resolve {with_port}"))?
        .next()
        .with_context(|| format!("--url = {url:?}: {with_port} resolves to no address"))?;
    let target = if path.is_empty() || path == "/" { "/score".to_string() } else { path.to_string() };
    Ok((addr, host.to_string(), target))
}

/// One HTTP/1.1 exchange on a keep-alive connection: write `req` whole, read the status line,
/// the headers and a Content-Length (or chunked) body into `body`. Returns the status and
/// whether the server will close the connection.
fn roundtrip(conn: &mut BufReader<TcpStream>, req: &[u8], body: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    use std::io::{Error as IoError, ErrorKind};
    let bad = |what: String| IoError::new(ErrorKind::InvalidData, what);
    conn.get_mut().write_all(req)?;
    let mut line = String::new();
    let status = loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(IoError::new(ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        let status: u16 =
            line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad(format!("status line {line:?}")))?;
        let mut len = None;
        let (mut chunked, mut close) = (false, false);
        for n_headers in 0.. {
            line.clear();
            if conn.read_line(&mut line)? == 0 {
                return Err(IoError::new(ErrorKind::UnexpectedEof, "the server closed the connection in the headers"));
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            if n_headers > 200 {
                return Err(bad("more than 200 response headers".into()));
            }
            let Some((k, v)) = line.split_once(':') else { continue };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => len = Some(v.parse::<usize>().map_err(|_| bad(format!("content-length {v:?}")))?),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v.contains("close"),
                _ => {}
            }
        }
        if (100..200).contains(&status) {
            continue; // an interim response; the real one follows
        }
        body.clear();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad(format!("chunk size {line:?}")))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        line.clear();
                        if conn.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                            break;
                        }
                    }
                    break;
                }
                let at = body.len();
                body.resize(at + size, 0);
                conn.read_exact(&mut body[at..])?;
                line.clear();
                conn.read_line(&mut line)?;
            }
        } else if let Some(n) = len {
            if n > 256 << 20 {
                return Err(bad(format!("content-length {n} is implausibly large")));
            }
            body.resize(n, 0);
            conn.read_exact(body)?;
        } else {
            conn.read_to_end(body)?;
            close = true;
        }
        break (status, close);
    };
    Ok(status)
}

fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(BufReader::with_capacity(64 * 1024, s))
}

/// What one client thread saw.
#[derive(Default)]
struct ClientStats {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl ClientStats {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

/// One client: a keep-alive connection, requests back to back until `seconds` after the start.
fn client(addr: SocketAddr, reqs: &[Vec<u8>], first: usize, seconds: f64, timeout: Duration, start: &Barrier) -> ClientStats {
    let mut st = ClientStats::default();
    let mut conn = match connect(addr, timeout) {
        Ok(c) => Some(c),
        Err(e) => {
            st.error(format!("connect to {addr}: {e}"));
            None
        }
    };
    start.wait();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut body = Vec::new();
    let mut i = first;
    while Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(addr, timeout) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    st.error(format!("connect to {addr}: {e}"));
                    std::thread::sleep(Duration::from_millis(10).min(deadline.saturating_duration_since(Instant::now())));
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        match roundtrip(c, &reqs[i % reqs.len()], &mut body) {
            Ok((200, close)) => {
                st.latencies_us.push(t0.elapsed().as_micros() as u64);
                if close {
                    conn = None;
                }
            }
            Ok((status, close)) => {
                st.error(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
                if close {
                    conn = None;
                }
            }
            Err(e) => {
                st.error(format!("request: {e}"));
                conn = None;
            }
        }
        i += 1;
    }
    st
}

/// Requests from the dataset: for each user with history, the behaviours before their last one
/// (the most recent `max_len` as `long`, the last `short_len` as `short`), at the time of that
/// last behaviour, with its item among the candidates.
fn build_requests(o: &LoadtestOpts, host: &str, target: &str) -> Result<(Vec<Vec<u8>>, f64)> {
    let ds = crate::load_data(&o.data)?;
    let n_items = ds.items.len() as u64;
    if n_items == 0 {
        bail!("--data = {}: the dataset has no items", o.data.display());
    }
    let b = &ds.behaviours;
    let mut rng = o.seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // splitmix64
        rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Vec::new();
    let mut total_long = 0usize;
    for u in 0..ds.n_users() {
        let r = ds.user_range(u);
        if r.is_empty() {
            continue;
        }
        let last = r.end - 1;
        let t = b.timestamp[last];
        let h = ds.history_before(u, t);
        if h.is_empty() {
            continue;
        }
        let start = h.end.saturating_sub(o.max_len).max(h.start);
        let long: Vec<Behaviour> =
            (start..h.end).map(|i| Behaviour::raw(b.item[i], b.timestamp[i], b.play_time[i], b.duration[i])).collect();
        let short = long[long.len().saturating_sub(o.short_len)..].to_vec();
        let mut candidates = vec![b.item[last]];
        while candidates.len() < o.candidates {
            candidates.push((next() % n_items) as u32);
        }
        total_long += long.len();
        let req = ScoreRequest { request_time: t, long, short, candidates, debug: false };
        let body = serde_json::to_vec(&req)?;
        let mut bytes =
            format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())
                .into_bytes();
        bytes.extend_from_slice(&body);
        out.push(bytes);
    }
    if out.is_empty() {
        bail!("--data = {}: no user has a behaviour before their last one; nothing to send", o.data.display());
    }
    let mean = total_long as f64 / out.len() as f64;
    Ok((out, mean))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

pub fn cmd_loadtest(o: &LoadtestOpts) -> Result<()> {
    if o.concurrency.is_empty() {
        bail!("--concurrency: give at least one level, e.g. 1,8,64");
    }
    for (i, &c) in o.concurrency.iter().enumerate() {
        if c == 0 || c > 4096 {
            bail!("--concurrency[{i}] = {c}: must be between 1 and 4096");
        }
    }
    if !(o.seconds.is_finite() && o.seconds > 0.0 && o.seconds <= 3600.0) {
        bail!("--seconds = {}: must be more than 0 and at most 3600", o.seconds);
    }
    if o.candidates == 0 {
        bail!("--candidates = 0: must be at least 1");
    }
    if o.timeout_ms == 0 {
        bail!("--timeout-ms = 0: must be at least 1");
    }
    let timeout = Duration::from_millis(o.timeout_ms);
    let (addr, host, target) = parse_url(&o.url)?;

    // The server must answer before anything is measured.
    let mut conn = connect(addr, timeout).with_context(|| format!("--url = {:?}: cannot connect to {addr}", o.url))?;
    let mut body = Vec::new();
    let health = format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let (status, _) = roundtrip(&mut conn, health.as_bytes(), &mut body).with_context(|| format!("--url = {:?}: GET /health", o.url))?;
    if status != 200 {
        bail!("--url = {:?}: GET /health answered {status}: {}", o.url, String::from_utf8_lossy(&body));
    }
    drop(conn);
    let health: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    let (reqs, mean_long) = build_requests(o, &host, &target)?;
    let reqs = Arc::new(reqs);
    eprintln!(
        "loadtest: POST http://{host}{target}, {} distinct requests (mean long {:.0}, short <= {}, {} candidates), model version {}, backend {}",
        reqs.len(),
        mean_long,
        o.short_len,
        o.candidates,
        health["model_version"],
        health["backend"].as_str().unwrap_or("?")
    );

    let mut rows = Vec::new();
    for &c in &o.concurrency {
        eprintln!("  concurrency {c}: {} s ...", o.seconds);
        let barrier = Arc::new(Barrier::new(c + 1));
        let mut handles = Vec::with_capacity(c);
        for t in 0..c {
            let (reqs, barrier) = (reqs.clone(), barrier.clone());
            let first = t * reqs.len() / c;
            let seconds = o.seconds;
            let h = std::thread::Builder::new()
                .name(format!("loadtest-{t}"))
                .spawn(move || client(addr, &reqs, first, seconds, timeout, &barrier))
                .with_context(|| format!("start client thread {t}"))?;
            handles.push(h);
        }
        barrier.wait();
        let t0 = Instant::now();
        let mut all = ClientStats::default();
        for h in handles {
            let s = h.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
            all.latencies_us.extend(s.latencies_us);
            all.errors += s.errors;
            if all.first_error.is_none() {
                all.first_error = s.first_error;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        all.latencies_us.sort_unstable();
        let n = all.latencies_us.len();
        let row = json!({
            "concurrency": c,
            "requests": n,
            "errors": all.errors,
            "seconds": secs,
            "rps": n as f64 / secs,
            "p50_ms": percentile(&all.latencies_us, 0.50),
            "p99_ms": percentile(&all.latencies_us, 0.99),
            "max_ms": all.latencies_us.last().map_or(0.0, |&m| m as f64 / 1000.0),
            "candidates": o.candidates,
            "mean_long": mean_long,
        });
        if let Some(e) = &all.first_error {
            eprintln!("  concurrency {c}: {} errors; first: {e}", all.errors);
        }
        rows.push(row);
    }

    println!("{:>11} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9}", "concurrency", "requests", "errors", "req/s", "p50_ms", "p99_ms", "max_ms");
    for r in &rows {
        println!(
            "{:>11} {:>9} {:>7} {:>10.1} {:>9.2} {:>9.2} {:>9.2}",
            r["concurrency"].as_u64().unwrap_or(0),
            r["requests"].as_u64().unwrap_or(0),
            r["errors"].as_u64().unwrap_or(0),
            r["rps"].as_f64().unwrap_or(0.0),
            r["p50_ms"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(0.0),
            r["max_ms"].as_f64().unwrap_or(0.0)
        );
    }
    for r in &rows {
        println!("{r}");
    }
    if let Some(r) = rows.iter().find(|r| r["requests"] == 0) {
        bail!("concurrency {}: no request succeeded ({} errors)", r["concurrency"], r["errors"]);
    }
    Ok(())
}
