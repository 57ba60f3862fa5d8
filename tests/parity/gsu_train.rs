//! gsu_train (the training GSU of the device training step, issue 12) against its CPU reference:
//! scores, top-K, row map; the fixtures the other sequence ops' tests share (`twin_rows.rs`,
//! `cross_bias.rs`); and, for all of them together, that they move nothing between host and
//! device on CUDA and wgpu. Samples of length 0, 1, K-1, K, K+1, 97 and 1025 (100,003 outside the
//! small run), duplicate items so scores tie exactly (the tie rule decides), K = 1, 7, 100.
//!
//! Tolerances: scores `1e-5 + 1e-5·Σ|terms|` (f32 sums in one fixed order on every backend, so
//! CUDA is expected bit-identical, WGSL within rounding); finalists as index sets per sample,
//! where a position may differ from the CPU's only if its CPU score is within that tolerance of
//! the K-th best (a near-tie); the rows, bias, values and mapped sums are computed from the
//! backend's own finalists and must match the reference on them (`1e-6 + 1e-6·|ref|`).

use twin_engine::backend::cpu::gsu_train::{self, FeatDims, GsuTrainRef, NOT_KEPT};
use twin_engine::backend::cpu::{cross_bias, twin_rows};
use twin_engine::backend::{
    f32s, Backend, CrossDims, CrossParams, FeatTables, GsuTrainIn, Staging, Tensor, TwinBounds, TwinRowsIn, TwinRowsSlot,
};
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::common::*;
use crate::parity_test;

pub(crate) const DIMS: FeatDims = FeatDims { id: 16, small: 4 };
pub(crate) const ROWS: [usize; 4] = [300, 40, 12, 9];
pub(crate) const J: usize = 3;
pub(crate) const CROSS_OFFS: [u32; 4] = [0, 5, 13, 20];
pub(crate) const HEADS: usize = 4;

pub(crate) struct Batch {
    pub(crate) long_offsets: Vec<u32>,
    pub(crate) short_offsets: Vec<u32>,
    pub(crate) feat: Vec<u32>,
    pub(crate) cross: Vec<u32>,
    pub(crate) log_n: Vec<f32>,
}

pub(crate) fn batch(lens: &[usize], short: &[usize], seed: u64) -> Batch {
    let mut rng = SplitMix64::new(seed);
    let mut b = Batch { long_offsets: vec![0], short_offsets: vec![0], feat: vec![], cross: vec![], log_n: vec![] };
    let push = |rng: &mut SplitMix64, b: &mut Batch, long: bool| {
        // A small item pool per sample so items repeat and scores tie exactly.
        let item = rng.below(40) as u32 * 7 % ROWS[0] as u32;
        b.feat.extend([item, item % ROWS[1] as u32, item % ROWS[2] as u32, item % ROWS[3] as u32]);
        for j in 0..J {
            b.cross.push(CROSS_OFFS[j] + rng.below((CROSS_OFFS[j + 1] - CROSS_OFFS[j]) as u64) as u32);
        }
        b.log_n.push(if long && rng.below(3) == 0 { (1 + rng.below(50)) as f32 } else { 1.0 }.ln());
    };
    for &l in lens {
        for _ in 0..l {
            push(&mut rng, &mut b, true);
        }
        b.long_offsets.push(b.long_offsets.last().unwrap() + l as u32);
    }
    for &s in short {
        b.short_offsets.push(b.short_offsets.last().unwrap() + s as u32);
    }
    // Short positions come after every long one.
    let n_short = *b.short_offsets.last().unwrap() as usize;
    for _ in 0..n_short {
        push(&mut rng, &mut b, false);
        *b.log_n.last_mut().unwrap() = 0.0;
    }
    b
}

pub(crate) struct Params {
    pub(crate) tables: [Vec<f32>; 4],
    pub(crate) e: Vec<f32>,
    pub(crate) w_c: Vec<f32>,
    pub(crate) beta: Vec<f32>,
    pub(crate) w_vc: Vec<f32>,
    pub(crate) d: usize,
}

