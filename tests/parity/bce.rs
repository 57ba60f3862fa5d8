//! bce (mean binary cross-entropy on logits, and dlogit) against the CPU reference (f64).
//!
//! Logits are Normal(0, 3) with outliers (every 97th ±50: saturated sigmoids, loss terms of 50),
//! labels mostly 0/1 with some soft labels. The loss mean must agree to 1e-6 relative (CUDA
//! computes in f64 like the CPU; WGSL in f32, with the per-sample terms summed on the host in
//! f64); dlogit = (σ(s) - y) / B to |err| <= 1e-6 / B + 1e-5·|want|.

use twin_engine::backend::Backend;
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::attn::bits;
use crate::common::*;
use crate::parity_test;
use crate::split_test;

fn inputs(b: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    let logits = randn(&mut rng, b, 3.0);
    let labels = (0..b)
        .map(|i| match rng.below(10) {
            0 => 0.25,
            1..=4 => 1.0,
            _ => {
                if i % 11 == 0 {
                    0.5
                } else {
                    0.0
                }
            }
        })
        .collect();
    (logits, labels)
}

fn check(what: &str, gpu: &dyn Backend, cpu: &dyn Backend, logits: &[f32], labels: &[f32]) -> f64 {
    let (gl, gd) = gpu.bce(logits, labels).unwrap();
    let (wl, wd) = cpu.bce(logits, labels).unwrap();
    let rel = (gl - wl).abs() / wl.abs().max(1e-12);
    assert!(rel <= 1e-6, "{what}: loss {gl} vs CPU {wl} (relative error {rel:.2e} > 1e-6)");
    let inv = 1.0 / logits.len() as f32;
    assert_close(&format!("{what} dlogit"), &gd, &wd, |_| 1e-6 * inv, 1e-5);
    let (again_l, again_d) = gpu.bce(logits, labels).unwrap();
    assert_eq!(again_l.to_bits(), gl.to_bits(), "{what}: loss differs run to run");
    assert_eq!(bits(&again_d), bits(&gd), "{what}: dlogit differs run to run");
    rel
}

parity_test!(bce_matches_cpu, |gpu, cpu| {
    let mut worst = 0f64;
    for (i, b) in [1usize, 7, 64, 97, 512, 1025, 100_003].into_iter().filter(|&b| keep_len(b)).enumerate() {
        let (s, y) = inputs(b, 70 + i as u64);
        worst = worst.max(check(&format!("bce B={b}"), &*gpu, &*cpu, &s, &y));
    }
    // Extremes: saturated both ways, exact zeros, tiny logits.
    let s = vec![0.0, -0.0, 1e-7, -1e-7, 17.0, -17.0, 88.0, -88.0, 100.0, -100.0, 1e30, -1e30];
    let y = vec![1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
    worst = worst.max(check("bce extremes", &*gpu, &*cpu, &s, &y));
    eprintln!("  bce: worst loss relative error {worst:.2e} (tolerance 1e-6)");
});

// wgpu with a 64 KiB binding cap runs the samples in groups: identical to the unsplit backend.
split_test!(bce_split, |u, whole, cpu| {
    let (s, y) = inputs(100_003, 80);
    let (gl, gd) = u.be.bce(&s, &y).unwrap();
    let (wl, wd) = whole.bce(&s, &y).unwrap();
    assert_eq!(gl.to_bits(), wl.to_bits(), "{}: split loss differs", u.label);
    assert_eq!(bits(&gd), bits(&wd), "{}: split dlogit differs", u.label);
    check(&format!("bce split [{}]", u.label), &*u.be, &*cpu, &s, &y);
});

parity_test!(bce_errors_are_typed, |gpu, cpu| {
    let check = |be: &dyn Backend| {
        let (s, y) = inputs(10, 90);
        assert!(matches!(be.bce(&s, &y[1..]), Err(Error::LengthMismatch { field: "labels", .. })));
        assert!(matches!(be.bce(&[], &[]), Err(Error::Empty { field: "logits", .. })));
        let mut sn = s.clone();
        sn[3] = f32::NAN;
        assert!(matches!(be.bce(&sn, &y), Err(Error::NonFinite { field: "logits", index: 3, .. })));
        let mut yn = y.clone();
        yn[9] = f32::NEG_INFINITY;
        assert!(matches!(be.bce(&s, &yn), Err(Error::NonFinite { field: "labels", index: 9, .. })));
    };
    check(&*cpu);
    check(&*gpu);
});

// The tensor form (`bce_dev`: logits resident, labels staged, the mean formed on the device in
// sample order) equals the slice form bit for bit, loss and gradient, at B = 1, 97, 1025.
parity_test!(bce_on_tensors_equals_the_slice_form, |gpu, _cpu| {
    use twin_engine::backend::{f32s, Staging};
    for (ci, &b) in [1usize, 97, 1025].iter().enumerate() {
        let mut rng = twin_engine::rng::SplitMix64::new(140 + ci as u64);
        let logits = randn(&mut rng, b, 4.0);
        let labels: Vec<f32> = (0..b).map(|_| rng.below(2) as f32).collect();
        let (want_loss, want_d) = gpu.bce(&logits, &labels).unwrap();
        let mut st = Staging::new();
        let ys = st.f32s("labels", &labels).unwrap();
        let staged = gpu.upload_staging(st).unwrap();
        let lt = gpu.tensor_f32("logits", b, 1, &logits).unwrap();
        let o = gpu.bce_dev(&lt, &ys, &staged).unwrap();
        let got = gpu.tensor_read(&[&o.loss, &o.dlogit]).unwrap();
        assert_eq!(o.loss_of(&got[0]).to_bits(), want_loss.to_bits(), "bce_dev B={b}: loss");
        assert_eq!(crate::attn::bits(&f32s(&got[1])), crate::attn::bits(&want_d), "bce_dev B={b}: dlogit");
    }
    let mut st = Staging::new();
    assert!(st.f32s("labels", &[0.0, f32::NAN]).is_err(), "a NaN label is refused when staged");
    let ys = st.f32s("labels", &[1.0, 0.0]).unwrap();
    let staged = gpu.upload_staging(st).unwrap();
    let lt = gpu.tensor_f32("logits", 3, 1, &[0.0; 3]).unwrap();
    assert!(gpu.bce_dev(&lt, &ys, &staged).is_err(), "3 logits, 2 labels");
});
