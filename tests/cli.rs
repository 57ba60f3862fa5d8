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
    fails(
        &["score", "--model", s(&m), "--data", s(&d), "--users", "0", "--candidates", "1,99999999", "--backend", "cpu"],
        &["candidates", "99999999"],
    );
    fails(&["score", "--model", s(&m), "--data", s(&d), "--users", "5000", "--candidates", "1", "--backend", "cpu"], &["users", "5000"]);
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
    fails(&["score", "--model", s(&bad), "--data", s(&d), "--users", "0", "--candidates", "1"], &["bad.twm", "truncated"]);
    ok(&["info", s(&m)]);
    // Clusters built to a cut-off refuse requests before it (leakage).
    let c2 = dir.path().join("c2.twc");
    ok(&["cluster", "--data", s(&d), "--model", s(&m), "--out", s(&c2), "--backend", "cpu", "--cutoff", "1700000000"]);
    fails(
        &[
            "score",
            "--model",
            s(&m),
            "--data",
            s(&d),
            "--users",
            "0",
            "--candidates",
            "1",
            "--clusters",
            s(&c2),
            "--request-time",
            "1600000000",
            "--backend",
            "cpu",
        ],
        &["request_time"],
    );
}

#[test]
fn train_eval_demo() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d.twd");
    ok(&["gen", "--out", s(&d), "--users", "30", "--items", "1000", "--min-len", "50", "--max-len", "500", "--samples-per-user", "10"]);
    let (m, ck) = (dir.path().join("twin.twm"), dir.path().join("twin.ckpt"));
    let base = ["--data", s(&d), "--backend", "cpu", "--batch", "32"];
    let mut args = vec!["train", "--variant", "twin", "--out", s(&m), "--checkpoint", s(&ck), "--epochs", "1", "--json"];
    args.extend_from_slice(&base);
    let rep: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(rep["epochs"].as_array().unwrap().len(), 1);
    assert!(rep["epochs"][0]["test"]["auc"].as_f64().unwrap().is_finite());
    // Resume to epoch 2 from the checkpoint.
    let mut args = vec!["train", "--variant", "twin", "--out", s(&m), "--checkpoint", s(&ck), "--epochs", "2", "--resume", "--json"];
    args.extend_from_slice(&base);
    let rep: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(rep["epochs"].as_array().unwrap().len(), 2);
    let mut args = vec!["eval", "--variant", "twin", "--model", s(&m)];
    args.extend_from_slice(&base);
    let ev: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert_eq!(ev["auc"], rep["epochs"][1]["test"]["auc"], "eval must reproduce the last epoch's test AUC");
    // twin-v2 without clusters in eval is a clear error; a bad variant name too.
    let mut args = vec!["eval", "--variant", "twin-v2", "--model", s(&m)];
    args.extend_from_slice(&base);
    fails(&args, &["twin-v2", "--clusters"]);
    fails(&["train", "--data", s(&d), "--variant", "twin3", "--out", s(&m)], &["--variant", "twin3"]);
    // Clusters built past the split are refused (leakage).
    let c = dir.path().join("c.twc");
    ok(&["cluster", "--data", s(&d), "--model", s(&m), "--out", s(&c), "--backend", "cpu"]);
    let mut args = vec!["train", "--variant", "twin-v2", "--clusters", s(&c), "--out", s(&m), "--epochs", "1"];
    args.extend_from_slice(&base);
    fails(&args, &["clusters were built with no cutoff", "before the split"]);
    // Built with the split time as cutoff, they are accepted.
    let split_time = ev["split_time"].as_i64().unwrap().to_string();
    ok(&["cluster", "--data", s(&d), "--model", s(&m), "--out", s(&c), "--backend", "cpu", "--cutoff", &split_time]);
    let v2m = dir.path().join("v2.twm");
    let mut args = vec!["train", "--variant", "twin-v2", "--clusters", s(&c), "--out", s(&v2m), "--epochs", "1", "--json"];
    args.extend_from_slice(&base);
    let rep: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    assert!(rep["epochs"][0]["gsu_len"].as_f64().unwrap() > 0.0);

    // The demo: every variant, table, JSON and both plots.
    let out = dir.path().join("demo");
    let text = ok(&["demo", "--data", s(&d), "--out", s(&out), "--epochs", "1", "--batch", "64", "--backend", "cpu"]);
    for v in ["twin-v2", "twin", "sim-soft", "din-short", "no-seq"] {
        assert!(text.contains(&format!("| {v} |")), "{v} missing from the table:\n{text}");
    }
    let res: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(res["results"].as_array().unwrap().len(), 5);
    let v2 = res["results"].as_array().unwrap().iter().find(|r| r["variant"] == "twin-v2").unwrap();
    let tw = res["results"].as_array().unwrap().iter().find(|r| r["variant"] == "twin").unwrap();
    assert!(v2["gsu_input_length"].as_f64().unwrap() < tw["gsu_input_length"].as_f64().unwrap(), "clusters must shorten the GSU input");
    for png in ["auc.png", "loss.png"] {
        assert_eq!(&std::fs::read(out.join(png)).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    }
}

