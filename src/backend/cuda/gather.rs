//! Host side of `kernels/gather.cu`.

use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend};
use crate::backend::DeviceTable;
use crate::error::Result;

/// Mirrors `GatherParams` in kernels/gather.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct GatherParams {
    pub n: u32,
    pub cols: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for GatherParams {}

/// `ids` already checked against `table.rows` (check::gather).
pub(crate) fn gather(be: &CudaBackend, table: &DeviceTable, ids: &[u32]) -> Result<Vec<f32>> {
    let cols = table.cols;
    let total = ids.len() * cols;
    if total == 0 {
        return Ok(vec![0.0; total]);
    }
    let tp = be.table_ptr(table)?;
    let params = GatherParams { n: u32_of("ids", ids.len())?, cols: u32_of("table cols", cols)? };
    let ids_d = be.htod("gather: upload ids", ids)?;
    let out = be.output::<f32>("gather: alloc", total)?;
    let name = if tp.f16 == 1 { "gather_fwd_f16" } else { "gather_fwd_f32" };
    let mut b = be.launcher(name);
    b.arg(&params).arg(&tp.ptr).arg(&ids_d).arg(&out);
    // SAFETY: the kernel is (GatherParams, table*, const u32* ids, float* out): `tp.ptr` is the
    // table of `table.rows * cols` elements of the dtype named by `name`, `ids_d` holds `n` ids
    // all < rows (checked), `out` holds n * cols floats; the kernel writes only `out`.
    unsafe { b.launch(be.grid_1d(total as u64)) }.map_err(device_err("gather launch"))?;
    be.dtoh("gather: download", &out, total)
}
