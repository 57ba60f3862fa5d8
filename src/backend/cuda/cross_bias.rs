//! Host side of `kernels/cross_bias.cu`: the inference gather-sum, the dense training form and
//! the training backward into the cross parameters.

use super::buffers::View;
use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend, TablePtr};
use crate::backend::train_rows::CrossGradLayout;
use crate::backend::{CrossBwdIn, CrossDims, CrossTableGrads, DeviceTable};
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
unsafe impl KernelParam for CrossBiasParams {}

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
unsafe impl KernelParam for CrossBiasDenseParams {}

/// Mirrors `CrossBiasBwdParams` in kernels/cross_bias.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CrossBiasBwdParams {
    pub v_rows: u32,
    pub heads: u32,
    pub n_cross: u32,
    pub dim: u32,
    pub d: u32,
    pub pad0: u32,
    pub pad1: u32,
    pub pad2: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for CrossBiasBwdParams {}

impl CrossBiasBwdParams {
    /// The parameters of the cross tables' kernels for `l`'s shapes (each must fit u32).
    pub(crate) fn of(l: &CrossGradLayout) -> Result<Self> {
        Ok(CrossBiasBwdParams {
            v_rows: u32_of("cross rows (V)", l.v)?,
            heads: u32_of("heads", l.dims.heads)?,
            n_cross: u32_of("n_cross", l.dims.n_cross)?,
            dim: u32_of("cross dim", l.dims.dim)?,
            d: u32_of("D", l.d)?,
            pad0: 0,
            pad1: 0,
            pad2: 0,
        })
    }
}

/// Launch `cross_bias_fwd` on device buffers: `rows` [n * J] (checked < table rows), `out` [n * h].
pub(crate) fn launch_cross_bias(
    be: &CudaBackend,
    table: TablePtr,
    heads: usize,
    n: usize,
    n_cross: usize,
    rows: &View<u32>,
    out: &View<u32>,
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
    let mut b = be.launcher("cross_bias_fwd");
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
    let out = be.output::<u32>("cross_bias: alloc", n * heads)?;
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
    let out = be.output::<f32>("cross_bias_dense: alloc", total)?;
    let mut b = be.launcher("cross_bias_dense_fwd");
    b.arg(&params).arg(&e_d).arg(&w_d).arg(&b_d).arg(&out);
    // SAFETY: kernel (CrossBiasDenseParams, const float* e [n*J*C], const float* w_c [h*J*C],
    // const float* beta [h*J], float* out [n*h]); lengths checked by check::cross_bias_dense.
    unsafe { b.launch(be.grid_1d(total as u64)) }.map_err(device_err("cross_bias_dense launch"))?;
    be.dtoh("cross_bias_dense: download", &out, total)
}

/// `cross_bias_bwd`: one thread per element of `[dE | dw_c | dβ | dW^{vc}]` (four consecutive
/// ranges of one buffer, one download), split here. The tensor form is in `train_rows`.
pub(crate) fn cross_tables_bwd(be: &CudaBackend, x: CrossBwdIn<'_>) -> Result<CrossTableGrads<f32>> {
    let lay = CrossGradLayout::of_slices(&x);
    let total = lay.total();
    let params = CrossBiasBwdParams::of(&lay)?;
    let up = |what: &'static str, v: &[f32]| be.htod(what, v);
    let (dcb, dcv, e, w_c) = (
        up("cross_bwd: upload dcb", x.dcb)?,
        up("cross_bwd: upload dcv", x.dcv)?,
        up("cross_bwd: upload e", x.e)?,
        up("cross_bwd: upload w_c", x.w_c)?,
    );
    let (beta, w_vc) = (up("cross_bwd: upload beta", x.beta)?, up("cross_bwd: upload w_vc", x.w_vc)?);
    let offs = be.htod("cross_bwd: upload offsets", x.offsets)?;
    let out = be.output::<f32>("cross_bwd: alloc grads", total)?;
    let [_, s1, s2, s3] = lay.starts();
    let mut b = be.launcher("cross_bias_bwd");
    b.arg(&params).arg(&dcb).arg(&dcv).arg(&e).arg(&w_c).arg(&beta).arg(&w_vc).arg(&offs);
    b.arg(&out.slice(..s1)).arg(&out.slice(s1..s2)).arg(&out.slice(s2..s3)).arg(&out.slice(s3..total));
    // SAFETY: kernel (CrossBiasBwdParams, dcb [V*h], dcv [V*D], e [V*C], w_c [h*J*C], beta [h*J],
    // w_vc [J*C*D], offsets [J+1], de [V*C], dw_c [h*J*C], dbeta [h*J], dw_vc [J*C*D]), the four
    // outputs consecutive ranges of `out` (total elements); check::cross_tables_bwd validated
    // every length against (V, h, J, C, D) and the offsets (0 .. V, non-decreasing), so every row
    // v read is < V; the grid-stride loop covers exactly `total` elements, each written once by
    // its own thread into its section. Buffers of length 0 are one element and never read.
    unsafe { b.launch(be.grid_1d(total as u64)) }.map_err(device_err("cross_bias_bwd launch"))?;
    Ok(lay.split(be.dtoh("cross_bwd: download grads", &out, total)?))
}
