//! Training: gradients against central finite differences in f64 for every parameter group
//! and every variant, optimizers, metrics, leakage rules, checkpoints and exact resume.

use twin_engine::cluster::{cluster_users, ClusterConfig};
use twin_engine::data::{generate, Items, SynthConfig};
use twin_engine::features;
use twin_engine::model::{Model, ModelConfig};
use twin_engine::rng::SplitMix64;
use twin_engine::train::optim::OptimConfig;
use twin_engine::train::step::{self, CpuOps, Grad, Weights};
use twin_engine::train::trainer::{self, Progress, TrainState};
use twin_engine::train::{Batch, Examples, Split, TrainConfig, Variant};

fn items(n: usize, seed: u64) -> Items {
    let mut r = SplitMix64::new(seed);
    Items {
        author: (0..n).map(|_| r.below(7) as u32).collect(),
        topic: (0..n).map(|_| r.below(5) as u32).collect(),
        duration_bucket: (0..n).map(|_| r.below(features::DURATION_BUCKETS as u64) as u32).collect(),
        external_id: (0..n as u64).collect(),
        n_authors: 7,
        n_topics: 5,
    }
}

/// Small widths so f64 finite differences over many elements stay fast; same code paths.
fn small_config(n_items: usize) -> ModelConfig {
    let mut c = ModelConfig::new(n_items, 7, 5);
    c.id_dim = 6;
    c.small_dim = 3;
    c.heads = 2;
    c.d_head = 4;
    c.cross_dim = 3;
    c.mlp_hidden = vec![12, 7];
    c.short_len = 6;
    c.top_k = 5;
    c
}

/// A random batch: long rows (some samples longer than top_k, one empty), short rows, labels.
fn random_batch(cfg: &ModelConfig, b: usize, seed: u64, with_log_n: bool) -> Batch {
    let mut r = SplitMix64::new(seed);
    let offs = cfg.cross_offsets();
    let mut bt = Batch { long_offsets: vec![0], short_offsets: vec![0], ..Batch::default() };
    for s in 0..b {
        bt.target.push(r.below(cfg.n_items as u64) as u32);
        bt.context.push(r.below(cfg.n_context as u64) as u32);
        bt.label.push(r.below(2) as f32);
        bt.user.push(s as u32);
        let long = if s == 1 { 0 } else { 1 + r.below(14) as usize };
        for _ in 0..long {
            bt.long_item.push(r.below(cfg.n_items as u64) as u32);
            for j in 0..cfg.n_cross() {
                bt.long_cross.push(offs[j] + r.below((offs[j + 1] - offs[j]) as u64) as u32);
            }
            bt.long_log_n.push(if with_log_n { ((1 + r.below(19)) as f32).ln() } else { 0.0 });
        }
        bt.long_offsets.push(bt.long_item.len() as u32);
        let short = r.below(cfg.short_len as u64 + 1) as usize;
        for _ in 0..short {
            bt.short_item.push(r.below(cfg.n_items as u64) as u32);
            for j in 0..cfg.n_cross() {
                bt.short_cross.push(offs[j] + r.below((offs[j + 1] - offs[j]) as u64) as u32);
            }
        }
        bt.short_offsets.push(bt.short_item.len() as u32);
    }
    bt
}

fn f64_params(m: &Model) -> Vec<Vec<f64>> {
    m.params().map(|(_, t)| t.data.iter().map(|&x| x as f64).collect()).collect()
}

fn weights<'a>(m: &'a Model, p: &'a [Vec<f64>]) -> Weights<'a, f64> {
    Weights {
        cfg: &m.config,
        p: p.iter().map(|v| v.as_slice()).collect(),
        item_author: &m.item_author,
        item_topic: &m.item_topic,
        item_duration: &m.item_duration_bucket,
    }
}

fn loss64(m: &Model, p: &[Vec<f64>], v: Variant, b: &Batch) -> f64 {
    step::step(&CpuOps, &weights(m, p), v, b, false).unwrap().loss
}

