//! `kmeans` (shaders/kmeans.wgsl, the update in shaders/kmeans_update.wgsl): batched assignment
//! and update (v2 by default: a counting sort by assignment, then per-centroid sums; v1 with
//! `TWIN_KMEANS=v1`; both bit-identical to the CPU); `lloyd` keeps the points,
//! centroids, assignments and convergence state on the device and runs every round without the
//! host (`kmeans_converge_fwd`), then reads assignments, centroids and iteration counts back
//! in one download. Each group of problems travels in one packed upload; `Init::Seed` seeds on
//! the device from the resident points (kmeans_seed.rs), so a whole `kmeans` call is one upload
//! and one download. A group can also be built over buffers that earlier kernels wrote
//! (`Group::resident`) and its seeding and Lloyd rounds encoded into the caller's command buffer
//! (`kmeans_seed::encode`, `encode_lloyd`): the clustering tree's levels (cluster_tree.rs).

use std::num::NonZeroU64;

use super::kmeans_seed;
use super::{grid, split_by, words_f32, words_u32, KmeansVersion, Readback, WgpuBackend, B};
use crate::backend::{KmeansBatch, KmeansResult};
use crate::error::{Error, Result};

/// kmeans.wgsl with the 64-bit integer and binary64 helpers it calls (emu64.wgsl).
pub(super) const SRC: &str = concat!(include_str!("../../../shaders/kmeans.wgsl"), "\n", include_str!("../../../shaders/emu64.wgsl"));
/// points, offsets, coff, cents (read); assign, out, state (read-write); old (read).
pub(super) const BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::W, B::W, B::W, B::R];
/// kmeans_update.wgsl (the centroid update, v1 and v2) with the binary64 helpers (emu64.wgsl).
const UPDATE_SRC: &str = concat!(include_str!("../../../shaders/kmeans_update.wgsl"), "\n", include_str!("../../../shaders/emu64.wgsl"));
/// points, offsets, coff, prev, assign (read); out (read-write); state (read); scratch (read-write).
const UPDATE_BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::R, B::W, B::R, B::W];

/// Mirrors `Params` in shaders/kmeans.wgsl (`c_begin`, `c_end`: the seeding window).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct Params {
    pub n: u32,
    pub dim: u32,
    pub n_prob: u32,
    pub total_k: u32,
    pub c_begin: u32,
    pub c_end: u32,
    pub pad: [u32; 2],
}

/// A section of a group's packed upload, in bytes.
#[derive(Clone, Copy)]
pub(super) struct Sec {
    pub off: u64,
    pub size: u64,
}

/// A storage binding of a group: a section of its packed upload, or a whole device-resident
/// buffer (a group built from buffers that earlier kernels wrote, as the clustering tree's levels).
#[derive(Clone)]
pub(super) struct Bind {
    buf: wgpu::Buffer,
    sec: Option<Sec>,
}

impl Bind {
    pub fn section(buf: &wgpu::Buffer, sec: Sec) -> Bind {
        Bind { buf: buf.clone(), sec: Some(sec) }
    }
    pub fn whole(buf: &wgpu::Buffer) -> Bind {
        Bind { buf: buf.clone(), sec: None }
    }
    pub fn binding(&self) -> wgpu::BufferBinding<'_> {
        match self.sec {
            Some(s) => wgpu::BufferBinding { buffer: &self.buf, offset: s.off, size: NonZeroU64::new(s.size) },
            None => self.buf.as_entire_buffer_binding(),
        }
    }
    fn offset(&self) -> u64 {
        self.sec.map_or(0, |s| s.off)
    }
}

/// One group of whole problems, resident on the device. Built by [`groups`] from ONE packed
/// upload (`data`: points, offsets, centroid offsets and, when given, the seeds and the initial
/// centroids, each section at a 256-byte boundary, the largest storage offset alignment wgpu
/// allows), or by [`Group::resident`] from buffers already on the device.
pub(super) struct Group {
    /// point range in the batch
    pub pts: std::ops::Range<usize>,
    /// centroid-row range in the batch
    pub cents: std::ops::Range<usize>,
    points: Bind,
    offsets: Bind,
    coff: Bind,
    seeds: Option<Bind>,
    init: Option<Bind>,
    pub params: wgpu::Buffer,
    pub n_prob: usize,
    /// largest k of the group's problems
    pub k_max: usize,
    /// coordinates per point
    pub dim: usize,
}

