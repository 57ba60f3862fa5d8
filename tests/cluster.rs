//! Offline clustering (SPEC §4) on the CPU backend: invariants on synthetic and real data,
//! termination on degenerate inputs, determinism whatever the batching, the clusters file.

use std::path::PathBuf;

use twin_engine::backend::cpu::CpuBackend;
use twin_engine::backend::Backend;
use twin_engine::cluster::{cluster_users, cluster_users_keyed, cluster_users_on, delta, group_of, ClusterConfig, ClusterSet};
use twin_engine::data::{self, Behaviours, Dataset, Items, SynthConfig};
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

const DIM: usize = 8;

fn embeddings(n_items: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n_items * DIM).map(|_| r.normal() as f32).collect()
}

fn run(ds: &Dataset, emb: &[f32], dim: usize, cfg: &ClusterConfig, cutoff: Option<i64>) -> ClusterSet {
    let users: Vec<u32> = (0..ds.n_users() as u32).collect();
    cluster_users(&CpuBackend::new(), ds, &users, cutoff, emb, dim, cfg, &mut |_, _| {}).unwrap().0
}

/// One user whose `t` behaviours all use item `item_of(i)` with completion `p_of(i)`.
fn one_user(t: usize, n_items: usize, item_of: impl Fn(usize) -> u32, p_of: impl Fn(usize) -> f32) -> Dataset {
    let items = Items {
        author: vec![0; n_items],
        topic: vec![0; n_items],
        duration_bucket: vec![0; n_items],
        external_id: (0..n_items as u64).collect(),
        n_authors: 1,
        n_topics: 1,
    };
    let behaviours = Behaviours {
        item: (0..t).map(&item_of).collect(),
        timestamp: (0..t as i64).collect(),
        play_time: (0..t).map(|i| p_of(i) * 10.0).collect(),
        duration: vec![10.0; t],
    };
    Dataset { source: "test".into(), items, user_offsets: vec![0, t as u64], user_ids: vec![0], behaviours, samples: Default::default() }
}

#[test]
fn invariants_on_synthetic_users() {
    let ds = data::generate(&SynthConfig {
        n_users: 30,
        n_items: 3000,
        min_len: 10,
        max_len: 5000,
        samples_per_user: 5,
        seed: 3,
        ..Default::default()
    })
    .unwrap();
    let emb = embeddings(ds.items.len(), 1);
    let cfg = ClusterConfig::default();
    let set = run(&ds, &emb, DIM, &cfg, None);
    let inv = set.verify(&ds).unwrap();
    assert_eq!(inv.behaviours, ds.behaviours.len());
    assert!(inv.max_size < 20);
    assert!(inv.clusters < inv.behaviours, "clustering must compress");
    // Virtual items: item is a member's, timestamp the newest member's, size matches.
    for slot in 0..set.n_users() {
        let base = ds.user_range(set.users[slot] as usize).start;
        for c in set.user_clusters(slot) {
            let m = set.cluster_members(c);
            assert!(m.iter().any(|&p| ds.behaviours.item[base + p as usize] == set.item[c]));
            let newest = m.iter().map(|&p| ds.behaviours.timestamp[base + p as usize]).max().unwrap();
            assert_eq!(set.timestamp[c], newest);
            assert!((0.0..=1.0).contains(&set.completion[c]));
        }
    }
}

#[test]
fn deterministic_whatever_the_batching() {
    let ds = data::generate(&SynthConfig {
        n_users: 12,
        n_items: 2000,
        min_len: 50,
        max_len: 3000,
        samples_per_user: 2,
        seed: 9,
        ..Default::default()
    })
    .unwrap();
    let emb = embeddings(ds.items.len(), 2);
    let big = run(&ds, &emb, DIM, &ClusterConfig::default(), None);
    let small = run(&ds, &emb, DIM, &ClusterConfig { max_batch_points: 37, ..Default::default() }, None);
    assert_eq!(big, small);
    // Users one at a time give the same clusters as all together.
    for u in 0..ds.n_users() as u32 {
        let (alone, _) = cluster_users(&CpuBackend::new(), &ds, &[u], None, &emb, DIM, &ClusterConfig::default(), &mut |_, _| {}).unwrap();
        let s = big.user_clusters(u as usize);
        assert_eq!(alone.item, big.item[s.clone()].to_vec());
        assert_eq!(alone.size, big.size[s].to_vec());
    }
    // Another seed gives another clustering.
    let other = run(&ds, &emb, DIM, &ClusterConfig { seed: 1, ..Default::default() }, None);
    assert_ne!(big.members, other.members);
}

