//! gsu_topk: fused scoring + top-K against the CPU, compared as index sets under the tie rule.
//! The GPU sums the D-dim dot in f32 in order, the CPU in f64; for f16 tables both read the
//! same f16 values widened, so in both dtypes only accumulation differs. Scores are O(1..100)
//! with ±50 outliers: tolerance 2e-4 absolute + 2e-5 relative on g (≈ 100 f32 ulps of the
//! largest partial sums), which also bounds which near-ties may swap at the K boundary.

use twin_engine::backend::{Backend, DType, HostTable, OnlineRequests, OnlineTables, TopK, TOP_K};
use twin_engine::Error;

use crate::common::*;
use crate::parity_test;
use crate::split_test;
use crate::v3_test;

pub const ATOL: f32 = 2e-4;
pub const RTOL: f32 = 2e-5;

/// Shapes: L = 1, 97, 100, 101, 1025 with B = 1, 3, 512 (ragged, many users in one call, one
/// user without candidates), and L = 100_003 with B ≤ 3. Under `TWIN_PARITY_SMALL` the wide
/// batch has B = 65 (one candidate tile of 64 and one more) and the long one is dropped.
pub fn batches() -> Vec<(&'static str, Vec<(usize, usize)>)> {
    let wide = if small() { ("B=65", vec![(1025, 65), (101, 65), (1, 65)]) } else { ("B=512", vec![(1025, 512), (101, 512), (1, 512)]) };
    vec![
        ("small", vec![(1, 1), (97, 3), (100, 1), (101, 3), (1025, 3), (1, 3), (100, 0), (97, 1), (101, 1)]),
        wide,
        ("L=100003", vec![(100_003, 3), (100_003, 1)]),
    ]
}

pub fn bias_for(cpu: &dyn Backend, tc: &OnlineTables, req: &OnlineRequests) -> Vec<f32> {
    let cb = cpu.cross_bias(&tc.cross_bias, &req.cross, 3).unwrap();
    cpu.log_size_bias(&cb, &req.sizes, H).unwrap()
}

pub fn check(what: &str, t: &Tables, req: &OnlineRequests, bias: &[f32], got: &TopK, want: &TopK) {
    let differ = assert_topk(what, got, want, |c| ref_scores(t, req, bias, c), ATOL, RTOL);
    eprintln!("  {what}: {} rows, {differ} differ as sets within the near-tie tolerance", got.count.len());
}

parity_test!(gsu_topk_matches_cpu, |gpu, cpu| {
    for dtype in [DType::F32, DType::F16] {
        let t = Tables::new(31, dtype);
        let (tg, tc) = (t.upload(&*gpu), t.upload(&*cpu));
        for (i, (name, shapes)) in batches().into_iter().enumerate() {
            if skip_long_on(&*gpu, shapes.iter().map(|s| s.0).max().unwrap_or(0)) {
                continue;
            }
            let req = requests(&shapes, 300 + i as u64);
            let bias = bias_for(&*cpu, &tc, &req);
            let got = gpu.gsu_topk(&tg, &req.as_batch(), &bias, TOP_K).unwrap();
            let want = cpu.gsu_topk(&tc, &req.as_batch(), &bias, TOP_K).unwrap();
            check(&format!("gsu {dtype:?} {name}"), &t, &req, &bias, &got, &want);
        }
    }
});

parity_test!(gsu_topk_other_k_and_exact_ties, |gpu, cpu| {
    let t = Tables::new(32, DType::F32);
    let (tg, tc) = (t.upload(&*gpu), t.upload(&*cpu));
    // k = 1, 7, 256 (the largest allowed).
    let req = requests(&[(300, 2), (1025, 3), (5, 2)], 33);
    let bias = bias_for(&*cpu, &tc, &req);
    for k in [1usize, 7, 256] {
        if k == 256 && skip_long_on(&*gpu, 10_000) {
            continue;
        }
        let got = gpu.gsu_topk(&tg, &req.as_batch(), &bias, k).unwrap();
        let want = cpu.gsu_topk(&tc, &req.as_batch(), &bias, k).unwrap();
        check(&format!("gsu k={k}"), &t, &req, &bias, &got, &want);
    }
    // (v1 on llvmpipe: 700 all-tie insertions shift 100 entries each, past the loop limit.)
    if skip_long_on(&*gpu, 10_000) {
        return;
    }
    // All behaviours identical: every score ties, the K most recent positions win, in
    // descending position order, on both backends exactly.
    let mut req = OnlineRequests::new();
    let l = 700;
    req.push(&vec![42; l], &[1u32, 11, 40].repeat(l), &vec![3.0; l], &[7, 8, 9]);
    let bias = bias_for(&*cpu, &tc, &req);
    let got = gpu.gsu_topk(&tg, &req.as_batch(), &bias, TOP_K).unwrap();
    let want = cpu.gsu_topk(&tc, &req.as_batch(), &bias, TOP_K).unwrap();
    for c in 0..3 {
        let expect: Vec<u32> = (0..TOP_K as u32).map(|i| l as u32 - 1 - i).collect();
        assert_eq!(want.row(c).0, &expect[..]);
        assert_eq!(got.row(c).0, &expect[..], "tie rule");
    }
});

