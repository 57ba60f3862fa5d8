//! cross_bias: inference gather-sum and dense training form. Both sum in f32 on the GPU and
//! in f64 on the CPU, so the tolerance scales with Σ|terms| (computed by running the reference
//! on absolute values): |err| ≤ 2e-6·Σ|terms| + 1e-6.

use twin_engine::backend::cpu::cross_bias;
use twin_engine::backend::{f32s, CrossDims, HostTable, Staging};
use twin_engine::features;
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::common::*;
use crate::gsu_train::{cross, dims, params, read, upload, CROSS_OFFS, HEADS, J};
use crate::parity_test;
use crate::split_test;

fn rows(n: usize, seed: u64) -> Vec<u32> {
    let offs = features::cross_offsets();
    let mut rng = SplitMix64::new(seed);
    let mut v = Vec::with_capacity(n * 3);
    for _ in 0..n {
        for j in 0..3 {
            v.push(offs[j] + rng.below((offs[j + 1] - offs[j]) as u64) as u32);
        }
    }
    v
}

parity_test!(cross_bias_gather_sum_matches_cpu, |gpu, cpu| {
    let t = Tables::new(21, twin_engine::backend::DType::F32);
    let abs = abs_table(&t.host_cb);
    let cpu_ = crate::common::cpu();
    let ta = cpu_.upload_table("abs", &abs).unwrap();
    let tg = gpu.upload_table("cross_bias", &t.host_cb).unwrap();
    let tc = cpu.upload_table("cross_bias", &t.host_cb).unwrap();
    for (i, n) in [1usize, 97, 100, 101, 1025, 100_003].into_iter().filter(|&n| keep_len(n)).enumerate() {
        let r = rows(n, 50 + i as u64);
        let got = gpu.cross_bias(&tg, &r, 3).unwrap();
        let want = cpu.cross_bias(&tc, &r, 3).unwrap();
        let mag = cpu_.cross_bias(&ta, &r, 3).unwrap();
        assert_close(&format!("cross_bias N={n}"), &got, &want, |e| 2e-6 * mag[e] + 1e-6, 0.0);
    }
});

fn dense_inputs(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>, CrossDims) {
    let d = CrossDims { heads: H, n_cross: 3, dim: 8 };
    let mut rng = SplitMix64::new(seed);
    let e = randn(&mut rng, n * 3 * 8, 1.0);
    let w = randn(&mut rng, H * 3 * 8, 0.5);
    let beta = randn(&mut rng, H * 3, 1.0);
    (e, w, beta, d)
}

parity_test!(cross_bias_dense_matches_cpu, |gpu, cpu| {
    let c0 = crate::common::cpu();
    for (i, n) in [1usize, 97, 101, 1025, 20_000].into_iter().enumerate() {
        let (e, w, beta, d) = dense_inputs(n, 60 + i as u64);
        let got = gpu.cross_bias_dense(&e, &w, &beta, d).unwrap();
        let want = cpu.cross_bias_dense(&e, &w, &beta, d).unwrap();
        let a = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
        let mag = c0.cross_bias_dense(&a(&e), &a(&w), &a(&beta), d).unwrap();
        assert_close(&format!("cross_bias_dense N={n}"), &got, &want, |k| 2e-6 * mag[k] + 1e-6, 0.0);
    }
});

split_test!(cross_bias_split, |u, c| {
    let t = Tables::new(22, twin_engine::backend::DType::F32);
    let tg = u.be.upload_table("cross_bias", &t.host_cb).unwrap();
    let tc = c.upload_table("cross_bias", &t.host_cb).unwrap();
    let r = rows(20_000, 5);
    let got = u.be.cross_bias(&tg, &r, 3).unwrap();
    assert_close("cross_bias split", &got, &c.cross_bias(&tc, &r, 3).unwrap(), |_| 1e-4, 1e-5);
    let (e, w, beta, d) = dense_inputs(5000, 6);
    let got = u.be.cross_bias_dense(&e, &w, &beta, d).unwrap();
    assert_close("cross_bias_dense split", &got, &c.cross_bias_dense(&e, &w, &beta, d).unwrap(), |_| 1e-2, 1e-4);
});

