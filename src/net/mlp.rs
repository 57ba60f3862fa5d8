//! The CTR head (SPEC §5): an MLP over `[context, x_t, out_long, out_short]`, ReLU between
//! layers, one logit out. Written once over [`Dense`]: training runs it on host slices through
//! [`Ops`] (f32, or f64 for the gradient check), serving on device tensors through a backend.

use std::marker::PhantomData;

use rayon::prelude::*;

use super::ops::Ops;
use crate::backend::cpu::Real;
use crate::backend::{Act, Backend, GemmKind, Tensor};
use crate::error::Result;

/// The two kernels a dense layer needs, over some buffer type.
pub trait Dense {
    /// Activations.
    type Buf;
    /// Parameters (borrowed host slices in training, device tensors in serving).
    type W: ?Sized;
    /// `out [m, n] = a [m, k] · w [k, n]`.
    fn matmul(&self, a: &Self::Buf, w: &Self::W, m: usize, k: usize, n: usize) -> Result<Self::Buf>;
    /// In place: `x[i, j] = act(x[i, j] + b[j])`.
    fn bias_act(&self, x: &mut Self::Buf, b: &Self::W, act: Act) -> Result<()>;
    /// `out [m, n] = a[k, m]ᵀ · b [k, n]` (weight gradients).
    fn matmul_tn(&self, a: &Self::Buf, b: &Self::Buf, k: usize, m: usize, n: usize) -> Result<Self::Buf>;
    /// `out [m, n] = a [m, k] · w[n, k]ᵀ` (input gradients).
    fn matmul_nt(&self, a: &Self::Buf, w: &Self::W, m: usize, k: usize, n: usize) -> Result<Self::Buf>;
    /// Backward of `bias_act` (none / ReLU): `dy` masked in place where the output `y` is not
    /// positive; returns the bias gradient (column sums in row order).
    fn bias_act_bwd(&self, dy: &mut Self::Buf, y: &Self::Buf, n: usize, act: Act) -> Result<Self::Buf>;
}

/// Layer widths: input, the hidden widths, then 1.
pub fn widths(input: usize, hidden: &[usize]) -> Vec<usize> {
    std::iter::once(input).chain(hidden.iter().copied()).chain(std::iter::once(1)).collect()
}

/// Forward over `bn` rows of `z`. `layers[i] = (W_i [widths[i], widths[i+1]], b_i)`. Returns every
/// activation (`z` first, the last layer's output last; training keeps them for the backward).
/// The last layer applies `last` (none for logits, σ for CTRs), the others ReLU.
pub fn forward<D: Dense>(d: &D, layers: &[(&D::W, &D::W)], z: D::Buf, bn: usize, widths: &[usize], last: Act) -> Result<Vec<D::Buf>> {
    let mut acts = vec![z];
    for (i, (w, b)) in layers.iter().enumerate() {
        let mut y = d.matmul(&acts[i], w, bn, widths[i], widths[i + 1])?;
        d.bias_act(&mut y, b, if i + 1 == layers.len() { last } else { Act::Relu })?;
        acts.push(y);
    }
    Ok(acts)
}

/// Backward from `dlogit [bn]` (the last layer has no activation: logits into BCE): per layer
/// `(dW_i, db_i)` in layer order, and `dz [bn, widths[0]]`. `acts` are [`forward`]'s.
pub fn backward<D: Dense>(
    d: &D,
    weights: &[&D::W],
    acts: &[D::Buf],
    dlogit: D::Buf,
    bn: usize,
    widths: &[usize],
) -> Result<(Vec<(D::Buf, D::Buf)>, D::Buf)> {
    let n_layers = widths.len() - 1;
    let mut grads = Vec::with_capacity(n_layers);
    let mut dy = dlogit;
    for i in (0..n_layers).rev() {
        let (fi, fo) = (widths[i], widths[i + 1]);
        // ReLU: the gradient flows where the output was positive.
        let act = if i + 1 == n_layers { Act::None } else { Act::Relu };
        let db = d.bias_act_bwd(&mut dy, &acts[i + 1], fo, act)?;
        let dw = d.matmul_tn(&acts[i], &dy, bn, fi, fo)?;
        grads.push((dw, db));
        dy = d.matmul_nt(&dy, weights[i], bn, fo, fi)?;
    }
    grads.reverse();
    Ok((grads, dy))
}

