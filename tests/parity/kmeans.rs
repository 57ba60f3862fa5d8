//! kmeans: assignment bit-identical to the CPU (same f32 distance, same order, ties to the
//! lower index); update bit-identical too (every backend sums a centroid's members in point
//! order in f64 — emulated on u32 pairs in WGSL — and rounds the mean to f32 as the CPU does);
//! so whole k-means runs give identical assignments, centroids and iteration counts, and a
//! problem's result does not depend on the batch it shares.

use twin_engine::backend::{Backend, KmeansBatch};
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::common::*;
use crate::parity_test;
use crate::split_test;

pub(crate) const DIM: usize = 64;

/// Equal bit for bit (so NaN payloads and signed zeros count too), naming the first difference.
pub(crate) fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}[{i}]: {} (got) != {} (CPU)", got[i], want[i]);
    }
}

/// Ragged problems of the given sizes: blobs around `k` random centres, with outliers,
/// duplicated points and (when `dup_cents`) exact distance ties.
pub(crate) fn problems(sizes: &[usize], seed: u64) -> (Vec<f32>, Vec<u32>, Vec<u32>) {
    let mut rng = SplitMix64::new(seed);
    let mut pts = Vec::new();
    let mut offs = vec![0u32];
    let mut ks = Vec::new();
    for &n in sizes {
        let k = (twin_engine::cluster::delta(n)).min(n).max(1);
        let centres = randn(&mut rng, k * DIM, 3.0);
        let start = pts.len() / DIM;
        for i in 0..n {
            if i > 2 && i % 9 == 4 {
                // exact duplicate of an earlier point
                let src = start + rng.below(i as u64) as usize;
                let row: Vec<f32> = pts[src * DIM..(src + 1) * DIM].to_vec();
                pts.extend_from_slice(&row);
                continue;
            }
            let c = rng.below(k as u64) as usize;
            for t in 0..DIM {
                let mut x = centres[c * DIM + t] + (rng.normal() * 0.3) as f32;
                if (i * DIM + t) % 1013 == 7 {
                    x = 50.0;
                }
                pts.push(x);
            }
        }
        offs.push((pts.len() / DIM) as u32);
        ks.push(k as u32);
    }
    (pts, offs, ks)
}

pub(crate) const SIZES: &[usize] = &[1, 2, 20, 97, 100, 101, 1025, 333, 21, 5000];

parity_test!(kmeans_assign_bit_identical, |gpu, cpu| {
    let (pts, offs, ks) = problems(SIZES, 70);
    let b = KmeansBatch { dim: DIM, points: &pts, offsets: &offs, k: &ks };
    let seeds: Vec<u64> = (0..ks.len() as u64).collect();
    let mut cents = cpu.kmeans_seed(&b, &seeds).unwrap();
    assert_eq!(gpu.kmeans_seed(&b, &seeds).unwrap(), cents);
    // Exact ties: the second centroid of every problem with k ≥ 2 duplicates the first.
    let coff = b.centroid_offsets();
    for p in 0..ks.len() {
        if ks[p] >= 2 {
            let c0 = coff[p] as usize * DIM;
            let row: Vec<f32> = cents[c0..c0 + DIM].to_vec();
            cents[c0 + DIM..c0 + 2 * DIM].copy_from_slice(&row);
        }
    }
    let got = gpu.kmeans_assign(&b, &cents).unwrap();
    let want = cpu.kmeans_assign(&b, &cents).unwrap();
    assert_eq!(got, want);
});

// Many centroids per problem (k up to 63): a workgroup of 64 points then spans more centroid
// rows than WGSL's assign v2 stages (64), so it reads them from global memory, as v1 does.
parity_test!(kmeans_assign_many_centroids, |gpu, cpu| {
    let sizes = [40, 40, 100, 70, 1, 97, 64];
    let (pts, offs, _) = problems(&sizes, 71);
    let ks: Vec<u32> = sizes.iter().map(|&n| n.min(63) as u32).collect();
    let b = KmeansBatch { dim: DIM, points: &pts, offsets: &offs, k: &ks };
    let seeds: Vec<u64> = (0..ks.len() as u64).collect();
    let cents = cpu.kmeans_seed(&b, &seeds).unwrap();
    assert_eq!(gpu.kmeans_assign(&b, &cents).unwrap(), cpu.kmeans_assign(&b, &cents).unwrap());
    check_run(&*gpu, &*cpu, &pts, &offs, &ks, &seeds);
});

