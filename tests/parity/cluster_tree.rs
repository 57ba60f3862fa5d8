//! kmeans_tree: a clustering job's whole hierarchy (every level's k-means and partition) equals
//! the CPU reference's exactly: the same clusters, in the same order, with the same roots and
//! the same work counts. Inputs are well-separated blobs (k-means assignment is bit-identical on
//! every backend; the centroid update may differ by f32 rounding, which cannot move a point
//! between blobs ~100 apart), plus items with identical embeddings, which force position cuts.
//! Where the tree runs on the device, one job is one upload and at most `levels + 1` downloads,
//! whatever the Lloyd iterations.

use twin_engine::backend::{Backend, KmeansBatch, TreeJob};
use twin_engine::rng::{mix64, SplitMix64};
use twin_engine::Error;

use crate::common::*;
use crate::parity_test;

const DIM: usize = 64;
const BLOBS: usize = 12;

/// `n_items` embeddings in 12 tight blobs ~100 apart; items `n_items - 40..` share one
/// embedding (a root made of them cannot be split by k-means).
fn embeddings(n_items: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    let centres: Vec<f32> = (0..BLOBS * DIM).map(|_| (r.normal() * 10.0) as f32).collect();
    let mut e = Vec::with_capacity(n_items * DIM);
    for i in 0..n_items {
        let b = (mix64(i as u64) % BLOBS as u64) as usize;
        for t in 0..DIM {
            let x = if i >= n_items - 40 { 7.5 } else { centres[b * DIM + t] + (r.normal() * 0.05) as f32 };
            e.push(x);
        }
    }
    e
}

struct Job {
    ids: Vec<u32>,
    offsets: Vec<u32>,
    streams: Vec<u64>,
}

/// Roots of the given sizes; `same` roots draw only the identical items.
fn job(sizes: &[(usize, bool)], n_items: usize, seed: u64) -> Job {
    let mut r = SplitMix64::new(seed);
    let (mut ids, mut offsets) = (Vec::new(), vec![0u32]);
    for &(n, same) in sizes {
        for _ in 0..n {
            let id = if same { n_items - 40 + r.below(40) as usize } else { r.below(n_items as u64 - 40) as usize };
            ids.push(id as u32);
        }
        offsets.push(ids.len() as u32);
    }
    let streams = (0..sizes.len() as u64).map(|i| mix64(seed ^ i)).collect();
    Job { ids, offsets, streams }
}

parity_test!(kmeans_tree_matches_cpu, |gpu, cpu| {
    let n_items = 3000;
    let emb = embeddings(n_items, 41);
    let big = if small() { 2_003 } else { 20_011 };
    let cases: [(u32, Vec<(usize, bool)>); 6] = [
        (2, vec![(2, false), (3, false), (97, false)]),
        (20, vec![(20, false), (21, false), (97, false), (1025, false), (60, true), (20, true)]),
        (20, vec![(big, false), (333, true), (1, false)]),
        (3, vec![(1025, false), (50, true)]),
        (20, vec![(5, false)]), // no root at all
        // More problems in a level than a block has threads (the device scans take several
        // problems per thread), forced roots among them.
        (20, (0..320).map(|i| (20 + (i * 7) % 41, i % 13 == 0)).collect()),
    ];
    let pts = gpu.item_points(&emb, DIM).unwrap();
    let cpu_pts = cpu.item_points(&emb, DIM).unwrap();
    for (case, (gamma, sizes)) in cases.iter().enumerate() {
        // A root below γ is a final cluster already: the tree takes only larger ones.
        let sizes: Vec<(usize, bool)> = sizes.iter().copied().filter(|&(n, _)| n >= *gamma as usize).collect();
        let j = job(&sizes, n_items, 100 + case as u64);
        for max_iter in [1u32, 20] {
            let tj = TreeJob { ids: &j.ids, offsets: &j.offsets, streams: &j.streams, gamma: *gamma, max_iter };
            let want = cpu.kmeans_tree(&cpu_pts, &tj).unwrap();
            let before = gpu.transfers();
            let got = gpu.kmeans_tree(&pts, &tj).unwrap();
            let t = gpu.transfers().since(before);
            let what = format!("case {case} (gamma {gamma}, max_iter {max_iter})");
            assert_eq!(got.stats, want.stats, "{what}: stats");
            assert_eq!(got.root, want.root, "{what}: roots");
            assert_eq!(got.offsets, want.offsets, "{what}: cluster offsets");
            assert_eq!(got.members, want.members, "{what}: members");
            // The reference's own invariants: a partition of the points into clusters
            // below γ, each within one root, ascending.
            let mut seen = vec![false; j.ids.len()];
            for c in 0..want.root.len() {
                let m = &want.members[want.offsets[c] as usize..want.offsets[c + 1] as usize];
                let r = want.root[c] as usize;
                assert!(!m.is_empty() && m.len() < *gamma as usize, "{what}: cluster {c} size {}", m.len());
                assert!(m.windows(2).all(|w| w[0] < w[1]), "{what}: cluster {c} not ascending");
                for &i in m {
                    assert!((j.offsets[r]..j.offsets[r + 1]).contains(&i), "{what}: point {i} outside root {r}");
                    assert!(!std::mem::replace(&mut seen[i as usize], true), "{what}: point {i} twice");
                }
            }
            assert!(seen.iter().all(|&s| s), "{what}: a point is in no cluster");
            eprintln!("kmeans_tree on {} {what}: {:?}, {t:?}", gpu.kind().name(), got.stats);
            if pts.on_device() || gpu.kind().name() == "wgpu" {
                assert_eq!(t.h2d_calls, 1, "{what}: uploads {t:?}");
                assert!(t.d2h_calls <= got.stats.levels as u64 + 1, "{what}: downloads {t:?}");
            }
        }
    }
    // Bad jobs are refused before any device work, naming the field.
    let j = job(&[(30, false)], n_items, 7);
    let bad_ids: Vec<u32> = j.ids.iter().map(|&i| i + n_items as u32).collect();
    assert!(matches!(
        gpu.kmeans_tree(&pts, &TreeJob { ids: &bad_ids, offsets: &j.offsets, streams: &j.streams, gamma: 20, max_iter: 5 }),
        Err(Error::OutOfRange { field: "tree point ids", .. })
    ));
    assert!(matches!(
        gpu.kmeans_tree(&pts, &TreeJob { ids: &j.ids, offsets: &j.offsets, streams: &j.streams, gamma: 31, max_iter: 5 }),
        Err(Error::InvalidValue { field: "tree root size", index: 0, .. })
    ));
    assert!(matches!(
        gpu.kmeans_tree(&pts, &TreeJob { ids: &j.ids, offsets: &j.offsets, streams: &[], gamma: 20, max_iter: 5 }),
        Err(Error::LengthMismatch { field: "tree streams", .. })
    ));
    assert!(matches!(
        gpu.kmeans_tree(&pts, &TreeJob { ids: &j.ids, offsets: &j.offsets, streams: &j.streams, gamma: 1, max_iter: 5 }),
        Err(Error::InvalidValue { field: "gamma", .. })
    ));
});

