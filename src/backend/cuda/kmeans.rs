//! Host side of `kernels/kmeans.cu` and `kernels/kmeans_update.cu`: the standalone
//! assign/update ops and a device-resident Lloyd loop: points, centroids, assignments and the
//! per-problem convergence state stay on the device; the loop runs `max_iter` rounds without
//! the host (a converged problem is skipped by the kernels), and the assignments, centroids and
//! iteration counts come back in one download. The clustering tree (cluster_tree.rs) runs the
//! same seeding and rounds (`launch_seed`, `lloyd_rounds`) on its levels' buffers and keeps
//! their results on the device.

use cudarc::driver::LaunchConfig;

use super::buffers::{Buf, View};
use super::launch::{KernelParam, PushArg};
use super::{device_err, u32_of, CudaBackend, KmeansVersion, Packer};
use crate::backend::{KmeansBatch, KmeansResult};
use crate::error::Result;

// Versions of the k-means kernels (the headers of kernels/kmeans.cu and kmeans_update.cu say
// what each does). V2 (the default) uses `kmeans_assign_fwd_v2` where it applies (dim 64, rows
// 16-byte aligned; v1's assignment elsewhere) and `kmeans_update_fwd_v2` (a stable counting
// sort by assignment, then sequential f64 sums per centroid) for every update; V1 runs v1 of
// both. Every version is bit-identical to the CPU. Choose with
// `CudaBackend::set_kmeans_version` or `TWIN_KMEANS=v1|v2`.

/// Mirrors `KmeansParams` in kernels/kmeans.cu (and kmeans_update.cu).
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

/// A batch on the device: points `[N, dim]`, offsets `[P+1]`, centroid offsets `[P+1]`, in
/// buffers owned elsewhere (an upload, or the clustering tree's level buffers).
pub(super) struct DevProblems<'a> {
    pub p: KmeansParams,
    pub points: View<'a, f32>,
    pub offsets: View<'a, u32>,
    pub coffs: View<'a, u32>,
}

/// A batch uploaded by a standalone op.
struct Uploaded {
    p: KmeansParams,
    points: Buf<f32>,
    offsets: Buf<u32>,
    coffs: Buf<u32>,
}

impl Uploaded {
    fn problems(&self) -> DevProblems<'_> {
        DevProblems { p: self.p, points: self.points.slice(..), offsets: self.offsets.slice(..), coffs: self.coffs.slice(..) }
    }
}

