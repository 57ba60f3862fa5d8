//! Batched k-means on the CPU (SPEC §4.3): k-means++ seeding, nearest-centroid assignment,
//! centroid update. These three functions define the arithmetic every backend reproduces:
//! - distance `Σ_t (x_t - c_t)^2` in f32, summed in `t` order (no FMA), ties to the lower index;
//! - update: members summed in point order in f64, divided by the count, rounded to f32;
//!   an empty centroid keeps its previous value;
//! - seeding: SplitMix64 per problem, first centroid uniform, the next ones by D² sampling over
//!   f64 cumulative weights in point order.

use rayon::prelude::*;

use crate::backend::KmeansBatch;
use crate::rng::SplitMix64;

/// SPEC's distance, exactly as every backend computes it.
#[inline]
pub fn dist2(x: &[f32], c: &[f32]) -> f32 {
    let mut acc = 0f32;
    for (a, b) in x.iter().zip(c) {
        let t = a - b;
        acc += t * t;
    }
    acc
}

/// Index of the nearest centroid among `cents` (`[k, dim]`), lowest index on ties.
#[inline]
pub fn nearest(x: &[f32], cents: &[f32], dim: usize) -> u32 {
    let mut best = 0u32;
    let mut best_d = f32::INFINITY;
    for (j, c) in cents.chunks_exact(dim).enumerate() {
        let d = dist2(x, c);
        if d < best_d {
            best_d = d;
            best = j as u32;
        }
    }
    best
}

/// Centroids of one problem transposed to `[dim][k_pad]`, `k_pad` a multiple of `LANES`,
/// padded with +inf (distance +inf never wins). Lets the assignment run `LANES` centroids per
/// SIMD step while every lane still sums its distance sequentially in `t` order, so the result
/// is bit-identical to [`dist2`] (Rust never contracts `a - b` then `acc + t * t` into an FMA).
const LANES: usize = 8;

fn transpose_padded(cents: &[f32], dim: usize) -> (Vec<f32>, usize) {
    let k = cents.len() / dim;
    let k_pad = k.div_ceil(LANES) * LANES;
    let mut ct = vec![f32::INFINITY; dim * k_pad];
    for j in 0..k {
        for t in 0..dim {
            ct[t * k_pad + j] = cents[j * dim + t];
        }
    }
    (ct, k_pad)
}

/// Same result as [`nearest`], `LANES` centroids at a time.
#[inline]
fn nearest_blocked(x: &[f32], ct: &[f32], k: usize, k_pad: usize) -> u32 {
    let mut best = 0u32;
    let mut best_d = f32::INFINITY;
    for blk in 0..k_pad / LANES {
        let mut acc = [0f32; LANES];
        for (t, &xt) in x.iter().enumerate() {
            let c = &ct[t * k_pad + blk * LANES..t * k_pad + (blk + 1) * LANES];
            for j in 0..LANES {
                let d = xt - c[j];
                acc[j] += d * d;
            }
        }
        for (j, &d) in acc.iter().enumerate() {
            let idx = blk * LANES + j;
            if idx < k && d < best_d {
                best_d = d;
                best = idx as u32;
            }
        }
    }
    best
}

pub fn assign(b: &KmeansBatch, centroids: &[f32]) -> Vec<u32> {
    let dim = b.dim;
    let coff = b.centroid_offsets();
    let n = b.points.len() / dim;
    let mut out = vec![0u32; n];
    // Split the output per problem, then parallelise over points inside each problem.
    let mut rest: &mut [u32] = &mut out;
    let mut parts = Vec::with_capacity(b.n_problems());
    for p in 0..b.n_problems() {
        let (head, tail) = rest.split_at_mut(b.range(p).len());
        parts.push((p, head));
        rest = tail;
    }
    parts.into_par_iter().for_each(|(p, dst)| {
        let r = b.range(p);
        let cents = &centroids[coff[p] as usize * dim..coff[p + 1] as usize * dim];
        let k = b.k[p] as usize;
        let (ct, k_pad) = transpose_padded(cents, dim);
        dst.par_chunks_mut(256).enumerate().for_each(|(ch, d)| {
            for (i, a) in d.iter_mut().enumerate() {
                let pi = r.start + ch * 256 + i;
                *a = nearest_blocked(&b.points[pi * dim..(pi + 1) * dim], &ct, k, k_pad);
            }
        });
    });
    out
}

pub fn update(b: &KmeansBatch, assign: &[u32], prev: &[f32]) -> Vec<f32> {
    let dim = b.dim;
    let mut out = prev.to_vec();
    let mut rest: &mut [f32] = &mut out;
    let mut parts = Vec::with_capacity(b.n_problems());
    for p in 0..b.n_problems() {
        let (head, tail) = rest.split_at_mut(b.k[p] as usize * dim);
        parts.push((p, head));
        rest = tail;
    }
    parts.into_par_iter().for_each(|(p, dst)| {
        let k = b.k[p] as usize;
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0u64; k];
        for i in b.range(p) {
            let a = assign[i] as usize;
            counts[a] += 1;
            let x = &b.points[i * dim..(i + 1) * dim];
            for (s, &v) in sums[a * dim..(a + 1) * dim].iter_mut().zip(x) {
                *s += v as f64;
            }
        }
        for j in 0..k {
            if counts[j] == 0 {
                continue;
            }
            let n = counts[j] as f64;
            for t in 0..dim {
                dst[j * dim + t] = (sums[j * dim + t] / n) as f32;
            }
        }
    });
    out
}

