//! k-means assignment on the fast CPU path, bit-identical to the reference (`cpu::kmeans`).
//!
//! The reference sums `Σ_t (x_t - c_t)²` in f32 for every point and centroid: `3·N·k·dim`
//! flops with no FMA. Here the distances are first estimated from one f32 GEMM per tile of
//! points, `d̂ = ‖x‖² - 2·x·c + ‖c‖²` (`2·N·k·dim` flops on matrixmultiply's FMA kernels), and
//! each estimate carries an error bound `E` that also covers the reference's own rounding:
//! both |d̂ - d| and |d_ref - d| are below `(dim + 4)·u·(‖x‖ + ‖c‖)²` with `u = 2⁻²⁴` (Higham's
//! bound for a length-`dim` dot product, Cauchy-Schwarz for `Σ|x_t c_t|`, and
//! `d ≤ (‖x‖ + ‖c‖)²`), plus an absolute term for underflow; we use twice that. A centroid can be the reference's choice only if
//! `d̂ - E ≤ min (d̂ + E)`: when one centroid passes, it is the answer; otherwise the survivors
//! are recomputed exactly as the reference does (`cpu::kmeans::dist2`, ties to the lower index).
//! A non-finite estimate sends the point through the reference's loop whole. Assignments, and
//! therefore clusters, are the reference's bit for bit.

use rayon::prelude::*;

use crate::backend::cpu::kmeans::{dist2, nearest};
use crate::backend::KmeansBatch;

/// Points per GEMM tile.
const PT: usize = 256;

/// One work item: points `[p0, p1)` of problem `prob`, written into `dst`.
struct Item<'a> {
    prob: usize,
    p0: usize,
    dst: &'a mut [u32],
}

pub(crate) fn assign(b: &KmeansBatch, centroids: &[f32]) -> Vec<u32> {
    let dim = b.dim;
    let coff = b.centroid_offsets();
    let n = if dim == 0 { 0 } else { b.points.len() / dim };
    let mut out = vec![0u32; n];
    if dim == 0 {
        return out;
    }
    // Per problem: its centroids' squared norms and norms.
    let norms: Vec<Vec<(f32, f32)>> = (0..b.n_problems())
        .into_par_iter()
        .map(|p| {
            let cents = &centroids[coff[p] as usize * dim..coff[p + 1] as usize * dim];
            cents.chunks_exact(dim).map(|c| sq_norm(c)).collect()
        })
        .collect();
    let mut items = Vec::new();
    let mut rest: &mut [u32] = &mut out;
    for p in 0..b.n_problems() {
        let r = b.range(p);
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(r.len());
        rest = tail;
        for (t, dst) in head.chunks_mut(PT).enumerate() {
            items.push(Item { prob: p, p0: r.start + t * PT, dst });
        }
    }
    items.into_par_iter().for_each_init(Vec::new, |dots, it| {
        let p = it.prob;
        let cents = &centroids[coff[p] as usize * dim..coff[p + 1] as usize * dim];
        let k = b.k[p] as usize;
        let m = it.dst.len();
        let xs = &b.points[it.p0 * dim..(it.p0 + m) * dim];
        if k == 0 {
            it.dst.fill(0);
            return;
        }
        dots.resize(m * k, 0f32);
        gemm_nt(xs, cents, m, k, dim, dots);
        for (i, a) in it.dst.iter_mut().enumerate() {
            let x = &xs[i * dim..(i + 1) * dim];
            *a = pick(x, cents, dim, &dots[i * k..(i + 1) * k], &norms[p]);
        }
    });
    out
}

/// `(‖c‖², ‖c‖)` in f32.
fn sq_norm(c: &[f32]) -> (f32, f32) {
    let s: f32 = c.iter().map(|v| v * v).sum();
    (s, s.sqrt())
}

