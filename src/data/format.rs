//! The dataset file, its validation and a human summary.
//!
//! A dataset file is a [`crate::fileio`] container with magic `b"TWINDATA"` and version 1
//! (atomic save, CRC-32 over everything before the trailer). The payload is, in order, all
//! little-endian, every array prefixed by its element count as a `u64`:
//!
//! ```text
//! source                    str  (u64 byte length + UTF-8)   "movielens", "synthetic", ...
//! items.n_authors           u32
//! items.n_topics            u32
//! items.author              [u32; n_items]   < n_authors
//! items.topic               [u32; n_items]   < n_topics
//! items.duration_bucket     [u32; n_items]   < features::DURATION_BUCKETS
//! items.external_id         [u64; n_items]
//! user_offsets              [u64; n_users + 1]  0, non-decreasing, last = n_behaviours
//! user_ids                  [u64; n_users]
//! behaviours.item           [u32; n_behaviours]
//! behaviours.timestamp      [i64; n_behaviours]  seconds, non-decreasing within a user
//! behaviours.play_time      [f32; n_behaviours]  finite, >= 0
//! behaviours.duration       [f32; n_behaviours]  finite, >= 0
//! samples.user              [u32; n_samples]
//! samples.item              [u32; n_samples]
//! samples.request_time      [i64; n_samples]
//! samples.label             [u8;  n_samples]     0 or 1
//! ```
//! The payload must be consumed exactly. `load` then runs [`Dataset::validate`], so a file that
//! parses but breaks an invariant is refused with the field and value that are wrong.

use std::path::Path;

use super::text::format_date;
use super::Dataset;
use crate::error::{Error, Result};
use crate::features;
use crate::fileio::{self, Reader, Writer};

pub const MAGIC: &[u8; 8] = b"TWINDATA";
pub const VERSION: u32 = 1;

impl Dataset {
    /// Writes the dataset atomically (temp file + rename), see the module docs for the layout.
    pub fn save(&self, path: &Path) -> Result<()> {
        let b = &self.behaviours;
        let s = &self.samples;
        let bytes = 64
            + self.source.len()
            + self.items.len() * 20
            + (self.user_offsets.len() + self.user_ids.len()) * 8
            + b.len() * 20
            + s.len() * 17;
        let mut w = Writer { buf: Vec::with_capacity(bytes) };
        w.str(&self.source);
        w.u32(self.items.n_authors);
        w.u32(self.items.n_topics);
        w.u32s(&self.items.author);
        w.u32s(&self.items.topic);
        w.u32s(&self.items.duration_bucket);
        w.u64s(&self.items.external_id);
        w.u64s(&self.user_offsets);
        w.u64s(&self.user_ids);
        w.u32s(&b.item);
        w.i64s(&b.timestamp);
        w.f32s(&b.play_time);
        w.f32s(&b.duration);
        w.u32s(&s.user);
        w.u32s(&s.item);
        w.i64s(&s.request_time);
        w.u8s(&s.label);
        fileio::save(path, MAGIC, VERSION, &w.buf)
    }

    /// Reads and validates a dataset file. Truncated, corrupt or foreign files are errors.
    pub fn load(path: &Path) -> Result<Dataset> {
        let (_version, payload) = fileio::load(path, MAGIC, VERSION)?;
        let mut r = Reader::new(&payload, path);
        let source = r.str("source")?;
        let n_authors = r.u32("items.n_authors")?;
        let n_topics = r.u32("items.n_topics")?;
        let items = super::Items {
            author: r.u32s("items.author")?,
            topic: r.u32s("items.topic")?,
            duration_bucket: r.u32s("items.duration_bucket")?,
            external_id: r.u64s("items.external_id")?,
            n_authors,
            n_topics,
        };
        let user_offsets = r.u64s("user_offsets")?;
        let user_ids = r.u64s("user_ids")?;
        let behaviours = super::Behaviours {
            item: r.u32s("behaviours.item")?,
            timestamp: r.i64s("behaviours.timestamp")?,
            play_time: r.f32s("behaviours.play_time")?,
            duration: r.f32s("behaviours.duration")?,
        };
        let samples = super::Samples {
            user: r.u32s("samples.user")?,
            item: r.u32s("samples.item")?,
            request_time: r.i64s("samples.request_time")?,
            label: r.u8s("samples.label")?,
        };
        r.finish()?;
        let ds = Dataset { source, items, user_offsets, user_ids, behaviours, samples };
        ds.validate()?;
        Ok(ds)
    }

