//! The CTR head (`net::mlp`), written once over `Dense`: forward and backward on a backend's
//! device tensors against the same code on host slices through the CPU reference. Also the
//! kernel it adds, `bias_act_bwd` (ReLU mask + bias gradient), bit for bit. The GEMMs reduce in
//! another order than the reference's (and a ReLU whose input rounds across zero masks another
//! gradient), so outputs and gradients agree within 1e-4·|ref| + 2e-4·max|ref| per tensor: a
//! transposed or misplaced operand would miss by the tensor's own scale.

use twin_engine::backend::cpu::bias_act::bias_act_bwd;
use twin_engine::backend::{f32s, words, Act};
use twin_engine::net::mlp::{self, DeviceDense, HostDense};
use twin_engine::net::CpuOps;
use twin_engine::rng::SplitMix64;

use crate::common::*;
use crate::parity_test;

parity_test!(bias_act_bwd_matches_cpu_bit_for_bit, |gpu, _cpu| {
    for (si, &(m, n)) in [(1usize, 1usize), (97, 3), (1025, 130), (512, 256)].iter().enumerate() {
        for act in [Act::None, Act::Relu] {
            let mut rng = SplitMix64::new(110 + si as u64);
            let dy = randn(&mut rng, m * n, 1.0);
            let y: Vec<f32> = randn(&mut rng, m * n, 1.0).iter().map(|&v| if v < 0.0 { 0.0 } else { v }).collect();
            let mut want_dy = dy.clone();
            let want_db = bias_act_bwd(&mut want_dy, &y, n, act);
            let (dyt, yt) = (gpu.tensor_f32("dy", m, n, &dy).unwrap(), gpu.tensor_f32("y", m, n, &y).unwrap());
            let dbt = gpu.bias_act_bwd(&dyt, &yt, act).unwrap();
            let got = gpu.tensor_read(&[&dyt, &dbt]).unwrap();
            assert_eq!(got[0], words(&want_dy), "bias_act_bwd {act:?} {m}x{n}: dy");
            assert_eq!(got[1], words(&want_db), "bias_act_bwd {act:?} {m}x{n}: db");
        }
    }
    let t = gpu.tensor_f32("t", 2, 2, &[1.0; 4]).unwrap();
    assert!(gpu.bias_act_bwd(&t, &t, Act::Relu).is_err(), "dy and y the same tensor");
    let y = gpu.tensor_f32("y", 2, 2, &[1.0; 4]).unwrap();
    assert!(gpu.bias_act_bwd(&t, &y, Act::Sigmoid).is_err(), "σ is not differentiated");
});

parity_test!(mlp_forward_and_backward_on_device_match_the_host, |gpu, _cpu| {
    // The model's head at B = 97 (off the 64-row tiles): 408 -> 256 -> 128 -> 64 -> 1.
    let (bn, widths) = (97usize, mlp::widths(408, &[256, 128, 64]));
    let mut rng = SplitMix64::new(120);
    let params: Vec<(Vec<f32>, Vec<f32>)> = (0..widths.len() - 1)
        .map(|i| (randn(&mut rng, widths[i] * widths[i + 1], (1.0 / widths[i] as f64).sqrt()), randn(&mut rng, widths[i + 1], 0.1)))
        .collect();
    let z = randn(&mut rng, bn * widths[0], 1.0);
    let dlogit = randn(&mut rng, bn, 0.1);
    let host = HostDense::new(&CpuOps);
    let layers: Vec<(&[f32], &[f32])> = params.iter().map(|(w, b)| (&w[..], &b[..])).collect();
    let acts = mlp::forward(&host, &layers, z.clone(), bn, &widths, Act::None).unwrap();
    let ws: Vec<&[f32]> = params.iter().map(|(w, _)| &w[..]).collect();
    let (grads, dz) = mlp::backward(&host, &ws, &acts, dlogit.clone(), bn, &widths).unwrap();
    let tol = |r: &[f32]| -> Vec<f32> {
        let max = r.iter().fold(0f32, |m, x| m.max(x.abs()));
        r.iter().map(|x| 1e-7 + 1e-4 * x.abs() + 2e-4 * max).collect()
    };
    let dev = DeviceDense(&*gpu);
    let tensors: Vec<_> = params
        .iter()
        .enumerate()
        .map(|(i, (w, b))| (gpu.tensor_f32("w", widths[i], widths[i + 1], w).unwrap(), gpu.tensor_f32("b", 1, widths[i + 1], b).unwrap()))
        .collect();
    let tl: Vec<_> = tensors.iter().map(|(w, b)| (w, b)).collect();
    let zt = gpu.tensor_f32("z", bn, widths[0], &z).unwrap();
    let dacts = mlp::forward(&dev, &tl, zt, bn, &widths, Act::None).unwrap();
    let dws: Vec<_> = tensors.iter().map(|(w, _)| w).collect();
    let dl = gpu.tensor_f32("dlogit", bn, 1, &dlogit).unwrap();
    let (dgrads, ddz) = mlp::backward(&dev, &dws, &dacts, dl, bn, &widths).unwrap();
    let logits = f32s(&gpu.tensor_read(&[dacts.last().unwrap()]).unwrap()[0]);
    let want = acts.last().unwrap();
    let t = tol(want);
    assert_close("mlp logits", &logits, want, |i| t[i], 0.0);
    for (i, ((dw, db), (gw, gb))) in dgrads.iter().zip(&grads).enumerate() {
        let got = gpu.tensor_read(&[dw, db]).unwrap();
        let (tw, tb) = (tol(gw), tol(gb));
        assert_close(&format!("mlp dW{i}"), &f32s(&got[0]), gw, |j| tw[j], 0.0);
        assert_close(&format!("mlp db{i}"), &f32s(&got[1]), gb, |j| tb[j], 0.0);
    }
    let t = tol(&dz);
    assert_close("mlp dz", &f32s(&gpu.tensor_read(&[&ddz]).unwrap()[0]), &dz, |i| t[i], 0.0);
});
