//! A [`ClusterSet`]'s accessors, its invariant check against the dataset ([`ClusterSet::verify`]),
//! and its file: the `fileio` frame with magic `TWINCLST`, saved atomically, loaded with every
//! structural check (a corrupt or hand-edited file is an error, never a panic later).

use std::path::Path;

use super::{group_of, ClusterSet, MAGIC, VERSION};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::fileio::{self, Reader, Writer};

/// Invariants of SPEC §4.5, as counted by [`ClusterSet::verify`].
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Invariants {
    pub users: usize,
    pub behaviours: usize,
    pub clusters: usize,
    pub max_size: usize,
    pub compression_ratio: f64,
}

impl ClusterSet {
    pub fn n_users(&self) -> usize {
        self.users.len()
    }
    pub fn n_clusters(&self) -> usize {
        self.item.len()
    }
    pub fn user_clusters(&self, slot: usize) -> std::ops::Range<usize> {
        self.user_offsets[slot] as usize..self.user_offsets[slot + 1] as usize
    }
    pub fn cluster_members(&self, c: usize) -> &[u32] {
        &self.members[self.member_offsets[c] as usize..self.member_offsets[c + 1] as usize]
    }

    /// Check SPEC §4.5 against the data it came from: every behaviour before the cut-off in
    /// exactly one cluster, each cluster inside one completion group, sizes in `1..γ`,
    /// `Σ n = T`, and the structure's own consistency. Errors name the first violation.
    pub fn verify(&self, data: &Dataset) -> Result<Invariants> {
        self.check_structure()?;
        let groups = self.groups as usize;
        let mut inv = Invariants { users: self.n_users(), clusters: self.n_clusters(), ..Default::default() };
        for (slot, &u) in self.users.iter().enumerate() {
            if u as usize >= data.n_users() {
                return Err(Error::OutOfRange { field: "clusters.users", index: slot, value: u as u64, limit: data.n_users() as u64 });
            }
            let r = if self.cutoff == i64::MAX { data.user_range(u as usize) } else { data.history_before(u as usize, self.cutoff) };
            let t = r.len();
            inv.behaviours += t;
            let mut seen = vec![false; t];
            let mut sum_n = 0usize;
            for c in self.user_clusters(slot) {
                let m = self.cluster_members(c);
                let n = m.len();
                if n == 0 || n >= self.gamma as usize || self.size[c] as usize != n {
                    return Err(Error::InvalidValue {
                        field: "clusters.size",
                        index: c,
                        value: n as f64,
                        why: "must equal the member count and lie in 1..gamma",
                    });
                }
                inv.max_size = inv.max_size.max(n);
                sum_n += n;
                for &pos in m {
                    let p = pos as usize;
                    if p >= t {
                        return Err(Error::OutOfRange { field: "clusters.members", index: c, value: pos as u64, limit: t as u64 });
                    }
                    if seen[p] {
                        return Err(Error::InvalidValue {
                            field: "clusters.members",
                            index: c,
                            value: pos as f64,
                            why: "behaviour is in more than one cluster",
                        });
                    }
                    seen[p] = true;
                    let g = group_of(data.behaviours.completion(r.start + p), groups);
                    if g != self.group[c] as usize {
                        return Err(Error::InvalidValue {
                            field: "clusters.group",
                            index: c,
                            value: g as f64,
                            why: "member's completion group differs from its cluster's",
                        });
                    }
                }
            }
            if sum_n != t {
                return Err(Error::InvalidValue {
                    field: "clusters.size (sum per user)",
                    index: slot,
                    value: sum_n as f64,
                    why: "Σ n must equal the user's behaviour count T",
                });
            }
        }
        inv.compression_ratio = if inv.clusters == 0 { 0.0 } else { inv.behaviours as f64 / inv.clusters as f64 };
        Ok(inv)
    }