pub(crate) fn params(seed: u64) -> Params {
    let mut rng = SplitMix64::new(seed);
    let tables = [0, 1, 2, 3].map(|f| randn(&mut rng, ROWS[f] * DIMS.part(f).1, 0.5));
    let c = 8;
    let d = 24;
    Params {
        tables,
        e: randn(&mut rng, CROSS_OFFS[J] as usize * c, 0.5),
        w_c: randn(&mut rng, HEADS * J * c, 0.5),
        beta: randn(&mut rng, HEADS * J, 1.0),
        w_vc: randn(&mut rng, J * c * d, 0.5),
        d,
    }
}

pub(crate) fn dims() -> CrossDims {
    CrossDims { heads: HEADS, n_cross: J, dim: 8 }
}

pub(crate) struct Up {
    pub(crate) tables: Vec<Tensor>,
    pub(crate) e: Tensor,
    pub(crate) w_c: Tensor,
    pub(crate) beta: Tensor,
    pub(crate) w_vc: Tensor,
}

pub(crate) fn upload(be: &dyn Backend, p: &Params) -> Up {
    let tables = (0..4).map(|f| be.tensor_f32("table", ROWS[f], DIMS.part(f).1, &p.tables[f]).unwrap()).collect();
    Up {
        tables,
        e: be.tensor_f32("e", CROSS_OFFS[J] as usize, 8, &p.e).unwrap(),
        w_c: be.tensor_f32("w_c", HEADS, J * 8, &p.w_c).unwrap(),
        beta: be.tensor_f32("beta", HEADS, J, &p.beta).unwrap(),
        w_vc: be.tensor_f32("w_vc", J * 8, p.d, &p.w_vc).unwrap(),
    }
}

pub(crate) fn bounds() -> TwinBounds {
    TwinBounds { tables: ROWS, cross_rows: CROSS_OFFS[J] as usize, n_cross: J }
}

pub(crate) fn stage(st: &mut Staging, b: &Batch, k: usize, tail: usize) -> TwinRowsSlot {
    let x = TwinRowsIn {
        long_offsets: &b.long_offsets,
        short_offsets: &b.short_offsets,
        feat: &b.feat,
        cross: &b.cross,
        log_n: &b.log_n,
        k,
        extra_tail: tail,
    };
    st.twin_rows(&x, bounds()).unwrap()
}

pub(crate) fn feats(up: &Up) -> FeatTables<'_> {
    FeatTables { tables: [&up.tables[0], &up.tables[1], &up.tables[2], &up.tables[3]], dims: DIMS }
}

pub(crate) fn cross<'a>(up: &'a Up, offs: &'a twin_engine::backend::OffsetsSlot) -> CrossParams<'a> {
    CrossParams { e: &up.e, w_c: &up.w_c, beta: &up.beta, w_vc: &up.w_vc, offsets: offs, dims: dims() }
}

pub(crate) fn read(be: &dyn Backend, t: &Tensor) -> Vec<u32> {
    be.tensor_read(&[t]).unwrap().remove(0)
}

/// Cases: (long lengths, short lengths, K).
pub(crate) fn gsu_cases() -> Vec<(Vec<usize>, Vec<usize>, usize)> {
    let mut v = vec![
        (vec![0, 1, 99, 100, 101, 97, 1025], vec![3, 0, 50, 1, 2, 7, 0], 100),
        (vec![5, 0, 300], vec![0, 0, 0], 1),
        (vec![13, 8, 7, 6], vec![1, 1, 1, 1], 7),
        (vec![0, 0], vec![4, 2], 100),
    ];
    if !small() {
        v.push((vec![100_003, 3], vec![50, 50], 100));
    }
    v
}

