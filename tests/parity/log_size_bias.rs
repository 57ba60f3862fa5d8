//! log_size_bias: `bias + ln n`. GPU `log` is f32 (Vulkan: ≤ 3 ulp, or 2^-21 absolute near 1),
//! the CPU rounds an f64 ln: tolerance 4e-6 absolute + 1e-6 relative.

use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::common::*;
use crate::parity_test;
use crate::split_test;

fn inputs(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    let bias = randn(&mut rng, n * H, 1.0);
    let sizes = (0..n)
        .map(|i| match i % 5 {
            0 => 1.0,
            1 => 1.0 + rng.below(19) as f32,
            2 => 1.0 + rng.next_f64() as f32 * 1e6,
            _ => 1.0 + rng.next_f64() as f32 * 3.0,
        })
        .collect();
    (bias, sizes)
}

parity_test!(log_size_bias_matches_cpu, |gpu, cpu| {
    for (i, n) in [1usize, 97, 100, 101, 1025, 100_003].into_iter().filter(|&n| keep_len(n)).enumerate() {
        let (bias, sizes) = inputs(n, 40 + i as u64);
        let got = gpu.log_size_bias(&bias, &sizes, H).unwrap();
        let want = cpu.log_size_bias(&bias, &sizes, H).unwrap();
        assert_close(&format!("log_size_bias N={n}"), &got, &want, |_| 4e-6, 1e-6);
    }
});

split_test!(log_size_bias_split, |u, cpu| {
    let (bias, sizes) = inputs(9000, 3);
    let got = u.be.log_size_bias(&bias, &sizes, H).unwrap();
    assert_close("log_size_bias split", &got, &cpu.log_size_bias(&bias, &sizes, H).unwrap(), |_| 4e-6, 1e-6);
});

parity_test!(log_size_bias_errors_match_cpu, |gpu, cpu| {
    let (mut bias, mut sizes) = inputs(10, 1);
    sizes[7] = 0.5;
    for be in [&gpu, &cpu] {
        assert!(matches!(be.log_size_bias(&bias, &sizes, H), Err(Error::InvalidValue { field: "sizes", index: 7, .. })));
    }
    sizes[7] = 1.0;
    bias[9] = f32::INFINITY;
    for be in [&gpu, &cpu] {
        assert!(matches!(be.log_size_bias(&bias, &sizes, H), Err(Error::NonFinite { field: "bias", index: 9, .. })));
        assert!(matches!(be.log_size_bias(&bias[..8], &sizes, H), Err(Error::LengthMismatch { .. })));
    }
});
