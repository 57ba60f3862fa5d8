//! cross_bias: inference gather-sum and dense training form. Both sum in f32 on the GPU and
//! in f64 on the CPU, so the tolerance scales with Σ|terms| (computed by running the reference
//! on absolute values): |err| ≤ 2e-6·Σ|terms| + 1e-6.

use twin_engine::backend::{CrossDims, HostTable};
use twin_engine::features;
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::common::*;
use crate::for_each_backend;

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

#[test]
fn cross_bias_gather_sum_matches_cpu() {
    let t = Tables::new(21, twin_engine::backend::DType::F32);
    let abs = abs_table(&t.host_cb);
    let cpu_ = cpu();
    let ta = cpu_.upload_table("abs", &abs).unwrap();
    for_each_backend!(|gpu, cpu| {
        let tg = gpu.upload_table("cross_bias", &t.host_cb).unwrap();
        let tc = cpu.upload_table("cross_bias", &t.host_cb).unwrap();
        for (i, n) in [1usize, 97, 100, 101, 1025, 100_003].into_iter().enumerate() {
            let r = rows(n, 50 + i as u64);
            let got = gpu.cross_bias(&tg, &r, 3).unwrap();
            let want = cpu.cross_bias(&tc, &r, 3).unwrap();
            let mag = cpu_.cross_bias(&ta, &r, 3).unwrap();
            assert_close(&format!("cross_bias N={n}"), &got, &want, |e| 2e-6 * mag[e] + 1e-6, 0.0);
        }
    });
}

fn dense_inputs(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>, CrossDims) {
    let d = CrossDims { heads: H, n_cross: 3, dim: 8 };
    let mut rng = SplitMix64::new(seed);
    let e = randn(&mut rng, n * 3 * 8, 1.0);
    let w = randn(&mut rng, H * 3 * 8, 0.5);
    let beta = randn(&mut rng, H * 3, 1.0);
    (e, w, beta, d)
}

#[test]
fn cross_bias_dense_matches_cpu() {
    let c0 = cpu();
    for_each_backend!(|gpu, cpu| {
        for (i, n) in [1usize, 97, 101, 1025, 20_000].into_iter().enumerate() {
            let (e, w, beta, d) = dense_inputs(n, 60 + i as u64);
            let got = gpu.cross_bias_dense(&e, &w, &beta, d).unwrap();
            let want = cpu.cross_bias_dense(&e, &w, &beta, d).unwrap();
            let a = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
            let mag = c0.cross_bias_dense(&a(&e), &a(&w), &a(&beta), d).unwrap();
            assert_close(&format!("cross_bias_dense N={n}"), &got, &want, |k| 2e-6 * mag[k] + 1e-6, 0.0);
        }
    });
}

#[test]
fn cross_bias_split() {
    let c = cpu();
    let t = Tables::new(22, twin_engine::backend::DType::F32);
    for u in split_variants() {
        let tg = u.be.upload_table("cross_bias", &t.host_cb).unwrap();
        let tc = c.upload_table("cross_bias", &t.host_cb).unwrap();
        let r = rows(20_000, 5);
        let got = u.be.cross_bias(&tg, &r, 3).unwrap();
        assert_close("cross_bias split", &got, &c.cross_bias(&tc, &r, 3).unwrap(), |_| 1e-4, 1e-5);
        let (e, w, beta, d) = dense_inputs(5000, 6);
        let got = u.be.cross_bias_dense(&e, &w, &beta, d).unwrap();
        assert_close("cross_bias_dense split", &got, &c.cross_bias_dense(&e, &w, &beta, d).unwrap(), |_| 1e-2, 1e-4);
    }
}

#[test]
fn cross_bias_errors_match_cpu() {
    for_each_backend!(|gpu, cpu| {
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
}
