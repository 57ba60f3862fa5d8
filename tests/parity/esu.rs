//! esu and the whole online path. ESU is compared elementwise given the same finalists; the
//! GPU accumulates logits, softmax sums, pooling and · W^o in f32 (CPU f64). Outputs are
//! O(1..100) with ±50 outliers in P_Q/P_K, so single q·k products reach 2500 and the f32 logits
//! carry ~1e-3 absolute error that exp() turns into relative error of the weights: tolerance
//! 2e-3·max|row| + 1e-3 relative, per candidate row.

use twin_engine::backend::{DType, OnlineRequests, TopK, TOP_K};
use twin_engine::Error;

use crate::common::*;
use crate::for_each_backend;
use crate::gsu_topk::{batches, bias_for, check};

fn row_scale(want: &[f32]) -> Vec<f32> {
    want.chunks(D).map(|r| r.iter().fold(0f32, |m, x| m.max(x.abs()))).collect()
}

fn assert_rows(what: &str, got: &[f32], want: &[f32]) {
    let s = row_scale(want);
    assert_close(what, got, want, |i| 2e-3 * s[i / D] + 1e-4, 1e-3);
}

#[test]
fn esu_matches_cpu() {
    for_each_backend!(|gpu, cpu| {
        for dtype in [DType::F32, DType::F16] {
            let t = Tables::new(41, dtype);
            let (tg, tc) = (t.upload(&*gpu), t.upload(&*cpu));
            for (i, (name, shapes)) in batches().into_iter().enumerate() {
                if skip_long_on(&*gpu, shapes.iter().map(|s| s.0).max().unwrap_or(0)) {
                    continue;
                }
                let req = requests(&shapes, 400 + i as u64);
                let bias = bias_for(&*cpu, &tc, &req);
                let topk = cpu.gsu_topk(&tc, &req.as_batch(), &bias, TOP_K).unwrap();
                let got = gpu.esu(&tg, &req.as_batch(), &bias, &topk).unwrap();
                let want = cpu.esu(&tc, &req.as_batch(), &bias, &topk).unwrap();
                assert_rows(&format!("esu {dtype:?} {name}"), &got, &want);
            }
        }
    });
}

#[test]
fn online_matches_cpu() {
    for_each_backend!(|gpu, cpu| {
        for dtype in [DType::F32, DType::F16] {
            let t = Tables::new(42, dtype);
            let (tg, tc) = (t.upload(&*gpu), t.upload(&*cpu));
            for (i, (name, shapes)) in batches().into_iter().enumerate() {
                if skip_long_on(&*gpu, shapes.iter().map(|s| s.0).max().unwrap_or(0)) {
                    continue;
                }
                let req = requests(&shapes, 500 + i as u64);
                let got = gpu.online(&tg, &req.as_batch(), TOP_K).unwrap();
                let want = cpu.online(&tc, &req.as_batch(), TOP_K).unwrap();
                let bias = bias_for(&*cpu, &tc, &req);
                check(&format!("online topk {dtype:?} {name}"), &t, &req, &bias, &got.topk, &want.topk);
                // ESU output against the reference on the GPU's own finalists.
                let want_out = cpu.esu(&tc, &req.as_batch(), &bias, &got.topk).unwrap();
                assert_rows(&format!("online out {dtype:?} {name}"), &got.out, &want_out);
            }
        }
    });
}

#[test]
fn online_independent_of_batch() {
    for_each_backend!(|gpu, cpu| {
        let _ = &cpu;
        let t = Tables::new(43, DType::F32);
        let tg = t.upload(&*gpu);
        let req = requests(&[(101, 3), (1025, 4), (97, 0), (1, 2)], 44);
        let all = gpu.online(&tg, &req.as_batch(), TOP_K).unwrap();
        let b = req.as_batch();
        for r in [1usize, 3] {
            let (s, c) = (b.seq_range(r), b.cand_range(r));
            let mut one = OnlineRequests::new();
            one.push(&req.items[s.clone()], &req.cross[s.start * 3..s.end * 3], &req.sizes[s.clone()], &req.cands[c.clone()]);
            let alone = gpu.online(&tg, &one.as_batch(), TOP_K).unwrap();
            assert_eq!(alone.topk.idx[..], all.topk.idx[c.start * TOP_K..c.end * TOP_K]);
            assert_eq!(alone.out[..], all.out[c.start * D..c.end * D]);
        }
    });
}

