//! `gsu_topk` (shaders/gsu_topk.wgsl): fused CP-GSU scoring + top-K, and the request groups
//! (whole requests within one storage binding) the online ops on host slices run over.

use std::ops::Range;

use super::{grid, pack, words_f32, words_u32, GsuVersion, Readback, WgpuBackend, B, F_T0_F16, F_T1_F16};
use crate::backend::{OnlineBatch, OnlineTables, TopK};
use crate::error::{Error, Result};

const SRC: &str = include_str!("../../../shaders/gsu_topk.wgsl");
const BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::R, B::W, B::W, B::W, B::W];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_cand: u32,
    d: u32,
    heads: u32,
    k: u32,
    scale: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

/// `[ΣB * 3]`: (first behaviour of the candidate's request, L, candidate item), for the
/// requests `reqs` of `batch`, behaviour indices relative to the group's first behaviour.
pub(crate) fn cand_info(batch: &OnlineBatch, reqs: std::ops::Range<usize>) -> Vec<u32> {
    let base = batch.seq_offsets[reqs.start];
    let mut v = Vec::new();
    for r in reqs {
        let s = batch.seq_range(r);
        for c in batch.cand_range(r) {
            v.extend_from_slice(&[s.start as u32 - base, s.len() as u32, batch.cands[c]]);
        }
    }
    v
}

/// Device outputs of one GSU dispatch.
pub(crate) struct GsuOut {
    pub idx: wgpu::Buffer,
    pub score: wgpu::Buffer,
    pub count: wgpu::Buffer,
    pub nan: wgpu::Buffer,
}

impl GsuOut {
    /// Readbacks in the order callers index them: idx, score, count, NaN flag.
    pub(crate) fn readbacks(&self, nc: usize, k: usize) -> [Readback<'_>; 4] {
        [
            Readback { buf: &self.idx, bytes: (nc * k * 4) as u64 },
            Readback { buf: &self.score, bytes: (nc * k * 4) as u64 },
            Readback { buf: &self.count, bytes: (nc * 4) as u64 },
            Readback { buf: &self.nan, bytes: 4 },
        ]
    }
}

pub(crate) fn encode(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    t: &OnlineTables,
    info: &wgpu::Buffer,
    items: &wgpu::Buffer,
    bias: &wgpu::Buffer,
    n_cand: usize,
    k: usize,
    nan: Option<wgpu::Buffer>,
) -> Result<GsuOut> {
    let (q, kt) = (be.table(&t.p_q)?, be.table(&t.p_k)?);
    let d = t.d_model();
    let pq = be.whole("p_q", q, t.p_q.rows, d, if q.f16 { 2 } else { 4 })?;
    let pk = be.whole("p_k", kt, t.p_k.rows, d, if kt.f16 { 2 } else { 4 })?;
    let flags = WgpuBackend::f16_flag(q, F_T0_F16) | WgpuBackend::f16_flag(kt, F_T1_F16);
    let out = GsuOut {
        idx: be.output("topk idx", n_cand * k),
        score: be.output("topk score", n_cand * k),
        count: be.output("topk count", n_cand),
        // u32::MAX until a NaN score is seen; the caller may bring it (filled on the device).
        nan: match nan {
            Some(b) => b,
            None => be.upload("nan flag", &[u32::MAX; 4]),
        },
    };
    let p = be.uniform(&Params {
        n_cand: n_cand as u32,
        d: d as u32,
        heads: t.heads as u32,
        k: k as u32,
        scale: (1.0 / (t.d_head() as f64).sqrt()) as f32,
        pad0: 0,
        pad1: 0,
        pad2: 0,
    });
    let bufs = [pq, pk, info, items, bias, &out.idx, &out.score, &out.count, &out.nan];
    match be.options().versions.gsu {
        GsuVersion::V1 => {
            let pipe = be.pipe("gsu_topk", SRC, "gsu_topk_fwd_v1", flags, BINDS)?;
            be.dispatch(enc, &pipe, &p, &bufs, grid((n_cand as u64).div_ceil(64)));
        }
        // No tensor cores in WGSL: v3 runs v2 (describe() says so).
        GsuVersion::V2 | GsuVersion::V3 => {
            let pipe = be.pipe("gsu_topk", SRC, "gsu_topk_fwd_v2", flags, BINDS)?;
            be.dispatch(enc, &pipe, &p, &bufs, grid(n_cand as u64));
        }
    }
    Ok(out)
}

/// Turn the downloaded flag into the CPU backend's error: the candidate (global index `c`) has
/// a NaN score; the position is not recorded, so the index points at its first behaviour.
pub(crate) fn nan_error(batch: &OnlineBatch, c: usize) -> Error {
    let r = (0..batch.n_requests()).find(|&r| batch.cand_range(r).contains(&c)).unwrap_or(0);
    let l = batch.seq_range(r).len();
    Error::NonFinite { field: "gsu score (candidate, position)", index: c * l, value: f32::NAN }
}

