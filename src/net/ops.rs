//! The kernels the network runs through on host slices: [`CpuOps`] is the generic reference
//! (f32 for training, f64 for the gradient check); [`BackendOps`] sends them to a backend's
//! kernels (f32), so a GPU backend's training kernels run inside real steps.

use crate::backend::cpu::attn::{self, AttnIn};
use crate::backend::cpu::cross_bias::{cross_tables_bwd, CrossTableGrads};
use crate::backend::cpu::segment_sum;
use crate::backend::cpu::{bce, gemm, Real};
use crate::backend::{AttnSaved, Backend, CrossBwdIn, GemmKind};
use crate::error::Result;

/// The host-slice kernels of a training step.
pub trait Ops<T> {
    fn attn_fwd(&self, x: AttnIn<'_, T>) -> Result<(Vec<T>, Vec<T>)>;
    fn attn_bwd(&self, x: AttnIn<'_, T>, p: &[T], dpooled: &[T]) -> Result<attn::AttnGrads<T>>;
    fn segment_sum(&self, src: &[T], width: usize, perm: &[u32], seg_offsets: &[u32]) -> Result<Vec<T>>;
    /// `out [m, n] = op(a) · op(b)` (layouts as `Backend::gemm`).
    fn gemm(&self, kind: GemmKind, a: &[T], b: &[T], m: usize, k: usize, n: usize) -> Result<Vec<T>>;
    fn cross_tables_bwd(&self, x: CrossBwdIn<'_, T>) -> Result<CrossTableGrads<T>>;
    /// `(mean BCE, dlogit)`.
    fn bce(&self, logits: &[T], labels: &[f32]) -> Result<(f64, Vec<T>)>;
}

pub struct CpuOps;

impl<T: Real> Ops<T> for CpuOps {
    fn attn_fwd(&self, x: AttnIn<'_, T>) -> Result<(Vec<T>, Vec<T>)> {
        Ok(attn::attn_fwd(x))
    }
    fn attn_bwd(&self, x: AttnIn<'_, T>, p: &[T], dpooled: &[T]) -> Result<attn::AttnGrads<T>> {
        Ok(attn::attn_bwd(x, p, dpooled))
    }
    fn segment_sum(&self, src: &[T], width: usize, perm: &[u32], seg_offsets: &[u32]) -> Result<Vec<T>> {
        Ok(segment_sum::segment_sum(src, width, perm, seg_offsets))
    }
    fn gemm(&self, kind: GemmKind, a: &[T], b: &[T], m: usize, k: usize, n: usize) -> Result<Vec<T>> {
        Ok(match kind {
            GemmKind::NN => gemm::mm(a, m, k, b, n),
            GemmKind::NT => gemm::mm_nt(a, m, k, b, n),
            GemmKind::TN => gemm::mm_tn(a, k, m, b, n),
        })
    }
    fn cross_tables_bwd(&self, x: CrossBwdIn<'_, T>) -> Result<CrossTableGrads<T>> {
        Ok(cross_tables_bwd(x.dcb, x.dcv, x.e, x.w_c, x.beta, x.w_vc, x.offsets, x.dims))
    }
    fn bce(&self, logits: &[T], labels: &[f32]) -> Result<(f64, Vec<T>)> {
        Ok(bce::bce(logits, labels))
    }
}

pub struct BackendOps<'a>(pub &'a dyn Backend);

impl Ops<f32> for BackendOps<'_> {
    fn attn_fwd(&self, x: AttnIn<'_, f32>) -> Result<(Vec<f32>, Vec<f32>)> {
        let o = self.0.attn_fwd(x.heads, x.q, x.k, x.v, x.bias, x.offsets)?;
        Ok((o.p, o.pooled))
    }
    fn attn_bwd(&self, x: AttnIn<'_, f32>, p: &[f32], dpooled: &[f32]) -> Result<attn::AttnGrads<f32>> {
        let g = self.0.attn_bwd(x.heads, AttnSaved { q: x.q, k: x.k, v: x.v, bias: x.bias, offsets: x.offsets, p }, dpooled)?;
        Ok(attn::AttnGrads { dq: g.dq, dk: g.dk, dv: g.dv, dbias: g.dbias })
    }
    fn segment_sum(&self, src: &[f32], width: usize, perm: &[u32], seg_offsets: &[u32]) -> Result<Vec<f32>> {
        if perm.is_empty() {
            return Ok(vec![0.0; seg_offsets.len().saturating_sub(1) * width]);
        }
        self.0.segment_sum(src, width, perm, seg_offsets)
    }
    fn gemm(&self, kind: GemmKind, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Result<Vec<f32>> {
        if m == 0 || n == 0 || k == 0 {
            // Nothing to multiply (e.g. no long rows in the batch): no device launch.
            return Ok(vec![0.0; m * n]);
        }
        self.0.gemm(kind, a, b, m, k, n)
    }
    fn cross_tables_bwd(&self, x: CrossBwdIn<'_, f32>) -> Result<CrossTableGrads<f32>> {
        self.0.cross_tables_bwd(x)
    }
    fn bce(&self, logits: &[f32], labels: &[f32]) -> Result<(f64, Vec<f32>)> {
        self.0.bce(logits, labels)
    }
}
