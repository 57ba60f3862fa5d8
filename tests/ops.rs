//! The CPU reference backend, op by op, against naive loops written straight from SPEC.md,
//! plus properties (top-K = full sort under the tie rule) and bad-input errors.

use proptest::prelude::*;
use twin_engine::backend::cpu::CpuBackend;
use twin_engine::backend::*;
use twin_engine::bench::online::RequestGen;
use twin_engine::features;
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

mod support;

use support::{close, randn_with, values, Outliers, TableShape, Tables, D, DK, H};

/// Normal(0, scale) with a few outliers: every 97th value is ×20 (the milder outliers this
/// file's tolerances against its naive loops were set with; the parity tests use ±50).
fn randn(rng: &mut SplitMix64, n: usize, scale: f64) -> Vec<f32> {
    randn_with(rng, n, scale, OUTLIERS)
}

const OUTLIERS: Outliers = Outliers::Scaled(20.0);

struct Fixture {
    be: CpuBackend,
    tables: OnlineTables,
    pq: Vec<f32>,
    pk: Vec<f32>,
    pv: Vec<f32>,
    cb: Vec<f32>,
    cv: Vec<f32>,
    wo: Vec<f32>,
    n_items: usize,
}

fn fixture(n_items: usize, seed: u64, dtype: DType) -> Fixture {
    let be = CpuBackend::new();
    let t = Tables::shaped(seed, &TableShape { n_items, outliers: OUTLIERS, ..TableShape::parity(dtype) });
    let tables = t.upload(&be);
    // The naive loops read exactly what the tables store (f16 rounding included).
    let (pq, pk, pv) = (values(&t.host_pq), values(&t.host_pk), values(&t.host_pv));
    let (cb, cv, wo) = (values(&t.host_cb), values(&t.host_cv), values(&t.host_wo));
    Fixture { be, tables, pq, pk, pv, cb, cv, wo, n_items }
}

/// Requests of the given lengths and candidate counts, every behaviour drawn afresh (the
/// library's generator, as the benchmarks use it; sizes 1..=19).
fn requests(f: &Fixture, shapes: &[(usize, usize)], seed: u64) -> OnlineRequests {
    RequestGen { n_items: f.n_items, max_size: 19, repeats: false }.requests(shapes, seed)
}

/// SPEC §3 written as plainly as possible: α for one (candidate, behaviour, head).
fn alpha(f: &Fixture, req: &OnlineRequests, cand: u32, l: usize, a: usize) -> f64 {
    let item = req.items[l] as usize;
    let mut dot = 0f64;
    for t in 0..DK {
        dot += f.pq[cand as usize * D + a * DK + t] as f64 * f.pk[item * D + a * DK + t] as f64;
    }
    let mut bias = 0f64;
    for j in 0..features::N_CROSS {
        bias += f.cb[req.cross[l * features::N_CROSS + j] as usize * H + a] as f64;
    }
    dot / (DK as f64).sqrt() + bias + (req.sizes[l] as f64).ln()
}

#[test]
fn gather_matches_indexing_f32_and_f16() {
    for dtype in [DType::F32, DType::F16] {
        let f = fixture(300, 1, dtype);
        let ids: Vec<u32> = vec![0, 299, 5, 5, 17];
        let got = f.be.gather(&f.tables.p_k, &ids).unwrap();
        let mut want = Vec::new();
        for &i in &ids {
            want.extend_from_slice(&f.pk[i as usize * D..(i as usize + 1) * D]);
        }
        assert_eq!(got, want, "{dtype:?}");
        assert!(f.be.gather(&f.tables.p_k, &[]).unwrap().is_empty());
    }
}