/// [`Dense`] on host slices through [`Ops`] in `T`.
pub struct HostDense<'a, O, T> {
    ops: &'a O,
    _t: PhantomData<T>,
}

impl<'a, O, T> HostDense<'a, O, T> {
    pub fn new(ops: &'a O) -> Self {
        HostDense { ops, _t: PhantomData }
    }
}

impl<T: Real, O: Ops<T>> Dense for HostDense<'_, O, T> {
    type Buf = Vec<T>;
    type W = [T];
    fn matmul(&self, a: &Vec<T>, w: &[T], m: usize, k: usize, n: usize) -> Result<Vec<T>> {
        self.ops.gemm(GemmKind::NN, a, w, m, k, n)
    }
    fn bias_act(&self, x: &mut Vec<T>, b: &[T], act: Act) -> Result<()> {
        let n = b.len().max(1);
        x.par_chunks_mut(n).for_each(|row| {
            for (v, &bb) in row.iter_mut().zip(b) {
                let s = *v + bb;
                *v = match act {
                    Act::None => s,
                    Act::Relu if s < T::zero() => T::zero(),
                    Act::Relu => s,
                    Act::Sigmoid => T::of(1.0 / (1.0 + (-s.f64()).exp())),
                };
            }
        });
        Ok(())
    }
    fn matmul_tn(&self, a: &Vec<T>, b: &Vec<T>, k: usize, m: usize, n: usize) -> Result<Vec<T>> {
        self.ops.gemm(GemmKind::TN, a, b, m, k, n)
    }
    fn matmul_nt(&self, a: &Vec<T>, w: &[T], m: usize, k: usize, n: usize) -> Result<Vec<T>> {
        self.ops.gemm(GemmKind::NT, a, w, m, k, n)
    }
    fn bias_act_bwd(&self, dy: &mut Vec<T>, y: &Vec<T>, n: usize, act: Act) -> Result<Vec<T>> {
        if act == Act::Relu {
            dy.par_iter_mut().zip(y.par_iter()).for_each(|(g, &a)| {
                if a <= T::zero() {
                    *g = T::zero();
                }
            });
        }
        let mut db = vec![T::zero(); n];
        for row in dy.chunks(n.max(1)) {
            for (x, &v) in db.iter_mut().zip(row) {
                *x = *x + v;
            }
        }
        Ok(db)
    }
}

/// [`Dense`] on a backend's device tensors.
pub struct DeviceDense<'a>(pub &'a dyn Backend);

impl Dense for DeviceDense<'_> {
    type Buf = Tensor;
    type W = Tensor;
    fn matmul(&self, a: &Tensor, w: &Tensor, m: usize, k: usize, n: usize) -> Result<Tensor> {
        self.0.gemm_dev(GemmKind::NN, a, w, m, k, n)
    }
    fn bias_act(&self, x: &mut Tensor, b: &Tensor, act: Act) -> Result<()> {
        self.0.bias_act(x, b, act)
    }
    fn matmul_tn(&self, a: &Tensor, b: &Tensor, k: usize, m: usize, n: usize) -> Result<Tensor> {
        self.0.gemm_dev(GemmKind::TN, a, b, m, k, n)
    }
    fn matmul_nt(&self, a: &Tensor, w: &Tensor, m: usize, k: usize, n: usize) -> Result<Tensor> {
        self.0.gemm_dev(GemmKind::NT, a, w, m, k, n)
    }
    fn bias_act_bwd(&self, dy: &mut Tensor, y: &Tensor, _n: usize, act: Act) -> Result<Tensor> {
        self.0.bias_act_bwd(dy, y, act)
    }
}