parity_test!(gsu_topk_independent_of_batch, |gpu, cpu| {
    let t = Tables::new(34, DType::F16);
    let tg = t.upload(&*gpu);
    let tc = t.upload(&*cpu);
    let shapes = [(97, 3), (1025, 5), (1, 2)];
    let req = requests(&shapes, 35);
    let bias = bias_for(&*cpu, &tc, &req);
    let all = gpu.gsu_topk(&tg, &req.as_batch(), &bias, TOP_K).unwrap();
    let b = req.as_batch();
    let r = 1;
    let (s, c) = (b.seq_range(r), b.cand_range(r));
    let mut one = OnlineRequests::new();
    one.push(&req.items[s.clone()], &req.cross[s.start * 3..s.end * 3], &req.sizes[s.clone()], &req.cands[c.clone()]);
    let alone = gpu.gsu_topk(&tg, &one.as_batch(), &bias[s.start * H..s.end * H], TOP_K).unwrap();
    assert_eq!(alone.idx[..], all.idx[c.start * TOP_K..c.end * TOP_K]);
    assert_eq!(alone.score[..], all.score[c.start * TOP_K..c.end * TOP_K]);
});

parity_test!(gsu_topk_errors_match_cpu, |gpu, cpu| {
    let t = Tables::new(36, DType::F32);
    let (tg, tc) = (t.upload(&*gpu), t.upload(&*cpu));
    let mut req = requests(&[(10, 2)], 37);
    let mut bias = bias_for(&*cpu, &tc, &req);
    for (be, tabs) in [(&gpu, &tg), (&cpu, &tc)] {
        assert!(matches!(be.gsu_topk(tabs, &req.as_batch(), &bias, 0), Err(Error::BadShape { field: "top_k", value: 0, .. })));
        assert!(matches!(be.gsu_topk(tabs, &req.as_batch(), &bias, 257), Err(Error::TooLarge { field: "top_k", .. })));
    }
    bias[5] = f32::NAN;
    for (be, tabs) in [(&gpu, &tg), (&cpu, &tc)] {
        assert!(matches!(be.gsu_topk(tabs, &req.as_batch(), &bias, 5), Err(Error::NonFinite { field: "bias", index: 5, .. })));
    }
    bias[5] = 0.0;
    req.items[3] = N_ITEMS as u32;
    for (be, tabs) in [(&gpu, &tg), (&cpu, &tc)] {
        assert!(matches!(be.gsu_topk(tabs, &req.as_batch(), &bias, 5), Err(Error::OutOfRange { field: "items", index: 3, .. })));
    }
    // A table from the other backend.
    assert!(matches!(gpu.gsu_topk(&tc, &req.as_batch(), &bias, 5), Err(Error::ForeignTable { .. }) | Err(Error::OutOfRange { .. })));
});

// P_Q/P_K span many storage-binding chunks (64 KiB cap): the split path compacts the rows of
// the batch and segments long sequences; it matches the CPU and the unsplit wgpu bit for bit.
split_test!(gsu_topk_split_tables, |u, whole, cpu| {
    for dtype in [DType::F32, DType::F16] {
        let t = Tables::new(34, dtype);
        let (ts, tw, tc) = (t.upload(&*u.be), t.upload(&*whole), t.upload(&*cpu));
        let req = requests(&split_shapes(), 35);
        let bias = bias_for(&*cpu, &tc, &req);
        for k in [TOP_K, 7] {
            let got = u.be.gsu_topk(&ts, &req.as_batch(), &bias, k).unwrap();
            let want = cpu.gsu_topk(&tc, &req.as_batch(), &bias, k).unwrap();
            check(&format!("gsu split {dtype:?} k={k}"), &t, &req, &bias, &got, &want);
            let same = whole.gsu_topk(&tw, &req.as_batch(), &bias, k).unwrap();
            assert_eq!(got.count, same.count);
            assert_eq!(got.idx, same.idx);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.score), bits(&same.score));
        }
    }
});

