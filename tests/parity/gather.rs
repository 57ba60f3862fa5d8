//! gather: rows by id, f32 and f16 tables, bit-exact (widening f16 is exact).

use twin_engine::backend::{DType, HostTable};
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::common::*;
use crate::parity_test;
use crate::split_test;

fn ids(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    // Include both ends of the table and repeats.
    (0..n)
        .map(|i| match i % 11 {
            0 => 0,
            1 => N_ITEMS as u32 - 1,
            _ => rng.below(N_ITEMS as u64) as u32,
        })
        .collect()
}

parity_test!(gather_matches_cpu_f32_f16, |gpu, cpu| {
    for dtype in [DType::F32, DType::F16] {
        let t = Tables::new(11, dtype);
        let (tg, tc) = (gpu.upload_table("p_k", &t.host_pk).unwrap(), cpu.upload_table("p_k", &t.host_pk).unwrap());
        for (i, n) in [1usize, 97, 100, 101, 1025, 3 * 1025].into_iter().enumerate() {
            let id = ids(n, 100 + i as u64);
            let got = gpu.gather(&tg, &id).unwrap();
            let want = cpu.gather(&tc, &id).unwrap();
            assert!(got.iter().all(|x| !x.is_nan()), "unwritten output");
            assert_eq!(got, want, "{dtype:?} N={n}");
        }
        assert!(gpu.gather(&tg, &[]).unwrap().is_empty());
    }
});

split_test!(gather_split_tables_and_outputs, |u, cpu| {
    for dtype in [DType::F32, DType::F16] {
        let t = Tables::new(12, dtype);
        let (tg, tc) = (u.be.upload_table("p_v", &t.host_pv).unwrap(), cpu.upload_table("p_v", &t.host_pv).unwrap());
        // 4100 ids × 512 B = 2 MiB of output: 32 output groups × (2.5 MiB table / 64 KiB) chunks.
        let id = ids(4100, 7);
        assert_eq!(u.be.gather(&tg, &id).unwrap(), cpu.gather(&tc, &id).unwrap(), "{dtype:?}");
    }
    // A table whose row count is odd in f16 halves.
    let odd = HostTable::f32(1001, 3, (0..3003).map(|i| i as f32 * 0.5 - 700.0).collect()).unwrap().to_f16();
    let (og, oc) = (u.be.upload_table("odd", &odd).unwrap(), cpu.upload_table("odd", &odd).unwrap());
    let id: Vec<u32> = (0..1001).rev().collect();
    assert_eq!(u.be.gather(&og, &id).unwrap(), cpu.gather(&oc, &id).unwrap());
});

parity_test!(gather_errors_match_cpu, |gpu, cpu| {
    let t = Tables::new(13, DType::F32);
    let tg = gpu.upload_table("p_k", &t.host_pk).unwrap();
    let tc = cpu.upload_table("p_k", &t.host_pk).unwrap();
    let bad = [3u32, N_ITEMS as u32];
    match (gpu.gather(&tg, &bad), cpu.gather(&tc, &bad)) {
        (Err(Error::OutOfRange { index: a, .. }), Err(Error::OutOfRange { index: b, .. })) => assert_eq!(a, b),
        (g, c) => panic!("expected OutOfRange on both: {:?} / {:?}", g.err(), c.err()),
    }
    // A table from another backend is refused.
    assert!(matches!(gpu.gather(&tc, &[0]), Err(Error::ForeignTable { .. })));
    // Non-finite tables are refused at upload, f32 and f16.
    let mut v = vec![0f32; 8];
    v[5] = f32::NAN;
    let nan = HostTable::f32(2, 4, v).unwrap();
    for h in [nan.clone(), nan.to_f16()] {
        match (gpu.upload_table("nan", &h), cpu.upload_table("nan", &h)) {
            (Err(Error::NonFinite { index: a, .. }), Err(Error::NonFinite { index: b, .. })) => assert_eq!((a, b), (5, 5)),
            (g, c) => panic!("expected NonFinite: {:?} / {:?}", g.err(), c.err()),
        }
    }
});
