//! Host side of `kernels/log_size_bias.cu`.

use super::buffers::View;
use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend, Packer};
use crate::error::Result;

/// Mirrors `LogSizeBiasParams` in kernels/log_size_bias.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogSizeBiasParams {
    pub n: u32,
    pub heads: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for LogSizeBiasParams {}

/// Launch `log_size_bias_fwd`: `bias`, `out` [n * h] f32 (may be the same buffer), `sizes` [n].
pub(crate) fn launch_log_size_bias(
    be: &CudaBackend,
    n: usize,
    heads: usize,
    bias: &View<u32>,
    sizes: &View<u32>,
    out: &View<u32>,
) -> Result<()> {
    if n == 0 || heads == 0 {
        return Ok(());
    }
    let params = LogSizeBiasParams { n: u32_of("behaviours", n)?, heads: u32_of("heads", heads)? };
    let mut b = be.launcher("log_size_bias_fwd");
    b.arg(&params).arg(bias).arg(sizes).arg(out);
    // SAFETY: kernel (LogSizeBiasParams, const float* bias [n*h], const float* sizes [n], float*
    // out [n*h]); the views hold those lengths (f32 bits in u32 words); `out` may alias `bias`,
    // which the kernel allows (element-wise, no __restrict__ on them).
    unsafe { b.launch(be.grid_1d((n * heads) as u64)) }.map_err(device_err("log_size_bias launch"))?;
    Ok(())
}

pub(crate) fn log_size_bias(be: &CudaBackend, bias: &[f32], sizes: &[f32], heads: usize) -> Result<Vec<f32>> {
    let n = sizes.len();
    if n * heads == 0 {
        return Ok(Vec::new());
    }
    let mut pk = Packer::default();
    let rb = pk.push_f32(bias);
    let rs = pk.push_f32(sizes);
    let buf = be.htod("log_size_bias: upload", &pk.words)?;
    let out = be.output::<u32>("log_size_bias: alloc", n * heads)?;
    launch_log_size_bias(be, n, heads, &buf.slice(rb), &buf.slice(rs), &out.slice(..))?;
    let words = be.dtoh("log_size_bias: download", &out, n * heads)?;
    Ok(words.into_iter().map(f32::from_bits).collect())
}
