//! ESU (SPEC §3.5) on the fast CPU path, in f32: per candidate, per head a softmax over the
//! finalists of `α = q_a·k_{l,a}/√d_k + bias[l,a]` (max subtracted), pooling of
//! `v_l = P_V[item_l] + Σ_j U[cross_{l,j}]` (summed in that order); then `pooled · W^o` for a
//! tile of candidates as one GEMM. The finalists' key and value rows come from the request's
//! shared buffers when the online driver gathered them, else they are gathered here.
//!
//! Differs from the reference (`cpu::esu`, f64 throughout) by f32 rounding only.

use crate::backend::{HostTable, OnlineBatch};

use super::scratch::{add_row, row_f32, sized};

/// The scratch vectors [`pool_one`] works in.
pub(crate) struct Bufs<'a> {
    pub keys: &'a mut Vec<f32>,
    pub vals: &'a mut Vec<f32>,
    pub alpha: &'a mut Vec<f32>,
}

/// The tables ESU reads, widened `W^o` included.
pub(crate) struct EsuTabs<'a> {
    pub p_k: &'a HostTable,
    pub p_v: &'a HostTable,
    pub cross_value: &'a HostTable,
    /// `[D, D]` f32.
    pub w_o: &'a [f32],
    pub n_cross: usize,
    pub heads: usize,
}

/// Where a request's key and value rows come from: buffers `[L, D]` gathered once, or the tables.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'a> {
    Shared { keys: &'a [f32], vals: &'a [f32] },
    Gather,
}

/// `v_l` for behaviour `l` (global index) into `dst [D]`; `tmp [D]` is scratch.
#[inline]
pub(crate) fn value_row(t: &EsuTabs, batch: &OnlineBatch, l: usize, dst: &mut [f32], tmp: &mut [f32]) {
    row_f32(t.p_v, batch.items[l] as usize, dst);
    for j in 0..t.n_cross {
        add_row(t.cross_value, batch.cross[l * t.n_cross + j] as usize, dst, tmp);
    }
}

