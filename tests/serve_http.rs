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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(model: &Path) -> Server {
    let child = Command::new(BIN)
        .args(["serve", "--model", s(model), "--addr", "127.0.0.1:0", "--backend", "cpu", "--threads", "8"])
        .args(["--max-body-bytes", &MAX_BODY.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start twin serve");
    let mut server = Server { child, addr: String::new() };
    let stdout = server.child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        // Keep the pipe open and drained for as long as the server lives.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let line = rx.recv_timeout(Duration::from_secs(120)).expect("twin serve printed no line in 120 s");
    let rest = line.strip_prefix("listening on http://").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(line.contains("model version 1") && line.contains("backend cpu"), "{line:?}");
    server.addr = rest.split_whitespace().next().unwrap().to_string();
    assert!(!server.addr.ends_with(":0"), "the real port is printed: {line:?}");
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
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(body).unwrap();
    read_response(&mut BufReader::new(c))
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

    let server = start_server(&m1);
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

    // Hot swap: a corrupt file is refused and version 1 keeps serving; a good one becomes 2.
    let r = post(&addr, "/admin/swap", &json!({"path": s(&bad)}));
    assert!(r.status >= 400, "{:?}", r.json);
    assert!(error_of(&r).contains("bad.twm"), "{:?}", r.json);
    assert_eq!(r.json["model_version"], 1);
    let r = post(&addr, "/admin/swap", &json!({"nothing": 1}));
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("path"), "{:?}", r.json);
    let r = post(&addr, "/score", &serde_json::to_value(&reqs[2]).unwrap());
    assert_eq!((r.status, r.json["model_version"].as_u64()), (200, Some(1)));
    assert_ctr(&r.json["ctr"], &want1[2]);

    let r = post(&addr, "/admin/swap", &json!({"path": s(&m2)}));
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["model_version"], 2);
    let lib2 = Engine::open(&m2, cfg).unwrap();
    let want2 = library_ctr(&lib2, &reqs[2]);
    assert_ne!(want2, want1[2], "the two models differ");
    let r = post(&addr, "/score", &serde_json::to_value(&reqs[2]).unwrap());
    assert_eq!((r.status, r.json["model_version"].as_u64()), (200, Some(2)));
    assert_ctr(&r.json["ctr"], &want2);
    let h = http(&addr, "GET", "/health", b"");
    assert_eq!((h.json["model_version"].as_u64(), h.json["model"].as_str()), (Some(2), Some(s(&m2))));
    let r = http(&addr, "POST", "/score", b"{");
    assert_eq!((r.status, r.json["model_version"].as_u64()), (400, Some(2)));

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
