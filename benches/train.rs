//! W3 (BENCHMARKS.md): one training step (forward + backward + optimizer) at batch 512 with a
//! lifelong sequence of L behaviours (TWIN) or L/10 clusters (TWIN-V2), short-term 50.
//! Group `train`, ids `<backend>/<variant>/L=<L>`. The CPU runs L = 1000 only unless
//! `TWIN_BENCH_FULL=1`; items default to 10^5 here (10^6 in W3: `TWIN_BENCH_ITEMS`), which only
//! changes the embedding tables' size, not the work per step.
//! On a GPU backend the attention and scatter-adds run on the device, GEMMs on the host.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use twin_engine::backend::{self, Backend, BackendChoice, BackendKind};
use twin_engine::data::Items;
use twin_engine::features;
use twin_engine::model::{Model, ModelConfig};
use twin_engine::rng::SplitMix64;
use twin_engine::train::optim::{OptimConfig, Optimizer};
use twin_engine::train::step::{self, BackendOps, CpuOps, Weights};
use twin_engine::train::{Batch, Variant};

const B: usize = 512;

fn n_items() -> usize {
    std::env::var("TWIN_BENCH_ITEMS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000)
}

fn batch(cfg: &ModelConfig, l: usize, log_n: bool, seed: u64) -> Batch {
    let mut r = SplitMix64::new(seed);
    let offs = cfg.cross_offsets();
    let mut b = Batch { long_offsets: vec![0], short_offsets: vec![0], ..Batch::default() };
    let row = |r: &mut SplitMix64, items: &mut Vec<u32>, cross: &mut Vec<u32>| {
        items.push(r.below(cfg.n_items as u64) as u32);
        for j in 0..cfg.n_cross() {
            cross.push(offs[j] + r.below((offs[j + 1] - offs[j]) as u64) as u32);
        }
    };
    for s in 0..B {
        b.target.push(r.below(cfg.n_items as u64) as u32);
        b.context.push((s % 24) as u32);
        b.label.push(r.below(2) as f32);
        b.user.push(s as u32);
        for _ in 0..l {
            row(&mut r, &mut b.long_item, &mut b.long_cross);
            b.long_log_n.push(if log_n { ((1 + r.below(19)) as f32).ln() } else { 0.0 });
        }
        b.long_offsets.push(b.long_item.len() as u32);
        for _ in 0..50 {
            row(&mut r, &mut b.short_item, &mut b.short_cross);
        }
        b.short_offsets.push(b.short_item.len() as u32);
    }
    b
}

fn bench_train(c: &mut Criterion) {
    let n = n_items();
    let mut r = SplitMix64::new(1);
    let items = Items {
        author: (0..n).map(|_| r.below(n as u64 / 10 + 1) as u32).collect(),
        topic: (0..n).map(|_| r.below(64) as u32).collect(),
        duration_bucket: (0..n).map(|_| r.below(features::DURATION_BUCKETS as u64) as u32).collect(),
        external_id: (0..n as u64).collect(),
        n_authors: (n / 10 + 1) as u32,
        n_topics: 64,
    };
    let model = Model::init(ModelConfig::for_items(&items), &items, 1).unwrap();
    let full = std::env::var_os("TWIN_BENCH_FULL").is_some();
    let mut bes: Vec<std::sync::Arc<dyn Backend>> = vec![backend::open(BackendChoice::Cpu).unwrap().0];
    for ch in [BackendChoice::Cuda, BackendChoice::Wgpu] {
        if let Ok((b, _)) = backend::open(ch) {
            bes.push(b);
        }
    }
    let mut g = c.benchmark_group("train");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(B as u64));
    for be in &bes {
        let cpu = be.kind() == BackendKind::Cpu;
        for (v, l) in [(Variant::Twin, 1_000usize), (Variant::TwinV2, 1_000), (Variant::Twin, 10_000), (Variant::TwinV2, 10_000)] {
            if cpu && l > 1_000 && !full {
                continue;
            }
            let gsu_len = if v == Variant::TwinV2 { l / 10 } else { l };
            let b = batch(&model.config, gsu_len, v == Variant::TwinV2, 7);
            let mut m = model.clone();
            let mut opt = Optimizer::new(&m, OptimConfig::default());
            let id = BenchmarkId::new(format!("{}/{}", be.kind().name(), v), format!("L={l}"));
            g.bench_function(id, |bench| {
                bench.iter(|| {
                    let out = if cpu {
                        step::step(&CpuOps, &Weights::of(&m), v, &b, true).unwrap()
                    } else {
                        step::step(&BackendOps(be.as_ref()), &Weights::of(&m), v, &b, true).unwrap()
                    };
                    opt.update(&mut m, &out.grads.unwrap()).unwrap();
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_train);
criterion_main!(benches);
