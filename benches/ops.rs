//! Every engine op on every backend compiled in and present, beside the CPU baseline.
//! Groups are named by op stem; ids are `<backend>/<shape>`.
//!
//! These are per-op figures as a caller of the host-slice API sees them: criterion's wall clock
//! around validation, uploads, launches and downloads. The workload figures (W1-W3 on resident
//! inputs, device-event timing, floors, transfers per run) come from `twin bench`, which the GPU
//! kit runs. `TWIN_BENCH_BACKENDS=cuda,wgpu` limits the backends (default: all present).
//!
//! Shapes follow BENCHMARKS.md (W1 online path, W2 clustering). The CPU backend runs scaled-down
//! W1 shapes (2-core machines): set `TWIN_BENCH_FULL=1` on a GPU machine for the full ones.
//! `TWIN_BENCH_ITEMS` sets the table rows (default 10^6 as in W1).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use twin_engine::backend::cpu::segment_sum::segments_of;
use twin_engine::backend::{self, AttnSaved, Backend, BackendChoice, DType, GemmKind, KmeansBatch, OnlineRequests, OnlineTables, TOP_K};
use twin_engine::bench::online::{fill, requests, HostTables};
use twin_engine::bench::targets::cpu_bound;
use twin_engine::cluster::{cluster_users, ClusterConfig};
use twin_engine::data::{self, SynthConfig};
use twin_engine::rng::SplitMix64;

const H: usize = 4;
const D: usize = 128;

fn backends() -> Vec<Arc<dyn Backend>> {
    let wanted = std::env::var("TWIN_BENCH_BACKENDS").unwrap_or_else(|_| "cpu,cuda,wgpu".into());
    let mut v = Vec::new();
    for (name, choice) in [("cpu", BackendChoice::Cpu), ("cuda", BackendChoice::Cuda), ("wgpu", BackendChoice::Wgpu)] {
        if !wanted.split(',').any(|w| w.trim() == name) {
            continue;
        }
        if let Ok((b, _)) = backend::open(choice) {
            v.push(b);
        }
    }
    v
}

fn full() -> bool {
    std::env::var_os("TWIN_BENCH_FULL").is_some()
}

