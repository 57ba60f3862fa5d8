//! `kmeans` (shaders/kmeans.wgsl): batched assignment and update; `lloyd` keeps the points,
//! centroids, assignments and convergence state on the device and runs every round without the
//! host (`kmeans_converge_fwd_v1`), then reads assignments, centroids and iteration counts back
//! in one download.

use super::{grid, split_by, words_f32, words_u32, Readback, WgpuBackend, B};
use crate::backend::{KmeansBatch, KmeansResult};
use crate::error::{Error, Result};

const SRC: &str = include_str!("../../../shaders/kmeans.wgsl");
/// points, offsets, coff, cents (read); assign, out, state (read-write); old (read).
const BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::W, B::W, B::W, B::R];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    dim: u32,
    n_prob: u32,
    total_k: u32,
}

/// One group of whole problems, resident on the device.
struct Group {
    /// point range in the batch
    pts: std::ops::Range<usize>,
    /// centroid-row range in the batch
    cents: std::ops::Range<usize>,
    points: wgpu::Buffer,
    offsets: wgpu::Buffer,
    coff: wgpu::Buffer,
    params: wgpu::Buffer,
    n_prob: usize,
}

/// Problems grouped so that each group's points fit one storage binding.
fn groups(be: &WgpuBackend, b: &KmeansBatch) -> Result<Vec<Group>> {
    let coff_all = b.centroid_offsets();
    let row = (b.dim * 4) as u64;
    let ranges = split_by(b.n_problems(), be.max_binding(), |p| b.range(p).len() as u64 * row);
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
        let offs: Vec<u32> = b.offsets[probs.start..=probs.end].iter().map(|&o| o - b.offsets[probs.start]).collect();
        let co: Vec<u32> = coff_all[probs.start..=probs.end].iter().map(|&o| o - coff_all[probs.start]).collect();
        let params =
            be.uniform(&Params { n: pts.len() as u32, dim: b.dim as u32, n_prob: probs.len() as u32, total_k: cents.len() as u32 });
        out.push(Group {
            points: be.upload("points", &b.points[pts.start * b.dim..pts.end * b.dim]),
            offsets: be.upload("offsets", &offs),
            coff: be.upload("centroid offsets", &co),
            params,
            n_prob: probs.len(),
            pts,
            cents,
        });
    }
    Ok(out)
}

/// Buffers a dispatch binds but does not use, and the all-zero convergence state of the
/// standalone ops.
struct Spare {
    f32s: wgpu::Buffer,
    u32s: wgpu::Buffer,
    state: wgpu::Buffer,
}

impl Spare {
    fn new(be: &WgpuBackend, n_prob: usize) -> Spare {
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
    let pipe = be.pipe("kmeans", SRC, "kmeans_assign_fwd_v1", 0, BINDS)?;
    be.dispatch(
        enc,
        &pipe,
        &g.params,
        &[&g.points, &g.offsets, &g.coff, cents, assign, &spare.f32s, state, &spare.u32s],
        grid((g.pts.len() as u64).div_ceil(64)),
    );
    Ok(())
}

fn encode_update(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    g: &Group,
    dim: usize,
    prev: &wgpu::Buffer,
    assign: &wgpu::Buffer,
    out: &wgpu::Buffer,
    state: &wgpu::Buffer,
    spare: &Spare,
) -> Result<()> {
    let pipe = be.pipe("kmeans", SRC, "kmeans_update_fwd_v1", 0, BINDS)?;
    be.dispatch(
        enc,
        &pipe,
        &g.params,
        &[&g.points, &g.offsets, &g.coff, prev, assign, out, state, &spare.u32s],
        grid(((g.cents.len() * dim) as u64).div_ceil(64)),
    );
    Ok(())
}

pub(crate) fn assign(be: &WgpuBackend, b: &KmeansBatch, centroids: &[f32]) -> Result<Vec<u32>> {
    be.scoped("kmeans_assign", || {
        let gs = groups(be, b)?;
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
        let gs = groups(be, b)?;
        let mut enc = be.encoder();
        let spare = Spare::new(be, b.n_problems());
        let mut outs = Vec::new();
        for g in &gs {
            let pb = be.upload("prev", &prev[g.cents.start * b.dim..g.cents.end * b.dim]);
            let ab = be.upload("assign", &assign[g.pts.clone()]);
            let ob = be.output("centroids", g.cents.len() * b.dim);
            encode_update(be, &mut enc, g, b.dim, &pb, &ab, &ob, &spare.state, &spare)?;
            outs.push((ob, g.cents.len() * b.dim));
        }
        let reads: Vec<Readback> = outs.iter().map(|(buf, n)| Readback { buf, bytes: (*n * 4) as u64 }).collect();
        let bytes = be.finish("kmeans_update", enc, &reads)?;
        Ok(bytes.iter().flat_map(|x| words_f32(x)).collect())
    })
}

/// Lloyd iterations on the device from seeded centroids `init`, with the same semantics as the
/// trait's default `lloyd_unchecked`: `max_iter` rounds of update + assign + converge are encoded
/// into one command buffer (a converged problem is skipped by the shaders), then the final
/// assignments, centroids and iteration counts come back in one download.
pub(crate) fn lloyd(be: &WgpuBackend, b: &KmeansBatch, init: Vec<f32>, max_iter: u32) -> Result<KmeansResult> {
    be.scoped("kmeans", || {
        let gs = groups(be, b)?;
        let spare = Spare::new(be, 1);
        let mut enc = be.encoder();
        // Per group: centroid and assignment ping-pong buffers, and the convergence state.
        let mut bufs: Vec<([wgpu::Buffer; 2], [wgpu::Buffer; 2], wgpu::Buffer, usize)> = Vec::new();
        for g in &gs {
            let n_prob = g.n_prob;
            let c0 = be.upload("centroids", &init[g.cents.start * b.dim..g.cents.end * b.dim]);
            let c1 = be.output("centroids", g.cents.len() * b.dim);
            let a0 = be.output("assign", g.pts.len());
            let a1 = be.output("assign", g.pts.len());
            let state = be.zeroed("kmeans state", 2 * n_prob);
            encode_assign(be, &mut enc, g, &c0, &a0, &state, &spare)?;
            bufs.push(([c0, c1], [a0, a1], state, n_prob));
        }
        let converge = be.pipe("kmeans", SRC, "kmeans_converge_fwd_v1", 0, BINDS)?;
        for it in 0..max_iter as usize {
            let cur = it % 2;
            for (g, (c, a, state, n_prob)) in gs.iter().zip(&bufs) {
                encode_update(be, &mut enc, g, b.dim, &c[cur], &a[cur], &c[1 - cur], state, &spare)?;
                encode_assign(be, &mut enc, g, &c[1 - cur], &a[1 - cur], state, &spare)?;
                be.dispatch(
                    &mut enc,
                    &converge,
                    &g.params,
                    &[&g.points, &g.offsets, &g.coff, &c[1 - cur], &a[1 - cur], &spare.f32s, state, &a[cur]],
                    grid((*n_prob as u64).div_ceil(64)),
                );
            }
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
