//! `kmeans_seed_fwd` (shaders/kmeans.wgsl): k-means++ seeding on the device, bit-identical to
//! `cpu::kmeans::seed_all`. One workgroup per problem; the k picks are split over dispatches
//! so that no invocation passes llvmpipe's 65,535 loop trips (the RNG state, the pending pick
//! and the D² distances carry over in a scratch buffer). Where one pick alone would pass that
//! budget the host reference seeds instead (`picks_per_dispatch` returns `None`).

use super::kmeans::{groups, Extra, Group, Params, Spare, BINDS, SRC};
use super::{grid, words_f32, Readback, WgpuBackend};
use crate::backend::cpu;
use crate::backend::KmeansBatch;
use crate::error::Result;

/// Loop trips one invocation may spend per dispatch (llvmpipe stops at 65,535 in all).
const LOOP_BUDGET: usize = 50_000;
/// Invocations per workgroup of `kmeans_seed_fwd`.
const WG: usize = 256;

/// Picks every dispatch runs for problems of at most `n_max` points of `dim`: per pick an
/// invocation loops over its ⌈n/256⌉ points (dim + 1 trips each) and the centroid copy, and
/// invocation 0 over the f64 sum and the draw (unrolled by 8). `None` when one pick is too many.
pub(crate) fn picks_per_dispatch(n_max: usize, dim: usize) -> Option<u32> {
    let per_pick = n_max.div_ceil(WG) * (dim + 2) + 2 * n_max.div_ceil(8) + dim.div_ceil(WG) + 16;
    let per = LOOP_BUDGET / per_pick;
    (per > 0).then_some(per.min(u32::MAX as usize) as u32)
}

/// Picks per dispatch for the whole batch, or `None` where the device form cannot run.
pub(crate) fn plan(b: &KmeansBatch) -> Option<u32> {
    let n_max = (0..b.n_problems()).map(|p| b.range(p).len()).max().unwrap_or(0);
    picks_per_dispatch(n_max, b.dim)
}

/// Encode the seeding of group `g` into `out` (`[Σk, dim]` of the group, every row written):
/// ⌈k_max / per⌉ dispatches over the group's problems. `scratch` holds `3P + N` zeroed words.
#[allow(clippy::too_many_arguments)]
pub(super) fn encode(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    g: &Group,
    dim: usize,
    per: u32,
    out: &wgpu::Buffer,
    scratch: &wgpu::Buffer,
    spare: &Spare,
) -> Result<()> {
    let pipe = be.pipe("kmeans", SRC, "kmeans_seed_fwd", 0, BINDS)?;
    let k_max = g.k_max as u32;
    let per = per.max(1);
    let mut c_begin = 0u32;
    while c_begin < k_max {
        let c_end = c_begin.saturating_add(per).min(k_max);
        let params = be.uniform(&Params {
            n: g.pts.len() as u32,
            dim: dim as u32,
            n_prob: g.n_prob as u32,
            total_k: g.cents.len() as u32,
            c_begin,
            c_end,
            pad: [0; 2],
        });
        let binds = [
            g.points(),
            g.offsets(),
            g.coff(),
            spare.f32s.as_entire_buffer_binding(),
            spare.u32s.as_entire_buffer_binding(),
            out.as_entire_buffer_binding(),
            scratch.as_entire_buffer_binding(),
            g.seeds()?,
        ];
        be.dispatch_bound(enc, &pipe, &params, &binds, grid(g.n_prob as u64));
        c_begin = c_end;
    }
    Ok(())
}

/// `Backend::kmeans_seed` on the device (batch and seeds already checked): one upload, the
/// seeding dispatches, one download. The host reference where the device form cannot run.
pub(crate) fn seed(be: &WgpuBackend, b: &KmeansBatch, seeds: &[u64]) -> Result<Vec<f32>> {
    let Some(per) = plan(b) else {
        return Ok(cpu::kmeans::seed_all(b, seeds));
    };
    if b.n_problems() == 0 {
        return Ok(Vec::new());
    }
    be.scoped("kmeans_seed", || {
        let gs = groups(be, b, Extra { seeds: Some(seeds), init: None })?;
        let spare = Spare::new(be, 1);
        let mut enc = be.encoder();
        let mut outs = Vec::new();
        for g in &gs {
            let out = be.output("centroids", g.cents.len() * b.dim);
            let scratch = be.zeroed("kmeans seed scratch", 3 * g.n_prob + g.pts.len());
            encode(be, &mut enc, g, b.dim, per, &out, &scratch, &spare)?;
            outs.push((out, g.cents.len() * b.dim));
        }
        let reads: Vec<Readback> = outs.iter().map(|(buf, n)| Readback { buf, bytes: (*n * 4) as u64 }).collect();
        let bytes = be.finish("kmeans_seed", enc, &reads)?;
        Ok(bytes.iter().flat_map(|x| words_f32(x)).collect())
    })
}