/// The device-resident inputs of [`Group::resident`]: points `[n_pts, dim]`, offsets `[P + 1]`,
/// centroid offsets `[P + 1]` (ending at `total_k`), seeds `[2P]` (lo, hi words).
pub(super) struct Resident<'a> {
    pub points: &'a wgpu::Buffer,
    pub offsets: wgpu::BufferBinding<'a>,
    pub coff: &'a wgpu::Buffer,
    pub seeds: &'a wgpu::Buffer,
    pub n_pts: usize,
    pub n_prob: usize,
    pub total_k: usize,
    pub k_max: usize,
}

impl Group {
    pub fn points(&self) -> wgpu::BufferBinding<'_> {
        self.points.binding()
    }
    pub fn offsets(&self) -> wgpu::BufferBinding<'_> {
        self.offsets.binding()
    }
    pub fn coff(&self) -> wgpu::BufferBinding<'_> {
        self.coff.binding()
    }
    /// The seeds section (`[2P]` lo, hi words), when the group was packed with seeds. Every
    /// caller that seeds packs them (`Extra::seeds`, `resident`), so its absence is a fault
    /// in the backend, never in the input.
    pub fn seeds(&self) -> Result<wgpu::BufferBinding<'_>> {
        self.seeds.as_ref().map(|s| s.binding()).ok_or_else(|| Error::Device {
            backend: "wgpu",
            op: "kmeans seed",
            message: "the group was packed without its seeds section".into(),
        })
    }

    /// A group over buffers already on the device (no upload; its parameters are one uniform).
    /// The buffers must hold what [`Resident`] says: the shaders index them without checks.
    pub fn resident(be: &WgpuBackend, dim: usize, r: Resident) -> Group {
        let params = be.uniform(&Params {
            n: r.n_pts as u32,
            dim: dim as u32,
            n_prob: r.n_prob as u32,
            total_k: r.total_k as u32,
            c_begin: 0,
            c_end: 0,
            pad: [0; 2],
        });
        let offsets = Bind { buf: r.offsets.buffer.clone(), sec: r.offsets.size.map(|s| Sec { off: r.offsets.offset, size: s.get() }) };
        Group {
            dim,
            pts: 0..r.n_pts,
            cents: 0..r.total_k,
            points: Bind::whole(r.points),
            offsets,
            coff: Bind::whole(r.coff),
            seeds: Some(Bind::whole(r.seeds)),
            init: None,
            params,
            n_prob: r.n_prob,
            k_max: r.k_max,
        }
    }
}

/// What a group's upload carries besides points and offsets.
#[derive(Clone, Copy, Default)]
pub(super) struct Extra<'a> {
    pub seeds: Option<&'a [u64]>,
    pub init: Option<&'a [f32]>,
}

/// Append `xs` to `words` at the next 256-byte boundary.
pub(super) fn section(words: &mut Vec<u32>, xs: impl Iterator<Item = u32>) -> Sec {
    words.resize(words.len().div_ceil(64) * 64, 0);
    let start = words.len();
    words.extend(xs);
    Sec { off: start as u64 * 4, size: ((words.len() - start).max(1) * 4) as u64 }
}

