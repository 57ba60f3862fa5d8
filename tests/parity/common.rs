//! Shared harness: the backends under test, random inputs with outliers, tolerances.
#![allow(dead_code)]

use std::sync::Arc;

use half::f16;
/// The device-tensor ops, in scope for every parity module that glob-imports `common`.
pub use twin_engine::backend::DeviceOps;
use twin_engine::backend::{self, Backend, DeviceTable, HostTable, OnlineRequests, TopK};

/// Random inputs, the online tables, requests and closeness checks, shared with tests/ops.rs.
pub use crate::support::*;

/// One backend to check, with a label saying which code path it exercises.
#[derive(Clone)]
pub struct Under {
    pub be: Arc<dyn Backend>,
    pub label: String,
}

/// GPU backends to check against the CPU reference. wgpu accepts lavapipe here (CI has no GPU).
/// wgpu comes twice: as opened by `open(Wgpu)` (subgroups and f16 tables where the adapter has
/// them, fused GSU v2) and forced onto the other paths (workgroup-memory reductions, f16 tables
/// stored as f32, GSU v1), so both are tested on every machine.
pub fn backends_under_test() -> Vec<Arc<dyn Backend>> {
    variants().into_iter().map(|u| u.be).collect()
}

/// Every variant's label, in the order [`variants`] lists them; [`parity_test!`] makes one test
/// per entry (the test's name is the second field).
pub const VARIANTS: &[(&str, &str)] = &[
    ("cpu-fast", "cpu_fast"),
    ("cuda (gsu v2, fused)", "cuda_v2"),
    ("cuda (gsu v1)", "cuda_v1"),
    ("cuda-emu (gsu v2, fused)", "cuda_emu_v2"),
    ("cuda-emu (gsu v1)", "cuda_emu_v1"),
    ("wgpu default", "wgpu_default"),
    ("wgpu no-subgroups/f32-tables/v1-kernels", "wgpu_v1_kernels"),
    ("wgpu no-subgroups/f16/gsu-v2", "wgpu_f16_v2"),
];

/// Every variant wanted and present (see [`variant`] for the rules).
pub fn variants() -> Vec<Under> {
    let v: Vec<Under> = VARIANTS.iter().filter_map(|&(label, _)| variant(label)).collect();
    if v.is_empty() {
        eprintln!("parity: no GPU backend compiled in or present; nothing to compare");
    }
    v
}

/// The variant called `label` (one of [`VARIANTS`]), or `None` (with a note) where it is not
/// wanted or not present. The fast CPU path (what `cpu` and `auto` without a GPU run) is checked
/// against the reference (`cpu-ref`) like a GPU backend, on every machine. `TWIN_PARITY_ONLY`
/// limits the variants; cuda-emu runs only when it is named. A missing backend is skipped with a
/// note, except that it fails when `CI` is set (wgpu) or `TWIN_REQUIRE_CUDA` is set (cuda), and
/// asking for cuda-emu without the feature fails.
pub fn variant(label: &str) -> Option<Under> {
    let under = |be: Arc<dyn Backend>| Some(Under { label: label.into(), be });
    match label {
        "cpu-fast" => {
            if wanted("cpu-fast") {
                return under(backend::open(backend::BackendChoice::Cpu).unwrap().0);
            }
            None
        }
        "cuda (gsu v2, fused)" | "cuda (gsu v1)" => {
            if wanted("cuda") {
                return cuda_variant(label).and_then(under);
            }
            None
        }
        "cuda-emu (gsu v2, fused)" | "cuda-emu (gsu v1)" => {
            if named("cuda-emu") {
                return under(emulated_variant(label));
            }
            None
        }
        "wgpu default" | "wgpu no-subgroups/f32-tables/v1-kernels" | "wgpu no-subgroups/f16/gsu-v2" => wgpu_variant(label).and_then(under),
        _ => panic!("parity: unknown variant {label:?}"),
    }
}

