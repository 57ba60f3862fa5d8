//! `gsu_topk` (shaders/gsu_topk.wgsl): fused CP-GSU scoring + top-K.

use super::{grid, words_f32, words_u32, GsuVersion, Readback, WgpuBackend, B, F_T0_F16, F_T1_F16};
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
pub(crate) fn request_groups(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Vec<std::ops::Range<usize>> {
    let (h, d, j) = (t.heads as u64, t.d_model() as u64, t.n_cross() as u64);
    let lim = be.max_binding();
    // Each request's share of every per-batch buffer; a group fits when every buffer fits.
    let cost = |r: usize| -> [u64; 4] {
        let l = batch.seq_range(r).len() as u64;
        let b = batch.cand_range(r).len() as u64;
        [l * h.max(j).max(1) * 4, b * k as u64 * h.max(1) * 4, b * d * 4, b * 3 * 4]
    };
    let mut out = Vec::new();
    let mut start = 0;
    let mut acc = [0u64; 4];
    for r in 0..batch.n_requests() {
        let c = cost(r);
        let over = (0..4).any(|i| acc[i] + c[i] > lim);
        if r > start && over {
            out.push(start..r);
            start = r;
            acc = [0; 4];
        }
        for i in 0..4 {
            acc[i] += c[i];
        }
    }
    if start < batch.n_requests() {
        out.push(start..batch.n_requests());
    }
    out
}

pub(crate) fn gsu_topk(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], k: usize) -> Result<TopK> {
    let n_cand = batch.cands.len();
    let h = t.heads;
    let mut res = TopK { k, idx: vec![u32::MAX; n_cand * k], score: vec![f32::NEG_INFINITY; n_cand * k], count: vec![0; n_cand] };
    for g in request_groups(be, t, batch, k) {
        let (c0, c1) = (batch.cand_offsets[g.start] as usize, batch.cand_offsets[g.end] as usize);
        if c1 == c0 {
            continue;
        }
        let (l0, l1) = (batch.seq_offsets[g.start] as usize, batch.seq_offsets[g.end] as usize);
        let nc = c1 - c0;
        let bytes = be.scoped("gsu_topk", || {
            let info = be.upload("cand info", &cand_info(batch, g.clone()));
            let items = be.upload("items", &batch.items[l0..l1]);
            let bb = be.upload("bias", &bias[l0 * h..l1 * h]);
            let mut enc = be.encoder();
            let o = encode(be, &mut enc, t, &info, &items, &bb, nc, k, None)?;
            let reads = o.readbacks(nc, k);
            be.finish("gsu_topk", enc, &reads)
        })?;
        let nan = words_u32(&bytes[3])[0];
        if nan != u32::MAX {
            return Err(nan_error(batch, c0 + nan as usize));
        }
        res.idx[c0 * k..c1 * k].copy_from_slice(&words_u32(&bytes[0]));
        res.score[c0 * k..c1 * k].copy_from_slice(&words_f32(&bytes[1]));
        res.count[c0..c1].copy_from_slice(&words_u32(&bytes[2]));
    }
    Ok(res)
}
