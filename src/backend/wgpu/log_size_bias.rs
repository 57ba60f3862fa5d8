//! `log_size_bias` (shaders/log_size_bias.wgsl): `bias + ln n`.

use super::{grid, split_by, words_f32, Readback, WgpuBackend, B};
use crate::error::Result;

const SRC: &str = include_str!("../../../shaders/log_size_bias.wgsl");
const BINDS: &[B] = &[B::R, B::R, B::W];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    heads: u32,
    pad0: u32,
    pad1: u32,
}

pub(crate) fn encode(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    bias: &wgpu::Buffer,
    sizes: &wgpu::Buffer,
    n: usize,
    heads: usize,
    out: &wgpu::Buffer,
) -> Result<()> {
    let pipe = be.pipe("log_size_bias", SRC, "log_size_bias_fwd", 0, BINDS)?;
    let p = be.uniform(&Params { n: n as u32, heads: heads as u32, pad0: 0, pad1: 0 });
    be.dispatch(enc, &pipe, &p, &[bias, sizes, out], grid(((n * heads) as u64).div_ceil(64)));
    Ok(())
}

pub(crate) fn log_size_bias(be: &WgpuBackend, bias: &[f32], sizes: &[f32], heads: usize) -> Result<Vec<f32>> {
    let n = sizes.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let groups = split_by(n, be.max_binding(), |_| (heads * 4) as u64);
    be.scoped("log_size_bias", || {
        let mut enc = be.encoder();
        let mut outs = Vec::new();
        for g in &groups {
            let bb = be.upload("bias", &bias[g.start * heads..g.end * heads]);
            let sb = be.upload("sizes", &sizes[g.clone()]);
            let out = be.output("log size bias", g.len() * heads);
            encode(be, &mut enc, &bb, &sb, g.len(), heads, &out)?;
            outs.push((out, g.len()));
        }
        let reads: Vec<Readback> = outs.iter().map(|(b, m)| Readback { buf: b, bytes: (m * heads * 4) as u64 }).collect();
        let bytes = be.finish("log_size_bias", enc, &reads)?;
        Ok(bytes.iter().flat_map(|b| words_f32(b)).collect())
    })
}
