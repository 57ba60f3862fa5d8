//! Synthetic short-video logs shaped like the ones TWIN is built for, with a label that a model
//! can only predict well by looking far back in the history.
//!
//! - Catalogue: each author has a main topic; an item belongs to a popularity-skewed author and
//!   (85%) to its main topic; durations are log-normal (median 30 s) clamped to 5 s .. 10 min.
//! - Users: 2-5 lifelong interests (topics with weights). Time runs in 30-day epochs; each
//!   epoch an active interest goes dormant with probability 0.3 and a dormant one comes back
//!   with probability 0.15, so interests drift and resurface after months.
//! - Events: mostly items of a currently active interest, some of a dormant one, some random.
//!   The user likes an item with probability 0.85 (topic actively liked), 0.45 (a dormant
//!   interest), 0.25 (the author's main topic is an active interest), else 0.06; a liked item is
//!   watched to 62-100%, another to under 50%.
//! - Time: from 2020-01-01 for about 3 years; sessions of ~15 events (seconds apart) separated
//!   by exponential gaps whose mean spreads the remaining sessions over the remaining time, so
//!   light and heavy users alike span the period; timestamps strictly increase within a user.
//! - Lengths: `fixed_len`, or Pareto(`min_len`, `pareto_alpha`) clamped to `max_len`.
//! - Samples: a user's last `samples_per_user` events are impressions (half from the user's
//!   lifelong interests, half random topics) and become samples `(user, item, its time,
//!   liked)`; they stay in the behaviour log, where `history_before` excludes them.
//!
//! With `lifelong` (TWIN-V2's setting, issue 16) the story changes in three ways, fixed before
//! any model was trained on it: 4-8 interests instead of 2-5; dormancy lasts about a year
//! (per 30-day epoch an active interest goes dormant with probability 0.2 and a dormant one
//! returns with probability 0.08, so ~70% of interests are dormant at any time); and a dormant
//! interest is never watched (events: 85% an active interest, 15% any topic). Lengths of 10^4
//! to 10^5 over the three years put a user's most recent 10^3 behaviours within the last
//! ~10-110 days, shorter than most dormancies: a model that sees only that window cannot tell a
//! dormant interest (liked with probability 0.45 when shown) from a random topic (0.06), while
//! the whole history shows it. `tests/lifelong.rs` checks that claim with label oracles.
//!
//! Deterministic per seed: the catalogue and each user draw from their own SplitMix64 stream
//! (`derive_seed`), so users are generated in parallel with identical results.

use rayon::prelude::*;

use super::{Behaviours, Dataset, Items, Samples};
use crate::error::{Error, Result};
use crate::features;
use crate::rng::{derive_seed, SplitMix64};

#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    pub n_users: usize,
    pub n_items: usize,
    pub n_authors: usize,
    pub n_topics: usize,
    /// Pareto scale: the shortest sequence.
    pub min_len: usize,
    /// Sequences longer than this are clamped.
    pub max_len: usize,
    /// Every user gets exactly this many behaviours (benchmarks); overrides the Pareto draw.
    pub fixed_len: Option<usize>,
    /// Pareto shape; smaller means a heavier tail.
    pub pareto_alpha: f64,
    pub samples_per_user: usize,
    pub seed: u64,
    /// The lifelong story (module docs): long dormancies that the recent window cannot see.
    pub lifelong: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            n_users: 200,
            n_items: 20_000,
            n_authors: 2_000,
            n_topics: 64,
            min_len: 10,
            max_len: 100_000,
            fixed_len: None,
            pareto_alpha: 1.2,
            samples_per_user: 20,
            seed: 42,
            lifelong: false,
        }
    }
}

impl SynthConfig {
    /// Issue 16's lifelong users: Pareto(10^4, 1.5) lengths clamped to `max_len` (10^5 by
    /// default, so a heavy tail between 10^4 and 10^5), the lifelong story, 40 samples a user.
    pub fn lifelong(n_users: usize, max_len: usize, seed: u64) -> SynthConfig {
        SynthConfig {
            n_users,
            min_len: 10_000.min(max_len.max(1)),
            max_len,
            pareto_alpha: 1.5,
            samples_per_user: 40,
            seed,
            lifelong: true,
            ..SynthConfig::default()
        }
    }
}

/// The dormancy process: (active -> dormant, dormant -> active) probabilities per epoch.
fn flip_probs(lifelong: bool) -> (f64, f64) {
    if lifelong {
        (0.2, 0.08)
    } else {
        (0.3, 0.15)
    }
}

/// 2020-01-01T00:00:00Z.
const START: i64 = 1_577_836_800;
const SPAN: f64 = 3.0 * 365.0 * 86_400.0;
const EPOCH: i64 = 30 * 86_400;
const SESSION_LEN: f64 = 15.0;

