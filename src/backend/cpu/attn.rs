//! Training attention (SPEC §3.5 and §5, without `W^o`): sample `b` attends its ragged rows
//! `offsets[b]..offsets[b+1]` of `k`, `v`, `bias`. Forward keeps the softmax weights `p` for
//! the backward. Written once, generic over [`Real`]: the CPU backend runs it in f32, the
//! gradient check in f64. Every output is written with `=` (no accumulation into inputs).
//!
//! Forward, per sample `b` and head `a` (rows `r`, `s = 1/√d_k`):
//!   `α_r = s·q_{b,a}·k_{r,a} + bias_{r,a}`, `p_r = softmax_r(α)` (max-subtracted),
//!   `pooled_{b,a} = Σ_r p_r v_{r,a}`; a sample with no rows pools to 0.
//! Backward, given `dpooled`:
//!   `dv_{r,a} = p_r dpooled_{b,a}`, `g_r = dpooled_{b,a}·v_{r,a}`, `dα_r = p_r (g_r - Σ_t p_t g_t)`,
//!   `dbias_{r,a} = dα_r`, `dk_{r,a} = s dα_r q_{b,a}`, `dq_{b,a} = s Σ_r dα_r k_{r,a}`.

use rayon::prelude::*;

use super::Real;

/// Shapes: `q [B, D]`, `k, v [N, D]`, `bias [N, h]`, `offsets [B + 1]` (validated by the caller).
#[derive(Clone, Copy)]
pub struct AttnIn<'a, T> {
    pub heads: usize,
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub bias: &'a [T],
    pub offsets: &'a [u32],
}

impl<T> AttnIn<'_, T> {
    fn d(&self) -> usize {
        self.q.len() / (self.offsets.len() - 1).max(1)
    }
}

/// Returns `(p [N, h], pooled [B, D])`.
pub fn attn_fwd<T: Real>(x: AttnIn<'_, T>) -> (Vec<T>, Vec<T>) {
    let (h, b_n) = (x.heads, x.offsets.len() - 1);
    let d = x.d();
    let dk = d / h;
    let scale = T::of(1.0 / (dk as f64).sqrt());
    let n = *x.offsets.last().unwrap_or(&0) as usize;
    let mut p = vec![T::zero(); n * h];
    let mut pooled = vec![T::zero(); b_n * d];
    // Split `p` by sample so each sample writes its own rows in parallel.
    let p_parts = split_rows(&mut p, x.offsets, h);
    pooled.par_chunks_mut(d.max(1)).zip(p_parts.into_par_iter()).enumerate().for_each(|(b, (out, pb))| {
        let r0 = x.offsets[b] as usize;
        let rows = pb.len() / h;
        if rows == 0 {
            return;
        }
        let q = &x.q[b * d..(b + 1) * d];
        for a in 0..h {
            let qa = &q[a * dk..(a + 1) * dk];
            let mut m = T::neg_infinity();
            for r in 0..rows {
                let ka = &x.k[(r0 + r) * d + a * dk..(r0 + r) * d + (a + 1) * dk];
                let dot: T = super::dot(qa, ka);
                let alpha = dot * scale + x.bias[(r0 + r) * h + a];
                pb[r * h + a] = alpha;
                m = m.max(alpha);
            }
            let mut z = T::zero();
            for r in 0..rows {
                let e = (pb[r * h + a] - m).exp();
                pb[r * h + a] = e;
                z = z + e;
            }
            let oa = &mut out[a * dk..(a + 1) * dk];
            for r in 0..rows {
                let pr = pb[r * h + a] / z;
                pb[r * h + a] = pr;
                let va = &x.v[(r0 + r) * d + a * dk..(r0 + r) * d + (a + 1) * dk];
                for (o, &vv) in oa.iter_mut().zip(va) {
                    *o = *o + pr * vv;
                }
            }
        }
    });
    (p, pooled)
}

/// Gradients of the attention inputs, each written with `=`.
pub struct AttnGrads<T> {
    pub dq: Vec<T>,
    pub dk: Vec<T>,
    pub dv: Vec<T>,
    pub dbias: Vec<T>,
}

/// Backward of [`attn_fwd`] given its `p` and `dpooled [B, D]`.
pub fn attn_bwd<T: Real>(x: AttnIn<'_, T>, p: &[T], dpooled: &[T]) -> AttnGrads<T> {
    let (h, b_n) = (x.heads, x.offsets.len() - 1);
    let d = x.d();
    let dk = d / h;
    let scale = T::of(1.0 / (dk as f64).sqrt());
    let n = *x.offsets.last().unwrap_or(&0) as usize;
    let mut g =
        AttnGrads { dq: vec![T::zero(); b_n * d], dk: vec![T::zero(); n * d], dv: vec![T::zero(); n * d], dbias: vec![T::zero(); n * h] };
    // Per-sample row blocks of dk, dv, dbias, so samples run in parallel with `=` writes.
    let mut dk_parts = split_rows(&mut g.dk, x.offsets, d);
    let mut dv_parts = split_rows(&mut g.dv, x.offsets, d);
    let mut db_parts = split_rows(&mut g.dbias, x.offsets, h);
    let parts: Vec<_> = dk_parts.drain(..).zip(dv_parts.drain(..)).zip(db_parts.drain(..)).collect();
    g.dq.par_chunks_mut(d.max(1)).zip(parts.into_par_iter()).enumerate().for_each(|(b, (dq, ((dkb, dvb), dbb)))| {
        let r0 = x.offsets[b] as usize;
        let rows = dbb.len() / h;
        let q = &x.q[b * d..(b + 1) * d];
        let dp = &dpooled[b * d..(b + 1) * d];
        for a in 0..h {
            let (lo, hi) = (a * dk, (a + 1) * dk);
            let dpa = &dp[lo..hi];
            // g_r and Σ p g
            let mut sum_pg = T::zero();
            for r in 0..rows {
                let va = &x.v[(r0 + r) * d + lo..(r0 + r) * d + hi];
                let gr: T = super::dot(dpa, va);
                dbb[r * h + a] = gr;
                sum_pg = sum_pg + p[(r0 + r) * h + a] * gr;
            }
            for r in 0..rows {
                let pr = p[(r0 + r) * h + a];
                let dalpha = pr * (dbb[r * h + a] - sum_pg);
                dbb[r * h + a] = dalpha;
                let ka = &x.k[(r0 + r) * d + lo..(r0 + r) * d + hi];
                for t in 0..dk {
                    dkb[r * d + lo + t] = scale * dalpha * q[lo + t];
                    dvb[r * d + lo + t] = pr * dpa[t];
                    dq[lo + t] = dq[lo + t] + scale * dalpha * ka[t];
                }
            }
        }
    });
    g
}

/// `v` (`[N, w]`) cut into each sample's rows.
fn split_rows<'a, T>(v: &'a mut [T], offsets: &[u32], w: usize) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(offsets.len().saturating_sub(1));
    let mut rest = v;
    for b in 0..offsets.len().saturating_sub(1) {
        let len = (offsets[b + 1] - offsets[b]) as usize * w;
        let (head, tail) = rest.split_at_mut(len);
        out.push(head);
        rest = tail;
    }
    out
}