/// Problems grouped so that each group's points fit one storage binding.
pub(super) fn groups(be: &WgpuBackend, b: &KmeansBatch, extra: Extra) -> Result<Vec<Group>> {
    let coff_all = b.centroid_offsets();
    let row = (b.dim * 4) as u64;
    let init_rows = |p: usize| if extra.init.is_some() { b.k[p] as u64 } else { 0 };
    let cost = |p: usize| (b.range(p).len() as u64 + init_rows(p)) * row + 16;
    let ranges = split_by(b.n_problems(), be.max_binding().saturating_sub(1024), cost);
    let mut out = Vec::new();
    for probs in ranges {
        let pts = b.offsets[probs.start] as usize..b.offsets[probs.end] as usize;
        let cents = coff_all[probs.start] as usize..coff_all[probs.end] as usize;
        let bytes = (pts.len() as u64).max(cents.len() as u64) * row;
        if bytes > be.max_binding() {
            return Err(Error::TooLarge {
                field: "k-means problem bytes (one problem must fit one storage binding)",
                value: bytes,
                limit: be.max_binding(),
            });
        }
        let (p0, c0) = (b.offsets[probs.start], coff_all[probs.start]);
        let mut words = Vec::new();
        let points = section(&mut words, b.points[pts.start * b.dim..pts.end * b.dim].iter().map(|x| x.to_bits()));
        let offsets = section(&mut words, b.offsets[probs.start..=probs.end].iter().map(|&o| o - p0));
        let coff = section(&mut words, coff_all[probs.start..=probs.end].iter().map(|&o| o - c0));
        let seeds = extra.seeds.map(|sd| section(&mut words, sd[probs.clone()].iter().flat_map(|&x| [x as u32, (x >> 32) as u32])));
        let init = extra.init.map(|c| section(&mut words, c[cents.start * b.dim..cents.end * b.dim].iter().map(|x| x.to_bits())));
        let total = words.len() as u64 * 4;
        let max_buffer = be.device.limits().max_buffer_size;
        if total > max_buffer {
            return Err(Error::TooLarge { field: "k-means upload bytes", value: total, limit: max_buffer });
        }
        let params = be.uniform(&Params {
            n: pts.len() as u32,
            dim: b.dim as u32,
            n_prob: probs.len() as u32,
            total_k: cents.len() as u32,
            c_begin: 0,
            c_end: 0,
            pad: [0; 2],
        });
        let data = be.upload("kmeans problems", &words);
        out.push(Group {
            points: Bind::section(&data, points),
            offsets: Bind::section(&data, offsets),
            coff: Bind::section(&data, coff),
            seeds: seeds.map(|s| Bind::section(&data, s)),
            init: init.map(|s| Bind::section(&data, s)),
            params,
            n_prob: probs.len(),
            k_max: probs.clone().map(|p| b.k[p] as usize).max().unwrap_or(0),
            dim: b.dim,
            pts,
            cents,
        });
    }
    Ok(out)
}

/// Buffers a dispatch binds but does not use, and the all-zero convergence state of the
/// standalone ops.
pub(super) struct Spare {
    pub f32s: wgpu::Buffer,
    pub u32s: wgpu::Buffer,
    pub state: wgpu::Buffer,
}

impl Spare {
    pub fn new(be: &WgpuBackend, n_prob: usize) -> Spare {
        Spare { f32s: be.output("unused", 4), u32s: be.output("unused", 4), state: be.zeroed("kmeans state", 2 * n_prob) }
    }
}

fn encode_assign(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    g: &Group,
    cents: &wgpu::Buffer,
    assign: &wgpu::Buffer,
    state: &wgpu::Buffer,
    spare: &Spare,
) -> Result<()> {
    // v2 holds the point in registers (dim 64 only, as CUDA's) and stages the workgroup's
    // centroid rows in workgroup memory; v1 elsewhere. Both are bit-identical to the CPU.
    let entry =
        if be.options().versions.kmeans == KmeansVersion::V2 && g.dim == 64 { "kmeans_assign_fwd_v2" } else { "kmeans_assign_fwd_v1" };
    let pipe = be.pipe("kmeans", SRC, entry, 0, BINDS)?;
    let binds = [
        g.points(),
        g.offsets(),
        g.coff(),
        cents.as_entire_buffer_binding(),
        assign.as_entire_buffer_binding(),
        spare.f32s.as_entire_buffer_binding(),
        state.as_entire_buffer_binding(),
        spare.u32s.as_entire_buffer_binding(),
    ];
    be.dispatch_bound(enc, &pipe, &g.params, &binds, grid((g.pts.len() as u64).div_ceil(64)));
    Ok(())
}

/// Points per v2 work item (slice) of a large problem: `SLICE` in shaders/kmeans_update.wgsl.
const SLICE: usize = 2048;

