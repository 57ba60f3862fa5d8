//! kmeans_update (kernels/kmeans_update.cu, and v1 in kernels/kmeans.cu): the centroid update
//! bit-identical to the CPU reference on every backend (members summed in point order in f64,
//! the mean rounded to f32, an empty centroid keeping its value), v1 and v2 alike.

use twin_engine::backend::{Backend, KmeansBatch};
use twin_engine::rng::SplitMix64;

use crate::common::*;
#[cfg(feature = "cuda")]
use crate::kmeans::cuda_under_test;
use crate::kmeans::{assert_bits, problems, DIM, SIZES};
use crate::parity_test;

parity_test!(kmeans_update_matches_cpu, |gpu, cpu| {
    let (pts, offs, ks) = problems(SIZES, 71);
    let b = KmeansBatch { dim: DIM, points: &pts, offsets: &offs, k: &ks };
    let seeds: Vec<u64> = (100..100 + ks.len() as u64).collect();
    let cents = cpu.kmeans_seed(&b, &seeds).unwrap();
    let mut assign = cpu.kmeans_assign(&b, &cents).unwrap();
    // Leave one centroid empty somewhere: it must keep its previous value.
    let last = ks.len() - 1;
    for i in b.range(last) {
        if assign[i] == ks[last] - 1 {
            assign[i] = 0;
        }
    }
    let got = gpu.kmeans_update(&b, &assign, &cents).unwrap();
    let want = cpu.kmeans_update(&b, &assign, &cents).unwrap();
    assert_bits("kmeans_update", &got, &want);
    let coff = b.centroid_offsets();
    let e = coff[last + 1] as usize - 1;
    assert_eq!(&got[e * DIM..(e + 1) * DIM], &cents[e * DIM..(e + 1) * DIM]);
});

/// Ragged problems `(n, k)` at `dim`, values whose f64 sums depend on their order (magnitudes
/// from 1e-6 to 1e6, ±1e15 pairs, exact duplicates), and assignments with empty centroids: the
/// last centroid of every third problem with k >= 2 gets no member, and problems with k close
/// to n leave many empty.
fn update_case(shapes: &[(usize, usize)], dim: usize, seed: u64) -> (Vec<f32>, Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut r = SplitMix64::new(seed);
    let (mut pts, mut offs, mut ks, mut assign) = (Vec::new(), vec![0u32], Vec::new(), Vec::new());
    for (p, &(n, k)) in shapes.iter().enumerate() {
        for i in 0..n * dim {
            // One large centroid (k = 1, n >= 2,048: the block kernel's) whose ±1e15 cancel
            // exactly over the sum, so the rounding of the N(0, 1) values between them decides
            // the mean.
            if k == 1 && n >= 2048 {
                pts.push(match (i / dim) % 4 {
                    0 => 1e15,
                    2 => -1e15,
                    _ => r.normal() as f32,
                });
                continue;
            }
            let x = match r.below(16) {
                0 => 1e15 * if i % 2 == 0 { 1.0 } else { -1.0 },
                1 if i >= dim => pts[pts.len() - dim],
                _ => (r.normal() * 10f64.powi(r.below(13) as i32 - 6)) as f32,
            };
            pts.push(x);
        }
        offs.push((pts.len() / dim) as u32);
        ks.push(k as u32);
        let used = if p % 3 == 0 && k >= 2 { k - 1 } else { k };
        assign.extend((0..n).map(|_| r.below(used as u64) as u32));
    }
    (pts, offs, ks, assign)
}

