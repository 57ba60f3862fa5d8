//! Where a clusters file came from: digests of the dataset's histories and of the item
//! catalogue, recorded when the clusters are built (format version 2) and checked before they
//! are scored or trained on, so clusters of another dataset or catalogue are refused with a
//! message instead of silently indexing the wrong users and items.

use super::ClusterSet;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::rng::mix64;

fn fold(acc: u64, v: u64) -> u64 {
    mix64(acc ^ v.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A 64-bit digest of every user's history (ids, offsets, items, times): what clusters index.
pub fn dataset_digest(ds: &Dataset) -> u64 {
    let mut h = fold(mix64(ds.n_users() as u64), ds.behaviours.len() as u64);
    for &u in &ds.user_ids {
        h = fold(h, u);
    }
    for &o in &ds.user_offsets {
        h = fold(h, o);
    }
    for (&i, &t) in ds.behaviours.item.iter().zip(&ds.behaviours.timestamp) {
        h = fold(h, ((i as u64) << 32) ^ t as u64);
    }
    h
}

/// A 64-bit digest of the item catalogue's inherent features, which a dataset and a model both
/// hold: clusters name items by index, so a model of another catalogue would read other items.
pub fn catalogue_digest(author: &[u32], topic: &[u32], duration_bucket: &[u32]) -> u64 {
    let mut h = mix64(author.len() as u64);
    for ((&a, &t), &d) in author.iter().zip(topic).zip(duration_bucket) {
        h = fold(h, ((a as u64) << 32) | t as u64);
        h = fold(h, d as u64);
    }
    h
}

impl ClusterSet {
    /// Records that these clusters were built from `ds` (its histories and its catalogue).
    pub fn set_source(&mut self, ds: &Dataset) {
        self.dataset_digest = Some(dataset_digest(ds));
        self.catalogue_digest = Some(catalogue_digest(&ds.items.author, &ds.items.topic, &ds.items.duration_bucket));
    }

    /// Refuses clusters built from another dataset, or for another item catalogue than the
    /// model's. Files from before the digests were recorded (format version 1) pass.
    pub fn check_source(&self, ds: &Dataset, model: &Model) -> Result<()> {
        if let Some(d) = self.dataset_digest {
            let here = dataset_digest(ds);
            if d != here {
                return Err(Error::Incompatible {
                    what: "clusters",
                    why: format!(
                        "built from another dataset (history digest {d:016x}; this dataset's is {here:016x}): build them for this dataset with `twin cluster`"
                    ),
                });
            }
        }
        if let Some(c) = self.catalogue_digest {
            let m = catalogue_digest(&model.item_author, &model.item_topic, &model.item_duration_bucket);
            if c != m {
                return Err(Error::Incompatible {
                    what: "clusters",
                    why: format!("built for another item catalogue than the model's (digest {c:016x}; the model's is {m:016x})"),
                });
            }
        }
        Ok(())
    }
}