const STREAM_ITEMS: u64 = 1;
const STREAM_USER: u64 = 2;
const STREAM_LEN: u64 = 3;

/// Sequence length of user `u` (its own stream, so lengths are known before generation).
fn user_len(cfg: &SynthConfig, u: usize) -> usize {
    if let Some(n) = cfg.fixed_len {
        return n;
    }
    let mut r = SplitMix64::new(derive_seed(cfg.seed, &[STREAM_LEN, u as u64]));
    let x = 1.0 - r.next_f64(); // (0, 1]
    let l = cfg.min_len as f64 * x.powf(-1.0 / cfg.pareto_alpha);
    if l.is_finite() && l < cfg.max_len as f64 {
        (l as usize).clamp(cfg.min_len, cfg.max_len)
    } else {
        cfg.max_len
    }
}

fn check(cfg: &SynthConfig) -> Result<()> {
    let bad = |field: &'static str, value: u64, why: &'static str| Err(Error::BadShape { field, value, why });
    let max = u32::MAX as u64;
    for (field, v) in [("n_items", cfg.n_items), ("n_authors", cfg.n_authors), ("n_topics", cfg.n_topics)] {
        if v == 0 {
            return bad(field, 0, "must be at least 1");
        }
        if v as u64 > max {
            return Err(Error::TooLarge { field, value: v as u64, limit: max });
        }
    }
    if cfg.n_users == 0 {
        return bad("n_users", 0, "must be at least 1");
    }
    if cfg.n_users as u64 > max {
        return Err(Error::TooLarge { field: "n_users", value: cfg.n_users as u64, limit: max });
    }
    if cfg.fixed_len.is_none() {
        if cfg.min_len == 0 {
            return bad("min_len", 0, "the Pareto scale must be at least 1");
        }
        if cfg.max_len < cfg.min_len {
            return bad("max_len", cfg.max_len as u64, "must be >= min_len");
        }
        if !(cfg.pareto_alpha.is_finite() && cfg.pareto_alpha > 0.0) {
            return Err(Error::InvalidValue { field: "pareto_alpha", index: 0, value: cfg.pareto_alpha, why: "must be finite and > 0" });
        }
    }
    Ok(())
}

/// The item catalogue plus what generation needs: item durations and topic -> items lists.
struct Catalogue {
    items: Items,
    duration: Vec<f32>,
    author_topic: Vec<u32>,
    topic_offsets: Vec<usize>,
    topic_items: Vec<u32>,
}

fn catalogue(cfg: &SynthConfig) -> Catalogue {
    let mut r = SplitMix64::new(derive_seed(cfg.seed, &[STREAM_ITEMS]));
    let (na, nt, ni) = (cfg.n_authors as u64, cfg.n_topics as u64, cfg.n_items);
    let author_topic: Vec<u32> = (0..na).map(|_| r.below(nt) as u32).collect();
    let mut items = Items {
        author: Vec::with_capacity(ni),
        topic: Vec::with_capacity(ni),
        duration_bucket: Vec::with_capacity(ni),
        external_id: (0..ni as u64).collect(),
        n_authors: na as u32,
        n_topics: nt as u32,
    };
    let mut duration = Vec::with_capacity(ni);
    for _ in 0..ni {
        // Popularity skew: low author ids publish more.
        let a = ((r.next_f64() * r.next_f64()) * na as f64) as u64;
        let a = a.min(na - 1) as u32;
        let t = if r.next_f64() < 0.85 { author_topic[a as usize] } else { r.below(nt) as u32 };
        let d = (30f64.ln() + 0.9 * r.normal()).exp().clamp(5.0, 600.0) as f32;
        items.author.push(a);
        items.topic.push(t);
        items.duration_bucket.push(features::duration_bucket(d));
        duration.push(d);
    }
    let mut topic_offsets = vec![0usize; cfg.n_topics + 1];
    for &t in &items.topic {
        topic_offsets[t as usize + 1] += 1;
    }
    for t in 0..cfg.n_topics {
        topic_offsets[t + 1] += topic_offsets[t];
    }
    let mut fill = topic_offsets.clone();
    let mut topic_items = vec![0u32; ni];
    for (i, &t) in items.topic.iter().enumerate() {
        topic_items[fill[t as usize]] = i as u32;
        fill[t as usize] += 1;
    }
    Catalogue { items, duration, author_topic, topic_offsets, topic_items }
}