#[test]
fn esu_errors_match_cpu() {
    for_each_backend!(|gpu, cpu| {
        let t = Tables::new(45, DType::F32);
        let (tg, tc) = (t.upload(&*gpu), t.upload(&*cpu));
        let req = requests(&[(20, 2)], 46);
        let bias = bias_for(&*cpu, &tc, &req);
        let mut topk = cpu.gsu_topk(&tc, &req.as_batch(), &bias, 5).unwrap();
        topk.idx[3] = 20;
        for (be, tabs) in [(&gpu, &tg), (&cpu, &tc)] {
            assert!(matches!(be.esu(tabs, &req.as_batch(), &bias, &topk), Err(Error::OutOfRange { field: "topk.idx", .. })));
        }
        let bad = TopK { k: 5, idx: vec![0; 10], score: vec![0.0; 10], count: vec![0, 1] };
        for (be, tabs) in [(&gpu, &tg), (&cpu, &tc)] {
            assert!(matches!(be.esu(tabs, &req.as_batch(), &bias, &bad), Err(Error::OutOfRange { field: "topk.count", .. })));
        }
        let mut r2 = req.clone();
        r2.sizes[4] = 0.0;
        for (be, tabs) in [(&gpu, &tg), (&cpu, &tc)] {
            assert!(matches!(be.online(tabs, &r2.as_batch(), TOP_K), Err(Error::InvalidValue { field: "sizes", index: 4, .. })));
        }
    });
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// P_Q/P_K/P_V span many storage-binding chunks (64 KiB cap): ESU on compacted rows matches
/// the CPU and the unsplit wgpu bit for bit.
#[test]
fn esu_split_tables() {
    let cpu = cpu();
    for (u, whole) in split_pairs() {
        eprintln!("parity on {} [{}]", u.be.describe(), u.label);
        // f16 tables where the device keeps them f16; f32 on the f32-tables variant.
        for dtype in [if u.label.contains("f32 tables") { DType::F32 } else { DType::F16 }] {
            let t = Tables::new(47, dtype);
            let (ts, tw, tc) = (t.upload(&*u.be), t.upload(&*whole), t.upload(&*cpu));
            let req = requests(&split_shapes(), 48);
            let bias = bias_for(&*cpu, &tc, &req);
            let topk = cpu.gsu_topk(&tc, &req.as_batch(), &bias, TOP_K).unwrap();
            let got = u.be.esu(&ts, &req.as_batch(), &bias, &topk).unwrap();
            let want = cpu.esu(&tc, &req.as_batch(), &bias, &topk).unwrap();
            assert_rows(&format!("esu split {dtype:?}"), &got, &want);
            let same = whole.esu(&tw, &req.as_batch(), &bias, &topk).unwrap();
            assert_eq!(bits(&got), bits(&same), "esu split {dtype:?}: split != unsplit");
        }
    }
}

/// The whole online path on split tables: against the CPU, the unsplit wgpu (bit for bit),
/// and a request alone (independent of its batch neighbours).
#[test]
fn online_split_tables() {
    let cpu = cpu();
    for (u, whole) in split_pairs() {
        eprintln!("parity on {} [{}]", u.be.describe(), u.label);
        let t = Tables::new(49, DType::F32);
        let (ts, tw, tc) = (t.upload(&*u.be), t.upload(&*whole), t.upload(&*cpu));
        let req = requests(&split_shapes(), 50);
        let got = u.be.online(&ts, &req.as_batch(), TOP_K).unwrap();
        let want = cpu.online(&tc, &req.as_batch(), TOP_K).unwrap();
        let bias = bias_for(&*cpu, &tc, &req);
        check("online split topk", &t, &req, &bias, &got.topk, &want.topk);
        let want_out = cpu.esu(&tc, &req.as_batch(), &bias, &got.topk).unwrap();
        assert_rows("online split out", &got.out, &want_out);
        let same = whole.online(&tw, &req.as_batch(), TOP_K).unwrap();
        assert_eq!(got.topk.idx, same.topk.idx);
        assert_eq!(got.topk.count, same.topk.count);
        assert_eq!(bits(&got.topk.score), bits(&same.topk.score));
        assert_eq!(bits(&got.out), bits(&same.out), "online split != unsplit");
        let b = req.as_batch();
        for r in [2usize, 4] {
            let (s, c) = (b.seq_range(r), b.cand_range(r));
            let mut one = OnlineRequests::new();
            one.push(&req.items[s.clone()], &req.cross[s.start * 3..s.end * 3], &req.sizes[s.clone()], &req.cands[c.clone()]);
            let alone = u.be.online(&ts, &one.as_batch(), TOP_K).unwrap();
            assert_eq!(alone.topk.idx[..], got.topk.idx[c.start * TOP_K..c.end * TOP_K]);
            assert_eq!(bits(&alone.out), bits(&got.out[c.start * D..c.end * D]));
        }
    }
}
