//! Host side of `kernels/bce.cu`: per-sample binary cross-entropy terms (f64) and `dlogit`, one
//! thread per sample; the mean is summed here in f64 in sample order (the CPU's order).
//! Inputs are validated in the trait's provided `Backend::bce`.

use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend};
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
