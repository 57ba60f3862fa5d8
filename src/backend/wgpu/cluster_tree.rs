//! `Backend::kmeans_tree` on wgpu (shaders/cluster_tree.wgsl): the whole hierarchy of a
//! clustering job on the device, equal to the reference `cpu::cluster_tree::tree`.
//!
//! - The item embeddings are resident (`item_points`, a pooled tensor); each level gathers its
//!   point rows on the device.
//! - ONE upload per job: ids, root offsets, streams (lo, hi words) and the δ table, packed as
//!   kmeans.rs packs a group (sections at 256-byte boundaries).
//! - Per level, one command buffer: δ, centroid offsets and seeds (`prep`), the gather, k-means++
//!   seeding and the Lloyd rounds of kmeans.wgsl on a [`Group::resident`] over those buffers,
//!   then the partition (`count`, `part`, `scan`, `emit`, `scatter`) that writes the final
//!   clusters and the next level's work on the device; the host downloads one status block
//!   (next level's sizes for the dispatch geometry, result counts, the level's work counts).
//! - One final download of members, cluster offsets and roots. So a job is 1 upload and at most
//!   levels + 1 downloads, whatever `max_iter`.
//!
//! Where the device form cannot run (points not resident, the job's points or the embeddings
//! past one storage binding, a root too large for the seeding plan, or on a CPU adapter loops
//! past llvmpipe's trip budget) the job runs the reference over `kmeans_items`.

use super::kmeans::{section, Group, Resident, Run, Sec, Spare};
use super::kmeans_seed;
use super::pool::PoolBuf;
use super::{dev_err, grid, words_u32, Readback, WgpuBackend, B};
use crate::backend::cpu::cluster_tree::{delta_table, tree as reference};
use crate::backend::{Elem, ItemPoints, Tensor, TreeJob, TreeResult, TreeStats};
use crate::cluster::delta;
use crate::error::Result;

/// cluster_tree.wgsl with the 64-bit helpers its seeds use (emu64.wgsl, shared with kmeans.wgsl).
const SRC: &str = concat!(include_str!("../../../shaders/cluster_tree.wgsl"), "\n", include_str!("../../../shaders/emu64.wgsl"));

const INIT_BINDS: &[B] = &[B::R, B::W, B::W];
const PREP_BINDS: &[B] = &[B::R, B::R, B::W, B::R, B::R, B::W];
const GATHER_BINDS: &[B] = &[B::R, B::R, B::R, B::W];
const COUNT_BINDS: &[B] = &[B::R, B::R, B::R, B::W];
const PART_BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::W];
const SCAN_BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::W, B::W];
const EMIT_BINDS: &[B] = &[B::R, B::R, B::R, B::W, B::W, B::W, B::W];
const SCATTER_BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::R, B::W, B::W];

/// Words of the level status block (see the shader's header).
const STATUS_WORDS: usize = 18;
/// Loop trips one invocation may spend on llvmpipe (which stops at 65,535 in all).
const LOOP_BUDGET: usize = 50_000;
/// A job's points must stay below this (destinations carry two flag bits).
const MAX_POINTS: usize = 1 << 30;

/// Mirrors `Params` in shaders/cluster_tree.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    n_prob: u32,
    dim: u32,
    gamma: u32,
    depth: u32,
    table_len: u32,
    res_root: u32,
    root_base: u32,
}

/// `Backend::item_points_native`: the embeddings as a resident tensor, unless they pass one
/// storage binding (then `None`: the host gathers rows).
pub(super) fn item_points(be: &WgpuBackend, emb: &[f32], rows: usize, dim: usize) -> Result<Option<Tensor>> {
    if (emb.len() * 4) as u64 > be.max_binding() {
        return Ok(None);
    }
    let words: Vec<u32> = emb.iter().map(|x| x.to_bits()).collect();
    Ok(Some(be.tensor_upload("item points", rows, dim, Elem::F32, &words)?))
}

/// What the host knows of a level before encoding it (level 0 from the job, later ones from
/// the previous level's status).
#[derive(Clone, Copy, Debug)]
struct Level {
    n_prob: usize,
    n_pts: usize,
    n_max: usize,
    k_max: usize,
    sum_k: usize,
}

