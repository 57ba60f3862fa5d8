//! Host side of `kernels/copy_rows.cu` (math in `cpu::copy_rows`).

use super::buffers::View;
use super::launch::{KernelParam, PushArg};
use super::{device_err, u32_of, CudaBackend};
use crate::backend::cpu::copy_rows::SrcCols;
use crate::error::Result;

/// Mirrors `CopyRowsParams` in kernels/copy_rows.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CopyRowsParams {
    pub n: u32,
    pub width: u32,
    pub dst_cols: u32,
    pub dst_col: u32,
    pub has_dst_ids: u32,
    pub has_src_ids: u32,
    pub src_cols: u32,
    pub src_col: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for CopyRowsParams {}

/// `dst [·, dst_cols]`, `src [·, sc.stride]` (columns `sc.start .. + sc.width` copied); `dst_ids`
/// / `src_ids` hold `n` ids each when given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch<D: PushArg, S: PushArg>(
    be: &CudaBackend,
    n: usize,
    sc: SrcCols,
    dst_cols: usize,
    dst_col: usize,
    dst: &D,
    dst_ids: Option<&View<u32>>,
    src: &S,
    src_ids: Option<&View<u32>>,
) -> Result<()> {
    let width = sc.width;
    if n == 0 || width == 0 {
        return Ok(());
    }
    let p = CopyRowsParams {
        n: u32_of("copy_rows n", n)?,
        width: u32_of("copy_rows width", width)?,
        dst_cols: u32_of("copy_rows dst_cols", dst_cols)?,
        dst_col: u32_of("copy_rows dst_col", dst_col)?,
        has_dst_ids: dst_ids.is_some() as u32,
        has_src_ids: src_ids.is_some() as u32,
        src_cols: u32_of("copy_rows src_cols", sc.stride)?,
        src_col: u32_of("copy_rows src_col", sc.start)?,
    };
    let mut b = be.launcher("copy_rows_fwd");
    b.arg(&p).arg(dst);
    match dst_ids {
        Some(v) => b.arg(v),
        None => b.arg(&0u64),
    };
    b.arg(src);
    match src_ids {
        Some(v) => b.arg(v),
        None => b.arg(&0u64),
    };
    // SAFETY: kernel (CopyRowsParams, u32* dst, const u32* dst_ids [n], const u32* src, const u32*
    // src_ids [n]); check::copy_rows bounded every listed id below its tensor's rows and
    // dst_col + width <= dst_cols, so every index the kernel forms is inside dst / src; an id view
    // is read only when its flag is set (a null pointer stands in otherwise and is never read).
    unsafe { b.launch(be.grid_1d((n * width) as u64)) }.map_err(device_err("copy_rows launch"))?;
    Ok(())
}