/// Groups of whole requests whose per-request buffers fit one storage binding.
pub(crate) fn request_groups(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Vec<Range<usize>> {
    let (h, d, j) = (t.heads as u64, t.d_model() as u64, t.n_cross() as u64);
    // Each request's share of every per-batch buffer; a group fits when every buffer fits.
    let costs: Vec<[u64; 4]> = (0..batch.n_requests())
        .map(|r| {
            let l = batch.seq_range(r).len() as u64;
            let b = batch.cand_range(r).len() as u64;
            [l * h.max(j).max(1) * 4, b * k as u64 * h.max(1) * 4, b * d * 4, b * 3 * 4]
        })
        .collect();
    pack(&costs, be.max_binding())
}

/// A request group with candidates: its requests, their candidates and their behaviours.
pub(crate) struct ReqGroup {
    pub reqs: Range<usize>,
    pub cands: Range<usize>,
    pub seq: Range<usize>,
}

/// The inputs every dispatch of a request group binds: its candidate records and its
/// behaviours' items.
pub(crate) struct GroupInputs {
    pub info: wgpu::Buffer,
    pub items: wgpu::Buffer,
}

/// The [`request_groups`] of `batch` that have candidates.
pub(crate) fn groups(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Vec<ReqGroup> {
    request_groups(be, t, batch, k)
        .into_iter()
        .map(|reqs| ReqGroup {
            cands: batch.cand_offsets[reqs.start] as usize..batch.cand_offsets[reqs.end] as usize,
            seq: batch.seq_offsets[reqs.start] as usize..batch.seq_offsets[reqs.end] as usize,
            reqs,
        })
        .filter(|g| !g.cands.is_empty())
        .collect()
}

impl ReqGroup {
    /// The group's rows of a per-behaviour array with `per` values a behaviour.
    pub(crate) fn of_seq<'a, T>(&self, v: &'a [T], per: usize) -> &'a [T] {
        &v[self.seq.start * per..self.seq.end * per]
    }

    /// The group's rows of a per-candidate array with `per` values a candidate.
    pub(crate) fn of_cands<'a, T>(&self, v: &'a [T], per: usize) -> &'a [T] {
        &v[self.cands.start * per..self.cands.end * per]
    }

    /// [`Self::of_cands`] of an output array.
    pub(crate) fn of_cands_mut<'a, T>(&self, v: &'a mut [T], per: usize) -> &'a mut [T] {
        &mut v[self.cands.start * per..self.cands.end * per]
    }

    /// Upload `info` (the group's candidate records) and its behaviours' items.
    pub(crate) fn upload(&self, be: &WgpuBackend, batch: &OnlineBatch, info: &[u32]) -> GroupInputs {
        GroupInputs { info: be.upload("cand info", info), items: be.upload("items", self.of_seq(batch.items, 1)) }
    }

    /// Upload the cross-table rows of its behaviours (`[L, J]`).
    pub(crate) fn upload_cross(&self, be: &WgpuBackend, batch: &OnlineBatch, n_cross: usize) -> wgpu::Buffer {
        be.upload("cross", self.of_seq(batch.cross, n_cross))
    }

    /// Store one GSU dispatch's downloads (`GsuOut::readbacks` order: idx, score, count, NaN
    /// flag) as the group's rows of `res`; a NaN score is the CPU backend's error.
    pub(crate) fn store_topk(&self, batch: &OnlineBatch, res: &mut TopK, bytes: &[Vec<u8>]) -> Result<()> {
        let nan = words_u32(&bytes[3])[0];
        if nan != u32::MAX {
            return Err(nan_error(batch, self.cands.start + nan as usize));
        }
        let k = res.k;
        self.of_cands_mut(&mut res.idx, k).copy_from_slice(&words_u32(&bytes[0]));
        self.of_cands_mut(&mut res.score, k).copy_from_slice(&words_f32(&bytes[1]));
        self.of_cands_mut(&mut res.count, 1).copy_from_slice(&words_u32(&bytes[2]));
        Ok(())
    }
}

pub(crate) fn gsu_topk(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], k: usize) -> Result<TopK> {
    let n_cand = batch.cands.len();
    let h = t.heads;
    let mut res = TopK { k, idx: vec![u32::MAX; n_cand * k], score: vec![f32::NEG_INFINITY; n_cand * k], count: vec![0; n_cand] };
    for g in groups(be, t, batch, k) {
        let nc = g.cands.len();
        let bytes = be.scoped("gsu_topk", || {
            let x = g.upload(be, batch, &cand_info(batch, g.reqs.clone()));
            let bb = be.upload("bias", g.of_seq(bias, h));
            let mut enc = be.encoder();
            let o = encode(be, &mut enc, t, &x.info, &x.items, &bb, nc, k, None)?;
            let reads = o.readbacks(nc, k);
            be.finish("gsu_topk", enc, &reads)
        })?;
        g.store_topk(batch, &mut res, &bytes)?;
    }
    Ok(res)
}
