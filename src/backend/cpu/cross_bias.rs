//! Cross-feature bias (SPEC §3.2), both forms.

use rayon::prelude::*;

use super::Real;
use crate::backend::{CrossDims, HostTable};

/// Inference form: `out[n, a] = Σ_j table[rows[n*J + j], a]`; `table: [V, h]`.
pub fn gather_sum(table: &HostTable, rows: &[u32], n_cross: usize) -> Vec<f32> {
    let h = table.cols;
    let n = rows.len() / n_cross;
    let mut out = vec![0f32; n * h];
    if h == 0 {
        return out;
    }
    out.par_chunks_mut(h).enumerate().for_each(|(i, dst)| {
        for (a, d) in dst.iter_mut().enumerate() {
            let mut acc = 0f64;
            for j in 0..n_cross {
                acc += table.get(rows[i * n_cross + j] as usize * h + a) as f64;
            }
            *d = acc as f32;
        }
    });
    out
}

/// Training form: `out[n, a] = Σ_j β[a,j] (e[n,j,:] · w_c[a,j,:])`.
pub fn dense(e: &[f32], w_c: &[f32], beta: &[f32], d: CrossDims) -> Vec<f32> {
    let (h, jn, c) = (d.heads, d.n_cross, d.dim);
    let n = e.len() / (jn * c);
    let mut out = vec![0f32; n * h];
    out.par_chunks_mut(h).enumerate().for_each(|(i, dst)| {
        for (a, o) in dst.iter_mut().enumerate() {
            let mut acc = 0f64;
            for j in 0..jn {
                let ev = &e[(i * jn + j) * c..(i * jn + j + 1) * c];
                let wv = &w_c[(a * jn + j) * c..(a * jn + j + 1) * c];
                let dot = super::dot_f64(ev, wv);
                acc += beta[a * jn + j] as f64 * dot;
            }
            *o = acc as f32;
        }
    });
    out
}

/// The training-time cross tables (SPEC §3.2), built per step from the current parameters: for
/// `v` in feature `j`'s rows `offsets[j]..offsets[j+1]`,
///   `cb[v, a] = β[a,j] · (Σ_t E[v, t] w_c[a,j,t])`   (t ascending from 0, f32)
///   `cv[v, col] = Σ_t E[v, t] W^{vc}[jC+t, col]`      (t ascending from 0, f32)
/// Returns `(cb [V, h], cv [V, D])`. Shapes as [`cross_tables_bwd`]. The reference for
/// `cross_tables_fwd` in `kernels/cross_bias.cu` and `shaders/cross_bias.wgsl`.
#[allow(clippy::too_many_arguments)]
pub fn cross_tables<T: Real>(e: &[T], w_c: &[T], beta: &[T], w_vc: &[T], offsets: &[u32], dims: CrossDims, d: usize) -> (Vec<T>, Vec<T>) {
    let (h, jn, c) = (dims.heads, dims.n_cross, dims.dim);
    let v_n = offsets.get(jn).copied().unwrap_or(0) as usize;
    let mut cb = vec![T::zero(); v_n * h];
    let mut cv = vec![T::zero(); v_n * d];
    for j in 0..jn {
        for v in offsets[j] as usize..offsets[j + 1] as usize {
            let ev = &e[v * c..(v + 1) * c];
            for a in 0..h {
                let wv = &w_c[(a * jn + j) * c..(a * jn + j + 1) * c];
                let mut dot = T::zero();
                for (&x, &y) in ev.iter().zip(wv) {
                    dot = dot + x * y;
                }
                cb[v * h + a] = beta[a * jn + j] * dot;
            }
            for (t, &et) in ev.iter().enumerate() {
                let wrow = &w_vc[(j * c + t) * d..(j * c + t + 1) * d];
                for (o, &wv) in cv[v * d..(v + 1) * d].iter_mut().zip(wrow) {
                    *o = *o + et * wv;
                }
            }
        }
    }
    (cb, cv)
}

