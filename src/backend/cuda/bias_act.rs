//! Host side of `kernels/bias_act.cu` (math in `cpu::bias_act`).

use super::buffers::View;
use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend};
use crate::error::Result;

/// Mirrors `BiasActParams` in kernels/bias_act.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct BiasActParams {
    pub m: u32,
    pub n: u32,
    pub act: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for BiasActParams {}

/// `x [m, n]` f32 in place, `bias [n]`; `act` as `Act::code`.
pub(crate) fn launch(be: &CudaBackend, m: usize, n: usize, act: u32, x: &View<u32>, bias: &View<u32>) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let p = BiasActParams { m: u32_of("bias_act m", m)?, n: u32_of("bias_act n", n)?, act };
    let mut b = be.launcher("bias_act_fwd");
    b.arg(&p).arg(x).arg(bias);
    // SAFETY: kernel (BiasActParams, float* x [m*n], const float* bias [n]); check::bias_act
    // matched both shapes (f32 bits in u32 words) and m*n <= u32::MAX.
    unsafe { b.launch(be.grid_1d((m * n) as u64)) }.map_err(device_err("bias_act launch"))?;
    Ok(())
}

/// `dy [m, n]` f32 masked in place, `y [m, n]`, `db [n]` written.
pub(crate) fn launch_bwd(be: &CudaBackend, m: usize, n: usize, act: u32, dy: &View<u32>, y: &View<u32>, db: &View<u32>) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let p = BiasActParams { m: u32_of("bias_act m", m)?, n: u32_of("bias_act n", n)?, act };
    let mut b = be.launcher("bias_act_bwd");
    b.arg(&p).arg(dy).arg(y).arg(db);
    // SAFETY: kernel (BiasActParams, float* dy [m*n], const float* y [m*n], float* db [n]);
    // check::bias_act_bwd matched the shapes and made dy, y distinct; db is a fresh buffer.
    unsafe { b.launch(be.grid_1d(n as u64)) }.map_err(device_err("bias_act_bwd launch"))?;
    Ok(())
}
