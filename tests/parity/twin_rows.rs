//! twin_rows (the attention rows of the device training step: `x_h` and bias, then the cross
//! values added to `V`) and segment_sum_mapped (gradients summed through the GSU's row map)
//! against their CPU references, on the backend's own finalists (`gsu_train_dev`), for the
//! shapes of `gsu_train.rs`: `x_h` exact (copies), bias and values within `1e-6 + 1e-6·|ref|`,
//! mapped sums bit for bit (the same rows added in the same order).

use twin_engine::backend::cpu::{cross_bias, segment_sum, twin_rows};
use twin_engine::backend::{f32s, Backend, Elem, GsuTrainIn, Staged, Staging, TwinRowsSlot};
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::common::*;
use crate::gsu_train::{batch, dims, feats, gsu_cases, params, read, stage, upload, Batch, Params, Up, CROSS_OFFS, DIMS, HEADS, J};
use crate::parity_test;

parity_test!(twin_rows_and_mapped_sums_match_cpu, |gpu, _cpu| {
    let p = params(3);
    let (cb_host, _) = cross_bias::cross_tables(&p.e, &p.w_c, &p.beta, &p.w_vc, &CROSS_OFFS, dims(), p.d);
    let up = upload(&*gpu, &p);
    for (ci, (lens, short, k)) in gsu_cases().into_iter().enumerate() {
        if lens.iter().any(|&l| !keep_len(l)) {
            continue;
        }
        let b = batch(&lens, &short, 10 + ci as u64);
        let n_b = lens.len();
        let mut rng = SplitMix64::new(20 + ci as u64);
        let qbar = randn(&mut rng, n_b * DIMS.width(), 1.0);
        let mut st = Staging::new();
        let slot = stage(&mut st, &b, k, 2 * n_b);
        let staged = gpu.upload_staging(st).unwrap();
        let qt = gpu.tensor_f32("qbar", n_b, DIMS.width(), &qbar).unwrap();
        let cb = gpu.tensor_f32("cb", CROSS_OFFS[J] as usize, HEADS, &cb_host).unwrap();
        let x = GsuTrainIn { qbar: &qt, feats: feats(&up), cb: &cb, heads: HEADS, q_scale: 0.0883, bias: true };
        let out = gpu.gsu_train_dev(&x, &slot, &staged).unwrap();
        let sel = read(&*gpu, &out.sel);
        check_rows(&*gpu, &up, &p, &b, &cb_host, &out, &slot, &staged, &sel, &format!("twin_rows case {ci} K {k}"));
    }
});

#[allow(clippy::too_many_arguments)]
fn check_rows(
    gpu: &dyn Backend,
    up: &Up,
    p: &Params,
    b: &Batch,
    cb_host: &[f32],
    out: &twin_engine::backend::GsuTrainOut,
    slot: &TwinRowsSlot,
    staged: &Staged,
    sel: &[u32],
    what: &str,
) {
    let n_long = slot.n_long;
    let t = [&p.tables[0][..], &p.tables[1][..], &p.tables[2][..], &p.tables[3][..]];
    let rin =
        twin_rows::RowsIn { tables: t, dims: DIMS, heads: HEADS, n_cross: J, feat: &b.feat, cross: &b.cross, log_n: &b.log_n, n_long };
    let (want_x, want_b) = twin_rows::rows(&rin, cb_host, sel, slot.n_short);
    let cb = gpu.tensor_f32("cb", CROSS_OFFS[J] as usize, HEADS, cb_host).unwrap();
    let (x, bias) = gpu.twin_rows_dev(&feats(up), &cb, HEADS, out, slot, staged).unwrap();
    assert_eq!(f32s(&read(gpu, &x)), want_x, "{what}: attention rows x_h (copies: exact)");
    assert_close(&format!("{what}: attention bias"), &f32s(&read(gpu, &bias)), &want_b, |_| 1e-6, 1e-6);

    // V += Σ cv over a V poisoned nowhere but filled with noise.
    let n_att = slot.n_att();
    let mut rng = SplitMix64::new(n_att as u64 + 5);
    let v0 = randn(&mut rng, n_att * p.d, 1.0);
    let (_, cv_host) = cross_bias::cross_tables(&p.e, &p.w_c, &p.beta, &p.w_vc, &CROSS_OFFS, dims(), p.d);
    let mut want_v = v0.clone();
    twin_rows::add_values(&mut want_v, p.d, &cv_host, &b.cross, J, sel, n_long);
    let v = gpu.tensor_f32("v", n_att, p.d, &v0).unwrap();
    let cv = gpu.tensor_f32("cv", CROSS_OFFS[J] as usize, p.d, &cv_host).unwrap();
    gpu.twin_rows_value_dev(&v, &cv, out, slot, staged).unwrap();
    assert_close(&format!("{what}: values"), &f32s(&read(gpu, &v)), &want_v, |_| 1e-6, 1e-6);

    // Mapped segment sums: positions grouped by item (a key repeated across samples), sources
    // the attention rows plus the tail; bit-identical (same rows added in the same order).
    let p_all = slot.map_len();
    let keys: Vec<u32> = (0..p_all).map(|q| if q < n_long + slot.n_short { b.feat[q * 4] } else { (q % 11) as u32 }).collect();
    let (_, perm, segs) = twin_engine::backend::cpu::segment_sum::segments_of(&keys);
    for w in [1usize, 16, 40] {
        let src = randn(&mut rng, slot.map_rows() * w, 1.0);
        let map = twin_engine::backend::cpu::gsu_train::row_map(sel, n_long, slot.n_short + slot.extra_tail);
        let want = segment_sum::segment_sum_mapped(&src, w, &perm, &segs, &map);
        let mut st = Staging::new();
        let (ps, ss) = (st.ids("perm", &perm, p_all).unwrap(), st.offsets("segs", &segs).unwrap());
        let staged2 = gpu.upload_staging(st).unwrap();
        let st_src = gpu.tensor_f32("src", slot.map_rows(), w, &src).unwrap();
        // The GSU output belongs to `staged`, the positions to `staged2`: both are accepted.
        let got = gpu.segment_sum_mapped_dev(&st_src, &ps, &ss, out, slot, &staged2).unwrap();
        let got = f32s(&read(gpu, &got));
        assert_eq!(got.len(), want.len());
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: mapped segment sum W={w} not bit-identical");
    }
    // A source with fewer rows than the positions map to is refused.
    let bad = gpu.tensor_zeros("src", slot.map_rows() - 1, 2, Elem::F32).unwrap();
    let mut st = Staging::new();
    let (ps, ss) = (st.ids("perm", &[0], p_all.max(1)).unwrap(), st.offsets("segs", &[0, 1]).unwrap());
    let staged3 = gpu.upload_staging(st).unwrap();
    assert!(matches!(gpu.segment_sum_mapped_dev(&bad, &ps, &ss, out, slot, &staged3), Err(Error::LengthMismatch { .. })));
}
