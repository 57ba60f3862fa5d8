//! CP-GSU (SPEC §3.4) on the fast CPU path: per request and tile of candidates the scores
//! `g_{b,l} = q_b·k_l · (1/(h√d_k)) + (Σ_a bias[l,a]) / h` come out of one f32 GEMM
//! (`matrixmultiply::sgemm`, the constant term preloaded into the output so `beta = 1` adds it),
//! one `[BT, LT]` tile at a time so the block stays in cache, and each tile is selected as soon
//! as it is produced by a streaming top-K ([`Selector`]).
//!
//! Differs from the reference (`cpu::gsu_topk`, f64 dots) by f32 rounding only: the parity
//! test compares top-K as index sets with near-ties allowed (tests/parity/gsu_topk.rs).

/// An entry `(position, score)` as one integer whose ascending order is SPEC's order, best
/// first (higher score, then larger position): the score's bits mapped so that unsigned order is
/// numeric order (`-0.0` taken as `+0.0`, which compares equal to it), then the position, all
/// complemented. Selection and sorting then compare plain `u64`s: the float comparator with its
/// tie-break branches took a third of the online path's time. Entries are never NaN (filtered
/// on entry).
#[inline]
fn rank_key(pos: u32, score: f32) -> u64 {
    let b = (score + 0.0).to_bits();
    let o = if b >> 31 != 0 { !b } else { b | 0x8000_0000 };
    !(((o as u64) << 32) | pos as u64)
}

/// The entry back from [`rank_key`].
#[inline]
fn entry(key: u64) -> (u32, f32) {
    let k = !key;
    let o = (k >> 32) as u32;
    let b = if o >> 31 != 0 { o & 0x7fff_ffff } else { !o };
    (k as u32, f32::from_bits(b))
}

/// Candidates per tile (rows of the score block).
pub(crate) const BT: usize = 64;
/// Behaviours per tile (columns of the score block): `BT × LT × 4` bytes = 64 KiB.
pub(crate) const LT: usize = 256;

/// Streaming top-K state of one candidate under SPEC's order (higher score, then larger
/// position); its entries live in a buffer of [`cap`] slots owned by the caller. When the buffer
/// is full the best `k` are kept and the threshold rises to the K-th score. Positions arrive in
/// increasing order within a stream, so an entry equal to the threshold is kept (on a tie the
/// later, larger position ranks first).
#[derive(Clone, Copy)]
pub(crate) struct Sel {
    len: usize,
    thresh: f32,
    nan: Option<u32>,
}

/// Slots a selector of `k` uses.
pub(crate) fn cap(k: usize) -> usize {
    2 * k + 64
}

impl Sel {
    pub const EMPTY: Sel = Sel { len: 0, thresh: f32::NEG_INFINITY, nan: None };

    /// Offer a row of scores for positions `pos0..`.
    #[inline]
    pub fn push_row(&mut self, buf: &mut [u64], k: usize, pos0: u32, row: &[f32]) {
        for (j, &s) in row.iter().enumerate() {
            if s >= self.thresh {
                if self.len == buf.len() {
                    self.compact(buf, k);
                    if s < self.thresh {
                        continue;
                    }
                }
                buf[self.len] = rank_key(pos0 + j as u32, s);
                self.len += 1;
            } else if s.is_nan() && self.nan.is_none() {
                self.nan = Some(pos0 + j as u32);
            }
        }
    }
    /// Offer entries in any order (a merge of partial results: no threshold shortcut).
    pub fn push_all(&mut self, buf: &mut [u64], k: usize, entries: &[(u32, f32)]) {
        for &(p, s) in entries {
            if self.len == buf.len() {
                self.compact(buf, k);
            }
            buf[self.len] = rank_key(p, s);
            self.len += 1;
        }
    }
    fn compact(&mut self, buf: &mut [u64], k: usize) {
        if self.len > k {
            buf[..self.len].select_nth_unstable(k - 1);
            self.len = k;
            self.thresh = entry(buf[k - 1]).1;
        }
    }
    /// The first position whose score was NaN, if any.
    pub fn nan(&self) -> Option<u32> {
        self.nan
    }
    /// The best `min(k, seen)` entries, best first, decoded into `out` (at least that long).
    pub fn finish<'o>(&mut self, buf: &mut [u64], k: usize, out: &'o mut [(u32, f32)]) -> &'o [(u32, f32)] {
        let k = k.min(self.len);
        if self.len > k {
            buf[..self.len].select_nth_unstable(k - 1);
        }
        self.len = k;
        buf[..k].sort_unstable();
        for (o, &key) in out.iter_mut().zip(&buf[..k]) {
            *o = entry(key);
        }
        &out[..k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_keys_order_as_spec_and_decode() {
        let vals = [f32::NEG_INFINITY, -3.5, -1e-40, -0.0, 0.0, 1e-40, 2.0, 2.0, f32::MAX, f32::INFINITY];
        let mut es: Vec<(u32, f32)> = vals.iter().enumerate().map(|(i, &v)| (i as u32 * 7 % 5, v)).collect();
        es.push((9, 2.0));
        for a in &es {
            let d = entry(rank_key(a.0, a.1));
            assert_eq!((d.0, d.1), (a.0, a.1 + 0.0));
            for b in &es {
                let want = crate::backend::cpu::gsu_topk::rank_order(a, b);
                assert_eq!(rank_key(a.0, a.1).cmp(&rank_key(b.0, b.1)), want, "{a:?} vs {b:?}");
            }
        }
    }
}

/// One score tile: `out[i, j] = q[i]·key[j] * alpha + c[j]` for `m` query rows and `n` keys,
/// `q [m, d]` row-major, `keys [n, d]` row-major with row stride `d`, `out [m, n]`.
pub(crate) fn score_tile(q: &[f32], keys: &[f32], c: &[f32], m: usize, n: usize, d: usize, alpha: f32, out: &mut [f32]) {
    for row in out[..m * n].chunks_exact_mut(n) {
        row.copy_from_slice(&c[..n]);
    }
    if d == 0 {
        return;
    }
    // SAFETY: `q` holds m*d, `keys` n*d and `out` m*n f32s (callers size them so; the slices
    // below panic-free-check the bounds first), and the strides address exactly those elements.
    unsafe {
        let (q, keys, out) = (&q[..m * d], &keys[..n * d], &mut out[..m * n]);
        matrixmultiply::sgemm(
            m,
            d,
            n,
            alpha,
            q.as_ptr(),
            d as isize,
            1,
            keys.as_ptr(),
            1,
            d as isize,
            1.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `c[l] = (Σ_a bias[l, a]) / h` for the rows of `bias [n, h]`, summed in f64 as the reference.
pub(crate) fn bias_term(bias: &[f32], heads: usize, c: &mut [f32]) {
    for (o, b) in c.iter_mut().zip(bias.chunks_exact(heads)) {
        let s: f64 = b.iter().map(|&x| x as f64).sum();
        *o = (s / heads as f64) as f32;
    }
}