/// The job's device buffers; every size bounds all levels (P ≤ N / 2, Σk ≤ N).
struct Bufs {
    job: wgpu::Buffer,
    ids: Sec,
    job_offs: Sec,
    streams: Sec,
    table: Sec,
    table_len: u32,
    work: [PoolBuf; 2],
    /// Level offsets `[P + 1]` at word 0 and roots `[P]` at word `root_base`.
    meta: [PoolBuf; 2],
    root_base: usize,
    coff: PoolBuf,
    seeds: PoolBuf,
    points: PoolBuf,
    cents: [PoolBuf; 2],
    assign: [PoolBuf; 2],
    state: PoolBuf,
    scratch: PoolBuf,
    cnt: PoolBuf,
    pp: PoolBuf,
    status: PoolBuf,
    /// Result offsets `[C + 1]` at word 0 and roots `[C]` at word `N + 1`.
    res: PoolBuf,
    members: PoolBuf,
}

impl Bufs {
    fn sec(&self, s: Sec) -> wgpu::BufferBinding<'_> {
        wgpu::BufferBinding { buffer: &self.job, offset: s.off, size: wgpu::BufferSize::new(s.size) }
    }
    fn roots(&self, side: usize) -> wgpu::BufferBinding<'_> {
        wgpu::BufferBinding { buffer: &self.meta[side], offset: (self.root_base * 4) as u64, size: None }
    }
}

/// Whether the job runs on the device: `Some(per)` seeding picks per dispatch for level 0
/// (later levels have smaller problems).
fn plan(be: &WgpuBackend, pts: &ItemPoints, job: &TreeJob, n_max: usize) -> Option<u32> {
    let (n, dim) = (job.ids.len(), pts.dim);
    let dev = pts.dev.as_ref()?;
    if n >= MAX_POINTS || ((n * dim).max(dev.len()) * 4) as u64 > be.max_binding() {
        return None;
    }
    if be.is_cpu_adapter() {
        // scatter / Lloyd update loop over a problem's points; the single-workgroup scans over
        // ⌈P / 256⌉ problems (about 20 trips each with the δ search).
        if n_max > LOOP_BUDGET || (n / 2).div_ceil(256) * 24 > LOOP_BUDGET {
            return None;
        }
    }
    kmeans_seed::picks_per_dispatch(n_max, dim)
}

/// `Backend::kmeans_tree` (job checked against `pts`).
pub(super) fn tree(be: &WgpuBackend, pts: &ItemPoints, job: &TreeJob) -> Result<TreeResult> {
    let sizes: Vec<usize> = job.offsets.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
    let n_max = sizes.iter().copied().max().unwrap_or(0);
    let (Some(_), Some(dev)) = (plan(be, pts, job, n_max), pts.dev.as_ref()) else {
        return reference(be, pts, job);
    };
    let emb = be.tensor_storage(dev)?;
    let lv = Level {
        n_prob: sizes.len(),
        n_pts: job.ids.len(),
        n_max,
        k_max: if n_max > 0 { delta(n_max) } else { 0 },
        sum_k: sizes.iter().map(|&s| delta(s)).sum(),
    };
    match be.scoped("kmeans_tree", || run(be, emb, pts.dim, job, lv))? {
        Some(r) => Ok(r),
        // A level the seeding plan refused (not expected: problems only shrink).
        None => reference(be, pts, job),
    }
}

fn alloc(be: &WgpuBackend, enc: &mut wgpu::CommandEncoder, dim: usize, job: &TreeJob) -> Bufs {
    let (n, r) = (job.ids.len(), job.streams.len());
    let table_words = delta_table();
    let mut words = Vec::new();
    let ids = section(&mut words, job.ids.iter().copied());
    let job_offs = section(&mut words, job.offsets.iter().copied());
    let streams = section(&mut words, job.streams.iter().flat_map(|&s| [s as u32, (s >> 32) as u32]));
    let table = section(&mut words, table_words.iter().copied());
    let pcap = (n / 2).max(r) + 1;
    let root_base = (pcap + 1).div_ceil(64) * 64;
    let zero = |enc: &mut wgpu::CommandEncoder, label, w| be.pooled_zeroed_in(enc, label, w);
    Bufs {
        job: be.upload("kmeans tree job", &words),
        ids,
        job_offs,
        streams,
        table,
        table_len: table_words.len() as u32,
        work: [be.pooled_output("tree work", n), be.pooled_output("tree work", n)],
        meta: [zero(enc, "tree level", root_base + pcap), zero(enc, "tree level", root_base + pcap)],
        root_base,
        coff: be.pooled_output("tree coff", pcap + 1),
        seeds: be.pooled_output("tree seeds", 2 * pcap),
        points: be.pooled_output("tree points", n * dim),
        cents: [be.pooled_output("tree centroids", n * dim), be.pooled_output("tree centroids", n * dim)],
        assign: [be.pooled_output("tree assign", n), be.pooled_output("tree assign", n)],
        state: be.pooled_output("tree kmeans state", 2 * pcap),
        scratch: be.pooled_output("tree seed scratch", 3 * pcap + n),
        cnt: be.pooled_output("tree parts", n),
        pp: be.pooled_output("tree problems", 8 * pcap),
        status: zero(enc, "tree status", STATUS_WORDS),
        res: zero(enc, "tree clusters", 2 * n + 1),
        members: be.pooled_output("tree members", n),
    }
}