/// What one update dispatch binds besides the group's inputs: the previous centroids, the
/// assignments, the new centroids and the convergence state.
pub(super) struct UpdateIo<'a> {
    pub prev: &'a wgpu::Buffer,
    pub assign: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
    pub state: &'a wgpu::Buffer,
}

/// A group's centroid update (shaders/kmeans_update.wgsl): v2 (`KmeansVersion::V2`, the
/// default) with its scratch buffer (plan, count matrix, sorted order; allocated and planned
/// once, reused by every Lloyd round), or v1. v2 falls back to v1 (bit-identical) where its
/// scratch would not fit one storage binding.
pub(super) struct Updater {
    /// v2's scratch and the byte range of its count matrix (cleared every round)
    v2: Option<(wgpu::Buffer, u64, u64)>,
}

impl Updater {
    /// The update of `g` at the backend's k-means version; v2's plan is encoded into `enc`.
    pub fn new(be: &WgpuBackend, enc: &mut wgpu::CommandEncoder, g: &Group, spare: &Spare) -> Result<Updater> {
        if be.options().versions.kmeans < KmeansVersion::V2 {
            return Ok(Updater { v2: None });
        }
        let (n, n_prob, total_k) = (g.pts.len(), g.n_prob, g.cents.len());
        let (plan, mat) = (2 * n_prob + 2, total_k + n / 4);
        let words = plan + mat + n;
        if (words * 4) as u64 > be.max_binding().min(be.device.limits().max_buffer_size) {
            return Ok(Updater { v2: None });
        }
        let scratch = be.output("kmeans update scratch", words);
        let pipe = be.pipe("kmeans_update", UPDATE_SRC, "kmeans_update_fwd_v2_plan", 0, UPDATE_BINDS)?;
        let io = UpdateIo { prev: &spare.u32s, assign: &spare.u32s, out: &spare.f32s, state: &spare.state };
        be.dispatch_bound(enc, &pipe, &g.params, &update_binds(g, &io, &scratch), (1, 1));
        Ok(Updater { v2: Some((scratch, (plan * 4) as u64, (mat * 4) as u64)) })
    }

    /// Encode one update of `g` (v2: clear, count, scan, scatter, sum; v1: one dispatch).
    pub fn encode(
        &self,
        be: &WgpuBackend,
        enc: &mut wgpu::CommandEncoder,
        g: &Group,
        dim: usize,
        io: &UpdateIo,
        spare: &Spare,
    ) -> Result<()> {
        let sum_grid = grid(((g.cents.len() * dim) as u64).div_ceil(64));
        let Some((scratch, mat_off, mat_bytes)) = &self.v2 else {
            let pipe = be.pipe("kmeans_update", UPDATE_SRC, "kmeans_update_fwd_v1", 0, UPDATE_BINDS)?;
            be.dispatch_bound(enc, &pipe, &g.params, &update_binds(g, io, &spare.u32s), sum_grid);
            return Ok(());
        };
        if *mat_bytes > 0 {
            enc.clear_buffer(scratch, *mat_off, Some(*mat_bytes));
        }
        let items = grid(((g.n_prob + g.pts.len() / SLICE) as u64).div_ceil(64));
        let binds = update_binds(g, io, scratch);
        for (entry, groups) in [
            ("kmeans_update_fwd_v2_count", items),
            ("kmeans_update_fwd_v2_scan", grid((g.n_prob as u64).div_ceil(64))),
            ("kmeans_update_fwd_v2_scatter", items),
            ("kmeans_update_fwd_v2", sum_grid),
        ] {
            let pipe = be.pipe("kmeans_update", UPDATE_SRC, entry, 0, UPDATE_BINDS)?;
            be.dispatch_bound(enc, &pipe, &g.params, &binds, groups);
        }
        Ok(())
    }
}

fn update_binds<'a>(g: &'a Group, io: &UpdateIo<'a>, scratch: &'a wgpu::Buffer) -> [wgpu::BufferBinding<'a>; 8] {
    [
        g.points(),
        g.offsets(),
        g.coff(),
        io.prev.as_entire_buffer_binding(),
        io.assign.as_entire_buffer_binding(),
        io.out.as_entire_buffer_binding(),
        io.state.as_entire_buffer_binding(),
        scratch.as_entire_buffer_binding(),
    ]
}

