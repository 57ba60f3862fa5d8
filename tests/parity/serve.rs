//! The serving engine on every GPU backend gives the CPU engine's CTRs (full forward pass:
//! GSU/ESU, short-term attention and the MLP on the backend), for raw sequences and clusters, with
//! batching on; and a batch costs one upload and one download where the backend is device-resident.

use std::sync::Arc;

use crate::common::variants;
use crate::parity_test;
use crate::split_test;
use twin_engine::backend::cpu::CpuBackend;
use twin_engine::data::{generate, SynthConfig};
use twin_engine::model::{Model, ModelConfig};
use twin_engine::serve::{Behaviour, Engine, EngineConfig, ScoreRequest};
use twin_engine::train::Variant;

fn fixture() -> (tempfile::TempDir, std::path::PathBuf, Vec<ScoreRequest>) {
    let ds = generate(&SynthConfig {
        n_users: 12,
        n_items: 700,
        n_authors: 70,
        n_topics: 12,
        min_len: 20,
        max_len: 1500,
        samples_per_user: 3,
        seed: 21,
        ..SynthConfig::default()
    })
    .unwrap();
    let mut cfg = ModelConfig::for_items(&ds.items);
    cfg.mlp_hidden = vec![64, 32];
    let m = Model::init(cfg, &ds.items, 8).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.twm");
    m.save(&path).unwrap();
    let b = &ds.behaviours;
    let reqs: Vec<ScoreRequest> = (0..ds.samples.len())
        .map(|s| {
            let (u, t) = (ds.samples.user[s] as usize, ds.samples.request_time[s]);
            let hist = ds.history_before(u, t);
            let raw: Vec<Behaviour> =
                hist.clone().map(|r| Behaviour::raw(b.item[r], b.timestamp[r], b.play_time[r], b.duration[r])).collect();
            let mut long = raw.clone();
            if s % 2 == 1 {
                // Cluster-like rows: sizes above 1 exercise the ln n term.
                long.iter_mut().enumerate().for_each(|(i, x)| x.size = 1 + (i % 7) as u32);
            }
            let short = raw[raw.len().saturating_sub(50)..].to_vec();
            ScoreRequest {
                request_time: t,
                long,
                short,
                candidates: (0..9).map(|c| ((s * 31 + c * 77) % 700) as u32).collect(),
                debug: false,
            }
        })
        .collect();
    (dir, path, reqs)
}

#[test]
fn engine_matches_cpu_on_every_backend() {
    let (_dir, path, reqs) = fixture();
    for v in [Variant::Twin, Variant::TwinV2, Variant::DinShort] {
        let ecfg = EngineConfig { variant: v, ..EngineConfig::default() };
        let cpu = Engine::with_backend(&path, ecfg.clone(), Arc::new(CpuBackend::new()), "cpu".into()).unwrap();
        let want: Vec<Vec<f32>> = reqs.iter().map(|r| cpu.score(r).unwrap().ctr).collect();
        let unders = variants();
        if unders.is_empty() {
            eprintln!("parity serve: no GPU backend compiled in or present; nothing to compare");
        }
        for u in unders {
            let e = Engine::with_backend(&path, ecfg.clone(), u.be.clone(), u.label.clone()).unwrap();
            let mut worst = 0f32;
            for (i, r) in reqs.iter().enumerate() {
                let got = e.score(r).unwrap().ctr;
                for (g, w) in got.iter().zip(&want[i]) {
                    // f32 tables: only the reduction order differs (observed ≤ 6e-8 on lavapipe).
                    assert!((g - w).abs() <= 1e-5, "{} {v} request {i}: {g} vs cpu {w}", u.label);
                    worst = worst.max((g - w).abs());
                }
            }
            eprintln!("parity serve {} {v}: max |ctr - cpu| = {worst:.2e} over {} requests", u.label, reqs.len());
        }
    }
}

// The whole forward pass is device-resident on CUDA (the emulator in CI) and on wgpu: one serving
// batch is one upload and one download of data, whatever the number of candidates or the
// sequence lengths, debug output included. (wgpu's per-dispatch parameter blocks, CUDA's kernel
// arguments, are counted apart as `h2d_aux_*`.)
parity_test!(one_serving_batch_is_one_upload_and_one_download, |gpu, cpu| {
    let (_dir, path, reqs) = fixture();
    for v in [Variant::Twin, Variant::TwinV2, Variant::DinShort] {
        let label = gpu.describe();
        let ecfg = EngineConfig { variant: v, batching: false, ..EngineConfig::default() };
        let e = Engine::with_backend(&path, ecfg, gpu.clone(), label.clone()).unwrap();
        for (i, r) in reqs.iter().enumerate().take(4) {
            let mut r = r.clone();
            r.debug = i % 2 == 1;
            let before = gpu.transfers();
            let got = e.score(&r).unwrap();
            let t = gpu.transfers().since(before);
            assert!(got.ctr.iter().all(|c| c.is_finite() && *c > 0.0 && *c < 1.0), "{} {v}: ctr {:?}", label, got.ctr);
            eprintln!("serving transfers {} {v} request {i} (debug {}): {t:?}", label, r.debug);
            // A host backend (the fast CPU path) moves nothing.
            let want = if gpu.kind() == twin_engine::backend::BackendKind::Cpu { (0, 0) } else { (1, 1) };
            assert_eq!((t.h2d_calls, t.d2h_calls), want, "{} {v} request {i}: {t:?}", label);
        }
    }
});

// With tables cut across storage bindings (wgpu capped at 64 KiB), the device-resident forms
// cannot bind their operands and fall back to the host implementations over device tensors
// (paying transfers): the CTRs must still equal the CPU engine's.
split_test!(engine_matches_cpu_when_tables_are_split, |u, _reference| {
    let (_dir, path, reqs) = fixture();
    let ecfg = EngineConfig { variant: Variant::Twin, batching: false, ..EngineConfig::default() };
    let cpu = Engine::with_backend(&path, ecfg.clone(), Arc::new(CpuBackend::new()), "cpu".into()).unwrap();
    let e = Engine::with_backend(&path, ecfg.clone(), u.be.clone(), u.label.clone()).unwrap();
    for (i, r) in reqs.iter().enumerate().take(6) {
        let (got, want) = (e.score(r).unwrap().ctr, cpu.score(r).unwrap().ctr);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5, "{} request {i}: {g} vs cpu {w}", u.label);
        }
    }
});