fn check_run(gpu: &dyn Backend, cpu: &dyn Backend, pts: &[f32], offs: &[u32], ks: &[u32], seeds: &[u64]) {
    let b = KmeansBatch { dim: DIM, points: pts, offsets: offs, k: ks };
    let got = gpu.kmeans(&b, seeds, 20).unwrap();
    let want = cpu.kmeans(&b, seeds, 20).unwrap();
    assert_eq!(got.assign, want.assign, "assignments");
    assert_eq!(got.iterations, want.iterations, "iterations");
    assert_bits("kmeans centroids", &got.centroids, &want.centroids);
}

parity_test!(kmeans_full_identical_assignments, |gpu, cpu| {
    let (pts, offs, ks) = problems(SIZES, 72);
    let seeds: Vec<u64> = (0..ks.len() as u64).map(|i| i * 7919 + 1).collect();
    check_run(&*gpu, &*cpu, &pts, &offs, &ks, &seeds);
    // The same problem alone gives the same result as inside the batch.
    let b = KmeansBatch { dim: DIM, points: &pts, offsets: &offs, k: &ks };
    let all = gpu.kmeans(&b, &seeds, 20).unwrap();
    let p = 6; // the 1025-point problem
    let r = b.range(p);
    let alone_pts = &pts[r.start * DIM..r.end * DIM];
    let alone = gpu
        .kmeans(&KmeansBatch { dim: DIM, points: alone_pts, offsets: &[0, r.len() as u32], k: &ks[p..p + 1] }, &seeds[p..p + 1], 20)
        .unwrap();
    assert_eq!(alone.assign, all.assign[r.clone()]);
    let coff = b.centroid_offsets();
    assert_eq!(alone.centroids, all.centroids[coff[p] as usize * DIM..coff[p + 1] as usize * DIM]);
    assert_eq!(alone.iterations[0], all.iterations[p]);
});

split_test!(kmeans_split_batches, |u, cpu| {
    let (pts, offs, ks) = problems(&[50, 200, 97, 240, 150, 20], 73);
    let seeds: Vec<u64> = (0..ks.len() as u64).collect();
    check_run(&*u.be, &*cpu, &pts, &offs, &ks, &seeds);
});

parity_test!(kmeans_errors_match_cpu, |gpu, cpu| {
    let (mut pts, offs, mut ks) = problems(&[5, 7], 74);
    ks[1] = 8;
    let seeds = [1u64, 2];
    for be in [&gpu, &cpu] {
        let b = KmeansBatch { dim: DIM, points: &pts, offsets: &offs, k: &ks };
        assert!(matches!(be.kmeans(&b, &seeds, 20), Err(Error::OutOfRange { field: "k", index: 1, .. })));
    }
    ks[1] = 2;
    pts[3 * DIM + 1] = f32::NAN;
    for be in [&gpu, &cpu] {
        let b = KmeansBatch { dim: DIM, points: &pts, offsets: &offs, k: &ks };
        assert!(matches!(be.kmeans_assign(&b, &vec![0.0; 4 * DIM]), Err(Error::NonFinite { field: "points", .. })));
    }
    pts[3 * DIM + 1] = 0.0;
    let b = KmeansBatch { dim: DIM, points: &pts, offsets: &offs, k: &ks };
    for be in [&gpu, &cpu] {
        assert!(matches!(
            be.kmeans_update(&b, &[0u32, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0], &[0.0; 4 * DIM]),
            Err(Error::OutOfRange { field: "assign", index: 4, .. })
        ));
    }
});

// The Lloyd loop runs on the device: its transfers do not grow with the number of iterations
// (the host no longer downloads change flags every round), and the result still equals the CPU
// reference's at every iteration budget, converged problems included.
parity_test!(lloyd_transfers_do_not_grow_with_iterations, |gpu, cpu| {
    let (pts, offs, ks) = problems(SIZES, 73);
    let seeds: Vec<u64> = (0..ks.len() as u64).map(|i| i * 31 + 5).collect();
    let b = KmeansBatch { dim: DIM, points: &pts, offsets: &offs, k: &ks };
    let init = cpu.kmeans_seed(&b, &seeds).unwrap();
    let mut counts = Vec::new();
    for max_iter in [1u32, 3, 20] {
        let before = gpu.transfers();
        let got = gpu.lloyd(&b, init.clone(), max_iter).unwrap();
        let t = gpu.transfers().since(before);
        let want = cpu.lloyd(&b, init.clone(), max_iter).unwrap();
        assert_eq!(got.assign, want.assign, "max_iter {max_iter}: assignments");
        assert_eq!(got.iterations, want.iterations, "max_iter {max_iter}: iterations");
        assert_bits("lloyd centroids", &got.centroids, &want.centroids);
        eprintln!("lloyd max_iter {max_iter}: {t:?}, iterations {:?}", got.iterations);
        counts.push((t.h2d_calls, t.d2h_calls));
    }
    assert!(counts.iter().all(|&c| c == counts[0]), "transfer calls grow with iterations: {counts:?}");
    assert!(counts[0].1 <= 1, "more than one download per Lloyd run: {counts:?}");
    if gpu.kind().name() == "wgpu" {
        // Points, offsets and the initial centroids travel in one packed upload.
        assert_eq!(counts[0], (1, 1), "wgpu Lloyd transfers");
        // Seeding on the device too: `kmeans` is still one upload and one download.
        let before = gpu.transfers();
        let got = gpu.kmeans(&b, &seeds, 20).unwrap();
        let t = gpu.transfers().since(before);
        eprintln!("wgpu kmeans (device seed + Lloyd): {t:?}");
        assert_eq!((t.h2d_calls, t.d2h_calls), (1, 1), "wgpu kmeans transfers: {t:?}");
        let want = cpu.kmeans(&b, &seeds, 20).unwrap();
        assert_eq!(got.assign, want.assign, "kmeans assignments");
        assert_eq!(got.iterations, want.iterations, "kmeans iterations");
    }
});

