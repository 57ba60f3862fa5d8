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
    pub tiles: u32,
    pub k_split: u32,
    pub splits: u32,
    pub pad0: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for GemmParams {}

/// Mirrors `GemmCombineParams` in kernels/gemm.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct GemmCombineParams {
    mn: u32,
    splits: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for GemmCombineParams {}

/// Split k only below this many output tiles (a grid that cannot fill a large card)...
const SPLIT_BELOW_TILES: usize = 128;
/// ...and aim for about this many blocks, each reducing at least `MIN_SPLIT_K` of k.
const SPLIT_TARGET_BLOCKS: usize = 1024;
const MIN_SPLIT_K: usize = 1024;

/// `(k_split, splits)` for a shape: from the shape alone (never the card), so a product has the
/// same bits everywhere. Weight gradients (144 x 128 over 76,800 rows: 6 tiles) split 75 ways.
pub(crate) fn split_k(tiles: usize, k: usize) -> (usize, usize) {
    if tiles >= SPLIT_BELOW_TILES || k < 2 * MIN_SPLIT_K {
        return (k, 1);
    }
    let want = SPLIT_TARGET_BLOCKS.div_ceil(tiles).min(k / MIN_SPLIT_K).max(1);
    let k_split = k.div_ceil(want).next_multiple_of(16);
    (k_split, k.div_ceil(k_split))
}

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
    let tiles = tiles_m * tiles_n;
    if tiles > i32::MAX as usize {
        return Err(Error::TooLarge { field: "gemm blocks (64x64 output tiles)", value: tiles as u64, limit: i32::MAX as u64 });
    }
    let (k_split, splits) = split_k(tiles, k);
    let blocks = tiles * splits;
    let p = GemmParams {
        m: u32_of("m", m)?,
        n: u32_of("n", n)?,
        k: u32_of("k", k)?,
        tiles_n: tiles_n as u32,
        tiles: tiles as u32,
        k_split: k_split as u32,
        splits: splits as u32,
        pad0: 0,
    };
    if splits > 1 {
        // Partials [splits, m, n] (m * n < 2^32 / 64 here: fewer than 128 tiles), then the combine.
        let part = be.output::<f32>("gemm: split-k partials", splits * m * n)?;
        launch_tiles(be, kind, &p, blocks, a, b, &part)?;
        let c = GemmCombineParams { mn: (m * n) as u32, splits: splits as u32 };
        let cfg = LaunchConfig { grid_dim: ((m * n).div_ceil(256).min(65_535) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut lb = be.launcher("gemm_combine_fwd");
        lb.arg(&c).arg(&part).arg(out);
        // SAFETY: kernel (GemmCombineParams, part [splits * m * n], out [m * n]); `part` was just
        // allocated with that length and every slice written by launch_tiles; grid-stride over
        // e < m * n.
        unsafe { lb.launch(cfg) }.map_err(device_err("gemm combine launch"))?;
        return Ok(());
    }
    launch_tiles(be, kind, &p, blocks, a, b, out)
}

/// The tile kernel of `kind` over `blocks` blocks writing `out` (`[splits, m, n]`).
fn launch_tiles<A: PushArg, B: PushArg, O: PushArg>(
    be: &CudaBackend,
    kind: GemmKind,
    p: &GemmParams,
    blocks: usize,
    a: &A,
    b: &B,
    out: &O,
) -> Result<()> {
    let name = match kind {
        GemmKind::NN => "gemm_fwd_nn",
        GemmKind::NT => "gemm_fwd_nt",
        GemmKind::TN => "gemm_fwd_tn",
    };
    let cfg = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (GEMM_THREADS, 1, 1), shared_mem_bytes: 0 };
    let mut lb = be.launcher(name);
    lb.arg(p).arg(a).arg(b).arg(out);
    // SAFETY: kernel (GemmParams, a [m*k], b [k*n], out [splits*m*n]) for every kind; the
    // callers validated both lengths (check::gemm / check::gemm_dev: m*k, k*n, m*n <= u32::MAX),
    // m, n, k > 0, and `out` holds `splits` slices; grid splits*tiles blocks of GEMM_THREADS, each
    // block reading rows < m / columns < n / p < k only and writing its own tile of its own slice
    // (rows < m, columns < n) once.
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

#[cfg(test)]
mod tests {
    use super::split_k;

    #[test]
    fn split_k_only_for_few_tiles_and_long_k() {
        // The weight gradient 144 x 128 over 76,800 rows: 6 tiles, 75 splits of 1,024.
        assert_eq!(split_k(6, 76_800), (1024, 75));
        // Enough tiles, or a short k: unsplit.
        assert_eq!(split_k(200, 76_800), (76_800, 1));
        assert_eq!(split_k(2, 2047), (2047, 1));
        // The parity shape 33 x 65 over 4,099: four splits, the last partial.
        let (ks, s) = split_k(2, 4099);
        assert_eq!((ks, s), (1040, 4));
        assert!(ks % 16 == 0 && (s - 1) * ks < 4099 && s * ks >= 4099);
    }
}