/// `twin bench` on every backend this build can run here: each workload gives one row per
/// shape (and per GSU version on a GPU backend), with times, work, floors and transfers; the CPU
/// pays no transfers, a GPU backend does. Bad flags are one-line errors naming the flag.
#[test]
fn bench_runs_every_workload() {
    let mut backends = vec!["cpu"];
    if cfg!(feature = "wgpu") && std::env::var_os("CI").is_some() {
        backends.push("wgpu"); // lavapipe in CI; elsewhere a Vulkan driver may be missing
    }
    for be in backends {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.json");
        let out = ok(&[
            "bench",
            "online",
            "--backend",
            be,
            "--shapes",
            "97x3,2x101x5",
            "--items",
            "1000",
            "--reps",
            "3",
            "--warmup",
            "1",
            "--json",
            "--out",
            s(&file),
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&file).unwrap()).unwrap());
        let rows = v["rows"].as_array().unwrap();
        // wgpu: GSU v1, v2, and v2 with ESU v1.
        let versions = if be == "cpu" { 1 } else { 3 };
        assert_eq!(rows.len(), 2 * 2 * versions, "{be}: shapes x dtypes x versions: {out}");
        assert!(v["card"]["bw_bytes_per_s"].as_f64().unwrap() > 0.0);
        for r in rows {
            assert!(r.get("error").is_none(), "{be}: {r}");
            assert_eq!(r["runs"], 3);
            let (p10, med, p90) = (r["p10_ms"].as_f64().unwrap(), r["median_ms"].as_f64().unwrap(), r["p90_ms"].as_f64().unwrap());
            assert!(0.0 < p10 && p10 <= med && med <= p90, "{r}");
            assert!(r["bytes"].as_f64().unwrap() > 0.0 && r["flops"].as_f64().unwrap() > 0.0);
            assert!(r["floor_us"].as_f64().unwrap() > 0.0);
            let (up, down) = (r["h2d_calls"].as_f64().unwrap(), r["d2h_calls"].as_f64().unwrap());
            if be == "cpu" {
                assert_eq!((up, down), (0.0, 0.0), "the CPU backend copies nothing: {r}");
            } else {
                assert!(up >= 1.0 && down >= 1.0 && r["d2h_bytes"].as_f64().unwrap() > 0.0, "{r}");
            }
        }
        assert_eq!(rows[0]["shape"], "L=97,B=3");
        assert_eq!(rows[1]["shape"], "R=2,L=101,B=5");

        let out = ok(&[
            "bench",
            "cluster",
            "--backend",
            be,
            "--shapes",
            "lloyd:400,user:300,users:2x200",
            "--reps",
            "2",
            "--warmup",
            "0",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let works: Vec<&str> = v["rows"].as_array().unwrap().iter().map(|r| r["work"].as_str().unwrap()).collect();
        // wgpu: the three works once per k-means version (v1, then v2).
        let kmeans_versions = if be == "cpu" { 1 } else { 2 };
        assert_eq!(works, ["lloyd", "cluster_one_user", "cluster_users"].repeat(kmeans_versions), "{out}");
        assert_eq!(v["rows"][0]["shape"], "N=400,k=6,dim=64,iters=20");
        let users = v["rows"].as_array().unwrap().iter().filter(|r| r["work"] == "cluster_users");
        assert!(users.into_iter().all(|r| r["users_per_s"].as_f64().unwrap() > 0.0), "{out}");
        assert!(v["rows"].as_array().unwrap().iter().all(|r| r.get("error").is_none() && r["flops"].as_f64().unwrap() > 0.0), "{out}");

        let out = ok(&["bench", "train", "--backend", be, "--shapes", "4x30", "--items", "1000", "--reps", "2", "--warmup", "0", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let versions: Vec<&str> = v["rows"].as_array().unwrap().iter().map(|r| r["version"].as_str().unwrap()).collect();
        assert_eq!(versions, ["twin", "twin-v2", "no-seq"], "{out}");
        let dev = &v["rows"][2];
        assert_eq!((dev["work"].as_str(), dev["shape"].as_str()), (Some("train_device"), Some("B=4")), "{out}");
        assert!(dev.get("error").is_none() && dev["samples_per_s"].as_f64().unwrap() > 0.0, "{out}");
        if be != "cpu" {
            // One upload and one download per device-resident step, as the bench reports them:
            // the twin and twin-v2 rows run the device step on a GPU backend too.
            for r in v["rows"].as_array().unwrap() {
                assert_eq!((r["h2d_calls"].as_f64(), r["d2h_calls"].as_f64()), (Some(1.0), Some(1.0)), "{out}");
            }
        }
        assert!(v["rows"][0]["samples_per_s"].as_f64().unwrap() > 0.0, "{out}");
    }
    // The table form names every column the kit reads.
    let table = ok(&[
        "bench",
        "online",
        "--backend",
        "cpu",
        "--shapes",
        "50x2",
        "--items",
        "500",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--dtype",
        "f32",
    ]);
    for col in ["median ms", "p10 ms", "p90 ms", "floor µs", "×floor", "h2d calls/MB", "L=50,B=2"] {
        assert!(table.contains(col), "{col} missing from:\n{table}");
    }
    fails(&["bench", "online", "--backend", "cpu", "--shapes", "0x3"], &["--shapes"]);
    fails(&["bench", "train", "--backend", "cpu", "--shapes", "4x5x6"], &["--shapes (train)"]);
    fails(&["bench", "cluster", "--backend", "cpu", "--shapes", "kmeans:5"], &["--shapes (cluster)"]);
    fails(&["bench", "online", "--backend", "tpu"], &["--backend", "tpu"]);
    fails(&["bench", "online", "--backend", "cpu", "--dtype", "bf16"], &["--dtype", "bf16"]);
    fails(&["bench", "all", "--backend", "cpu", "--shapes", "97x3"], &["--shapes"]);
}

/// Careless training commands fail at once with one clear line, and leave every file as it was.
#[test]
fn careless_training_commands_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (d, d2) = (dir.path().join("d.twd"), dir.path().join("d2.twd"));
    let gen = |out: &Path, seed: &str| {
        ok(&["gen", "--out", s(out), "--users", "12", "--items", "500", "--min-len", "20", "--max-len", "100", "--seed", seed]);
    };
    gen(&d, "1");
    gen(&d2, "2");
    let data_bytes = std::fs::read(&d).unwrap();
    let (m, ck) = (dir.path().join("m.twm"), dir.path().join("m.ckpt"));
    let train = |extra: &[&str]| {
        let mut a = vec!["train", "--variant", "twin", "--backend", "cpu", "--batch", "16", "--epochs", "1"];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run_fails = |args: Vec<String>, needles: &[&str]| fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), needles);
    // --out (or --checkpoint) over the dataset.
    run_fails(train(&["--data", s(&d), "--out", s(&d)]), &["--out", "--data file", "overwrite"]);
    let dotted = format!("{}/./d.twd", dir.path().display());
    run_fails(train(&["--data", s(&d), "--out", s(&m), "--checkpoint", &dotted]), &["--checkpoint", "--data file"]);
    assert_eq!(std::fs::read(&d).unwrap(), data_bytes, "the dataset changed");
    // --checkpoint equal to --out.
    run_fails(train(&["--data", s(&d), "--out", s(&m), "--checkpoint", s(&m)]), &["--checkpoint and --out are the same file"]);
    // An unwritable --out is found before training, not after the last epoch.
    let t0 = std::time::Instant::now();
    run_fails(train(&["--data", s(&d), "--out", "/nonexistent-dir/m.twm"]), &["--out cannot be written"]);
    assert!(t0.elapsed().as_secs() < 20, "took {:?}", t0.elapsed());
    // A checkpoint is never overwritten without --resume.
    ok(&train(&["--data", s(&d), "--out", s(&m), "--checkpoint", s(&ck)]).iter().map(String::as_str).collect::<Vec<_>>());
    let ck_bytes = std::fs::read(&ck).unwrap();
    run_fails(train(&["--data", s(&d), "--out", s(&m), "--checkpoint", s(&ck)]), &["--checkpoint", "exists", "--resume"]);
    assert_eq!(std::fs::read(&ck).unwrap(), ck_bytes, "the checkpoint changed");
    // Resuming on a dataset with another catalogue (same sizes, other seed) is refused.
    run_fails(train(&["--data", s(&d2), "--out", s(&m), "--checkpoint", s(&ck), "--resume"]), &["checkpoint", "another catalogue"]);
    // Empty datasets are refused at the source.
    fails(&["gen", "--out", s(&dir.path().join("e.twd")), "--users", "0"], &["n_users", "at least 1"]);
    let csv = dir.path().join("ratings.csv");
    std::fs::write(&csv, "userId,movieId,rating,timestamp\n").unwrap();
    fails(&["import", s(&csv), "--out", s(&dir.path().join("e.twd"))], &["no interactions"]);
    assert!(!dir.path().join("e.twd").exists());
}

/// An error about hostile input quotes at most a short, escaped excerpt of it: a 20 KB header
/// full of terminal escapes comes back as one short line without a control character.
#[test]
fn errors_quote_short_escaped_excerpts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.csv");
    let mut header = String::from("\u{1b}[2J\u{1b}[31m");
    header.push_str(&"user_id_".repeat(2_500));
    std::fs::write(&log, format!("{header}\n1,2,3\n")).unwrap();
    let o = twin(&["import", s(&log), "--out", s(&dir.path().join("d.twd"))]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.len() < 1_000, "{} bytes of error", err.len());
    assert!(!err.chars().any(|c| c.is_control() && c != '\n'), "control characters in {err:?}");
    assert!(err.contains("more characters"), "{err}");
    // A model path that is some other file: the error names it without echoing its bytes.
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "hunter2-private-key-material").unwrap();
    let o = twin(&["info", s(&secret)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("hunter2"), "{err}");
}

