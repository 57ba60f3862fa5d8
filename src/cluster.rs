//! Offline hierarchical clustering (SPEC §4, TWIN-V2 Algorithm 1), written once as host code
//! over the backend's clustering tree, so it runs unchanged on every backend. The item
//! embeddings are made resident once (`Backend::item_points`); the host splits each history
//! into completion groups and sends the groups of at least γ behaviours as the roots of one
//! `Backend::kmeans_tree` call per batch. The tree's levels (gather, k-means++, Lloyd,
//! partition) run on the device where the backend has one (CUDA, wgpu): one upload, a status
//! word per level, and the final clusters in one download; elsewhere the reference loop in
//! `backend::cpu::cluster_tree` runs them over `Backend::kmeans_items`.
//!
//! The queue of Algorithm 1 is processed breadth-first across *all* users and groups: every
//! level of a tree is one batched k-means over all its pending sets `V` with `|V| ≥ γ`
//! (batches of roots only bound memory). A GPU backend therefore sees thousands of small
//! problems per launch instead of one tiny k-means per call.
//!
//! Determinism: a problem's seed is `derive_seed(seed, [user, group, depth])` (`user`: the
//! dataset index, or the caller's key in [`cluster_users_keyed`]) and a problem's
//! k-means result does not depend on its batch neighbours, so the clusters are a function of
//! (data, embeddings, seed) whatever the batching; clusters are listed per user in the order
//! of their newest member.
//!
//! Termination: a split with ≥ 2 non-empty parts makes every part strictly smaller; a split
//! that leaves one part (e.g. identical embeddings) is cut by position into chunks of γ - 1.

use rayon::prelude::*;

use crate::backend::{Backend, ItemPoints, TreeJob};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::rng::derive_seed;

pub const MAGIC: &[u8; 8] = b"TWINCLST";
/// Version 2 adds the source digests (`provenance.rs`); version 1 files still load without them.
pub const VERSION: u32 = 2;

mod file;
mod provenance;
pub use file::Invariants;
pub use provenance::{catalogue_digest, dataset_digest};

#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// γ: clusters hold fewer than `gamma` behaviours.
    pub gamma: usize,
    /// M: completion-ratio groups.
    pub groups: usize,
    /// Lloyd iterations per k-means at most.
    pub max_iter: u32,
    pub seed: u64,
    /// Points per backend call at most (bounds host and device memory).
    pub max_batch_points: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { gamma: 20, groups: 5, max_iter: 20, seed: 0, max_batch_points: 1 << 21 }
    }
}

/// `δ = max(2, ⌊n^0.3⌋)`, computed exactly in integers: the largest `r` with `r^10 ≤ n^3`.
pub fn delta(n: usize) -> usize {
    let n3 = (n as u128).pow(3);
    let mut r = (n as f64).powf(0.3) as u128;
    while r > 0 && r.pow(10) > n3 {
        r -= 1;
    }
    while (r + 1).pow(10) <= n3 {
        r += 1;
    }
    (r as usize).max(2)
}

/// SPEC §4.1: `m = min(⌊p·M⌋, M-1)`.
#[inline]
pub fn group_of(p: f32, groups: usize) -> usize {
    if !(p > 0.0) {
        return 0;
    }
    ((p * groups as f32) as usize).min(groups - 1)
}

/// Clusters of many users: each cluster is a virtual item (SPEC §4.4) plus its member list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterSet {
    /// Behaviours at or after this time were not clustered (`i64::MAX`: all were).
    pub cutoff: i64,
    pub gamma: u32,
    pub groups: u32,
    pub seed: u64,
    /// Dataset user index of each clustered user.
    pub users: Vec<u32>,
    /// `[U + 1]` offsets into the per-cluster arrays.
    pub user_offsets: Vec<u64>,
    /// Item of the member nearest the centroid (its inherent features come with it).
    pub item: Vec<u32>,
    /// Newest member's timestamp.
    pub timestamp: Vec<i64>,
    /// Mean play time and mean completion ratio of the members.
    pub play_time: Vec<f32>,
    pub completion: Vec<f32>,
    /// `n`: number of members.
    pub size: Vec<u32>,
    /// Completion group `m` every member belongs to.
    pub group: Vec<u8>,
    /// `[C + 1]` offsets into `members`.
    pub member_offsets: Vec<u64>,
    /// Member positions within the user's sequence (0 = oldest), ascending per cluster.
    pub members: Vec<u32>,
    /// Digests of the dataset's histories and of the item catalogue the clusters were built
    /// from ([`ClusterSet::check_source`]); `None` in files of format version 1.
    pub dataset_digest: Option<u64>,
    pub catalogue_digest: Option<u64>,
}

