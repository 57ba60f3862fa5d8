//! The serving engine: its CTRs equal the training forward pass, batching across threads
//! changes nothing, hot swap is atomic per request, bad input is refused per request.

use std::sync::Arc;
use std::time::Duration;

use twin_engine::backend::BackendChoice;
use twin_engine::cluster::{cluster_users, ClusterConfig};
use twin_engine::data::{generate, Dataset, SynthConfig};
use twin_engine::error::Error;
use twin_engine::model::{Model, ModelConfig};
use twin_engine::serve::{Behaviour, Engine, EngineConfig, ScoreRequest};
use twin_engine::train::step::{self, CpuOps, Weights};
use twin_engine::train::{Examples, Variant};

fn data() -> Dataset {
    generate(&SynthConfig {
        n_users: 24,
        n_items: 600,
        n_authors: 60,
        n_topics: 12,
        min_len: 30,
        max_len: 900,
        samples_per_user: 4,
        seed: 4,
        ..SynthConfig::default()
    })
    .unwrap()
}

fn model(ds: &Dataset, seed: u64) -> Model {
    let mut c = ModelConfig::for_items(&ds.items);
    c.mlp_hidden = vec![48, 16];
    let mut m = Model::init(c, &ds.items, seed).unwrap();
    // Non-zero biases so the MLP path is fully exercised.
    for (name, t) in m.params_mut() {
        if name.starts_with("mlp_b") {
            t.data.iter_mut().enumerate().for_each(|(i, x)| *x = 0.01 * ((i % 7) as f32 - 3.0));
        }
    }
    m
}

fn cfg(variant: Variant, batching: bool) -> EngineConfig {
    EngineConfig { backend: BackendChoice::Cpu, variant, batching, max_wait: Duration::from_millis(2), ..EngineConfig::default() }
}

/// The request the training pipeline's sample `s` corresponds to.
fn request_for(
    ds: &Dataset,
    s: usize,
    variant: Variant,
    clusters: Option<&twin_engine::cluster::ClusterSet>,
    cands: Vec<u32>,
) -> ScoreRequest {
    let (u, t) = (ds.samples.user[s] as usize, ds.samples.request_time[s]);
    let hist = ds.history_before(u, t);
    let b = &ds.behaviours;
    let raw = |r: usize| Behaviour::raw(b.item[r], b.timestamp[r], b.play_time[r], b.duration[r]);
    let long = match clusters {
        Some(cs) => {
            // Clusters wholly in the past plus the uncovered past behaviours, oldest first (as training builds it).
            let slot = cs.users.iter().position(|&x| x as usize == u).unwrap();
            let mut covered = vec![false; hist.len()];
            let mut rows: Vec<Behaviour> = Vec::new();
            for c in cs.user_clusters(slot).filter(|&c| cs.timestamp[c] < t) {
                cs.cluster_members(c).iter().for_each(|&m| covered[m as usize] = true);
                rows.push(Behaviour {
                    item: cs.item[c],
                    timestamp: cs.timestamp[c],
                    play_time: cs.play_time[c],
                    completion: cs.completion[c],
                    size: cs.size[c],
                });
            }
            rows.extend(covered.iter().enumerate().filter(|(_, &c)| !c).map(|(p, _)| raw(hist.start + p)));
            rows.sort_by_key(|r| r.timestamp);
            rows
        }
        None if variant.uses_long() => hist.clone().map(raw).collect(),
        None => Vec::new(),
    };
    let short = hist.clone().skip(hist.len().saturating_sub(50)).map(raw).collect();
    ScoreRequest { request_time: t, long, short, candidates: cands, debug: false }
}