/// `twin demo --lifelong` end to end at a toy size: every arm trains on every seed, the table
/// and the gaps print, results.json holds one run per (arm, seed) with quartile metrics, and the
/// plot is written; a bad option is a one-line error.
#[test]
fn lifelong_demo_runs_every_arm() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("life");
    let args = [
        "demo",
        "--lifelong",
        "--users",
        "12",
        "--life-min-len",
        "300",
        "--life-max-len",
        "2000",
        "--life-samples",
        "20",
        "--seeds",
        "2",
        "--budget",
        "50",
        "--epochs",
        "1",
        "--backend",
        "cpu",
        "--out",
        s(&out),
    ];
    let text = ok(&args);
    for needle in ["At an equal GSU budget", "twin-v2 on x_h", "Ablations of twin-v2", "γ = 40"] {
        assert!(text.contains(needle), "{needle:?} not in the demo's output:\n{text}");
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(doc["users"], 12);
    let runs = doc["runs"].as_array().unwrap();
    // twin, twin-v2, twin-v2 on x_h and four ablations, two seeds each.
    assert_eq!(runs.len(), 8 * 2, "{runs:?}");
    for r in runs {
        let auc = r["overall"]["auc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc), "{r}");
        assert_eq!(r["by_quartile"].as_array().unwrap().len(), 4, "{r}");
        assert!(r["gsu_rows"].as_f64().unwrap() <= 50.0, "{r}");
    }
    assert!(std::fs::metadata(out.join("auc_by_activity.png")).unwrap().len() > 1000);
    // What twin-v2's rows are made of, for training and for test samples.
    assert!(text.contains("twin-v2 GSU input, training samples:") && text.contains("twin-v2 GSU input, test samples:"), "{text}");
    for part in ["train", "test"] {
        let mix = &doc["twin_v2_input"][part];
        let share = mix["cluster_share"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&share) && mix["rows"].as_f64().unwrap() <= 50.0, "{mix}");
        assert!(mix["behaviours"].as_f64().unwrap() >= mix["rows"].as_f64().unwrap(), "{mix}");
    }
    fails(&["demo", "--lifelong", "--users", "4", "--life-samples", "0", "--out", s(&out)], &["--life-samples = 0"]);
    fails(&["demo", "--lifelong", "--users", "4", "--arms", "twin,twim", "--out", s(&out)], &["--arms", "\"twim\"", "twin-v2"]);
}

