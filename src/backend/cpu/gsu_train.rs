//! The training GSU (SPEC §5, step 2): score every long row of a sample against the sample's
//! folded query, keep the top K with SPEC's tie rule, and map every gradient position to the
//! attention row that holds it. The reference for `kernels/gsu_train.cu` and
//! `shaders/gsu_train.wgsl`.
//!
//! Folded query: the head mean of `q_a·k_{l,a}/√d_k` is `x_h(l) · q̄` with
//! `q̄ = (1/(h√d_k)) Σ_a W^k[:, a] q_a = (1/(h√d_k)) W^k q` (one `[H]` vector per sample), so the
//! GSU needs no per-row projection and one dot of width `H` per row.
//!
//! Score of long position `p` in sample `b`, in f32, in exactly this order:
//!   `x    = [item_emb[f0] | author_emb[f1] | topic_emb[f2] | duration_emb[f3]]`  (`f = feat[p]`)
//!   `dot  = Σ_i x[i] · qbar[b, i]`  (i ascending from 0, one rounding per multiply and add)
//!   with bias: `bs = Σ_j Σ_a cb[cross[p, j], a]` (j outer, a inner, ascending from 0);
//!   `score = (dot · q_scale + bs · (1/h)) + log_n[p]`; without: `score = dot · q_scale`.
//! `twin` / `twin-v2` use the bias form with `qbar = W^k q`, `q_scale = 1/(h√d_k)`; `sim-soft`
//! puts `e_item(target)` in `qbar`'s item columns (zeros elsewhere), `q_scale = 1`, no bias.
//!
//! Selection per sample (`long_offsets[b]..long_offsets[b+1]`, length `L_b`): all rows when
//! `L_b ≤ K`, else the `K` best by score, a tie going to the larger position (SPEC §3.3). The
//! finalists keep sequence order: sample `b` owns finalist rows `fin_offsets[b]..` with
//! `fin_offsets[b+1] - fin_offsets[b] = min(L_b, K)`, and `sel[f]` is the long position of
//! finalist `f`.
//!
//! Row map over gradient positions `0 .. n_long + tail`: a long position maps to its finalist
//! index or [`NOT_KEPT`]; a position `p ≥ n_long` maps to `n_fin + (p - n_long)` (short rows and
//! whatever the caller appends after the finalists: a fixed offset). `segment_sum_mapped` reads
//! gradients through it.

use std::cmp::Ordering;

use rayon::prelude::*;

use super::Real;

/// Map value of a long position that is not a finalist.
pub const NOT_KEPT: u32 = u32::MAX;

/// Widths of the inherent features `x_h = [item (id) | author (id) | topic (sm) | duration (sm)]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatDims {
    pub id: usize,
    pub small: usize,
}

impl FeatDims {
    /// `H`.
    pub fn width(&self) -> usize {
        2 * self.id + 2 * self.small
    }
    /// Column start and width of feature `f` (0 item, 1 author, 2 topic, 3 duration).
    pub fn part(&self, f: usize) -> (usize, usize) {
        match f {
            0 => (0, self.id),
            1 => (self.id, self.id),
            2 => (2 * self.id, self.small),
            _ => (2 * self.id + self.small, self.small),
        }
    }
}

/// `x_h` of one position into `out [H]`: the four table rows side by side.
pub fn inherent<T: Real>(tables: [&[T]; 4], dims: FeatDims, feat: &[u32], out: &mut [T]) {
    for (f, table) in tables.iter().enumerate() {
        let (c0, w) = dims.part(f);
        let r = feat[f] as usize;
        out[c0..c0 + w].copy_from_slice(&table[r * w..(r + 1) * w]);
    }
}

/// Inputs of [`scores`]: `qbar [B, H]`, the four tables, `cb [ΣV, h]`, per long position
/// `feat [n_long, 4]`, `cross [n_long, J]`, `log_n [n_long]`, and `long_offsets [B + 1]`.
pub struct GsuTrainRef<'a, T> {
    pub qbar: &'a [T],
    pub tables: [&'a [T]; 4],
    pub dims: FeatDims,
    pub cb: &'a [T],
    pub heads: usize,
    pub n_cross: usize,
    pub feat: &'a [u32],
    pub cross: &'a [u32],
    pub log_n: &'a [f32],
    pub long_offsets: &'a [u32],
    pub q_scale: T,
    pub bias: bool,
}