    fn check_structure(&self) -> Result<()> {
        let c = self.n_clusters();
        crate::backend::check::offsets("clusters.user_offsets", &to_u32(&self.user_offsets, "clusters.user_offsets")?, c)?;
        crate::backend::check::len("clusters.user_offsets", self.user_offsets.len(), self.users.len() + 1, "users + 1")?;
        crate::backend::check::offsets(
            "clusters.member_offsets",
            &to_u32(&self.member_offsets, "clusters.member_offsets")?,
            self.members.len(),
        )?;
        crate::backend::check::len("clusters.member_offsets", self.member_offsets.len(), c + 1, "clusters + 1")?;
        for (field, n) in [
            ("clusters.timestamp", self.timestamp.len()),
            ("clusters.play_time", self.play_time.len()),
            ("clusters.completion", self.completion.len()),
            ("clusters.size", self.size.len()),
            ("clusters.group", self.group.len()),
        ] {
            crate::backend::check::len(field, n, c, "clusters")?;
        }
        crate::backend::check::finite("clusters.play_time", &self.play_time)?;
        crate::backend::check::finite("clusters.completion", &self.completion)?;
        if self.gamma < 2 || self.groups == 0 {
            return Err(Error::InvalidValue {
                field: "clusters.gamma",
                index: 0,
                value: self.gamma as f64,
                why: "gamma >= 2 and groups >= 1 required",
            });
        }
        if let Some(i) = self.group.iter().position(|&g| g as u32 >= self.groups) {
            return Err(Error::OutOfRange { field: "clusters.group", index: i, value: self.group[i] as u64, limit: self.groups as u64 });
        }
        if let Some(i) = self.size.iter().position(|&s| s == 0) {
            return Err(Error::InvalidValue { field: "clusters.size", index: i, value: 0.0, why: "a cluster has at least one member" });
        }
        Ok(())
    }

    /// Save atomically (`fileio` frame, magic `TWINCLST`).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.check_structure()?;
        let mut w = Writer::new();
        w.i64(self.cutoff);
        w.u32(self.gamma);
        w.u32(self.groups);
        w.u64(self.seed);
        w.u32s(&self.users);
        w.u64s(&self.user_offsets);
        w.u32s(&self.item);
        w.i64s(&self.timestamp);
        w.f32s(&self.play_time);
        w.f32s(&self.completion);
        w.u32s(&self.size);
        w.u8s(&self.group);
        w.u64s(&self.member_offsets);
        w.u32s(&self.members);
        for d in [self.dataset_digest, self.catalogue_digest] {
            w.u8(d.is_some() as u8);
            w.u64(d.unwrap_or(0));
        }
        fileio::save(path, MAGIC, VERSION, &w.buf)
    }

    pub fn load(path: &Path) -> Result<ClusterSet> {
        let (version, payload) = fileio::load(path, MAGIC, VERSION)?;
        let mut r = Reader::new(&payload, path);
        let mut set = ClusterSet {
            cutoff: r.i64("cutoff")?,
            gamma: r.u32("gamma")?,
            groups: r.u32("groups")?,
            seed: r.u64("seed")?,
            users: r.u32s("users")?,
            user_offsets: r.u64s("user_offsets")?,
            item: r.u32s("item")?,
            timestamp: r.i64s("timestamp")?,
            play_time: r.f32s("play_time")?,
            completion: r.f32s("completion")?,
            size: r.u32s("size")?,
            group: r.u8s("group")?,
            member_offsets: r.u64s("member_offsets")?,
            members: r.u32s("members")?,
            dataset_digest: None,
            catalogue_digest: None,
        };
        if version >= 2 {
            let mut digest = |field: &'static str| -> Result<Option<u64>> {
                let present = r.u8(field)?;
                let d = r.u64(field)?;
                match present {
                    0 => Ok(None),
                    1 => Ok(Some(d)),
                    _ => Err(Error::corrupt(path, format!("{field}: presence flag {present} is not 0 or 1"))),
                }
            };
            set.dataset_digest = digest("dataset_digest")?;
            set.catalogue_digest = digest("catalogue_digest")?;
        }
        r.finish()?;
        set.check_structure().map_err(|e| Error::corrupt(path, e.to_string()))?;
        Ok(set)
    }

    /// Slot of dataset user `u`, if clustered.
    pub fn slot_of(&self, u: u32) -> Option<usize> {
        self.users.iter().position(|&x| x == u)
    }
}

fn to_u32(v: &[u64], field: &'static str) -> Result<Vec<u32>> {
    v.iter()
        .enumerate()
        .map(|(i, &x)| u32::try_from(x).map_err(|_| Error::OutOfRange { field, index: i, value: x, limit: u32::MAX as u64 }))
        .collect()
}