/// What `cluster_users` did, for the CLI summary.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ClusterStats {
    pub users: usize,
    pub behaviours: usize,
    pub clusters: usize,
    pub kmeans_problems: usize,
    /// `Backend::kmeans_tree` calls (each a whole tree for a batch of roots).
    pub backend_calls: usize,
    /// Levels of the deepest tree, the completion-group split included.
    pub levels: usize,
    /// k-means levels summed over the trees (a device tree downloads a status word per level).
    pub kmeans_levels: usize,
    pub forced_chunks: usize,
    /// Work the k-means did, summed over problems: points assigned (`n_p · (iterations_p + 1)`,
    /// the first assignment included), points summed into centroid updates (`n_p ·
    /// iterations_p`) and point-centroid distances (`n_p · k_p · (iterations_p + 1)`).
    /// Benchmarks derive the bytes and flops of a clustering run from these.
    pub assign_points: u64,
    pub update_points: u64,
    pub assign_distances: u64,
}

/// A final cluster (or, before the trees run, a root): positions within the user's history,
/// ascending.
struct Done {
    slot: u32,
    group: u8,
    members: Vec<u32>,
}

/// Cluster the histories of `users` (dataset indices), using only behaviours strictly before
/// `cutoff` when given. `emb` is `[n_items, dim]` (the model's item-id embeddings).
/// `progress(done, total)` is called with behaviours placed in final clusters so far.
#[allow(clippy::too_many_arguments)]
pub fn cluster_users(
    backend: &dyn Backend,
    data: &Dataset,
    users: &[u32],
    cutoff: Option<i64>,
    emb: &[f32],
    dim: usize,
    cfg: &ClusterConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(ClusterSet, ClusterStats)> {
    if dim == 0 {
        return Err(Error::BadShape { field: "embedding dim", value: 0, why: "must be positive" });
    }
    crate::backend::check::len("embeddings", emb.len(), data.items.len() * dim, "n_items * dim")?;
    // Checked (finite) and, where the backend clusters on the device, made resident.
    let pts = backend.item_points(emb, dim)?;
    cluster_users_on(backend, data, users, cutoff, &pts, cfg, progress)
}

/// [`cluster_users`] with the embeddings already made resident (`Backend::item_points`), so a
/// caller clustering many batches of users uploads them once.
pub fn cluster_users_on(
    backend: &dyn Backend,
    data: &Dataset,
    users: &[u32],
    cutoff: Option<i64>,
    pts: &ItemPoints,
    cfg: &ClusterConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(ClusterSet, ClusterStats)> {
    let keys: Vec<u64> = users.iter().map(|&u| u as u64).collect();
    cluster_users_keyed(backend, data, users, &keys, cutoff, pts, cfg, progress)
}

/// [`cluster_users_on`] with user `users[i]`'s k-means seeds derived from `keys[i]` instead of
/// its dataset index. A sharded job keys by the external user id: a user's clusters then depend
/// on its own history, the embeddings and the seed only, not on which shard or dataset (hence
/// which dense index) it was clustered in.
#[allow(clippy::too_many_arguments)]
pub fn cluster_users_keyed(
    backend: &dyn Backend,
    data: &Dataset,
    users: &[u32],
    keys: &[u64],
    cutoff: Option<i64>,
    pts: &ItemPoints,
    cfg: &ClusterConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(ClusterSet, ClusterStats)> {
    crate::backend::check::len("user keys", keys.len(), users.len(), "users")?;
    if cfg.gamma < 2 {
        return Err(Error::InvalidValue { field: "gamma", index: 0, value: cfg.gamma as f64, why: "must be at least 2" });
    }
    if cfg.groups == 0 || cfg.groups > 255 {
        return Err(Error::InvalidValue { field: "groups", index: 0, value: cfg.groups as f64, why: "must be in 1..=255" });
    }
    if cfg.max_batch_points == 0 {
        return Err(Error::InvalidValue { field: "max_batch_points", index: 0, value: 0.0, why: "must be positive" });
    }
    let n_items = data.items.len();
    crate::backend::check::len("item points rows", pts.rows, n_items, "the dataset's n_items")?;
    let (emb, dim) = (pts.host, pts.dim);
    crate::backend::check::ids_below("users", users, data.n_users())?;
    let ranges: Vec<std::ops::Range<usize>> = users
        .iter()
        .map(|&u| match cutoff {
            Some(t) => data.history_before(u as usize, t),
            None => data.user_range(u as usize),
        })
        .collect();
    for r in &ranges {
        crate::backend::check::ids_below("behaviours.item", &data.behaviours.item[r.clone()], n_items)?;
    }
    let total: usize = ranges.iter().map(|r| r.len()).sum();
    let mut stats = ClusterStats { users: users.len(), behaviours: total, ..Default::default() };

    // Level 0: split each history into completion groups. A group below γ is a final cluster;
    // the others are the roots of the backend's clustering trees.
    let mut done: Vec<Done> = Vec::new();
    let mut roots: Vec<Done> = Vec::new();
    for (slot, r) in ranges.iter().enumerate() {
        let mut by_group: Vec<Vec<u32>> = vec![Vec::new(); cfg.groups];
        for (pos, b) in r.clone().enumerate() {
            by_group[group_of(data.behaviours.completion(b), cfg.groups)].push(pos as u32);
        }
        for (g, members) in by_group.into_iter().enumerate() {
            let node = Done { slot: slot as u32, group: g as u8, members };
            match node.members.len() {
                0 => {}
                n if n < cfg.gamma => done.push(node),
                _ => roots.push(node),
            }
        }
    }
    stats.levels = usize::from(!done.is_empty() || !roots.is_empty());

    let mut placed: usize = done.iter().map(|d| d.members.len()).sum();
    progress(placed, total);
    let mut start = 0;
    while start < roots.len() {
        // One backend call (a whole tree on the device) for as many roots as fit in the point
        // budget; the levels never hold more points than their roots.
        let mut end = start;
        let mut n_pts = 0usize;
        while end < roots.len() && (end == start || n_pts + roots[end].members.len() <= cfg.max_batch_points) {
            n_pts += roots[end].members.len();
            end += 1;
        }
        let chunk = &roots[start..end];
        let mut ids = Vec::with_capacity(n_pts);
        let mut positions = Vec::with_capacity(n_pts);
        let mut offsets = Vec::with_capacity(chunk.len() + 1);
        let mut streams = Vec::with_capacity(chunk.len());
        offsets.push(0u32);
        for node in chunk {
            let base = ranges[node.slot as usize].start;
            ids.extend(node.members.iter().map(|&pos| data.behaviours.item[base + pos as usize]));
            positions.extend_from_slice(&node.members);
            offsets.push(ids.len() as u32);
            // A problem of depth d seeds with derive_seed(seed, [user key, group, d]).
            streams.push(derive_seed(cfg.seed, &[keys[node.slot as usize], node.group as u64]));
        }
        let job = TreeJob { ids: &ids, offsets: &offsets, streams: &streams, gamma: cfg.gamma as u32, max_iter: cfg.max_iter };
        let tree = {
            let _range = crate::nvtx::range("cluster: one clustering tree");
            backend.kmeans_tree(pts, &job)?
        };
        stats.backend_calls += 1;
        stats.kmeans_levels += tree.stats.levels as usize;
        stats.levels = stats.levels.max(tree.stats.levels as usize + 1);
        stats.kmeans_problems += tree.stats.problems as usize;
        stats.forced_chunks += tree.stats.forced as usize;
        stats.assign_points += tree.stats.assign_points;
        stats.update_points += tree.stats.update_points;
        stats.assign_distances += tree.stats.assign_distances;
        for c in 0..tree.root.len() {
            let node = &chunk[tree.root[c] as usize];
            let members: Vec<u32> =
                tree.members[tree.offsets[c] as usize..tree.offsets[c + 1] as usize].iter().map(|&i| positions[i as usize]).collect();
            placed += members.len();
            done.push(Done { slot: node.slot, group: node.group, members });
        }
        progress(placed, total);
        start = end;
    }

    // Finalise: virtual items per user, clusters ordered by their newest member.
    let mut per_user: Vec<Vec<Done>> = (0..users.len()).map(|_| Vec::new()).collect();
    for d in done {
        per_user[d.slot as usize].push(d);
    }
    let built: Vec<Vec<(Done, VirtualItem)>> = per_user
        .into_par_iter()
        .enumerate()
        .map(|(slot, mut list)| {
            list.sort_by_key(|d| d.members.last().copied().unwrap_or(0));
            let base = ranges[slot].start;
            list.into_iter()
                .map(|d| {
                    let v = virtual_item(data, base, &d.members, emb, dim);
                    (d, v)
                })
                .collect()
        })
        .collect();
    let mut set = ClusterSet {
        cutoff: cutoff.unwrap_or(i64::MAX),
        gamma: cfg.gamma as u32,
        groups: cfg.groups as u32,
        seed: cfg.seed,
        users: users.to_vec(),
        user_offsets: vec![0],
        member_offsets: vec![0],
        ..Default::default()
    };
    set.set_source(data);
    for list in built {
        for (d, v) in list {
            set.item.push(v.item);
            set.timestamp.push(v.timestamp);
            set.play_time.push(v.play_time);
            set.completion.push(v.completion);
            set.size.push(d.members.len() as u32);
            set.group.push(d.group);
            set.members.extend_from_slice(&d.members);
            set.member_offsets.push(set.members.len() as u64);
        }
        set.user_offsets.push(set.item.len() as u64);
    }
    stats.clusters = set.item.len();
    progress(total, total);
    Ok((set, stats))
}

struct VirtualItem {
    item: u32,
    timestamp: i64,
    play_time: f32,
    completion: f32,
}

/// SPEC §4.4: categorical features of the member nearest the centroid (ties: the newer
/// member), numeric cross features averaged, timestamp of the newest member.
fn virtual_item(data: &Dataset, base: usize, members: &[u32], emb: &[f32], dim: usize) -> VirtualItem {
    let beh = &data.behaviours;
    let mut centroid = vec![0f64; dim];
    let (mut play, mut comp) = (0f64, 0f64);
    let mut newest = i64::MIN;
    for &pos in members {
        let b = base + pos as usize;
        let it = beh.item[b] as usize;
        for (c, &x) in centroid.iter_mut().zip(&emb[it * dim..(it + 1) * dim]) {
            *c += x as f64;
        }
        play += beh.play_time[b] as f64;
        comp += beh.completion(b) as f64;
        newest = newest.max(beh.timestamp[b]);
    }
    let n = members.len().max(1) as f64;
    centroid.iter_mut().for_each(|c| *c /= n);
    let mut best = (f64::INFINITY, 0u32);
    for &pos in members {
        let it = beh.item[base + pos as usize];
        let e = &emb[it as usize * dim..(it as usize + 1) * dim];
        let d: f64 = e.iter().zip(&centroid).map(|(&x, &c)| (x as f64 - c) * (x as f64 - c)).sum();
        if d <= best.0 {
            best = (d, it);
        }
    }
    VirtualItem { item: best.1, timestamp: newest, play_time: (play / n) as f32, completion: (comp / n) as f32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_is_exact_floor() {
        for n in 1..200_000usize {
            let d = delta(n);
            let r = d as u128;
            let n3 = (n as u128).pow(3);
            if d > 2 {
                assert!(r.pow(10) <= n3 && (r + 1).pow(10) > n3, "n={n} d={d}");
            } else {
                assert!(3u128.pow(10) > n3, "n={n} should have floor < 3");
            }
        }
        assert_eq!(delta(20), 2);
        assert_eq!(delta(10_000), 15);
        assert_eq!(delta(1_000_000), 63);
    }

    #[test]
    fn groups() {
        assert_eq!(group_of(0.0, 5), 0);
        assert_eq!(group_of(0.19, 5), 0);
        assert_eq!(group_of(0.2, 5), 1);
        assert_eq!(group_of(1.0, 5), 4);
        assert_eq!(group_of(f32::NAN, 5), 0);
    }
}