/// Gradients of the cross parameters, from the gradients of the stacked cross tables.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossTableGrads<T> {
    /// `[V, C]`
    pub de: Vec<T>,
    /// `[h, J, C]`
    pub dw_c: Vec<T>,
    /// `[h, J]`
    pub dbeta: Vec<T>,
    /// `[J * C, D]`
    pub dw_vc: Vec<T>,
}

/// Backward of the training-time cross tables (SPEC §3.2, built per step from the current
/// parameters): `cb[v, a] = β[a,j] (E[v] · w_c[a,j])` and `cv[v] = E[v] W^{vc}[jC..(j+1)C, :]`
/// for `v` in feature `j`'s rows `offsets[j]..offsets[j+1]`. Given `dcb [V, h]` and
/// `dcv [V, D]`, every gradient element is one sum over `v` in ascending order:
///   `dE[v, t]      = Σ_col W^{vc}[jC+t, col] dcv[v, col] + Σ_a dcb[v, a] β[a,j] w_c[a,j,t]`
///   `dβ[a, j]      = Σ_v dcb[v, a] (E[v] · w_c[a,j])`
///   `dw_c[a, j, t] = Σ_v dcb[v, a] β[a,j] E[v, t]`
///   `dW^{vc}[jC+t, col] = Σ_v E[v, t] dcv[v, col]`
/// Shapes: `e [V, C]`, `w_c [h, J, C]`, `beta [h, J]`, `w_vc [J*C, D]`, `offsets [J + 1]`.
#[allow(clippy::too_many_arguments)]
pub fn cross_tables_bwd<T: Real>(
    dcb: &[T],
    dcv: &[T],
    e: &[T],
    w_c: &[T],
    beta: &[T],
    w_vc: &[T],
    offsets: &[u32],
    dims: CrossDims,
) -> CrossTableGrads<T> {
    let (h, jn, c) = (dims.heads, dims.n_cross, dims.dim);
    let v_n = e.len() / c.max(1);
    let d = dcv.len() / v_n.max(1);
    let feature = |v: usize| (0..jn).find(|&j| (offsets[j] as usize..offsets[j + 1] as usize).contains(&v)).unwrap_or(0);
    let mut g = CrossTableGrads {
        de: vec![T::zero(); v_n * c],
        dw_c: vec![T::zero(); h * jn * c],
        dbeta: vec![T::zero(); h * jn],
        dw_vc: vec![T::zero(); jn * c * d],
    };
    for v in 0..v_n {
        let j = feature(v);
        for t in 0..c {
            let wrow = &w_vc[(j * c + t) * d..(j * c + t + 1) * d];
            let mut acc = T::zero();
            for (w, &x) in wrow.iter().zip(&dcv[v * d..(v + 1) * d]) {
                acc = acc + *w * x;
            }
            for a in 0..h {
                acc = acc + dcb[v * h + a] * beta[a * jn + j] * w_c[(a * jn + j) * c + t];
            }
            g.de[v * c + t] = acc;
        }
    }
    for j in 0..jn {
        let rows = offsets[j] as usize..offsets[j + 1] as usize;
        for a in 0..h {
            let wv = &w_c[(a * jn + j) * c..(a * jn + j + 1) * c];
            let bt = beta[a * jn + j];
            let mut db = T::zero();
            for v in rows.clone() {
                let ev = &e[v * c..(v + 1) * c];
                let mut dot = T::zero();
                for (&x, &y) in ev.iter().zip(wv) {
                    dot = dot + x * y;
                }
                db = db + dcb[v * h + a] * dot;
            }
            g.dbeta[a * jn + j] = db;
            for t in 0..c {
                let mut acc = T::zero();
                for v in rows.clone() {
                    acc = acc + dcb[v * h + a] * bt * e[v * c + t];
                }
                g.dw_c[(a * jn + j) * c + t] = acc;
            }
        }
        for t in 0..c {
            for col in 0..d {
                let mut acc = T::zero();
                for v in rows.clone() {
                    acc = acc + e[v * c + t] * dcv[v * d + col];
                }
                g.dw_vc[(j * c + t) * d + col] = acc;
            }
        }
    }
    g
}
