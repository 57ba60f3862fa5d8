//! The optimizers' element math (the reference of `kernels/optim.cu`, `shaders/optim.wgsl`):
//! Adam for dense tensors and row-sparse Adagrad for embedding rows, in place, each element
//! independent. `train::Optimizer` runs exactly these, so a device step and the host step
//! update parameters with the same f32 operations in the same order.

use rayon::prelude::*;

/// One Adam step's constants: the hyper-parameters and the bias corrections of step `t`
/// (`bc1 = 1 - β1^t`, `bc2 = 1 - β2^t`, rounded to f32 from f64).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub bc1: f32,
    pub bc2: f32,
}

/// `m = β1 m + (1-β1) g; v = β2 v + ((1-β2) g) g; w -= (lr m/bc1) / (sqrt(v/bc2) + ε)`, in f32.
#[inline]
pub fn adam_elem(w: &mut f32, g: f32, m: &mut f32, v: &mut f32, s: &AdamStep) {
    *m = s.beta1 * *m + (1.0 - s.beta1) * g;
    *v = s.beta2 * *v + (1.0 - s.beta2) * g * g;
    let mh = *m / s.bc1;
    let vh = *v / s.bc2;
    *w -= s.lr * mh / (vh.sqrt() + s.eps);
}

/// Adam over whole tensors (equal lengths).
pub fn adam(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) {
    w.par_iter_mut().zip(g.par_iter()).zip(m.par_iter_mut().zip(v.par_iter_mut())).for_each(|((w, &g), (m, v))| adam_elem(w, g, m, v, s));
}

/// `a += g g; w -= (lr g) / (sqrt(a) + ε)`, in f32.
#[inline]
pub fn adagrad_elem(w: &mut f32, g: f32, a: &mut f32, lr: f32, eps: f32) {
    *a += g * g;
    *w -= lr * g / (a.sqrt() + eps);
}

/// Row-sparse Adagrad: row `rows[k]` of `w` and `acc` (`cols` wide) takes gradient row `k` of
/// `g`. Rows distinct and below `w.len() / cols` (checked by the callers).
pub fn adagrad_rows(w: &mut [f32], acc: &mut [f32], cols: usize, rows: &[u32], g: &[f32], lr: f32, eps: f32) {
    for (k, &r) in rows.iter().enumerate() {
        let r = r as usize;
        let (wr, ar) = (&mut w[r * cols..(r + 1) * cols], &mut acc[r * cols..(r + 1) * cols]);
        for ((w, a), &g) in wr.iter_mut().zip(ar.iter_mut()).zip(&g[k * cols..(k + 1) * cols]) {
            adagrad_elem(w, g, a, lr, eps);
        }
    }
}
