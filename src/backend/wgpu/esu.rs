//! `esu` (shaders/esu.wgsl) and the device-resident online path: cross bias → ln n → fused
//! GSU top-K → ESU → W^o in one command buffer, one upload of the batch, one download.
//!
//! Versions (`WgpuOptions::versions.esu`, `TWIN_ESU`): v1 runs a workgroup per candidate; v2 a
//! workgroup per group of up to 8 consecutive candidates of one request (ids before rows, rows
//! and W^o staged in workgroup memory, W^o read once per group), bit-identical to v1. v2 runs
//! where the group fits its fixed workgroup arrays ([`v2_plan`]: G·D ≤ 1024, G·K·(1 + J) ≤ 2048,
//! G·K·h ≤ 2048, D ≤ 1024; on a CPU adapter also llvmpipe's loop-trip cap), else v1. The group
//! offsets ride after the candidate records in the `cand_info` upload (no extra buffer); callers
//! that do not know the requests (split.rs) get v2 with groups of one candidate.

use super::{cross_bias, grid, gsu_topk, log_size_bias, words_f32, EsuVersion, Readback, WgpuBackend, B, F_T0_F16, F_T1_F16, F_T2_F16};
use crate::backend::{OnlineBatch, OnlineOutput, OnlineTables, TopK};
use crate::error::Result;

const SRC: &str = include_str!("../../../shaders/esu.wgsl");
const BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::W, B::W];
/// v2 binds no scratch: α, pooled and the accumulators live in workgroup memory.
const BINDS_V2: &[B] = &[B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::W];

/// v2's workgroup arrays (words), as in shaders/esu.wgsl.
const V2_MAX_GROUP: usize = 8;
const V2_QW: usize = 1024;
const V2_PW: usize = 1024;
const V2_TW: usize = 1536;
const V2_IW: usize = 2048;
const V2_AW: usize = 2048;
/// Bytes of workgroup memory v2 declares: its arrays, offsets, request starts, pair count and
/// the reduction prelude (red_f, red_u [64] and two scalars).
const V2_WG_BYTES: u64 = 4 * (V2_QW + V2_PW + V2_TW + V2_IW + V2_AW + 9 + V2_MAX_GROUP + 1 + 2 * 64 + 2) as u64;
/// Loop trips v2 may spend per invocation on a CPU adapter (llvmpipe stops at 65,535; the
/// estimate below is an upper bound, plus margin for the workgroup zero-fill).
const V2_CPU_TRIPS: u64 = 50_000;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_cand: u32,
    d: u32,
    heads: u32,
    dk: u32,
    k: u32,
    n_cross: u32,
    scale: f32,
    pool_off: u32,
    grp_off: u32,
    tile_rows: u32,
    wo_rows: u32,
    pad: u32,
}

/// How v2 runs one dispatch: candidates per group (the largest), pairs per staged row tile,
/// W^o rows per staged tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct V2Plan {
    pub group: usize,
    pub tile_rows: usize,
    pub wo_rows: usize,
}

/// Upper bound of the loop trips one v2 invocation runs (64 per workgroup) for groups of `g`.
fn v2_trips(d: usize, h: usize, j: usize, k: usize, pl: V2Plan) -> u64 {
    let c = |n: usize| n.div_ceil(64) as u64;
    let (g, r, ti) = (pl.group, pl.tile_rows, pl.wo_rows);
    let p = g * k;
    let t = p.div_ceil(r) as u64;
    let dk = (d / h.max(1)) as u64;
    let zero_fill = (V2_QW + V2_PW + V2_TW + V2_IW + V2_AW) as u64;
    let setup = 2 * g as u64 + 9 + c(g * d);
    let ids = c(p) * (2 + (j + h) as u64 + V2_MAX_GROUP as u64);
    let logits = 3 * t + p as u64 * (1 + c(d)) + (c(p * h) + t) * (dk / 4 + 4 + V2_MAX_GROUP as u64);
    let softmax = (g * h) as u64 * (3 * c(k) + 2 * (6 + 64) + 3);
    let pool = t + p as u64 * (1 + c(d) * (1 + j as u64)) + t * c(g * d) + c(g * d) * (k as u64 + t);
    let nti = d.div_ceil(ti.max(1)) as u64;
    let wo = nti * (2 + c(ti * d)) + c(g.div_ceil(4) * d) * (nti + d as u64);
    zero_fill + setup + ids + logits + softmax + pool + wo
}

/// v2's plan for tables `t` and top-`k`, with at most `max_group` candidates per group; `None`
/// (run v1) when v1 is asked for or not even a group of one fits (module doc for the rule).
pub(crate) fn v2_plan(be: &WgpuBackend, t: &OnlineTables, k: usize, max_group: usize) -> Option<V2Plan> {
    if be.options().versions.esu != EsuVersion::V2 {
        return None;
    }
    if (be.device.limits().max_compute_workgroup_storage_size as u64) < V2_WG_BYTES {
        return None;
    }
    let (d, h, j) = (t.d_model(), t.heads.max(1), t.n_cross());
    let k = k.max(1);
    if d == 0 || d > V2_TW {
        return None;
    }
    let rows = (V2_TW / d).min(d);
    let fit = (V2_QW / d).min(V2_PW / d).min(V2_IW / (k * (1 + j))).min(V2_AW / (k * h));
    let mut g = fit.min(max_group).min(V2_MAX_GROUP);
    while g >= 1 {
        let pl = V2Plan { group: g, tile_rows: V2_TW / d, wo_rows: rows };
        if !be.is_cpu_adapter() || v2_trips(d, h, j, k, pl) <= V2_CPU_TRIPS {
            return Some(pl);
        }
        g -= 1;
    }
    None
}