/// The command line speaks the input file's ids: a MovieLens `u.data` under another name is read
/// by its content, `score` takes and prints the file's user and item ids, refuses what it would
/// ignore, and clusters of another dataset; a closed pipe ends the output quietly.
#[test]
fn cli_speaks_the_files_ids() {
    let dir = tempfile::tempdir().unwrap();
    // u.data: user \t item \t rating \t time; ids far from dense indices.
    let mut log = String::new();
    for (u, base) in [(7001u64, 0u64), (9002, 3)] {
        for k in 0..40u64 {
            log.push_str(&format!("{u}\t{}\t{}\t{}\n", 5000 + (base + k) % 50, 1 + k % 5, 880_000_000 + k * 1000));
        }
    }
    let raw = dir.path().join("export.txt");
    std::fs::write(&raw, &log).unwrap();
    let (d, m, c) = (dir.path().join("d.twd"), dir.path().join("m.twm"), dir.path().join("c.twc"));
    ok(&["import", s(&raw), "--out", s(&d)]);
    fails(&["import", s(&raw), "--out", s(&d), "--format", "kuai"], &["export.txt"]);
    assert!(ok(&["info", s(&d)]).contains("user ids 7001..=9002"));
    ok(&["init", "--data", s(&d), "--out", s(&m)]);
    let base = ["score", "--model", s(&m), "--data", s(&d), "--backend", "cpu", "--no-vectors"];
    let run = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        serde_json::from_str::<serde_json::Value>(&ok(&a)).unwrap()
    };
    let doc = run(&["--users", "9002", "--candidates", "5010,5042"]);
    let r = &doc["requests"][0];
    assert_eq!(r["user"], 9002);
    assert_eq!(r["candidates"][0]["item"], 5010);
    assert_eq!(r["candidates"][1]["item"], 5042);
    for t in r["candidates"][0]["top_k"].as_array().unwrap() {
        let item = t["item"].as_u64().unwrap();
        assert!((5000..5043).contains(&item), "item {item} is not one of the file's ids");
    }
    let mut a = base.to_vec();
    a.extend_from_slice(&["--users", "1", "--candidates", "5010"]);
    fails(&a, &["--users[0] = 1", "no such id"]);
    // Required arguments are required; ignored or impossible values are refused.
    fails(&base, &["--users", "--candidates"]);
    ok(&["cluster", "--data", s(&d), "--model", s(&m), "--out", s(&c), "--backend", "cpu"]);
    let mut a = base.to_vec();
    a.extend_from_slice(&["--users", "7001", "--candidates", "5010", "--clusters", s(&c), "--max-len", "10"]);
    fails(&a, &["--max-len", "--clusters"]);
    let mut a = base.to_vec();
    a.extend_from_slice(&["--users", "7001", "--candidates", "5010", "--top-k", "0"]);
    fails(&a, &["--top-k", "0"]);
    fails(&["demo", "--budget", "10", "--out", s(&dir.path().join("o"))], &["--lifelong"]);
    // Clusters carry their source: those of another dataset are refused by name.
    let (d2, m2) = (dir.path().join("d2.twd"), dir.path().join("m2.twm"));
    ok(&["gen", "--out", s(&d2), "--users", "3", "--items", "60", "--min-len", "20", "--max-len", "40"]);
    ok(&["init", "--data", s(&d2), "--out", s(&m2)]);
    fails(
        &["score", "--model", s(&m2), "--data", s(&d2), "--users", "0", "--candidates", "1", "--clusters", s(&c), "--backend", "cpu"],
        &["--clusters", "another dataset"],
    );
    assert!(ok(&["info", s(&c)]).contains("built from: dataset history digest"));
    // A reader that stops early (`| head`) ends the output without a panic.
    let mut cands = Vec::new();
    for i in 0..43 {
        cands.push((5000 + i).to_string());
    }
    let cands = cands.join(",");
    let mut child = Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(["score", "--model", s(&m), "--data", s(&d), "--backend", "cpu", "--users", "7001,9002", "--candidates", &cands])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}