/// The reference scores, and each score's magnitude bound `Σ|terms|` for the tolerance.
fn ref_scores(p: &Params, b: &Batch, qbar: &[f32], cb: &[f32], bias: bool, q_scale: f32) -> (Vec<f32>, Vec<f32>) {
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
    let run = |t: [&[f32]; 4], q: &[f32], cb: &[f32], ln: &[f32]| {
        gsu_train::scores(&GsuTrainRef {
            qbar: q,
            tables: t,
            dims: DIMS,
            cb,
            heads: HEADS,
            n_cross: J,
            feat: &b.feat,
            cross: &b.cross,
            log_n: ln,
            long_offsets: &b.long_offsets,
            q_scale: q_scale.abs(),
            bias,
        })
    };
    let t = [&p.tables[0][..], &p.tables[1][..], &p.tables[2][..], &p.tables[3][..]];
    let want = run(t, qbar, cb, &b.log_n);
    let at: Vec<Vec<f32>> = p.tables.iter().map(|x| abs(x)).collect();
    let mag = run([&at[0], &at[1], &at[2], &at[3]], &abs(qbar), &abs(cb), &abs(&b.log_n));
    (want, mag)
}

parity_test!(gsu_train_matches_cpu, |gpu, _cpu| {
    let p = params(3);
    let (cb_host, _) = cross_bias::cross_tables(&p.e, &p.w_c, &p.beta, &p.w_vc, &CROSS_OFFS, dims(), p.d);
    let up = upload(&*gpu, &p);
    for (ci, (lens, short, k)) in gsu_cases().into_iter().enumerate() {
        if lens.iter().any(|&l| !keep_len(l)) {
            continue;
        }
        for bias in [true, false] {
            let b = batch(&lens, &short, 10 + ci as u64);
            let n_b = lens.len();
            let mut rng = SplitMix64::new(20 + ci as u64);
            let qbar = randn(&mut rng, n_b * DIMS.width(), 1.0);
            let q_scale = if bias { 0.0883 } else { 1.0 };
            let tail = 2 * n_b;
            let mut st = Staging::new();
            let slot = stage(&mut st, &b, k, tail);
            let staged = gpu.upload_staging(st).unwrap();
            let qt = gpu.tensor_f32("qbar", n_b, DIMS.width(), &qbar).unwrap();
            let cb = gpu.tensor_f32("cb", CROSS_OFFS[J] as usize, HEADS, &cb_host).unwrap();
            let x = GsuTrainIn { qbar: &qt, feats: feats(&up), cb: &cb, heads: HEADS, q_scale, bias };
            let out = gpu.gsu_train_dev(&x, &slot, &staged).unwrap();
            let what = format!("gsu_train case {ci} bias {bias} K {k}");
            let (want, mag) = ref_scores(&p, &b, &qbar, &cb_host, bias, q_scale);
            let got = f32s(&read(&*gpu, &out.scores));
            assert_close(&format!("{what}: scores"), &got, &want, |i| 1e-5 + 1e-5 * mag[i], 0.0);
            // Finalists: per sample min(L, K) ascending positions, the CPU's set up to near-ties.
            let sel = read(&*gpu, &out.sel);
            let fin = gsu_train::fin_offsets(&b.long_offsets, k);
            assert_eq!(sel.len(), *fin.last().unwrap() as usize, "{what}: finalists");
            let (_, want_sel) = gsu_train::select(&want, &b.long_offsets, k);
            for s in 0..n_b {
                let (f0, f1) = (fin[s] as usize, fin[s + 1] as usize);
                let (g, w) = (&sel[f0..f1], &want_sel[f0..f1]);
                assert!(g.windows(2).all(|x| x[0] < x[1]), "{what}: sample {s} finalists not ascending: {g:?}");
                let (lo, hi) = (b.long_offsets[s], b.long_offsets[s + 1]);
                assert!(g.iter().all(|&q| q >= lo && q < hi), "{what}: sample {s} finalist outside the sample");
                if g != w {
                    let kth = w.iter().map(|&q| want[q as usize]).fold(f32::INFINITY, f32::min);
                    for &q in g.iter().filter(|q| !w.contains(q)).chain(w.iter().filter(|q| !g.contains(q))) {
                        let tol = 1e-5 + 1e-5 * mag[q as usize];
                        assert!((want[q as usize] - kth).abs() <= 2.0 * tol, "{what}: sample {s} position {q} differs and is no near-tie");
                    }
                }
            }
            // Row map: long positions to finalist indices, the tail after them.
            let map = read(&*gpu, &out.map);
            let n_long = *b.long_offsets.last().unwrap() as usize;
            let want_map = gsu_train::row_map(&sel, n_long, slot.n_short + tail);
            assert_eq!(map, want_map, "{what}: row map");
            assert!(map[..n_long].iter().filter(|&&m| m != NOT_KEPT).count() == sel.len());
        }
    }
});

