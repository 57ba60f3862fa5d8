//! Host side of `kernels/gemm.cu`: dense row-major f32 GEMM (`NN`, `NT`, `TN`), one block per
//! 64x64 output tile, every output element reduced over k by one thread in increasing order.
//! Inputs are validated by `check::gemm` in the trait's provided method.

use cudarc::driver::LaunchConfig;

use super::launch::{KernelParam, PushArg};
use super::{device_err, u32_of, CudaBackend};
use crate::backend::GemmKind;
use crate::error::{Error, Result};

/// Threads per block and output tile edge (mirror `GEMM_THREADS`, `BM`, `BN` in kernels/gemm.cu).
const GEMM_THREADS: u32 = 256;
const TILE: usize = 64;

/// Mirrors `GemmParams` in kernels/gemm.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub tiles_n: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for GemmParams {}

/// Launch the GEMM of `kind` on views holding `a`, `b` (as `check::gemm` shapes them) and
/// `out [m, n]`; m, n, k > 0.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch<A: PushArg, B: PushArg, O: PushArg>(
    be: &CudaBackend,
    kind: GemmKind,
    m: usize,
    k: usize,
    n: usize,
    a: &A,
    b: &B,
    out: &O,
) -> Result<()> {
    let (tiles_m, tiles_n) = (m.div_ceil(TILE), n.div_ceil(TILE));
    let blocks = tiles_m * tiles_n;
    if blocks > i32::MAX as usize {
        return Err(Error::TooLarge { field: "gemm blocks (64x64 output tiles)", value: blocks as u64, limit: i32::MAX as u64 });
    }
    let p = GemmParams { m: u32_of("m", m)?, n: u32_of("n", n)?, k: u32_of("k", k)?, tiles_n: tiles_n as u32 };
    let name = match kind {
        GemmKind::NN => "gemm_fwd_nn",
        GemmKind::NT => "gemm_fwd_nt",
        GemmKind::TN => "gemm_fwd_tn",
    };
    let cfg = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (GEMM_THREADS, 1, 1), shared_mem_bytes: 0 };
    let mut lb = be.launcher(name);
    lb.arg(&p).arg(a).arg(b).arg(out);
    // SAFETY: kernel (GemmParams, a [m*k], b [k*n], out [m*n]) for every kind; the callers
    // validated both lengths (check::gemm / check::gemm_dev: m*k, k*n, m*n <= u32::MAX), m, n, k > 0;
    // grid tiles_m*tiles_n blocks of GEMM_THREADS, each block reading rows < m / columns < n /
    // p < k only and writing its own tile of out (rows < m, columns < n) once.
    unsafe { lb.launch(cfg) }.map_err(device_err("gemm launch"))?;
    Ok(())
}

pub(crate) fn gemm(be: &CudaBackend, kind: GemmKind, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Result<Vec<f32>> {
    if m == 0 || n == 0 {
        return Ok(Vec::new());
    }
    if k == 0 {
        return Ok(vec![0.0; m * n]);
    }
    let ad = be.htod("gemm: upload a", a)?;
    let bd = be.htod("gemm: upload b", b)?;
    let out = be.output::<f32>("gemm: alloc out", m * n)?;
    launch(be, kind, m, k, n, &ad, &bd, &out)?;
    be.dtoh("gemm: download", &out, m * n)
}