/// Every parameter tensor: analytic gradient vs central differences at sampled elements
/// (rows the batch touches for embedding tables, random elements otherwise).
fn check_gradients(v: Variant, seed: u64) {
    let cfg = small_config(40);
    let it = items(40, seed);
    let model = Model::init(cfg.clone(), &it, seed).unwrap();
    let batch = random_batch(&cfg, 6, seed + 1, v == Variant::TwinV2);
    let p = f64_params(&model);
    let out = step::step(&CpuOps, &weights(&model, &p), v, &batch, true).unwrap();
    let grads = out.grads.unwrap();
    let names: Vec<&str> = model.params().map(|(n, _)| n).collect();
    let mut r = SplitMix64::new(seed ^ 0xfd);
    let mut checked = 0;
    for (ti, (name, t)) in model.params().enumerate() {
        let cols: usize = t.shape.iter().skip(1).product();
        let dense = grads[ti].to_dense(t.numel(), cols);
        let mut elems: Vec<usize> = match &grads[ti] {
            Grad::Rows { rows, .. } => rows.iter().flat_map(|&row| (0..cols).map(move |c| row as usize * cols + c)).collect(),
            Grad::Dense(_) => (0..t.numel()).collect(),
        };
        // Up to 12 elements per tensor, plus every nonzero-gradient element of tiny tensors.
        if elems.len() > 12 {
            for i in 0..12 {
                let j = i + r.below((elems.len() - i) as u64) as usize;
                elems.swap(i, j);
            }
            elems.truncate(12);
        }
        for e in elems {
            let eps = 1e-6;
            let mut pp = p.clone();
            pp[ti][e] += eps;
            let lp = loss64(&model, &pp, v, &batch);
            pp[ti][e] -= 2.0 * eps;
            let lm = loss64(&model, &pp, v, &batch);
            let fd = (lp - lm) / (2.0 * eps);
            let an = dense[e];
            assert!(
                (fd - an).abs() <= 1e-7 + 1e-5 * an.abs().max(fd.abs()),
                "{v} {name}[{e}]: analytic {an:e} vs finite difference {fd:e}"
            );
            checked += 1;
        }
        // Rows absent from a row gradient must have zero true gradient: perturb one.
        if let Grad::Rows { rows, .. } = &grads[ti] {
            let n_rows = t.numel() / cols;
            if let Some(untouched) = (0..n_rows as u32).find(|x| !rows.contains(x)) {
                let e = untouched as usize * cols;
                let mut pp = p.clone();
                pp[ti][e] += 1e-3;
                assert_eq!(loss64(&model, &pp, v, &batch), out.loss, "{v} {name}: row {untouched} has no gradient but moves the loss");
            }
        }
    }
    // Variants that ignore a module have exact zero gradients there.
    if !v.uses_long() && !v.uses_short() {
        let wk = names.iter().position(|&n| n == "w_k").unwrap();
        assert!(grads[wk].to_dense(p[wk].len(), 1).iter().all(|&g| g == 0.0));
    }
    assert!(checked > 100, "{checked}");
}

#[test]
fn gradients_match_finite_differences_for_every_variant() {
    for (i, v) in Variant::ALL.into_iter().enumerate() {
        check_gradients(v, 11 + i as u64);
    }
}

#[test]
fn gradients_at_default_widths() {
    // SPEC §6 widths (H = 144, D = 128, MLP 256-128-64), top-K 100 over sequences up to 130.
    let it = items(500, 5);
    let mut cfg = ModelConfig::new(500, 7, 5);
    cfg.short_len = 50;
    let model = Model::init(cfg.clone(), &it, 5).unwrap();
    let mut small = cfg.clone();
    small.short_len = 50;
    let mut batch = random_batch(&small, 3, 9, true);
    // Make sample 0 long enough for the GSU to select.
    let offs = cfg.cross_offsets();
    let mut r = SplitMix64::new(77);
    let extra = 130;
    let mut b2 = Batch { long_offsets: vec![0], short_offsets: batch.short_offsets.clone(), ..batch.clone() };
    b2.long_item.clear();
    b2.long_cross.clear();
    b2.long_log_n.clear();
    for s in 0..batch.len() {
        let n = if s == 0 { extra } else { (batch.long_offsets[s + 1] - batch.long_offsets[s]) as usize };
        for _ in 0..n {
            b2.long_item.push(r.below(500) as u32);
            for j in 0..3 {
                b2.long_cross.push(offs[j] + r.below((offs[j + 1] - offs[j]) as u64) as u32);
            }
            b2.long_log_n.push(((1 + r.below(19)) as f32).ln());
        }
        b2.long_offsets.push(b2.long_item.len() as u32);
    }
    batch = b2;
    let p = f64_params(&model);
    for v in [Variant::Twin, Variant::TwinV2] {
        let grads = step::step(&CpuOps, &weights(&model, &p), v, &batch, true).unwrap().grads.unwrap();
        for (ti, name) in ["w_q", "w_k", "w_v", "beta", "w_o", "mlp_w0"].iter().enumerate() {
            let idx = model.params().position(|(n, _)| n == *name).unwrap();
            let g = grads[idx].to_dense(p[idx].len(), 1);
            // The element with the largest gradient and one fixed element.
            let big = (0..g.len()).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
            for e in [big, (ti * 37) % g.len()] {
                let eps = 1e-6;
                let mut pp = p.clone();
                pp[idx][e] += eps;
                let lp = loss64(&model, &pp, v, &batch);
                pp[idx][e] -= 2.0 * eps;
                let lm = loss64(&model, &pp, v, &batch);
                let fd = (lp - lm) / (2.0 * eps);
                assert!((fd - g[e]).abs() <= 1e-7 + 1e-5 * g[e].abs(), "{v} {name}[{e}]: {} vs {fd}", g[e]);
            }
        }
    }
}

