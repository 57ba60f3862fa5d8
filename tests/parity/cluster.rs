//! Offline clustering (SPEC §4) run unchanged on each GPU backend: the invariants hold, and the
//! clusters equal the CPU's for the same seed, on well-separated blobs and on plain Gaussian
//! embeddings alike (k-means++, assignment and update are bit-identical on every backend).

use twin_engine::cluster::{cluster_users, ClusterConfig};
use twin_engine::data::{self, SynthConfig};
use twin_engine::rng::SplitMix64;

use crate::parity_test;

const DIM: usize = 64;

/// Item embeddings in 12 blobs of radius ~0.05 whose centres are ~10 apart.
fn separated(n_items: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    let centres: Vec<f32> = (0..12 * DIM).map(|_| (r.normal() * 10.0) as f32).collect();
    let mut e = Vec::with_capacity(n_items * DIM);
    for i in 0..n_items {
        let b = (twin_engine::rng::mix64(i as u64) % 12) as usize;
        for t in 0..DIM {
            e.push(centres[b * DIM + t] + (r.normal() * 0.05) as f32);
        }
    }
    e
}

parity_test!(cluster_users_runs_unchanged, |gpu, cpu| {
    let ds = data::generate(&SynthConfig {
        n_users: 12,
        n_items: 3000,
        min_len: 10,
        max_len: 4000,
        samples_per_user: 2,
        seed: 9,
        // Histories long enough for several k-means levels (12 × 1,500 behaviours).
        fixed_len: Some(if crate::common::small() { 400 } else { 1_500 }),
        ..Default::default()
    })
    .unwrap();
    let mut r = SplitMix64::new(17);
    let gaussian: Vec<f32> = (0..ds.items.len() * DIM).map(|_| r.normal() as f32).collect();
    let users: Vec<u32> = (0..ds.n_users() as u32).collect();
    let cfg = ClusterConfig::default();
    for (what, emb) in [("separated blobs", separated(ds.items.len(), 5)), ("gaussian", gaussian)] {
        eprintln!("embeddings: {what}");
        let (want, want_stats) = cluster_users(&*cpu, &ds, &users, None, &emb, DIM, &cfg, &mut |_, _| {}).unwrap();
        let before = gpu.transfers();
        let (got, stats) = cluster_users(&*gpu, &ds, &users, None, &emb, DIM, &cfg, &mut |_, _| {}).unwrap();
        let t = gpu.transfers().since(before);
        eprintln!(
            "  {}: {} levels, {} backend calls, {} k-means levels, {t:?}",
            gpu.kind().name(),
            stats.levels,
            stats.backend_calls,
            stats.kmeans_levels
        );
        // The embeddings once, then per tree one upload (the roots' point ids) and at most a
        // status word per level plus the final clusters, however many Lloyd iterations.
        // (Host backends, the fast CPU path, move nothing.)
        if gpu.kind() != twin_engine::backend::BackendKind::Cpu {
            assert_eq!(t.h2d_calls as usize, 1 + stats.backend_calls, "{t:?}");
            assert!(t.d2h_calls as usize <= stats.kmeans_levels + stats.backend_calls, "{t:?}");
        }
        let inv = got.verify(&ds).unwrap();
        assert_eq!(inv.behaviours, ds.behaviours.len());
        assert!(inv.max_size < cfg.gamma);
        assert_eq!(got.item, want.item, "virtual items");
        assert_eq!(got.size, want.size, "cluster sizes");
        assert_eq!(got.timestamp, want.timestamp, "timestamps");
        assert_eq!(stats.assign_distances, want_stats.assign_distances, "k-means work (iterations) differs from the CPU's");
        assert_eq!(got.members, want.members, "members");
        eprintln!("  {} clusters for {} behaviours, identical to the CPU", inv.clusters, inv.behaviours);
    }
});