/// Update v2 (a stable counting sort by assignment, then per centroid an f64 sum in point order;
/// kernels/kmeans_update.cu) equals the CPU reference bit for bit, as v1 does: many problems per
/// launch (165, n = 1..9,000, k = 1..600, including n = k = 1), problems cut into several work
/// items (n >= 4,096), centroids counted in global memory (k > 512), centroids of >= 1,024
/// members (summed by the block kernel `_big`), empty centroids keeping their value, dims 1, 3
/// and 64, outputs poisoned. Then whole Lloyd runs from k-means++ seeds
/// (problems converging at different rounds are skipped by the device loop's done flags), with
/// the same assignments, centroids and iteration counts as the CPU's.
#[test]
fn kmeans_update_v2_bit_identical() {
    #[cfg(feature = "cuda")]
    {
        use twin_engine::backend::cuda::KmeansVersion;
        let cpu = cpu();
        let mut shapes: Vec<(usize, usize)> =
            vec![(1, 1), (2, 1), (2, 2), (7, 3), (33, 1), (100, 7), (300, 40), (700, 600), (5000, 600), (9000, 3), (4100, 9), (3000, 1)];
        let mut r = SplitMix64::new(95);
        for _ in 0..153 {
            let n = 1 + r.below(9) as usize;
            shapes.push((n, 1 + r.below(n as u64) as usize));
        }
        for (label, be) in cuda_under_test("kmeans update v2", 4) {
            be.set_poison_outputs(true);
            for dim in [1usize, 3, 64] {
                let (pts, offs, ks, assign) = update_case(&shapes, dim, 96 + dim as u64);
                let b = KmeansBatch { dim, points: &pts, offsets: &offs, k: &ks };
                let total: usize = ks.iter().map(|&k| k as usize).sum();
                let mut rp = SplitMix64::new(97);
                let prev: Vec<f32> = (0..total * dim).map(|_| rp.normal() as f32).collect();
                let want = cpu.kmeans_update(&b, &assign, &prev).unwrap();
                let kept = (0..total * dim).filter(|&i| want[i].to_bits() == prev[i].to_bits()).count();
                assert!(kept >= dim * 100, "dim {dim}: only {kept} values kept: too few empty centroids");
                for v in [KmeansVersion::V1, KmeansVersion::V2] {
                    be.set_kmeans_version(v);
                    let got = be.kmeans_update(&b, &assign, &prev).unwrap();
                    assert_bits(&format!("{label} {v:?} dim {dim} update"), &got, &want);
                }
                if dim == 64 {
                    continue; // Lloyd at dim 64 runs in the tests above; here it would take minutes
                }
                let seeds: Vec<u64> = (0..ks.len() as u64).map(|i| i * 7 + 1).collect();
                let init = cpu.kmeans_seed(&b, &seeds).unwrap();
                for max_iter in [1u32, 20] {
                    let want = cpu.lloyd(&b, init.clone(), max_iter).unwrap();
                    be.set_kmeans_version(KmeansVersion::V2);
                    let got = be.lloyd(&b, init.clone(), max_iter).unwrap();
                    let what = format!("{label} dim {dim} lloyd max_iter {max_iter}");
                    assert_eq!(got.assign, want.assign, "{what}: assignments");
                    assert_eq!(got.iterations, want.iterations, "{what}: iterations");
                    assert_bits(&what, &got.centroids, &want.centroids);
                    let rounds: std::collections::BTreeSet<u32> = want.iterations.iter().copied().collect();
                    eprintln!("{what}: problems converged after {rounds:?} rounds");
                }
            }
            if label == "cuda-emu" {
                let ran = be.launched_kernels();
                for k in [
                    "kmeans_update_fwd_v2_plan",
                    "kmeans_update_fwd_v2_scatter",
                    "kmeans_update_fwd_v2",
                    "kmeans_update_fwd_v2_big",
                    "kmeans_update_fwd_v1",
                ] {
                    assert!(ran.contains(&k), "{k} never ran");
                }
            }
        }
    }
}