impl Catalogue {
    /// A popularity-skewed item of topic `t` (any item if the topic has none).
    fn pick(&self, r: &mut SplitMix64, t: u32) -> u32 {
        let (s, e) = (self.topic_offsets[t as usize], self.topic_offsets[t as usize + 1]);
        if s == e {
            return r.below(self.items.len() as u64) as u32;
        }
        let x = r.next_f64();
        self.topic_items[(s + ((x * x) * (e - s) as f64) as usize).min(e - 1)]
    }
}

/// One user's output slices.
struct UserOut<'a> {
    u: usize,
    item: &'a mut [u32],
    ts: &'a mut [i64],
    play: &'a mut [f32],
    dur: &'a mut [f32],
    s_item: &'a mut [u32],
    s_time: &'a mut [i64],
    s_label: &'a mut [u8],
}

fn gen_user(cfg: &SynthConfig, cat: &Catalogue, o: UserOut<'_>) {
    let mut r = SplitMix64::new(derive_seed(cfg.seed, &[STREAM_USER, o.u as u64]));
    let nt = cfg.n_topics as u64;
    let len = o.item.len();
    let n_samples = o.s_item.len();

    // Lifelong interests: distinct topics (as far as the topic count allows) with weights.
    let k = if cfg.lifelong { 4 + r.below(5) as usize } else { 2 + r.below(4) as usize }.min(cfg.n_topics);
    let mut topics: Vec<u32> = Vec::with_capacity(k);
    while topics.len() < k {
        let t = r.below(nt) as u32;
        if !topics.contains(&t) {
            topics.push(t);
        }
    }
    let weight: Vec<f64> = (0..k).map(|_| 0.5 + r.next_f64()).collect();
    let (to_dormant, to_active) = flip_probs(cfg.lifelong);
    let p_active0 = if cfg.lifelong { to_active / (to_active + to_dormant) } else { 0.6 };
    let mut active: Vec<bool> = (0..k).map(|_| r.next_f64() < p_active0).collect();
    let ensure_one = |active: &mut Vec<bool>, r: &mut SplitMix64| {
        if !active.iter().any(|&a| a) {
            let i = r.below(k as u64) as usize;
            active[i] = true;
        }
    };
    ensure_one(&mut active, &mut r);

    let mut t = START + r.below(30 * 86_400) as i64;
    let end = START + SPAN as i64;
    let mut epoch = 0i64;
    let mut last_play = 0f32;

    for i in 0..len {
        if i > 0 {
            if r.next_f64() < 1.0 / SESSION_LEN {
                // Session gap: exponential, its mean spreads the remaining sessions over the
                // remaining time, capped at half of it, so every history ends near `end`.
                let remaining = (end - t).max(0) as f64;
                let mean = remaining / ((len - i) as f64 / SESSION_LEN + 1.0);
                let gap = (-(1.0 - r.next_f64()).ln() * mean).min(0.5 * remaining);
                t += gap.max(60.0) as i64;
            } else {
                t += last_play.ceil() as i64 + 1 + r.below(10) as i64;
            }
        }
        // Interest drift: one Markov step per elapsed 30-day epoch.
        let e = (t - START) / EPOCH;
        while epoch < e {
            epoch += 1;
            for a in active.iter_mut() {
                let flip = if *a { to_dormant } else { to_active };
                if r.next_f64() < flip {
                    *a = !*a;
                }
            }
            ensure_one(&mut active, &mut r);
        }

        let sample = i >= len - n_samples;
        let x = r.next_f64();
        let topic = if sample {
            // Impressions: half from lifelong interests (active or not), half anything.
            if x < 0.5 {
                topics[r.below(k as u64) as usize]
            } else {
                r.below(nt) as u32
            }
        } else if x < 0.8 || (cfg.lifelong && x < 0.85) {
            weighted(&mut r, &topics, &weight, &active, true)
        } else if !cfg.lifelong && x < 0.88 {
            weighted(&mut r, &topics, &weight, &active, false)
        } else {
            r.below(nt) as u32
        };
        let item = cat.pick(&mut r, topic);
        let it = item as usize;
        let itopic = cat.items.topic[it];
        let p_like = match topics.iter().position(|&x| x == itopic) {
            Some(j) if active[j] => 0.85,
            Some(_) => 0.45,
            None => {
                let at = cat.author_topic[cat.items.author[it] as usize];
                if topics.iter().zip(&active).any(|(&x, &a)| a && x == at) {
                    0.25
                } else {
                    0.06
                }
            }
        };
        let liked = r.next_f64() < p_like;
        let y = r.next_f64();
        let completion = if liked { 0.62 + 0.38 * y.sqrt() } else { 0.5 * y * y };
        let d = cat.duration[it];
        let play = (completion * d as f64) as f32;
        o.item[i] = item;
        o.ts[i] = t;
        o.play[i] = play;
        o.dur[i] = d;
        last_play = play;
        if sample {
            let s = i - (len - n_samples);
            o.s_item[s] = item;
            o.s_time[s] = t;
            o.s_label[s] = liked as u8;
        }
    }
}

