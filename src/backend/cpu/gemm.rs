//! Dense row-major GEMMs (the `gemm` op's reference and the training step's), generic over
//! [`Real`] (ndarray's matrixmultiply kernels underneath). Parallel over blocks of *output rows* only, so every
//! output element is reduced by one thread in a fixed order: results do not depend on the
//! thread count.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::Real;

const ROWS_PER_TASK: usize = 256;

/// `a [m, k] · b [k, n]` → `[m, n]`.
pub fn mm<T: Real>(a: &[T], m: usize, k: usize, b: &[T], n: usize) -> Vec<T> {
    let mut out = vec![T::zero(); m * n];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    let bv = ArrayView2::from_shape((k, n), b).expect("b is [k, n]");
    out.par_chunks_mut(ROWS_PER_TASK * n).zip(a.par_chunks(ROWS_PER_TASK * k)).for_each(|(o, a)| {
        let rows = a.len() / k;
        let av = ArrayView2::from_shape((rows, k), a).expect("a block");
        let mut ov = ArrayViewMut2::from_shape((rows, n), o).expect("out block");
        general_mat_mul(T::one(), &av, &bv, T::zero(), &mut ov);
    });
    out
}

/// `a [m, n] · bᵀ` with `b [k, n]` → `[m, k]`.
pub fn mm_nt<T: Real>(a: &[T], m: usize, n: usize, b: &[T], k: usize) -> Vec<T> {
    let mut out = vec![T::zero(); m * k];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    let bv = ArrayView2::from_shape((k, n), b).expect("b is [k, n]");
    out.par_chunks_mut(ROWS_PER_TASK * k).zip(a.par_chunks(ROWS_PER_TASK * n)).for_each(|(o, a)| {
        let rows = a.len() / n;
        let av = ArrayView2::from_shape((rows, n), a).expect("a block");
        let mut ov = ArrayViewMut2::from_shape((rows, k), o).expect("out block");
        general_mat_mul(T::one(), &av, &bv.t(), T::zero(), &mut ov);
    });
    out
}

/// `aᵀ · b` with `a [m, k]`, `b [m, n]` → `[k, n]` (weight gradients: the reduction runs over
/// `m`, which stays whole inside one task).
pub fn mm_tn<T: Real>(a: &[T], m: usize, k: usize, b: &[T], n: usize) -> Vec<T> {
    let mut out = vec![T::zero(); k * n];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    let av = ArrayView2::from_shape((m, k), a).expect("a is [m, k]");
    let bv = ArrayView2::from_shape((m, n), b).expect("b is [m, n]");
    let at = av.t();
    let cols_per_task = (ROWS_PER_TASK / 8).max(1);
    out.par_chunks_mut(cols_per_task * n).enumerate().for_each(|(t, o)| {
        let r0 = t * cols_per_task;
        let rows = o.len() / n;
        let a_blk = at.slice(ndarray::s![r0..r0 + rows, ..]);
        let mut ov = ArrayViewMut2::from_shape((rows, n), o).expect("out block");
        general_mat_mul(T::one(), &a_blk, &bv, T::zero(), &mut ov);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    fn naive(a: &[f64], m: usize, k: usize, b: &[f64], n: usize) -> Vec<f64> {
        let mut o = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                o[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            }
        }
        o
    }
    fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
        let mut o = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                o[j * r + i] = a[i * c + j];
            }
        }
        o
    }
    #[test]
    fn gemms_match_naive() {
        let (m, k, n) = (601, 37, 19);
        let a: Vec<f64> = (0..m * k).map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| ((i * 104_729) % 97) as f64 / 48.0 - 1.0).collect();
        let close = |x: &[f64], y: &[f64]| x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-9);
        assert!(close(&mm(&a, m, k, &b, n), &naive(&a, m, k, &b, n)));
        let bt = transpose(&b, k, n); // [n, k]
        assert!(close(&mm_nt(&a, m, k, &bt, n), &naive(&a, m, k, &b, n)));
        let c: Vec<f64> = (0..m * n).map(|i| ((i * 31) % 13) as f64 - 6.0).collect();
        assert!(close(&mm_tn(&a, m, k, &c, n), &naive(&transpose(&a, m, k), k, m, &c, n)));
        assert!(mm::<f32>(&[], 0, 3, &[0.0; 6], 2).is_empty());
    }
}