/// The reference's nearest centroid of `x`, screened with the GEMM's dots (see the module doc).
fn pick(x: &[f32], cents: &[f32], dim: usize, dots: &[f32], cn: &[(f32, f32)]) -> u32 {
    let (xx, nx) = sq_norm(x);
    let eps = 2.0 * (dim as f32 + 4.0) * f32::EPSILON * 0.5;
    // Higham's bound assumes no underflow: products in the subnormal range lose up to 2⁻¹⁵⁰
    // each, far below this absolute term.
    let tiny = dim as f32 * 1e-37;
    let mut best_hi = f32::INFINITY;
    let mut finite = nx.is_finite();
    for (j, &dot) in dots.iter().enumerate() {
        let d = xx - 2.0 * dot + cn[j].0;
        let e = eps * (nx + cn[j].1) * (nx + cn[j].1) + tiny;
        finite &= d.is_finite() && e.is_finite();
        best_hi = best_hi.min(d + e);
    }
    if !finite {
        return nearest(x, cents, dim);
    }
    let mut only = None;
    let mut several = false;
    for (j, &dot) in dots.iter().enumerate() {
        let d = xx - 2.0 * dot + cn[j].0;
        let e = eps * (nx + cn[j].1) * (nx + cn[j].1) + tiny;
        if d - e <= best_hi {
            if only.is_some() {
                several = true;
                break;
            }
            only = Some(j);
        }
    }
    match (only, several) {
        (Some(j), false) => j as u32,
        _ => {
            // Exact, as the reference, over the survivors (lowest index on ties).
            let mut best = 0u32;
            let mut best_d = f32::INFINITY;
            for (j, &dot) in dots.iter().enumerate() {
                let d = xx - 2.0 * dot + cn[j].0;
                let e = eps * (nx + cn[j].1) * (nx + cn[j].1) + tiny;
                if d - e <= best_hi {
                    let exact = dist2(x, &cents[j * dim..(j + 1) * dim]);
                    if exact < best_d {
                        best_d = exact;
                        best = j as u32;
                    }
                }
            }
            best
        }
    }
}

/// `out [m, k] = xs [m, dim] · centsᵀ` (`cents [k, dim]`).
fn gemm_nt(xs: &[f32], cents: &[f32], m: usize, k: usize, dim: usize, out: &mut [f32]) {
    let (xs, cents, out) = (&xs[..m * dim], &cents[..k * dim], &mut out[..m * k]);
    // SAFETY: the slices above hold exactly m*dim, k*dim and m*k f32s; centsᵀ is addressed with
    // row stride 1 and column stride dim, which stays inside `cents`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            dim,
            k,
            1.0,
            xs.as_ptr(),
            dim as isize,
            1,
            cents.as_ptr(),
            1,
            dim as isize,
            0.0,
            out.as_mut_ptr(),
            k as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Against the reference on what screening could get wrong: duplicated centroids (exact
    /// ties), points on the bisector of two centroids, near-ties a few ulps apart, magnitudes
    /// whose squares overflow (the non-finite fallback) or underflow, and k = 1.
    #[test]
    fn assignments_equal_the_reference_bit_for_bit() {
        let mut r = SplitMix64::new(5);
        for (case, scale) in [1.0f32, 1e-21, 1e19, 3e5].iter().enumerate() {
            for dim in [1usize, 3, 16, 64] {
                let ks = [1u32, 7, 31];
                let mut offsets = vec![0u32];
                let mut points = Vec::new();
                let mut cents = Vec::new();
                for &k in &ks {
                    let base: Vec<f32> = (0..k as usize * dim).map(|_| r.normal() as f32 * scale).collect();
                    let mut c = base.clone();
                    if k > 2 {
                        // Centroid 2 duplicates centroid 1: every point near them ties.
                        let (a, b) = c.split_at_mut(2 * dim);
                        b[..dim].copy_from_slice(&a[dim..2 * dim]);
                    }
                    let n = 300 + case * 7;
                    for i in 0..n {
                        let j = i % k as usize;
                        let jj = (i + 1) % k as usize;
                        for t in 0..dim {
                            let v = match i % 4 {
                                // The midpoint of two centroids.
                                0 => 0.5 * (c[j * dim + t] + c[jj * dim + t]),
                                // A centroid nudged by one ulp.
                                1 => f32::from_bits(c[j * dim + t].to_bits() ^ 1),
                                _ => c[j * dim + t] + r.normal() as f32 * scale,
                            };
                            points.push(v);
                        }
                    }
                    cents.extend_from_slice(&c);
                    offsets.push(offsets.last().unwrap() + n as u32);
                }
                let b = KmeansBatch { dim, points: &points, offsets: &offsets, k: &ks };
                let want = crate::backend::cpu::kmeans::assign(&b, &cents);
                let got = assign(&b, &cents);
                assert_eq!(got, want, "scale {scale} dim {dim}");
            }
        }
    }
}
