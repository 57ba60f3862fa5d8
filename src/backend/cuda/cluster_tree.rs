//! Host side of `kernels/cluster_tree.cu`: [`Backend::kmeans_tree`](crate::backend::Backend::kmeans_tree)
//! with the whole hierarchy on the device (reference: `cpu::cluster_tree::tree`).
//!
//! One upload (ids, root offsets, streams, the δ table, the initial status words). Per level,
//! all on the device: the level's row ids and points (`cluster_tree_gather_fwd`, then
//! `copy_rows_fwd` from the resident embeddings), k-means++ and Lloyd (kmeans.cu), the partition
//! (`count`, `scan`, `scatter`) and the next level's k, centroid offsets and seeds (`prepare`);
//! then one download of the 16 status words, which size the next level's launches and say when
//! to stop. One final download of the clusters. So a job is 1 upload and `levels + 1` downloads,
//! whatever `max_iter`.

use cudarc::driver::LaunchConfig;

use super::buffers::{Buf, View};
use super::kmeans::{launch_seed, lloyd_rounds, seed_words, DevProblems, KmeansParams};
use super::launch::KernelParam;
use super::{device_err, u32_of, CudaBackend, Packer, BACKEND};
use crate::backend::cpu::cluster_tree::{delta_by_table, delta_table};
use crate::backend::cpu::copy_rows::SrcCols;
use crate::backend::{TreeJob, TreeResult, TreeStats};
use crate::error::{Error, Result};

/// Mirrors `TreePrepareParams` in kernels/cluster_tree.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct TreePrepareParams {
    n_table: u32,
    depth: u32,
    first: u32,
    pad: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for TreePrepareParams {}

/// Mirrors `TreeGatherParams` in kernels/cluster_tree.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct TreeGatherParams {
    n_points: u32,
    first: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for TreeGatherParams {}

/// Mirrors `TreeLevelParams` in kernels/cluster_tree.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct TreeLevelParams {
    n_problems: u32,
    gamma: u32,
    stride: u32,
    pad: u32,
}
// SAFETY: plain `#[repr(C)]` u32 fields, the same layout as the CUDA struct.
unsafe impl KernelParam for TreeLevelParams {}

/// The status words (`ST_*` in kernels/cluster_tree.cu); the counters from `PROBLEMS` on are
/// u64 as (lo, hi) words.
const ST_NEXT_P: usize = 0;
const ST_NEXT_N: usize = 1;
const ST_NEXT_K: usize = 2;
const ST_RES_C: usize = 3;
const ST_RES_M: usize = 4;
const ST_PROBLEMS: usize = 6;
const ST_FORCED: usize = 8;
const ST_ASSIGN_PTS: usize = 10;
const ST_UPDATE_PTS: usize = 12;
const ST_ASSIGN_DIST: usize = 14;
const STATUS_WORDS: usize = 16;
/// Rows of the per-problem table `prob [5, stride]` (`PR_*`).
const PROB_ROWS: usize = 5;

/// One level's problems: job point index of each point `[N]`, offsets `[Pmax+1]`, roots `[Pmax]`.
struct Level {
    work: Buf<u32>,
    offs: Buf<u32>,
    root: Buf<u32>,
}

impl Level {
    fn new(be: &CudaBackend, n: usize, pmax: usize) -> Result<Level> {
        Ok(Level {
            work: be.output("kmeans tree: alloc work", n)?,
            offs: be.output("kmeans tree: alloc offsets", pmax + 1)?,
            root: be.output("kmeans tree: alloc roots", pmax)?,
        })
    }
}

/// Per-centroid scratch of the partition, `[cap]` each: part sizes, child ranks, point bases.
struct Parts {
    cnt: Buf<u32>,
    cidx: Buf<u32>,
    cbase: Buf<u32>,
}

