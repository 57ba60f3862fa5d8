//! Training through a GPU backend's kernels (attention forward/backward and the deterministic
//! scatter-adds) follows the CPU reference's loss curve for 100 steps, and is the same run to run.

use crate::common::{small, variants};
use crate::parity_test;
use twin_engine::data::{generate, SynthConfig};
use twin_engine::model::{Model, ModelConfig};
use twin_engine::train::optim::{OptimConfig, Optimizer};
use twin_engine::train::step::{self, BackendOps, CpuOps, Ops, Weights};
use twin_engine::train::{Examples, Split, Variant};

const STEPS: usize = 100;

/// 100 steps, or 20 under `TWIN_PARITY_SMALL` (the emulated CUDA run).
fn steps() -> usize {
    if small() {
        20
    } else {
        STEPS
    }
}
/// Loss-curve tolerance: f32 rounding differs between kernels and compounds through 100 Adam
/// steps; anything larger means a wrong gradient (a 1% gradient error moves it by ~1e-2).
const LOSS_ATOL: f64 = 2e-3;

fn run(
    ops: &dyn Fn(&Model, &twin_engine::train::Batch) -> step::StepOut<f32>,
    model: &Model,
    batches: &[twin_engine::train::Batch],
) -> (Vec<f64>, Model) {
    let mut m = model.clone();
    let mut opt = Optimizer::new(&m, OptimConfig { lr: 3e-3, ..OptimConfig::default() });
    let mut losses = Vec::with_capacity(steps());
    for i in 0..steps() {
        let out = ops(&m, &batches[i % batches.len()]);
        losses.push(out.loss);
        opt.update(&mut m, &out.grads.unwrap()).unwrap();
    }
    (losses, m)
}

fn with<O: Ops<f32>>(o: &O, v: Variant) -> impl Fn(&Model, &twin_engine::train::Batch) -> step::StepOut<f32> + '_ {
    move |m, b| step::step(o, &Weights::of(m), v, b, true).unwrap()
}

#[test]
fn loss_curve_follows_cpu_for_100_steps() {
    let ds = generate(&SynthConfig {
        n_users: 60,
        n_items: 500,
        n_authors: 50,
        n_topics: 12,
        min_len: 40,
        max_len: 600,
        samples_per_user: 8,
        seed: 9,
        ..SynthConfig::default()
    })
    .unwrap();
    let split = Split::by_time(&ds, 0.2).unwrap();
    let mut cfg = ModelConfig::for_items(&ds.items);
    cfg.mlp_hidden = vec![32, 16];
    let model = Model::init(cfg, &ds.items, 3).unwrap();
    for v in [Variant::Twin, Variant::DinShort] {
        let ex = Examples::new(&ds, v, None, 10_000, 50).unwrap();
        let batches: Vec<_> = split.train.chunks(32).map(|c| ex.batch(c).unwrap()).collect();
        let (want, want_m) = run(&with(&CpuOps, v), &model, &batches);
        assert!(want[steps() - 10..].iter().sum::<f64>() < want[..10].iter().sum::<f64>(), "the CPU run must learn");
        let unders = variants();
        if unders.is_empty() {
            eprintln!("parity train: no GPU backend compiled in or present; nothing to compare");
        }
        // The op-by-op step (host-slice wrappers; `twin train` runs the device step): the first
        // configuration of each backend kind (the others differ in the online path only).
        let mut seen = Vec::new();
        for u in unders {
            if seen.contains(&u.be.kind()) {
                continue;
            }
            seen.push(u.be.kind());
            let ops = BackendOps(u.be.as_ref());
            let (got, got_m) = run(&with(&ops, v), &model, &batches);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= LOSS_ATOL, "{} {v}: step {i} loss {g} vs CPU {w}", u.label);
            }
            let (wo_g, wo_w) = (&got_m.param("w_o").unwrap().data, &want_m.param("w_o").unwrap().data);
            let max_diff = wo_g.iter().zip(wo_w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(max_diff < 5e-3, "{} {v}: W^o after {} steps differs by {max_diff}", u.label, steps());
            // Same backend, same inputs: bit-identical losses (no order-dependent atomics).
            let (again, _) = run(&with(&ops, v), &model, &batches[..]);
            assert_eq!(again, got, "{} {v}: two runs differ", u.label);
            eprintln!(
                "parity train {} {v}: max |loss - cpu| = {:.2e} over {} steps",
                u.label,
                got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max),
                steps()
            );
        }
    }
}