#[test]
fn terminates_on_edge_sizes_and_identical_embeddings() {
    for t in [0usize, 1, 19, 20, 21, 400] {
        // Distinct embeddings.
        let ds = one_user(t, 500, |i| i as u32, |_| 0.5);
        let set = run(&ds, &embeddings(500, 4), DIM, &ClusterConfig::default(), None);
        let inv = set.verify(&ds).unwrap();
        assert_eq!(inv.behaviours, t);
        if t > 0 && t < 20 {
            assert_eq!(set.n_clusters(), 1, "T = {t} < gamma stays one cluster");
        }
        // Identical embeddings: every item the same, so k-means cannot split.
        let ds = one_user(t, 1, |_| 0, |_| 0.5);
        let set = run(&ds, &embeddings(1, 4), DIM, &ClusterConfig::default(), None);
        let inv = set.verify(&ds).unwrap();
        assert_eq!(inv.behaviours, t);
        assert!(inv.max_size < 20);
        if t >= 20 {
            assert_eq!(set.n_clusters(), t.div_ceil(19), "T = {t}: chunks of gamma - 1");
        }
    }
    // Many distinct items but only two distinct embeddings.
    let ds = one_user(1000, 10, |i| (i % 10) as u32, |i| (i % 7) as f32 / 7.0);
    let emb: Vec<f32> = (0..10 * DIM).map(|i| ((i / DIM) % 2) as f32).collect();
    let set = run(&ds, &emb, DIM, &ClusterConfig::default(), None);
    set.verify(&ds).unwrap();
}

#[test]
fn clusters_stay_inside_completion_groups() {
    let ds = one_user(600, 600, |i| i as u32, |i| (i % 11) as f32 / 10.0);
    let set = run(&ds, &embeddings(600, 5), DIM, &ClusterConfig::default(), None);
    set.verify(&ds).unwrap();
    for c in 0..set.n_clusters() {
        for &p in set.cluster_members(c) {
            assert_eq!(group_of(ds.behaviours.completion(p as usize), 5), set.group[c] as usize);
        }
    }
    let groups: std::collections::BTreeSet<u8> = set.group.iter().cloned().collect();
    assert_eq!(groups.len(), 5);
}

#[test]
fn cutoff_excludes_later_behaviours() {
    let ds = one_user(300, 300, |i| i as u32, |_| 0.9);
    let set = run(&ds, &embeddings(300, 6), DIM, &ClusterConfig::default(), Some(100));
    let inv = set.verify(&ds).unwrap();
    assert_eq!(inv.behaviours, 100);
    assert!(set.members.iter().all(|&p| p < 100));
}

#[test]
fn delta_matches_spec() {
    assert_eq!(delta(20), 2);
    assert_eq!(delta(10_000), 15); // 10^4^0.3 = 15.85
    assert_eq!(delta(100_000), 31); // 31.6
    assert_eq!(delta(1_000_000), 63); // 63.1
}

#[test]
fn bad_inputs() {
    let ds = one_user(50, 50, |i| i as u32, |_| 0.5);
    let be = CpuBackend::new();
    let emb = embeddings(50, 7);
    let cfg = ClusterConfig::default();
    let r = cluster_users(&be, &ds, &[0], None, &emb[..10], DIM, &cfg, &mut |_, _| {});
    assert!(matches!(r, Err(Error::LengthMismatch { field: "embeddings", .. })));
    let mut nan = emb.clone();
    nan[3] = f32::NAN;
    assert!(matches!(
        cluster_users(&be, &ds, &[0], None, &nan, DIM, &cfg, &mut |_, _| {}),
        Err(Error::NonFinite { field: "embeddings", index: 3, .. })
    ));
    assert!(matches!(cluster_users(&be, &ds, &[1], None, &emb, DIM, &cfg, &mut |_, _| {}), Err(Error::OutOfRange { field: "users", .. })));
    let bad = ClusterConfig { gamma: 1, ..Default::default() };
    assert!(matches!(
        cluster_users(&be, &ds, &[0], None, &emb, DIM, &bad, &mut |_, _| {}),
        Err(Error::InvalidValue { field: "gamma", .. })
    ));
    // A clusters file checked against the wrong data fails verification.
    let set = run(&ds, &emb, DIM, &cfg, None);
    let other = one_user(49, 50, |i| i as u32, |_| 0.5);
    assert!(set.verify(&other).is_err());
}