// k-means++ seeding (on the device on CUDA and wgpu): the same centroids as the CPU's, bit for bit, for
// every problem of a ragged batch (one-point problems, duplicates, k = n).
parity_test!(kmeans_seed_bit_identical, |gpu, cpu| {
    let (pts, offs, ks) = problems(SIZES, 74);
    let seeds: Vec<u64> = (0..ks.len() as u64).map(|i| i.wrapping_mul(0x9E37_79B9) ^ 77).collect();
    let b = KmeansBatch { dim: DIM, points: &pts, offsets: &offs, k: &ks };
    let before = gpu.transfers();
    let got = gpu.kmeans_seed(&b, &seeds).unwrap();
    let t = gpu.transfers().since(before);
    eprintln!("kmeans_seed on {}: {t:?}", gpu.kind().name());
    if gpu.kind().name() == "wgpu" {
        assert_eq!((t.h2d_calls, t.d2h_calls), (1, 1), "wgpu seeds on the device: {t:?}");
    }
    let want = cpu.kmeans_seed(&b, &seeds).unwrap();
    assert_eq!(got.len(), want.len());
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("seed centroid value {i} (row {}): got {}, want {}", i / DIM, got[i], want[i]);
    }
    // k = n: every point is chosen once (all distances reach zero: the zero-total draw).
    let few = &pts[..5 * DIM];
    let b5 = KmeansBatch { dim: DIM, points: few, offsets: &[0, 5], k: &[5] };
    assert_eq!(gpu.kmeans_seed(&b5, &[3]).unwrap(), cpu.kmeans_seed(&b5, &[3]).unwrap());
    // Many seeds over small problems (k = n, duplicates, tiny distances), compared bit for bit.
    let (pts, offs, ks) = problems(&[3, 9, 40, 64, 257, 700], 78);
    let ks: Vec<u32> = ks.iter().zip(offs.windows(2)).map(|(&k, o)| if o[1] - o[0] <= 9 { o[1] - o[0] } else { k + 3 }).collect();
    let b = KmeansBatch { dim: DIM, points: &pts, offsets: &offs, k: &ks };
    for round in 0..4u64 {
        let seeds: Vec<u64> = (0..ks.len() as u64).map(|i| twin_engine::rng::mix64(i + 1000 * round)).collect();
        let got = gpu.kmeans_seed(&b, &seeds).unwrap();
        let want = cpu.kmeans_seed(&b, &seeds).unwrap();
        let same = got.len() == want.len() && got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "round {round}: seeds differ from the CPU's");
    }
});

