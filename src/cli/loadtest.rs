//! `twin loadtest`: replays users' histories from a dataset against a running `twin serve` at
//! several concurrency levels and reports p50/p99 latency and requests/s per level. Optionally
//! swaps the model through the admin listener every few seconds and reports p99 in a window
//! around each swap against p99 away from swaps.
//!
//! The client is hyper's (hyper_util's pooled client on tokio): keep-alive connections, one per
//! concurrent caller, TCP_NODELAY, and a timeout on every exchange.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use twin_engine::serve::{Behaviour, ScoreRequest};

/// Options of `twin loadtest`.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadtestOpts {
    /// The server, e.g. http://127.0.0.1:8080 (requests go to /score unless the URL has a path).
    #[arg(long)]
    pub url: String,
    /// Dataset whose users' histories become the requests.
    #[arg(long)]
    pub data: PathBuf,
    /// Concurrent callers per level, comma separated; each level runs for --seconds.
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
    /// Timeout of one exchange (connect, send, answer); a level never runs longer than
    /// --seconds plus this.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print only the JSON lines (one per level), not the table.
    #[arg(long)]
    pub json: bool,
    /// Swap the model every this many seconds during each level (needs --admin-url,
    /// --admin-token-file and --swap-files), and report p99 around swaps against p99 without.
    #[arg(long)]
    pub swap_every_s: Option<f64>,
    /// The server's admin listener, e.g. http://127.0.0.1:9090.
    #[arg(long)]
    pub admin_url: Option<String>,
    /// File holding the admin bearer token.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Model files in the server's model directory to swap to in turn, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub swap_files: Vec<String>,
    /// A request is "around a swap" if it overlaps the swap widened by this much on each side.
    #[arg(long, default_value_t = 500)]
    pub swap_window_ms: u64,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// `http://host:port[/path]` → (base `http://host:port`, request path).
fn parse_url(flag: &str, url: &str) -> Result<(String, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{flag} = {url:?}: expected http://HOST:PORT (plain HTTP)");
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        bail!("{flag} = {url:?}: no host");
    }
    let base = format!("http://{host}");
    base.parse::<http::Uri>().with_context(|| format!("{flag} = {url:?}"))?;
    Ok((base, path.to_string()))
}

fn client(timeout: Duration) -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(timeout));
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(conn)
}

