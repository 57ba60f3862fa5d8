//! `twin serve` under hostile clients (issue 15, "Done when"), loopback only, bounded in time:
//! while hundreds of idle connections (more than the connection limit), slow-loris clients,
//! clients that declare a body and never send it, clients with a 1 MB header line and
//! abandoned half-requests come and go, a well-behaved client keeps scoring with bounded
//! latency; after they leave, the server's threads and open descriptors return to baseline.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_twin");
const MAX_CONNECTIONS: usize = 256;
const HEADER_TIMEOUT_MS: u64 = 2_000;
const BODY_TIMEOUT_MS: u64 = 2_000;
const HOSTILE_SECONDS: u64 = 10;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(args: &[&str]) {
    let o = Command::new(BIN).args(args).output().expect("run twin");
    assert!(o.status.success(), "twin {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Raise this test's soft open-file limit to the hard one; returns the soft limit in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every platform
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read or write one rlimit in a live local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur as u64
}

fn count(dir: String) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// (open descriptors, threads) of a process.
fn usage(pid: u32) -> (usize, usize) {
    (count(format!("/proc/{pid}/fd")), count(format!("/proc/{pid}/task")))
}

/// A keep-alive HTTP/1.1 client connection.
struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> std::io::Result<Conn> {
        let c = TcpStream::connect(addr)?;
        c.set_nodelay(true)?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn { r: BufReader::new(c) })
    }

    /// One exchange: (status, body).
    fn call(&mut self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let head =
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
        let w = self.r.get_mut();
        w.write_all(head.as_bytes())?;
        w.write_all(body)?;
        read_response(&mut self.r)
    }
}

fn read_response(r: &mut impl BufRead) -> std::io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
    }
    let status = line.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    let mut len = 0;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed in the head"));
        }
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok((status, body))
}

/// Whether the server has closed `c` (EOF or reset), without blocking.
fn closed(c: &mut TcpStream) -> bool {
    let _ = c.set_nonblocking(true);
    let mut buf = [0u8; 512];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 503 or other answer before the close
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Read until the server answers or closes; the status if it answered.
fn answer_within(c: &mut TcpStream, limit: Duration) -> Option<u16> {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(limit));
    let mut r = BufReader::new(c);
    read_response(&mut r).ok().map(|(st, _)| st)
}