/// The inputs of the update tests: (dim, points, offsets, k, assign, prev).
#[allow(clippy::type_complexity)]
fn update_inputs() -> (usize, Vec<f32>, Vec<u32>, Vec<u32>, Vec<u32>, Vec<f32>) {
    let dim = 8;
    let mut r = SplitMix64::new(5);
    let sizes = [1usize, 2, 7, 300, 3001, 40, 64];
    let (mut points, mut offsets, mut k) = (Vec::new(), vec![0u32], Vec::new());
    for (p, &n) in sizes.iter().enumerate() {
        let start = points.len();
        for _ in 0..n * dim {
            let sign = if r.below(2) == 0 { 1.0f32 } else { -1.0 };
            let x = match (p, r.below(8)) {
                (5, _) => f32::from_bits(1 + r.below(1 << 20) as u32),
                (_, 0) => 0.0,
                (_, 1) => (r.normal() * 1e-30) as f32,
                (_, 2) => (r.normal() * 1e30) as f32,
                (_, 3) => (r.normal() * 1e-3) as f32 + 1.0,
                _ => (r.normal() * 10f64.powi(r.below(9) as i32 - 4)) as f32,
            };
            points.push(sign * x);
        }
        if p == 6 {
            // Pairs x, -x: sums that cancel exactly, or to a few bits.
            for i in (start..points.len()).step_by(2) {
                points[i + 1] = -points[i] * if i % 4 == 0 { 1.0 } else { 1.0 + f32::EPSILON };
            }
        }
        offsets.push((points.len() / dim) as u32);
        k.push(n.min(3) as u32);
    }
    // Sums whose f64 rounding decides the f32 mean: 1 + 2^-23 + 2^-24 is an f32 tie (rounds up
    // to even), reached only if adding -2^-80 rounded back to the nearest f64 (up, not down).
    let one = 1.0 + f32::EPSILON;
    let (half, tiny) = (2f32.powi(-24), -(2f32.powi(-80)));
    for v in [[one, half, tiny, 0.0], [one, tiny, half, -0.0], [-one, -half, -tiny, 0.0], [tiny, one, tiny, half]] {
        for x in v {
            points.extend((0..dim).map(|t| if t == 0 { x } else { r.normal() as f32 }));
        }
    }
    offsets.push((points.len() / dim) as u32);
    k.push(4);
    let n = points.len() / dim;
    let mut assign = Vec::with_capacity(n);
    for (p, &kp) in k.iter().enumerate() {
        for i in offsets[p]..offsets[p + 1] {
            // Problem 6 keeps its pairs together, 7 its fours; the others spread at random.
            assign.push(match p {
                6 => (i - offsets[p]) / 2 % kp,
                7 => (i - offsets[p]) / 4,
                _ => r.below(kp as u64) as u32,
            });
        }
    }
    let total_k: usize = k.iter().map(|&x| x as usize).sum();
    let prev: Vec<f32> = (0..total_k * dim).map(|_| r.normal() as f32).collect();
    (dim, points, offsets, k, assign, prev)
}

