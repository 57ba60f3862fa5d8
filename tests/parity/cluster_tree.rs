//! kmeans_tree: a clustering job's whole hierarchy (every level's k-means and partition) equals
//! the CPU reference's exactly: the same clusters, in the same order, with the same roots and
//! the same work counts. Inputs are well-separated blobs (k-means assignment is bit-identical on
//! every backend; the centroid update may differ by f32 rounding, which cannot move a point
//! between blobs ~100 apart), plus items with identical embeddings, which force position cuts.
//! Where the tree runs on the device, one job is one upload and at most `levels + 1` downloads,
//! whatever the Lloyd iterations.

use twin_engine::backend::{Backend, TreeJob};
use twin_engine::rng::{mix64, SplitMix64};
use twin_engine::Error;

use crate::common::*;
use crate::for_each_backend;

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

#[test]
fn kmeans_tree_matches_cpu() {
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
    for_each_backend!(|gpu, cpu| {
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
                eprintln!("kmeans_tree on {} {what}: {:?}, {t:?}", kind_name(&*gpu), got.stats);
                if pts.on_device() || kind_name(&*gpu) == "wgpu" {
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
}