#[test]
fn clusters_file_roundtrip_and_corruption() {
    let ds = data::generate(&SynthConfig {
        n_users: 5,
        n_items: 500,
        min_len: 30,
        max_len: 300,
        samples_per_user: 2,
        seed: 1,
        ..Default::default()
    })
    .unwrap();
    let set = run(&ds, &embeddings(500, 8), DIM, &ClusterConfig::default(), None);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.twc");
    set.save(&p).unwrap();
    assert_eq!(ClusterSet::load(&p).unwrap(), set);
    let good = std::fs::read(&p).unwrap();
    for cut in [0, 7, 20, good.len() / 2, good.len() - 1] {
        std::fs::write(&p, &good[..cut]).unwrap();
        assert!(ClusterSet::load(&p).is_err());
    }
    for i in (0..good.len()).step_by(good.len() / 50 + 1) {
        let mut b = good.clone();
        b[i] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(ClusterSet::load(&p).is_err(), "flip at {i}");
    }
}

fn movielens() -> Option<PathBuf> {
    let dir = std::env::var_os("TWIN_DATA_DIR")?;
    let p = PathBuf::from(dir).join("ml-latest-small/ratings.csv");
    p.exists().then_some(p)
}

#[test]
fn invariants_on_movielens() {
    let Some(p) = movielens() else {
        eprintln!("skipped: TWIN_DATA_DIR/ml-latest-small/ratings.csv not found");
        return;
    };
    let ds = data::read_movielens(&p).unwrap();
    let emb = embeddings(ds.items.len(), 9);
    let set = run(&ds, &emb, DIM, &ClusterConfig::default(), None);
    let inv = set.verify(&ds).unwrap();
    assert_eq!(inv.behaviours, ds.behaviours.len());
    assert_eq!(inv.users, ds.n_users());
    assert!(inv.compression_ratio > 2.0, "ratio {}", inv.compression_ratio);
    // With a cut-off, only the earlier behaviours are clustered.
    let mid = ds.behaviours.timestamp.iter().copied().min().unwrap() / 2 + ds.behaviours.timestamp.iter().copied().max().unwrap() / 2;
    let early = run(&ds, &emb, DIM, &ClusterConfig::default(), Some(mid));
    let inv2 = early.verify(&ds).unwrap();
    assert!(inv2.behaviours < inv.behaviours);
}

