//! Turns parsed log rows into a [`Dataset`]: dense ids (users and items in ascending external-id
//! order), per-user stable sort by time, one sample per row. Shared by the MovieLens and Kuai
//! readers so both obey the same rules.

use std::collections::HashMap;

use super::{Behaviours, Dataset, Items, Samples};
use crate::data::text::Vocab;
use crate::error::{Error, Result};
use crate::features;

/// One parsed log row.
pub(crate) struct Row {
    pub user: u64,
    pub item: u64,
    /// Sort key at the finest resolution the source has (e.g. milliseconds); ties keep file order.
    pub key: i64,
    /// Seconds since the epoch.
    pub ts: i64,
    pub play: f32,
    /// Item duration seen on this row; `None` = unknown here (taken from the item instead).
    pub dur: Option<f32>,
    pub label: u8,
    /// Whether the row is a behaviour the user performed (otherwise it is only a sample).
    pub behaviour: bool,
}

/// Inherent features of one item, as raw strings before dense mapping.
#[derive(Clone, Debug, Default)]
pub(crate) struct ItemMeta {
    pub author: Option<String>,
    pub topic: Option<String>,
    /// Seconds.
    pub duration: Option<f32>,
}

pub(crate) struct BuildOptions {
    pub source: String,
    /// Derive `duration_bucket` from the item's duration (false: bucket 0, e.g. ratings).
    pub duration_buckets: bool,
}

pub(crate) fn build(rows: Vec<Row>, meta: &HashMap<u64, ItemMeta>, opt: BuildOptions) -> Result<Dataset> {
    let too_many = |field: &'static str, n: usize| Error::TooLarge { field, value: n as u64, limit: u32::MAX as u64 };

    if rows.len() > u32::MAX as usize {
        return Err(too_many("log rows", rows.len()));
    }
    if rows.is_empty() {
        return Err(Error::InvalidValue {
            field: "log rows",
            index: 0,
            value: 0.0,
            why: "the log holds no interactions: nothing to build",
        });
    }
    let mut user_ids: Vec<u64> = rows.iter().map(|r| r.user).collect();
    user_ids.sort_unstable();
    user_ids.dedup();
    let mut item_ids: Vec<u64> = rows.iter().map(|r| r.item).collect();
    item_ids.sort_unstable();
    item_ids.dedup();
    if user_ids.len() > u32::MAX as usize {
        return Err(too_many("users", user_ids.len()));
    }
    if item_ids.len() > u32::MAX as usize {
        return Err(too_many("items", item_ids.len()));
    }
    let user_of: HashMap<u64, u32> = user_ids.iter().enumerate().map(|(i, &u)| (u, i as u32)).collect();
    let item_of: HashMap<u64, u32> = item_ids.iter().enumerate().map(|(i, &u)| (u, i as u32)).collect();
    let dense_user = |r: &Row| user_of.get(&r.user).copied().unwrap_or(0);
    let dense_item = |r: &Row| item_of.get(&r.item).copied().unwrap_or(0);

    // Item duration: the features file's, else the first positive one seen in the log.
    let mut item_dur: Vec<Option<f32>> = item_ids.iter().map(|id| meta.get(id).and_then(|m| m.duration).filter(|d| *d > 0.0)).collect();
    for r in &rows {
        let i = dense_item(r) as usize;
        if item_dur[i].is_none() {
            item_dur[i] = r.dur.filter(|d| *d > 0.0);
        }
    }

    let metas: Vec<Option<&ItemMeta>> = item_ids.iter().map(|id| meta.get(id)).collect();
    let authors = Vocab::build(metas.iter().filter_map(|m| m.and_then(|m| m.author.as_deref())));
    let topics = Vocab::build(metas.iter().filter_map(|m| m.and_then(|m| m.topic.as_deref())));
    let items = Items {
        author: metas.iter().map(|m| authors.get(m.and_then(|m| m.author.as_deref()))).collect(),
        topic: metas.iter().map(|m| topics.get(m.and_then(|m| m.topic.as_deref()))).collect(),
        duration_bucket: item_dur
            .iter()
            .map(|d| match (opt.duration_buckets, d) {
                (true, Some(d)) => features::duration_bucket(*d),
                _ => 0,
            })
            .collect(),
        external_id: item_ids,
        n_authors: authors.size,
        n_topics: topics.size,
    };

    // Stable sort of row indices by (user, time key): equal times keep file order.
    let mut order: Vec<u32> = (0..rows.len() as u32).collect();
    order.sort_by_key(|&i| {
        let r = &rows[i as usize];
        (dense_user(r), r.key)
    });

    let n_beh = rows.iter().filter(|r| r.behaviour).count();
    let mut b = Behaviours {
        item: Vec::with_capacity(n_beh),
        timestamp: Vec::with_capacity(n_beh),
        play_time: Vec::with_capacity(n_beh),
        duration: Vec::with_capacity(n_beh),
    };
    let mut s = Samples {
        user: Vec::with_capacity(rows.len()),
        item: Vec::with_capacity(rows.len()),
        request_time: Vec::with_capacity(rows.len()),
        label: Vec::with_capacity(rows.len()),
    };
    let mut user_offsets = vec![0u64; user_ids.len() + 1];
    for &i in &order {
        let r = &rows[i as usize];
        let (u, it) = (dense_user(r), dense_item(r));
        if r.behaviour {
            b.item.push(it);
            b.timestamp.push(r.ts);
            b.play_time.push(r.play);
            b.duration.push(r.dur.filter(|d| *d > 0.0).or(item_dur[it as usize]).unwrap_or(0.0));
            user_offsets[u as usize + 1] += 1;
        }
        s.user.push(u);
        s.item.push(it);
        s.request_time.push(r.ts);
        s.label.push(r.label);
    }
    for u in 0..user_ids.len() {
        user_offsets[u + 1] += user_offsets[u];
    }
    let ds = Dataset { source: opt.source, items, user_offsets, user_ids, behaviours: b, samples: s };
    ds.validate()?;
    Ok(ds)
}