parity_test!(cross_bias_errors_match_cpu, |gpu, cpu| {
    let tab = HostTable::f32(74, H, vec![0.5; 74 * H]).unwrap();
    let tg = gpu.upload_table("cross_bias", &tab).unwrap();
    let tc = cpu.upload_table("cross_bias", &tab).unwrap();
    let mut r = rows(5, 1);
    r[4] = 74;
    match (gpu.cross_bias(&tg, &r, 3), cpu.cross_bias(&tc, &r, 3)) {
        (Err(Error::OutOfRange { index: a, .. }), Err(Error::OutOfRange { index: b, .. })) => assert_eq!((a, b), (4, 4)),
        (g, c) => panic!("expected OutOfRange: {:?} / {:?}", g.err(), c.err()),
    }
    assert!(matches!(gpu.cross_bias(&tg, &r[..4], 3), Err(Error::LengthMismatch { .. })));
    let (mut e, w, beta, d) = dense_inputs(4, 2);
    e[17] = f32::NAN;
    for be in [&gpu, &cpu] {
        assert!(matches!(be.cross_bias_dense(&e, &w, &beta, d), Err(Error::NonFinite { field: "e", index: 17, .. })));
    }
});

/// Inputs of the cross backward: `v` stacked rows split into features by `offsets`, width `d`.
struct BwdCase {
    dcb: Vec<f32>,
    dcv: Vec<f32>,
    e: Vec<f32>,
    w_c: Vec<f32>,
    beta: Vec<f32>,
    w_vc: Vec<f32>,
    offsets: Vec<u32>,
    dims: CrossDims,
}

impl BwdCase {
    fn new(offsets: Vec<u32>, d: usize, seed: u64) -> BwdCase {
        let (h, jn, c) = (H, offsets.len() - 1, 8);
        let v = *offsets.last().unwrap() as usize;
        let mut rng = SplitMix64::new(seed);
        BwdCase {
            dcb: randn(&mut rng, v * h, 1.0),
            dcv: randn(&mut rng, v * d, 1.0),
            e: randn(&mut rng, v * c, 0.5),
            w_c: randn(&mut rng, h * jn * c, 0.5),
            beta: randn(&mut rng, h * jn, 1.0),
            w_vc: randn(&mut rng, jn * c * d, 0.3),
            offsets,
            dims: CrossDims { heads: h, n_cross: jn, dim: c },
        }
    }
    fn input(&self) -> twin_engine::backend::CrossBwdIn<'_> {
        twin_engine::backend::CrossBwdIn {
            dcb: &self.dcb,
            dcv: &self.dcv,
            e: &self.e,
            w_c: &self.w_c,
            beta: &self.beta,
            w_vc: &self.w_vc,
            offsets: &self.offsets,
            dims: self.dims,
        }
    }
    /// The same case with every value replaced by its absolute value (error scales).
    fn abs(&self) -> BwdCase {
        let a = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
        BwdCase {
            dcb: a(&self.dcb),
            dcv: a(&self.dcv),
            e: a(&self.e),
            w_c: a(&self.w_c),
            beta: a(&self.beta),
            w_vc: a(&self.w_vc),
            offsets: self.offsets.clone(),
            dims: self.dims,
        }
    }
}

// The training shape (V = 74 rows of the three cross features, h = 4, C = 8, D = 128), an empty
// feature, one row, no rows at all, and V = 20,000 with D = 16 (several WGSL passes: llvmpipe's
// loop cap). f32 on both sides in the same order; the WGSL compiler may contract, so the
// tolerance is 2e-6·Σ|terms| + 1e-6. Two runs agree bit for bit.
parity_test!(cross_tables_bwd_matches_cpu, |gpu, cpu| {
    let c0 = crate::common::cpu();
    let cases = vec![
        ("training", BwdCase::new(features::cross_offsets(), D, 90)),
        ("empty feature", BwdCase::new(vec![0, 0, 40, 74], 128, 91)),
        ("one row", BwdCase::new(vec![0, 1], 7, 92)),
        ("no rows", BwdCase::new(vec![0, 0, 0, 0], 0, 93)),
        ("long", BwdCase::new(vec![0, 5000, 12_000, 20_000], 16, 94)),
    ];
    for (name, c) in &cases {
        let got = gpu.cross_tables_bwd(c.input()).unwrap();
        let want = cpu.cross_tables_bwd(c.input()).unwrap();
        let ca = c.abs();
        let mag = c0.cross_tables_bwd(ca.input()).unwrap();
        let tol = |m: &[f32]| {
            let m = m.to_vec();
            move |i: usize| 2e-6 * m[i] + 1e-6
        };
        assert_close(&format!("cross bwd {name} dE"), &got.de, &want.de, tol(&mag.de), 0.0);
        assert_close(&format!("cross bwd {name} dw_c"), &got.dw_c, &want.dw_c, tol(&mag.dw_c), 0.0);
        assert_close(&format!("cross bwd {name} dbeta"), &got.dbeta, &want.dbeta, tol(&mag.dbeta), 0.0);
        assert_close(&format!("cross bwd {name} dW_vc"), &got.dw_vc, &want.dw_vc, tol(&mag.dw_vc), 0.0);
        assert_eq!(gpu.cross_tables_bwd(c.input()).unwrap(), got, "cross bwd {name}: differs run to run");
    }
});