/// A weighted draw among the active (`want = true`) or dormant interests; falls back to all.
fn weighted(r: &mut SplitMix64, topics: &[u32], w: &[f64], active: &[bool], want: bool) -> u32 {
    let total: f64 = w.iter().zip(active).filter(|(_, &a)| a == want).map(|(w, _)| w).sum();
    if total <= 0.0 {
        return topics[r.below(topics.len() as u64) as usize];
    }
    let mut x = r.next_f64() * total;
    let mut last = topics[0];
    for ((&t, &wt), &a) in topics.iter().zip(w).zip(active) {
        if a != want {
            continue;
        }
        last = t;
        if x < wt {
            return t;
        }
        x -= wt;
    }
    last
}

/// Cut `v` into consecutive pieces of the given lengths.
fn split_by<'a, T>(mut v: &'a mut [T], lens: &[usize]) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(lens.len());
    for &n in lens {
        let (a, b) = std::mem::take(&mut v).split_at_mut(n);
        out.push(a);
        v = b;
    }
    out
}

/// Generates a synthetic dataset (see the module docs). Memory is proportional to the output:
/// lengths are drawn first, then users fill their slices of the flat columns in parallel.
pub fn generate(cfg: &SynthConfig) -> Result<Dataset> {
    check(cfg)?;
    let cat = catalogue(cfg);
    let lens: Vec<usize> = (0..cfg.n_users).into_par_iter().map(|u| user_len(cfg, u)).collect();
    let slens: Vec<usize> = lens.iter().map(|&l| l.min(cfg.samples_per_user)).collect();
    let mut user_offsets = Vec::with_capacity(cfg.n_users + 1);
    user_offsets.push(0u64);
    for &l in &lens {
        user_offsets.push(user_offsets[user_offsets.len() - 1] + l as u64);
    }
    let total: usize = lens.iter().sum();
    let n_s: usize = slens.iter().sum();

    let mut b = Behaviours { item: vec![0; total], timestamp: vec![0; total], play_time: vec![0.0; total], duration: vec![0.0; total] };
    let mut s_item = vec![0u32; n_s];
    let mut s_time = vec![0i64; n_s];
    let mut s_label = vec![0u8; n_s];
    {
        let jobs: Vec<UserOut<'_>> = split_by(&mut b.item, &lens)
            .into_iter()
            .zip(split_by(&mut b.timestamp, &lens))
            .zip(split_by(&mut b.play_time, &lens))
            .zip(split_by(&mut b.duration, &lens))
            .zip(split_by(&mut s_item, &slens))
            .zip(split_by(&mut s_time, &slens))
            .zip(split_by(&mut s_label, &slens))
            .enumerate()
            .map(|(u, ((((((item, ts), play), dur), s_item), s_time), s_label))| UserOut {
                u,
                item,
                ts,
                play,
                dur,
                s_item,
                s_time,
                s_label,
            })
            .collect();
        // Long users dominate; small chunks keep both cores busy.
        jobs.into_par_iter().with_max_len(1).for_each(|o| gen_user(cfg, &cat, o));
    }
    let samples = Samples {
        user: slens.iter().enumerate().flat_map(|(u, &n)| std::iter::repeat(u as u32).take(n)).collect(),
        item: s_item,
        request_time: s_time,
        label: s_label,
    };
    let ds = Dataset {
        source: "synthetic".into(),
        items: cat.items,
        user_offsets,
        user_ids: (0..cfg.n_users as u64).collect(),
        behaviours: b,
        samples,
    };
    debug_assert!(ds.validate().is_ok());
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_config_is_valid_and_bad_config_is_an_error() {
        let cfg = SynthConfig { n_users: 30, n_items: 500, n_authors: 50, n_topics: 8, max_len: 2000, ..Default::default() };
        let ds = generate(&cfg).unwrap();
        ds.validate().unwrap();
        assert_eq!(ds.n_users(), 30);
        assert!(generate(&SynthConfig { n_items: 0, ..cfg.clone() }).is_err());
        assert!(generate(&SynthConfig { min_len: 10, max_len: 5, ..cfg.clone() }).is_err());
        assert!(generate(&SynthConfig { pareto_alpha: f64::NAN, ..cfg.clone() }).is_err());
        // More topics than items: empty topics fall back to any item.
        let ds = generate(&SynthConfig { n_items: 3, n_topics: 50, ..cfg }).unwrap();
        ds.validate().unwrap();
    }
}