#[test]
fn f32_step_matches_f64_reference() {
    let cfg = small_config(40);
    let it = items(40, 3);
    let model = Model::init(cfg.clone(), &it, 3).unwrap();
    let batch = random_batch(&cfg, 9, 4, true);
    let p = f64_params(&model);
    for v in Variant::ALL {
        let a = step::step(&CpuOps, &Weights::of(&model), v, &batch, true).unwrap();
        let b = step::step(&CpuOps, &weights(&model, &p), v, &batch, true).unwrap();
        assert!((a.loss - b.loss).abs() < 1e-5, "{v}");
        for ((ga, gb), (name, t)) in a.grads.unwrap().iter().zip(b.grads.unwrap().iter()).zip(model.params()) {
            let cols: usize = t.shape.iter().skip(1).product();
            let (da, db) = (ga.to_dense(t.numel(), cols), gb.to_dense(t.numel(), cols));
            for (x, y) in da.iter().zip(&db) {
                assert!((*x as f64 - y).abs() <= 1e-6 + 1e-3 * y.abs(), "{v} {name}: {x} vs {y}");
            }
        }
    }
}

#[test]
fn bad_batches_are_typed_errors() {
    let cfg = small_config(40);
    let it = items(40, 3);
    let model = Model::init(cfg.clone(), &it, 3).unwrap();
    let good = random_batch(&cfg, 4, 4, false);
    let w = Weights::of(&model);
    let run = |b: &Batch| step::step(&CpuOps, &w, Variant::Twin, b, true).err().map(|e| e.to_string()).unwrap_or_default();
    let mut b = good.clone();
    b.target[2] = 40;
    assert!(run(&b).contains("target[2] = 40"), "{}", run(&b));
    let mut b = good.clone();
    b.long_item.push(1);
    assert!(run(&b).contains("long"), "{}", run(&b));
    let mut b = good.clone();
    b.label[0] = f32::NAN;
    assert!(run(&b).contains("label"));
    let mut b = good.clone();
    b.long_cross[1] = 0; // feature 1's rows start at 10
    assert!(run(&b).contains("long_cross[1] = 0"), "{}", run(&b));
    let mut b = good.clone();
    b.long_log_n[0] = f32::INFINITY;
    assert!(run(&b).contains("long_log_n"));
    let empty = Batch { long_offsets: vec![0], short_offsets: vec![0], ..Batch::default() };
    assert!(run(&empty).contains("batch"));
}

fn synth(users: usize, seed: u64) -> twin_engine::data::Dataset {
    generate(&SynthConfig {
        n_users: users,
        n_items: 400,
        n_authors: 40,
        n_topics: 12,
        min_len: 30,
        max_len: 400,
        samples_per_user: 10,
        seed,
        ..SynthConfig::default()
    })
    .unwrap()
}

