//! From a dataset to batches, without leakage.
//!
//! - [`Split::by_time`]: samples before the split time train, the rest test. Nothing about a
//!   test sample (its label, its behaviour) can reach training: every sequence is cut strictly
//!   before each sample's own request time.
//! - Raw sequences (`twin`, `sim-soft`, short-term): the user's behaviours strictly before the
//!   request time, the most recent `max_long` (long) and `short_len` (short).
//! - Clusters (`twin-v2`): built by the offline job from behaviours before the split time. A
//!   sample uses the user's clusters whose *newest* member is strictly before its request time
//!   (clusters are ordered by newest member, so a prefix), plus every behaviour before its
//!   request time that those clusters do not cover, as a singleton (`n = 1`): the behaviours
//!   since the last offline run, and those of clusters that reach past the sample. So every
//!   past behaviour is counted exactly once (`Σ n` = history length) and no future one is; a
//!   serving system does the same with the clusters of its last offline run.

use super::{Batch, Variant};
use crate::cluster::ClusterSet;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::features;

/// Training and test sample indices.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub train: Vec<u32>,
    pub test: Vec<u32>,
    /// First request time of the test part.
    pub time: i64,
}

impl Split {
    /// The last `test_fraction` of samples by request time are the test set (samples at the
    /// split time all go to test, so no time is on both sides).
    pub fn by_time(data: &Dataset, test_fraction: f64) -> Result<Split> {
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(Error::InvalidValue { field: "test_fraction", index: 0, value: test_fraction, why: "must be in (0, 1)" });
        }
        let t = &data.samples.request_time;
        if t.is_empty() {
            return Err(Error::Empty { field: "samples", index: 0 });
        }
        let mut sorted = t.clone();
        sorted.sort_unstable();
        let at = ((sorted.len() as f64) * (1.0 - test_fraction)).floor() as usize;
        let time = sorted[at.min(sorted.len() - 1)];
        let train: Vec<u32> = (0..t.len() as u32).filter(|&i| t[i as usize] < time).collect();
        let test: Vec<u32> = (0..t.len() as u32).filter(|&i| t[i as usize] >= time).collect();
        if train.is_empty() {
            return Err(Error::InvalidValue {
                field: "samples.request_time",
                index: 0,
                value: time as f64,
                why: "every sample is at or after the split time: nothing to train on",
            });
        }
        Ok(Split { train, test, time })
    }
}

/// Where a variant's long sequence comes from.
#[derive(Clone, Copy, Debug)]
pub enum SeqSource<'a> {
    Raw,
    Clusters(&'a ClusterSet),
}

/// Builds batches of a dataset's samples for one variant.
pub struct Examples<'a> {
    pub data: &'a Dataset,
    pub variant: Variant,
    pub source: SeqSource<'a>,
    /// Most recent raw behaviours fed to the GSU (TWIN: up to 10^5).
    pub max_long: usize,
    pub short_len: usize,
    pub n_context: usize,
    /// Feed `ln n` for cluster rows (SPEC §4); `false` only for the ablation that drops it
    /// (every row then counts as one behaviour in the attention).
    pub log_n: bool,
    /// How twin-v2 fits a history of more than `max_long` rows into the budget: `false` keeps
    /// the newest rows (SPEC), `true` the rows standing for the most behaviours (largest `n`,
    /// then newest), so long-dormant interests' clusters can stay (issue 16's budget rule).
    pub budget_by_size: bool,
    /// Cluster-set slot of each dataset user (`u32::MAX`: none).
    slots: Vec<u32>,
}

pub use crate::features::hour_of_day;

impl<'a> Examples<'a> {
    pub fn new(data: &'a Dataset, variant: Variant, clusters: Option<&'a ClusterSet>, max_long: usize, short_len: usize) -> Result<Self> {
        let source = match (variant.uses_clusters(), clusters) {
            (true, Some(c)) => SeqSource::Clusters(c),
            (true, None) => {
                return Err(Error::InvalidValue {
                    field: "clusters",
                    index: 0,
                    value: 0.0,
                    why: "twin-v2 needs the clusters of the offline job (twin cluster --cutoff <split time>)",
                })
            }
            (false, _) => SeqSource::Raw,
        };
        if max_long == 0 || max_long > crate::backend::MAX_SEQ_LEN {
            return Err(Error::TooLarge { field: "max_long", value: max_long as u64, limit: crate::backend::MAX_SEQ_LEN as u64 });
        }
        let mut slots = vec![u32::MAX; data.n_users()];
        if let SeqSource::Clusters(cs) = source {
            for (slot, &u) in cs.users.iter().enumerate() {
                if let Some(s) = slots.get_mut(u as usize) {
                    *s = slot as u32;
                }
            }
        }
        Ok(Examples { data, variant, source, max_long, short_len, n_context: 24, log_n: true, budget_by_size: false, slots })
    }