/// The device job: `None` when a level cannot be planned.
fn run(be: &WgpuBackend, emb: &wgpu::Buffer, dim: usize, job: &TreeJob, mut lv: Level) -> Result<Option<TreeResult>> {
    let n = job.ids.len();
    let mut enc = be.encoder();
    let b = alloc(be, &mut enc, dim, job);
    let spare = Spare::new(be, 1);
    let init = be.pipe("cluster_tree", SRC, "cluster_tree_init_fwd", 0, INIT_BINDS)?;
    let p = Params { n: n as u32, n_prob: lv.n_prob as u32, root_base: b.root_base as u32, ..Default::default() };
    let binds = [b.sec(b.job_offs), b.work[0].as_entire_buffer_binding(), b.meta[0].as_entire_buffer_binding()];
    be.dispatch_bound(&mut enc, &init, &be.uniform(&p), &binds, grid((n.max(lv.n_prob + 1) as u64).div_ceil(64)));

    let mut stats = TreeStats::default();
    let (mut clusters, mut members) = (0usize, 0usize);
    let (mut cur, mut depth) = (0usize, 0u32);
    while lv.n_prob > 0 {
        let Some(per) = kmeans_seed::picks_per_dispatch(lv.n_max, dim) else {
            return Ok(None);
        };
        encode_level(be, &mut enc, &b, emb, dim, job, &lv, cur, depth, per, &spare)?;
        let got = be.finish("kmeans_tree", enc, &[Readback { buf: &b.status, bytes: (STATUS_WORDS * 4) as u64 }])?;
        let s = words_u32(&got[0]);
        let u64_at = |i: usize| s[i] as u64 | (s[i + 1] as u64) << 32;
        stats.levels += 1;
        stats.problems += u64_at(8);
        stats.forced += u64_at(10);
        stats.assign_points += u64_at(12);
        stats.update_points += u64_at(14);
        stats.assign_distances += u64_at(16);
        let next = Level { n_prob: s[0] as usize, n_pts: s[1] as usize, n_max: s[2] as usize, k_max: s[3] as usize, sum_k: s[4] as usize };
        (clusters, members) = (s[5] as usize, s[6] as usize);
        // Every child is smaller than its problem: a status past these bounds is a device fault.
        let too_many = next.n_prob * job.gamma as usize > next.n_pts || next.n_pts > lv.n_pts || next.sum_k > next.n_pts;
        if too_many || next.n_max >= lv.n_max.max(1) || clusters > n || members > n {
            return Err(dev_err("kmeans_tree", format!("inconsistent level status {:?} after {lv:?}", &s[..8])));
        }
        lv = next;
        cur = 1 - cur;
        depth += 1;
        enc = be.encoder();
    }
    if members != n {
        return Err(dev_err("kmeans_tree", format!("{members} of {n} points in final clusters")));
    }
    let mut out = TreeResult { offsets: vec![0], stats, ..Default::default() };
    if clusters > 0 {
        let words = n + 2 * clusters + 1;
        let all = be.pooled_output("tree result", words);
        enc.copy_buffer_to_buffer(&b.members, 0, &all, 0, (n * 4) as u64);
        enc.copy_buffer_to_buffer(&b.res, 0, &all, (n * 4) as u64, ((clusters + 1) * 4) as u64);
        enc.copy_buffer_to_buffer(&b.res, ((n + 1) * 4) as u64, &all, ((n + clusters + 1) * 4) as u64, (clusters * 4) as u64);
        let got = be.finish("kmeans_tree", enc, &[Readback { buf: &all, bytes: (words * 4) as u64 }])?;
        let w = words_u32(&got[0]);
        out.members = w[..n].to_vec();
        out.offsets = w[n..n + clusters + 1].to_vec();
        out.root = w[n + clusters + 1..].to_vec();
    }
    Ok(Some(out))
}

fn whole(x: &PoolBuf) -> wgpu::BufferBinding<'_> {
    x.as_entire_buffer_binding()
}