impl Parts {
    fn new(be: &CudaBackend, cap: usize) -> Result<Parts> {
        Ok(Parts {
            cnt: be.output("kmeans tree: alloc part sizes", cap)?,
            cidx: be.output("kmeans tree: alloc part ranks", cap)?,
            cbase: be.output("kmeans tree: alloc part bases", cap)?,
        })
    }
}

/// A device-reported count the host sizes by, checked against its bound.
fn reported(what: &'static str, v: u32, bound: usize) -> Result<usize> {
    if v as usize > bound {
        return Err(Error::Device { backend: BACKEND, op: "kmeans tree", message: format!("{what} {v} reported, above {bound}") });
    }
    Ok(v as usize)
}

fn word64(st: &[u32], at: usize) -> u64 {
    st[at] as u64 | (st[at + 1] as u64) << 32
}

/// Warp-per-problem launches (count, scatter): 8 problems per 256-thread block.
fn warp_cfg(n_prob: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (n_prob.div_ceil(8), 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// The single-block launches (prepare, scan).
const ONE_BLOCK: LaunchConfig = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };

/// `prepare` for `lv` at `depth` (its problem count is status[NEXT_P] on the device).
#[allow(clippy::too_many_arguments)]
fn launch_prepare(
    be: &CudaBackend,
    depth: u32,
    lv: &Level,
    streams: &View<u32>,
    table: &View<u32>,
    n_table: u32,
    coffs: &Buf<u32>,
    seeds: &Buf<u32>,
    status: &Buf<u32>,
) -> Result<()> {
    let q = TreePrepareParams { n_table, depth, first: (depth == 0) as u32, pad: 0 };
    let mut b = be.launcher("cluster_tree_prepare_fwd");
    b.arg(&q).arg(&lv.offs).arg(&lv.root).arg(streams).arg(table).arg(coffs).arg(seeds).arg(status);
    // SAFETY: kernel (TreePrepareParams, offsets [P+1], root [P], streams [2R], table [n_table],
    // coffs [P+1], seeds [2P], status [16]) with P = status[NEXT_P] ≤ Pmax, the capacity of
    // offsets, root, coffs and seeds (every problem holds ≥ γ points: P ≤ N / γ = Pmax); roots
    // are < R (level 0 writes root[p] = p, P = R; later levels copy their parents').
    unsafe { b.launch(ONE_BLOCK) }.map_err(device_err("kmeans tree prepare launch"))
}

/// The job on the device (`job` checked by `check::tree_job` against `emb [rows, dim]`).
pub(crate) fn tree(be: &CudaBackend, emb: &Buf<u32>, dim: usize, job: &TreeJob) -> Result<TreeResult> {
    let _range = crate::nvtx::range("kmeans: tree");
    let (n, n_roots) = (job.ids.len(), job.streams.len());
    let gamma = job.gamma;
    let table = delta_table();
    let n_table = u32_of("delta table", table.len())?;
    let mut status0 = [0u32; STATUS_WORDS];
    status0[ST_NEXT_P] = u32_of("tree roots", n_roots)?;
    status0[ST_NEXT_N] = u32_of("tree points", n)?;
    let mut pk = Packer::default();
    let (r_ids, r_off, r_str) = (pk.push(job.ids), pk.push(job.offsets), pk.push(&seed_words(job.streams)));
    let (r_tab, r_st) = (pk.push(&table), pk.push(&status0));
    let up = be.htod("kmeans tree: upload", &pk.words)?;
    if n_roots == 0 {
        // No launch and no download; the upload above keeps a job's cost at exactly one, as the
        // parity test counts it for every job.
        return Ok(TreeResult { offsets: vec![0], ..Default::default() });
    }
    let (ids, streams, tab) = (up.slice(r_ids), up.slice(r_str), up.slice(r_tab));

    // Every problem holds at least γ points, so a level has at most N / γ of them.
    let pmax = n / gamma as usize;
    let stride = u32_of("tree problems", pmax)?;
    let status = be.output::<u32>("kmeans tree: alloc status", STATUS_WORDS)?;
    let (mut cur, mut nxt) = (Level::new(be, n, pmax)?, Level::new(be, n, pmax)?);
    let copy = |dst: u64, src: View<u32>, words: usize, op: &'static str| be.dev.dtod(dst, src.addr(), words * 4).map_err(device_err(op));
    copy(status.addr(), up.slice(r_st), STATUS_WORDS, "kmeans tree: status")?;
    copy(cur.offs.addr(), up.slice(r_off.clone()), r_off.len(), "kmeans tree: root offsets")?;
    let lvl_ids = be.output::<u32>("kmeans tree: alloc row ids", n)?;
    let points = be.output::<f32>("kmeans tree: alloc points", n * dim)?;
    let mind = be.output::<f32>("kmeans tree: alloc min distances", n)?;
    let coffs = be.output::<u32>("kmeans tree: alloc centroid offsets", pmax + 1)?;
    let seeds = be.output::<u32>("kmeans tree: alloc seeds", 2 * pmax)?;
    let prob = be.output::<u32>("kmeans tree: alloc problem table", PROB_ROWS * pmax)?;
    let members = be.output::<u32>("kmeans tree: alloc members", n)?;
    let roff = be.output::<u32>("kmeans tree: alloc cluster offsets", n + 1)?;
    let rroot = be.output::<u32>("kmeans tree: alloc cluster roots", n)?;

    // Level 0's Σk sizes the first centroids (the same table the device searches).
    let mut total_k: usize = job.offsets.windows(2).map(|w| delta_by_table(&table, w[1] - w[0]) as usize).sum();
    let mut cents = be.output::<f32>("kmeans tree: alloc centroids", total_k * dim)?;
    let mut parts = Parts::new(be, total_k)?;
    launch_prepare(be, 0, &cur, &streams, &tab, n_table, &coffs, &seeds, &status)?;

    let all = SrcCols { stride: dim, start: 0, width: dim };
    let (mut n_prob, mut n_pts, mut depth) = (n_roots, n, 0u32);
    let last = loop {
        let _level = crate::nvtx::range("kmeans tree: level");
        let np = n_prob as u32;
        let q = TreeGatherParams { n_points: u32_of("tree points", n_pts)?, first: (depth == 0) as u32 };
        let mut b = be.launcher("cluster_tree_gather_fwd");
        b.arg(&q).arg(&ids).arg(&cur.work).arg(&lvl_ids);
        // SAFETY: kernel (TreeGatherParams, ids [N], work [N], lvl_ids [N]); i < n_pts ≤ N and
        // every work entry is a job point index < N (level 0 writes i; later levels, the scatter).
        unsafe { b.launch(be.grid_1d(n_pts as u64)) }.map_err(device_err("kmeans tree gather launch"))?;
        super::copy_rows::launch(be, n_pts, all, dim, 0, &points, None, emb, Some(&lvl_ids.slice(..n_pts)))?;

        if cents.len() < total_k * dim {
            cents = be.output::<f32>("kmeans tree: alloc centroids", total_k * dim)?;
        }
        if parts.cnt.len() < total_k {
            parts = Parts::new(be, total_k)?;
        }
        let p = KmeansParams { n_points: q.n_points, dim: u32_of("dim", dim)?, n_problems: np, total_k: total_k as u32 };
        let d = DevProblems { p, points: points.slice(..n_pts * dim), offsets: cur.offs.slice(..=n_prob), coffs: coffs.slice(..=n_prob) };
        launch_seed(be, &d, &seeds.slice(..2 * n_prob), &mind, &cents)?;
        let (assign, state) = lloyd_rounds(be, &d, &cents, n_pts, n_prob, job.max_iter)?;
        let iters = state.slice(2 * n_prob..3 * n_prob);

        let lp = TreeLevelParams { n_problems: np, gamma, stride, pad: 0 };
        let mut b = be.launcher("cluster_tree_count_fwd");
        b.arg(&lp).arg(&cur.offs).arg(&coffs).arg(&assign).arg(&parts.cnt).arg(&parts.cidx).arg(&parts.cbase).arg(&prob);
        // SAFETY: kernel (TreeLevelParams, offsets [P+1], coffs [P+1], assign [N_d] (each < k of
        // its problem, from kmeans_assign_fwd_v1), cnt/cidx/cbase [Σk] (capacity ≥ Σk = total_k),
        // prob [5, stride] with P ≤ stride); warp p writes only its centroids' entries and column p.
        unsafe { b.launch(warp_cfg(np)) }.map_err(device_err("kmeans tree count launch"))?;

        let mut b = be.launcher("cluster_tree_scan_fwd");
        b.arg(&lp).arg(&cur.offs).arg(&coffs).arg(&iters).arg(&prob).arg(&status);
        // SAFETY: kernel (TreeLevelParams, offsets [P+1], coffs [P+1], iters [P], prob [5, stride],
        // status [16]); one block reads and rewrites columns 0..P of prob and the status words.
        unsafe { b.launch(ONE_BLOCK) }.map_err(device_err("kmeans tree scan launch"))?;

        let mut b = be.launcher("cluster_tree_scatter_fwd");
        b.arg(&lp).arg(&cur.offs).arg(&coffs).arg(&cur.root).arg(&cur.work).arg(&assign);
        b.arg(&parts.cnt).arg(&parts.cidx).arg(&parts.cbase).arg(&prob);
        b.arg(&members).arg(&roff).arg(&rroot).arg(&nxt.work).arg(&nxt.offs).arg(&nxt.root);
        // SAFETY: kernel (TreeLevelParams, offsets, coffs, root, work, assign, cnt, cidx, cbase,
        // prob, members [N], roff [N+1], rroot [N], nwork [N], noff [Pmax+1], nroot [Pmax]). The
        // scan's bases partition the level: each final cluster and member slot (< N in all, the
        // clusters being disjoint and non-empty) and each next-level problem (< Pmax, ≥ γ points
        // each) and point slot (< N) is written by exactly one lane; work and nwork are
        // different buffers (cur / nxt).
        unsafe { b.launch(warp_cfg(np)) }.map_err(device_err("kmeans tree scatter launch"))?;

        launch_prepare(be, depth + 1, &nxt, &streams, &tab, n_table, &coffs, &seeds, &status)?;
        let st = be.dtoh("kmeans tree: status", &status, STATUS_WORDS)?;
        std::mem::swap(&mut cur, &mut nxt);
        depth += 1;
        if st.len() != STATUS_WORDS {
            return Err(Error::Device { backend: BACKEND, op: "kmeans tree", message: "short status download".into() });
        }
        n_prob = reported("next level problems", st[ST_NEXT_P], pmax)?;
        n_pts = reported("next level points", st[ST_NEXT_N], n)?;
        total_k = reported("next level centroids", st[ST_NEXT_K], n)?;
        if n_prob == 0 {
            break st;
        }
    };

    let c = reported("clusters", last[ST_RES_C], n)?;
    let m = reported("cluster members", last[ST_RES_M], n)?;
    if m != n {
        return Err(Error::Device { backend: BACKEND, op: "kmeans tree", message: format!("{m} of {n} points in final clusters") });
    }
    let mut got = be.dtoh_many("kmeans tree: download", &[(members.addr(), m), (roff.addr(), c + 1), (rroot.addr(), c)])?;
    let root = got.pop().unwrap_or_default();
    let offsets = got.pop().unwrap_or_default();
    let stats = TreeStats {
        levels: depth,
        problems: word64(&last, ST_PROBLEMS),
        forced: word64(&last, ST_FORCED),
        assign_points: word64(&last, ST_ASSIGN_PTS),
        update_points: word64(&last, ST_UPDATE_PTS),
        assign_distances: word64(&last, ST_ASSIGN_DIST),
    };
    Ok(TreeResult { members: got.pop().unwrap_or_default(), offsets, root, stats })
}
