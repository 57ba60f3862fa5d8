//! bias_act (the MLP's bias + activation, in place): none and ReLU are one f32 add, so every
//! backend must match the CPU reference bit for bit; σ is computed in f64 and rounded, where a
//! device's `exp` may differ from the host's libm in the last bit: allowed 1 ulp of the f32 on
//! CUDA. WGSL has no f64, so wgpu evaluates σ in f32: allowed 1e-7 + 1e-5 |σ|.
//! Shapes 1x1, 97x3, 1025x130, 100,003x1 (the MLP's last layer), inputs with ±50 outliers.

use twin_engine::backend::cpu::bias_act::bias_act;
use twin_engine::backend::{words, Act};
use twin_engine::rng::SplitMix64;

use crate::common::*;
use crate::parity_test;

parity_test!(bias_act_matches_cpu, |gpu, _cpu| {
    let mut shapes = vec![(1usize, 1usize), (97, 3), (1025, 130), (64, 256)];
    if !small() {
        shapes.push((100_003, 1));
    }
    for (si, &(m, n)) in shapes.iter().enumerate() {
        for act in [Act::None, Act::Relu, Act::Sigmoid] {
            let mut rng = SplitMix64::new(70 + si as u64);
            let x = randn(&mut rng, m * n, 3.0);
            let b = randn(&mut rng, n, 1.0);
            let mut want = x.clone();
            bias_act(&mut want, &b, act);
            let xt = gpu.tensor_f32("x", m, n, &x).unwrap();
            let bt = gpu.tensor_f32("bias", 1, n, &b).unwrap();
            gpu.bias_act(&xt, &bt, act).unwrap();
            let got = gpu.tensor_read(&[&xt]).unwrap().remove(0);
            let want = words(&want);
            let f32_sigmoid = act == Act::Sigmoid && gpu.kind() == twin_engine::backend::BackendKind::Wgpu;
            for i in 0..got.len() {
                let ulps = (got[i] as i64 - want[i] as i64).unsigned_abs();
                let allowed = if act == Act::Sigmoid { 1 } else { 0 };
                let ok = if f32_sigmoid { close(f32::from_bits(got[i]), f32::from_bits(want[i]), 1e-7, 1e-5) } else { ulps <= allowed };
                assert!(
                    ok,
                    "bias_act {act:?} {m}x{n} [{i}]: got {} ({:#010x}), want {} ({:#010x})",
                    f32::from_bits(got[i]),
                    got[i],
                    f32::from_bits(want[i]),
                    want[i]
                );
            }
        }
    }
    // Shapes are checked: a bias of the wrong width is refused.
    let xt = gpu.tensor_f32("x", 2, 3, &[0.0; 6]).unwrap();
    let bt = gpu.tensor_f32("bias", 1, 2, &[0.0; 2]).unwrap();
    assert!(gpu.bias_act(&xt, &bt, Act::Relu).is_err());
});