#[test]
fn cross_bias_both_forms_match_naive() {
    let f = fixture(10, 2, DType::F32);
    let req = requests(&f, &[(97, 1)], 3);
    let got = f.be.cross_bias(&f.tables.cross_bias, &req.cross, features::N_CROSS).unwrap();
    for l in 0..97 {
        for a in 0..H {
            let want: f32 = (0..3).map(|j| f.cb[req.cross[l * 3 + j] as usize * H + a]).sum();
            assert!(close(got[l * H + a], want, 1e-5, 1e-5));
        }
    }
    // Training form against its own formula.
    let mut rng = SplitMix64::new(4);
    let (n, j, c) = (33, 3, 8);
    let e = randn(&mut rng, n * j * c, 1.0);
    let wc = randn(&mut rng, H * j * c, 1.0);
    let beta = randn(&mut rng, H * j, 1.0);
    let got = f.be.cross_bias_dense(&e, &wc, &beta, CrossDims { heads: H, n_cross: j, dim: c }).unwrap();
    for i in 0..n {
        for a in 0..H {
            let mut want = 0f64;
            for jj in 0..j {
                let mut dot = 0f64;
                for t in 0..c {
                    dot += e[(i * j + jj) * c + t] as f64 * wc[(a * j + jj) * c + t] as f64;
                }
                want += beta[a * j + jj] as f64 * dot;
            }
            assert!(close(got[i * H + a], want as f32, 1e-4, 1e-5), "{i} {a}");
        }
    }
}

#[test]
fn log_size_bias_adds_ln_n() {
    let be = CpuBackend::new();
    let bias = vec![0.5f32; 3 * H];
    let got = be.log_size_bias(&bias, &[1.0, 2.0, 19.0], H).unwrap();
    for (i, n) in [1.0f32, 2.0, 19.0].iter().enumerate() {
        for a in 0..H {
            assert!(close(got[i * H + a], 0.5 + n.ln(), 1e-6, 1e-6));
        }
    }
    assert!(matches!(be.log_size_bias(&bias, &[1.0, 0.5, 2.0], H), Err(Error::InvalidValue { field: "sizes", index: 1, .. })));
    assert!(matches!(be.log_size_bias(&bias, &[1.0, f32::NAN, 2.0], H), Err(Error::NonFinite { field: "sizes", .. })));
}

/// Full sort under the tie rule, over naive scores.
fn naive_topk(f: &Fixture, req: &OnlineRequests, r: usize, cand: u32, k: usize) -> Vec<(u32, f32)> {
    let b = req.as_batch();
    let seq = b.seq_range(r);
    let mut all: Vec<(u32, f32)> = seq
        .clone()
        .map(|l| {
            let g: f64 = (0..H).map(|a| alpha(f, req, cand, l, a)).sum::<f64>() / H as f64;
            ((l - seq.start) as u32, g as f32)
        })
        .collect();
    all.sort_by(|x, y| y.1.partial_cmp(&x.1).unwrap().then(y.0.cmp(&x.0)));
    all.truncate(k.min(all.len()));
    all
}

#[test]
fn gsu_topk_equals_full_sort_ragged_batch() {
    for dtype in [DType::F32, DType::F16] {
        let f = fixture(400, 5, dtype);
        // Ragged: L = 1, 97, 100, 101, 1025 in one call; B varies.
        let req = requests(&f, &[(1, 3), (97, 1), (100, 2), (101, 3), (1025, 2)], 6);
        let b = req.as_batch();
        let out = f.be.online(&f.tables, &b, TOP_K).unwrap();
        for r in 0..b.n_requests() {
            for c in b.cand_range(r) {
                let want = naive_topk(&f, &req, r, req.cands[c], TOP_K);
                let (idx, sc) = out.topk.row(c);
                assert_eq!(idx.len(), want.len());
                for (j, (&(wi, ws), (&gi, &gs))) in want.iter().zip(idx.iter().zip(sc)).enumerate() {
                    assert!(close(gs, ws, 1e-4, 1e-5), "{dtype:?} r{r} c{c} rank {j}: score {gs} vs {ws}");
                    // Same position unless the naive scores tie within rounding.
                    if gi != wi {
                        assert!(close(gs, ws, 1e-5, 1e-6), "{dtype:?} r{r} c{c} rank {j}: pos {gi} vs {wi}");
                    }
                }
                // Padding past the count.
                let k = out.topk.k;
                for j in out.topk.count[c] as usize..k {
                    assert_eq!(out.topk.idx[c * k + j], u32::MAX);
                }
            }
        }
    }
}