#[test]
fn examples_never_see_the_future() {
    let ds = synth(30, 1);
    let split = Split::by_time(&ds, 0.3).unwrap();
    assert!(split.train.iter().all(|&i| ds.samples.request_time[i as usize] < split.time));
    assert!(split.test.iter().all(|&i| ds.samples.request_time[i as usize] >= split.time));
    assert_eq!(split.train.len() + split.test.len(), ds.samples.len());
    // Raw sequences: every long and short row strictly before the request time.
    let ex = Examples::new(&ds, Variant::Twin, None, 10_000, 50).unwrap();
    let all: Vec<u32> = (0..ds.samples.len() as u32).collect();
    let b = ex.batch(&all).unwrap();
    for s in 0..b.len() {
        let u = ds.samples.user[s] as usize;
        let t = ds.samples.request_time[s];
        let hist = ds.history_before(u, t);
        let n_long = (b.long_offsets[s + 1] - b.long_offsets[s]) as usize;
        assert_eq!(n_long, hist.len());
        let n_short = (b.short_offsets[s + 1] - b.short_offsets[s]) as usize;
        assert_eq!(n_short, hist.len().min(50));
        assert!(ds.behaviours.timestamp[hist.clone()].iter().all(|&x| x < t));
        // The sample's own target behaviour is not in its history.
        assert!(hist.end <= ds.user_range(u).end);
    }
    // Clusters from history before the split; a training sample sees only clusters wholly in its past.
    let model = Model::init(ModelConfig::for_items(&ds.items), &ds.items, 0).unwrap();
    let users: Vec<u32> = (0..ds.n_users() as u32).collect();
    let be = twin_engine::backend::cpu::CpuBackend::new();
    let (cs, _) =
        cluster_users(&be, &ds, &users, Some(split.time), model.item_embeddings(), 64, &ClusterConfig::default(), &mut |_, _| {}).unwrap();
    let exv = Examples::new(&ds, Variant::TwinV2, Some(&cs), 10_000, 50).unwrap();
    let b = exv.batch(&all).unwrap();
    let mut total_seen = 0;
    for s in 0..b.len() {
        let t = ds.samples.request_time[s];
        let u = ds.samples.user[s];
        let slot = cs.users.iter().position(|&x| x == u).unwrap();
        let r = cs.user_clusters(slot);
        let ur = ds.user_range(u as usize);
        let rows = b.long_offsets[s] as usize..b.long_offsets[s + 1] as usize;
        let visible: Vec<usize> =
            r.clone().filter(|&c| cs.cluster_members(c).iter().all(|&m| ds.behaviours.timestamp[ur.start + m as usize] < t)).collect();
        let covered: usize = visible.iter().map(|&c| cs.size[c] as usize).sum();
        let hist = ds.history_before(u as usize, t).len();
        // Every past behaviour exactly once: visible clusters plus the rest as singletons.
        assert_eq!(rows.len(), visible.len() + (hist - covered), "sample {s}");
        let sum_n: f64 = b.long_log_n[rows.clone()].iter().map(|&l| (l as f64).exp()).sum();
        assert!((sum_n - hist as f64).abs() < 1e-3 * hist as f64 + 1e-6, "sample {s}: Σn = {sum_n}, history {hist}");
        if t >= split.time {
            assert_eq!(visible.len(), r.len(), "a test sample sees every cluster");
        }
        total_seen += visible.len();
    }
    assert!(total_seen > 0);
    assert!(Examples::new(&ds, Variant::TwinV2, None, 100, 50).is_err());
}

fn quiet(_: Progress) {}

#[test]
fn training_lowers_the_loss_and_resume_is_exact() {
    let ds = synth(40, 2);
    let split = Split::by_time(&ds, 0.25).unwrap();
    let mut cfg = ModelConfig::for_items(&ds.items);
    cfg.mlp_hidden = vec![32, 16];
    let model = Model::init(cfg, &ds.items, 1).unwrap();
    let tc = TrainConfig { variant: Variant::Twin, epochs: 3, batch_size: 32, seed: 5, optim: OptimConfig::default() };
    let ex = Examples::new(&ds, Variant::Twin, None, 10_000, 50).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("run.twinckpt");

    let mut full = TrainState::new(model.clone(), tc.clone()).unwrap();
    let report = trainer::train(&mut full, None, &ex, &split.train, &ex, &split.test, Some(&ck), &mut quiet).unwrap();
    assert_eq!(report.epochs.len(), 3);
    let first: f32 = report.step_losses.iter().take(5).sum::<f32>() / 5.0;
    let last: f32 = report.step_losses.iter().rev().take(5).sum::<f32>() / 5.0;
    assert!(last < first, "loss did not fall: {first} -> {last}");
    assert!(report.epochs.iter().all(|e| e.test.auc.is_finite() && e.test.logloss.is_finite()));

    // Stop after epoch 1, resume from its checkpoint, finish: identical to the full run.
    let mut part = TrainState::new(model, TrainConfig { epochs: 1, ..tc.clone() }).unwrap();
    trainer::train(&mut part, None, &ex, &split.train, &ex, &split.test, Some(&ck), &mut quiet).unwrap();
    let mut resumed = TrainState::load(&ck).unwrap();
    assert_eq!(resumed, part);
    resumed.cfg.epochs = 3;
    trainer::train(&mut resumed, None, &ex, &split.train, &ex, &split.test, Some(&ck), &mut quiet).unwrap();
    resumed.cfg.epochs = 3;
    assert_eq!(resumed.model, full.model, "resumed parameters differ from the uninterrupted run");
    assert_eq!(resumed.step_losses, full.step_losses);
    assert_eq!(resumed.optim, full.optim);

    // A corrupt checkpoint is an error and the last good one survives a failed save.
    let bytes = std::fs::read(&ck).unwrap();
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(dir.path().join("bad.twinckpt"), &bad).unwrap();
    assert!(TrainState::load(&dir.path().join("bad.twinckpt")).is_err());
    std::fs::write(dir.path().join("short.twinckpt"), &bytes[..bytes.len() - 9]).unwrap();
    assert!(TrainState::load(&dir.path().join("short.twinckpt")).is_err());
    let mut nan = resumed.clone();
    nan.model.param_mut("w_o").unwrap().data[0] = f32::NAN;
    assert!(nan.save(&ck).is_err());
    assert_eq!(std::fs::read(&ck).unwrap(), bytes);
}

