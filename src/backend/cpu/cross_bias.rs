//! Cross-feature bias (SPEC §3.2), both forms.

use rayon::prelude::*;

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