// The clustering job's form: points as rows of resident embeddings. Equal to `kmeans` on the
// gathered rows (CPU reference); where the backend clusters on the device (CUDA) one call is one
// upload of ids and one download, whatever the iterations.
parity_test!(kmeans_items_equals_kmeans_on_gathered_rows, |gpu, cpu| {
    let (emb, _, _) = problems(&[700], 75);
    let mut rng = SplitMix64::new(76);
    let sizes = [1usize, 2, 30, 97, 333];
    let mut ids = Vec::new();
    let mut offs = vec![0u32];
    let mut ks = Vec::new();
    for &n in &sizes {
        ids.extend((0..n).map(|_| rng.below(700) as u32));
        offs.push(ids.len() as u32);
        ks.push(twin_engine::cluster::delta(n).min(n) as u32);
    }
    let seeds: Vec<u64> = (0..ks.len() as u64).map(|i| i + 100).collect();
    let pts = gpu.item_points(&emb, DIM).unwrap();
    let before = gpu.transfers();
    let got = gpu.kmeans_items(&pts, &ids, &offs, &ks, &seeds, 20).unwrap();
    let t = gpu.transfers().since(before);
    let gathered: Vec<f32> = ids.iter().flat_map(|&i| emb[i as usize * DIM..(i as usize + 1) * DIM].iter().copied()).collect();
    let want = cpu.kmeans(&KmeansBatch { dim: DIM, points: &gathered, offsets: &offs, k: &ks }, &seeds, 20).unwrap();
    assert_eq!(got.assign, want.assign, "assignments");
    assert_eq!(got.iterations, want.iterations, "iterations");
    assert_bits("kmeans_items centroids", &got.centroids, &want.centroids);
    eprintln!("kmeans_items on {}: {t:?} (points on device: {})", gpu.kind().name(), pts.on_device());
    // wgpu gathers the rows on the host, then seeds and runs Lloyd on the device from one
    // packed upload.
    if pts.on_device() || gpu.kind().name() == "wgpu" {
        assert_eq!((t.h2d_calls, t.d2h_calls), (1, 1), "{t:?}");
    }
    // Ids past the table are refused before any device work.
    let bad = [0u32, 700];
    assert!(matches!(
        gpu.kmeans_items(&pts, &bad, &[0, 2], &[1], &[1], 5),
        Err(Error::OutOfRange { field: "kmeans point ids", index: 1, value: 700, limit: 700 })
    ));
});

/// Both CUDA k-means versions, explicitly (v2 is the default the other tests run): bit-identical
/// to the CPU at dim 64, where v2's assignment applies, including blocks whose problems own more
/// centroid rows than v2 stages (many tiny problems with k = n: it reads them from global
/// memory), and at dim 16, where v2's assignment falls back to v1's (v2's update still runs).
/// On the emulator the test checks that v2's assignment really ran.
#[test]
fn kmeans_cuda_versions_bit_identical() {
    #[cfg(feature = "cuda")]
    {
        use twin_engine::backend::cuda::KmeansVersion;
        let backends = cuda_under_test("kmeans versions", 3);
        let cpu = cpu();
        // Blobs at the usual sizes, then 120 problems of 2 points with k = 2 (240 rows a block).
        let (mut pts, mut offs, mut ks) = problems(SIZES, 90);
        let mut rng = SplitMix64::new(91);
        for _ in 0..120 {
            pts.extend(randn(&mut rng, 2 * DIM, 1.0));
            offs.push(offs[offs.len() - 1] + 2);
            ks.push(2);
        }
        let seeds: Vec<u64> = (0..ks.len() as u64).map(|i| i * 31 + 5).collect();
        for (label, be) in &backends {
            be.set_poison_outputs(true);
            for v in [KmeansVersion::V1, KmeansVersion::V2] {
                be.set_kmeans_version(v);
                eprintln!("{label} {v:?}");
                check_run(be, &*cpu, &pts, &offs, &ks, &seeds);
                // dim 16: v2's assignment does not apply and v1's runs (with v2's update).
                let small: Vec<f32> = pts.chunks(DIM).flat_map(|r| r[..16].to_vec()).collect();
                let b = KmeansBatch { dim: 16, points: &small, offsets: &offs, k: &ks };
                let (got, want) = (be.kmeans(&b, &seeds, 20).unwrap(), cpu.kmeans(&b, &seeds, 20).unwrap());
                assert_eq!(got.assign, want.assign, "{label} {v:?} dim 16");
                assert_bits("dim-16 centroids", &got.centroids, &want.centroids);
            }
            if label == "cuda-emu" {
                assert!(be.launched_kernels().contains(&"kmeans_assign_fwd_v2"), "v2's assignment never ran");
            }
        }
    }
}

/// The CUDA backends to run a version test on: the emulator (seed `seed`) when
/// `TWIN_PARITY_ONLY` names cuda-emu, the GPU where one is wanted and present.
#[cfg(feature = "cuda")]
pub(crate) fn cuda_under_test(what: &str, seed: u64) -> Vec<(String, twin_engine::backend::cuda::CudaBackend)> {
    use twin_engine::backend::cuda::CudaBackend;
    let mut backends: Vec<(String, CudaBackend)> = Vec::new();
    #[cfg(feature = "cuda-emu")]
    if named("cuda-emu") {
        backends.push(("cuda-emu".into(), CudaBackend::emulated(seed).unwrap()));
    }
    if wanted("cuda") {
        match CudaBackend::new(0) {
            Ok(b) => backends.push(("cuda".into(), b)),
            Err(e) => cuda_missing(what, &e.to_string()),
        }
    }
    if backends.is_empty() {
        eprintln!("{what}: no CUDA backend under test here");
    }
    backends
}
