//! The attention rows of a training step (SPEC §5, step 3): for every attention row, its inherent
//! features `x_h`, its bias `ln n + Σ_j cb[cross_j]`, and (after `V = X W^v`) its cross value
//! `V += Σ_j cv[cross_j]`. The reference for `kernels/twin_rows.cu` and `shaders/twin_rows.wgsl`.
//!
//! Attention rows are the long finalists then the short rows: row `n < n_fin` reads long position
//! `sel[n]`; row `n ≥ n_fin` reads position `n_long + (n - n_fin)`. Per position the staged
//! `feat [P, 4]` (item, author, topic, duration), `cross [P, J]` and `log_n [P]` (0 for short).
//! Sums in f32 in j order, starting from `ln n` (bias) and from the row of `V` (value), as the
//! host step adds them.

use rayon::prelude::*;

use super::gsu_train::{inherent, FeatDims};
use super::Real;

/// Position read by attention row `n`.
pub fn position(sel: &[u32], n_long: usize, n: usize) -> usize {
    if n < sel.len() {
        sel[n] as usize
    } else {
        n_long + (n - sel.len())
    }
}

/// Per-position inputs of the attention rows.
pub struct RowsIn<'a, T> {
    pub tables: [&'a [T]; 4],
    pub dims: FeatDims,
    pub heads: usize,
    pub n_cross: usize,
    pub feat: &'a [u32],
    pub cross: &'a [u32],
    pub log_n: &'a [f32],
    pub n_long: usize,
}

/// `(X [N, H], bias [N, h])` for `N = sel.len() + n_short` rows.
pub fn rows<T: Real>(x: &RowsIn<'_, T>, cb: &[T], sel: &[u32], n_short: usize) -> (Vec<T>, Vec<T>) {
    let (hd, h, j_n) = (x.dims.width(), x.heads, x.n_cross);
    let n = sel.len() + n_short;
    let mut xs = vec![T::zero(); n * hd];
    let mut bias = vec![T::zero(); n * h];
    xs.par_chunks_mut(hd.max(1)).zip(bias.par_chunks_mut(h.max(1))).enumerate().for_each(|(r, (xr, br))| {
        let p = position(sel, x.n_long, r);
        inherent(x.tables, x.dims, &x.feat[p * 4..p * 4 + 4], xr);
        for b in br.iter_mut() {
            *b = T::of_f32(x.log_n[p]);
        }
        for j in 0..j_n {
            let c = x.cross[p * j_n + j] as usize;
            for (a, b) in br.iter_mut().enumerate() {
                *b = *b + cb[c * h + a];
            }
        }
    });
    (xs, bias)
}

/// In place: `v[n] += Σ_j cv[cross[p_n, j]]`, `v [N, D]`, `cv [ΣV, D]`.
pub fn add_values<T: Real>(v: &mut [T], d: usize, cv: &[T], cross: &[u32], n_cross: usize, sel: &[u32], n_long: usize) {
    v.par_chunks_mut(d.max(1)).enumerate().for_each(|(r, vr)| {
        let p = position(sel, n_long, r);
        for j in 0..n_cross {
            let c = cross[p * n_cross + j] as usize;
            for (o, &y) in vr.iter_mut().zip(&cv[c * d..(c + 1) * d]) {
                *o = *o + y;
            }
        }
    });
}
