//! The `twin` binary end to end: gen → init → cluster → score → info, and one-line errors.

use std::path::Path;
use std::process::{Command, Output};

fn twin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twin")).args(args).env("NO_COLOR", "1").output().expect("run twin")
}

fn ok(args: &[&str]) -> String {
    let o = twin(args);
    assert!(o.status.success(), "twin {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Fails with exit code 1 and exactly one stderr line containing every `needles`.
fn fails(args: &[&str], needles: &[&str]) {
    let o = twin(args);
    assert!(!o.status.success(), "twin {args:?} should fail");
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("note:") && !l.starts_with("backend:")).collect();
    assert_eq!(lines.len(), 1, "one line expected, got {err:?}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {:?}", lines[0]);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn pipeline_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (d, m, c) = (dir.path().join("d.twd"), dir.path().join("m.twm"), dir.path().join("c.twc"));
    ok(&["gen", "--out", s(&d), "--users", "20", "--items", "2000", "--max-len", "3000"]);
    ok(&["init", "--data", s(&d), "--out", s(&m)]);
    let out = ok(&["cluster", "--data", s(&d), "--model", s(&m), "--out", s(&c), "--backend", "cpu", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["users"], 20);
    assert!(summary["clusters"].as_u64().unwrap() < summary["behaviours"].as_u64().unwrap());
    assert!(summary["max_cluster_size"].as_u64().unwrap() < 20);

    for extra in [&[][..], &["--clusters", s(&c)][..]] {
        let mut args = vec![
            "score",
            "--model",
            s(&m),
            "--data",
            s(&d),
            "--users",
            "0,3",
            "--candidates",
            "1,2,3",
            "--backend",
            "cpu",
            "--dtype",
            "f16",
        ];
        args.extend_from_slice(extra);
        let doc: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        let reqs = doc["requests"].as_array().unwrap();
        assert_eq!(reqs.len(), 2);
        for r in reqs {
            let l = r["sequence_length"].as_u64().unwrap() as usize;
            for cand in r["candidates"].as_array().unwrap() {
                let top = cand["top_k"].as_array().unwrap();
                assert_eq!(top.len(), l.min(100));
                let scores: Vec<f64> = top.iter().map(|t| t["score"].as_f64().unwrap()).collect();
                assert!(scores.windows(2).all(|w| w[0] >= w[1]), "descending");
                assert_eq!(cand["esu_out"].as_array().unwrap().len(), 128);
            }
        }
    }
    for p in [&d, &m, &c] {
        assert!(!ok(&["info", s(p)]).is_empty());
    }

    // Errors: one line, naming the field and value.
    fails(&["score", "--model", s(&m), "--data", s(&d), "--candidates", "1,99999999", "--backend", "cpu"], &["candidates", "99999999"]);
    fails(&["score", "--model", s(&m), "--data", s(&d), "--users", "5000", "--backend", "cpu"], &["users", "5000"]);
    fails(&["score", "--model", s(&m), "--data", s(&d), "--dtype", "bf16"], &["dtype", "bf16"]);
    fails(&["cluster", "--data", s(&d), "--out", s(&c), "--backend", "tpu"], &["backend", "tpu"]);
    fails(&["info", s(&dir.path().join("missing.twm"))], &["missing.twm"]);
    // A corrupt model is refused, and the good one next to it still loads.
    let bad = dir.path().join("bad.twm");
    let mut bytes = std::fs::read(&m).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    fails(&["info", s(&bad)], &["bad.twm", "checksum"]);
    std::fs::write(&bad, &bytes[..100]).unwrap();
    fails(&["score", "--model", s(&bad), "--data", s(&d)], &["bad.twm", "truncated"]);
    ok(&["info", s(&m)]);
    // Clusters built to a cut-off refuse requests before it (leakage).
    let c2 = dir.path().join("c2.twc");
    ok(&["cluster", "--data", s(&d), "--model", s(&m), "--out", s(&c2), "--backend", "cpu", "--cutoff", "1700000000"]);
    fails(
        &["score", "--model", s(&m), "--data", s(&d), "--clusters", s(&c2), "--request-time", "1600000000", "--backend", "cpu"],
        &["request_time"],
    );
}