#[test]
fn engine_ctr_equals_training_forward_for_every_variant() {
    let ds = data();
    let m = model(&ds, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.twm");
    m.save(&path).unwrap();
    let users: Vec<u32> = (0..ds.n_users() as u32).collect();
    let be = twin_engine::backend::cpu::CpuBackend::new();
    let (cs, _) = cluster_users(&be, &ds, &users, None, m.item_embeddings(), 64, &ClusterConfig::default(), &mut |_, _| {}).unwrap();
    let samples: Vec<u32> = (0..ds.samples.len() as u32).step_by(3).collect();
    for v in [Variant::Twin, Variant::TwinV2, Variant::SimSoft, Variant::DinShort, Variant::NoSeq] {
        let clusters = if v == Variant::TwinV2 { Some(&cs) } else { None };
        let ex = Examples::new(&ds, v, clusters, 100_000, 50).unwrap();
        let batch = ex.batch(&samples).unwrap();
        let want = step::step(&CpuOps, &Weights::of(&m), v, &batch, false).unwrap().prob;
        let engine = Engine::open(&path, cfg(v, false)).unwrap();
        for (i, &s) in samples.iter().enumerate() {
            let req = request_for(&ds, s as usize, v, clusters, vec![ds.samples.item[s as usize]]);
            let got = engine.score(&req).unwrap();
            assert_eq!(got.model_version, 1);
            assert!(
                (got.ctr[0] - want[i]).abs() <= 1e-5 + 1e-4 * want[i],
                "{v} sample {s}: engine {} vs training forward {}",
                got.ctr[0],
                want[i]
            );
        }
        // Candidates of one request are independent of each other.
        let cands: Vec<u32> = (0..40).map(|i| (i * 13) % 600).collect();
        let req = request_for(&ds, 5, v, clusters, cands.clone());
        let all = engine.score(&req).unwrap().ctr;
        for (j, &c) in cands.iter().enumerate().step_by(9) {
            let one = engine.score(&ScoreRequest { candidates: vec![c], ..req.clone() }).unwrap().ctr[0];
            assert!((one - all[j]).abs() <= 1e-6, "{v}: candidate {c} alone {one} vs in a batch {}", all[j]);
        }
    }
}

#[test]
fn batching_across_threads_changes_nothing_and_debug_explains() {
    let ds = data();
    let m = model(&ds, 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.twm");
    m.save(&path).unwrap();
    let direct = Engine::open(&path, cfg(Variant::Twin, false)).unwrap();
    let batched = Arc::new(Engine::open(&path, cfg(Variant::Twin, true)).unwrap());
    let reqs: Vec<ScoreRequest> =
        (0..ds.samples.len()).map(|s| request_for(&ds, s, Variant::Twin, None, vec![(s as u32 * 7) % 600, 1, 599])).collect();
    let want: Vec<Vec<f32>> = reqs.iter().map(|r| direct.score(r).unwrap().ctr).collect();
    let reqs = Arc::new(reqs);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (e, reqs) = (batched.clone(), reqs.clone());
            std::thread::spawn(move || {
                (0..reqs.len()).filter(|i| i % 8 == t).map(|i| (i, e.score(&reqs[i]).unwrap().ctr)).collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for (i, got) in h.join().unwrap() {
            for (g, w) in got.iter().zip(&want[i]) {
                assert!((g - w).abs() <= 1e-6, "request {i}: batched {g} vs direct {w}");
            }
        }
    }
    // Debug output: top-K positions inside the sequence, weights summing to 1 per head.
    let mut r = reqs[0].clone();
    r.debug = true;
    let out = batched.score(&r).unwrap();
    let dbg = out.debug.unwrap();
    assert_eq!(dbg.len(), 3);
    let k = dbg[0].topk_positions.len();
    assert_eq!(k, r.long.len().min(100));
    assert!(dbg[0].topk_positions.iter().all(|&p| (p as usize) < r.long.len()));
    assert!(dbg[0].topk_scores.windows(2).all(|w| w[0] >= w[1]));
    for a in 0..4 {
        let s: f32 = (0..k).map(|i| dbg[0].attention[i * 4 + a]).sum();
        assert!((s - 1.0).abs() < 1e-4, "head {a} weights sum to {s}");
    }
}

#[test]
fn bad_requests_fail_alone() {
    let ds = data();
    let m = model(&ds, 4);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.twm");
    m.save(&path).unwrap();
    let e = Arc::new(Engine::open(&path, EngineConfig { max_seq_len: 500, max_candidates: 64, ..cfg(Variant::Twin, true) }).unwrap());
    let good = request_for(&ds, 3, Variant::Twin, None, vec![1, 2, 3]);
    let good = ScoreRequest { long: good.long.iter().rev().take(400).rev().copied().collect(), ..good };
    let err = |r: &ScoreRequest| e.score(r).err().map(|x| x.to_string()).unwrap_or_default();
    assert!(err(&ScoreRequest { candidates: vec![1, 600], ..good.clone() }).contains("candidates[1] = 600"));
    assert!(err(&ScoreRequest { candidates: vec![], ..good.clone() }).contains("candidates"));
    assert!(err(&ScoreRequest { candidates: vec![0; 65], ..good.clone() }).contains("candidates = 65"));
    let mut nan = good.clone();
    nan.long[2].play_time = f32::NAN;
    assert!(err(&nan).contains("long[].play_time[2]"), "{}", err(&nan));
    let mut neg = good.clone();
    neg.short[1].play_time = -2.0;
    assert!(err(&neg).contains("short[].play_time[1] = -2: a play time cannot be negative"), "{}", err(&neg));
    for p in [1.5f32, -0.25] {
        let mut out = good.clone();
        out.long[3].completion = p;
        assert!(err(&out).contains(&format!("long[].completion[3] = {p}: a completion ratio is in [0, 1]")), "{}", err(&out));
    }
    let mut big = good.clone();
    big.long = vec![good.long[0]; 501];
    assert!(err(&big).contains("long = 501"));
    let mut bad_item = good.clone();
    bad_item.short[0].item = 9_999;
    assert!(err(&bad_item).contains("short[].item[0] = 9999"));
    let mut zero = good.clone();
    zero.long[0].size = 0;
    assert!(err(&zero).contains("size"));
    // Interleaved with good requests from other threads: every good one still succeeds.
    let hs: Vec<_> = (0..6)
        .map(|t| {
            let (e, good, nan) = (e.clone(), good.clone(), nan.clone());
            std::thread::spawn(move || {
                for i in 0..20 {
                    if (i + t) % 3 == 0 {
                        assert!(e.score(&nan).is_err());
                    } else {
                        assert_eq!(e.score(&good).unwrap().ctr.len(), 3);
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    // Empty histories are fine (a new user): the sequence parts pool to zero.
    let fresh = ScoreRequest { request_time: 0, long: vec![], short: vec![], candidates: vec![5], debug: true };
    assert!(e.score(&fresh).unwrap().ctr[0] > 0.0);
}

#[test]
fn hot_swap_is_atomic_and_refuses_bad_files() {
    let ds = data();
    let (m1, m2) = (model(&ds, 5), model(&ds, 6));
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, bad) = (dir.path().join("m1.twm"), dir.path().join("m2.twm"), dir.path().join("bad.twm"));
    m1.save(&p1).unwrap();
    m2.save(&p2).unwrap();
    let mut bytes = std::fs::read(&p2).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&bad, &bytes).unwrap();
    let req = request_for(&ds, 7, Variant::Twin, None, vec![3, 30, 300]);
    let want1 = Engine::open(&p1, cfg(Variant::Twin, false)).unwrap().score(&req).unwrap().ctr;
    let want2 = Engine::open(&p2, cfg(Variant::Twin, false)).unwrap().score(&req).unwrap().ctr;
    assert_ne!(want1, want2);

    let e = Arc::new(Engine::open(&p1, cfg(Variant::Twin, true)).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (e, req, stop, w1, w2) = (e.clone(), req.clone(), stop.clone(), want1.clone(), want2.clone());
            std::thread::spawn(move || {
                let mut seen = [0usize; 3];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = e.score(&req).unwrap();
                    // Every response is wholly one version's answer.
                    let want = if r.model_version == 1 { &w1 } else { &w2 };
                    for (g, w) in r.ctr.iter().zip(want) {
                        assert!((g - w).abs() <= 1e-6, "version {} mixed answers", r.model_version);
                    }
                    seen[r.model_version as usize] += 1;
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let refused = e.swap(&bad);
    assert!(matches!(refused, Err(Error::CorruptFile { .. })), "{refused:?}");
    assert_eq!(e.model_version(), 1, "a bad file must leave the old model serving");
    let v = e.swap_in_background(p2.clone()).join().unwrap().unwrap();
    assert_eq!(e.model_version(), v);
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = [0usize; 3];
    for r in readers {
        let s = r.join().unwrap();
        (0..3).for_each(|i| total[i] += s[i]);
    }
    assert!(total[1] > 0, "no request served by version 1");
    assert_eq!(e.score(&req).unwrap().model_version, v);
}

#[test]
fn a_full_queue_answers_overloaded() {
    let ds = data();
    let m = model(&ds, 8);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.twm");
    m.save(&path).unwrap();
    let e = Arc::new(Engine::open(&path, EngineConfig { queue_capacity: 1, max_batch_requests: 1, ..cfg(Variant::Twin, true) }).unwrap());
    let req = request_for(&ds, 2, Variant::Twin, None, (0..500).collect());
    let hs: Vec<_> = (0..16)
        .map(|_| {
            let (e, req) = (e.clone(), req.clone());
            std::thread::spawn(move || (0..5).map(|_| e.score(&req)).collect::<Vec<_>>())
        })
        .collect();
    let (mut ok, mut over) = (0, 0);
    for h in hs {
        for r in h.join().unwrap() {
            match r {
                Ok(_) => ok += 1,
                Err(Error::Overloaded { queue: 1 }) => over += 1,
                Err(other) => panic!("unexpected {other}"),
            }
        }
    }
    assert!(ok > 0 && over > 0, "ok {ok}, overloaded {over}");
}

/// Options that would size an allocation or a wait absurdly are refused by name at open, never
/// an abort or a request left waiting for ever.
#[test]
fn absurd_options_are_refused() {
    let ds = data();
    let m = model(&ds, 8);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.twm");
    m.save(&path).unwrap();
    let base = cfg(Variant::Twin, true);
    let cases: Vec<(EngineConfig, &str)> = vec![
        (EngineConfig { queue_capacity: 1 << 40, ..base.clone() }, "queue_capacity = 1099511627776 exceeds the limit"),
        (
            EngineConfig { max_wait: Duration::from_micros(u64::MAX), ..base.clone() },
            "max_wait_us = 18446744073709551615 exceeds the limit",
        ),
        (EngineConfig { max_batch_requests: usize::MAX, ..base.clone() }, "max_batch_requests"),
        (EngineConfig { max_candidates: 1 << 30, ..base.clone() }, "max_candidates"),
    ];
    for (c, needle) in cases {
        let e = Engine::open(&path, c).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(needle), "{needle:?} not in {e:?}");
    }
}