pub(crate) fn assign(be: &WgpuBackend, b: &KmeansBatch, centroids: &[f32]) -> Result<Vec<u32>> {
    be.scoped("kmeans_assign", || {
        let gs = groups(be, b, Extra::default())?;
        let mut enc = be.encoder();
        let spare = Spare::new(be, b.n_problems());
        let mut outs = Vec::new();
        for g in &gs {
            let cb = be.upload("centroids", &centroids[g.cents.start * b.dim..g.cents.end * b.dim]);
            let ab = be.output("assign", g.pts.len());
            encode_assign(be, &mut enc, g, &cb, &ab, &spare.state, &spare)?;
            outs.push((ab, g.pts.len()));
        }
        let reads: Vec<Readback> = outs.iter().map(|(buf, n)| Readback { buf, bytes: (*n * 4) as u64 }).collect();
        let bytes = be.finish("kmeans_assign", enc, &reads)?;
        Ok(bytes.iter().flat_map(|x| words_u32(x)).collect())
    })
}

pub(crate) fn update(be: &WgpuBackend, b: &KmeansBatch, assign: &[u32], prev: &[f32]) -> Result<Vec<f32>> {
    be.scoped("kmeans_update", || {
        let gs = groups(be, b, Extra::default())?;
        let mut enc = be.encoder();
        let spare = Spare::new(be, b.n_problems());
        let mut outs = Vec::new();
        for g in &gs {
            let pb = be.upload("prev", &prev[g.cents.start * b.dim..g.cents.end * b.dim]);
            let ab = be.upload("assign", &assign[g.pts.clone()]);
            let ob = be.output("centroids", g.cents.len() * b.dim);
            let io = UpdateIo { prev: &pb, assign: &ab, out: &ob, state: &spare.state };
            Updater::new(be, &mut enc, g, &spare)?.encode(be, &mut enc, g, b.dim, &io, &spare)?;
            outs.push((ob, g.cents.len() * b.dim));
        }
        let reads: Vec<Readback> = outs.iter().map(|(buf, n)| Readback { buf, bytes: (*n * 4) as u64 }).collect();
        let bytes = be.finish("kmeans_update", enc, &reads)?;
        Ok(bytes.iter().flat_map(|x| words_f32(x)).collect())
    })
}