/// The device-resident step (`train::device_step`): parameters and optimizer state stay on the
/// backend, a step is one upload and one download on CUDA (the emulator in CI) and on wgpu
/// (lavapipe), and its loss curve and trained parameters follow the host step's (CPU reference +
/// the host optimizer) for 100 steps (20 under TWIN_PARITY_SMALL), for every variant: no-seq,
/// din-short, sim-soft, twin and twin-v2 (clusters, `ln n`), with K = 8 so the GSU drops rows
/// (histories of 5 to 60). Also on the CPU backend itself, where the same code runs on host
/// tensors.
#[test]
fn device_step_follows_the_host_step() {
    use twin_engine::backend::BackendKind;
    use twin_engine::train::device_step::DeviceTrainer;
    let ds = generate(&SynthConfig {
        n_users: 60,
        n_items: 500,
        n_authors: 50,
        n_topics: 12,
        min_len: 5,
        max_len: 60,
        samples_per_user: 8,
        seed: 10,
        ..SynthConfig::default()
    })
    .unwrap();
    let split = Split::by_time(&ds, 0.2).unwrap();
    let mut cfg = ModelConfig::for_items(&ds.items);
    cfg.mlp_hidden = vec![32, 16];
    cfg.top_k = 8;
    let model = Model::init(cfg, &ds.items, 4).unwrap();
    let users: Vec<u32> = (0..ds.n_users() as u32).collect();
    let (cs, _) = twin_engine::cluster::cluster_users(
        crate::common::cpu().as_ref(),
        &ds,
        &users,
        Some(split.time),
        model.item_embeddings(),
        model.config.id_dim,
        &twin_engine::cluster::ClusterConfig::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let opt = OptimConfig { lr: 3e-3, ..OptimConfig::default() };
    for v in [Variant::NoSeq, Variant::DinShort, Variant::SimSoft, Variant::Twin, Variant::TwinV2] {
        let ex = Examples::new(&ds, v, if v == Variant::TwinV2 { Some(&cs) } else { None }, 10_000, 50).unwrap();
        let batches: Vec<_> = split.train.chunks(32).map(|c| ex.batch(c).unwrap()).collect();
        if v.uses_long() {
            let dropped = batches.iter().any(|b| b.long_offsets.windows(2).any(|w| w[1] - w[0] > 8));
            assert!(dropped, "{v}: no history longer than K = 8: the GSU would select nothing");
        }
        let (want, want_m) = run(&with(&CpuOps, v), &model, &batches);
        assert!(want[steps() - 10..].iter().sum::<f64>() < want[..10].iter().sum::<f64>(), "{v}: the CPU run must learn");
        let mut unders: Vec<(String, std::sync::Arc<dyn twin_engine::backend::Backend>)> =
            variants().into_iter().map(|u| (u.label, u.be)).collect();
        unders.push(("cpu (host tensors)".into(), crate::common::cpu()));
        let mut seen = Vec::new();
        for (label, be) in unders {
            // Every step on the first configuration of each backend kind; 20 on the others (their
            // options change the online path, not the training ops).
            let n = if seen.contains(&be.kind()) { steps().min(20) } else { steps() };
            seen.push(be.kind());
            let mut tr = DeviceTrainer::new(be.as_ref(), &model, v, opt).unwrap();
            let mut worst = 0f64;
            for i in 0..n {
                let before = be.transfers();
                let got = tr.step(be.as_ref(), &batches[i % batches.len()]).unwrap();
                let t = be.transfers().since(before);
                worst = worst.max((got - want[i]).abs());
                assert!((got - want[i]).abs() <= LOSS_ATOL, "{label} {v}: step {i} loss {got} vs host {}", want[i]);
                if be.kind() != BackendKind::Cpu {
                    assert_eq!((t.h2d_calls, t.d2h_calls), (1, 1), "{label} {v}: step {i} transfers {t:?}");
                }
                if i == 0 {
                    eprintln!("device step {v} on {label}: transfers per step {t:?}");
                }
            }
            eprintln!("device step {v} on {label}: max |loss - host| = {worst:.2e} over {n} steps");
            if n < steps() {
                continue;
            }
            let mut got_m = model.clone();
            tr.download_into(be.as_ref(), &mut got_m).unwrap();
            let names: &[&str] = if v == Variant::NoSeq {
                &["item_emb", "context_emb", "mlp_w0", "mlp_b2"]
            } else {
                &["item_emb", "w_k", "w_o", "w_vc", "beta", "mlp_w0"]
            };
            for name in names {
                let (g, w) = (&got_m.param(name).unwrap().data, &want_m.param(name).unwrap().data);
                let max_diff = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(max_diff < 5e-3, "{label} {v}: {name} after {} steps differs by {max_diff}", steps());
            }
        }
    }
}

// `train::trainer::train` on a GPU backend runs the device-resident step and evaluates through
// its forward pass: its loss curve and test metrics follow the CPU run's, and stopping after epoch 1, resuming from the checkpoint (parameters
// and optimizer state synced back from the device) and finishing gives the uninterrupted run's
// parameters, optimizer state and losses bit for bit.
parity_test!(trainer_on_a_gpu_is_device_resident_and_resumes_exactly, |gpu, cpu| {
    use twin_engine::train::trainer::{self, TrainConfig, TrainState};
    let ds = generate(&SynthConfig {
        n_users: 30,
        n_items: 300,
        n_authors: 30,
        n_topics: 10,
        min_len: 5,
        max_len: 40,
        samples_per_user: 4,
        seed: 12,
        ..SynthConfig::default()
    })
    .unwrap();
    let split = Split::by_time(&ds, 0.25).unwrap();
    let mut cfg = ModelConfig::for_items(&ds.items);
    cfg.mlp_hidden = vec![16, 8];
    cfg.top_k = 6;
    let model = Model::init(cfg, &ds.items, 2).unwrap();
    let tc =
        TrainConfig { variant: Variant::Twin, epochs: 2, batch_size: 32, seed: 3, optim: OptimConfig { lr: 3e-3, ..Default::default() } };
    let ex = Examples::new(&ds, Variant::Twin, None, 10_000, 50).unwrap();
    let mut quiet = |_: twin_engine::train::trainer::Progress| {};
    let mut host = TrainState::new(model.clone(), tc.clone()).unwrap();
    trainer::train(&mut host, None, &ex, &split.train, &ex, &split.test, None, &mut quiet).unwrap();
    let label = gpu.describe();
    let be = gpu.as_ref();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("run.twinckpt");
    let before = be.transfers();
    let mut full = TrainState::new(model.clone(), tc.clone()).unwrap();
    trainer::train(&mut full, Some(be), &ex, &split.train, &ex, &split.test, None, &mut quiet).unwrap();
    let moved = be.transfers().since(before);
    let steps = full.step_losses.len() as u64;
    for (i, (g, w)) in full.step_losses.iter().zip(&host.step_losses).enumerate() {
        assert!((g - w).abs() as f64 <= LOSS_ATOL, "{}: step {i} loss {g} vs host {w}", label);
    }
    // One upload a step and a test batch; per epoch the parameters and optimizer state go up
    // once (at most 3 tensors each). Downloads: one a step and a test batch, and the sync.
    let (epochs, eval_batches) = (tc.epochs as u64, split.test.len().div_ceil(256) as u64);
    let tensors = 3 * model.params().count() as u64;
    let bound = steps + epochs * (eval_batches + tensors);
    assert!(moved.h2d_calls <= bound, "{}: {} uploads, bound {bound} ({steps} steps)", label, moved.h2d_calls);
    assert!(moved.d2h_calls <= bound, "{}: {} downloads, bound {bound} ({steps} steps)", label, moved.d2h_calls);
    for (g, w) in full.reports.iter().zip(&host.reports) {
        assert!((g.test.auc - w.test.auc).abs() < 2e-3, "{}: test AUC {} vs host {}", label, g.test.auc, w.test.auc);
        assert!((g.test.logloss - w.test.logloss).abs() < 2e-3, "{}: test logloss {} vs host {}", label, g.test.logloss, w.test.logloss);
    }
    let mut part = TrainState::new(model.clone(), TrainConfig { epochs: 1, ..tc.clone() }).unwrap();
    trainer::train(&mut part, Some(be), &ex, &split.train, &ex, &split.test, Some(&ck), &mut quiet).unwrap();
    let mut resumed = TrainState::load(&ck).unwrap();
    resumed.cfg.epochs = 2;
    trainer::train(&mut resumed, Some(be), &ex, &split.train, &ex, &split.test, None, &mut quiet).unwrap();
    assert_eq!(resumed.step_losses, full.step_losses, "{}: resumed losses differ", label);
    assert!(resumed.model == full.model, "{}: resumed parameters differ from the uninterrupted run", label);
    assert!(resumed.optim == full.optim, "{}: resumed optimizer state differs", label);
    // Standalone evaluation on the GPU (device forward pass) agrees with the host's.
    let (gm, glen) = trainer::evaluate(Some(be), &full.model, &ex, &split.test, 64, &mut |_, _| {}).unwrap();
    let (hm, hlen) = trainer::evaluate(None, &full.model, &ex, &split.test, 64, &mut |_, _| {}).unwrap();
    assert!((gm.auc - hm.auc).abs() < 1e-4 && (gm.logloss - hm.logloss).abs() < 1e-5, "{}: eval {gm:?} vs host {hm:?}", label);
    assert_eq!(glen, hlen);
    eprintln!("trainer on {}: {steps} device steps, {moved:?}", label);
});