/// The WGSL update (shaders/kmeans_update.wgsl) at v1 (a scan of the problem's assignments per
/// (centroid, dimension)) and v2 (a stable counting sort by assignment over slices of points,
/// then per-centroid sums), both equal to the CPU reference bit for bit: many small problems
/// (n = 1, 2, 97 and 1,025 with k from 1 to 63), problems cut into several slices (n >= 4,096),
/// centroids with no member, duplicated points, dims 1, 7 and 64, outputs poisoned. Then whole
/// runs: `kmeans` (device seeding + Lloyd) and `lloyd` from centroids with exact duplicates
/// (distance ties: the duplicate gets no member and keeps its value), where problems converge
/// at different rounds and the done ones are copied forward while the others go on. With `CI`
/// set, a wgpu backend that cannot start is a failure.
#[test]
fn kmeans_update_wgpu_versions_bit_identical() {
    #[cfg(feature = "wgpu")]
    {
        use twin_engine::backend::{BackendChoice, KmeansVersion};
        match twin_engine::backend::open(BackendChoice::Wgpu) {
            Ok(_) if !wanted("wgpu") => return,
            Ok(_) => {}
            Err(e) => {
                assert!(std::env::var_os("CI").is_none(), "CI is set and the wgpu backend could not start: {e}");
                eprintln!("kmeans_update: wgpu skipped: {e}");
                return;
            }
        }
        let cpu = cpu();
        let versions = [KmeansVersion::V1, KmeansVersion::V2];
        let bes: Vec<_> = versions.iter().map(|&v| (v, wgpu_with(|o| o.versions.kmeans = v))).collect();
        for (v, be) in &bes {
            assert!(be.describe().ends_with(&format!("k-means {}", v.name())), "{v:?}: {}", be.describe());
        }
        let mut shapes: Vec<(usize, usize)> = vec![(1, 1), (2, 1), (2, 2), (4100, 1), (5000, 2), (9000, 3), (20000, 5), (4096, 63)];
        for k in 1..=63 {
            shapes.push((97, k));
        }
        for k in [1, 2, 3, 8, 31, 62, 63] {
            shapes.push((1025, k));
        }
        let mut r = SplitMix64::new(131);
        for _ in 0..40 {
            let n = [1usize, 2, 97, 1025][r.below(4) as usize];
            shapes.push((n, 1 + r.below(n.min(63) as u64) as usize));
        }
        for dim in [1usize, 7, 64] {
            // dim 64: the many small problems only (lavapipe runs v1 at Σk·dim·n trips)
            let sh: Vec<(usize, usize)> = shapes.iter().copied().filter(|&(n, _)| dim < 64 || n <= 1025).collect();
            let (pts, offs, ks, assign) = update_case(&sh, dim, 130 + dim as u64);
            let b = KmeansBatch { dim, points: &pts, offsets: &offs, k: &ks };
            let total: usize = ks.iter().map(|&k| k as usize).sum();
            let mut rp = SplitMix64::new(132);
            let prev: Vec<f32> = (0..total * dim).map(|_| rp.normal() as f32).collect();
            let want = cpu.kmeans_update(&b, &assign, &prev).unwrap();
            let kept = (0..total * dim).filter(|&i| want[i].to_bits() == prev[i].to_bits()).count();
            assert!(kept >= dim * 50, "dim {dim}: only {kept} values kept: too few empty centroids");
            for (v, be) in &bes {
                let got = be.kmeans_update(&b, &assign, &prev).unwrap();
                assert_bits(&format!("wgpu {v:?} dim {dim} update"), &got, &want);
            }
        }
        // Whole runs, v1 and v2 against the CPU.
        let (pts, offs, ks) = problems(&[1, 2, 97, 1025, 333, 20, 4500], 133);
        let b = KmeansBatch { dim: DIM, points: &pts, offsets: &offs, k: &ks };
        let seeds: Vec<u64> = (0..ks.len() as u64).map(|i| 3 * i + 5).collect();
        let mut init = cpu.kmeans_seed(&b, &seeds).unwrap();
        let coff = b.centroid_offsets();
        for p in 0..ks.len() {
            if ks[p] >= 2 {
                let c0 = coff[p] as usize * DIM;
                let row: Vec<f32> = init[c0..c0 + DIM].to_vec();
                init[c0 + DIM..c0 + 2 * DIM].copy_from_slice(&row);
            }
        }
        for max_iter in [1u32, 3, 30] {
            let want_k = cpu.kmeans(&b, &seeds, max_iter).unwrap();
            let want_l = cpu.lloyd(&b, init.clone(), max_iter).unwrap();
            if max_iter == 30 {
                let rounds: std::collections::BTreeSet<u32> = want_l.iterations.iter().chain(&want_k.iterations).copied().collect();
                assert!(rounds.len() >= 2 && rounds.iter().any(|&x| x < max_iter), "no problem done early: {rounds:?}");
            }
            for (v, be) in &bes {
                for (op, got, want) in [
                    ("kmeans", be.kmeans(&b, &seeds, max_iter).unwrap(), &want_k),
                    ("lloyd", be.lloyd(&b, init.clone(), max_iter).unwrap(), &want_l),
                ] {
                    let what = format!("wgpu {v:?} {op} max_iter {max_iter}");
                    assert_eq!(got.assign, want.assign, "{what}: assignments");
                    assert_eq!(got.iterations, want.iterations, "{what}: iterations");
                    assert_bits(&what, &got.centroids, &want.centroids);
                }
            }
        }
    }
}
