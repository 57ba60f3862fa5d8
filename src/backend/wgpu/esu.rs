//! `esu` (shaders/esu.wgsl) and the device-resident online path: cross bias → ln n → fused
//! GSU top-K → ESU → W^o in one command buffer, one upload of the batch, one download.

use super::{cross_bias, grid, gsu_topk, log_size_bias, words_f32, words_u32, Readback, WgpuBackend, B, F_T0_F16, F_T1_F16, F_T2_F16};
use crate::backend::{OnlineBatch, OnlineOutput, OnlineTables, TopK};
use crate::error::Result;

const SRC: &str = include_str!("../../../shaders/esu.wgsl");
const BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::W, B::W];

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
}

/// Device inputs of one request group.
pub(crate) struct Seq<'a> {
    pub info: &'a wgpu::Buffer,
    pub items: &'a wgpu::Buffer,
    pub cross: &'a wgpu::Buffer,
    pub bias: &'a wgpu::Buffer,
}

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
    let d = t.d_model();
    let (q, kt, v, cv, wo) = (be.table(&t.p_q)?, be.table(&t.p_k)?, be.table(&t.p_v)?, be.table(&t.cross_value)?, be.table(&t.w_o)?);
    let w = |x: &super::WgpuTable| if x.f16 { 2 } else { 4 };
    let pq = be.whole("p_q", q, t.p_q.rows, d, w(q))?;
    let pk = be.whole("p_k", kt, t.p_k.rows, d, w(kt))?;
    let pv = be.whole("p_v", v, t.p_v.rows, d, w(v))?;
    let cvb = be.whole("cross_value", cv, t.cross_value.rows, d, 4)?;
    let wob = be.whole("w_o", wo, d, d, 4)?;
    let flags = WgpuBackend::f16_flag(q, F_T0_F16) | WgpuBackend::f16_flag(kt, F_T1_F16) | WgpuBackend::f16_flag(v, F_T2_F16);
    let pipe = be.pipe("esu", SRC, "esu_fwd_v1", flags, BINDS)?;
    let pool_off = n_cand * k * t.heads;
    let scratch = be.output("esu scratch", pool_off + n_cand * d);
    let out = be.output("esu out", n_cand * d);
    let p = be.uniform(&Params {
        n_cand: n_cand as u32,
        d: d as u32,
        heads: t.heads as u32,
        dk: t.d_head() as u32,
        k: k as u32,
        n_cross: t.n_cross() as u32,
        scale: (1.0 / (t.d_head() as f64).sqrt()) as f32,
        pool_off: pool_off as u32,
    });
    be.dispatch(
        enc,
        &pipe,
        &p,
        &[pq, pk, pv, cvb, wob, s.info, s.items, s.cross, s.bias, tk_idx, tk_count, &out, &scratch],
        grid(n_cand as u64),
    );
    Ok(out)
}

pub(crate) fn esu(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], topk: &TopK) -> Result<Vec<f32>> {
    let d = t.d_model();
    let (h, j, k) = (t.heads, t.n_cross(), topk.k);
    let mut res = vec![0f32; batch.cands.len() * d];
    for g in gsu_topk::request_groups(be, t, batch, k.max(1)) {
        let (c0, c1) = (batch.cand_offsets[g.start] as usize, batch.cand_offsets[g.end] as usize);
        if c1 == c0 {
            continue;
        }
        let (l0, l1) = (batch.seq_offsets[g.start] as usize, batch.seq_offsets[g.end] as usize);
        let nc = c1 - c0;
        let bytes = be.scoped("esu", || {
            let info = be.upload("cand info", &gsu_topk::cand_info(batch, g.clone()));
            let items = be.upload("items", &batch.items[l0..l1]);
            let cross = be.upload("cross", &batch.cross[l0 * j..l1 * j]);
            let bb = be.upload("bias", &bias[l0 * h..l1 * h]);
            let ti = be.upload("topk idx", &topk.idx[c0 * k..c1 * k]);
            let tc = be.upload("topk count", &topk.count[c0..c1]);
            let mut enc = be.encoder();
            let s = Seq { info: &info, items: &items, cross: &cross, bias: &bb };
            let out = encode(be, &mut enc, t, &s, &ti, &tc, nc, k)?;
            be.finish("esu", enc, &[Readback { buf: &out, bytes: (nc * d * 4) as u64 }])
        })?;
        res[c0 * d..c1 * d].copy_from_slice(&words_f32(&bytes[0]));
    }
    Ok(res)
}

pub(crate) fn online(be: &WgpuBackend, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Result<OnlineOutput> {
    let d = t.d_model();
    let (h, j) = (t.heads, t.n_cross());
    let n_cand = batch.cands.len();
    let mut topk = TopK { k, idx: vec![u32::MAX; n_cand * k], score: vec![f32::NEG_INFINITY; n_cand * k], count: vec![0; n_cand] };
    let mut out = vec![0f32; n_cand * d];
    for g in gsu_topk::request_groups(be, t, batch, k) {
        let (c0, c1) = (batch.cand_offsets[g.start] as usize, batch.cand_offsets[g.end] as usize);
        if c1 == c0 {
            continue;
        }
        let (l0, l1) = (batch.seq_offsets[g.start] as usize, batch.seq_offsets[g.end] as usize);
        let (nc, nl) = (c1 - c0, l1 - l0);
        let bytes = be.scoped("online", || {
            let info = be.upload("cand info", &gsu_topk::cand_info(batch, g.clone()));
            let items = be.upload("items", &batch.items[l0..l1]);
            let cross = be.upload("cross", &batch.cross[l0 * j..l1 * j]);
            let sizes = be.upload("sizes", &batch.sizes[l0..l1]);
            let mut enc = be.encoder();
            let cb = be.output("cross bias", nl * h);
            cross_bias::encode_gather_sum(be, &mut enc, &t.cross_bias, &cross, nl, j, &cb)?;
            let bias = be.output("bias", nl * h);
            log_size_bias::encode(be, &mut enc, &cb, &sizes, nl, h, &bias)?;
            let o = gsu_topk::encode(be, &mut enc, t, &info, &items, &bias, nc, k, None)?;
            let s = Seq { info: &info, items: &items, cross: &cross, bias: &bias };
            let e = encode(be, &mut enc, t, &s, &o.idx, &o.count, nc, k)?;
            let [ri, rs, rc, rn] = o.readbacks(nc, k);
            let reads = [ri, rs, rc, rn, Readback { buf: &e, bytes: (nc * d * 4) as u64 }];
            be.finish("online", enc, &reads)
        })?;
        let nan = words_u32(&bytes[3])[0];
        if nan != u32::MAX {
            return Err(gsu_topk::nan_error(batch, c0 + nan as usize));
        }
        topk.idx[c0 * k..c1 * k].copy_from_slice(&words_u32(&bytes[0]));
        topk.score[c0 * k..c1 * k].copy_from_slice(&words_f32(&bytes[1]));
        topk.count[c0..c1].copy_from_slice(&words_u32(&bytes[2]));
        out[c0 * d..c1 * d].copy_from_slice(&words_f32(&bytes[4]));
    }
    Ok(OnlineOutput { topk, out })
}