#[test]
fn twin_rows_staging_refuses_bad_ids() {
    let b = batch(&[3, 2], &[1, 0], 7);
    let mut feat = b.feat.clone();
    feat[4 * 2 + 1] = ROWS[1] as u32;
    let x = TwinRowsIn {
        long_offsets: &b.long_offsets,
        short_offsets: &b.short_offsets,
        feat: &feat,
        cross: &b.cross,
        log_n: &b.log_n,
        k: 100,
        extra_tail: 0,
    };
    match Staging::new().twin_rows(&x, bounds()) {
        Err(Error::OutOfRange { field: "feat author", index: 2, value, .. }) => assert_eq!(value, ROWS[1] as u64),
        other => panic!("expected feat author out of range, got {other:?}"),
    }
    let mut cross_ = b.cross.clone();
    cross_[0] = CROSS_OFFS[J];
    let x = TwinRowsIn { feat: &b.feat, cross: &cross_, ..x };
    assert!(matches!(Staging::new().twin_rows(&x, bounds()), Err(Error::OutOfRange { field: "cross", .. })));
}

// On CUDA the six sequence ops run as kernels on device tensors: not one copy between host and
// device (the host defaults download their inputs and upload their results), also for a batch
// with no position at all; the selection is exact on the backend's own scores.
parity_test!(twin_train_ops_move_nothing_on_cuda, |gpu, cpu| {
    if gpu.kind().name() != "cuda" {
        return;
    }
    let p = params(5);
    let label = gpu.describe();
    let gpu = &*gpu;
    let up = upload(gpu, &p);
    for (lens, short) in [(vec![0usize, 7, 12, 150, 9], vec![2usize, 0, 3, 1, 0]), (vec![0, 0], vec![0, 0])] {
        let mut b = batch(&lens, &short, 6);
        // The last sample repeats one item: without the bias all its scores tie exactly.
        let n_long = *b.long_offsets.last().unwrap() as usize;
        for q in n_long - lens[lens.len() - 1]..n_long {
            b.feat[q * 4..q * 4 + 4].copy_from_slice(&[21, 21, 9, 3]);
        }
        let mut rng = SplitMix64::new(7);
        let v_rows = CROSS_OFFS[J] as usize;
        let mut st = Staging::new();
        let slot = stage(&mut st, &b, 5, 3);
        let offs = st.offsets("cross offsets", &CROSS_OFFS).unwrap();
        let order: Vec<u32> = (0..slot.map_len() as u32).rev().collect();
        let perm = st.ids("perm", &order, slot.map_len()).unwrap();
        let segs = st.offsets("segs", &[0, 2, slot.map_len() as u32]).unwrap();
        let staged = gpu.upload_staging(st).unwrap();
        let mut t = |name, r: usize, c: usize| gpu.tensor_f32(name, r, c, &randn(&mut rng, r * c, 1.0)).unwrap();
        let (qbar, dcb, dcv) = (t("qbar", lens.len(), DIMS.width()), t("dcb", v_rows, HEADS), t("dcv", v_rows, p.d));
        let (v, src) = (t("v", slot.n_att(), p.d), t("src", slot.map_rows(), 4));

        let before = gpu.transfers();
        let (cb, cv) = gpu.cross_tables_dev(&cross(&up, &offs), &staged).unwrap();
        let grads = gpu.cross_tables_bwd_dev(&cross(&up, &offs), &dcb, &dcv, &staged).unwrap();
        let x = GsuTrainIn { qbar: &qbar, feats: feats(&up), cb: &cb, heads: HEADS, q_scale: 0.0883, bias: true };
        let out = gpu.gsu_train_dev(&x, &slot, &staged).unwrap();
        let (xh, bias) = gpu.twin_rows_dev(&feats(&up), &cb, HEADS, &out, &slot, &staged).unwrap();
        gpu.twin_rows_value_dev(&v, &cv, &out, &slot, &staged).unwrap();
        let sums = gpu.segment_sum_mapped_dev(&src, &perm, &segs, &out, &slot, &staged).unwrap();
        let moved = gpu.transfers().since(before);
        assert_eq!((moved.h2d_calls, moved.h2d_bytes, moved.d2h_calls, moved.d2h_bytes), (0, 0, 0, 0), "{}: {moved:?}", label);
        assert_eq!((xh.rows, bias.rows, sums.rows, grads.dw_vc.len()), (slot.n_att(), slot.n_att(), 2, J * 8 * p.d));
        for bias in [true, false] {
            let out = gpu.gsu_train_dev(&GsuTrainIn { bias, ..x }, &slot, &staged).unwrap();
            let (_, want) = gsu_train::select(&f32s(&read(gpu, &out.scores)), &b.long_offsets, 5);
            assert_eq!(read(gpu, &out.sel), want, "{}: finalists (bias {bias})", label);
            assert_eq!(read(gpu, &out.map), gsu_train::row_map(&want, slot.n_long, slot.n_short + 3), "{}: row map", label);
        }
        eprintln!("twin_train ops on {} (lens {lens:?}): no host<->device copy", label);
    }
});

