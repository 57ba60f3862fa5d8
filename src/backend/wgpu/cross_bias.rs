//! `cross_bias` (shaders/cross_bias.wgsl): inference gather-sum and dense training form.

use super::{grid, split_by, words_f32, Readback, WgpuBackend, B};
use crate::backend::{CrossDims, DeviceTable};
use crate::error::{Error, Result};

const SRC: &str = include_str!("../../../shaders/cross_bias.wgsl");
const BINDS: &[B] = &[B::R, B::R, B::R, B::W];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    heads: u32,
    n_cross: u32,
    dim: u32,
}

/// Encode `out[n, a] = Σ_j T[rows[n*J+j], a]` for `n` behaviours whose rows are on the device.
pub(crate) fn encode_gather_sum(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    t: &DeviceTable,
    rows: &wgpu::Buffer,
    n: usize,
    n_cross: usize,
    out: &wgpu::Buffer,
) -> Result<()> {
    let wt = be.table(t)?;
    // The bias table is [V, h] f32 with V in the tens: always one chunk.
    let tab = be.whole(t.name, wt, t.rows, t.cols, 4)?;
    let pipe = be.pipe("cross_bias", SRC, "cross_bias_fwd_v1", 0, BINDS)?;
    let p = be.uniform(&Params { n: n as u32, heads: t.cols as u32, n_cross: n_cross as u32, dim: 0 });
    be.dispatch(enc, &pipe, &p, &[tab, rows, tab, out], grid(((n * t.cols) as u64).div_ceil(64)));
    Ok(())
}

pub(crate) fn gather_sum(be: &WgpuBackend, t: &DeviceTable, rows: &[u32], n_cross: usize) -> Result<Vec<f32>> {
    let n = rows.len() / n_cross;
    if n == 0 || t.cols == 0 {
        return Ok(vec![0f32; n * t.cols]);
    }
    let h = t.cols;
    let per = ((h.max(n_cross)) * 4) as u64;
    let groups = split_by(n, be.max_binding(), |_| per);
    be.scoped("cross_bias", || {
        let mut enc = be.encoder();
        let mut outs = Vec::new();
        for g in &groups {
            let rb = be.upload("cross rows", &rows[g.start * n_cross..g.end * n_cross]);
            let out = be.output("cross bias", g.len() * h);
            encode_gather_sum(be, &mut enc, t, &rb, g.len(), n_cross, &out)?;
            outs.push((out, g.len()));
        }
        let reads: Vec<Readback> = outs.iter().map(|(b, m)| Readback { buf: b, bytes: (m * h * 4) as u64 }).collect();
        let bytes = be.finish("cross_bias", enc, &reads)?;
        Ok(bytes.iter().flat_map(|b| words_f32(b)).collect())
    })
}

pub(crate) fn dense(be: &WgpuBackend, e: &[f32], w_c: &[f32], beta: &[f32], d: CrossDims) -> Result<Vec<f32>> {
    let per = d.n_cross * d.dim;
    let n = e.len() / per;
    if n == 0 {
        return Ok(Vec::new());
    }
    if (w_c.len() * 4) as u64 > be.max_binding() {
        return Err(Error::TooLarge { field: "w_c bytes", value: (w_c.len() * 4) as u64, limit: be.max_binding() });
    }
    let row = ((per.max(d.heads)) * 4) as u64;
    let groups = split_by(n, be.max_binding(), |_| row);
    be.scoped("cross_bias_dense", || {
        let pipe = be.pipe("cross_bias", SRC, "cross_bias_dense_fwd_v1", 0, BINDS)?;
        let wb = be.upload("w_c", &w_c.iter().map(|x| x.to_bits()).collect::<Vec<u32>>());
        let bb = be.upload("beta", beta);
        let mut enc = be.encoder();
        let mut outs = Vec::new();
        for g in &groups {
            let eb = be.upload("e", &e[g.start * per..g.end * per]);
            let out = be.output("cross bias dense", g.len() * d.heads);
            let p = be.uniform(&Params { n: g.len() as u32, heads: d.heads as u32, n_cross: d.n_cross as u32, dim: d.dim as u32 });
            be.dispatch(&mut enc, &pipe, &p, &[&eb, &wb, &bb, &out], grid(((g.len() * d.heads) as u64).div_ceil(64)));
            outs.push((out, g.len()));
        }
        let reads: Vec<Readback> = outs.iter().map(|(b, m)| Readback { buf: b, bytes: (m * d.heads * 4) as u64 }).collect();
        let bytes = be.finish("cross_bias_dense", enc, &reads)?;
        Ok(bytes.iter().flat_map(|b| words_f32(b)).collect())
    })
}
