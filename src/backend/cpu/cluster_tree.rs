//! The clustering tree (SPEC §4.2, TWIN-V2 Algorithm 1's queue taken breadth first): the
//! reference of [`Backend::kmeans_tree`], written as a host loop over
//! [`Backend::kmeans_items`]. Backends without a device tree run it; the device trees
//! (kernels/cluster_tree.cu, shaders/cluster_tree.wgsl) are tested against it bit for bit.
//!
//! Level `d` holds the problems of depth `d` (the roots are level 0), each of at least γ points
//! listed in ascending history position. For every problem, in order:
//! - `k = δ(n)` and k-means++ seeded with `derive_seed_extend(streams[root], d)`, then Lloyd;
//! - its parts are the non-empty clusters in centroid order, each keeping its points' order; when
//!   fewer than two are non-empty the problem is *forced*: cut by position into chunks of γ - 1;
//! - its children, in (problem, part) order: a child of fewer than γ points is a final cluster,
//!   appended to the result; the others make level `d + 1`, in that order.
//!
//! Every child is strictly smaller than its problem (≥ 2 non-empty parts, or chunks of γ - 1 < n),
//! so the loop ends.

use crate::backend::{Backend, ItemPoints, TreeJob, TreeResult, TreeStats};
use crate::cluster::delta;
use crate::error::Result;
use crate::rng::derive_seed_extend;

/// The reference tree: one [`Backend::kmeans_items`] call per level. `job` already checked.
pub fn tree<B: Backend + ?Sized>(be: &B, pts: &ItemPoints, job: &TreeJob) -> Result<TreeResult> {
    let gamma = job.gamma as usize;
    let mut out = TreeResult { offsets: vec![0], ..Default::default() };
    let mut stats = TreeStats::default();
    // The level's problems: point indices (into job.ids), offsets, roots.
    let mut work: Vec<u32> = (0..job.ids.len() as u32).collect();
    let mut offs: Vec<u32> = job.offsets.to_vec();
    let mut root: Vec<u32> = (0..job.streams.len() as u32).collect();
    let mut depth = 0u64;
    while !root.is_empty() {
        let n_prob = root.len();
        let ids: Vec<u32> = work.iter().map(|&i| job.ids[i as usize]).collect();
        let ks: Vec<u32> = (0..n_prob).map(|p| delta((offs[p + 1] - offs[p]) as usize) as u32).collect();
        let seeds: Vec<u64> = root.iter().map(|&r| derive_seed_extend(job.streams[r as usize], depth)).collect();
        let res = be.kmeans_items(pts, &ids, &offs, &ks, &seeds, job.max_iter)?;
        stats.levels += 1;
        stats.problems += n_prob as u64;
        let (mut next_work, mut next_offs, mut next_root) = (Vec::with_capacity(work.len()), vec![0u32], Vec::new());
        for p in 0..n_prob {
            let range = offs[p] as usize..offs[p + 1] as usize;
            let (n, k, it) = (range.len() as u64, ks[p] as usize, res.iterations[p] as u64);
            stats.assign_points += n * (it + 1);
            stats.update_points += n * it;
            stats.assign_distances += n * k as u64 * (it + 1);
            let mut parts: Vec<Vec<u32>> = vec![Vec::new(); k];
            for (&i, &c) in work[range.clone()].iter().zip(&res.assign[range.clone()]) {
                parts[c as usize].push(i);
            }
            parts.retain(|v| !v.is_empty());
            if parts.len() <= 1 {
                stats.forced += 1;
                parts = work[range].chunks(gamma - 1).map(<[u32]>::to_vec).collect();
            }
            for part in parts {
                if part.len() < gamma {
                    out.members.extend_from_slice(&part);
                    out.offsets.push(out.members.len() as u32);
                    out.root.push(root[p]);
                } else {
                    next_work.extend_from_slice(&part);
                    next_offs.push(next_work.len() as u32);
                    next_root.push(root[p]);
                }
            }
        }
        (work, offs, root) = (next_work, next_offs, next_root);
        depth += 1;
    }
    out.stats = stats;
    Ok(out)
}

/// `δ` as a table a kernel can search: entry `j` is the smallest `n` with `δ(n) ≥ j + 3`, for
/// every such `n` that fits in a u32. Then `δ(n) = 2 + #{j : table[j] ≤ n}` for `n ≥ 1`
/// (δ is non-decreasing), exactly, with no floating point on the device.
pub fn delta_table() -> Vec<u32> {
    let mut table = Vec::new();
    for r in 3u128.. {
        // Smallest n with n^3 ≥ r^10, i.e. ⌊n^0.3⌋ ≥ r.
        let target = r.pow(10);
        let (mut lo, mut hi) = (1u128, 1u128 << 34);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if mid.pow(3) >= target {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if lo > u32::MAX as u128 {
            break;
        }
        table.push(lo as u32);
    }
    table
}

/// `δ(n)` from [`delta_table`], as the kernels compute it (for the test that the table is exact).
pub fn delta_by_table(table: &[u32], n: u32) -> u32 {
    2 + table.partition_point(|&t| t <= n) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gives_delta_exactly() {
        let t = delta_table();
        assert!(t.len() > 700 && t.len() < 800, "{}", t.len());
        for n in 1..200_000u32 {
            assert_eq!(delta_by_table(&t, n) as usize, delta(n as usize), "n = {n}");
        }
        for &edge in &t {
            for n in [edge - 1, edge, edge.saturating_add(1)] {
                assert_eq!(delta_by_table(&t, n) as usize, delta(n as usize), "n = {n}");
            }
        }
        assert_eq!(delta_by_table(&t, u32::MAX) as usize, delta(u32::MAX as usize));
    }
}