/// Points transposed to `[dim][n_pad]` so distances run `LANES` points per SIMD step.
fn transpose_points(points: &[f32], dim: usize) -> (Vec<f32>, usize) {
    let n = points.len() / dim;
    let n_pad = n.div_ceil(LANES) * LANES;
    let mut pt = vec![0f32; dim * n_pad];
    for i in 0..n {
        for t in 0..dim {
            pt[t * n_pad + i] = points[i * dim + t];
        }
    }
    (pt, n_pad)
}

/// `mind[i] = min(mind[i], dist2(x_i, c))`, each lane summing in `t` order: bit-identical to
/// [`dist2`] point by point.
fn update_min_dist(pt: &[f32], n_pad: usize, c: &[f32], mind: &mut [f32]) {
    const CHUNK: usize = 64 * LANES;
    mind.par_chunks_mut(CHUNK).enumerate().for_each(|(ch, m)| {
        for (b, mb) in m.chunks_mut(LANES).enumerate() {
            let base = ch * CHUNK + b * LANES;
            let mut acc = [0f32; LANES];
            for (t, &ct) in c.iter().enumerate() {
                let x = &pt[t * n_pad + base..t * n_pad + base + LANES];
                for j in 0..LANES {
                    let d = x[j] - ct;
                    acc[j] += d * d;
                }
            }
            for (mm, &a) in mb.iter_mut().zip(&acc) {
                if a < *mm {
                    *mm = a;
                }
            }
        }
    });
}

/// k-means++ for one problem: indices of the chosen points.
pub fn seed_one(points: &[f32], dim: usize, k: usize, seed: u64) -> Vec<usize> {
    let n = points.len() / dim;
    let mut rng = SplitMix64::new(seed);
    let mut chosen = Vec::with_capacity(k);
    let first = rng.below(n as u64) as usize;
    chosen.push(first);
    let (pt, n_pad) = transpose_points(points, dim);
    let mut mind = vec![f32::INFINITY; n];
    update_min_dist(&pt, n_pad, &points[first * dim..(first + 1) * dim], &mut mind);
    while chosen.len() < k {
        let total: f64 = mind.iter().map(|&d| d as f64).sum();
        let next = if total > 0.0 {
            let u = rng.next_f64() * total;
            let mut cum = 0f64;
            let mut pick = None;
            let mut last_pos = 0;
            for (i, &d) in mind.iter().enumerate() {
                if d > 0.0 {
                    last_pos = i;
                    cum += d as f64;
                    if cum > u {
                        pick = Some(i);
                        break;
                    }
                }
            }
            pick.unwrap_or(last_pos)
        } else {
            // Every point coincides with a chosen centroid: any pick duplicates one.
            rng.below(n as u64) as usize
        };
        chosen.push(next);
        update_min_dist(&pt, n_pad, &points[next * dim..(next + 1) * dim], &mut mind);
    }
    chosen
}

pub fn seed_all(b: &KmeansBatch, seeds: &[u64]) -> Vec<f32> {
    let dim = b.dim;
    let per: Vec<Vec<f32>> = (0..b.n_problems())
        .into_par_iter()
        .map(|p| {
            let r = b.range(p);
            let pts = &b.points[r.start * dim..r.end * dim];
            let idx = seed_one(pts, dim, b.k[p] as usize, seeds[p]);
            let mut c = Vec::with_capacity(idx.len() * dim);
            for i in idx {
                c.extend_from_slice(&pts[i * dim..(i + 1) * dim]);
            }
            c
        })
        .collect();
    per.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_min_dist_equals_scalar_reference() {
        let mut rng = SplitMix64::new(4);
        for (n, dim) in [(1usize, 1usize), (7, 3), (8, 64), (1000, 64), (513, 5)] {
            let pts: Vec<f32> = (0..n * dim).map(|_| rng.normal() as f32).collect();
            let (pt, n_pad) = transpose_points(&pts, dim);
            let mut mind = vec![f32::INFINITY; n];
            for c in [0, n / 2, n - 1] {
                let cv = &pts[c * dim..(c + 1) * dim];
                update_min_dist(&pt, n_pad, cv, &mut mind);
            }
            for i in 0..n {
                let x = &pts[i * dim..(i + 1) * dim];
                let want = [0, n / 2, n - 1].iter().map(|&c| dist2(x, &pts[c * dim..(c + 1) * dim])).fold(f32::INFINITY, f32::min);
                assert_eq!(mind[i].to_bits(), want.to_bits(), "n {n} dim {dim} i {i}");
            }
        }
    }

    #[test]
    fn blocked_assignment_equals_scalar_reference() {
        let mut rng = SplitMix64::new(3);
        for k in [1usize, 2, 7, 8, 9, 15, 16, 17, 63] {
            for dim in [1usize, 3, 64] {
                let cents: Vec<f32> = (0..k * dim).map(|_| rng.normal() as f32).collect();
                let (ct, k_pad) = transpose_padded(&cents, dim);
                for i in 0..200 {
                    // Every 5th point is a centroid itself, so exact ties with duplicates occur.
                    let x: Vec<f32> = if i % 5 == 0 {
                        cents[(i % k) * dim..(i % k + 1) * dim].to_vec()
                    } else {
                        (0..dim).map(|_| rng.normal() as f32).collect()
                    };
                    assert_eq!(nearest_blocked(&x, &ct, k, k_pad), nearest(&x, &cents, dim), "k {k} dim {dim} point {i}");
                }
            }
        }
    }
}