// ---- GSU v3 (tensor cores) -------------------------------------------------------------------
//
// v3 rounds P_Q and P_K rows to f16 when it stages them (exact for f16 tables), multiplies on
// tensor cores with f32 accumulation in an order of the hardware's choosing, and forms
// g = (dot · scale + Σ_a bias) / h in f32. For candidate c and position l let S = Σ_d |q_d k_d|,
// A = Σ_d (|q_d| + |k_d|), Bs = Σ_a |bias_a| (host values) and u = 2^-11 (f16 unit roundoff).
// Then |g_v3 - g_ref| ≤ e(c, l) with
//   e = [scale · (S · (δ + D·2^-21) + 2^-24 · A) + 2^-21 · Bs] / h + 2^-23 · |g_ref| + 1e-7,
//   δ = 2u + u² (rounded to 2^-10 + 2^-21) for f32 tables, 0 for f16 tables:
// δ·S bounds the products of the rounded operands (|q̂k̂ - qk| ≤ (2u + u²)|qk|), 2^-24·A the
// absolute error of operands in the f16 subnormal range (half-spacing 2^-25), D·2^-21·S twice
// the bound D·2^-22 we allow any f32 summation order of D exact products (sequential: (D-1)·2^-24;
// tensor cores align the products of one MMA with truncation, a few ulps of the largest), plus
// the final f32 multiply, bias sum and divide, and the reference's own rounding to f32.
//
// The rule (stated per row): every reported score is within e of the reference score of its
// position; a reference finalist w may be replaced by a kept position p only if
// s_w - e_w ≤ s_p + e_p (they could swap under the bounds: a near-tie); plus the shared near-tie
// comparison `assert_topk` on the row with tol = 2 · max_l e (order, ties by descending position,
// padding, no duplicates, nothing kept below K-th - tol, nothing missed above K-th + tol).

#[derive(Default)]
struct V3Stats {
    rows: usize,
    /// Rows whose index list differs from the reference's (order or set).
    differ_rows: usize,
    /// Rows whose set differs, and the positions swapped in them.
    swapped_rows: usize,
    swaps: usize,
    max_abs: f32,
    max_ratio: f32,
}

/// What the v3 rule needs of the tables: host copies, heads, and whether v3 rounds them to f16.
struct V3Ref<'a> {
    pq: &'a HostTable,
    pk: &'a HostTable,
    heads: usize,
    rounded: bool,
}

impl<'a> V3Ref<'a> {
    fn of(t: &'a Tables) -> Self {
        V3Ref { pq: &t.host_pq, pk: &t.host_pk, heads: H, rounded: t.dtype == DType::F32 }
    }
}

/// Reference scores (the CPU formula) and the bound e of each position of candidate `c`'s request.
fn v3_bounds(t: &V3Ref, req: &OnlineRequests, bias: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    let h = t.heads;
    let b = req.as_batch();
    let r = (0..b.n_requests()).find(|&r| b.cand_range(r).contains(&c)).unwrap();
    let seq = b.seq_range(r);
    let mut q = Vec::new();
    t.pq.extend_row(req.cands[c] as usize, &mut q);
    let mut keys = Vec::new();
    for &it in &req.items[seq.clone()] {
        t.pk.extend_row(it as usize, &mut keys);
    }
    let mut s = vec![0f32; seq.len()];
    twin_engine::backend::cpu::gsu_topk::scores_for(&q, &keys, &bias[seq.start * h..seq.end * h], h, &mut s);
    let d = q.len();
    let scale = 1.0 / ((d / h) as f64).sqrt();
    let delta = if t.rounded { 2f64.powi(-10) + 2f64.powi(-21) } else { 0.0 };
    let acc = d as f64 * 2f64.powi(-21);
    let e = keys
        .chunks(d)
        .enumerate()
        .map(|(i, k)| {
            let sabs: f64 = q.iter().zip(k).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum();
            let aabs: f64 = q.iter().zip(k).map(|(&x, &y)| (x.abs() + y.abs()) as f64).sum();
            let babs: f64 = bias[(seq.start + i) * h..(seq.start + i + 1) * h].iter().map(|x| x.abs() as f64).sum();
            let e = (scale * (sabs * (delta + acc) + 2f64.powi(-24) * aabs) + 2f64.powi(-21) * babs) / h as f64
                + 2f64.powi(-23) * s[i].abs() as f64
                + 1e-7;
            e as f32
        })
        .collect();
    (s, e)
}

