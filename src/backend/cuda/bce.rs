//! Host side of `kernels/bce.cu`: per-sample binary cross-entropy terms (f64) and `dlogit`, one
//! thread per sample; the mean is summed here in f64 in sample order (the CPU's order).
//! Inputs are validated in the trait's provided `Backend::bce`.

use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend};
use cudarc::driver::LaunchConfig;

use crate::backend::{BceDev, F32Slot, Staged, Tensor};
use crate::error::Result;

/// Mirrors `BceParams` in kernels/bce.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct BceParams {
    pub n: u32,
    pub pad0: u32,
    pub inv_b: f64,
}
// SAFETY: `#[repr(C)]` of (u32, u32, f64): 16 bytes, f64 at offset 8, the same layout as the CUDA
// struct.
unsafe impl KernelParam for BceParams {}

pub(crate) fn bce(be: &CudaBackend, logits: &[f32], labels: &[f32]) -> Result<(f64, Vec<f32>)> {
    let n = logits.len();
    let inv = 1.0 / n.max(1) as f64;
    let p = BceParams { n: u32_of("logits", n)?, pad0: 0, inv_b: inv };
    let sd = be.htod("bce: upload logits", logits)?;
    let yd = be.htod("bce: upload labels", labels)?;
    let loss = be.output::<f64>("bce: alloc loss", n)?;
    let dl = be.output::<f32>("bce: alloc dlogit", n)?;
    let mut b = be.launcher("bce_fwd");
    b.arg(&p).arg(&sd).arg(&yd).arg(&loss).arg(&dl);
    // SAFETY: kernel (BceParams, logits [B], labels [B], loss [B] f64, dlogit [B]); the trait checked
    // labels.len() == logits.len() == B >= 1 and B <= u32::MAX; the grid-stride loop covers exactly
    // B samples, each written once by its own thread.
    unsafe { b.launch(be.grid_1d(n as u64)) }.map_err(device_err("bce launch"))?;
    let terms = be.dtoh("bce: download loss", &loss, n)?;
    let d = be.dtoh("bce: download dlogit", &dl, n)?;
    let sum: f64 = terms.iter().fold(0.0, |s, &x| s + x);
    Ok((sum * inv, d))
}

impl CudaBackend {
    /// `bce` on tensors (checked by `Backend::bce_dev`): per-sample terms, then their mean in
    /// sample order on the device; nothing crosses to the host.
    pub(crate) fn bce_dev(&self, logits: &Tensor, labels: &F32Slot, staged: &Staged) -> Result<BceDev> {
        let n = labels.len();
        let p = BceParams { n: u32_of("logits", n)?, pad0: 0, inv_b: 1.0 / n.max(1) as f64 };
        let terms = self.output::<f64>("bce_dev: alloc loss terms", n)?;
        let dl = self.tensor_output("bce dlogit", n, 1)?;
        let loss = self.tensor_output("bce loss", 1, 2)?;
        let ys = self.tensor_buf(&staged.tensor)?.slice(labels.range.clone());
        let mut b = self.launcher("bce_fwd");
        b.arg(&p).arg(self.tensor_buf(logits)?).arg(&ys).arg(&terms).arg(self.tensor_buf(&dl)?);
        // SAFETY: kernel (BceParams, logits [B], labels [B], loss [B] f64, dlogit [B]); the trait
        // matched logits to the B staged labels; each sample written once by its own thread.
        unsafe { b.launch(self.grid_1d(n as u64)) }.map_err(device_err("bce launch"))?;
        let mut b = self.launcher("bce_mean_fwd");
        b.arg(&p).arg(&terms).arg(self.tensor_buf(&loss)?);
        // SAFETY: kernel (BceParams, loss [B] f64, mean [1] f64 = the 2-word tensor); one thread
        // reads the B terms and writes the mean.
        unsafe { b.launch(LaunchConfig { grid_dim: (1, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes: 0 }) }
            .map_err(device_err("bce mean launch"))?;
        Ok(BceDev { loss, dlogit: dl, form: crate::backend::LossForm::MeanF64 })
    }
}