#[test]
fn esu_matches_naive_softmax_pooling() {
    let f = fixture(300, 7, DType::F32);
    let req = requests(&f, &[(150, 2), (1, 1), (20, 2)], 8);
    let b = req.as_batch();
    let out = f.be.online(&f.tables, &b, TOP_K).unwrap();
    for r in 0..b.n_requests() {
        let seq0 = b.seq_range(r).start;
        for c in b.cand_range(r) {
            let (fin, _) = out.topk.row(c);
            let cand = req.cands[c];
            let mut pooled = vec![0f64; D];
            for a in 0..H {
                let al: Vec<f64> = fin.iter().map(|&p| alpha(&f, &req, cand, seq0 + p as usize, a)).collect();
                let m = al.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = al.iter().map(|x| (x - m).exp()).sum();
                for (fi, &p) in fin.iter().enumerate() {
                    let l = seq0 + p as usize;
                    let w = (al[fi] - m).exp() / z;
                    for t in a * DK..(a + 1) * DK {
                        let mut v = f.pv[req.items[l] as usize * D + t] as f64;
                        for j in 0..3 {
                            v += f.cv[req.cross[l * 3 + j] as usize * D + t] as f64;
                        }
                        pooled[t] += w * v;
                    }
                }
            }
            for o in 0..D {
                let want: f64 = (0..D).map(|i| pooled[i] * f.wo[i * D + o] as f64).sum();
                assert!(close(out.out[c * D + o], want as f32, 1e-4, 1e-4), "r{r} c{c} o{o}: {} vs {want}", out.out[c * D + o]);
            }
        }
    }
}

#[test]
fn online_is_independent_of_batch_neighbours() {
    let f = fixture(300, 9, DType::F32);
    let both = requests(&f, &[(50, 2), (130, 3)], 10);
    let out_both = f.be.online(&f.tables, &both.as_batch(), 100).unwrap();
    // The second request alone.
    let b = both.as_batch();
    let (s, c) = (b.seq_range(1), b.cand_range(1));
    let mut alone = OnlineRequests::new();
    alone.push(&both.items[s.clone()], &both.cross[s.start * 3..s.end * 3], &both.sizes[s.clone()], &both.cands[c.clone()]);
    let out_alone = f.be.online(&f.tables, &alone.as_batch(), 100).unwrap();
    assert_eq!(&out_both.out[c.start * D..], &out_alone.out[..]);
    assert_eq!(&out_both.topk.idx[c.start * 100..], &out_alone.topk.idx[..]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Top-K equals a full sort under the tie rule, with many exact ties (small integer scores).
    #[test]
    fn select_topk_is_full_sort(scores in proptest::collection::vec(-5i32..5, 1..400), k in 1usize..150) {
        let s: Vec<f32> = scores.iter().map(|&x| x as f32).collect();
        let got = twin_engine::backend::cpu::gsu_topk::select_topk(&s, k);
        let mut want: Vec<(u32, f32)> = s.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
        want.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(b.0.cmp(&a.0)));
        want.truncate(k.min(s.len()));
        prop_assert_eq!(got, want);
    }

    /// Assignment is the brute-force nearest centroid with ties to the lower index.
    #[test]
    fn kmeans_assign_is_nearest(n in 1usize..60, k in 1usize..8, seed in 0u64..1000) {
        let k = k.min(n);
        let mut rng = SplitMix64::new(seed);
        // Coarse integer coordinates make exact distance ties common.
        let pts: Vec<f32> = (0..n * 3).map(|_| rng.below(3) as f32).collect();
        let cents: Vec<f32> = (0..k * 3).map(|_| rng.below(3) as f32).collect();
        let be = CpuBackend::new();
        let batch = KmeansBatch { dim: 3, points: &pts, offsets: &[0, n as u32], k: &[k as u32] };
        let a = be.kmeans_assign(&batch, &cents).unwrap();
        for i in 0..n {
            let d: Vec<f32> = (0..k).map(|j| (0..3).map(|t| (pts[i*3+t]-cents[j*3+t]).powi(2)).sum()).collect();
            let best = d.iter().cloned().fold(f32::INFINITY, f32::min);
            let want = d.iter().position(|&x| x == best).unwrap() as u32;
            prop_assert_eq!(a[i], want);
        }
    }
}