    /// Checks every invariant the engine relies on; the error names the field, index and value.
    pub fn validate(&self) -> Result<()> {
        let it = &self.items;
        let n_items = it.author.len();
        let eq = |field: &'static str, got: usize, expected: usize, expected_what: &'static str| {
            if got != expected {
                Err(Error::LengthMismatch { field, got, expected, expected_what })
            } else {
                Ok(())
            }
        };
        eq("items.topic", it.topic.len(), n_items, "items.author")?;
        eq("items.duration_bucket", it.duration_bucket.len(), n_items, "items.author")?;
        eq("items.external_id", it.external_id.len(), n_items, "items.author")?;
        check_below("items.author", &it.author, it.n_authors as u64)?;
        check_below("items.topic", &it.topic, it.n_topics as u64)?;
        check_below("items.duration_bucket", &it.duration_bucket, features::DURATION_BUCKETS as u64)?;

        let b = &self.behaviours;
        let n_beh = b.item.len();
        eq("behaviours.timestamp", b.timestamp.len(), n_beh, "behaviours.item")?;
        eq("behaviours.play_time", b.play_time.len(), n_beh, "behaviours.item")?;
        eq("behaviours.duration", b.duration.len(), n_beh, "behaviours.item")?;

        // Offsets: empty means "no users" (Dataset::default()), then there can be no behaviours.
        let off = &self.user_offsets;
        if off.is_empty() {
            if n_beh != 0 {
                return Err(Error::BadOffsets { field: "user_offsets", index: 0, why: "empty but there are behaviours" });
            }
        } else {
            if off[0] != 0 {
                return Err(Error::BadOffsets { field: "user_offsets", index: 0, why: "must start at 0" });
            }
            if let Some(i) = off.windows(2).position(|w| w[1] < w[0]) {
                return Err(Error::BadOffsets { field: "user_offsets", index: i + 1, why: "decreasing" });
            }
            if off[off.len() - 1] != n_beh as u64 {
                return Err(Error::BadOffsets {
                    field: "user_offsets",
                    index: off.len() - 1,
                    why: "last offset must equal the behaviour count",
                });
            }
        }
        let n_users = self.n_users();
        eq("user_ids", self.user_ids.len(), n_users, "user count (user_offsets - 1)")?;

        check_below("behaviours.item", &b.item, n_items as u64)?;
        check_nonneg("behaviours.play_time", &b.play_time)?;
        check_nonneg("behaviours.duration", &b.duration)?;
        for u in 0..n_users {
            let r = off[u] as usize..off[u + 1] as usize;
            if let Some(k) = b.timestamp[r.clone()].windows(2).position(|w| w[1] < w[0]) {
                let i = r.start + k + 1;
                return Err(Error::InvalidValue {
                    field: "behaviours.timestamp",
                    index: i,
                    value: b.timestamp[i] as f64,
                    why: "earlier than the previous behaviour of the same user (must be sorted oldest first)",
                });
            }
        }

        let s = &self.samples;
        let n_s = s.user.len();
        eq("samples.item", s.item.len(), n_s, "samples.user")?;
        eq("samples.request_time", s.request_time.len(), n_s, "samples.user")?;
        eq("samples.label", s.label.len(), n_s, "samples.user")?;
        check_below("samples.user", &s.user, n_users as u64)?;
        check_below("samples.item", &s.item, n_items as u64)?;
        if let Some(i) = s.label.iter().position(|&l| l > 1) {
            return Err(Error::InvalidValue { field: "samples.label", index: i, value: s.label[i] as f64, why: "a label must be 0 or 1" });
        }
        Ok(())
    }

    /// A short multi-line summary for humans (CLI `describe`, logs).
    pub fn describe(&self) -> String {
        let n_users = self.n_users();
        let mut lens: Vec<u64> = self.user_offsets.windows(2).map(|w| w[1].saturating_sub(w[0])).collect();
        lens.sort_unstable();
        let (min, med, max) = match lens.len() {
            0 => (0, 0, 0),
            n => (lens[0], lens[n / 2], lens[n - 1]),
        };
        let ts = &self.behaviours.timestamp;
        let span = match (ts.iter().min(), ts.iter().max()) {
            (Some(&a), Some(&b)) => format!("{} .. {} ({:.0} days)", format_date(a), format_date(b), (b - a) as f64 / 86_400.0),
            _ => "none".to_string(),
        };
        let pos = self.samples.label.iter().filter(|&&l| l == 1).count();
        let rate = if self.samples.is_empty() { 0.0 } else { 100.0 * pos as f64 / self.samples.len() as f64 };
        format!(
            "source: {}\nusers: {}\nitems: {} ({} authors, {} topics)\nbehaviours: {}\nsequence length: min {} / median {} / max {}\ntime span: {}\nsamples: {} (positive rate {:.1}%)",
            self.source,
            n_users,
            self.items.len(),
            self.items.n_authors,
            self.items.n_topics,
            self.behaviours.len(),
            min,
            med,
            max,
            span,
            self.samples.len(),
            rate
        )
    }
}

fn check_below(field: &'static str, v: &[u32], limit: u64) -> Result<()> {
    match v.iter().position(|&x| x as u64 >= limit) {
        Some(i) => Err(Error::OutOfRange { field, index: i, value: v[i] as u64, limit }),
        None => Ok(()),
    }
}

fn check_nonneg(field: &'static str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
        Some(i) if !v[i].is_finite() => Err(Error::NonFinite { field, index: i, value: v[i] }),
        Some(i) => Err(Error::InvalidValue { field, index: i, value: v[i] as f64, why: "must be >= 0" }),
        None => Ok(()),
    }
}