// The tree is exact only if every level's centroid update is: the means are the CPU's bit for
// bit (members summed in point order in f64, then `(f32)(sum / count)`; wgpu emulates the f64
// on u32 words), on values chosen to round: mixed signs and magnitudes, exact cancellations,
// f32 subnormals (and subnormal means), negative zeros, thousands of members.
parity_test!(kmeans_update_is_bit_identical, |gpu, cpu| {
    let (dim, points, offsets, k, assign, prev) = update_inputs();
    let batch = KmeansBatch { dim, points: &points, offsets: &offsets, k: &k };
    let want = cpu.kmeans_update(&batch, &assign, &prev).unwrap();
    let got = gpu.kmeans_update(&batch, &assign, &prev).unwrap();
    assert_eq!(got.len(), want.len());
    let differ: Vec<(usize, f32, f32)> =
        got.iter().zip(&want).enumerate().filter(|(_, (g, w))| g.to_bits() != w.to_bits()).map(|(i, (g, w))| (i, *g, *w)).take(8).collect();
    assert!(differ.is_empty(), "{}: means differ from the CPU's at (index, got, want) {differ:?}", gpu.kind().name());
});

/// Both CUDA versions of the centroid update explicitly (the parity test above runs the default, v2).
#[cfg(feature = "cuda")]
#[test]
fn kmeans_update_cuda_versions_are_bit_identical() {
    let (dim, points, offsets, k, assign, prev) = update_inputs();
    let batch = KmeansBatch { dim, points: &points, offsets: &offsets, k: &k };
    for (label, be) in crate::kmeans::cuda_under_test("kmeans update versions", 6) {
        let want = crate::common::cpu().kmeans_update(&batch, &assign, &prev).unwrap();
        be.set_poison_outputs(true);
        for v in [twin_engine::backend::cuda::KmeansVersion::V1, twin_engine::backend::cuda::KmeansVersion::V2] {
            be.set_kmeans_version(v);
            let got = be.kmeans_update(&batch, &assign, &prev).unwrap();
            let same = got.len() == want.len() && got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same, "{label} {v:?}: means differ from the CPU's");
        }
    }
}

/// The tree's Lloyd rounds run the k-means version the CUDA backend is set to: v1 and v2 (the
/// default: assignment v2 at dim 64, update v2's counting sort) both give the CPU's hierarchy,
/// and on the emulator the update kernels that ran are the chosen version's only.
#[test]
fn kmeans_tree_cuda_versions() {
    #[cfg(feature = "cuda")]
    {
        use twin_engine::backend::cuda::KmeansVersion;
        let n_items = 3000;
        let emb = embeddings(n_items, 43);
        let j = job(&[(1025, false), (60, true), (97, false), (21, false), (300, false)], n_items, 44);
        let cpu = cpu();
        let tj = TreeJob { ids: &j.ids, offsets: &j.offsets, streams: &j.streams, gamma: 20, max_iter: 20 };
        let want = cpu.kmeans_tree(&cpu.item_points(&emb, DIM).unwrap(), &tj).unwrap();
        for v in [KmeansVersion::V1, KmeansVersion::V2] {
            for (label, be) in crate::kmeans::cuda_under_test("kmeans tree versions", 5) {
                be.set_poison_outputs(true);
                be.set_kmeans_version(v);
                let got = be.kmeans_tree(&be.item_points(&emb, DIM).unwrap(), &tj).unwrap();
                let what = format!("{label} {v:?}");
                assert_eq!(got.stats, want.stats, "{what}: stats");
                assert_eq!(got.root, want.root, "{what}: roots");
                assert_eq!(got.offsets, want.offsets, "{what}: cluster offsets");
                assert_eq!(got.members, want.members, "{what}: members");
                if label == "cuda-emu" {
                    let ran = be.launched_kernels();
                    assert_eq!(ran.contains(&"kmeans_update_fwd_v2"), v == KmeansVersion::V2, "{what}: update v2 ran: {ran:?}");
                    assert_eq!(ran.contains(&"kmeans_update_fwd_v1"), v == KmeansVersion::V1, "{what}: update v1 ran: {ran:?}");
                }
                eprintln!("kmeans_tree {what}: {:?}", got.stats);
            }
        }
    }
}
