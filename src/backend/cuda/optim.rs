//! Host side of `kernels/optim.cu` (math in `cpu::optim`): Adam and row-sparse Adagrad on
//! device tensors, in place.

use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend};
use crate::backend::{AdamStep, IdSlot, Staged, Tensor};
use crate::error::Result;

/// Mirrors `AdamParams` in kernels/optim.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamParams {
    pub n: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub bc1: f32,
    pub bc2: f32,
}
// SAFETY: `#[repr(C)]` of 4-byte fields, the same layout as the CUDA struct.
unsafe impl KernelParam for AdamParams {}

/// Mirrors `AdagradParams` in kernels/optim.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdagradParams {
    pub n_rows: u32,
    pub cols: u32,
    pub lr: f32,
    pub eps: f32,
}
// SAFETY: as above.
unsafe impl KernelParam for AdagradParams {}

impl CudaBackend {
    pub(crate) fn adam_dev(&self, w: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, s: &AdamStep) -> Result<()> {
        if w.is_empty() {
            return Ok(());
        }
        let p = AdamParams { n: u32_of("adam n", w.len())?, lr: s.lr, beta1: s.beta1, beta2: s.beta2, eps: s.eps, bc1: s.bc1, bc2: s.bc2 };
        let (wb, gb, mb, vb) = (self.tensor_buf(w)?, self.tensor_buf(g)?, self.tensor_buf(m)?, self.tensor_buf(v)?);
        let mut b = self.launcher("optim_adam_fwd");
        b.arg(&p).arg(wb).arg(gb).arg(mb).arg(vb);
        // SAFETY: kernel (AdamParams, w, g, m, v [n] f32); check::adam matched the four shapes
        // (n words each) and made them distinct buffers (the kernel's __restrict__ holds).
        unsafe { b.launch(self.grid_1d(w.len() as u64)) }.map_err(device_err("adam launch"))?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn adagrad_rows_dev(
        &self,
        w: &Tensor,
        acc: &Tensor,
        rows: &IdSlot,
        g: &Tensor,
        staged: &Staged,
        lr: f32,
        eps: f32,
    ) -> Result<()> {
        if rows.is_empty() || w.cols == 0 {
            return Ok(());
        }
        let p = AdagradParams { n_rows: u32_of("adagrad rows", rows.len())?, cols: u32_of("adagrad cols", w.cols)?, lr, eps };
        let ids = self.tensor_buf(&staged.tensor)?.slice(rows.range.clone());
        let mut b = self.launcher("optim_adagrad_fwd");
        b.arg(&p).arg(self.tensor_buf(w)?).arg(self.tensor_buf(acc)?).arg(&ids).arg(self.tensor_buf(g)?);
        // SAFETY: kernel (AdagradParams, w, acc [R*cols], rows [n_rows], g [n_rows*cols]);
        // check::adagrad_rows: rows distinct and < R (staged with Staging::rows), shapes matched,
        // tensors distinct.
        unsafe { b.launch(self.grid_1d((rows.len() * w.cols) as u64)) }.map_err(device_err("adagrad launch"))?;
        Ok(())
    }
}