fn upload(be: &CudaBackend, b: &KmeansBatch) -> Result<Uploaded> {
    let coffs = b.centroid_offsets();
    let n = b.points.len() / b.dim;
    Ok(Uploaded {
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
    // v2 reads each point as 16 float4: it needs dim 64 and 16-byte aligned rows.
    let v2 = be.kmeans_version() == KmeansVersion::V2 && d.p.dim == 64 && d.points.addr() % 16 == 0;
    let mut b = be.launcher(if v2 { "kmeans_assign_fwd_v2" } else { "kmeans_assign_fwd_v1" });
    b.arg(&d.p).arg(&d.points).arg(&d.offsets).arg(&d.coffs).arg(centroids).arg(assign).arg(done);
    // SAFETY: kernel (KmeansParams, points [N*dim], offsets [P+1], coffs [P+1], centroids
    // [Σk*dim], assign [N], done [P]); check::kmeans guarantees 1 ≤ k_p ≤ n_p and offsets ending
    // at N, check::centroids the centroid length; one thread per point writes its own assignment.
    // v2 additionally reads rows of exactly 64 floats from a 16-byte aligned base (checked above)
    // and stages at most KM_V2_ROWS centroid rows, a range inside [0, Σk) bounded by coffs.
    unsafe { b.launch(cfg) }.map_err(device_err("kmeans assign launch"))?;
    Ok(())
}

fn launch_update<D: PushArg>(
    be: &CudaBackend,
    d: &DevProblems,
    v2: Option<&UpdateV2>,
    assign: &Buf<u32>,
    centroids: &Buf<f32>,
    done: &D,
) -> Result<()> {
    if d.p.total_k == 0 {
        return Ok(());
    }
    if let Some(u) = v2 {
        return u.launch(be, d, assign, centroids, done);
    }
    let threads = (d.p.dim.div_ceil(32) * 32).clamp(32, 256);
    let cfg = LaunchConfig { grid_dim: (d.p.total_k, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
    let mut b = be.launcher("kmeans_update_fwd_v1");
    b.arg(&d.p).arg(&d.points).arg(&d.offsets).arg(&d.coffs).arg(assign).arg(centroids).arg(done);
    // SAFETY: kernel (KmeansParams, points, offsets, coffs, assign [N] (each < k of its problem,
    // check::assignments or produced by kmeans_assign_fwd_v1), centroids [Σk*dim] updated in place,
    // done [P] (a done problem's blocks leave before any ballot));
    // blockDim is a multiple of 32 as the ballots require; block j touches only centroid row j.
    unsafe { b.launch(cfg) }.map_err(device_err("kmeans update launch"))?;
    Ok(())
}

/// Points per work item of update v2 (`KM_U2_SLICE` in kernels/kmeans_update.cu).
const U2_SLICE: usize = 2048;

/// Update v2's scratch for one batch, allocated (and planned) once and reused every round:
/// plan `[2P+2]` (work-item and matrix offsets per problem), mat `[Σk + N/4]` (counts, then
/// starts, per (centroid, slice)), kst `[2Σk]` (where each centroid's members start and end in `order`), order
/// `[N]` (point indices sorted stably by assignment).
pub(super) struct UpdateV2 {
    plan: Buf<u32>,
    mat: Buf<u32>,
    kst: Buf<u32>,
    order: Buf<u32>,
    /// Upper bound on the work items, P + N/2048 (the kernels leave past plan[P]).
    items: u32,
}

impl UpdateV2 {
    /// Scratch for `d` when the backend runs update v2, else None (v1 needs none).
    pub(super) fn for_batch(be: &CudaBackend, d: &DevProblems) -> Result<Option<Self>> {
        if be.kmeans_version() != KmeansVersion::V2 || d.p.total_k == 0 {
            return Ok(None);
        }
        let (n, n_prob, total_k) = (d.p.n_points as usize, d.p.n_problems as usize, d.p.total_k as usize);
        // The plan scans matrix offsets in the low 32 bits of a u64, and the scan's index
        // arithmetic runs up to one pass (512 words) past the end.
        let cap = total_k + n / 4;
        u32_of("kmeans update v2 matrix", cap + 1024)?;
        let items = u32_of("kmeans update v2 work items", n_prob + n / U2_SLICE)?;
        let u = UpdateV2 {
            plan: be.output::<u32>("kmeans v2: alloc plan", 2 * n_prob + 2)?,
            mat: be.output::<u32>("kmeans v2: alloc matrix", cap)?,
            kst: be.output::<u32>("kmeans v2: alloc centroid starts and ends", 2 * total_k)?,
            order: be.output::<u32>("kmeans v2: alloc order", n.max(1))?,
            items,
        };
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut b = be.launcher("kmeans_update_fwd_v2_plan");
        b.arg(&d.p).arg(&d.offsets).arg(&d.coffs).arg(&u.plan);
        // SAFETY: kernel (KmeansParams, offsets [P+1], coffs [P+1], plan [2P+2]); one block of 256
        // threads (the kernel's warp-total array has 8 slots) writes plan[0..2P+2) only; the
        // matrix total Σ slices·k <= Σk + N/4 fits the scan's 32-bit low word (checked above).
        unsafe { b.launch(cfg) }.map_err(device_err("kmeans update v2 plan launch"))?;
        Ok(Some(u))
    }

    fn launch<D: PushArg>(&self, be: &CudaBackend, d: &DevProblems, assign: &Buf<u32>, centroids: &Buf<f32>, done: &D) -> Result<()> {
        let block = (256, 1, 1);
        let items = LaunchConfig { grid_dim: (self.items.div_ceil(8), 1, 1), block_dim: block, shared_mem_bytes: 0 };
        let mut b = be.launcher("kmeans_update_fwd_v2_count");
        b.arg(&d.p).arg(&d.offsets).arg(&d.coffs).arg(assign).arg(&self.plan).arg(&self.mat).arg(done);
        // SAFETY: kernel (KmeansParams, offsets [P+1], coffs [P+1], assign [N] (each < k of its
        // problem), plan [2P+2] from the plan kernel, mat [Σk + N/4], done [P]); a warp per work
        // item (8 per block; the grid covers the bound P + N/2048 >= plan[P]) writes only its own
        // entries plan[P+1+p] + j·slices + q, j < k, inside the problem's matrix segment.
        unsafe { b.launch(items) }.map_err(device_err("kmeans update v2 count launch"))?;
        let probs = LaunchConfig { grid_dim: (d.p.n_problems.div_ceil(8), 1, 1), block_dim: block, shared_mem_bytes: 0 };
        let mut b = be.launcher("kmeans_update_fwd_v2_scan");
        b.arg(&d.p).arg(&d.offsets).arg(&d.coffs).arg(&self.plan).arg(&self.mat).arg(&self.kst).arg(done);
        // SAFETY: kernel (KmeansParams, offsets, coffs, plan, mat, kst [2Σk], done); a warp per
        // problem rewrites its own matrix segment and kst[coffs[p]..coffs[p+1]) and
        // kst[Σk + coffs[p]..Σk + coffs[p+1]).
        unsafe { b.launch(probs) }.map_err(device_err("kmeans update v2 scan launch"))?;
        let mut b = be.launcher("kmeans_update_fwd_v2_scatter");
        b.arg(&d.p).arg(&d.offsets).arg(&d.coffs).arg(assign).arg(&self.plan).arg(&self.mat).arg(&self.order).arg(done);
        // SAFETY: kernel (KmeansParams, offsets, coffs, assign, plan, mat, order [N], done); the
        // scanned starts place each point of problem p at a distinct index of
        // [offsets[p], offsets[p+1]) (a permutation of the problem's points); a warp touches only
        // its item's entries of mat.
        unsafe { b.launch(items) }.map_err(device_err("kmeans update v2 scatter launch"))?;
        let threads = d.p.total_k as u64 * d.p.dim as u64;
        let grid = u32_of("kmeans update v2 blocks", threads.div_ceil(256) as usize)?;
        let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: block, shared_mem_bytes: 0 };
        let mut b = be.launcher("kmeans_update_fwd_v2");
        b.arg(&d.p).arg(&d.points).arg(&d.coffs).arg(&self.kst).arg(&self.order).arg(centroids).arg(done);
        // SAFETY: kernel (KmeansParams, points [N*dim], coffs, kst [2Σk], order [N],
        // centroids [Σk*dim] updated in place, done); a thread per (centroid, dimension) reads
        // members order[kst[j]..kst[Σk+j]) (point indices of its own problem, written by this
        // round's scan and scatter) only when its problem is not done, and writes only its own
        // centroid value.
        unsafe { b.launch(cfg) }.map_err(device_err("kmeans update v2 launch"))?;
        let cfg = LaunchConfig { grid_dim: (d.p.total_k.min(1024), 1, 1), block_dim: block, shared_mem_bytes: 0 };
        let mut b = be.launcher("kmeans_update_fwd_v2_big");
        b.arg(&d.p).arg(&d.points).arg(&d.coffs).arg(&self.kst).arg(&self.order).arg(centroids).arg(done);
        // SAFETY: the same arguments as the kernel above; blocks of exactly 256 threads (the
        // kernel's per-thread staging assumes it) stride over the centroids, each summing those
        // the kernel above skipped (>= 1024 members, dim <= 256) into their own rows only.
        unsafe { b.launch(cfg) }.map_err(device_err("kmeans update v2 big launch"))?;
        Ok(())
    }
}

/// `batch` and `centroids` already checked.
pub(crate) fn assign(be: &CudaBackend, batch: &KmeansBatch, centroids: &[f32]) -> Result<Vec<u32>> {
    let n = batch.points.len() / batch.dim;
    if n == 0 {
        return Ok(Vec::new());
    }
    let up = upload(be, batch)?;
    let d = up.problems();
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
    let up = upload(be, batch)?;
    let d = up.problems();
    let a = be.htod("kmeans: upload assign", assign)?;
    let c = be.htod("kmeans: upload centroids", prev)?;
    let done = be.zeros::<u32>("kmeans: alloc done", batch.n_problems())?;
    let v2 = UpdateV2::for_batch(be, &d)?;
    launch_update(be, &d, v2.as_ref(), &a, &c, &done)?;
    be.dtoh("kmeans update: download", &c, prev.len())
}

/// Launch `kmeans_seed_fwd`: k-means++ for every problem into `centroids [Σk, dim]`.
pub(super) fn launch_seed<S: PushArg>(be: &CudaBackend, d: &DevProblems, seeds: &S, mind: &Buf<f32>, centroids: &Buf<f32>) -> Result<()> {
    if d.p.n_problems == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid_dim: (d.p.n_problems, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut b = be.launcher("kmeans_seed_fwd");
    b.arg(&d.p).arg(&d.points).arg(&d.offsets).arg(&d.coffs).arg(seeds).arg(mind).arg(centroids);
    // SAFETY: kernel (KmeansParams, points [N*dim], offsets [P+1], coffs [P+1], seeds [2P] u32,
    // mind [N] scratch, centroids [Σk*dim]); check::kmeans guarantees 1 ≤ k_p ≤ n_p, so every pick
    // is a point of its own problem (below(n) < n; the D² draw returns a position < n) and block
    // p writes only its centroid rows coffs[p]..coffs[p+1] and mind of its own points.
    unsafe { b.launch(cfg) }.map_err(device_err("kmeans seed launch"))?;
    Ok(())
}

pub(super) fn seed_words(seeds: &[u64]) -> Vec<u32> {
    seeds.iter().flat_map(|&s| [s as u32, (s >> 32) as u32]).collect()
}

/// k-means++ on the device (`batch` and `seeds` checked): the same centroids as the CPU's.
pub(crate) fn seed(be: &CudaBackend, batch: &KmeansBatch, seeds: &[u64]) -> Result<Vec<f32>> {
    let n = batch.points.len() / batch.dim;
    let total: usize = batch.k.iter().map(|&k| k as usize).sum();
    if n == 0 || total == 0 {
        return Ok(Vec::new());
    }
    let up = upload(be, batch)?;
    let d = up.problems();
    let sd = be.htod("kmeans: upload seeds", &seed_words(seeds))?;
    let mind = be.output::<f32>("kmeans: alloc min distances", n)?;
    let c = be.output::<f32>("kmeans: alloc centroids", total * batch.dim)?;
    launch_seed(be, &d, &sd, &mind, &c)?;
    be.dtoh("kmeans seed: download", &c, total * batch.dim)
}

/// The clustering job's k-means (`Backend::kmeans_items`, inputs checked): the problems' points
/// are rows `ids` of the resident embeddings `emb [rows, dim]`. One upload (ids, offsets, centroid
/// offsets, seeds), the gather, k-means++ and Lloyd on the device, one download.
pub(crate) fn kmeans_items(
    be: &CudaBackend,
    emb: &Buf<u32>,
    dim: usize,
    ids: &[u32],
    offsets: &[u32],
    k: &[u32],
    seeds: &[u64],
    max_iter: u32,
) -> Result<KmeansResult> {
    let _range = crate::nvtx::range("kmeans: items");
    let (n, n_prob) = (ids.len(), k.len());
    let mut coffs = Vec::with_capacity(n_prob + 1);
    coffs.push(0u32);
    for &kk in k {
        coffs.push(coffs[coffs.len() - 1] + kk);
    }
    let total = *coffs.last().unwrap_or(&0) as usize;
    if n == 0 || n_prob == 0 {
        return Ok(KmeansResult { assign: Vec::new(), centroids: Vec::new(), iterations: vec![0; n_prob] });
    }
    let mut pk = Packer::default();
    let (r_ids, r_off, r_coff, r_seed) = (pk.push(ids), pk.push(offsets), pk.push(&coffs), pk.push(&seed_words(seeds)));
    let buf = be.htod("kmeans items: upload", &pk.words)?;
    let words = |r: &std::ops::Range<usize>| buf.slice(r.clone());
    let points = be.output::<f32>("kmeans items: alloc points", n * dim)?;
    let all = crate::backend::cpu::copy_rows::SrcCols { stride: dim, start: 0, width: dim };
    super::copy_rows::launch(be, n, all, dim, 0, &points, None, emb, Some(&buf.slice(r_ids)))?;
    let d = DevProblems {
        p: KmeansParams {
            n_points: u32_of("points", n)?,
            dim: u32_of("dim", dim)?,
            n_problems: u32_of("problems", n_prob)?,
            total_k: total as u32,
        },
        points: points.slice(..),
        offsets: words(&r_off),
        coffs: words(&r_coff),
    };
    let mind = be.output::<f32>("kmeans items: alloc min distances", n)?;
    let c = be.output::<f32>("kmeans items: alloc centroids", total * dim)?;
    launch_seed(be, &d, &buf.slice(r_seed), &mind, &c)?;
    lloyd_on(be, &d, &c, n, n_prob, total * dim, max_iter)
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
    let up = upload(be, batch)?;
    let d = up.problems();
    let c = be.htod("kmeans: upload centroids", &centroids)?;
    lloyd_on(be, &d, &c, n, n_prob, centroids.len(), max_iter)
}

/// The Lloyd rounds on problems already on the device, from the centroids in `c` (updated in
/// place); one download of assignments, centroids and iteration counts at the end.
fn lloyd_on(
    be: &CudaBackend,
    d: &DevProblems,
    c: &Buf<f32>,
    n: usize,
    n_prob: usize,
    n_cent: usize,
    max_iter: u32,
) -> Result<KmeansResult> {
    let (assign, state) = lloyd_rounds(be, d, c, n, n_prob, max_iter)?;
    let iters = state.slice(2 * n_prob..3 * n_prob);
    let mut got = be.dtoh_many("kmeans: download", &[(assign.addr(), n), (c.addr(), n_cent), (iters.addr(), n_prob)])?;
    let iterations = got.pop().unwrap_or_default();
    let cents = got.pop().unwrap_or_default().into_iter().map(f32::from_bits).collect();
    Ok(KmeansResult { assign: got.pop().unwrap_or_default(), centroids: cents, iterations })
}

/// The Lloyd rounds without a download: the final assignments `[N]` and the convergence state
/// `[3P]` (changed, done, iteration counts at `2P..3P`) stay on the device.
pub(super) fn lloyd_rounds(
    be: &CudaBackend,
    d: &DevProblems,
    c: &Buf<f32>,
    n: usize,
    n_prob: usize,
    max_iter: u32,
) -> Result<(Buf<u32>, Buf<u32>)> {
    let mut cur = be.output::<u32>("kmeans: alloc assign", n)?;
    let mut next = be.output::<u32>("kmeans: alloc assign", n)?;
    // Convergence state, zeroed: changed flags, done flags, iteration counts.
    let state = be.zeros::<u32>("kmeans: alloc state", 3 * n_prob)?;
    let (changed, done, iters) = (state.slice(..n_prob), state.slice(n_prob..2 * n_prob), state.slice(2 * n_prob..3 * n_prob));
    let none_done = be.zeros::<u32>("kmeans: alloc done", n_prob)?;
    launch_assign(be, d, c, &cur, &none_done)?;
    let v2 = UpdateV2::for_batch(be, d)?;
    let pts_cfg = LaunchConfig { grid_dim: (d.p.n_points.div_ceil(256), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let prob_cfg = LaunchConfig { grid_dim: ((n_prob as u32).div_ceil(256), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    for _ in 0..max_iter {
        launch_update(be, d, v2.as_ref(), &cur, c, &done)?;
        launch_assign(be, d, c, &next, &done)?;
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
    Ok((cur, state))
}
