//! Host side of `kernels/kmeans.cu`: the standalone assign/update ops and a device-resident
//! Lloyd loop: points, centroids, assignments and the per-problem convergence state stay on the
//! device; the loop runs `max_iter` rounds without the host (a converged problem is skipped by
//! the kernels), and the assignments, centroids and iteration counts come back in one download.

use cudarc::driver::LaunchConfig;

use super::buffers::Buf;
use super::launch::{KernelParam, PushArg};
use super::{device_err, u32_of, CudaBackend};
use crate::backend::{KmeansBatch, KmeansResult};
use crate::error::Result;

/// Mirrors `KmeansParams` in kernels/kmeans.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct KmeansParams {
    pub n_points: u32,
    pub dim: u32,
    pub n_problems: u32,
    pub total_k: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for KmeansParams {}

/// The batch on the device.
struct DevProblems {
    p: KmeansParams,
    points: Buf<f32>,
    offsets: Buf<u32>,
    coffs: Buf<u32>,
}

fn upload(be: &CudaBackend, b: &KmeansBatch) -> Result<DevProblems> {
    let coffs = b.centroid_offsets();
    let n = b.points.len() / b.dim;
    Ok(DevProblems {
        p: KmeansParams {
            n_points: u32_of("points", n)?,
            dim: u32_of("dim", b.dim)?,
            n_problems: u32_of("problems", b.n_problems())?,
            total_k: *coffs.last().unwrap_or(&0),
        },
        points: be.htod("kmeans: upload points", b.points)?,
        offsets: be.htod("kmeans: upload offsets", b.offsets)?,
        coffs: be.htod("kmeans: upload centroid offsets", &coffs)?,
    })
}