parity_test!(cross_tables_bwd_errors_are_typed, |gpu, cpu| {
    let check = |be: &dyn twin_engine::backend::Backend| {
        let c = BwdCase::new(features::cross_offsets(), 16, 95);
        let x = c.input();
        let mut dn = c.dcv.clone();
        dn[33] = f32::NAN;
        assert!(matches!(
            be.cross_tables_bwd(twin_engine::backend::CrossBwdIn { dcv: &dn, ..x }),
            Err(Error::NonFinite { field: "dcv", index: 33, .. })
        ));
        assert!(matches!(
            be.cross_tables_bwd(twin_engine::backend::CrossBwdIn { w_vc: &c.w_vc[1..], ..x }),
            Err(Error::LengthMismatch { field: "w_vc", .. })
        ));
        assert!(matches!(
            be.cross_tables_bwd(twin_engine::backend::CrossBwdIn { dcb: &c.dcb[4..], ..x }),
            Err(Error::LengthMismatch { field: "dcb", .. })
        ));
        let mut bad = c.offsets.clone();
        bad[1] = bad[2] + 1;
        assert!(matches!(
            be.cross_tables_bwd(twin_engine::backend::CrossBwdIn { offsets: &bad, ..x }),
            Err(Error::BadOffsets { field: "offsets", .. })
        ));
        assert!(matches!(
            be.cross_tables_bwd(twin_engine::backend::CrossBwdIn { offsets: &c.offsets[1..], ..x }),
            Err(Error::LengthMismatch { field: "offsets", .. })
        ));
        let zero = CrossDims { heads: 0, ..c.dims };
        assert!(matches!(be.cross_tables_bwd(twin_engine::backend::CrossBwdIn { dims: zero, ..x }), Err(Error::BadShape { .. })));
    };
    check(&*cpu);
    check(&*gpu);
});

// The training-time cross tables on tensors (issue 12): forward (`cross_tables_fwd`) and the
// backward into four tensors, against `cpu::cross_bias::{cross_tables, cross_tables_bwd}`.
parity_test!(cross_tables_fwd_and_bwd_match_cpu, |gpu, _cpu| {
    let p = params(1);
    let (want_cb, want_cv) = cross_bias::cross_tables(&p.e, &p.w_c, &p.beta, &p.w_vc, &CROSS_OFFS, dims(), p.d);
    let v = CROSS_OFFS[J] as usize;
    let mut rng = SplitMix64::new(2);
    let dcb = randn(&mut rng, v * HEADS, 1.0);
    let dcv = randn(&mut rng, v * p.d, 1.0);
    let want_g = cross_bias::cross_tables_bwd(&dcb, &dcv, &p.e, &p.w_c, &p.beta, &p.w_vc, &CROSS_OFFS, dims());
    let up = upload(&*gpu, &p);
    let mut st = Staging::new();
    let offs = st.offsets("cross offsets", &CROSS_OFFS).unwrap();
    let staged = gpu.upload_staging(st).unwrap();
    let (cb, cv) = gpu.cross_tables_dev(&cross(&up, &offs), &staged).unwrap();
    assert_close("cross cb", &f32s(&read(&*gpu, &cb)), &want_cb, |_| 1e-5, 1e-5);
    assert_close("cross cv", &f32s(&read(&*gpu, &cv)), &want_cv, |_| 1e-5, 1e-5);
    let (tb, tv) = (gpu.tensor_f32("dcb", v, HEADS, &dcb).unwrap(), gpu.tensor_f32("dcv", v, p.d, &dcv).unwrap());
    let g = gpu.cross_tables_bwd_dev(&cross(&up, &offs), &tb, &tv, &staged).unwrap();
    let got = gpu.tensor_read(&[&g.de, &g.dw_c, &g.dbeta, &g.dw_vc]).unwrap();
    for (name, got, want) in
        [("de", &got[0], &want_g.de), ("dw_c", &got[1], &want_g.dw_c), ("dbeta", &got[2], &want_g.dbeta), ("dw_vc", &got[3], &want_g.dw_vc)]
    {
        assert_close(&format!("cross {name}"), &f32s(got), want, |_| 1e-4, 1e-5);
    }
    // Offsets that do not cover the table are refused.
    let mut st = Staging::new();
    let bad = st.offsets("cross offsets", &[0, 5, 13, 19]).unwrap();
    let staged = gpu.upload_staging(st).unwrap();
    assert!(matches!(gpu.cross_tables_dev(&cross(&up, &bad), &staged), Err(Error::LengthMismatch { .. })));
});