fn one_row(x: &TopK, c: usize) -> TopK {
    let k = x.k;
    TopK { k, idx: x.idx[c * k..(c + 1) * k].to_vec(), score: x.score[c * k..(c + 1) * k].to_vec(), count: vec![x.count[c]] }
}

/// The v3 rule above over every row of `got`; accumulates into `st`.
fn check_v3(what: &str, t: &V3Ref, req: &OnlineRequests, bias: &[f32], got: &TopK, want: &TopK, st: &mut V3Stats) {
    assert_eq!(got.k, want.k, "{what}: k");
    assert_eq!(got.count, want.count, "{what}: counts");
    for c in 0..got.count.len() {
        let (s, e) = v3_bounds(t, req, bias, c);
        let (gi, gs) = got.row(c);
        let (wi, _) = want.row(c);
        for (rank, (&p, &g)) in gi.iter().zip(gs).enumerate() {
            assert!((p as usize) < s.len(), "{what}: row {c} position {p} out of range");
            let err = (g - s[p as usize]).abs();
            let bound = e[p as usize];
            assert!(err <= bound, "{what}: row {c} rank {rank} pos {p}: score {g} vs ref {} (|err| {err} > bound {bound})", s[p as usize]);
            st.max_abs = st.max_abs.max(err);
            st.max_ratio = st.max_ratio.max(err / bound);
        }
        let tol = 2.0 * e.iter().fold(0f32, |m, &x| m.max(x));
        if assert_topk(what, &one_row(got, c), &one_row(want, c), |_| s.clone(), tol, 0.0) > 0 {
            st.differ_rows += 1;
            let (gset, wset): (std::collections::HashSet<u32>, std::collections::HashSet<u32>) =
                (gi.iter().copied().collect(), wi.iter().copied().collect());
            let missed: Vec<usize> = wi.iter().filter(|p| !gset.contains(p)).map(|&p| p as usize).collect();
            let extra: Vec<usize> = gi.iter().filter(|p| !wset.contains(p)).map(|&p| p as usize).collect();
            assert_eq!(missed.len(), extra.len(), "{what}: row {c}");
            let lo = missed.iter().map(|&w| s[w] - e[w]).fold(f32::NEG_INFINITY, f32::max);
            let hi = extra.iter().map(|&p| s[p] + e[p]).fold(f32::INFINITY, f32::min);
            assert!(lo <= hi, "{what}: row {c}: a finalist with ref - bound {lo} was replaced by a position with ref + bound {hi}");
            st.swapped_rows += usize::from(!missed.is_empty());
            st.swaps += missed.len();
        }
        st.rows += 1;
    }
}

fn report(what: &str, st: &V3Stats) {
    eprintln!(
        "  {what}: {} rows, {} ordered differently, {} with near-tie swaps ({} positions), max |err| {:.3e}, max |err|/bound {:.3}",
        st.rows, st.differ_rows, st.swapped_rows, st.swaps, st.max_abs, st.max_ratio
    );
}

v3_test!(gsu_topk_v3_matches_cpu, |u, cpu| {
    for dtype in [DType::F32, DType::F16] {
        let t = Tables::new(31, dtype);
        let (tg, tc) = (t.upload(&*u.be), t.upload(&*cpu));
        for (i, (name, shapes)) in batches().into_iter().enumerate() {
            if skip_long_on(&*u.be, shapes.iter().map(|s| s.0).max().unwrap_or(0)) {
                continue;
            }
            let req = requests(&shapes, 300 + i as u64);
            let bias = bias_for(&*cpu, &tc, &req);
            let got = u.be.gsu_topk(&tg, &req.as_batch(), &bias, TOP_K).unwrap();
            let want = cpu.gsu_topk(&tc, &req.as_batch(), &bias, TOP_K).unwrap();
            let mut st = V3Stats::default();
            check_v3(&format!("gsu v3 {dtype:?} {name}"), &V3Ref::of(&t), &req, &bias, &got, &want, &mut st);
            report(&format!("gsu v3 {dtype:?} {name}"), &st);
        }
    }
});