fn launch_assign<D: PushArg>(be: &CudaBackend, d: &DevProblems, centroids: &Buf<f32>, assign: &Buf<u32>, done: &D) -> Result<()> {
    if d.p.n_points == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid_dim: (d.p.n_points.div_ceil(256), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut b = be.launcher("kmeans_assign_fwd");
    b.arg(&d.p).arg(&d.points).arg(&d.offsets).arg(&d.coffs).arg(centroids).arg(assign).arg(done);
    // SAFETY: kernel (KmeansParams, points [N*dim], offsets [P+1], coffs [P+1], centroids
    // [Σk*dim], assign [N], done [P]); check::kmeans guarantees 1 ≤ k_p ≤ n_p and offsets ending
    // at N, check::centroids the centroid length; one thread per point writes its own assignment.
    unsafe { b.launch(cfg) }.map_err(device_err("kmeans assign launch"))?;
    Ok(())
}

fn launch_update<D: PushArg>(be: &CudaBackend, d: &DevProblems, assign: &Buf<u32>, centroids: &Buf<f32>, done: &D) -> Result<()> {
    if d.p.total_k == 0 {
        return Ok(());
    }
    let threads = (d.p.dim.div_ceil(32) * 32).clamp(32, 256);
    let cfg = LaunchConfig { grid_dim: (d.p.total_k, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
    let mut b = be.launcher("kmeans_update_fwd");
    b.arg(&d.p).arg(&d.points).arg(&d.offsets).arg(&d.coffs).arg(assign).arg(centroids).arg(done);
    // SAFETY: kernel (KmeansParams, points, offsets, coffs, assign [N] (each < k of its problem,
    // check::assignments or produced by kmeans_assign_fwd), centroids [Σk*dim] updated in place,
    // done [P] (a done problem's blocks leave before any ballot));
    // blockDim is a multiple of 32 as the ballots require; block j touches only centroid row j.
    unsafe { b.launch(cfg) }.map_err(device_err("kmeans update launch"))?;
    Ok(())
}

/// `batch` and `centroids` already checked.
pub(crate) fn assign(be: &CudaBackend, batch: &KmeansBatch, centroids: &[f32]) -> Result<Vec<u32>> {
    let n = batch.points.len() / batch.dim;
    if n == 0 {
        return Ok(Vec::new());
    }
    let d = upload(be, batch)?;
    let c = be.htod("kmeans: upload centroids", centroids)?;
    let a = be.output::<u32>("kmeans: alloc assign", n)?;
    let done = be.zeros::<u32>("kmeans: alloc done", batch.n_problems())?;
    launch_assign(be, &d, &c, &a, &done)?;
    be.dtoh("kmeans assign: download", &a, n)
}

/// `batch`, `assign` and `prev` already checked.
pub(crate) fn update(be: &CudaBackend, batch: &KmeansBatch, assign: &[u32], prev: &[f32]) -> Result<Vec<f32>> {
    if prev.is_empty() {
        return Ok(Vec::new());
    }
    let d = upload(be, batch)?;
    let a = be.htod("kmeans: upload assign", assign)?;
    let c = be.htod("kmeans: upload centroids", prev)?;
    let done = be.zeros::<u32>("kmeans: alloc done", batch.n_problems())?;
    launch_update(be, &d, &a, &c, &done)?;
    be.dtoh("kmeans update: download", &c, prev.len())
}

/// Lloyd iterations from seeded `centroids`, with the trait default's semantics: every problem
/// is updated and reassigned each round (converged ones are fixed points), a problem counts an
/// iteration while active and stops being active once its assignment does not change.
pub(crate) fn lloyd(be: &CudaBackend, batch: &KmeansBatch, centroids: Vec<f32>, max_iter: u32) -> Result<KmeansResult> {
    let _range = crate::nvtx::range("kmeans: lloyd");
    let n = batch.points.len() / batch.dim;
    let n_prob = batch.n_problems();
    if n == 0 || n_prob == 0 {
        return Ok(KmeansResult { assign: Vec::new(), centroids, iterations: vec![0; n_prob] });
    }
    let d = upload(be, batch)?;
    let c = be.htod("kmeans: upload centroids", &centroids)?;
    let mut cur = be.output::<u32>("kmeans: alloc assign", n)?;
    let mut next = be.output::<u32>("kmeans: alloc assign", n)?;
    // Convergence state, zeroed: changed flags, done flags, iteration counts.
    let state = be.zeros::<u32>("kmeans: alloc state", 3 * n_prob)?;
    let (changed, done, iters) = (state.slice(..n_prob), state.slice(n_prob..2 * n_prob), state.slice(2 * n_prob..3 * n_prob));
    let none_done = be.zeros::<u32>("kmeans: alloc done", n_prob)?;
    launch_assign(be, &d, &c, &cur, &none_done)?;
    let pts_cfg = LaunchConfig { grid_dim: (d.p.n_points.div_ceil(256), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let prob_cfg = LaunchConfig { grid_dim: ((n_prob as u32).div_ceil(256), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    for _ in 0..max_iter {
        launch_update(be, &d, &cur, &c, &done)?;
        launch_assign(be, &d, &c, &next, &done)?;
        let mut b = be.launcher("kmeans_changed_fwd");
        b.arg(&d.p).arg(&d.offsets).arg(&cur).arg(&next).arg(&changed);
        // SAFETY: kernel (KmeansParams, offsets [P+1], old [N], new [N], changed [P]); one
        // thread per point, writes only changed[its problem] (< P).
        unsafe { b.launch(pts_cfg) }.map_err(device_err("kmeans changed launch"))?;
        let mut b = be.launcher("kmeans_converge_fwd");
        b.arg(&d.p).arg(&changed).arg(&done).arg(&iters);
        // SAFETY: kernel (KmeansParams, changed [P], done [P], iterations [P]): three disjoint
        // P-word views of `state`; one thread per problem touches only its own words.
        unsafe { b.launch(prob_cfg) }.map_err(device_err("kmeans converge launch"))?;
        std::mem::swap(&mut cur, &mut next);
    }
    let mut got = be.dtoh_many("kmeans: download", &[(cur.addr(), n), (c.addr(), centroids.len()), (iters.addr(), n_prob)])?;
    let iterations = got.pop().unwrap_or_default();
    let cents = got.pop().unwrap_or_default().into_iter().map(f32::from_bits).collect();
    Ok(KmeansResult { assign: got.pop().unwrap_or_default(), centroids: cents, iterations })
}