fn n_items() -> usize {
    std::env::var("TWIN_BENCH_ITEMS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000)
}

fn host_tables(n: usize) -> HostTables {
    HostTables::random(n).unwrap()
}

fn upload(be: &dyn Backend, h: &HostTables, dtype: DType) -> OnlineTables {
    h.upload(be, dtype == DType::F16).unwrap()
}

fn request(n_items: usize, l: usize, b: usize, seed: u64) -> OnlineRequests {
    requests(n_items, 1, l, b, seed)
}

/// W1 shapes (L, B) per backend: CPU-bound backends get the scaled-down list unless TWIN_BENCH_FULL.
fn w1_shapes(be: &dyn Backend) -> Vec<(usize, usize)> {
    if !cpu_bound(be) || full() {
        vec![(1_000, 512), (10_000, 512), (100_000, 512), (10_000, 1), (100_000, 64)]
    } else {
        vec![(1_000, 512), (10_000, 64), (10_000, 1), (100_000, 1)]
    }
}

fn bench_online(c: &mut Criterion) {
    let n = n_items();
    let host = host_tables(n);
    for be in backends() {
        for dtype in [DType::F32, DType::F16] {
            let t = upload(be.as_ref(), &host, dtype);
            let bpe = if dtype == DType::F16 { 2 } else { 4 };
            for (l, b) in w1_shapes(be.as_ref()) {
                let req = request(n, l, b, (l * 7 + b) as u64);
                let batch = req.as_batch();
                let cross = be.cross_bias(&t.cross_bias, batch.cross, 3).unwrap();
                let bias = be.log_size_bias(&cross, batch.sizes, H).unwrap();
                let topk = be.gsu_topk(&t, &batch, &bias, TOP_K).unwrap();
                let id = format!("{}/{:?}/L{l}_B{b}", be.kind(), dtype);

                let mut g = c.benchmark_group("gather");
                g.throughput(Throughput::Bytes((l * D * bpe) as u64));
                g.bench_function(BenchmarkId::from_parameter(&id), |bn| bn.iter(|| be.gather(&t.p_k, batch.items).unwrap()));
                g.finish();

                if dtype == DType::F32 {
                    let mut g = c.benchmark_group("cross_bias");
                    g.throughput(Throughput::Elements(l as u64));
                    g.bench_function(BenchmarkId::from_parameter(&id), |bn| {
                        bn.iter(|| be.cross_bias(&t.cross_bias, batch.cross, 3).unwrap())
                    });
                    g.finish();
                    let mut g = c.benchmark_group("log_size_bias");
                    g.throughput(Throughput::Elements(l as u64));
                    g.bench_function(BenchmarkId::from_parameter(&id), |bn| bn.iter(|| be.log_size_bias(&cross, batch.sizes, H).unwrap()));
                    g.finish();
                }

                // B·L·D multiply-adds dominate the GSU.
                let mut g = c.benchmark_group("gsu_topk");
                g.throughput(Throughput::Elements((b * l) as u64));
                g.bench_function(BenchmarkId::from_parameter(&id), |bn| bn.iter(|| be.gsu_topk(&t, &batch, &bias, TOP_K).unwrap()));
                g.finish();

                let mut g = c.benchmark_group("esu");
                g.throughput(Throughput::Elements(b as u64));
                g.bench_function(BenchmarkId::from_parameter(&id), |bn| bn.iter(|| be.esu(&t, &batch, &bias, &topk).unwrap()));
                g.finish();

                let mut g = c.benchmark_group("online");
                g.throughput(Throughput::Elements((b * l) as u64));
                g.bench_function(BenchmarkId::from_parameter(&id), |bn| bn.iter(|| be.online(&t, &batch, TOP_K).unwrap()));
                g.finish();
            }
        }
    }
}

fn bench_kmeans(c: &mut Criterion) {
    // W2's inner loop: one problem of N points, k = ⌊N^0.3⌋, 64-dim; and 1,000 problems of 2,000.
    let dim = 64;
    for be in backends() {
        // lavapipe ends a shader invocation after 65,535 loop iterations, so its k-means problems
        // stay below that many points.
        let shapes: Vec<(usize, usize)> = if full() && !cpu_bound(be.as_ref()) {
            vec![(1_000_000, 1), (2_000, 1_000)]
        } else if be.describe().contains("llvmpipe") {
            vec![(60_000, 1), (2_000, 100)]
        } else {
            vec![(100_000, 1), (60_000, 1), (2_000, 100)]
        };
        for &(n, probs) in &shapes {
            let pts = fill(n * probs * dim, 9);
            let offsets: Vec<u32> = (0..=probs as u32).map(|p| p * n as u32).collect();
            let k = vec![twin_engine::cluster::delta(n) as u32; probs];
            let batch = KmeansBatch { dim, points: &pts, offsets: &offsets, k: &k };
            let seeds: Vec<u64> = (0..probs as u64).collect();
            let cents = be.kmeans_seed(&batch, &seeds).unwrap();
            let assign = be.kmeans_assign(&batch, &cents).unwrap();
            let id = format!("{}/N{n}x{probs}_k{}", be.kind(), k[0]);
            let mut g = c.benchmark_group("kmeans");
            g.throughput(Throughput::Elements((n * probs) as u64));
            g.bench_function(BenchmarkId::new("assign", &id), |bn| bn.iter(|| be.kmeans_assign(&batch, &cents).unwrap()));
            g.bench_function(BenchmarkId::new("update", &id), |bn| bn.iter(|| be.kmeans_update(&batch, &assign, &cents).unwrap()));
            g.bench_function(BenchmarkId::new("seed", &id), |bn| bn.iter(|| be.kmeans_seed(&batch, &seeds).unwrap()));
            g.bench_function(BenchmarkId::new("lloyd20", &id), |bn| bn.iter(|| be.kmeans(&batch, &seeds, 20).unwrap()));
            g.finish();
        }
    }
}

fn bench_cluster(c: &mut Criterion) {
    // W2: one user of N behaviours, and a batch of users × 10^4.
    let shapes: Vec<(usize, usize)> = if full() {
        vec![(1, 10_000), (1, 100_000), (1, 1_000_000), (1_000, 10_000)]
    } else {
        vec![(1, 10_000), (1, 100_000), (20, 10_000)]
    };
    for be in backends() {
        for &(users, len) in &shapes {
            let ds = data::generate(&SynthConfig {
                n_users: users,
                n_items: 200_000,
                n_authors: 20_000,
                fixed_len: Some(len),
                samples_per_user: 0,
                seed: 5,
                ..Default::default()
            })
            .unwrap();
            let emb = fill(ds.items.len() * 64, 10);
            let list: Vec<u32> = (0..users as u32).collect();
            let cfg = ClusterConfig::default();
            let mut g = c.benchmark_group("cluster");
            g.throughput(Throughput::Elements(users as u64));
            g.bench_function(BenchmarkId::from_parameter(format!("{}/{users}x{len}", be.kind())), |bn| {
                bn.iter(|| cluster_users(be.as_ref(), &ds, &list, None, &emb, 64, &cfg, &mut |_, _| {}).unwrap())
            });
            g.finish();
        }
    }
}

fn bench_attn(c: &mut Criterion) {
    // Training attention: B = 512 samples of 100 rows, D = 128, h = 4 (forward and backward).
    let (b_n, rows, heads) = (512usize, 100usize, H);
    let n = b_n * rows;
    let q = fill(b_n * D, 21);
    let k = fill(n * D, 22);
    let v = fill(n * D, 23);
    let bias = fill(n * heads, 24);
    let dpooled = fill(b_n * D, 25);
    let offsets: Vec<u32> = (0..=b_n as u32).map(|b| b * rows as u32).collect();
    for be in backends() {
        let fwd = be.attn_fwd(heads, &q, &k, &v, &bias, &offsets).unwrap();
        let saved = AttnSaved { q: &q, k: &k, v: &v, bias: &bias, offsets: &offsets, p: &fwd.p };
        let id = format!("{}/B{b_n}_rows{rows}_D{D}_h{heads}", be.kind());
        let mut g = c.benchmark_group("attn");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("fwd", &id), |bn| bn.iter(|| be.attn_fwd(heads, &q, &k, &v, &bias, &offsets).unwrap()));
        g.bench_function(BenchmarkId::new("bwd", &id), |bn| bn.iter(|| be.attn_bwd(heads, saved, &dpooled).unwrap()));
        g.finish();
    }
}