// K = 1..256 (list sizes 32, 64, 128, 256; several merges per chunk, chunks merged), L = 1, 5,
// 97, 300, 1025, both dtypes; then all-equal scores: the K most recent positions, exactly.
v3_test!(gsu_topk_v3_other_k_and_exact_ties, |u, cpu| {
    for dtype in [DType::F32, DType::F16] {
        let t = Tables::new(32, dtype);
        let (tg, tc) = (t.upload(&*u.be), t.upload(&*cpu));
        let req = requests(&[(300, 2), (1025, 3), (5, 2), (1, 1), (97, 33)], 33);
        let bias = bias_for(&*cpu, &tc, &req);
        for k in [1usize, 7, 32, 33, 64, 65, 128, 129, 256] {
            let got = u.be.gsu_topk(&tg, &req.as_batch(), &bias, k).unwrap();
            let want = cpu.gsu_topk(&tc, &req.as_batch(), &bias, k).unwrap();
            let mut st = V3Stats::default();
            check_v3(&format!("gsu v3 {dtype:?} k={k}"), &V3Ref::of(&t), &req, &bias, &got, &want, &mut st);
            report(&format!("gsu v3 {dtype:?} k={k}"), &st);
        }
    }
    let t = Tables::new(32, DType::F32);
    let (tg, tc) = (t.upload(&*u.be), t.upload(&*cpu));
    let mut req = OnlineRequests::new();
    let l = 700;
    req.push(&vec![42; l], &[1u32, 11, 40].repeat(l), &vec![3.0; l], &[7, 8, 9]);
    let bias = bias_for(&*cpu, &tc, &req);
    for k in [TOP_K, 256] {
        let got = u.be.gsu_topk(&tg, &req.as_batch(), &bias, k).unwrap();
        for c in 0..3 {
            let expect: Vec<u32> = (0..k as u32).map(|i| l as u32 - 1 - i).collect();
            assert_eq!(got.row(c).0, &expect[..], "tie rule, k={k}");
            assert!(got.row(c).1.iter().all(|&x| x == got.row(c).1[0]), "equal scores, k={k}");
        }
    }
});

v3_test!(gsu_topk_v3_independent_of_batch, |u, cpu| {
    let t = Tables::new(34, DType::F32);
    let (tg, tc) = (t.upload(&*u.be), t.upload(&*cpu));
    let req = requests(&[(97, 3), (1025, 40), (1, 2)], 35);
    let bias = bias_for(&*cpu, &tc, &req);
    let all = u.be.gsu_topk(&tg, &req.as_batch(), &bias, TOP_K).unwrap();
    let b = req.as_batch();
    let r = 1;
    let (s, c) = (b.seq_range(r), b.cand_range(r));
    let mut one = OnlineRequests::new();
    one.push(&req.items[s.clone()], &req.cross[s.start * 3..s.end * 3], &req.sizes[s.clone()], &req.cands[c.clone()]);
    let alone = u.be.gsu_topk(&tg, &one.as_batch(), &bias[s.start * H..s.end * H], TOP_K).unwrap();
    assert_eq!(alone.idx[..], all.idx[c.start * TOP_K..c.end * TOP_K], "{}", u.label);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&alone.score), bits(&all.score[c.start * TOP_K..c.end * TOP_K]), "{}", u.label);
});

// The online path on v3: its finalists under the v3 rule, and the ESU output against the
// reference ESU on v3's own finalists (tolerance as tests/parity/esu.rs).
v3_test!(online_v3_matches_cpu, |u, cpu| {
    for dtype in [DType::F32, DType::F16] {
        let t = Tables::new(42, dtype);
        let (tg, tc) = (t.upload(&*u.be), t.upload(&*cpu));
        let req = requests(&[(1, 1), (97, 3), (1025, 3), (100, 0), (101, 2)], 500);
        let got = u.be.online(&tg, &req.as_batch(), TOP_K).unwrap();
        let want = cpu.online(&tc, &req.as_batch(), TOP_K).unwrap();
        let bias = bias_for(&*cpu, &tc, &req);
        let mut st = V3Stats::default();
        check_v3(&format!("online v3 topk {dtype:?}"), &V3Ref::of(&t), &req, &bias, &got.topk, &want.topk, &mut st);
        report(&format!("online v3 topk {dtype:?}"), &st);
        let want_out = cpu.esu(&tc, &req.as_batch(), &bias, &got.topk).unwrap();
        let scale: Vec<f32> = want_out.chunks(D).map(|r| r.iter().fold(0f32, |m, x| m.max(x.abs()))).collect();
        assert_close(&format!("online v3 out {dtype:?}"), &got.out, &want_out, |i| 2e-3 * scale[i / D] + 1e-4, 1e-3);
    }
});