/// Encode one level: prep, gather, k-means, partition.
#[allow(clippy::too_many_arguments)]
fn encode_level(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    b: &Bufs,
    emb: &wgpu::Buffer,
    dim: usize,
    job: &TreeJob,
    lv: &Level,
    cur: usize,
    depth: u32,
    per: u32,
    spare: &Spare,
) -> Result<()> {
    let pipe = |entry: &'static str, binds: &[B]| be.pipe("cluster_tree", SRC, entry, 0, binds);
    let (np, nl, sk) = (lv.n_prob, lv.n_pts, lv.sum_k);
    let params = Params {
        n: 0,
        n_prob: np as u32,
        dim: dim as u32,
        gamma: job.gamma,
        depth,
        table_len: b.table_len,
        res_root: (job.ids.len() + 1) as u32,
        root_base: b.root_base as u32,
    };
    let with_n = |items: usize| be.uniform(&Params { n: items as u32, ..params });
    let (table, offs) = (b.sec(b.table), whole(&b.meta[cur]));
    enc.clear_buffer(&b.state, 0, Some((2 * np * 4) as u64));
    enc.clear_buffer(&b.cnt, 0, Some((sk.max(1) * 4) as u64));

    // δ, centroid offsets, seeds; the level's points.
    let binds = [table.clone(), offs.clone(), whole(&b.coff), b.roots(cur), b.sec(b.streams), whole(&b.seeds)];
    be.dispatch_bound(enc, &*pipe("cluster_tree_prepare_fwd", PREP_BINDS)?, &with_n(np), &binds, (1, 1));
    let binds = [emb.as_entire_buffer_binding(), b.sec(b.ids), whole(&b.work[cur]), whole(&b.points)];
    let items = nl * dim;
    be.dispatch_bound(enc, &*pipe("cluster_tree_gather_fwd", GATHER_BINDS)?, &with_n(items), &binds, grid((items as u64).div_ceil(64)));

    // k-means++ and Lloyd (kmeans.wgsl) over the resident buffers.
    let g = Group::resident(
        be,
        dim,
        Resident {
            points: &b.points,
            offsets: offs.clone(),
            coff: &b.coff,
            seeds: &b.seeds,
            n_pts: nl,
            n_prob: np,
            total_k: sk,
            k_max: lv.k_max,
        },
    );
    kmeans_seed::encode(be, enc, &g, dim, per, &b.cents[0], &b.scratch, spare)?;
    let lloyd = Run { c: [&b.cents[0], &b.cents[1]], a: [&b.assign[0], &b.assign[1]], state: &b.state };
    super::kmeans::encode_lloyd(be, enc, &g, dim, &lloyd, job.max_iter, spare)?;
    let assign = whole(&b.assign[job.max_iter as usize % 2]);

    // The partition: part sizes, per-problem children, prefix sums + status, places, scatter.
    let binds = [assign.clone(), offs.clone(), whole(&b.coff), whole(&b.cnt)];
    be.dispatch_bound(enc, &*pipe("cluster_tree_count_fwd", COUNT_BINDS)?, &with_n(nl), &binds, grid((nl as u64).div_ceil(64)));
    let per_problem = grid((np as u64).div_ceil(64));
    let binds = [table.clone(), offs.clone(), whole(&b.coff), whole(&b.cnt), whole(&b.pp)];
    be.dispatch_bound(enc, &*pipe("cluster_tree_part_fwd", PART_BINDS)?, &with_n(np), &binds, per_problem);
    let binds = [table, offs.clone(), whole(&b.coff), whole(&b.state), whole(&b.pp), whole(&b.status)];
    be.dispatch_bound(enc, &*pipe("cluster_tree_scan_fwd", SCAN_BINDS)?, &with_n(np), &binds, (1, 1));
    let next = 1 - cur;
    let binds = [b.roots(cur), offs.clone(), whole(&b.coff), whole(&b.cnt), whole(&b.pp), whole(&b.res), whole(&b.meta[next])];
    be.dispatch_bound(enc, &*pipe("cluster_tree_emit_fwd", EMIT_BINDS)?, &with_n(np), &binds, per_problem);
    let binds = [assign, offs, whole(&b.coff), whole(&b.cnt), whole(&b.work[cur]), whole(&b.members), whole(&b.work[next])];
    be.dispatch_bound(enc, &*pipe("cluster_tree_scatter_fwd", SCATTER_BINDS)?, &with_n(sk), &binds, grid((sk as u64).div_ceil(64)));
    Ok(())
}
