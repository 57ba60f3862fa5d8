//! esu and the whole online path. ESU is compared elementwise given the same finalists; the
//! GPU accumulates logits, softmax sums, pooling and · W^o in f32 (CPU f64). Outputs are
//! O(1..100) with ±50 outliers in P_Q/P_K, so single q·k products reach 2500 and the f32 logits
//! carry ~1e-3 absolute error that exp() turns into relative error of the weights: tolerance
//! 2e-3·max|row| + 1e-3 relative, per candidate row.

use twin_engine::backend::{DType, OnlineRequests, TopK, TOP_K};
use twin_engine::Error;

use crate::common::*;
use crate::gsu_topk::{batches, bias_for, check};
use crate::parity_test;
use crate::split_test;

fn row_scale(want: &[f32]) -> Vec<f32> {
    want.chunks(D).map(|r| r.iter().fold(0f32, |m, x| m.max(x.abs()))).collect()
}

fn assert_rows(what: &str, got: &[f32], want: &[f32]) {
    let s = row_scale(want);
    assert_close(what, got, want, |i| 2e-3 * s[i / D] + 1e-4, 1e-3);
}

parity_test!(esu_matches_cpu, |gpu, cpu| {
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

parity_test!(online_matches_cpu, |gpu, cpu| {
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

parity_test!(online_independent_of_batch, |gpu, cpu| {
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

parity_test!(esu_errors_match_cpu, |gpu, cpu| {
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

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Tables of width `d` = `heads` · d_k for the ESU v2 modules (common's ±50 outliers); with
/// `all_in_dtype`, cross values and W^o in `dtype` too (the CUDA kernels' f16 paths for every
/// table).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn esu_tables(seed: u64, d: usize, heads: usize, dtype: DType, all_in_dtype: bool) -> Tables {
    Tables::shaped(seed, &TableShape { d, heads, all_in_dtype, ..TableShape::parity(dtype) })
}

/// Cross bias plus ln(size) on the reference, for tables of any head count.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn bias_of(cpu: &dyn twin_engine::backend::Backend, tc: &twin_engine::backend::OnlineTables, req: &OnlineRequests) -> Vec<f32> {
    let cb = cpu.cross_bias(&tc.cross_bias, &req.cross, tc.n_cross()).unwrap();
    cpu.log_size_bias(&cb, &req.sizes, tc.heads).unwrap()
}

/// Request `r` of a batch on its own.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn one_request(req: &OnlineRequests, b: &twin_engine::backend::OnlineBatch, r: usize) -> OnlineRequests {
    let (s, c) = (b.seq_range(r), b.cand_range(r));
    let j = twin_engine::features::N_CROSS;
    let mut one = OnlineRequests::new();
    one.push(&req.items[s.clone()], &req.cross[s.start * j..s.end * j], &req.sizes[s.clone()], &req.cands[c]);
    one
}

// P_Q/P_K/P_V span many storage-binding chunks (64 KiB cap): ESU on compacted rows matches
// the CPU and the unsplit wgpu bit for bit.
split_test!(esu_split_tables, |u, whole, cpu| {
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
});

// The whole online path on split tables: against the CPU, the unsplit wgpu (bit for bit),
// and a request alone (independent of its batch neighbours).
split_test!(online_split_tables, |u, whole, cpu| {
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
});

/// ESU v2 (kernels/esu.cu) against the CPU reference and v1. v2 performs v1's operations in
/// v1's order per candidate, so it must equal v1 bit for bit, and the CPU reference within the
/// module's tolerance (`2e-3·max|row| + 1e-4` absolute plus `1e-3` relative, per row).
#[cfg(feature = "cuda")]
mod v2 {
    use std::sync::Arc;

    use twin_engine::backend::cuda::{CudaBackend, EsuVersion};
    use twin_engine::backend::{Backend, DType, OnlineTables, TopK};

    use super::{bias_of, bits, esu_tables, one_request};
    use crate::common::*;

    /// One device's ESU versions: v1 first, then v2 with groups forced to 8 and 3 (ragged
    /// groups on small batches) and v2 with the group chosen per batch (the default).
    struct Set {
        label: &'static str,
        bes: Vec<(&'static str, Arc<CudaBackend>)>,
    }

    fn set_of(label: &'static str, mut open: impl FnMut(u64) -> Option<CudaBackend>) -> Option<Set> {
        let mut bes = Vec::new();
        for (i, (name, v, g)) in [
            ("esu v1", EsuVersion::V1, None),
            ("esu v2 G=8", EsuVersion::V2, Some(8)),
            ("esu v2 G=3", EsuVersion::V2, Some(3)),
            ("esu v2 G by rule", EsuVersion::V2, None),
        ]
        .into_iter()
        .enumerate()
        {
            let b = open(i as u64)?;
            b.set_esu_version(v);
            b.set_esu_group(g);
            b.set_poison_outputs(true);
            bes.push((name, Arc::new(b)));
        }
        Some(Set { label, bes })
    }

    /// The emulator (when `TWIN_PARITY_ONLY` names cuda-emu; schedule seeds from
    /// `TWIN_EMU_SEED` + 3..) and a real GPU (when cuda is wanted and present).
    fn sets() -> Vec<Set> {
        let mut v = Vec::new();
        if wanted("cuda") {
            let mut err = None;
            let s = set_of("cuda", |_| CudaBackend::new(0).map_err(|e| err = Some(e.to_string())).ok());
            match s {
                Some(s) => v.push(s),
                None => cuda_missing("esu v1/v2", err.as_deref().unwrap_or("no device")),
            }
        }
        if named("cuda-emu") {
            #[cfg(feature = "cuda-emu")]
            {
                let base: u64 = std::env::var("TWIN_EMU_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
                v.extend(set_of("cuda-emu", |i| Some(CudaBackend::emulated(base + 3 + i).expect("emulator built in"))));
            }
            #[cfg(not(feature = "cuda-emu"))]
            panic!("TWIN_PARITY_ONLY names cuda-emu but this test binary was built without the `cuda-emu` feature");
        }
        v
    }

    /// Worst |err|/tol over all values, and rows compared.
    #[derive(Default)]
    struct Stats {
        rows: usize,
        worst: f32,
        max_err: f32,
    }

    /// The module's rule for rows of width `d`; NaN (an unwritten poisoned output) fails.
    fn compare(what: &str, got: &[f32], want: &[f32], d: usize, st: &mut Stats) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (r, (g, w)) in got.chunks(d).zip(want.chunks(d)).enumerate() {
            let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                assert!(!g.is_nan(), "{what}: row {r} col {i} is NaN (unwritten output?)");
                let (err, tol) = ((g - w).abs(), 2e-3 * scale + 1e-4 + 1e-3 * w.abs());
                assert!(err <= tol, "{what}: row {r} col {i}: got {g}, want {w} (|err| {err} > tol {tol})");
                st.worst = st.worst.max(err / tol);
                st.max_err = st.max_err.max(err);
            }
            st.rows += 1;
        }
    }

    /// Requests of 1, 3, 7 and 9 candidates (off every group size tried), sequences shorter
    /// and longer than K (counts from 1 to 256).
    const SHAPES: &[(usize, usize)] = &[(1, 1), (97, 3), (300, 7), (5, 9), (257, 9), (20, 3), (1025, 1)];

    #[test]
    fn esu_v2_matches_cpu_and_v1() {
        let cpu = cpu();
        let mut st = Stats::default();
        for set in sets() {
            for &(d, heads) in &[(128usize, 4usize), (12, 3), (6, 2)] {
                for dtype in [DType::F32, DType::F16] {
                    let t = esu_tables(61 + d as u64, d, heads, dtype, true);
                    let tc = t.upload(&*cpu);
                    let tgs: Vec<OnlineTables> = set.bes.iter().map(|(_, b)| t.upload(&**b)).collect();
                    let req = requests(SHAPES, 62);
                    let bias = bias_of(&*cpu, &tc, &req);
                    for k in [1usize, 7, 100, 256] {
                        let topk = cpu.gsu_topk(&tc, &req.as_batch(), &bias, k).unwrap();
                        let want = cpu.esu(&tc, &req.as_batch(), &bias, &topk).unwrap();
                        let mut v1: Option<Vec<f32>> = None;
                        for ((name, be), tg) in set.bes.iter().zip(&tgs) {
                            let what = format!("{} {name} D={d} h={heads} {dtype:?} K={k}", set.label);
                            let got = be.esu(tg, &req.as_batch(), &bias, &topk).unwrap();
                            compare(&what, &got, &want, d, &mut st);
                            match &v1 {
                                None => v1 = Some(got),
                                Some(v1) => assert_eq!(bits(&got), bits(v1), "{what}: differs from esu v1"),
                            }
                        }
                    }
                }
            }
        }
        eprintln!("  esu v1/v2: {} rows, max |err| {:.3e}, worst {:.3} of tolerance; v2 == v1 bit for bit", st.rows, st.max_err, st.worst);
    }

    /// 1,100 candidates of one request: the per-batch rule takes groups of 8 (138 groups, a
    /// ragged last one of 4, + 2 for a 9-candidate request after it: 140 blocks for 132 SMs).
    #[test]
    fn esu_v2_rule_groups_of_8() {
        let cpu = cpu();
        let mut st = Stats::default();
        for set in sets() {
            let t = esu_tables(71, 128, 4, DType::F16, true);
            let tc = t.upload(&*cpu);
            let req = requests(&[(40, 1100), (300, 9)], 72);
            let bias = bias_of(&*cpu, &tc, &req);
            let topk = cpu.gsu_topk(&tc, &req.as_batch(), &bias, 7).unwrap();
            let want = cpu.esu(&tc, &req.as_batch(), &bias, &topk).unwrap();
            let mut v1: Option<Vec<f32>> = None;
            for (name, be) in set.bes.iter().filter(|(n, _)| !n.contains("G=3")) {
                let got = be.esu(&t.upload(&**be), &req.as_batch(), &bias, &topk).unwrap();
                compare(&format!("{} {name} B=1100", set.label), &got, &want, 128, &mut st);
                match &v1 {
                    None => v1 = Some(got),
                    Some(v1) => assert_eq!(bits(&got), bits(v1), "{} {name} B=1100: differs from esu v1", set.label),
                }
            }
        }
        eprintln!("  esu B=1100: {} rows, max |err| {:.3e}, worst {:.3} of tolerance", st.rows, st.max_err, st.worst);
    }

    /// The whole online path with each ESU version: out against the reference ESU on the
    /// device's own finalists, equal to v1 bit for bit, and a request alone equal to the same
    /// request in the batch (its groups are cut differently there).
    #[test]
    fn online_esu_v2_matches_v1() {
        let cpu = cpu();
        let mut st = Stats::default();
        for set in sets() {
            for dtype in [DType::F32, DType::F16] {
                let t = esu_tables(81, 128, 4, dtype, true);
                let tc = t.upload(&*cpu);
                let req = requests(&[(7, 3), (300, 9), (97, 7), (1, 1), (100, 0), (1025, 9)], 82);
                let b = req.as_batch();
                let bias = bias_of(&*cpu, &tc, &req);
                for k in [7usize, 100] {
                    let mut v1: Option<Vec<f32>> = None;
                    for (name, be) in &set.bes {
                        let what = format!("{} online {name} {dtype:?} K={k}", set.label);
                        let tg = t.upload(&**be);
                        let got = be.online(&tg, &b, k).unwrap();
                        let want = cpu.esu(&tc, &b, &bias, &got.topk).unwrap();
                        compare(&what, &got.out, &want, 128, &mut st);
                        for r in [1usize, 5] {
                            let one = one_request(&req, &b, r);
                            let alone = be.online(&tg, &one.as_batch(), k).unwrap();
                            let c = b.cand_range(r);
                            assert_eq!(bits(&alone.out), bits(&got.out[c.start * 128..c.end * 128]), "{what}: request {r} alone");
                        }
                        match &v1 {
                            None => v1 = Some(got.out),
                            Some(v1) => assert_eq!(bits(&got.out), bits(v1), "{what}: differs from esu v1"),
                        }
                    }
                }
            }
        }
        eprintln!("  online esu v1/v2: {} rows, max |err| {:.3e}, worst {:.3} of tolerance", st.rows, st.max_err, st.worst);
    }

    /// Every version refuses bad finalists (a position past the sequence, a count of 0) as the
    /// CPU does, before any launch.
    #[test]
    fn esu_v2_errors_match_cpu() {
        let cpu = cpu();
        for set in sets() {
            let t = esu_tables(91, 128, 4, DType::F32, true);
            let tc = t.upload(&*cpu);
            let req = requests(&[(20, 2)], 92);
            let bias = bias_of(&*cpu, &tc, &req);
            let mut topk = cpu.gsu_topk(&tc, &req.as_batch(), &bias, 5).unwrap();
            topk.idx[3] = 20;
            let bad = TopK { k: 5, idx: vec![0; 10], score: vec![0.0; 10], count: vec![0, 1] };
            for (name, be) in &set.bes {
                let tg = t.upload(&**be);
                let e = be.esu(&tg, &req.as_batch(), &bias, &topk);
                assert!(matches!(e, Err(twin_engine::Error::OutOfRange { field: "topk.idx", .. })), "{} {name}: {e:?}", set.label);
                let e = be.esu(&tg, &req.as_batch(), &bias, &bad);
                assert!(matches!(e, Err(twin_engine::Error::OutOfRange { field: "topk.count", .. })), "{} {name}: {e:?}", set.label);
            }
        }
    }
}

/// WGSL ESU v2 (shaders/esu.wgsl) against the CPU reference and WGSL v1: v2 performs v1's
/// operations in v1's order per candidate, so it must equal v1 bit for bit (on each reduction
/// path: subgroups where the adapter has them, and the workgroup-memory tree), and the CPU
/// within the module's tolerance. With `CI` set, a wgpu that cannot start fails.
#[cfg(feature = "wgpu")]
mod wgpu_v2 {
    use std::sync::Arc;

    use twin_engine::backend::wgpu::{EsuVersion, WgpuBackend, WgpuOptions};
    use twin_engine::backend::{Backend, DType};

    use super::{bias_of, bits, esu_tables, one_request};
    use crate::common::*;

    /// (label, v1, v2) on one reduction path, both with poisoned outputs.
    type Pair = (&'static str, Arc<WgpuBackend>, Arc<WgpuBackend>);

    fn open(no_subgroups: bool, esu: EsuVersion) -> Option<Arc<WgpuBackend>> {
        let mut o = WgpuOptions::from_env(true).expect("TWIN_GSU/TWIN_ESU/TWIN_KMEANS");
        o.poison_outputs = true;
        o.no_subgroups = no_subgroups;
        o.versions.esu = esu;
        match WgpuBackend::with_options(o) {
            Ok(b) => Some(Arc::new(b)),
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!("parity: CI is set and the wgpu backend could not start: {e}");
                }
                eprintln!("parity: wgpu skipped: {e}");
                None
            }
        }
    }

    fn pairs() -> Vec<Pair> {
        let mut v = Vec::new();
        if !wanted("wgpu") {
            return v;
        }
        for (label, ns) in [("wgpu default reductions", false), ("wgpu no-subgroups", true)] {
            let (Some(a), Some(b)) = (open(ns, EsuVersion::V1), open(ns, EsuVersion::V2)) else { return v };
            eprintln!("esu v1/v2 on {} [{label}]", b.describe());
            v.push((label, a, b));
        }
        v
    }

    /// The module's per-row rule for rows of width `d`; NaN (an unwritten poisoned output)
    /// fails. Returns the worst |err|/tol.
    fn compare(what: &str, got: &[f32], want: &[f32], d: usize) -> f32 {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let mut worst = 0f32;
        for (r, (g, w)) in got.chunks(d).zip(want.chunks(d)).enumerate() {
            let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
            for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                let (err, tol) = ((g - w).abs(), 2e-3 * scale + 1e-4 + 1e-3 * w.abs());
                assert!(err <= tol, "{what}: row {r} col {i}: got {g}, want {w} (|err| {err} > tol {tol})");
                worst = worst.max(err / tol);
            }
        }
        worst
    }

    /// Requests (L, B): candidate counts 1, 3, 9, 13, 17 (ragged last groups for G = 8, 5, 2),
    /// an empty request, L = 1, 97, 1025 (counts from 1 to K).
    const SHAPES: &[(usize, usize)] = &[(1, 1), (97, 9), (1025, 13), (20, 0), (1025, 1), (5, 17), (97, 3)];

    #[test]
    fn wgpu_esu_v2_matches_cpu_and_v1() {
        let cpu = cpu();
        let mut worst = 0f32;
        let mut rows = 0;
        for (label, b1, b2) in pairs() {
            for &(d, heads) in &[(128usize, 4usize), (12, 3)] {
                for dtype in [DType::F32, DType::F16] {
                    let h = esu_tables(61 + d as u64, d, heads, dtype, false);
                    let (tc, t1, t2) = (h.upload(&*cpu), h.upload(&*b1), h.upload(&*b2));
                    let req = requests(SHAPES, 62);
                    let b = req.as_batch();
                    let bias = bias_of(&*cpu, &tc, &req);
                    for k in [1usize, 7, 100, 256] {
                        let what = format!("{label} D={d} h={heads} {dtype:?} K={k}");
                        assert_eq!(b1.esu_v2_group(&t1, k), None, "{what}: the v1 backend plans v2");
                        let g = b2.esu_v2_group(&t2, k);
                        assert!(g.is_some_and(|g| g >= 2), "{what}: v2 does not run in groups ({g:?})");
                        let topk = cpu.gsu_topk(&tc, &b, &bias, k).unwrap();
                        let want = cpu.esu(&tc, &b, &bias, &topk).unwrap();
                        let v1 = b1.esu(&t1, &b, &bias, &topk).unwrap();
                        let v2 = b2.esu(&t2, &b, &bias, &topk).unwrap();
                        compare(&format!("{what} v1"), &v1, &want, d);
                        worst = worst.max(compare(&format!("{what} v2 (G={})", g.unwrap_or(0)), &v2, &want, d));
                        assert_eq!(bits(&v2), bits(&v1), "{what}: esu v2 (G={g:?}) differs from v1");
                        rows += v2.len() / d;
                    }
                }
            }
        }
        eprintln!("  wgpu esu v2: {rows} rows == v1 bit for bit, worst {worst:.3} of tolerance");
    }

    /// The whole online path (GSU → ESU in one command buffer): v2's out equals v1's bit for
    /// bit, matches the reference ESU on the device's finalists, and a request alone (its
    /// groups cut from its own first candidate) equals the same request in the batch.
    #[test]
    fn wgpu_online_esu_v2_matches_v1() {
        let cpu = cpu();
        for (label, b1, b2) in pairs() {
            for dtype in [DType::F32, DType::F16] {
                let h = esu_tables(81, D, H, dtype, false);
                let (tc, t1, t2) = (h.upload(&*cpu), h.upload(&*b1), h.upload(&*b2));
                let req = requests(&[(7, 3), (300, 9), (97, 13), (1, 1), (100, 0), (1025, 9)], 82);
                let b = req.as_batch();
                let bias = bias_of(&*cpu, &tc, &req);
                for k in [1usize, 7, 100] {
                    let what = format!("{label} online {dtype:?} K={k}");
                    assert!(b2.esu_v2_group(&t2, k).is_some(), "{what}: v2 does not run");
                    let o1 = b1.online(&t1, &b, k).unwrap();
                    let o2 = b2.online(&t2, &b, k).unwrap();
                    assert_eq!(o2.topk.idx, o1.topk.idx, "{what}: finalists differ");
                    let want = cpu.esu(&tc, &b, &bias, &o2.topk).unwrap();
                    compare(&what, &o2.out, &want, D);
                    assert_eq!(bits(&o2.out), bits(&o1.out), "{what}: esu v2 differs from v1");
                    for r in [2usize, 5] {
                        let alone = b2.online(&t2, &one_request(&req, &b, r).as_batch(), k).unwrap();
                        let c = b.cand_range(r);
                        assert_eq!(bits(&alone.out), bits(&o2.out[c.start * D..c.end * D]), "{what}: request {r} alone");
                    }
                }
            }
        }
    }
}
