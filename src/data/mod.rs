//! Behaviour data: an item catalogue, each user's behaviour sequence stored once (columnar,
//! oldest first), and samples that reference users by index (no per-sample sequence copies).

use std::ops::Range;

mod build;
pub mod format;
mod import;
pub mod kuai;
pub mod movielens;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod synth;
mod text;

pub use import::{is_parquet, read_log, read_log_as, sniff_log, LogFormat, PARQUET_MAGIC};
pub use kuai::read_kuai;
pub use movielens::read_movielens;
pub use synth::{generate, SynthConfig};

use crate::features;

/// Inherent features of every item, indexed by dense item id `0..n_items`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Items {
    pub author: Vec<u32>,
    pub topic: Vec<u32>,
    pub duration_bucket: Vec<u32>,
    /// External id of each item in the source log (e.g. MovieLens movieId).
    pub external_id: Vec<u64>,
    pub n_authors: u32,
    pub n_topics: u32,
}

impl Items {
    /// A 64-bit digest of the whole catalogue (ids, features, vocabulary sizes): a checkpoint
    /// or model trained on one catalogue records it, so resuming on another is refused.
    pub fn fingerprint(&self) -> u64 {
        use crate::rng::mix64;
        let fold = |acc: u64, v: u64| mix64(acc ^ v.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut h = fold(fold(mix64(self.len() as u64), self.n_authors as u64), self.n_topics as u64);
        for i in 0..self.len() {
            h = fold(h, self.external_id[i]);
            h = fold(h, ((self.author[i] as u64) << 32) | self.topic[i] as u64);
            h = fold(h, self.duration_bucket[i] as u64);
        }
        h
    }

    pub fn len(&self) -> usize {
        self.author.len()
    }
    pub fn is_empty(&self) -> bool {
        self.author.is_empty()
    }
}

/// All users' behaviours, flat and columnar; user `u` owns `user_offsets[u]..user_offsets[u+1]`,
/// sorted by timestamp (stable for equal times).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Behaviours {
    pub item: Vec<u32>,
    /// Seconds since the epoch.
    pub timestamp: Vec<i64>,
    /// Seconds watched (explicit-rating data: the rating).
    pub play_time: Vec<f32>,
    /// Seconds of the item (explicit-rating data: the maximum rating).
    pub duration: Vec<f32>,
}

impl Behaviours {
    pub fn len(&self) -> usize {
        self.item.len()
    }
    pub fn is_empty(&self) -> bool {
        self.item.is_empty()
    }
    /// SPEC §1: `p = clamp(play_time / duration, 0, 1)`.
    pub fn completion(&self, i: usize) -> f32 {
        features::completion_ratio(self.play_time[i], self.duration[i])
    }
}

/// `(user, target item, request time, label)`; the user's history is looked up, not copied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    pub user: Vec<u32>,
    pub item: Vec<u32>,
    pub request_time: Vec<i64>,
    pub label: Vec<u8>,
}

impl Samples {
    pub fn len(&self) -> usize {
        self.user.len()
    }
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Where it came from: "synthetic", "movielens", "kuairand", ...
    pub source: String,
    pub items: Items,
    /// `[U + 1]` offsets into `behaviours`.
    pub user_offsets: Vec<u64>,
    /// External id of each user in the source log.
    pub user_ids: Vec<u64>,
    pub behaviours: Behaviours,
    pub samples: Samples,
}

impl Dataset {
    pub fn n_users(&self) -> usize {
        self.user_offsets.len().saturating_sub(1)
    }
    /// User `u`'s behaviours as a range into `behaviours`.
    pub fn user_range(&self, u: usize) -> Range<usize> {
        self.user_offsets[u] as usize..self.user_offsets[u + 1] as usize
    }
    /// User `u`'s behaviours strictly before `time` (SPEC §1: no leakage).
    pub fn history_before(&self, u: usize, time: i64) -> Range<usize> {
        let r = self.user_range(u);
        let ts = &self.behaviours.timestamp[r.clone()];
        r.start..r.start + ts.partition_point(|&t| t < time)
    }
}