impl WgpuBackend {
    /// Candidates per group ESU v2 runs for tables `t` and top-`k` on this device; `None` when
    /// v1 runs (asked for, or the shape does not fit v2's workgroup arrays). Split tables run v2
    /// with groups of one.
    pub fn esu_v2_group(&self, t: &OnlineTables, k: usize) -> Option<usize> {
        v2_plan(self, t, k, V2_MAX_GROUP).map(|p| p.group)
    }
}

/// Group offsets (dispatch-local candidate indices, `n_groups + 1` of them) for the requests
/// `reqs` of `batch`: each request's candidates cut into groups of `g`, the last one ragged;
/// a group never spans two requests.
pub(crate) fn group_offsets(batch: &OnlineBatch, reqs: std::ops::Range<usize>, g: usize) -> Vec<u32> {
    let c0 = batch.cand_offsets[reqs.start];
    let mut v = Vec::new();
    for r in reqs.clone() {
        v.extend(batch.cand_range(r).step_by(g.max(1)).map(|c| c as u32 - c0));
    }
    v.push(batch.cand_offsets[reqs.end] - c0);
    v
}

/// `cand_info` of the requests `reqs`, with v2's group offsets appended when v2 runs.
fn info_for(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, reqs: std::ops::Range<usize>, k: usize) -> (Vec<u32>, Option<V2>) {
    let mut info = gsu_topk::cand_info(batch, reqs.clone());
    let Some(plan) = v2_plan(be, t, k, V2_MAX_GROUP) else {
        return (info, None);
    };
    let offs = group_offsets(batch, reqs, plan.group);
    // The records alone fit one binding (request_groups); the offsets must not push them over.
    if ((info.len() + offs.len()) * 4) as u64 > be.max_binding() {
        return (info, None);
    }
    let v2 = V2 { plan, grp_off: info.len() as u32, n_groups: offs.len() - 1 };
    info.extend_from_slice(&offs);
    (info, Some(v2))
}

/// A v2 dispatch: its plan and where its groups are (`grp_off` = u32::MAX: one candidate each).
pub(crate) struct V2 {
    pub plan: V2Plan,
    pub grp_off: u32,
    pub n_groups: usize,
}

/// Device inputs of one request group.
pub(crate) struct Seq<'a> {
    pub info: &'a wgpu::Buffer,
    pub items: &'a wgpu::Buffer,
    pub cross: &'a wgpu::Buffer,
    pub bias: &'a wgpu::Buffer,
}

/// The ESU of `n_cand` candidates whose records `s.info` carries without group offsets (the
/// split path): v2 with groups of one candidate where v2 is asked for and fits, else v1.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    t: &OnlineTables,
    s: &Seq,
    tk_idx: &wgpu::Buffer,
    tk_count: &wgpu::Buffer,
    n_cand: usize,
    k: usize,
) -> Result<wgpu::Buffer> {
    let v2 = v2_plan(be, t, k, 1).map(|plan| V2 { plan, grp_off: u32::MAX, n_groups: n_cand });
    encode_with(be, enc, t, s, tk_idx, tk_count, n_cand, k, v2.as_ref())
}