/// wgpu accepts lavapipe here (CI has no GPU). wgpu comes three times: as opened by `open(Wgpu)`
/// (subgroups and f16 tables where the adapter has them, fused GSU v2) and forced onto the other
/// paths (workgroup-memory reductions, f16 tables stored as f32, GSU v1), so all are tested on
/// every machine.
fn wgpu_variant(label: &str) -> Option<Arc<dyn Backend>> {
    #[cfg(feature = "wgpu")]
    match backend::open(backend::BackendChoice::Wgpu) {
        Ok(_) if !wanted("wgpu") => None,
        Ok((b, _)) => Some(match label {
            "wgpu default" => b,
            "wgpu no-subgroups/f32-tables/v1-kernels" => wgpu_with(|o| {
                use twin_engine::backend::{EsuVersion, GsuVersion, KernelVersions, KmeansVersion};
                o.no_subgroups = true;
                o.no_f16 = true;
                o.versions = KernelVersions { gsu: GsuVersion::V1, esu: EsuVersion::V1, kmeans: KmeansVersion::V1 };
            }),
            _ => wgpu_with(|o| {
                o.no_subgroups = true;
            }),
        }),
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("parity: CI is set and the wgpu backend could not start: {e}");
            }
            eprintln!("parity: wgpu skipped: {e}");
            None
        }
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = label;
        None
    }
}