#[test]
fn hostile_clients_cannot_stop_the_server() {
    let soft = raise_nofile();
    // 600 idle connections (more than the server's limit) where the limit on descriptors allows.
    let n_idle = 600.min(soft.saturating_sub(250) as usize);
    assert!(n_idle > MAX_CONNECTIONS, "the open-file limit {soft} is too low for this test");

    let dir = tempfile::tempdir().unwrap();
    let (d, m) = (dir.path().join("d.twd"), dir.path().join("m.twm"));
    ok(&["gen", "--out", s(&d), "--users", "8", "--items", "1000", "--max-len", "300"]);
    ok(&["init", "--data", s(&d), "--out", s(&m), "--seed", "1"]);
    let mut child = Command::new(BIN)
        .args(["serve", "--model", s(&m), "--backend", "cpu", "--addr", "127.0.0.1:0", "--threads", "4"])
        .args(["--max-connections", &MAX_CONNECTIONS.to_string(), "--max-body-bytes", "100000", "--max-header-bytes", "16384"])
        .args(["--header-timeout-ms", &HEADER_TIMEOUT_MS.to_string(), "--body-timeout-ms", &BODY_TIMEOUT_MS.to_string()])
        .args(["--idle-timeout-ms", "5000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start twin serve");
    let stdout = child.stdout.take().unwrap();
    let pid = child.id();
    let server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let line = rx.recv_timeout(Duration::from_secs(120)).expect("twin serve started");
    let addr = line.strip_prefix("listening on http://").and_then(|r| r.split_whitespace().next()).expect("address").to_string();

    // The well-behaved client's request: a real history, 20 candidates.
    let ds = twin_engine::data::Dataset::load(&d).unwrap();
    let b = &ds.behaviours;
    let r = ds.user_range(0);
    let long: Vec<_> = (r.start..r.end - 1)
        .map(|i| twin_engine::serve::Behaviour::raw(b.item[i], b.timestamp[i], b.play_time[i], b.duration[i]))
        .collect();
    let req = twin_engine::serve::ScoreRequest {
        request_time: b.timestamp[r.end - 1],
        short: long[long.len().saturating_sub(50)..].to_vec(),
        long,
        candidates: (0..20).map(|i| i * 37 % 1000).collect(),
        debug: false,
    };
    let body = serde_json::to_vec(&req).unwrap();

    // Warm up, then take the baseline.
    let mut good = Conn::open(&addr).unwrap();
    for _ in 0..30 {
        assert_eq!(good.call("POST", "/score", &body).unwrap().0, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let base = usage(pid);

    let stop = Arc::new(AtomicBool::new(false));
    // The well-behaved client: back to back on its keep-alive connection, a /metrics now and then.
    let good_thread = {
        let (stop, body) = (stop.clone(), body.clone());
        std::thread::spawn(move || {
            let (mut lat, mut failures, mut max_open) = (Vec::new(), Vec::new(), 0u64);
            let mut refused = 0u64;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                match good.call("POST", "/score", &body) {
                    Ok((200, _)) => lat.push(t0.elapsed()),
                    Ok((st, b)) => failures.push(format!("HTTP {st}: {}", String::from_utf8_lossy(&b))),
                    Err(e) => failures.push(format!("{e}")),
                }
                i += 1;
                if i % 25 == 0 {
                    if let Ok((200, m)) = good.call("GET", "/metrics", b"") {
                        let m = String::from_utf8_lossy(&m).to_string();
                        let value = |name: &str| {
                            m.lines()
                                .find(|l| l.starts_with(name))
                                .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                                .unwrap_or(0.0)
                        };
                        max_open = max_open.max(value("twin_connections_open{listener=\"http\"}") as u64);
                        refused = value("twin_connections_refused_total{listener=\"http\"}") as u64;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (lat, failures, max_open, refused)
        })
    };

    let t_start = Instant::now();
    let until = t_start + Duration::from_secs(HOSTILE_SECONDS);
    let mut hostile = Vec::new();

    // Idle: n_idle connections that say nothing, in two waves: at the start and halfway, every
    // connection the server has closed meanwhile is opened again.
    let idle_reopened = Arc::new(AtomicUsize::new(0));
    {
        let (addr, reopened) = (addr.clone(), idle_reopened.clone());
        hostile.push(std::thread::spawn(move || {
            let mut socks: Vec<Option<TcpStream>> = (0..n_idle).map(|_| TcpStream::connect(&addr).ok()).collect();
            std::thread::sleep(Duration::from_secs(HOSTILE_SECONDS / 2));
            for s in socks.iter_mut() {
                if s.as_mut().map_or(true, closed) {
                    *s = TcpStream::connect(&addr).ok();
                    reopened.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
        }));
    }
    // Slow loris: one byte of a request head a second; record how long the server tolerates it.
    let loris_longest_ms = Arc::new(AtomicU64::new(0));
    for _ in 0..20 {
        let (addr, longest) = (addr.clone(), loris_longest_ms.clone());
        hostile.push(std::thread::spawn(move || {
            let head = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
            while Instant::now() < until {
                let Ok(mut c) = TcpStream::connect(&addr) else {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                };
                let t0 = Instant::now();
                for &byte in head.iter().cycle() {
                    if Instant::now() >= until || c.write_all(&[byte]).is_err() || closed(&mut c) {
                        break;
                    }
                    let _ = c.set_nonblocking(false);
                    std::thread::sleep(Duration::from_secs(1));
                }
                // Connections refused at the limit close at once; the others show the timeout.
                if Instant::now() < until {
                    longest.fetch_max(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    // Declared bodies that never come: over the limit (413 at once) and under it (408 after the
    // body timeout).
    let never_sent = Arc::new(Mutex::new(Vec::new()));
    {
        let (addr, seen) = (addr.clone(), never_sent.clone());
        hostile.push(std::thread::spawn(move || {
            while Instant::now() + Duration::from_millis(BODY_TIMEOUT_MS + 1500) < until {
                let mut conns = Vec::new();
                for declared in [1u64 << 40, 10_000_000, 5_000, 50_000] {
                    for _ in 0..5 {
                        if let Ok(mut c) = TcpStream::connect(&addr) {
                            let _ = write!(c, "POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n{{\"request_time\"");
                            conns.push((declared, c));
                        }
                    }
                }
                for (declared, mut c) in conns {
                    let st = answer_within(&mut c, Duration::from_millis(BODY_TIMEOUT_MS + 2000));
                    seen.lock().unwrap().push((declared, st));
                }
                // Refused rounds end at once; keep the rate bounded.
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
    }
    // 1 MB header lines: refused (431) and closed, never buffered whole.
    let big_headers = Arc::new(Mutex::new(Vec::new()));
    {
        let (addr, seen) = (addr.clone(), big_headers.clone());
        hostile.push(std::thread::spawn(move || {
            let mut line = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
            line.resize(line.len() + (1 << 20), b'a');
            line.extend_from_slice(b"\r\n\r\n");
            for _ in 0..8 {
                if Instant::now() >= until {
                    break;
                }
                let Ok(mut c) = TcpStream::connect(&addr) else { continue };
                let _ = c.set_write_timeout(Some(Duration::from_secs(5)));
                let _ = c.write_all(&line); // the server may close (reset) midway
                let t0 = Instant::now();
                let st = answer_within(&mut c, Duration::from_secs(5));
                seen.lock().unwrap().push((st, t0.elapsed()));
                std::thread::sleep(Duration::from_millis(300));
            }
        }));
    }
    // Abandoned half-requests: half a head or half a body, then gone (closed, or silent).
    {
        let addr = addr.clone();
        let body = body.clone();
        hostile.push(std::thread::spawn(move || {
            let mut silent = Vec::new();
            let mut k = 0;
            while Instant::now() < until {
                if let Ok(mut c) = TcpStream::connect(&addr) {
                    match k % 3 {
                        0 => drop(c.write_all(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Le")),
                        1 => {
                            let _ = write!(c, "POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
                            let _ = c.write_all(&body[..body.len() / 2]);
                        }
                        _ => {
                            let _ = c.write_all(b"GET /heal");
                            silent.push(c);
                            k += 1;
                            continue;
                        }
                    }
                }
                k += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(silent);
        }));
    }

    // Peak usage while they are all at it.
    let mut peak = base;
    while Instant::now() < until {
        let u = usage(pid);
        peak = (peak.0.max(u.0), peak.1.max(u.1));
        std::thread::sleep(Duration::from_millis(200));
    }
    for h in hostile {
        h.join().expect("a hostile client thread failed");
    }
    stop.store(true, Ordering::Relaxed);
    let (mut lat, failures, max_open, refused) = good_thread.join().unwrap();

    // They have all left: descriptors and threads come back to the baseline.
    let t_leave = Instant::now();
    let mut after = usage(pid);
    while (after.0 > base.0 + 3 || after.1 > base.1 + 2) && t_leave.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
        after = usage(pid);
    }
    let recovered_in = t_leave.elapsed();

    lat.sort();
    let pct = |p: f64| lat[((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1];
    let never = never_sent.lock().unwrap().clone();
    let big = big_headers.lock().unwrap().clone();
    eprintln!(
        "hostile: {} idle connections (limit {MAX_CONNECTIONS}; server held at most {max_open}, refused {refused} with 503; {} reopened halfway), \
         20 slow-loris (longest tolerated {} ms), {} never-sent bodies, {} 1 MB headers; good client: {} requests, {} failures, \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; fds/threads baseline {:?}, peak {:?}, after {:?} ({:.1} s after they left)",
        n_idle,
        idle_reopened.load(Ordering::Relaxed),
        loris_longest_ms.load(Ordering::Relaxed),
        never.len(),
        big.len(),
        lat.len(),
        failures.len(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
        base,
        peak,
        after,
        recovered_in.as_secs_f64()
    );

    assert!(failures.is_empty(), "{} good requests failed; first: {}", failures.len(), failures[0]);
    assert!(lat.len() > 100, "only {} good requests in {HOSTILE_SECONDS} s", lat.len());
    assert!(pct(0.99) < Duration::from_secs(2), "good client p99 {:?}", pct(0.99));
    assert!(max_open as usize <= MAX_CONNECTIONS && max_open > 0, "open connections {max_open}");
    assert!(refused > 0, "the connection limit never answered 503");
    let loris = loris_longest_ms.load(Ordering::Relaxed);
    assert!(loris > 0 && loris <= HEADER_TIMEOUT_MS + 1500, "a slow-loris connection lived {loris} ms");
    // Each hostile connection was either refused at the connection limit (503) or answered as
    // its kind deserves, and each kind was answered at least once.
    for (declared, st) in &never {
        let want = if *declared > 100_000 { 413 } else { 408 };
        assert!(*st == Some(want) || *st == Some(503), "declared {declared} bytes and sent none: {st:?}");
    }
    assert!(never.iter().any(|x| x.1 == Some(413)) && never.iter().any(|x| x.1 == Some(408)), "{never:?}");
    assert!(!big.is_empty());
    for (st, t) in &big {
        assert!(st.is_none() || *st == Some(431) || *st == Some(503), "1 MB header answered {st:?}");
        assert!(*t < Duration::from_secs(5), "1 MB header: the connection lingered {t:?}");
    }
    assert!(after.0 <= base.0 + 3 && after.1 <= base.1 + 2, "fds/threads baseline {base:?}, after {after:?}");
    // Still serving new connections.
    let mut fresh = Conn::open(&addr).unwrap();
    assert_eq!(fresh.call("GET", "/health", b"").unwrap().0, 200);
    assert_eq!(fresh.call("POST", "/score", &body).unwrap().0, 200);
    drop(server);
}
