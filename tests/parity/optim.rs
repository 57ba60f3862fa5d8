//! optim (Adam on dense tensors, row-sparse Adagrad on embedding rows, in place on device
//! tensors) against the CPU reference `cpu::optim`, which `train::Optimizer` runs: bit for bit
//! on CUDA (IEEE division and square root, no contraction); within 1e-6 + 1e-6·|w| on wgpu,
//! whose division and square root WGSL does not promise correctly rounded. Three steps in a row
//! (the state carries over), shapes 1 to 100,003 elements, rows not touched stay bit-identical.

use twin_engine::backend::cpu::optim::{adagrad_rows, adam, AdamStep};
use twin_engine::backend::{f32s, words, Backend, BackendKind, Staging};
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::common::*;
use crate::parity_test;

fn step(t: u64) -> AdamStep {
    let (b1, b2) = (0.9f32, 0.999f32);
    AdamStep {
        lr: 1e-3,
        beta1: b1,
        beta2: b2,
        eps: 1e-8,
        bc1: (1.0 - (b1 as f64).powf(t as f64)) as f32,
        bc2: (1.0 - (b2 as f64).powf(t as f64)) as f32,
    }
}

fn compare(gpu: &dyn Backend, what: &str, got: &[f32], want: &[f32]) {
    if gpu.kind() == BackendKind::Wgpu {
        assert_close(what, got, want, |_| 1e-6, 1e-6);
    } else if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}[{i}]: got {} ({:#010x}), want {} ({:#010x})", got[i], got[i].to_bits(), want[i], want[i].to_bits());
    }
}

parity_test!(adam_matches_cpu, |gpu, _cpu| {
    let mut shapes = vec![(1usize, 1usize), (97, 1), (1025, 64), (144, 128)];
    if !small() {
        shapes.push((100_003, 1));
    }
    for &(r, c) in &shapes {
        let n = r * c;
        let mut rng = SplitMix64::new(90 + n as u64);
        let mut w = randn(&mut rng, n, 1.0);
        let mut m = randn(&mut rng, n, 0.01);
        let mut v: Vec<f32> = randn(&mut rng, n, 0.01).iter().map(|x| x * x).collect();
        let (wt, mt, vt) =
            (gpu.tensor_f32("w", r, c, &w).unwrap(), gpu.tensor_f32("m", r, c, &m).unwrap(), gpu.tensor_f32("v", r, c, &v).unwrap());
        for t in 1..=3 {
            let g = randn(&mut rng, n, 0.5);
            let gt = gpu.tensor_f32("g", r, c, &g).unwrap();
            adam(&mut w, &g, &mut m, &mut v, &step(t));
            gpu.adam(&wt, &gt, &mt, &vt, &step(t)).unwrap();
        }
        let got = gpu.tensor_read(&[&wt, &mt, &vt]).unwrap();
        compare(&*gpu, &format!("adam w {r}x{c}"), &f32s(&got[0]), &w);
        compare(&*gpu, &format!("adam m {r}x{c}"), &f32s(&got[1]), &m);
        compare(&*gpu, &format!("adam v {r}x{c}"), &f32s(&got[2]), &v);
    }
    // The same tensor twice is refused (the update would race with itself).
    let a = gpu.tensor_f32("a", 2, 2, &[0.0; 4]).unwrap();
    let b = gpu.tensor_f32("b", 2, 2, &[0.0; 4]).unwrap();
    assert!(matches!(gpu.adam(&a, &b, &b, &a, &step(1)), Err(Error::Aliased { .. })));
});

parity_test!(adagrad_rows_matches_cpu, |gpu, _cpu| {
    let mut cases = vec![(1usize, 1usize, 1usize), (97, 8, 40), (1025, 64, 1025), (5000, 64, 97)];
    if !small() {
        cases.push((100_003, 8, 20_000));
    }
    for &(r, c, k) in &cases {
        let mut rng = SplitMix64::new(95 + r as u64);
        let mut w = randn(&mut rng, r * c, 1.0);
        let mut acc: Vec<f32> = vec![0.1; r * c];
        let mut rows: Vec<u32> = (0..r as u32).filter(|_| rng.below(r as u64) < k as u64).collect();
        if rows.is_empty() {
            rows.push(0);
        }
        let (wt, at) = (gpu.tensor_f32("w", r, c, &w).unwrap(), gpu.tensor_f32("acc", r, c, &acc).unwrap());
        for _ in 0..3 {
            let g = randn(&mut rng, rows.len() * c, 0.5);
            let mut st = Staging::new();
            let slot = st.rows("rows", &rows, r).unwrap();
            let staged = gpu.upload_staging(st).unwrap();
            let gt = gpu.tensor_f32("g", rows.len(), c, &g).unwrap();
            adagrad_rows(&mut w, &mut acc, c, &rows, &g, 0.05, 1e-8);
            gpu.adagrad_rows(&wt, &at, &slot, &gt, &staged, 0.05, 1e-8).unwrap();
        }
        let got = gpu.tensor_read(&[&wt, &at]).unwrap();
        compare(&*gpu, &format!("adagrad w {r}x{c} ({} rows)", rows.len()), &f32s(&got[0]), &w);
        compare(&*gpu, &format!("adagrad acc {r}x{c}"), &f32s(&got[1]), &acc);
        // Rows outside the list are untouched, bit for bit, on every backend.
        let untouched = (0..r as u32).find(|i| rows.binary_search(i).is_err());
        if let Some(u) = untouched {
            let u = u as usize;
            assert_eq!(&got[0][u * c..(u + 1) * c], &words(&w[u * c..(u + 1) * c])[..], "row {u} changed");
        }
    }
    // Rows must be staged ascending (distinct), below the table.
    let mut st = Staging::new();
    assert!(matches!(st.rows("rows", &[3, 3], 10), Err(Error::InvalidValue { field: "rows", index: 1, .. })));
    assert!(matches!(st.rows("rows", &[1, 10], 10), Err(Error::OutOfRange { field: "rows", index: 1, value: 10, limit: 10 })));
    let ids = st.ids("ids", &[1, 2], 10).unwrap();
    let staged = gpu.upload_staging(st).unwrap();
    let w = gpu.tensor_f32("w", 10, 2, &[0.0; 20]).unwrap();
    let a = gpu.tensor_f32("a", 10, 2, &[0.1; 20]).unwrap();
    let g = gpu.tensor_f32("g", 2, 2, &[1.0; 4]).unwrap();
    // Ids staged with Staging::ids may repeat: refused for an in-place row update.
    assert!(gpu.adagrad_rows(&w, &a, &ids, &g, &staged, 0.05, 1e-8).is_err());
});
