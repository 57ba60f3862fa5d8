//! `twin serve` over real HTTP: routes, error statuses and messages, parity with the library
//! `Engine`, concurrent good and bad requests, hot swap, and `twin loadtest` against it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use twin_engine::backend::BackendChoice;
use twin_engine::data::Dataset;
use twin_engine::serve::{Behaviour, Engine, EngineConfig, ScoreRequest};

const BIN: &str = env!("CARGO_BIN_EXE_twin");
const MAX_BODY: usize = 200_000;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn twin(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("NO_COLOR", "1").output().expect("run twin")
}

fn ok(args: &[&str]) -> String {
    let o = twin(args);
    assert!(o.status.success(), "twin {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The server child; killed when dropped, so a failing assertion never leaves it running.
struct Server {
    child: Child,
    addr: String,
    admin: Option<String>,
    grpc: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TOKEN: &str = "test-token-0123456789abcdef";

/// `twin serve` on the CPU with `extra` flags; the start-up lines give the addresses.
fn start_server_with(model: &Path, extra: &[&str]) -> Server {
    let child = Command::new(BIN)
        .args(["serve", "--model", s(model), "--addr", "127.0.0.1:0", "--backend", "cpu", "--threads", "8"])
        .args(["--max-body-bytes", &MAX_BODY.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start twin serve");
    let mut server = Server { child, addr: String::new(), admin: None, grpc: None };
    let stdout = server.child.stdout.take().unwrap();
    let wants = 1 + extra.iter().filter(|a| **a == "--admin-addr" || **a == "--grpc-addr").count();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        for _ in 0..wants {
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
        }
        // Keep the pipe open and drained for as long as the server lives.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let line = rx.recv_timeout(Duration::from_secs(120)).expect("twin serve printed no line in 120 s");
    let rest = line.strip_prefix("listening on http://").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(line.contains("model version 1") && line.contains("backend cpu"), "{line:?}");
    server.addr = rest.split_whitespace().next().unwrap().to_string();
    assert!(!server.addr.ends_with(":0"), "the real port is printed: {line:?}");
    for _ in 1..wants {
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("a listener line");
        if let Some(rest) = line.strip_prefix("admin on http://") {
            server.admin = Some(rest.split_whitespace().next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("grpc on ") {
            server.grpc = Some(rest.split_whitespace().next().unwrap().to_string());
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    server
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    json: Value,
}

fn read_response(r: &mut impl BufRead) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or_else(|| panic!("status line {line:?}"));
    let mut headers = Vec::new();
    let mut len = None;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        if k == "content-length" {
            len = Some(v.parse::<usize>().unwrap());
        }
        headers.push((k, v));
    }
    let mut body = vec![0u8; len.expect("responses carry Content-Length")];
    r.read_exact(&mut body).unwrap();
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    Resp { status, headers, json }
}

/// One request on its own connection.
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Resp {
    http_with(addr, method, path, "", body)
}

/// One request with extra header lines (each ending in \r\n).
fn http_with(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> Resp {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(body).unwrap();
    read_response(&mut BufReader::new(c))
}

/// The body of a GET, as text (for /metrics).
fn raw_get(addr: &str, path: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = String::new();
    std::io::Read::read_to_string(&mut c, &mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    all.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

/// POST to the admin listener with the test token.
fn admin(addr: &str, path: &str, v: &Value) -> Resp {
    http_with(addr, "POST", path, &format!("Authorization: Bearer {TOKEN}\r\n"), &serde_json::to_vec(v).unwrap())
}

fn post(addr: &str, path: &str, v: &Value) -> Resp {
    http(addr, "POST", path, &serde_json::to_vec(v).unwrap())
}

fn error_of(r: &Resp) -> String {
    r.json["error"].as_str().unwrap_or_else(|| panic!("no error field in {:?}", r.json)).to_string()
}

/// Requests like `twin loadtest` builds: each user's history before their last behaviour.
fn requests(ds: &Dataset, n_cands: u32) -> Vec<ScoreRequest> {
    let b = &ds.behaviours;
    let mut out = Vec::new();
    for u in 0..ds.n_users() {
        let r = ds.user_range(u);
        let t = b.timestamp[r.end - 1];
        let h = ds.history_before(u, t);
        let start = h.end.saturating_sub(300).max(h.start);
        let long: Vec<Behaviour> =
            (start..h.end).map(|i| Behaviour::raw(b.item[i], b.timestamp[i], b.play_time[i], b.duration[i])).collect();
        let short = long[long.len().saturating_sub(50)..].to_vec();
        let candidates = (0..n_cands).map(|c| (c * 97 + u as u32 * 13) % ds.items.len() as u32).collect();
        out.push(ScoreRequest { request_time: t, long, short, candidates, debug: false });
    }
    out
}

fn library_ctr(engine: &Engine, req: &ScoreRequest) -> Vec<f32> {
    engine.score(req).unwrap().ctr
}

fn assert_ctr(got: &Value, want: &[f32]) {
    let got: Vec<f64> =
        got.as_array().unwrap_or_else(|| panic!("ctr is not an array: {got}")).iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - *w as f64).abs() <= 1e-6, "ctr[{i}]: server {g} vs library {w}");
    }
}

#[test]
fn serve_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (d, m1, m2, bad) = (dir.path().join("d.twd"), dir.path().join("m1.twm"), dir.path().join("m2.twm"), dir.path().join("bad.twm"));
    ok(&["gen", "--out", s(&d), "--users", "20", "--items", "2000", "--max-len", "3000"]);
    ok(&["init", "--data", s(&d), "--out", s(&m1), "--seed", "1"]);
    ok(&["init", "--data", s(&d), "--out", s(&m2), "--seed", "2"]);
    let mut bytes = std::fs::read(&m1).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();

    let ds = Dataset::load(&d).unwrap();
    let reqs = requests(&ds, 30);
    let cfg = EngineConfig { backend: BackendChoice::Cpu, batching: false, ..EngineConfig::default() };
    let lib1 = Engine::open(&m1, cfg.clone()).unwrap();
    let want1: Vec<Vec<f32>> = reqs.iter().map(|r| library_ctr(&lib1, r)).collect();

    let tok = dir.path().join("token");
    std::fs::write(&tok, format!("{TOKEN}\n")).unwrap();
    let server = start_server_with(&m1, &["--admin-addr", "127.0.0.1:0", "--admin-token-file", s(&tok)]);
    let addr = server.addr.clone();

    // Health.
    let h = http(&addr, "GET", "/health", b"");
    assert_eq!(h.status, 200, "{:?}", h.json);
    assert_eq!(h.json["status"], "ok");
    assert_eq!(h.json["model_version"], 1);
    assert_eq!(h.json["model"], s(&m1));
    assert!(h.json["backend"].as_str().unwrap().starts_with("cpu"), "{:?}", h.json);
    assert!(h.headers.iter().any(|(k, v)| k == "content-type" && v == "application/json"));

    // A valid request scores exactly like the library.
    let r = post(&addr, "/score", &serde_json::to_value(&reqs[0]).unwrap());
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["model_version"], 1);
    assert_ctr(&r.json["ctr"], &want1[0]);
    assert!(r.json.get("debug").is_none());
    let mut dbg = reqs[1].clone();
    dbg.debug = true;
    let r = post(&addr, "/score", &serde_json::to_value(&dbg).unwrap());
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_ctr(&r.json["ctr"], &want1[1]);
    assert_eq!(r.json["debug"].as_array().unwrap().len(), dbg.candidates.len());

    // Bad input: 400 naming the field and the value; the model version is always there.
    let malformed = http(&addr, "POST", "/score", b"{\"request_time\": 1700000000, \"candidates\": [1, 2,");
    assert_eq!(malformed.status, 400);
    assert!(error_of(&malformed).contains("malformed JSON") && error_of(&malformed).contains("line 1"), "{:?}", malformed.json);
    assert_eq!(malformed.json["model_version"], 1);
    let mut unknown = reqs[0].clone();
    unknown.candidates[1] = 99_999_999;
    let r = post(&addr, "/score", &serde_json::to_value(&unknown).unwrap());
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("candidates") && error_of(&r).contains("99999999"), "{:?}", r.json);
    for (body, needles) in [
        (json!({"candidates": [1]}), &["request_time", "missing"][..]),
        (
            json!({"request_time": 5, "long": [{"item": 1, "timestamp": 1, "play_time": null, "completion": 0.5}], "candidates": [1]}),
            &["long[0].play_time", "null"][..],
        ),
        (
            json!({"request_time": 5, "short": [{"item": "7", "timestamp": 1, "play_time": 1.0, "completion": 0.5}], "candidates": [1]}),
            &["short[0].item", "\"7\""][..],
        ),
        (json!({"request_time": 5, "candidates": [1, -3]}), &["candidates[1]", "-3"][..]),
        (json!({"request_time": 5, "candidates": []}), &["candidates", "empty"][..]),
        (
            json!({"request_time": 5, "long": [{"item": 5000, "timestamp": 1, "play_time": 1.0, "completion": 0.5}], "candidates": [1]}),
            &["long[].item", "5000"][..],
        ),
        (json!([1, 2]), &["expected a JSON object"][..]),
        (
            json!({"request_time": 5, "long": [{"item": 1, "timestamp": 1, "play_time": 1.0, "completion": 1.5}], "candidates": [1]}),
            &["long[].completion[0] = 1.5", "[0, 1]"][..],
        ),
        (
            json!({"request_time": 5, "short": [{"item": 1, "timestamp": 1, "play_time": -3.0, "completion": 0.5}], "candidates": [1]}),
            &["short[].play_time[0] = -3", "negative"][..],
        ),
    ] {
        let r = post(&addr, "/score", &body);
        assert_eq!(r.status, 400, "{body} -> {:?}", r.json);
        for n in needles {
            assert!(error_of(&r).contains(n), "{n:?} not in {:?} (request {body})", r.json);
        }
    }
    // JSON cannot carry NaN; the literal is malformed JSON, and an overflowing number is refused.
    let r = http(
        &addr,
        "POST",
        "/score",
        b"{\"request_time\": 5, \"long\": [{\"item\": 1, \"timestamp\": 1, \"play_time\": NaN, \"completion\": 0.5}], \"candidates\": [1]}",
    );
    assert_eq!(r.status, 400, "{:?}", r.json);
    let r = http(&addr, "POST", "/score", b"{\"request_time\": 5, \"long\": [{\"item\": 1, \"timestamp\": 1, \"play_time\": 1e39, \"completion\": 0.5}], \"candidates\": [1]}");
    assert_eq!(r.status, 400, "{:?}", r.json);
    assert!(error_of(&r).contains("play_time"), "{:?}", r.json);

    // Routes and methods.
    let r = http(&addr, "GET", "/nope", b"");
    assert_eq!((r.status, r.json["model_version"].as_u64()), (404, Some(1)));
    let r = http(&addr, "GET", "/score", b"");
    assert_eq!(r.status, 405);
    assert!(r.headers.iter().any(|(k, v)| k == "allow" && v == "POST"));
    let r = http(&addr, "DELETE", "/health", b"");
    assert_eq!(r.status, 405);

    // Oversize bodies: 413, whether the client sends it all or only declares it.
    let mut big = b"{\"request_time\": 5, \"candidates\": [".to_vec();
    while big.len() <= MAX_BODY + 10 {
        big.extend_from_slice(b"1,");
    }
    big.extend_from_slice(b"1]}");
    let r = http(&addr, "POST", "/score", &big);
    assert_eq!(r.status, 413, "{:?}", r.json);
    assert!(error_of(&r).contains("max-body-bytes"), "{:?}", r.json);
    for declared in [MAX_BODY + 1, 1 << 40] {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(c, "POST /score HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {declared}\r\n\r\n").unwrap();
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 413"), "declared {declared}: {line:?}");
    }
    assert_eq!(http(&addr, "GET", "/health", b"").status, 200, "the server survives a forged Content-Length");

    // 16 threads: valid requests all succeed with the library's CTRs while bad ones interleave.
    let reqs = Arc::new(reqs);
    let want1 = Arc::new(want1);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (addr, reqs, want) = (addr.clone(), reqs.clone(), want1.clone());
            std::thread::spawn(move || {
                for k in 0..6 {
                    let i = (t * 7 + k) % reqs.len();
                    let r = post(&addr, "/score", &serde_json::to_value(&reqs[i]).unwrap());
                    assert_eq!(r.status, 200, "thread {t} request {i}: {:?}", r.json);
                    assert_ctr(&r.json["ctr"], &want[i]);
                    let bad: &[u8] = match (t + k) % 3 {
                        0 => b"{not json",
                        1 => b"{\"request_time\": 1, \"candidates\": [4000000000]}",
                        _ => b"{\"request_time\": 1, \"candidates\": [1], \"long\": [{\"item\": 1}]}",
                    };
                    let r = http(&addr, "POST", "/score", bad);
                    assert_eq!(r.status, 400, "thread {t}: {:?}", r.json);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }

    // Hot swap, on the admin listener only: a corrupt file is refused and version 1 keeps
    // serving; a good one becomes 2.
    let adm = server.admin.clone().expect("admin listener");
    let r = post(&addr, "/admin/swap", &json!({"file": "m2.twm"}));
    assert_eq!(r.status, 404, "no admin routes on the main listener: {:?}", r.json);
    assert!(error_of(&r).contains("admin listener"), "{:?}", r.json);
    let r = admin(&adm, "/admin/swap", &json!({"file": "bad.twm"}));
    assert_eq!(r.status, 400, "{:?}", r.json);
    assert!(error_of(&r).contains("bad.twm") && error_of(&r).contains("keeps serving"), "{:?}", r.json);
    assert_eq!(r.json["model_version"], 1);
    let r = admin(&adm, "/admin/swap", &json!({"nothing": 1}));
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("file"), "{:?}", r.json);
    let r = post(&addr, "/score", &serde_json::to_value(&reqs[2]).unwrap());
    assert_eq!((r.status, r.json["model_version"].as_u64()), (200, Some(1)));
    assert_ctr(&r.json["ctr"], &want1[2]);

    let r = admin(&adm, "/admin/swap", &json!({"file": "m2.twm"}));
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["model_version"], 2);
    let lib2 = Engine::open(&m2, cfg).unwrap();
    let want2 = library_ctr(&lib2, &reqs[2]);
    assert_ne!(want2, want1[2], "the two models differ");
    let r = post(&addr, "/score", &serde_json::to_value(&reqs[2]).unwrap());
    assert_eq!((r.status, r.json["model_version"].as_u64()), (200, Some(2)));
    assert_ctr(&r.json["ctr"], &want2);
    let h = http(&addr, "GET", "/health", b"");
    let m2_canon = m2.canonicalize().unwrap();
    assert_eq!((h.json["model_version"].as_u64(), h.json["model"].as_str()), (Some(2), Some(s(&m2_canon))));
    let r = http(&addr, "POST", "/score", b"{");
    assert_eq!((r.status, r.json["model_version"].as_u64()), (400, Some(2)));

    // Readiness and metrics.
    let r = http(&addr, "GET", "/ready", b"");
    assert_eq!((r.status, r.json["ready"].as_bool()), (200, Some(true)), "{:?}", r.json);
    let m = raw_get(&addr, "/metrics");
    for needle in [
        "twin_request_duration_seconds_bucket{api=\"http\",model_version=\"1\"",
        "twin_request_duration_seconds_count{api=\"http\",model_version=\"2\"}",
        "twin_errors_total{kind=\"bad_request\"}",
        "twin_errors_total{kind=\"too_large\"}",
        "twin_swaps_total{result=\"ok\"} 1",
        "twin_swaps_total{result=\"refused\"} 1",
        "twin_batch_requests_count",
        "twin_queue_depth 0",
        "twin_model_version 2",
    ] {
        assert!(m.contains(needle), "{needle:?} not in /metrics:\n{m}");
    }

    // The load test against it: bounded in time, a table and one JSON line per level.
    let t0 = Instant::now();
    let url = format!("http://{addr}");
    let out = ok(&[
        "loadtest",
        "--url",
        &url,
        "--data",
        s(&d),
        "--concurrency",
        "1,8",
        "--seconds",
        "1",
        "--candidates",
        "20",
        "--max-len",
        "300",
    ]);
    assert!(t0.elapsed() < Duration::from_secs(60), "loadtest took {:?}", t0.elapsed());
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("concurrency") && lines[0].contains("req/s") && lines[0].contains("p99_ms"), "{out}");
    let rows: Vec<Value> = lines.iter().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    for (row, c) in rows.iter().zip([1, 8]) {
        assert_eq!(row["concurrency"], c, "{out}");
        assert!(row["requests"].as_u64().unwrap() > 0, "{out}");
        assert_eq!(row["errors"], 0, "{out}");
        assert!(row["p50_ms"].as_f64().unwrap() <= row["p99_ms"].as_f64().unwrap());
    }
    // Loadtest errors name the flag.
    let o = twin(&["loadtest", "--url", "ftp://x", "--data", s(&d)]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--url"));
    drop(server);
}

#[test]
fn serve_refuses_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.twm");
    let o = twin(&["serve", "--model", s(&missing), "--backend", "cpu", "--addr", "127.0.0.1:0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.twm"));
    let o = twin(&["serve", "--model", s(&missing), "--backend", "tpu"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("tpu"));
    let o = twin(&["serve", "--model", s(&missing), "--threads", "0"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--threads"));
    // A wait of 2^64 - 1 µs would leave a lone request unanswered for ever: refused at start.
    let (d, m) = (dir.path().join("d.twd"), dir.path().join("m.twm"));
    ok(&["gen", "--out", s(&d), "--users", "5", "--items", "200", "--max-len", "100"]);
    ok(&["init", "--data", s(&d), "--out", s(&m)]);
    let o = twin(&["serve", "--model", s(&m), "--backend", "cpu", "--addr", "127.0.0.1:0", "--max-wait-us", "18446744073709551615"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("max_wait_us") && err.contains("exceeds the limit"), "{err}");
}

/// The admin listener: a bearer token, plain file names from the model directory, regular files
/// only (a FIFO must not block later swaps), and errors that never quote the file.
#[test]
fn admin_swaps_are_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let (d, m1, m2) = (dir.path().join("d.twd"), models.join("m1.twm"), models.join("m2.twm"));
    ok(&["gen", "--out", s(&d), "--users", "5", "--items", "300", "--max-len", "200"]);
    ok(&["init", "--data", s(&d), "--out", s(&m1), "--seed", "1"]);
    ok(&["init", "--data", s(&d), "--out", s(&m2), "--seed", "2"]);
    // Outside the model directory: a real model, reachable only by a path.
    let outside = dir.path().join("outside.twm");
    std::fs::copy(&m2, &outside).unwrap();
    // A private non-model file inside it, a FIFO, a symlink and a directory.
    let secret = "SECRET-7f3a9c-do-not-echo";
    std::fs::write(models.join("private.twm"), format!("{secret} and more private text\n")).unwrap();
    let fifo = models.join("pipe.twm");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::os::unix::fs::symlink(&outside, models.join("link.twm")).unwrap();
    std::fs::create_dir(models.join("sub.twm")).unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, TOKEN).unwrap();

    // The admin listener refuses to start without a token, or with a short one.
    let o = twin(&["serve", "--model", s(&m1), "--backend", "cpu", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--admin-token-file"), "{o:?}");
    let short = dir.path().join("short");
    std::fs::write(&short, "abc").unwrap();
    let o = twin(&[
        "serve",
        "--model",
        s(&m1),
        "--backend",
        "cpu",
        "--addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--admin-token-file",
        s(&short),
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("at least 16"), "{o:?}");

    let server = start_server_with(&m1, &["--admin-addr", "127.0.0.1:0", "--admin-token-file", s(&tok), "--model-dir", s(&models)]);
    let adm = server.admin.clone().unwrap();
    let body = serde_json::to_vec(&json!({"file": "m2.twm"})).unwrap();

    // 401 without the token, with another scheme, with a wrong token; nothing swapped.
    for headers in ["", "Authorization: Basic dXNlcjpwYXNz\r\n", "Authorization: Bearer not-the-token-at-all-000\r\n"] {
        let r = http_with(&adm, "POST", "/admin/swap", headers, &body);
        assert_eq!(r.status, 401, "{headers:?}: {:?}", r.json);
        assert!(r.headers.iter().any(|(k, _)| k == "www-authenticate"), "{:?}", r.headers);
        assert!(!error_of(&r).contains(TOKEN));
    }
    let r = http_with(&adm, "GET", "/admin/other", "", b"");
    assert_eq!(r.status, 401, "unauthenticated clients learn no routes: {:?}", r.json);

    // Names that are paths are refused before anything is opened.
    for name in ["../outside.twm", s(&outside), "/etc/passwd", "..", "a/../m2.twm", ""] {
        let r = admin(&adm, "/admin/swap", &json!({ "file": name }));
        assert_eq!(r.status, 400, "{name:?}: {:?}", r.json);
        assert!(error_of(&r).contains("plain file name"), "{name:?}: {:?}", r.json);
    }
    // Not regular files: refused at once (the FIFO has no writer; opening it must not wait).
    let t0 = Instant::now();
    for (name, needle) in [("pipe.twm", "not a regular file"), ("sub.twm", "not a regular file"), ("link.twm", "symbolic link")] {
        let r = admin(&adm, "/admin/swap", &json!({ "file": name }));
        assert_eq!(r.status, 400, "{name}: {:?}", r.json);
        assert!(error_of(&r).contains(needle), "{name}: {:?}", r.json);
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "refusals took {:?}", t0.elapsed());
    let r = admin(&adm, "/admin/swap", &json!({"file": "missing.twm"}));
    assert_eq!(r.status, 404, "{:?}", r.json);
    // A non-model file: the kind of defect, never its bytes.
    let r = admin(&adm, "/admin/swap", &json!({"file": "private.twm"}));
    assert_eq!(r.status, 400, "{:?}", r.json);
    let raw = serde_json::to_string(&r.json).unwrap();
    assert!(!raw.contains("SECRET") && !raw.contains("private text"), "the file's bytes came back: {raw}");
    assert!(error_of(&r).contains("private.twm") && error_of(&r).contains("not a model file"), "{raw}");

    // After all that (the FIFO included), a good swap goes through at once.
    let t0 = Instant::now();
    let r = admin(&adm, "/admin/swap", &json!({"file": "m2.twm"}));
    assert_eq!((r.status, r.json["model_version"].as_u64()), (200, Some(2)), "{:?}", r.json);
    assert!(t0.elapsed() < Duration::from_secs(30));
    let h = http(&server.addr, "GET", "/health", b"");
    assert_eq!(h.json["model_version"], 2);

    // twin loadtest swapping every 0.3 s through the admin listener reports p99 around swaps.
    let out = ok(&[
        "loadtest",
        "--url",
        &format!("http://{}", server.addr),
        "--data",
        s(&d),
        "--concurrency",
        "4",
        "--seconds",
        "1.5",
        "--candidates",
        "20",
        "--max-len",
        "100",
        "--swap-every-s",
        "0.3",
        "--admin-url",
        &format!("http://{adm}"),
        "--admin-token-file",
        s(&tok),
        "--swap-files",
        "m1.twm,m2.twm",
        "--json",
    ]);
    let rows: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in {out}"))).collect();
    assert_eq!(rows.len(), 1, "{out}");
    let row = &rows[0];
    assert_eq!(row["errors"], 0, "{out}");
    assert!(row["swaps"].as_u64().unwrap() >= 1, "{out}");
    assert_eq!(row["swaps_failed"], 0, "{out}");
    assert!(row["requests_around_swaps"].as_u64().unwrap() > 0, "{out}");
    assert!(row["p99_around_swaps_ms"].as_f64().unwrap() > 0.0 && row["p99_steady_ms"].as_f64().is_some(), "{out}");
    drop(server);
}

/// gRPC beside HTTP: the same scores, INVALID_ARGUMENT naming the field, the model version in
/// the metadata.
#[test]
fn grpc_scores_like_http() {
    use twin_engine::serve::http::grpc::{pb, SCORE_PATH};
    let dir = tempfile::tempdir().unwrap();
    let (d, m1) = (dir.path().join("d.twd"), dir.path().join("m1.twm"));
    ok(&["gen", "--out", s(&d), "--users", "6", "--items", "500", "--max-len", "300"]);
    ok(&["init", "--data", s(&d), "--out", s(&m1), "--seed", "1"]);
    let ds = Dataset::load(&d).unwrap();
    let reqs = requests(&ds, 12);
    let server = start_server_with(&m1, &["--grpc-addr", "127.0.0.1:0", "--idle-timeout-ms", "1000"]);
    let grpc = server.grpc.clone().unwrap();
    // A connection that never says a word (no HTTP/2 preface) is closed after the idle timeout.
    let mut silent = TcpStream::connect(&grpc).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    let mut sink = Vec::new();
    // Returns at the server's close (EOF or reset), or after the 10 s read timeout.
    let _ = std::io::Read::read_to_end(&mut silent, &mut sink);
    assert!(t0.elapsed() < Duration::from_secs(5), "a silent gRPC connection lived {:?}", t0.elapsed());
    let to_pb = |r: &ScoreRequest| pb::ScoreRequest {
        request_time: r.request_time,
        long: r
            .long
            .iter()
            .map(|b| pb::Behaviour { item: b.item, timestamp: b.timestamp, play_time: b.play_time, completion: b.completion, size: None })
            .collect(),
        short: r
            .short
            .iter()
            .map(|b| pb::Behaviour {
                item: b.item,
                timestamp: b.timestamp,
                play_time: b.play_time,
                completion: b.completion,
                size: Some(1),
            })
            .collect(),
        candidates: r.candidates.clone(),
        debug: r.debug,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http::<tonic::body::Body>();
        let mut g = tonic::client::Grpc::with_origin(client, format!("http://{grpc}").parse().unwrap());
        let path = http::uri::PathAndQuery::from_static(SCORE_PATH);
        for r in &reqs[..3] {
            g.ready().await.unwrap();
            let got = g
                .unary(
                    tonic::Request::new(to_pb(r)),
                    path.clone(),
                    tonic_prost::ProstCodec::<pb::ScoreRequest, pb::ScoreResponse>::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("gRPC Score failed: {e}"));
            assert_eq!(got.metadata().get("x-model-version").and_then(|v| v.to_str().ok()), Some("1"));
            let got = got.into_inner();
            assert_eq!(got.model_version, 1);
            let via_http = post(&server.addr, "/score", &serde_json::to_value(r).unwrap());
            assert_eq!(via_http.status, 200);
            assert_ctr(&via_http.json["ctr"], &got.ctr);
        }
        let mut bad = to_pb(&reqs[0]);
        bad.candidates[0] = 99_999;
        g.ready().await.unwrap();
        let e = g
            .unary(tonic::Request::new(bad), path.clone(), tonic_prost::ProstCodec::<pb::ScoreRequest, pb::ScoreResponse>::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().contains("candidates[0] = 99999"), "{e}");
        assert_eq!(e.metadata().get("x-model-version").and_then(|v| v.to_str().ok()), Some("1"));
    });
    drop(server);
}

/// The hand-written prost messages carry exactly the field numbers and wire types of
/// proto/twin.proto.
#[test]
fn grpc_messages_match_the_proto_file() {
    use prost::Message;
    use std::collections::BTreeMap;
    use twin_engine::serve::http::grpc::pb;
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/twin.proto")).unwrap();
    // message name -> field number -> expected wire type (2 for messages and packed repeats).
    let mut fields: BTreeMap<String, BTreeMap<u32, u32>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines().map(|l| l.split("//").next().unwrap().trim()) {
        if let Some(name) = line.strip_prefix("message ") {
            current = Some(name.trim_end_matches('{').trim().to_string());
        } else if line == "}" {
            current = None;
        } else if let (Some(m), Some((decl, num))) = (&current, line.trim_end_matches(';').split_once('=')) {
            let words: Vec<&str> = decl.split_whitespace().collect();
            let repeated = words[0] == "repeated";
            let ty = if repeated || words[0] == "optional" { words[1] } else { words[0] };
            let wire = match ty {
                _ if repeated => 2,
                "float" => 5,
                "uint32" | "int64" | "uint64" | "bool" => 0,
                _ => 2,
            };
            fields.entry(m.clone()).or_default().insert(num.trim().parse().unwrap(), wire);
        }
    }
    // Field numbers and wire types as encoded (every field set to a non-default value).
    fn tags(buf: &[u8]) -> BTreeMap<u32, u32> {
        let mut out = BTreeMap::new();
        let mut i = 0;
        let varint = |i: &mut usize| {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let b = buf[*i];
                *i += 1;
                v |= ((b & 0x7f) as u64) << shift;
                if b < 0x80 {
                    return v;
                }
                shift += 7;
            }
        };
        while i < buf.len() {
            let key = varint(&mut i);
            let (num, wire) = ((key >> 3) as u32, (key & 7) as u32);
            match wire {
                0 => {
                    varint(&mut i);
                }
                5 => i += 4,
                1 => i += 8,
                2 => {
                    let n = varint(&mut i) as usize;
                    i += n;
                }
                w => panic!("wire type {w}"),
            }
            out.insert(num, wire);
        }
        out
    }
    let b = pb::Behaviour { item: 3, timestamp: 4, play_time: 1.5, completion: 0.5, size: Some(2) };
    let dbg = pb::CandidateDebug { topk_positions: vec![1, 2], topk_scores: vec![0.5], attention: vec![0.25] };
    let req = pb::ScoreRequest { request_time: 9, long: vec![b.clone()], short: vec![b.clone()], candidates: vec![1, 2], debug: true };
    let resp = pb::ScoreResponse { ctr: vec![0.5], model_version: 7, debug: vec![dbg.clone()] };
    for (name, bytes) in [
        ("Behaviour", b.encode_to_vec()),
        ("ScoreRequest", req.encode_to_vec()),
        ("CandidateDebug", dbg.encode_to_vec()),
        ("ScoreResponse", resp.encode_to_vec()),
    ] {
        assert_eq!(tags(&bytes), fields[name], "message {name}: encoded fields differ from proto/twin.proto");
    }
    assert_eq!(fields.len(), 4, "{fields:?}");
}

/// A request the engine does not answer in time gets a 503 naming --request-timeout-ms (here a
/// lone request waits 3 s for batch company); limits that would disable a protection are
/// refused at start, naming the flag.
#[test]
fn request_timeout_and_limit_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (d, m) = (dir.path().join("d.twd"), dir.path().join("m.twm"));
    ok(&["gen", "--out", s(&d), "--users", "5", "--items", "200", "--max-len", "100"]);
    ok(&["init", "--data", s(&d), "--out", s(&m)]);
    for (flag, value, needle) in [
        ("--header-timeout-ms", "0", "--header-timeout-ms = 0: must be at least 1"),
        ("--max-connections", "0", "--max-connections = 0"),
        ("--max-header-bytes", "100", "--max-header-bytes = 100: must be at least 8192"),
        ("--idle-timeout-ms", "99999999999", "--idle-timeout-ms = 99999999999 exceeds the limit"),
    ] {
        let o = twin(&["serve", "--model", s(&m), "--backend", "cpu", "--addr", "127.0.0.1:0", flag, value]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(needle), "{flag} {value}: {err}");
    }
    let server = start_server_with(&m, &["--max-wait-us", "3000000", "--request-timeout-ms", "300"]);
    let t0 = Instant::now();
    let r = post(&server.addr, "/score", &json!({"request_time": 5, "candidates": [1, 2]}));
    assert_eq!(r.status, 503, "{:?}", r.json);
    assert!(error_of(&r).contains("--request-timeout-ms"), "{:?}", r.json);
    assert!(t0.elapsed() < Duration::from_secs(3), "answered after {:?}", t0.elapsed());
    drop(server);
}
