//! Assembling online requests (SPEC §3) from stored data: a user's raw history (TWIN) or the
//! user's clusters (TWIN-V2), with cross features bucketed against the request time.

use crate::backend::OnlineRequests;
use crate::cluster::ClusterSet;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::features;

/// TWIN: the most recent `max_len` behaviours of `user` strictly before `request_time`, each
/// with cluster size 1.
pub fn push_history(req: &mut OnlineRequests, data: &Dataset, user: usize, request_time: i64, max_len: usize, cands: &[u32]) -> Result<()> {
    if user >= data.n_users() {
        return Err(Error::OutOfRange { field: "user", index: 0, value: user as u64, limit: data.n_users() as u64 });
    }
    let r = data.history_before(user, request_time);
    let start = r.end.saturating_sub(max_len).max(r.start);
    let b = &data.behaviours;
    let mut items = Vec::with_capacity(r.end - start);
    let mut cross = Vec::with_capacity((r.end - start) * features::N_CROSS);
    for i in start..r.end {
        items.push(b.item[i]);
        cross.extend_from_slice(&features::cross_rows(b.play_time[i], b.duration[i], b.timestamp[i], request_time));
    }
    let sizes = vec![1f32; items.len()];
    req.push(&items, &cross, &sizes, cands);
    Ok(())
}

/// TWIN-V2: the clusters of the user in `slot` of `clusters`, each a virtual item with its
/// averaged completion ratio and play time, the newest member's timestamp, and size `n`.
pub fn push_clusters(req: &mut OnlineRequests, clusters: &ClusterSet, slot: usize, request_time: i64, cands: &[u32]) -> Result<()> {
    if slot >= clusters.n_users() {
        return Err(Error::OutOfRange { field: "cluster user slot", index: 0, value: slot as u64, limit: clusters.n_users() as u64 });
    }
    if clusters.cutoff != i64::MAX && request_time < clusters.cutoff {
        // A request before the cut-off would see clusters built from its own future.
        return Err(Error::InvalidValue {
            field: "request_time",
            index: slot,
            value: request_time as f64,
            why: "is before the clusters' cut-off time (leakage)",
        });
    }
    let r = clusters.user_clusters(slot);
    if let Some(c) = r.clone().find(|&c| clusters.timestamp[c] >= request_time) {
        return Err(Error::InvalidValue {
            field: "request_time",
            index: c,
            value: request_time as f64,
            why: "is not after every clustered behaviour (a sample sees only its past)",
        });
    }
    let mut cross = Vec::with_capacity(r.len() * features::N_CROSS);
    for c in r.clone() {
        cross.extend_from_slice(&features::cross_rows_from_ratio(
            clusters.completion[c],
            clusters.play_time[c],
            clusters.timestamp[c],
            request_time,
        ));
    }
    let sizes: Vec<f32> = clusters.size[r.clone()].iter().map(|&n| n as f32).collect();
    req.push(&clusters.item[r], &cross, &sizes, cands);
    Ok(())
}