#[test]
fn kmeans_update_is_member_mean_and_keeps_empty() {
    let be = CpuBackend::new();
    let pts = vec![0.0f32, 0.0, 2.0, 2.0, 4.0, 0.0, 10.0, 10.0];
    let batch = KmeansBatch { dim: 2, points: &pts, offsets: &[0, 4], k: &[3] };
    let prev = vec![9.0f32, 9.0, 7.0, 7.0, 5.0, 5.0];
    let c = be.kmeans_update(&batch, &[0, 0, 0, 2], &prev).unwrap();
    assert_eq!(c, vec![2.0, 2.0 / 3.0, 7.0, 7.0, 10.0, 10.0]);
}

#[test]
fn kmeans_seed_is_deterministic_and_separates_clusters() {
    let be = CpuBackend::new();
    let mut rng = SplitMix64::new(11);
    // Three tight, far-apart blobs: k-means++ must pick one seed in each.
    let mut pts = Vec::new();
    for c in [0.0f64, 100.0, 200.0] {
        for _ in 0..40 {
            pts.push((c + rng.normal() * 0.1) as f32);
            pts.push((c + rng.normal() * 0.1) as f32);
        }
    }
    let batch = KmeansBatch { dim: 2, points: &pts, offsets: &[0, 120], k: &[3] };
    let s1 = be.kmeans_seed(&batch, &[5]).unwrap();
    let s2 = be.kmeans_seed(&batch, &[5]).unwrap();
    assert_eq!(s1, s2);
    let mut blobs: Vec<i32> = s1.chunks(2).map(|c| (c[0] / 100.0).round() as i32).collect();
    blobs.sort();
    assert_eq!(blobs, vec![0, 1, 2]);
    let res = be.kmeans(&batch, &[5], 20).unwrap();
    for blob in 0..3 {
        let a = &res.assign[blob * 40..(blob + 1) * 40];
        assert!(a.iter().all(|&x| x == a[0]), "blob {blob} split");
    }
    assert!(res.iterations[0] >= 1 && res.iterations[0] <= 20);
}