/// The ESU dispatch: v2 over `v2`'s groups when given, else v1 (one workgroup per candidate).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_with(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    t: &OnlineTables,
    s: &Seq,
    tk_idx: &wgpu::Buffer,
    tk_count: &wgpu::Buffer,
    n_cand: usize,
    k: usize,
    v2: Option<&V2>,
) -> Result<wgpu::Buffer> {
    let d = t.d_model();
    let (q, kt, v, cv, wo) = (be.table(&t.p_q)?, be.table(&t.p_k)?, be.table(&t.p_v)?, be.table(&t.cross_value)?, be.table(&t.w_o)?);
    let w = |x: &super::WgpuTable| if x.f16 { 2 } else { 4 };
    let pq = be.whole("p_q", q, t.p_q.rows, d, w(q))?;
    let pk = be.whole("p_k", kt, t.p_k.rows, d, w(kt))?;
    let pv = be.whole("p_v", v, t.p_v.rows, d, w(v))?;
    let cvb = be.whole("cross_value", cv, t.cross_value.rows, d, 4)?;
    let wob = be.whole("w_o", wo, d, d, 4)?;
    let flags = WgpuBackend::f16_flag(q, F_T0_F16) | WgpuBackend::f16_flag(kt, F_T1_F16) | WgpuBackend::f16_flag(v, F_T2_F16);
    let out = be.output("esu out", n_cand * d);
    let mut p = Params {
        n_cand: n_cand as u32,
        d: d as u32,
        heads: t.heads as u32,
        dk: t.d_head() as u32,
        k: k as u32,
        n_cross: t.n_cross() as u32,
        scale: (1.0 / (t.d_head() as f64).sqrt()) as f32,
        pool_off: 0,
        grp_off: u32::MAX,
        tile_rows: 0,
        wo_rows: 0,
        pad: 0,
    };
    if let Some(v2) = v2 {
        let pipe = be.pipe("esu", SRC, "esu_fwd_v2", flags, BINDS_V2)?;
        p.n_cand = v2.n_groups as u32;
        p.grp_off = v2.grp_off;
        p.tile_rows = v2.plan.tile_rows as u32;
        p.wo_rows = v2.plan.wo_rows as u32;
        let pb = be.uniform(&p);
        let bufs = [pq, pk, pv, cvb, wob, s.info, s.items, s.cross, s.bias, tk_idx, tk_count, &out];
        be.dispatch(enc, &pipe, &pb, &bufs, grid(v2.n_groups as u64));
        return Ok(out);
    }
    let pipe = be.pipe("esu", SRC, "esu_fwd_v1", flags, BINDS)?;
    let pool_off = n_cand * k * t.heads;
    p.pool_off = pool_off as u32;
    let scratch = be.output("esu scratch", pool_off + n_cand * d);
    let pb = be.uniform(&p);
    be.dispatch(
        enc,
        &pipe,
        &pb,
        &[pq, pk, pv, cvb, wob, s.info, s.items, s.cross, s.bias, tk_idx, tk_count, &out, &scratch],
        grid(n_cand as u64),
    );
    Ok(out)
}

pub(crate) fn esu(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], topk: &TopK) -> Result<Vec<f32>> {
    let d = t.d_model();
    let (h, j, k) = (t.heads, t.n_cross(), topk.k);
    let mut res = vec![0f32; batch.cands.len() * d];
    for g in gsu_topk::groups(be, t, batch, k.max(1)) {
        let nc = g.cands.len();
        let (info, v2) = info_for(be, t, batch, g.reqs.clone(), k);
        let bytes = be.scoped("esu", || {
            let x = g.upload(be, batch, &info);
            let cross = g.upload_cross(be, batch, j);
            let bb = be.upload("bias", g.of_seq(bias, h));
            let ti = be.upload("topk idx", g.of_cands(&topk.idx, k));
            let tc = be.upload("topk count", g.of_cands(&topk.count, 1));
            let mut enc = be.encoder();
            let s = Seq { info: &x.info, items: &x.items, cross: &cross, bias: &bb };
            let out = encode_with(be, &mut enc, t, &s, &ti, &tc, nc, k, v2.as_ref())?;
            be.finish("esu", enc, &[Readback { buf: &out, bytes: (nc * d * 4) as u64 }])
        })?;
        g.of_cands_mut(&mut res, d).copy_from_slice(&words_f32(&bytes[0]));
    }
    Ok(res)
}

pub(crate) fn online(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Result<OnlineOutput> {
    let d = t.d_model();
    let (h, j) = (t.heads, t.n_cross());
    let n_cand = batch.cands.len();
    let mut topk = TopK { k, idx: vec![u32::MAX; n_cand * k], score: vec![f32::NEG_INFINITY; n_cand * k], count: vec![0; n_cand] };
    let mut out = vec![0f32; n_cand * d];
    for g in gsu_topk::groups(be, t, batch, k) {
        let (nc, nl) = (g.cands.len(), g.seq.len());
        let (info, v2) = info_for(be, t, batch, g.reqs.clone(), k);
        let bytes = be.scoped("online", || {
            let x = g.upload(be, batch, &info);
            let cross = g.upload_cross(be, batch, j);
            let sizes = be.upload("sizes", g.of_seq(batch.sizes, 1));
            let mut enc = be.encoder();
            let cb = be.output("cross bias", nl * h);
            cross_bias::encode_gather_sum(be, &mut enc, &t.cross_bias, &cross, nl, j, &cb)?;
            let bias = be.output("bias", nl * h);
            log_size_bias::encode(be, &mut enc, &cb, &sizes, nl, h, &bias)?;
            let o = gsu_topk::encode(be, &mut enc, t, &x.info, &x.items, &bias, nc, k, None)?;
            let s = Seq { info: &x.info, items: &x.items, cross: &cross, bias: &bias };
            let e = encode_with(be, &mut enc, t, &s, &o.idx, &o.count, nc, k, v2.as_ref())?;
            let [ri, rs, rc, rn] = o.readbacks(nc, k);
            let reads = [ri, rs, rc, rn, Readback { buf: &e, bytes: (nc * d * 4) as u64 }];
            be.finish("online", enc, &reads)
        })?;
        g.store_topk(batch, &mut topk, &bytes[..4])?;
        g.of_cands_mut(&mut out, d).copy_from_slice(&words_f32(&bytes[4]));
    }
    Ok(OnlineOutput { topk, out })
}
