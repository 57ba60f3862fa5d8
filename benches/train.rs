//! W3 (BENCHMARKS.md): one training step (forward + backward + optimizer) at batch 512 with a
//! lifelong sequence of L behaviours (TWIN) or L/10 clusters (TWIN-V2), short-term 50.
//! Group `train`, ids `<backend>/<variant>/L=<L>`. The CPU runs L = 1000 only unless
//! `TWIN_BENCH_FULL=1`; items default to 10^5 here (10^6 in W3: `TWIN_BENCH_ITEMS`), which only
//! changes the embedding tables' size, not the work per step.
//! On a GPU backend the attention and scatter-adds run on the device, GEMMs on the host.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use twin_engine::backend::{self, Backend, BackendChoice, BackendKind};
use twin_engine::model::{Model, ModelConfig};
use twin_engine::train::optim::{OptimConfig, Optimizer};
use twin_engine::train::step::{self, BackendOps, CpuOps, Weights};
use twin_engine::train::Variant;

const B: usize = 512;

fn n_items() -> usize {
    std::env::var("TWIN_BENCH_ITEMS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000)
}

fn bench_train(c: &mut Criterion) {
    let n = n_items();
    let items = twin_engine::bench::train::items(n);
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
            let b = twin_engine::bench::train::batch(&model.config, B, gsu_len, v == Variant::TwinV2, 7);
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