/// The batched, breadth-first tree equals Algorithm 1 taken literally: a queue of sets per user,
/// each set of at least γ behaviours split by its own k-means call (k = δ(|V|), seed
/// `derive_seed(seed, [user, group, depth])`), empty parts dropped, a one-part split cut by
/// position into chunks of γ - 1. Compared as each user's set of (group, members).
#[test]
fn the_tree_equals_algorithm_1_taken_literally() {
    use std::collections::{BTreeSet, VecDeque};
    use twin_engine::backend::{Backend, KmeansBatch};
    let ds = data::generate(&SynthConfig {
        n_users: 6,
        n_items: 500,
        min_len: 30,
        max_len: 1500,
        samples_per_user: 2,
        seed: 4,
        ..Default::default()
    })
    .unwrap();
    // A quarter of the items share one embedding, so some sets cannot be split by k-means.
    let mut emb = embeddings(ds.items.len(), 8);
    for i in 0..ds.items.len() / 4 {
        emb[i * DIM..(i + 1) * DIM].fill(0.5);
    }
    let cfg = ClusterConfig { gamma: 12, ..Default::default() };
    let set = run(&ds, &emb, DIM, &cfg, None);
    let cpu = CpuBackend::new();
    for u in 0..ds.n_users() {
        let r = ds.user_range(u);
        let mut queue: VecDeque<(u8, u64, Vec<u32>)> = VecDeque::new();
        for g in 0..cfg.groups {
            let v: Vec<u32> =
                r.clone().filter(|&b| group_of(ds.behaviours.completion(b), cfg.groups) == g).map(|b| (b - r.start) as u32).collect();
            if !v.is_empty() {
                queue.push_back((g as u8, 0, v));
            }
        }
        let mut want = BTreeSet::new();
        while let Some((g, depth, v)) = queue.pop_front() {
            if v.len() < cfg.gamma {
                want.insert((g, v));
                continue;
            }
            let pts: Vec<f32> =
                v.iter().flat_map(|&p| emb[ds.behaviours.item[r.start + p as usize] as usize * DIM..][..DIM].to_vec()).collect();
            let k = delta(v.len()) as u32;
            let seed = twin_engine::rng::derive_seed(cfg.seed, &[u as u64, g as u64, depth]);
            let batch = KmeansBatch { dim: DIM, points: &pts, offsets: &[0, v.len() as u32], k: &[k] };
            let res = cpu.kmeans(&batch, &[seed], cfg.max_iter).unwrap();
            let mut parts: Vec<Vec<u32>> = vec![Vec::new(); k as usize];
            for (&p, &c) in v.iter().zip(&res.assign) {
                parts[c as usize].push(p);
            }
            parts.retain(|p| !p.is_empty());
            if parts.len() < 2 {
                parts = v.chunks(cfg.gamma - 1).map(<[u32]>::to_vec).collect();
            }
            queue.extend(parts.into_iter().map(|p| (g, depth + 1, p)));
        }
        let got: BTreeSet<(u8, Vec<u32>)> = set.user_clusters(u).map(|c| (set.group[c], set.cluster_members(c).to_vec())).collect();
        assert_eq!(got, want, "user {u}");
    }
}

/// The users `pick` of `ds` (in that order) as a dataset of their own: the dense indices change,
/// the external ids and histories do not (what a shard of a sharded job holds).
fn shard(ds: &Dataset, pick: &[usize]) -> Dataset {
    let mut b = Behaviours { item: vec![], timestamp: vec![], play_time: vec![], duration: vec![] };
    let mut offsets = vec![0u64];
    for &u in pick {
        let r = ds.user_range(u);
        b.item.extend_from_slice(&ds.behaviours.item[r.clone()]);
        b.timestamp.extend_from_slice(&ds.behaviours.timestamp[r.clone()]);
        b.play_time.extend_from_slice(&ds.behaviours.play_time[r.clone()]);
        b.duration.extend_from_slice(&ds.behaviours.duration[r]);
        offsets.push(b.item.len() as u64);
    }
    let user_ids = pick.iter().map(|&u| ds.user_ids[u]).collect();
    Dataset { source: "shard".into(), items: ds.items.clone(), user_offsets: offsets, user_ids, behaviours: b, samples: Default::default() }
}

/// Slot `slot`'s clusters, every field, as one comparable value.
fn user_of(s: &ClusterSet, slot: usize) -> (Vec<u32>, Vec<i64>, Vec<u32>, Vec<u32>, Vec<u32>, Vec<u8>, Vec<u32>) {
    let r = s.user_clusters(slot);
    let members = r.clone().flat_map(|c| s.cluster_members(c).iter().copied()).collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    (
        s.item[r.clone()].to_vec(),
        s.timestamp[r.clone()].to_vec(),
        bits(&s.play_time[r.clone()]),
        bits(&s.completion[r.clone()]),
        s.size[r.clone()].to_vec(),
        s.group[r].to_vec(),
        members,
    )
}