// An f32 table value that f16 cannot hold (|x| ≥ 65520) is an error on v3, not a silent inf.
v3_test!(gsu_topk_v3_f16_overflow_is_an_error, |u, cpu| {
    let t = Tables::new(36, DType::F32);
    let req = requests(&[(10, 2)], 37);
    let tc = t.upload(&*cpu);
    let bias = bias_for(&*cpu, &tc, &req);
    let mut tg = t.upload(&*u.be);
    let mut pk: Vec<f32> = (0..N_ITEMS * D).map(|i| t.host_pk.get(i)).collect();
    pk[req.items[4] as usize * D + 5] = 1e5;
    tg.p_k = u.be.upload_table("p_k", &HostTable::f32(N_ITEMS, D, pk).unwrap()).unwrap();
    let e = u.be.gsu_topk(&tg, &req.as_batch(), &bias, 5).unwrap_err();
    assert!(matches!(e, Error::NonFinite { field, .. } if field.contains("f16")), "{}: {e}", u.label);
});

// D off the WMMA k-step and h not a power of two: D = 12 (padded to 16; f16 rows staged element
// by element, f32 rows as float4), D = 6 (f32 element by element too), D = 40 (padded to 48),
// h = 3 or 5 (the division path); both dtypes, K = 7 and 100.
v3_test!(gsu_topk_v3_odd_dim_and_heads, |u, cpu| {
    for (d, heads) in [(12usize, 3usize), (6, 3), (40, 5)] {
        for dtype in [DType::F32, DType::F16] {
            let mut rng = twin_engine::rng::SplitMix64::new(77 + d as u64);
            let v = *twin_engine::features::cross_offsets().last().unwrap() as usize;
            let table = |rng: &mut twin_engine::rng::SplitMix64, rows: usize, cols: usize, scale: f64, half: bool| {
                let t = HostTable::f32(rows, cols, randn(rng, rows * cols, scale)).unwrap();
                if half {
                    t.to_f16()
                } else {
                    t
                }
            };
            let half = dtype == DType::F16;
            let (pq, pk, pv) =
                (table(&mut rng, N_ITEMS, d, 0.3, half), table(&mut rng, N_ITEMS, d, 0.3, half), table(&mut rng, N_ITEMS, d, 1.0, half));
            let (cb, cv, wo) =
                (table(&mut rng, v, heads, 0.5, false), table(&mut rng, v, d, 0.5, false), table(&mut rng, d, d, 0.3, false));
            let up = |be: &dyn Backend| OnlineTables {
                p_q: be.upload_table("p_q", &pq).unwrap(),
                p_k: be.upload_table("p_k", &pk).unwrap(),
                p_v: be.upload_table("p_v", &pv).unwrap(),
                cross_bias: be.upload_table("cross_bias", &cb).unwrap(),
                cross_value: be.upload_table("cross_value", &cv).unwrap(),
                w_o: be.upload_table("w_o", &wo).unwrap(),
                cross_offsets: twin_engine::features::cross_offsets(),
                heads,
            };
            let (tg, tc) = (up(&*u.be), up(&*cpu));
            let req = requests(&[(97, 3), (1025, 33), (1, 2)], 78);
            let cross = cpu.cross_bias(&tc.cross_bias, &req.cross, 3).unwrap();
            let bias = cpu.log_size_bias(&cross, &req.sizes, heads).unwrap();
            let r = V3Ref { pq: &pq, pk: &pk, heads, rounded: !half };
            for k in [7usize, TOP_K] {
                let got = u.be.gsu_topk(&tg, &req.as_batch(), &bias, k).unwrap();
                let want = cpu.gsu_topk(&tc, &req.as_batch(), &bias, k).unwrap();
                let what = format!("gsu v3 D={d} h={heads} {dtype:?} k={k}");
                let mut st = V3Stats::default();
                check_v3(&what, &r, &req, &bias, &got, &want, &mut st);
                report(&what, &st);
            }
        }
    }
});