/// `TWIN_REQUIRE_CUDA=1`: a CUDA backend that cannot be built, opened or loaded fails the test
/// instead of being skipped (the GPU run kit sets it, so a broken CUDA path cannot pass).
pub fn require_cuda() -> bool {
    std::env::var("TWIN_REQUIRE_CUDA").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Skip note, or a failure naming CUDA when `TWIN_REQUIRE_CUDA` is set.
pub fn cuda_missing(what: &str, why: &str) {
    assert!(!require_cuda(), "TWIN_REQUIRE_CUDA is set but CUDA is unavailable for {what}: {why}");
    eprintln!("parity: cuda skipped ({what}): {why}");
}

/// `TWIN_PARITY_ONLY=cuda|wgpu|cuda-emu|cpu-fast` (comma separated) limits the GPU backends under test
/// (the kit runs the CUDA variants alone under compute-sanitizer); unset, every GPU backend
/// present is tested.
pub fn wanted(kind: &str) -> bool {
    match std::env::var("TWIN_PARITY_ONLY") {
        Ok(only) if !only.is_empty() => only.split(',').any(|k| k.trim() == kind),
        _ => true,
    }
}

/// The emulated CUDA backend is tested only when `TWIN_PARITY_ONLY` names `cuda-emu`: it runs
/// at small shapes in a run of its own (CI: `TWIN_PARITY_ONLY=cuda-emu TWIN_PARITY_SMALL=1`).
pub fn named(kind: &str) -> bool {
    std::env::var("TWIN_PARITY_ONLY").is_ok_and(|only| only.split(',').any(|k| k.trim() == kind))
}

/// `TWIN_PARITY_SMALL=1`: the slow runs (compute-sanitizer, the CUDA emulator) use small
/// shapes, still off the block sizes.
pub fn small() -> bool {
    std::env::var("TWIN_PARITY_SMALL").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Under [`small`], lengths above 5,000 (L or N) are dropped.
pub fn keep_len(n: usize) -> bool {
    n <= 5000 || !small()
}

/// The CUDA backend twice: as opened (fused GSU v2) and forced onto GSU v1, both with their
/// output buffers poisoned (NaN / u32::MAX) before every launch, as on wgpu.
fn cuda_variant(label: &str) -> Option<Arc<dyn Backend>> {
    #[cfg(feature = "cuda")]
    {
        use twin_engine::backend::cuda::{CudaBackend, GsuVersion};
        let version = if label == "cuda (gsu v1)" { GsuVersion::V1 } else { GsuVersion::V2 };
        match CudaBackend::new(0) {
            Ok(b) => {
                b.set_gsu_version(version);
                b.set_poison_outputs(true);
                Some(Arc::new(b))
            }
            Err(e) => {
                cuda_missing(label, &e.to_string());
                None
            }
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = label;
        cuda_missing("every op", "this test binary was built without the `cuda` feature");
        None
    }
}

/// With feature `cuda-emu`: the CUDA backend's own host code over the CPU emulator, GSU v2 and
/// v1, outputs poisoned, each with its own thread-schedule seed (`TWIN_EMU_SEED` moves both).
/// Runs on every machine, beside a real GPU where there is one. Without the feature, asking for
/// it is a failure, not a silent skip.
fn emulated_variant(label: &str) -> Arc<dyn Backend> {
    #[cfg(feature = "cuda-emu")]
    {
        use twin_engine::backend::cuda::{CudaBackend, GsuVersion};
        let base: u64 = std::env::var("TWIN_EMU_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        let (i, version) = if label == "cuda-emu (gsu v1)" { (1, GsuVersion::V1) } else { (0, GsuVersion::V2) };
        let b = CudaBackend::emulated(base + i).expect("the CUDA emulator is built in with feature cuda-emu");
        b.set_gsu_version(version);
        b.set_poison_outputs(true);
        Arc::new(b)
    }
    #[cfg(not(feature = "cuda-emu"))]
    panic!("TWIN_PARITY_ONLY names cuda-emu but this test binary was built without the `cuda-emu` feature ({label})");
}

/// The GSU v3 variants (dots on tensor cores from f16 operands), one test each under
/// [`v3_test!`]. Not in [`VARIANTS`]: v3's scores carry the f16 rounding of the tables, so
/// tests/parity/gsu_topk.rs checks them under the v3 rule (per-position error bounds), not the
/// tolerance of the exact-input versions.
pub const V3_VARIANTS: &[(&str, &str)] = &[("cuda (gsu v3, tensor cores)", "cuda_v3"), ("cuda-emu (gsu v3, tensor cores)", "cuda_emu_v3")];

/// The GSU v3 variant called `label` (one of [`V3_VARIANTS`]), outputs poisoned, or `None`:
/// the real CUDA backend where `cuda` is wanted and a GPU is present (missing: [`cuda_missing`]'s
/// skip or failure), and the emulated one when `TWIN_PARITY_ONLY` names cuda-emu (its own
/// schedule seed, `TWIN_EMU_SEED` + 2; asking for it without the feature fails).
pub fn v3_variant(label: &str) -> Option<Under> {
    match label {
        "cuda (gsu v3, tensor cores)" => {
            #[cfg(feature = "cuda")]
            if wanted("cuda") {
                use twin_engine::backend::cuda::{CudaBackend, GsuVersion};
                match CudaBackend::new(0) {
                    Ok(b) => {
                        b.set_gsu_version(GsuVersion::V3);
                        b.set_poison_outputs(true);
                        return Some(Under { label: label.into(), be: Arc::new(b) });
                    }
                    Err(e) => cuda_missing("cuda (gsu v3)", &e.to_string()),
                }
            }
            None
        }
        "cuda-emu (gsu v3, tensor cores)" => {
            if named("cuda-emu") {
                #[cfg(feature = "cuda-emu")]
                {
                    use twin_engine::backend::cuda::{CudaBackend, GsuVersion};
                    let base: u64 = std::env::var("TWIN_EMU_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
                    let b = CudaBackend::emulated(base + 2).expect("the CUDA emulator is built in with feature cuda-emu");
                    b.set_gsu_version(GsuVersion::V3);
                    b.set_poison_outputs(true);
                    return Some(Under { label: label.into(), be: Arc::new(b) });
                }
                #[cfg(not(feature = "cuda-emu"))]
                panic!("TWIN_PARITY_ONLY names cuda-emu but this test binary was built without the `cuda-emu` feature");
            }
            None
        }
        _ => panic!("parity: unknown v3 variant {label:?}"),
    }
}

/// The split variants (ops that split), one test each under [`split_test!`].
pub const SPLIT_VARIANTS: &[(&str, &str)] =
    &[("wgpu max-binding 64 KiB", "wgpu_64k"), ("wgpu max-binding 64 KiB, f32 tables", "wgpu_64k_f32_tables")];

/// The split variant called `label` (one of [`SPLIT_VARIANTS`]): wgpu with a tiny
/// storage-binding cap, so tables and batches are split; `None` where wgpu is not wanted or
/// does not start (skipped, also under `CI`: [`variant`]'s wgpu tests fail there).
pub fn split_variant(label: &str) -> Option<Under> {
    let no_f16 = match label {
        "wgpu max-binding 64 KiB" => false,
        "wgpu max-binding 64 KiB, f32 tables" => true,
        _ => panic!("parity: unknown split variant {label:?}"),
    };
    #[cfg(feature = "wgpu")]
    if wanted("wgpu") && backend::open(backend::BackendChoice::Wgpu).is_ok() {
        let be = wgpu_with(|o| {
            o.max_binding = Some(64 << 10);
            if no_f16 {
                o.no_f16 = true;
            }
        });
        return Some(Under { label: label.into(), be });
    }
    let _ = no_f16;
    None
}

/// The split variant called `label` with the same backend unsplit (no binding cap), to compare
/// bit for bit.
pub fn split_pair(label: &str) -> Option<(Under, Arc<dyn Backend>)> {
    let u = split_variant(label)?;
    #[cfg(feature = "wgpu")]
    {
        let no_f16 = u.label.contains("f32 tables");
        let whole = wgpu_with(|o| o.no_f16 = no_f16);
        Some((u, whole))
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = u;
        None
    }
}

/// Shapes for the split tests: tables of N_ITEMS x D span ~20-40 chunks of 64 KiB.
pub fn split_shapes() -> Vec<(usize, usize)> {
    vec![(1, 1), (97, 3), (1025, 64), (1, 64), (100, 0), (1025, 3), (1025, 1)]
}

#[cfg(feature = "wgpu")]
pub fn wgpu_with(f: impl FnOnce(&mut twin_engine::backend::wgpu::WgpuOptions)) -> Arc<dyn Backend> {
    let mut o = twin_engine::backend::wgpu::WgpuOptions::from_env(true).expect("TWIN_GSU/TWIN_ESU/TWIN_KMEANS");
    o.poison_outputs = true;
    f(&mut o);
    Arc::new(twin_engine::backend::wgpu::WgpuBackend::with_options(o).expect("wgpu variant"))
}

/// The oracle: the literal reference (`cpu-ref`), not the fast CPU path.
pub fn cpu() -> Arc<dyn Backend> {
    backend::open(backend::BackendChoice::CpuRef).unwrap().0
}

/// `parity_test!(name, |gpu, cpu| { body })`: a module `name` with one `#[test]` per entry of
/// [`VARIANTS`] (`name::cpu_fast`, `name::wgpu_default`, ...; candle's `test_device!` idea), so
/// every failing variant shows. Each test opens only its own variant through [`variant`] and
/// runs `body` with `gpu` (that variant) and `cpu` (the reference); an unwanted or absent
/// variant returns early under [`variant`]'s rules. The body sees the enclosing module's items.
#[macro_export]
macro_rules! parity_test {
    ($(#[$m:meta])* $name:ident, |$gpu:ident, $cpu:ident| $body:block) => {
        $(#[$m])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run(label: &str) {
                let Some(under) = $crate::common::variant(label) else { return };
                eprintln!("parity on {} [{}]", under.be.describe(), under.label);
                #[allow(unused_variables)]
                let $cpu = $crate::common::cpu();
                let $gpu = under.be.clone();
                $body
            }

            #[test]
            fn cpu_fast() {
                run("cpu-fast")
            }
            #[test]
            fn cuda_v2() {
                run("cuda (gsu v2, fused)")
            }
            #[test]
            fn cuda_v1() {
                run("cuda (gsu v1)")
            }
            #[test]
            fn cuda_emu_v2() {
                run("cuda-emu (gsu v2, fused)")
            }
            #[test]
            fn cuda_emu_v1() {
                run("cuda-emu (gsu v1)")
            }
            #[cfg(feature = "wgpu")]
            #[test]
            fn wgpu_default() {
                run("wgpu default")
            }
            #[cfg(feature = "wgpu")]
            #[test]
            fn wgpu_v1_kernels() {
                run("wgpu no-subgroups/f32-tables/v1-kernels")
            }
            #[cfg(feature = "wgpu")]
            #[test]
            fn wgpu_f16_v2() {
                run("wgpu no-subgroups/f16/gsu-v2")
            }
        }
    };
}

/// `split_test!(name, |u, cpu| { body })` or `split_test!(name, |u, whole, cpu| { body })`: a
/// module `name` with one `#[test]` per entry of [`SPLIT_VARIANTS`] (`name::wgpu_64k`,
/// `name::wgpu_64k_f32_tables`), as [`parity_test!`] does for [`VARIANTS`]. Each test opens its
/// own split variant `u` through [`split_variant`] (with `whole`, the same backend unsplit,
/// through [`split_pair`]) and `cpu` (the reference); an absent variant returns early.
#[macro_export]
macro_rules! split_test {
    ($(#[$m:meta])* $name:ident, |$u:ident, $cpu:ident| $body:block) => {
        $crate::split_test!(@tests $(#[$m])* $name, |label| {
            let Some($u) = $crate::common::split_variant(label) else { return };
            eprintln!("parity on {} [{}]", $u.be.describe(), $u.label);
            #[allow(unused_variables)]
            let $cpu = $crate::common::cpu();
            $body
        });
    };
    ($(#[$m:meta])* $name:ident, |$u:ident, $whole:ident, $cpu:ident| $body:block) => {
        $crate::split_test!(@tests $(#[$m])* $name, |label| {
            let Some(($u, $whole)) = $crate::common::split_pair(label) else { return };
            eprintln!("parity on {} [{}]", $u.be.describe(), $u.label);
            #[allow(unused_variables)]
            let $cpu = $crate::common::cpu();
            $body
        });
    };
    (@tests $(#[$m:meta])* $name:ident, |$label:ident| $run:block) => {
        $(#[$m])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[allow(dead_code)]
            fn run($label: &str) $run

            #[cfg(feature = "wgpu")]
            #[test]
            fn wgpu_64k() {
                run("wgpu max-binding 64 KiB")
            }
            #[cfg(feature = "wgpu")]
            #[test]
            fn wgpu_64k_f32_tables() {
                run("wgpu max-binding 64 KiB, f32 tables")
            }
        }
    };
}

/// `v3_test!(name, |u, cpu| { body })`: a module `name` with one `#[test]` per entry of
/// [`V3_VARIANTS`] (`name::cuda_v3`, `name::cuda_emu_v3`), each opening its own variant `u`
/// through [`v3_variant`] (returning early where it is absent, under its rules) and `cpu`.
#[macro_export]
macro_rules! v3_test {
    ($(#[$m:meta])* $name:ident, |$u:ident, $cpu:ident| $body:block) => {
        $(#[$m])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run(label: &str) {
                let Some($u) = $crate::common::v3_variant(label) else { return };
                eprintln!("parity on {} [{}]", $u.be.describe(), $u.label);
                #[allow(unused_variables)]
                let $cpu = $crate::common::cpu();
                $body
            }

            #[test]
            fn cuda_v3() {
                run("cuda (gsu v3, tensor cores)")
            }
            #[test]
            fn cuda_emu_v3() {
                run("cuda-emu (gsu v3, tensor cores)")
            }
        }
    };
}

/// Full reference scores `g_{b,l}` of candidate `c` over its request (CPU formula).
pub fn ref_scores(t: &Tables, req: &OnlineRequests, bias: &[f32], c: usize) -> Vec<f32> {
    let b = req.as_batch();
    let r = (0..b.n_requests()).find(|&r| b.cand_range(r).contains(&c)).unwrap();
    let seq = b.seq_range(r);
    let mut q = Vec::new();
    t.host_pq.extend_row(req.cands[c] as usize, &mut q);
    let mut keys = Vec::new();
    for &it in &req.items[seq.clone()] {
        t.host_pk.extend_row(it as usize, &mut keys);
    }
    let mut s = vec![0f32; seq.len()];
    twin_engine::backend::cpu::gsu_topk::scores_for(&q, &keys, &bias[seq.start * H..seq.end * H], H, &mut s);
    s
}

/// Top-K as index sets under the tie rule: with `kth` the reference's K-th score and
/// `tol = atol + rtol·|kth|`, every reference finalist scoring above `kth + tol` must be kept,
/// every kept position must score at least `kth - tol` by the reference, reported scores must
/// match the reference score of their position within `tol`, rows must be in descending order
/// with equal scores ordered by descending position, and padding must be `u32::MAX` / `-inf`.
/// Returns how many rows differ from the reference as sets (allowed near-ties).
pub fn assert_topk(what: &str, got: &TopK, want: &TopK, full: impl Fn(usize) -> Vec<f32>, atol: f32, rtol: f32) -> usize {
    assert_eq!(got.k, want.k, "{what}: k");
    assert_eq!(got.count, want.count, "{what}: counts");
    let k = got.k;
    let mut differ = 0;
    for c in 0..got.count.len() {
        let (gi, gs) = got.row(c);
        let (wi, ws) = want.row(c);
        for t in got.count[c] as usize..k {
            assert_eq!(got.idx[c * k + t], u32::MAX, "{what}: row {c} padding idx at {t}");
            assert_eq!(got.score[c * k + t], f32::NEG_INFINITY, "{what}: row {c} padding score at {t}");
        }
        if gi == wi {
            for (t, (&g, &w)) in gs.iter().zip(ws).enumerate() {
                assert!(close(g, w, atol, rtol), "{what}: row {c} rank {t}: score {g} vs {w}");
            }
            continue;
        }
        differ += 1;
        let s = full(c);
        let kth = *ws.last().unwrap();
        let tol = atol + rtol * kth.abs();
        let mut seen = std::collections::HashSet::new();
        for (t, (&p, &g)) in gi.iter().zip(gs).enumerate() {
            assert!((p as usize) < s.len(), "{what}: row {c} position {p} out of range");
            assert!(seen.insert(p), "{what}: row {c} position {p} twice");
            assert!(s[p as usize] >= kth - tol, "{what}: row {c} keeps {p} (ref score {}) below the K-th {kth} - {tol}", s[p as usize]);
            assert!(close(g, s[p as usize], atol, rtol), "{what}: row {c} rank {t} pos {p}: score {g} vs ref {}", s[p as usize]);
            if t > 0 {
                let (pp, pg) = (gi[t - 1], gs[t - 1]);
                assert!(pg > g || (pg == g && pp > p), "{what}: row {c} not in order at rank {t}");
            }
        }
        for (&p, &w) in wi.iter().zip(ws) {
            if w > kth + tol {
                assert!(seen.contains(&p), "{what}: row {c} misses {p} (ref score {w} > K-th {kth} + {tol})");
            }
        }
    }
    differ
}

/// A table widened to f32 with every value replaced by its absolute value (error scales).
pub fn abs_table(t: &HostTable) -> HostTable {
    let mut v = Vec::with_capacity(t.rows * t.cols);
    for i in 0..t.rows * t.cols {
        v.push(t.get(i).abs());
    }
    HostTable::f32(t.rows, t.cols, v).unwrap()
}

pub fn f16_round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

pub fn upload_on(be: &dyn Backend, name: &'static str, t: &HostTable) -> DeviceTable {
    be.upload_table(name, t).unwrap()
}

/// llvmpipe (lavapipe) stops an invocation after 65535 loop iterations in all; GSU v1 walks a
/// whole sequence in one invocation, so it cannot run L = 100_003 there (v2 can).
pub fn skip_long_on(gpu: &dyn Backend, max_l: usize) -> bool {
    let d = gpu.describe();
    // describe() names the versions ("GSU v1, ESU v2, k-means v2") and the adapter ("(Cpu, ...").
    let skip = max_l > 3000 && d.contains("GSU v1") && d.contains("(Cpu,");
    if skip {
        eprintln!("  skipped: GSU v1 with L = {max_l} on llvmpipe (65535-iteration loop limit)");
    }
    skip || !keep_len(max_l)
}