#[test]
fn kmeans_problem_result_does_not_depend_on_batch() {
    let be = CpuBackend::new();
    let mut rng = SplitMix64::new(12);
    let a: Vec<f32> = (0..300 * 4).map(|_| rng.normal() as f32).collect();
    let b: Vec<f32> = (0..77 * 4).map(|_| rng.normal() as f32).collect();
    let both: Vec<f32> = a.iter().chain(&b).cloned().collect();
    let batch = KmeansBatch { dim: 4, points: &both, offsets: &[0, 300, 377], k: &[5, 3] };
    let r = be.kmeans(&batch, &[1, 2], 20).unwrap();
    let alone = be.kmeans(&KmeansBatch { dim: 4, points: &b, offsets: &[0, 77], k: &[3] }, &[2], 20).unwrap();
    assert_eq!(&r.assign[300..], &alone.assign[..]);
    assert_eq!(r.iterations[1], alone.iterations[0]);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let f = fixture(50, 13, DType::F32);
    let be = &f.be;
    // NaN in a table.
    let mut d = vec![0f32; 4 * D];
    d[7] = f32::NAN;
    assert!(matches!(be.upload_table("p_k", &HostTable::f32(4, D, d).unwrap()), Err(Error::NonFinite { field: "p_k", index: 7, .. })));
    assert!(HostTable::f32(4, D, vec![0.0; 5]).is_err());
    // Unknown item id.
    let mut req = requests(&f, &[(10, 2)], 14);
    req.items[3] = 50;
    assert!(matches!(be.online(&f.tables, &req.as_batch(), 100), Err(Error::OutOfRange { field: "items", index: 3, value: 50, .. })));
    let mut req = requests(&f, &[(10, 2)], 14);
    req.cands[1] = 999;
    assert!(matches!(be.online(&f.tables, &req.as_batch(), 100), Err(Error::OutOfRange { field: "cands", index: 1, value: 999, .. })));
    // A cross row in another feature's vocabulary.
    let mut req = requests(&f, &[(10, 2)], 14);
    req.cross[0] = 15;
    assert!(matches!(be.online(&f.tables, &req.as_batch(), 100), Err(Error::OutOfRange { field: "cross", index: 0, .. })));
    // Mismatched lengths.
    let mut req = requests(&f, &[(10, 2)], 14);
    req.sizes.pop();
    assert!(matches!(be.online(&f.tables, &req.as_batch(), 100), Err(Error::LengthMismatch { field: "sizes", got: 9, expected: 10, .. })));
    // Empty sequence.
    let mut req = OnlineRequests::new();
    req.push(&[], &[], &[], &[1, 2]);
    assert!(matches!(be.online(&f.tables, &req.as_batch(), 100), Err(Error::Empty { field: "sequence", index: 0 })));
    // NaN and zero cluster size.
    let mut req = requests(&f, &[(10, 2)], 14);
    req.sizes[2] = f32::NAN;
    assert!(matches!(be.online(&f.tables, &req.as_batch(), 100), Err(Error::NonFinite { field: "sizes", index: 2, .. })));
    req.sizes[2] = 0.0;
    assert!(matches!(be.online(&f.tables, &req.as_batch(), 100), Err(Error::InvalidValue { field: "sizes", index: 2, .. })));
    // Oversize L.
    let l = MAX_SEQ_LEN + 1;
    let mut req = OnlineRequests::new();
    req.push(&vec![0; l], &vec![0, 10, 34].repeat(l), &vec![1.0; l], &[1]);
    assert!(matches!(be.online(&f.tables, &req.as_batch(), 100), Err(Error::TooLarge { field: "sequence length", .. })));
    // Bad top-K and malformed offsets.
    let req = requests(&f, &[(10, 2)], 14);
    assert!(matches!(be.online(&f.tables, &req.as_batch(), 0), Err(Error::BadShape { field: "top_k", value: 0, .. })));
    let mut bad = req.clone();
    bad.seq_offsets = vec![0, 11];
    assert!(be.online(&f.tables, &bad.as_batch(), 100).is_err());
    // A table from another backend instance.
    let other = CpuBackend::new();
    assert!(matches!(other.gather(&f.tables.p_k, &[0]), Err(Error::ForeignTable { .. })));
    // k-means: k larger than the problem, NaN point, assignment out of range.
    let pts = vec![0f32, 1.0, 2.0];
    assert!(matches!(
        be.kmeans_assign(&KmeansBatch { dim: 1, points: &pts, offsets: &[0, 3], k: &[4] }, &[0.0; 4]),
        Err(Error::OutOfRange { field: "k", .. })
    ));
    let nan = vec![0f32, f32::NAN, 2.0];
    assert!(matches!(
        be.kmeans_assign(&KmeansBatch { dim: 1, points: &nan, offsets: &[0, 3], k: &[2] }, &[0.0; 2]),
        Err(Error::NonFinite { field: "points", index: 1, .. })
    ));
    assert!(matches!(
        be.kmeans_update(&KmeansBatch { dim: 1, points: &pts, offsets: &[0, 3], k: &[2] }, &[0, 2, 1], &[0.0; 2]),
        Err(Error::OutOfRange { field: "assign", index: 1, .. })
    ));
}
