//! wgpu's buffer pool: device tensors take their buffers from the backend's pool and give them
//! back when dropped. Repeated device ops reuse buffers (hits grow, misses do not), and a reused
//! buffer that held non-zero data reads back as zeros from `tensor_zeros` (and from a gemm with
//! k = 0, whose product is zeros). With and without output poisoning, which pooled outputs
//! redo on every reuse.

use twin_engine::backend::{words, DeviceOps, Elem, GemmKind};

use crate::common::*;

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_pool_reuses_buffers_and_zeroes_them() {
    use twin_engine::backend::wgpu::{WgpuBackend, WgpuOptions};
    if !wanted("wgpu") {
        eprintln!("skipped: TWIN_PARITY_ONLY leaves wgpu out");
        return;
    }
    for poison in [true, false] {
        let mut o = WgpuOptions::from_env(true).expect("TWIN_GSU/TWIN_ESU/TWIN_KMEANS");
        o.poison_outputs = poison;
        let be = match WgpuBackend::with_options(o) {
            Ok(b) => b,
            Err(e) if std::env::var("CI").is_err() => {
                eprintln!("skipped: wgpu unavailable: {e}");
                return;
            }
            Err(e) => panic!("parity: CI is set and the wgpu backend could not start: {e}"),
        };
        let (m, k, n) = (13usize, 7usize, 11usize);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 3) as f32 + 0.5).collect();
        let at = be.tensor_f32("a", m, k, &a).unwrap();
        let bt = be.tensor_f32("b", k, n, &b).unwrap();
        let first = be.gemm_dev(GemmKind::NN, &at, &bt, m, k, n).unwrap();
        let want = be.tensor_read(&[&first]).unwrap().remove(0);
        drop(first);
        let s1 = be.pool_stats();
        for i in 0..10 {
            let out = be.gemm_dev(GemmKind::NN, &at, &bt, m, k, n).unwrap();
            assert_eq!(be.tensor_read(&[&out]).unwrap()[0], want, "poison {poison}: gemm {i} on a reused buffer");
        }
        let s2 = be.pool_stats();
        assert_eq!(s2.misses, s1.misses, "poison {poison}: repeated gemms created buffers: {s1:?} -> {s2:?}");
        assert!(s2.hits >= s1.hits + 10, "poison {poison}: repeated gemms did not reuse buffers: {s1:?} -> {s2:?}");
        assert!(s2.kept_buffers >= 1 && s2.kept_bytes >= 256, "{s2:?}");

        // A size class no other buffer here has (4,500..5,000 words: 32 KiB): fill it, drop it,
        // and take it back as zeros.
        let junk: Vec<f32> = (0..5000).map(|i| 1.0 + i as f32).collect();
        drop(be.tensor_f32("junk", 50, 100, &junk).unwrap());
        let s3 = be.pool_stats();
        let z = be.tensor_zeros("zeros", 45, 100, Elem::F32).unwrap();
        let s4 = be.pool_stats();
        assert_eq!((s4.hits, s4.misses), (s3.hits + 1, s3.misses), "poison {poison}: tensor_zeros did not reuse: {s3:?} -> {s4:?}");
        assert!(be.tensor_read(&[&z]).unwrap()[0].iter().all(|&w| w == 0), "poison {poison}: a reused tensor_zeros is not zero");
        drop(z);

        // gemm with k = 0 on the same (dirty again) class: zeros, not the last owner's data.
        drop(be.tensor_f32("junk", 50, 100, &junk).unwrap());
        let e0 = be.tensor_f32("empty a", 60, 0, &[]).unwrap();
        let e1 = be.tensor_f32("empty b", 0, 80, &[]).unwrap();
        let s5 = be.pool_stats();
        let g = be.gemm_dev(GemmKind::NN, &e0, &e1, 60, 0, 80).unwrap();
        assert_eq!(be.pool_stats().misses, s5.misses, "poison {poison}: gemm k=0 did not reuse the 32 KiB buffer");
        assert_eq!(be.tensor_read(&[&g]).unwrap()[0], words(&vec![0.0; 60 * 80]), "poison {poison}: gemm k=0 is not zero");
    }
}