    /// The batch of the given sample indices.
    pub fn batch(&self, samples: &[u32]) -> Result<Batch> {
        let d = self.data;
        let s = &d.samples;
        let bh = &d.behaviours;
        let mut b = Batch { long_offsets: vec![0], short_offsets: vec![0], ..Batch::default() };
        for (i, &si) in samples.iter().enumerate() {
            let si = si as usize;
            if si >= s.len() {
                return Err(Error::OutOfRange { field: "sample index", index: i, value: si as u64, limit: s.len() as u64 });
            }
            let (u, t) = (s.user[si] as usize, s.request_time[si]);
            if u >= d.n_users() {
                return Err(Error::OutOfRange { field: "samples.user", index: si, value: u as u64, limit: d.n_users() as u64 });
            }
            b.target.push(s.item[si]);
            b.context.push(hour_of_day(t) % self.n_context as u32);
            b.label.push(s.label[si] as f32);
            b.user.push(u as u32);
            let hist = d.history_before(u, t);
            if self.variant.uses_long() {
                match self.source {
                    SeqSource::Raw => {
                        let start = hist.end.saturating_sub(self.max_long).max(hist.start);
                        for r in start..hist.end {
                            b.long_item.push(bh.item[r]);
                            b.long_cross.extend_from_slice(&features::cross_rows(bh.play_time[r], bh.duration[r], bh.timestamp[r], t));
                            b.long_log_n.push(0.0);
                        }
                    }
                    SeqSource::Clusters(cs) => {
                        // Clusters wholly in the past, plus every past behaviour they do not
                        // cover as a singleton (n = 1): each behaviour before `t` is counted
                        // exactly once, and none after it.
                        let h = hist.len();
                        let mut covered = vec![false; h];
                        // (timestamp, cluster index or usize::MAX for a raw row, position)
                        let mut rows: Vec<(i64, usize, usize)> = Vec::new();
                        let slot = self.slots[u] as usize;
                        if slot < cs.n_users() {
                            let r = cs.user_clusters(slot);
                            let end = r.start + cs.timestamp[r.clone()].partition_point(|&ts| ts < t);
                            for c in r.start..end {
                                for &m in cs.cluster_members(c) {
                                    if let Some(x) = covered.get_mut(m as usize) {
                                        *x = true;
                                    }
                                }
                                rows.push((cs.timestamp[c], c, 0));
                            }
                        }
                        for (pos, _) in covered.iter().enumerate().filter(|(_, &cv)| !cv) {
                            rows.push((bh.timestamp[hist.start + pos], usize::MAX, pos));
                        }
                        // Oldest first (stable: ties keep clusters before raw rows), the newest `max_long` kept
                        // (or, by size, the `max_long` standing for the most behaviours, in time order).
                        rows.sort_by_key(|&(ts, _, _)| ts);
                        if self.budget_by_size && rows.len() > self.max_long {
                            let n_of = |&(_, c, _): &(i64, usize, usize)| if c == usize::MAX { 1 } else { cs.size[c] };
                            let mut keep: Vec<usize> = (0..rows.len()).collect();
                            keep.sort_by_key(|&i| (std::cmp::Reverse(n_of(&rows[i])), std::cmp::Reverse(i)));
                            keep.truncate(self.max_long);
                            keep.sort_unstable();
                            rows = keep.into_iter().map(|i| rows[i]).collect();
                        }
                        for &(_, c, pos) in &rows[rows.len().saturating_sub(self.max_long)..] {
                            if c == usize::MAX {
                                let r = hist.start + pos;
                                b.long_item.push(bh.item[r]);
                                b.long_cross.extend_from_slice(&features::cross_rows(bh.play_time[r], bh.duration[r], bh.timestamp[r], t));
                                b.long_log_n.push(0.0);
                            } else {
                                b.long_item.push(cs.item[c]);
                                b.long_cross.extend_from_slice(&features::cross_rows_from_ratio(
                                    cs.completion[c],
                                    cs.play_time[c],
                                    cs.timestamp[c],
                                    t,
                                ));
                                b.long_log_n.push(if self.log_n { (cs.size[c].max(1) as f32).ln() } else { 0.0 });
                            }
                        }
                    }
                }
            }
            b.long_offsets.push(b.long_item.len() as u32);
            if self.variant.uses_short() {
                let start = hist.end.saturating_sub(self.short_len).max(hist.start);
                for r in start..hist.end {
                    b.short_item.push(bh.item[r]);
                    b.short_cross.extend_from_slice(&features::cross_rows(bh.play_time[r], bh.duration[r], bh.timestamp[r], t));
                }
            }
            b.short_offsets.push(b.short_item.len() as u32);
        }
        Ok(b)
    }
}