#[test]
fn sparse_updates_touch_only_gradient_rows() {
    let cfg = small_config(40);
    let it = items(40, 8);
    let mut model = Model::init(cfg.clone(), &it, 8).unwrap();
    let before = model.clone();
    let batch = random_batch(&cfg, 4, 3, false);
    let out = step::step(&CpuOps, &Weights::of(&model), Variant::Twin, &batch, true).unwrap();
    let grads = out.grads.unwrap();
    let mut opt = twin_engine::train::optim::Optimizer::new(&model, OptimConfig::default());
    opt.update(&mut model, &grads).unwrap();
    let Grad::Rows { rows, .. } = &grads[0] else { panic!("item_emb takes row gradients") };
    let (a, b) = (before.param("item_emb").unwrap(), model.param("item_emb").unwrap());
    let d = cfg.id_dim;
    for r in 0..40usize {
        let same = a.data[r * d..(r + 1) * d] == b.data[r * d..(r + 1) * d];
        assert_eq!(same, !rows.contains(&(r as u32)), "row {r}");
    }
    assert_ne!(before.param("w_q").unwrap(), model.param("w_q").unwrap());
}

/// A checkpoint whose bytes are intact (valid CRC) but whose values make no sense is refused
/// with an error naming the field, never a panic; version 1 checkpoints (no catalogue) load.
#[test]
fn checkpoint_values_are_validated() {
    use twin_engine::train::trainer::TrainState;
    let dir = tempfile::tempdir().unwrap();
    let ds = twin_engine::data::generate(&twin_engine::data::SynthConfig { n_users: 4, n_items: 50, ..Default::default() }).unwrap();
    let model = twin_engine::model::Model::init(twin_engine::model::ModelConfig::for_items(&ds.items), &ds.items, 1).unwrap();
    let mut st = TrainState::new(model, Default::default()).unwrap();
    st.bind_catalogue(&ds.items).unwrap();
    let p = dir.path().join("c.ckpt");
    st.save(&p).unwrap();
    assert_eq!(TrainState::load(&p).unwrap(), st);
    st.cfg.batch_size = 0;
    st.save(&p).unwrap();
    let e = TrainState::load(&p).unwrap_err().to_string();
    assert!(e.contains("batch_size") && e.contains("at least 1"), "{e}");
    st.cfg.batch_size = 8;
    st.cfg.optim.lr = -1.0;
    st.save(&p).unwrap();
    let e = TrainState::load(&p).unwrap_err().to_string();
    assert!(e.contains("lr") && e.contains("finite"), "{e}");
    // Another catalogue is refused; the same one binds.
    let other =
        twin_engine::data::generate(&twin_engine::data::SynthConfig { n_users: 4, n_items: 50, seed: 99, ..Default::default() }).unwrap();
    st.cfg.optim.lr = 1e-3;
    assert!(st.bind_catalogue(&ds.items).is_ok());
    let e = st.bind_catalogue(&other.items).unwrap_err().to_string();
    assert!(e.contains("another catalogue"), "{e}");
}