fn bench_segment_sum(c: &mut Criterion) {
    // Gradient scatter-add: N = 512 * 150 rows of width 128 into ~20k segments (unique keys).
    let (n, width) = (512usize * 150, 128usize);
    let mut r = SplitMix64::new(26);
    let keys: Vec<u32> = (0..n).map(|_| r.below(20_000) as u32).collect();
    let (uniq, perm, offs) = segments_of(&keys);
    let src = fill(n * width, 27);
    for be in backends() {
        let id = format!("{}/N{n}_W{width}_S{}", be.kind(), uniq.len());
        let mut g = c.benchmark_group("segment_sum");
        g.throughput(Throughput::Bytes((n * width * 4) as u64));
        g.bench_function(BenchmarkId::from_parameter(&id), |bn| bn.iter(|| be.segment_sum(&src, width, &perm, &offs).unwrap()));
        g.finish();
    }
}

fn bench_gemm(c: &mut Criterion) {
    // Training GEMMs: the K/V projection (76,800 behaviour rows x 144 -> 128), its weight gradient
    // (TN, reduced over the 76,800 rows) and the first MLP layer (B = 512, 408 -> 256).
    let shapes = [(GemmKind::NN, 76_800usize, 144usize, 128usize), (GemmKind::TN, 144, 76_800, 128), (GemmKind::NN, 512, 408, 256)];
    for be in backends() {
        for (i, &(kind, m, k, n)) in shapes.iter().enumerate() {
            let a = fill(m * k, 30 + i as u64);
            let b = fill(k * n, 40 + i as u64);
            let id = format!("{}/{kind:?}_m{m}_k{k}_n{n}", be.kind());
            let mut g = c.benchmark_group("gemm");
            g.throughput(Throughput::Elements((2 * m * k * n) as u64)); // flops
            g.bench_function(BenchmarkId::from_parameter(&id), |bn| bn.iter(|| be.gemm(kind, &a, &b, m, k, n).unwrap()));
            g.finish();
        }
    }
}

fn bench_bce(c: &mut Criterion) {
    // The loss of one training batch (B = 512) and of a large evaluation batch.
    for be in backends() {
        for b_n in [512usize, 100_000] {
            let logits = fill(b_n, 50);
            let labels: Vec<f32> = fill(b_n, 51).iter().map(|&x| if x > 0.0 { 1.0 } else { 0.0 }).collect();
            let id = format!("{}/B{b_n}", be.kind());
            let mut g = c.benchmark_group("bce");
            g.throughput(Throughput::Elements(b_n as u64));
            g.bench_function(BenchmarkId::from_parameter(&id), |bn| bn.iter(|| be.bce(&logits, &labels).unwrap()));
            g.finish();
        }
    }
}

fn config() -> Criterion {
    Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3)).without_plots()
}

criterion_group! { name = online; config = config(); targets = bench_online }
criterion_group! { name = offline; config = config(); targets = bench_kmeans, bench_cluster }
criterion_group! { name = train_ops; config = config(); targets = bench_attn, bench_segment_sum, bench_gemm, bench_bce }
criterion_main!(online, offline, train_ops);