// wgpu runs ops 1-6 on its tensors (attention on the twin rows' stacked offsets, the cross
// tables both ways, the GSU, the rows, the values, the mapped sums): no upload but parameter
// blocks (`h2d_aux`), no download; the selection is exact on the backend's own scores; empty
// batches (no long, no short positions) run too.
parity_test!(twin_train_ops_move_nothing_on_wgpu, |gpu, cpu| {
    if gpu.kind().name() != "wgpu" {
        return;
    }
    let p = params(8);
    let label = gpu.describe();
    let gpu = &*gpu;
    let up = upload(gpu, &p);
    for (lens, short) in [(vec![0usize, 7, 12, 150], vec![2usize, 0, 3, 1]), (vec![0, 0], vec![0, 0])] {
        let b = batch(&lens, &short, 9);
        let n_b = lens.len();
        let mut rng = SplitMix64::new(10);
        let v_rows = CROSS_OFFS[J] as usize;
        let mut st = Staging::new();
        let slot = stage(&mut st, &b, 5, 3);
        let offs = st.offsets("cross offsets", &CROSS_OFFS).unwrap();
        let order: Vec<u32> = (0..slot.map_len() as u32).rev().collect();
        let perm = st.ids("perm", &order, slot.map_len()).unwrap();
        let segs = st.offsets("segs", &[0, 5.min(slot.map_len() as u32), slot.map_len() as u32]).unwrap();
        let staged = gpu.upload_staging(st).unwrap();
        let mut t = |name, r: usize, c: usize| gpu.tensor_f32(name, r, c, &randn(&mut rng, r * c, 1.0)).unwrap();
        let (qbar, dcb, dcv) = (t("qbar", n_b, DIMS.width()), t("dcb", v_rows, HEADS), t("dcv", v_rows, p.d));
        let (v, src) = (t("v", slot.n_att(), p.d), t("src", slot.map_rows(), 4));
        let (q, av, dpooled) = (t("q", 2 * n_b, DIMS.width()), t("attn v", slot.n_att(), DIMS.width()), t("dp", 2 * n_b, DIMS.width()));

        let before = gpu.transfers();
        let (cb, cv) = gpu.cross_tables_dev(&cross(&up, &offs), &staged).unwrap();
        let grads = gpu.cross_tables_bwd_dev(&cross(&up, &offs), &dcb, &dcv, &staged).unwrap();
        let x = GsuTrainIn { qbar: &qbar, feats: feats(&up), cb: &cb, heads: HEADS, q_scale: 0.0883, bias: true };
        let out = gpu.gsu_train_dev(&x, &slot, &staged).unwrap();
        let (xh, bias) = gpu.twin_rows_dev(&feats(&up), &cb, HEADS, &out, &slot, &staged).unwrap();
        gpu.twin_rows_value_dev(&v, &cv, &out, &slot, &staged).unwrap();
        let sums = gpu.segment_sum_mapped_dev(&src, &perm, &segs, &out, &slot, &staged).unwrap();
        let att = gpu.attn_fwd_dev(HEADS, &q, &xh, &av, &bias, &slot.att_offsets, &staged).unwrap();
        let ag = gpu.attn_bwd_dev(HEADS, (&q, &xh, &av, &bias), &att.p, &dpooled, &slot.att_offsets, &staged).unwrap();
        let moved = gpu.transfers().since(before);
        assert_eq!((moved.h2d_calls, moved.h2d_bytes, moved.d2h_calls, moved.d2h_bytes), (0, 0, 0, 0), "{}: {moved:?}", label);
        assert!(moved.h2d_aux_calls > 0, "{}: no parameter block: did the shaders run?", label);
        assert_eq!(
            (xh.rows, bias.rows, sums.rows, grads.dw_vc.len(), ag.dk.rows),
            (slot.n_att(), slot.n_att(), 2, J * 8 * p.d, slot.n_att())
        );

        // The results are the references' on the backend's own finalists and scores.
        let (_, want) = gsu_train::select(&f32s(&read(gpu, &out.scores)), &b.long_offsets, 5);
        assert_eq!(read(gpu, &out.sel), want, "{}: finalists", label);
        assert_eq!(read(gpu, &out.map), gsu_train::row_map(&want, slot.n_long, slot.n_short + 3), "{}: row map", label);
        let (cb_host, _) = cross_bias::cross_tables(&p.e, &p.w_c, &p.beta, &p.w_vc, &CROSS_OFFS, dims(), p.d);
        let tb = [&p.tables[0][..], &p.tables[1][..], &p.tables[2][..], &p.tables[3][..]];
        let rin = twin_rows::RowsIn {
            tables: tb,
            dims: DIMS,
            heads: HEADS,
            n_cross: J,
            feat: &b.feat,
            cross: &b.cross,
            log_n: &b.log_n,
            n_long: slot.n_long,
        };
        let (want_x, want_b) = twin_rows::rows(&rin, &cb_host, &want, slot.n_short);
        assert_eq!(f32s(&read(gpu, &xh)), want_x, "{}: x_h", label);
        assert_close("bias", &f32s(&read(gpu, &bias)), &want_b, |_| 1e-6, 1e-6);
        let r = gpu.tensor_read(&[&q, &xh, &av, &bias, &dpooled]).unwrap();
        let att_offs = gsu_train::fin_offsets(&b.long_offsets, 5);
        let mut offs_all = att_offs.clone();
        offs_all.extend(b.short_offsets[1..].iter().map(|&o| o + *att_offs.last().unwrap()));
        let want_att = gpu.attn_fwd(HEADS, &f32s(&r[0]), &f32s(&r[1]), &f32s(&r[2]), &f32s(&r[3]), &offs_all).unwrap();
        assert_eq!(read(gpu, &att.pooled), twin_engine::backend::words(&want_att.pooled), "{}: attention pooled", label);
        eprintln!("twin_train ops on {} (lens {lens:?}): no host<->device copy but {} parameter blocks", label, moved.h2d_aux_calls);
    }
});