/// One exchange, bounded by `timeout`: the status and the body.
async fn exchange(c: &HttpClient, req: http::Request<Full<Bytes>>, timeout: Duration) -> Result<(u16, Bytes), String> {
    let work = async {
        let resp = c.request(req).await.map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| format!("response body: {e}"))?.to_bytes();
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

fn post(uri: &str, body: Bytes, bearer: Option<&str>) -> Result<http::Request<Full<Bytes>>, String> {
    let mut b = http::Request::post(uri).header(http::header::CONTENT_TYPE, "application/json");
    if let Some(t) = bearer {
        b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Full::new(body)).map_err(|e| format!("building the request: {e}"))
}

/// What one caller saw: (start since the level began, latency) per success, in µs.
#[derive(Default)]
struct Seen {
    ok: Vec<(u64, u64)>,
    errors: u64,
    first_error: Option<String>,
}

impl Seen {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

/// Requests from the dataset: for each user with history, the behaviours before their last one
/// (the most recent `max_len` as `long`, the last `short_len` as `short`), at the time of that
/// last behaviour, with its item among the candidates. Also the mean long length.
fn build_requests(o: &LoadtestOpts) -> Result<(Vec<Bytes>, f64)> {
    let ds = super::load_data(&o.data)?;
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
        out.push(Bytes::from(serde_json::to_vec(&req)?));
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

/// The swap driver's settings: admin base URL, token, files to cycle through, period.
struct Swapper {
    uri: String,
    token: String,
    files: Vec<String>,
    every: Duration,
    window_us: u64,
}

fn swapper(o: &LoadtestOpts) -> Result<Option<Swapper>> {
    let Some(every) = o.swap_every_s else { return Ok(None) };
    if !(every.is_finite() && every > 0.0 && every <= 3600.0) {
        bail!("--swap-every-s = {every}: must be more than 0 and at most 3600");
    }
    let Some(url) = &o.admin_url else { bail!("--swap-every-s needs --admin-url (the server's admin listener)") };
    let Some(tf) = &o.admin_token_file else { bail!("--swap-every-s needs --admin-token-file") };
    if o.swap_files.is_empty() {
        bail!("--swap-every-s needs --swap-files (model files in the server's model directory)");
    }
    let (base, _) = parse_url("--admin-url", url)?;
    let token = std::fs::read_to_string(tf).with_context(|| format!("--admin-token-file = {}", tf.display()))?.trim().to_string();
    Ok(Some(Swapper {
        uri: format!("{base}/admin/swap"),
        token,
        files: o.swap_files.clone(),
        every: Duration::from_secs_f64(every),
        window_us: o.swap_window_ms.saturating_mul(1000),
    }))
}

/// Swap every `every` until `deadline`; each swap's (start, end) in µs since `t0`, and errors.
async fn drive_swaps(c: HttpClient, s: Arc<Swapper>, t0: Instant, deadline: Instant, first: usize) -> (Vec<(u64, u64)>, Vec<String>) {
    let (mut done, mut errors) = (Vec::new(), Vec::new());
    let mut k = first;
    loop {
        tokio::time::sleep(s.every).await;
        if Instant::now() >= deadline {
            break;
        }
        let file = &s.files[k % s.files.len()];
        k += 1;
        let start = t0.elapsed().as_micros() as u64;
        let body = Bytes::from(json!({ "file": file }).to_string());
        let r = match post(&s.uri, body, Some(&s.token)) {
            Ok(req) => exchange(&c, req, Duration::from_secs(120)).await,
            Err(e) => Err(e),
        };
        let end = t0.elapsed().as_micros() as u64;
        match r {
            Ok((200, _)) => done.push((start, end)),
            Ok((st, b)) => errors.push(format!("swap to {file:?}: HTTP {st}: {}", String::from_utf8_lossy(&b[..b.len().min(300)]))),
            Err(e) => errors.push(format!("swap to {file:?}: {e}")),
        }
    }
    (done, errors)
}

/// One caller: requests back to back until `deadline`.
async fn caller(
    c: HttpClient,
    uri: Arc<String>,
    reqs: Arc<Vec<Bytes>>,
    first: usize,
    t0: Instant,
    deadline: Instant,
    timeout: Duration,
) -> Seen {
    let mut seen = Seen::default();
    let mut i = first;
    while Instant::now() < deadline {
        let start = Instant::now();
        let r = match post(&uri, reqs[i % reqs.len()].clone(), None) {
            Ok(req) => exchange(&c, req, timeout).await,
            Err(e) => Err(e),
        };
        match r {
            Ok((200, _)) => seen.ok.push(((start - t0).as_micros() as u64, start.elapsed().as_micros() as u64)),
            Ok((st, b)) => seen.error(format!("HTTP {st}: {}", String::from_utf8_lossy(&b[..b.len().min(300)]))),
            Err(e) => {
                seen.error(e);
                // A refused connection would otherwise spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        i += 1;
    }
    seen
}

pub fn run(o: &LoadtestOpts) -> Result<()> {
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
    let (base, path) = parse_url("--url", &o.url)?;
    let target = if path.is_empty() || path == "/" { "/score".to_string() } else { path };
    let swaps = swapper(o)?.map(Arc::new);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start the async runtime")?;
    rt.block_on(drive(o, &base, &target, swaps))
}

async fn drive(o: &LoadtestOpts, base: &str, target: &str, swaps: Option<Arc<Swapper>>) -> Result<()> {
    let timeout = Duration::from_millis(o.timeout_ms);
    let c = client(timeout);

    // The server must answer before anything is measured.
    let health = http::Request::get(format!("{base}/health")).body(Full::new(Bytes::new())).context("--url")?;
    let (status, body) = exchange(&c, health, timeout).await.map_err(|e| anyhow::anyhow!("--url = {:?}: GET /health: {e}", o.url))?;
    if status != 200 {
        bail!("--url = {:?}: GET /health answered {status}: {}", o.url, String::from_utf8_lossy(&body));
    }
    let health: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    let (reqs, mean_long) = build_requests(o)?;
    let reqs = Arc::new(reqs);
    let uri = Arc::new(format!("{base}{target}"));
    eprintln!(
        "loadtest: POST {uri}, {} distinct requests (mean long {:.0}, short <= {}, {} candidates), model version {}, backend {}",
        reqs.len(),
        mean_long,
        o.short_len,
        o.candidates,
        health["model_version"],
        health["backend"].as_str().unwrap_or("?")
    );

    let mut rows = Vec::new();
    let mut swaps_so_far = 0;
    for &n in &o.concurrency {
        eprintln!("  concurrency {n}: {} s ...", o.seconds);
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(o.seconds);
        let callers: Vec<_> =
            (0..n).map(|t| tokio::spawn(caller(c.clone(), uri.clone(), reqs.clone(), t * reqs.len() / n, t0, deadline, timeout))).collect();
        let swapping = swaps.as_ref().map(|s| tokio::spawn(drive_swaps(c.clone(), s.clone(), t0, deadline, swaps_so_far)));
        let mut all = Seen::default();
        for h in callers {
            let s = h.await.context("a caller task failed")?;
            all.ok.extend(s.ok);
            all.errors += s.errors;
            if all.first_error.is_none() {
                all.first_error = s.first_error;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let mut lat: Vec<u64> = all.ok.iter().map(|&(_, l)| l).collect();
        lat.sort_unstable();
        let k = lat.len();
        let mut row = json!({
            "concurrency": n,
            "requests": k,
            "errors": all.errors,
            "seconds": secs,
            "rps": k as f64 / secs,
            "p50_ms": percentile(&lat, 0.50),
            "p99_ms": percentile(&lat, 0.99),
            "max_ms": lat.last().map_or(0.0, |&m| m as f64 / 1000.0),
            "candidates": o.candidates,
            "mean_long": mean_long,
        });
        if let (Some(h), Some(s)) = (swapping, &swaps) {
            let (done, errs) = h.await.context("the swap task failed")?;
            swaps_so_far += done.len() + errs.len();
            for e in errs.iter().take(3) {
                eprintln!("  concurrency {n}: {e}");
            }
            add_swap_figures(&mut row, &all.ok, &done, errs.len(), s.window_us);
        }
        if let Some(e) = &all.first_error {
            eprintln!("  concurrency {n}: {} errors; first: {e}", all.errors);
        }
        rows.push(row);
    }
    print_rows(&rows, o.json, swaps.is_some());
    if let Some(r) = rows.iter().find(|r| r["requests"] == 0) {
        bail!("concurrency {}: no request succeeded ({} errors)", r["concurrency"], r["errors"]);
    }
    Ok(())
}

/// p99 of the requests that overlap a swap (widened by the window) against the others.
fn add_swap_figures(row: &mut Value, ok: &[(u64, u64)], swaps: &[(u64, u64)], failed: usize, window_us: u64) {
    let near = |&(start, lat): &(u64, u64)| swaps.iter().any(|&(s, e)| start <= e + window_us && start + lat + window_us >= s);
    let (mut around, mut steady): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    for x in ok {
        if near(x) {
            around.push(x.1);
        } else {
            steady.push(x.1);
        }
    }
    around.sort_unstable();
    steady.sort_unstable();
    let swap_ms: Vec<f64> = swaps.iter().map(|&(s, e)| (e - s) as f64 / 1000.0).collect();
    row["swaps"] = json!(swaps.len());
    row["swaps_failed"] = json!(failed);
    row["swap_ms_mean"] = json!(if swap_ms.is_empty() { 0.0 } else { swap_ms.iter().sum::<f64>() / swap_ms.len() as f64 });
    row["swap_window_ms"] = json!(window_us as f64 / 1000.0);
    row["requests_around_swaps"] = json!(around.len());
    row["p99_around_swaps_ms"] = json!(percentile(&around, 0.99));
    row["p99_steady_ms"] = json!(percentile(&steady, 0.99));
}

fn print_rows(rows: &[Value], json_only: bool, swapped: bool) {
    if !json_only {
        let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or(0.0);
        let u = |r: &Value, k: &str| r[k].as_u64().unwrap_or(0);
        println!("{:>11} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9}", "concurrency", "requests", "errors", "req/s", "p50_ms", "p99_ms", "max_ms");
        for r in rows {
            println!(
                "{:>11} {:>9} {:>7} {:>10.1} {:>9.2} {:>9.2} {:>9.2}",
                u(r, "concurrency"),
                u(r, "requests"),
                u(r, "errors"),
                f(r, "rps"),
                f(r, "p50_ms"),
                f(r, "p99_ms"),
                f(r, "max_ms")
            );
        }
        if swapped {
            println!(
                "{:>11} {:>9} {:>9} {:>14} {:>11} {:>13}",
                "concurrency", "swaps", "swap_ms", "around_swaps", "p99_around", "p99_steady"
            );
            for r in rows {
                println!(
                    "{:>11} {:>9} {:>9.1} {:>14} {:>11.2} {:>13.2}",
                    u(r, "concurrency"),
                    u(r, "swaps"),
                    f(r, "swap_ms_mean"),
                    u(r, "requests_around_swaps"),
                    f(r, "p99_around_swaps_ms"),
                    f(r, "p99_steady_ms")
                );
            }
        }
    }
    for r in rows {
        println!("{r}");
    }
}
