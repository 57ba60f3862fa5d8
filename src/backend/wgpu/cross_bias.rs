//! `cross_bias` (shaders/cross_bias.wgsl): inference gather-sum, dense training form and the
//! training backward into the cross parameters.

use super::{grid, split_by, words_f32, Readback, WgpuBackend, B};
use crate::backend::train_rows::CrossGradLayout;
use crate::backend::{CrossBwdIn, CrossDims, CrossTableGrads, DeviceTable};
use crate::error::{Error, Result};

pub(super) const SRC: &str = include_str!("../../../shaders/cross_bias.wgsl");
const BINDS: &[B] = &[B::R, B::R, B::R, B::W];
/// Backward: dcb, offsets, dcv (read); packed grads (read-write); e, w_c, β, w_vc (read).
pub(super) const BINDS_BWD: &[B] = &[B::R, B::R, B::R, B::W, B::R, B::R, B::R, B::R];
/// Loop iterations one backward pass may spend per invocation (llvmpipe stops at 65,535).
pub(super) const BWD_BUDGET: usize = 32_768;

/// Mirrors `Params` in shaders/cross_bias.wgsl (`d`, `s0`, `s1` are read by the backward only).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct Params {
    n: u32,
    heads: u32,
    n_cross: u32,
    dim: u32,
    d: u32,
    s0: u32,
    s1: u32,
    pad: u32,
}

impl Params {
    fn fwd(n: usize, heads: usize, n_cross: usize, dim: usize) -> Params {
        Params { n: n as u32, heads: heads as u32, n_cross: n_cross as u32, dim: dim as u32, d: 0, s0: 0, s1: 0, pad: 0 }
    }

    /// The backward's pass over steps `s0..s1` of every sum, for `l`'s shapes.
    pub(super) fn bwd(l: &CrossGradLayout, s0: usize, s1: usize) -> Params {
        let (h, j, c) = (l.dims.heads, l.dims.n_cross, l.dims.dim);
        Params { n: l.v as u32, heads: h as u32, n_cross: j as u32, dim: c as u32, d: l.d as u32, s0: s0 as u32, s1: s1 as u32, pad: 0 }
    }
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
    let pipe = be.pipe("cross_bias", SRC, "cross_bias_fwd", 0, BINDS)?;
    let p = be.uniform(&Params::fwd(n, t.cols, n_cross, 0));
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
        let pipe = be.pipe("cross_bias", SRC, "cross_bias_dense_fwd", 0, BINDS)?;
        let wb = be.upload("w_c", &w_c.iter().map(|x| x.to_bits()).collect::<Vec<u32>>());
        let bb = be.upload("beta", beta);
        let mut enc = be.encoder();
        let mut outs = Vec::new();
        for g in &groups {
            let eb = be.upload("e", &e[g.start * per..g.end * per]);
            let out = be.output("cross bias dense", g.len() * d.heads);
            let p = be.uniform(&Params::fwd(g.len(), d.heads, d.n_cross, d.dim));
            be.dispatch(&mut enc, &pipe, &p, &[&eb, &wb, &bb, &out], grid(((g.len() * d.heads) as u64).div_ceil(64)));
            outs.push((out, g.len()));
        }
        let reads: Vec<Readback> = outs.iter().map(|(b, m)| Readback { buf: b, bytes: (m * d.heads * 4) as u64 }).collect();
        let bytes = be.finish("cross_bias_dense", enc, &reads)?;
        Ok(bytes.iter().flat_map(|b| words_f32(b)).collect())
    })
}

/// `cross_bias_bwd`: one invocation per element of `[dE | dw_c | dβ | dW^{vc}]` (one packed
/// output, one download), split here. Each element's sum runs over at most `S` steps per pass
/// (a dβ step costs C + 1 loop trips), passes in step order; every input binds whole (the
/// tables are tiny: V = 74 in training) and one over the binding limit is `Error::TooLarge`.
pub(crate) fn cross_tables_bwd(be: &WgpuBackend, x: CrossBwdIn<'_>) -> Result<CrossTableGrads<f32>> {
    let lay = CrossGradLayout::of_slices(&x);
    let (h, jn, c, d) = (x.dims.heads, x.dims.n_cross, x.dims.dim, lay.d);
    let total = lay.total();
    let lim = be.max_binding();
    for (field, len) in [
        ("dcb", x.dcb.len()),
        ("dcv", x.dcv.len()),
        ("e", x.e.len()),
        ("w_c", x.w_c.len()),
        ("beta", x.beta.len()),
        ("w_vc", x.w_vc.len()),
        ("offsets", x.offsets.len()),
        ("cross grads (V*C + h*J*C + h*J + J*C*D)", total),
    ] {
        if (len as u64) * 4 > lim {
            return Err(Error::TooLarge { field, value: len as u64 * 4, limit: lim });
        }
    }
    // One step of the feature search plus one step of any sum must fit a pass.
    if jn + c + 1 > BWD_BUDGET {
        return Err(Error::TooLarge {
            field: "n_cross + cross dim (per-invocation loop length)",
            value: (jn + c + 1) as u64,
            limit: BWD_BUDGET as u64,
        });
    }
    let steps = (BWD_BUDGET - jn) / (c + 1);
    let longest = (0..jn).map(|j| (x.offsets[j + 1] - x.offsets[j]) as usize).max().unwrap_or(0).max(d + h);
    let passes = longest.div_ceil(steps).max(1);
    let g = be.scoped("cross_tables_bwd", || {
        let pipe = be.pipe("cross_bias", SRC, "cross_bias_bwd", 0, BINDS_BWD)?;
        let dcb = be.upload("dcb", x.dcb);
        let offs = be.upload("offsets", x.offsets);
        let dcv = be.upload("dcv", x.dcv);
        let e = be.upload("e", x.e);
        let w_c = be.upload("w_c", x.w_c);
        let beta = be.upload("beta", x.beta);
        let w_vc = be.upload("w_vc", x.w_vc);
        let out = be.output("cross grads", total);
        let mut enc = be.encoder();
        for pass in 0..passes {
            let p = be.uniform(&Params::bwd(&lay, pass * steps, (pass + 1) * steps));
            be.dispatch(&mut enc, &pipe, &p, &[&dcb, &offs, &dcv, &out, &e, &w_c, &beta, &w_vc], grid((total as u64).div_ceil(64)));
        }
        let bytes = be.finish("cross_tables_bwd", enc, &[Readback { buf: &out, bytes: (total * 4) as u64 }])?;
        Ok(words_f32(&bytes[0]))
    })?;
    Ok(lay.split(g))
}