/// The score of every long position (module docs), `[n_long]`.
pub fn scores<T: Real>(x: &GsuTrainRef<'_, T>) -> Vec<T> {
    let hd = x.dims.width();
    let n_long = *x.long_offsets.last().unwrap_or(&0) as usize;
    let samples = x.long_offsets.len().saturating_sub(1);
    let inv_h = T::one() / T::of(x.heads as f64);
    let mut out = vec![T::zero(); n_long];
    let mut starts: Vec<(usize, &mut [T])> = Vec::with_capacity(samples);
    let mut rest = out.as_mut_slice();
    for b in 0..samples {
        let (lo, hi) = (x.long_offsets[b] as usize, x.long_offsets[b + 1] as usize);
        let (mine, tail) = rest.split_at_mut(hi - lo);
        starts.push((b, mine));
        rest = tail;
    }
    starts.into_par_iter().for_each(|(b, dst)| {
        let q = &x.qbar[b * hd..(b + 1) * hd];
        let mut xr = vec![T::zero(); hd];
        let p0 = x.long_offsets[b] as usize;
        for (i, s) in dst.iter_mut().enumerate() {
            let p = p0 + i;
            inherent(x.tables, x.dims, &x.feat[p * 4..p * 4 + 4], &mut xr);
            let mut dot = T::zero();
            for (&a, &c) in xr.iter().zip(q) {
                dot = dot + a * c;
            }
            *s = if x.bias {
                let mut bs = T::zero();
                for j in 0..x.n_cross {
                    let c = x.cross[p * x.n_cross + j] as usize;
                    for a in 0..x.heads {
                        bs = bs + x.cb[c * x.heads + a];
                    }
                }
                (dot * x.q_scale + bs * inv_h) + T::of_f32(x.log_n[p])
            } else {
                dot * x.q_scale
            };
        }
    });
    out
}

/// SPEC's rank order: the larger score first, a tie to the larger position.
fn beats<T: Real>(a: (usize, T), b: (usize, T)) -> Ordering {
    b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal).then(b.0.cmp(&a.0))
}

/// Finalists per sample: `(fin_offsets [B + 1], sel [n_fin])` (module docs).
pub fn select<T: Real>(scores: &[T], long_offsets: &[u32], k: usize) -> (Vec<u32>, Vec<u32>) {
    let samples = long_offsets.len().saturating_sub(1);
    let per: Vec<Vec<u32>> = (0..samples)
        .into_par_iter()
        .map(|b| {
            let (lo, hi) = (long_offsets[b] as usize, long_offsets[b + 1] as usize);
            if hi - lo <= k {
                return (lo as u32..hi as u32).collect();
            }
            let mut all: Vec<(usize, T)> = (lo..hi).map(|p| (p, scores[p])).collect();
            if k == 0 {
                return Vec::new();
            }
            all.select_nth_unstable_by(k - 1, |a, b| beats(*a, *b));
            let mut pos: Vec<u32> = all[..k].iter().map(|&(p, _)| p as u32).collect();
            pos.sort_unstable();
            pos
        })
        .collect();
    let mut offs = Vec::with_capacity(samples + 1);
    offs.push(0u32);
    let mut sel = Vec::new();
    for f in per {
        sel.extend_from_slice(&f);
        offs.push(sel.len() as u32);
    }
    (offs, sel)
}

/// Finalist offsets from the lengths alone: `min(L_b, K)` rows per sample.
pub fn fin_offsets(long_offsets: &[u32], k: usize) -> Vec<u32> {
    let mut offs = vec![0u32];
    for w in long_offsets.windows(2) {
        let n = ((w[1] - w[0]) as usize).min(k) as u32;
        offs.push(offs.last().copied().unwrap_or(0) + n);
    }
    offs
}

/// The row map over `n_long + tail` positions (module docs).
pub fn row_map(sel: &[u32], n_long: usize, tail: usize) -> Vec<u32> {
    let mut map = vec![NOT_KEPT; n_long + tail];
    for (f, &p) in sel.iter().enumerate() {
        map[p as usize] = f as u32;
    }
    for t in 0..tail {
        map[n_long + t] = (sel.len() + t) as u32;
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_larger_position_and_finalists_keep_order() {
        let s = [1.0f32, 3.0, 3.0, 2.0, 3.0, 0.5];
        let (offs, sel) = select(&s, &[0, 6], 2);
        assert_eq!(offs, vec![0, 2]);
        assert_eq!(sel, vec![2, 4]);
        let (offs, sel) = select(&s, &[0, 2, 6], 3);
        assert_eq!(offs, vec![0, 2, 5]);
        assert_eq!(sel, vec![0, 1, 2, 3, 4]);
        assert_eq!(fin_offsets(&[0, 2, 6], 3), offs);
        assert_eq!(row_map(&[1, 3], 4, 2), vec![NOT_KEPT, 0, NOT_KEPT, 1, 2, 3]);
    }
}
