//! gemm (dense f32 GEMM, `NN` / `NT` / `TN`) against the CPU reference (matrixmultiply).
//!
//! Inputs are Normal(0, 1) with outliers (every 97th value ±50, so single products of 2,500).
//! Shapes take m, n, k from 1, 7, 97 and 1025 (never tile multiples), tile edges (63, 64, 65),
//! the training shapes (512 x 408 x 256, 76,800 x 144 x 128, TN with k = 76,800) and k past one
//! WGSL dispatch (16,384: several chunks), and shapes CUDA splits along k (few output tiles, k of
//! 4,099 and 40,000: partial sums added in split order). Both sides sum in f32 in different orders, so the
//! tolerance scales with Σ_p |a||b| (the reference on absolute values) and √k:
//! |err| <= 1e-6 + 5e-7·√k·Σ|terms|. Every run is also compared with a second run bit for bit.

use twin_engine::backend::{Backend, GemmKind};
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::attn::bits;
use crate::common::*;
use crate::parity_test;
use crate::split_test;

const KINDS: [GemmKind; 3] = [GemmKind::NN, GemmKind::NT, GemmKind::TN];

/// Random `a`, `b` for `kind` with the given (m, k, n); lengths m*k and k*n for every kind.
fn operands(m: usize, k: usize, n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    (randn(&mut rng, m * k, 1.0), randn(&mut rng, k * n, 1.0))
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// (m, k, n): small odd shapes, tile edges, the MLP shape, long k.
fn shapes() -> Vec<(usize, usize, usize)> {
    vec![
        (1, 1, 1),
        (1, 7, 97),
        (7, 1, 1025),
        (97, 1025, 7),
        (1025, 97, 1),
        (7, 97, 1025),
        (1025, 7, 97),
        (63, 17, 65),
        (64, 16, 64),
        (65, 15, 63),
        (129, 33, 130),
        (512, 408, 256),
        (512, 64, 1),
        (70, 40_000, 33),
        // Split k on CUDA (few output tiles, long k): four splits, the last one partial.
        (33, 4099, 65),
    ]
}

fn check(what: &str, gpu: &dyn Backend, cpu: &dyn Backend, kind: GemmKind, (m, k, n): (usize, usize, usize), seed: u64) {
    let (a, b) = operands(m, k, n, seed);
    let got = gpu.gemm(kind, &a, &b, m, k, n).unwrap();
    let want = cpu.gemm(kind, &a, &b, m, k, n).unwrap();
    let mag = cpu.gemm(kind, &abs(&a), &abs(&b), m, k, n).unwrap();
    let s = 5e-7 * (k as f32).sqrt();
    assert_close(&format!("{what} {kind:?} m{m} k{k} n{n}"), &got, &want, |i| 1e-6 + s * mag[i], 0.0);
    let again = gpu.gemm(kind, &a, &b, m, k, n).unwrap();
    assert_eq!(bits(&got), bits(&again), "{what} {kind:?} m{m} k{k} n{n}: differs run to run");
}

parity_test!(gemm_matches_cpu, |gpu, cpu| {
    for (si, &(m, k, n)) in shapes().iter().enumerate() {
        for (ki, &kind) in KINDS.iter().enumerate() {
            check("gemm", &*gpu, &*cpu, kind, (m, k, n), 1000 + (si * 3 + ki) as u64);
        }
    }
});

// The training's projection GEMMs: 76,800 behaviour rows x 144 -> 128, and the weight gradient
// as TN with k = 76,800 (five WGSL dispatches of 16,384).
parity_test!(gemm_training_shapes_match_cpu, |gpu, cpu| {
    if !keep_len(76_800) {
        eprintln!("skipped under TWIN_PARITY_SMALL: the training shapes have 76,800 rows");
        return;
    }
    check("gemm train", &*gpu, &*cpu, GemmKind::NN, (76_800, 144, 128), 2000);
    check("gemm train", &*gpu, &*cpu, GemmKind::NT, (76_800, 128, 144), 2001);
    check("gemm train", &*gpu, &*cpu, GemmKind::TN, (144, 76_800, 128), 2002);
});

// k = 0 gives zeros (no dispatch: nothing poisoned leaks out), m = 0 or n = 0 an empty result.
parity_test!(gemm_degenerate_shapes, |gpu, cpu| {
    let run = |be: &dyn Backend| {
        for kind in KINDS {
            assert_eq!(be.gemm(kind, &[], &[], 3, 0, 5).unwrap(), vec![0.0; 15]);
            assert!(be.gemm(kind, &[], &[1.0; 4], 0, 4, 1).unwrap().is_empty());
            assert!(be.gemm(kind, &[1.0; 4], &[], 1, 4, 0).unwrap().is_empty());
        }
    };
    run(&*cpu);
    run(&*gpu);
});

// wgpu with a 64 KiB storage-binding cap: every kind runs in groups of output rows, TN also in
// slices of k; the results equal the unsplit backend bit for bit (same additions in the same
// order). A buffer that cannot be cut (b for NN, one row of out) is a typed error naming it.
split_test!(gemm_split, |u, whole, cpu| {
    for (i, &(m, k, n)) in [(1000usize, 40usize, 30usize), (300, 130, 50), (20, 3000, 17), (700, 60, 25)].iter().enumerate() {
        for kind in KINDS {
            if kind != GemmKind::TN && k * n * 4 > 64 << 10 {
                continue; // b must bind whole for NN / NT (checked below)
            }
            let (a, b) = operands(m, k, n, 3000 + i as u64);
            let got = u.be.gemm(kind, &a, &b, m, k, n).unwrap();
            let one = whole.gemm(kind, &a, &b, m, k, n).unwrap();
            assert_eq!(bits(&got), bits(&one), "{} {kind:?} m{m} k{k} n{n}: split differs from unsplit", u.label);
            let want = cpu.gemm(kind, &a, &b, m, k, n).unwrap();
            let mag = cpu.gemm(kind, &abs(&a), &abs(&b), m, k, n).unwrap();
            let s = 5e-7 * (k as f32).sqrt();
            assert_close(&format!("gemm split {kind:?} m{m} k{k} n{n} [{}]", u.label), &got, &want, |i| 1e-6 + s * mag[i], 0.0);
        }
    }
    let (a, b) = operands(10, 200, 100, 3100); // b: 80 KB > 64 KiB
    match u.be.gemm(GemmKind::NN, &a, &b, 10, 200, 100) {
        Err(Error::TooLarge { field, .. }) => assert!(field.contains('b'), "{field}"),
        other => panic!("{}: expected TooLarge for b, got {:?}", u.label, other.map(|v| v.len())),
    }
    let (a, b) = operands(2, 3, 20_000, 3101); // one row of out: 80 KB > 64 KiB
    match u.be.gemm(GemmKind::TN, &a, &b, 2, 3, 20_000) {
        Err(Error::TooLarge { field, .. }) => assert!(field.contains("out row"), "{field}"),
        other => panic!("{}: expected TooLarge for an out row, got {:?}", u.label, other.map(|v| v.len())),
    }
});

parity_test!(gemm_errors_are_typed, |gpu, cpu| {
    let check = |be: &dyn Backend| {
        let (a, b) = operands(5, 4, 3, 4000);
        for kind in KINDS {
            assert!(matches!(be.gemm(kind, &a[1..], &b, 5, 4, 3), Err(Error::LengthMismatch { field: "a", .. })));
            assert!(matches!(be.gemm(kind, &a, &b[..11], 5, 4, 3), Err(Error::LengthMismatch { field: "b", .. })));
            let mut bn = b.clone();
            bn[7] = f32::NAN;
            assert!(matches!(be.gemm(kind, &a, &bn, 5, 4, 3), Err(Error::NonFinite { field: "b", index: 7, .. })));
            let mut an = a.clone();
            an[19] = f32::INFINITY;
            assert!(matches!(be.gemm(kind, &an, &b, 5, 4, 3), Err(Error::NonFinite { field: "a", index: 19, .. })));
            assert!(matches!(be.gemm(kind, &[], &[], 1 << 20, 1 << 13, 1), Err(Error::TooLarge { field: "m * k", .. })));
            assert!(matches!(be.gemm(kind, &[], &[], usize::MAX, 2, 1), Err(Error::TooLarge { .. })));
        }
    };
    check(&*cpu);
    check(&*gpu);
});
