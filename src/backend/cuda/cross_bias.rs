//! Host side of `kernels/cross_bias.cu`.

use cudarc::driver::{CudaView, DeviceRepr, PushKernelArg};

use super::{device_err, u32_of, CudaBackend, TablePtr};
use crate::backend::{CrossDims, DeviceTable};
use crate::error::Result;

/// Mirrors `CrossBiasParams` in kernels/cross_bias.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CrossBiasParams {
    pub n: u32,
    pub heads: u32,
    pub n_cross: u32,
    pub table_f16: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl DeviceRepr for CrossBiasParams {}

/// Mirrors `CrossBiasDenseParams` in kernels/cross_bias.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CrossBiasDenseParams {
    pub n: u32,
    pub heads: u32,
    pub n_cross: u32,
    pub dim: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl DeviceRepr for CrossBiasDenseParams {}

/// Launch `cross_bias_fwd` on device buffers: `rows` [n * J] (checked < table rows), `out` [n * h].
pub(crate) fn launch_cross_bias(
    be: &CudaBackend,
    table: TablePtr,
    heads: usize,
    n: usize,
    n_cross: usize,
    rows: &CudaView<u32>,
    out: &CudaView<u32>,
) -> Result<()> {
    if n == 0 || heads == 0 {
        return Ok(());
    }
    let params = CrossBiasParams {
        n: u32_of("behaviours", n)?,
        heads: u32_of("heads", heads)?,
        n_cross: u32_of("n_cross", n_cross)?,
        table_f16: table.f16,
    };
    let mut b = be.stream().launch_builder(be.f("cross_bias_fwd"));
    b.arg(&params).arg(&table.ptr).arg(rows).arg(out);
    // SAFETY: kernel (CrossBiasParams, const void* table [V, h], const u32* rows [n*J], float* out
    // [n*h]); every row id is < V (check::cross_bias / check::online), `out` has n*h words and
    // is written (as f32) only by this kernel.
    unsafe { b.launch(be.grid_1d((n * heads) as u64)) }.map_err(device_err("cross_bias launch"))?;
    Ok(())
}

pub(crate) fn cross_bias(be: &CudaBackend, table: &DeviceTable, rows: &[u32], n_cross: usize) -> Result<Vec<f32>> {
    let heads = table.cols;
    let n = rows.len() / n_cross;
    if n * heads == 0 {
        return Ok(vec![0.0; n * heads]);
    }
    let tp = be.table_ptr(table)?;
    let rows_d = be.htod("cross_bias: upload", rows)?;
    let out = be.zeros::<u32>("cross_bias: alloc", n * heads)?;
    launch_cross_bias(be, tp, heads, n, n_cross, &rows_d.slice(..), &out.slice(..))?;
    let words = be.dtoh("cross_bias: download", &out, n * heads)?;
    Ok(words.into_iter().map(f32::from_bits).collect())
}

pub(crate) fn cross_bias_dense(be: &CudaBackend, e: &[f32], w_c: &[f32], beta: &[f32], d: CrossDims) -> Result<Vec<f32>> {
    let n = e.len() / (d.n_cross * d.dim);
    let total = n * d.heads;
    if total == 0 {
        return Ok(vec![0.0; total]);
    }
    let params = CrossBiasDenseParams {
        n: u32_of("behaviours", n)?,
        heads: u32_of("heads", d.heads)?,
        n_cross: u32_of("n_cross", d.n_cross)?,
        dim: u32_of("cross dim", d.dim)?,
    };
    let e_d = be.htod("cross_bias_dense: upload e", e)?;
    let w_d = be.htod("cross_bias_dense: upload w_c", w_c)?;
    let b_d = be.htod("cross_bias_dense: upload beta", beta)?;
    let out = be.zeros::<f32>("cross_bias_dense: alloc", total)?;
    let mut b = be.stream().launch_builder(be.f("cross_bias_dense_fwd"));
    b.arg(&params).arg(&e_d).arg(&w_d).arg(&b_d).arg(&out);
    // SAFETY: kernel (CrossBiasDenseParams, const float* e [n*J*C], const float* w_c [h*J*C],
    // const float* beta [h*J], float* out [n*h]); lengths checked by check::cross_bias_dense.
    unsafe { b.launch(be.grid_1d(total as u64)) }.map_err(device_err("cross_bias_dense launch"))?;
    be.dtoh("cross_bias_dense: download", &out, total)
}