/// Pooled attention output `[D]` (before `W^o`) of one candidate with query `q [D]` over the
/// finalists `fin` (positions local to the request starting at `seq0`). Compiled twice: for
/// AVX2 + FMA, chosen at run time (the crate's baseline is SSE2, half the width), and plain.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pool_one(
    t: &EsuTabs,
    batch: &OnlineBatch,
    bias: &[f32],
    seq0: usize,
    q: &[f32],
    fin: &[(u32, f32)],
    rows: Rows,
    s: Bufs,
    pooled: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { pool_one_avx2(t, batch, bias, seq0, q, fin, rows, s, pooled) };
            return;
        }
    }
    pool_one_impl(t, batch, bias, seq0, q, fin, rows, s, pooled)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn pool_one_avx2(
    t: &EsuTabs,
    batch: &OnlineBatch,
    bias: &[f32],
    seq0: usize,
    q: &[f32],
    fin: &[(u32, f32)],
    rows: Rows,
    s: Bufs,
    pooled: &mut [f32],
) {
    pool_one_impl(t, batch, bias, seq0, q, fin, rows, s, pooled)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pool_one_impl(
    t: &EsuTabs,
    batch: &OnlineBatch,
    bias: &[f32],
    seq0: usize,
    q: &[f32],
    fin: &[(u32, f32)],
    rows: Rows,
    s: Bufs,
    pooled: &mut [f32],
) {
    let d = q.len();
    let h = t.heads;
    let dk = d / h;
    let scale = 1.0 / (dk as f32).sqrt();
    let nf = fin.len();
    pooled.fill(0.0);
    if nf == 0 {
        return;
    }
    let alpha = sized(s.alpha, nf * h);
    let (keys, vals): (&[f32], &[f32]) = match rows {
        Rows::Shared { keys, vals } => (keys, vals),
        Rows::Gather => {
            let kb = sized(s.keys, nf * d);
            let vb = sized(s.vals, (nf + 1) * d);
            let (vb, tmp) = vb.split_at_mut(nf * d);
            for (f, &(pos, _)) in fin.iter().enumerate() {
                let l = seq0 + pos as usize;
                row_f32(t.p_k, batch.items[l] as usize, &mut kb[f * d..(f + 1) * d]);
                value_row(t, batch, l, &mut vb[f * d..(f + 1) * d], tmp);
            }
            (&kb[..], &vb[..])
        }
    };
    // Row of finalist f in `keys`/`vals`: its position when shared, its rank when gathered.
    let at = |f: usize| -> usize {
        match rows {
            Rows::Shared { .. } => fin[f].0 as usize,
            Rows::Gather => f,
        }
    };
    for f in 0..nf {
        let l = seq0 + fin[f].0 as usize;
        let k = &keys[at(f) * d..(at(f) + 1) * d];
        for a in 0..h {
            let dot = dot8(&q[a * dk..(a + 1) * dk], &k[a * dk..(a + 1) * dk]);
            alpha[f * h + a] = dot * scale + bias[l * h + a];
        }
    }
    for a in 0..h {
        let m = (0..nf).map(|f| alpha[f * h + a]).fold(f32::NEG_INFINITY, f32::max);
        let mut z = 0f32;
        for f in 0..nf {
            let w = (alpha[f * h + a] - m).exp();
            alpha[f * h + a] = w;
            z += w;
        }
        let inv = 1.0 / z;
        let dst = &mut pooled[a * dk..(a + 1) * dk];
        for f in 0..nf {
            let p = alpha[f * h + a] * inv;
            let v = &vals[at(f) * d + a * dk..at(f) * d + (a + 1) * dk];
            for (o, &x) in dst.iter_mut().zip(v) {
                *o += p * x;
            }
        }
    }
}

/// `out [m, D] = pooled [m, D] · W^o`.
pub(crate) fn project(w_o: &[f32], pooled: &[f32], m: usize, d: usize, out: &mut [f32]) {
    if m == 0 || d == 0 {
        return;
    }
    let (pooled, w_o, out) = (&pooled[..m * d], &w_o[..d * d], &mut out[..m * d]);
    // SAFETY: the slices above hold exactly m*d, d*d and m*d f32s, which the row-major strides
    // address.
    unsafe {
        matrixmultiply::sgemm(
            m,
            d,
            d,
            1.0,
            pooled.as_ptr(),
            d as isize,
            1,
            w_o.as_ptr(),
            d as isize,
            1,
            0.0,
            out.as_mut_ptr(),
            d as isize,
            1,
        );
    }
}

/// `Σ a_i b_i` in f32 with eight accumulators (vectorises).
#[inline]
pub(crate) fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let n8 = a.len().min(b.len()) / 8 * 8;
    let mut acc = [0f32; 8];
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for j in 0..8 {
            acc[j] += ca[j] * cb[j];
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (x, y) in a[n8..].iter().zip(&b[n8..]) {
        s += x * y;
    }
    s
}

/// The ESU op on its own (`Backend::esu`): finalists given, rows gathered per candidate.
pub(crate) fn esu(t: &EsuTabs, p_q: &HostTable, batch: &OnlineBatch, bias: &[f32], topk: &crate::backend::TopK) -> Vec<f32> {
    use rayon::prelude::*;
    let d = t.p_k.cols;
    let mut out = vec![0f32; batch.cands.len() * d];
    if d == 0 {
        return out;
    }
    let mut starts = Vec::with_capacity(batch.n_requests());
    for r in 0..batch.n_requests() {
        starts.extend(batch.cand_range(r).map(|_| batch.seq_offsets[r] as usize));
    }
    out.par_chunks_mut(d).enumerate().for_each(|(c, dst)| {
        super::scratch::with_scratch(|s| {
            let super::scratch::Scratch { q, keys, sel, vals, alpha, pooled, .. } = s;
            let q = sized(q, d);
            row_f32(p_q, batch.cands[c] as usize, q);
            let (fi, _) = topk.row(c);
            let fin = sized(sel, fi.len());
            for (e, &p) in fin.iter_mut().zip(fi) {
                *e = (p, 0.0);
            }
            let pooled = sized(pooled, d);
            pool_one(t, batch, bias, starts[c], q, fin, Rows::Gather, Bufs { keys, vals, alpha }, pooled);
            project(t.w_o, pooled, 1, d, dst);
        })
    });
    out
}
