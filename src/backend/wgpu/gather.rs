//! `gather` (shaders/gather.wgsl): rows of a resident table by id, widened to f32.

use super::{grid, split_by, words_f32, Readback, WgpuBackend, B, F_T0_F16};
use crate::backend::DeviceTable;
use crate::error::Result;

const SRC: &str = include_str!("../../../shaders/gather.wgsl");
pub(crate) const BINDS: &[B] = &[B::R, B::R, B::W];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub n: u32,
    pub cols: u32,
    pub row_lo: u32,
    pub row_hi: u32,
    pub base: u32,
    pub pad: [u32; 3],
}

/// Encode the gather of `ids` (already on the device, `n` of them) into `out` ([n, cols] f32):
/// one dispatch per row chunk of the table.
pub(crate) fn encode(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    t: &DeviceTable,
    ids: &wgpu::Buffer,
    n: usize,
    out: &wgpu::Buffer,
) -> Result<()> {
    let wt = be.table(t)?;
    let pipe = be.pipe("gather", SRC, "gather_fwd", WgpuBackend::f16_flag(wt, F_T0_F16), BINDS)?;
    let elems = (n * t.cols) as u64;
    for (ci, chunk) in wt.chunks.iter().enumerate() {
        let lo = ci * wt.rows_per_chunk;
        let hi = (lo + wt.rows_per_chunk).min(t.rows);
        let p = be.uniform(&Params { n: n as u32, cols: t.cols as u32, row_lo: lo as u32, row_hi: hi as u32, base: 0, pad: [0; 3] });
        be.dispatch(enc, &pipe, &p, &[chunk, ids, out], grid(elems.div_ceil(64)));
    }
    Ok(())
}

/// Like [`encode`] for ascending `sorted` ids (the same values, already on the device as
/// `ids`): each chunk's dispatch covers only the ids that fall in it.
pub(crate) fn encode_sorted(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    t: &DeviceTable,
    ids: &wgpu::Buffer,
    sorted: &[u32],
    out: &wgpu::Buffer,
) -> Result<()> {
    let wt = be.table(t)?;
    let pipe = be.pipe("gather", SRC, "gather_fwd", WgpuBackend::f16_flag(wt, F_T0_F16), BINDS)?;
    for (ci, chunk) in wt.chunks.iter().enumerate() {
        let lo = ci * wt.rows_per_chunk;
        let hi = (lo + wt.rows_per_chunk).min(t.rows);
        let a = sorted.partition_point(|&x| (x as usize) < lo);
        let b = sorted.partition_point(|&x| (x as usize) < hi);
        if a == b {
            continue;
        }
        let n = b - a;
        let p = be.uniform(&Params { n: n as u32, cols: t.cols as u32, row_lo: lo as u32, row_hi: hi as u32, base: a as u32, pad: [0; 3] });
        be.dispatch(enc, &pipe, &p, &[chunk, ids, out], grid(((n * t.cols) as u64).div_ceil(64)));
    }
    Ok(())
}

pub(crate) fn gather(be: &WgpuBackend, t: &DeviceTable, ids: &[u32]) -> Result<Vec<f32>> {
    if ids.is_empty() || t.cols == 0 {
        return Ok(Vec::new());
    }
    let row_bytes = (t.cols * 4) as u64;
    let groups = split_by(ids.len(), be.max_binding(), |_| row_bytes);
    be.scoped("gather", || {
        let mut enc = be.encoder();
        let mut outs = Vec::new();
        for g in &groups {
            let idb = be.upload("ids", &ids[g.clone()]);
            let out = be.output("gather out", g.len() * t.cols);
            encode(be, &mut enc, t, &idb, g.len(), &out)?;
            outs.push((out, g.len()));
        }
        let reads: Vec<Readback> = outs.iter().map(|(b, n)| Readback { buf: b, bytes: (n * t.cols * 4) as u64 }).collect();
        let bytes = be.finish("gather", enc, &reads)?;
        Ok(bytes.iter().flat_map(|b| words_f32(b)).collect())
    })
}