#[test]
fn keyed_clusters_do_not_depend_on_the_shard() {
    let ds = data::generate(&SynthConfig {
        n_users: 24,
        n_items: 2000,
        min_len: 30,
        max_len: 2000,
        samples_per_user: 2,
        seed: 17,
        ..Default::default()
    })
    .unwrap();
    let emb = embeddings(ds.items.len(), 4);
    let be = CpuBackend::new();
    let pts = be.item_points(&emb, DIM).unwrap();
    let cfg = ClusterConfig { seed: 5, ..Default::default() };
    let all: Vec<u32> = (0..ds.n_users() as u32).collect();
    // Keyed by the dataset index, it is cluster_users_on exactly.
    let index_keys: Vec<u64> = all.iter().map(|&u| u as u64).collect();
    let on = cluster_users_on(&be, &ds, &all, None, &pts, &cfg, &mut |_, _| {}).unwrap().0;
    let keyed = cluster_users_keyed(&be, &ds, &all, &index_keys, None, &pts, &cfg, &mut |_, _| {}).unwrap().0;
    assert_eq!(on, keyed);
    // Keyed by the external id: the whole dataset, and two shards of it (odd users first, in
    // reverse, so every user has another dense index), give every user the same clusters.
    let whole = cluster_users_keyed(&be, &ds, &all, &ds.user_ids, None, &pts, &cfg, &mut |_, _| {}).unwrap().0;
    let mut changed_by_key = 0;
    for pick in [(0..ds.n_users()).rev().filter(|u| u % 2 == 1).collect::<Vec<_>>(), (0..ds.n_users()).filter(|u| u % 2 == 0).collect()] {
        let sh = shard(&ds, &pick);
        let users: Vec<u32> = (0..sh.n_users() as u32).collect();
        let got = cluster_users_keyed(&be, &sh, &users, &sh.user_ids, None, &pts, &cfg, &mut |_, _| {}).unwrap().0;
        got.verify(&sh).unwrap();
        // The same shard keyed by its own indices: users whose index moved get other clusters.
        let by_index = cluster_users_on(&be, &sh, &users, None, &pts, &cfg, &mut |_, _| {}).unwrap().0;
        for (slot, &u) in pick.iter().enumerate() {
            assert_eq!(user_of(&got, slot), user_of(&whole, u), "user {u} (shard slot {slot})");
            changed_by_key += (user_of(&by_index, slot) != user_of(&whole, u)) as usize;
        }
    }
    assert!(changed_by_key > ds.n_users() / 2, "only {changed_by_key} users depend on the key: the check could not fail");
    // One key per user, refused by name otherwise.
    let e = cluster_users_keyed(&be, &ds, &all, &ds.user_ids[1..], None, &pts, &cfg, &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { field: "user keys", .. }), "{e}");
}

/// twin-v2's budget rules: the newest `max_long` rows (SPEC), or the rows standing for the most
/// behaviours; both keep time order and at most `max_long` rows, and by size the rows stand for
/// at least as many behaviours.
#[test]
fn budget_by_size_keeps_the_largest_clusters() {
    use twin_engine::train::{Examples, Variant};
    let ds =
        data::generate(&SynthConfig { n_users: 6, min_len: 400, max_len: 900, samples_per_user: 3, ..SynthConfig::default() }).unwrap();
    let emb = embeddings(ds.items.len(), 3);
    let cutoff = ds.samples.request_time.iter().copied().min().unwrap();
    let set = run(&ds, &emb, DIM, &ClusterConfig::default(), Some(cutoff));
    let samples: Vec<u32> = (0..ds.samples.len() as u32).collect();
    let stood_for = |by_size: bool| {
        let mut ex = Examples::new(&ds, Variant::TwinV2, Some(&set), 16, 50).unwrap();
        ex.budget_by_size = by_size;
        let b = ex.batch(&samples).unwrap();
        let mut out = Vec::new();
        for i in 0..samples.len() {
            let r = b.long_offsets[i] as usize..b.long_offsets[i + 1] as usize;
            assert!(r.len() <= 16);
            out.push(b.long_log_n[r].iter().map(|&l| (l as f64).exp().round()).sum::<f64>());
        }
        out
    };
    let (newest, largest) = (stood_for(false), stood_for(true));
    assert!(newest.iter().zip(&largest).all(|(n, l)| l >= n), "newest {newest:?} largest {largest:?}");
    assert!(largest.iter().sum::<f64>() > newest.iter().sum::<f64>(), "by size must reach further back: {newest:?} {largest:?}");
}