/// How a device Lloyd run gets its initial centroids.
pub(crate) enum Init<'a> {
    /// given by the host (packed into the one upload, copied into place on the device)
    Host(&'a [f32]),
    /// k-means++ on the device from the resident points (`kmeans_seed_fwd`), `per` picks a dispatch
    Seed(&'a [u64], u32),
}

/// One group's Lloyd buffers: centroid and assignment ping-pong pairs (`c[0]` holds the initial
/// centroids) and the convergence state `[2P]`, zero before the run.
pub(super) struct Run<'a> {
    pub c: [&'a wgpu::Buffer; 2],
    pub a: [&'a wgpu::Buffer; 2],
    pub state: &'a wgpu::Buffer,
}

/// Encode the first assignment and `max_iter` rounds of update + assign + converge for `g` (a
/// converged problem is skipped by the shaders). The result is in `c[max_iter % 2]`,
/// `a[max_iter % 2]`; the iteration counts in `state[P..2P]`.
pub(super) fn encode_lloyd(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    g: &Group,
    dim: usize,
    run: &Run,
    max_iter: u32,
    spare: &Spare,
) -> Result<()> {
    encode_assign(be, enc, g, run.c[0], run.a[0], run.state, spare)?;
    let update = Updater::new(be, enc, g, spare)?;
    let converge = be.pipe("kmeans", SRC, "kmeans_converge_fwd", 0, BINDS)?;
    for it in 0..max_iter as usize {
        let cur = it % 2;
        let (c, a) = (run.c, run.a);
        update.encode(be, enc, g, dim, &UpdateIo { prev: c[cur], assign: a[cur], out: c[1 - cur], state: run.state }, spare)?;
        encode_assign(be, enc, g, c[1 - cur], a[1 - cur], run.state, spare)?;
        let binds = [
            g.points(),
            g.offsets(),
            g.coff(),
            c[1 - cur].as_entire_buffer_binding(),
            a[1 - cur].as_entire_buffer_binding(),
            spare.f32s.as_entire_buffer_binding(),
            run.state.as_entire_buffer_binding(),
            a[cur].as_entire_buffer_binding(),
        ];
        be.dispatch_bound(enc, &converge, &g.params, &binds, grid((g.n_prob as u64).div_ceil(64)));
    }
    Ok(())
}

/// Lloyd iterations on the device from `init`, with the same semantics as the trait's default
/// `lloyd_unchecked`: (seeding, then) `max_iter` rounds of update + assign + converge are encoded
/// into one command buffer, then the final assignments, centroids and iteration counts come back
/// in one download. One upload per group.
pub(crate) fn lloyd(be: &WgpuBackend, b: &KmeansBatch, init: Init, max_iter: u32) -> Result<KmeansResult> {
    be.scoped("kmeans", || {
        let extra = match init {
            Init::Host(c) => Extra { seeds: None, init: Some(c) },
            Init::Seed(s, _) => Extra { seeds: Some(s), init: None },
        };
        let gs = groups(be, b, extra)?;
        let spare = Spare::new(be, 1);
        let mut enc = be.encoder();
        // Per group: centroid and assignment ping-pong buffers, and the convergence state.
        let mut bufs: Vec<([wgpu::Buffer; 2], [wgpu::Buffer; 2], wgpu::Buffer, usize)> = Vec::new();
        for g in &gs {
            let n_prob = g.n_prob;
            let c0 = be.output("centroids", g.cents.len() * b.dim);
            match init {
                Init::Host(_) => {
                    // `Init::Host` packs the initial centroids into every group (above).
                    let sec = g.init.as_ref().ok_or_else(|| Error::Device {
                        backend: "wgpu",
                        op: "kmeans",
                        message: "the group was packed without its initial centroids".into(),
                    })?;
                    enc.copy_buffer_to_buffer(&sec.buf, sec.offset(), &c0, 0, (g.cents.len() * b.dim * 4) as u64);
                }
                Init::Seed(_, per) => {
                    let scratch = be.zeroed("kmeans seed scratch", 3 * n_prob + g.pts.len());
                    kmeans_seed::encode(be, &mut enc, g, b.dim, per, &c0, &scratch, &spare)?;
                }
            }
            let c1 = be.output("centroids", g.cents.len() * b.dim);
            let a0 = be.output("assign", g.pts.len());
            let a1 = be.output("assign", g.pts.len());
            let state = be.zeroed("kmeans state", 2 * n_prob);
            let run = Run { c: [&c0, &c1], a: [&a0, &a1], state: &state };
            encode_lloyd(be, &mut enc, g, b.dim, &run, max_iter, &spare)?;
            bufs.push(([c0, c1], [a0, a1], state, n_prob));
        }
        let fin = max_iter as usize % 2;
        let mut reads = Vec::new();
        for (g, (c, a, state, n_prob)) in gs.iter().zip(&bufs) {
            reads.push(Readback { buf: &a[fin], bytes: (g.pts.len() * 4) as u64 });
            reads.push(Readback { buf: &c[fin], bytes: (g.cents.len() * b.dim * 4) as u64 });
            reads.push(Readback { buf: state, bytes: (2 * n_prob * 4) as u64 });
        }
        let got = be.finish("kmeans", enc, &reads)?;
        let (mut assign, mut centroids, mut iterations) = (Vec::new(), Vec::new(), Vec::new());
        for (chunk, (_, _, _, n_prob)) in got.chunks(3).zip(&bufs) {
            assign.extend(words_u32(&chunk[0]));
            centroids.extend(words_f32(&chunk[1]));
            iterations.extend_from_slice(&words_u32(&chunk[2])[*n_prob..2 * n_prob]);
        }
        Ok(KmeansResult { assign, centroids, iterations })
    })
}
