//! `kmeans` (shaders/kmeans.wgsl): batched assignment and update; `kmeans()` keeps the points
//! and centroids on the device across Lloyd iterations (one assignment download per iteration
//! for the convergence test, the centroids once at the end).

use super::{grid, split_by, words_f32, words_u32, Readback, WgpuBackend, B};
use crate::backend::{KmeansBatch, KmeansResult};
use crate::error::{Error, Result};

const SRC: &str = include_str!("../../../shaders/kmeans.wgsl");
const BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::W, B::W];

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
            pts,
            cents,
        });
    }
    Ok(out)
}

fn encode_assign(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    g: &Group,
    cents: &wgpu::Buffer,
    assign: &wgpu::Buffer,
    dummy: &wgpu::Buffer,
) -> Result<()> {
    let pipe = be.pipe("kmeans", SRC, "kmeans_assign_fwd_v1", 0, BINDS)?;
    be.dispatch(enc, &pipe, &g.params, &[&g.points, &g.offsets, &g.coff, cents, assign, dummy], grid((g.pts.len() as u64).div_ceil(64)));
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
) -> Result<()> {
    let pipe = be.pipe("kmeans", SRC, "kmeans_update_fwd_v1", 0, BINDS)?;
    be.dispatch(
        enc,
        &pipe,
        &g.params,
        &[&g.points, &g.offsets, &g.coff, prev, assign, out],
        grid(((g.cents.len() * dim) as u64).div_ceil(64)),
    );
    Ok(())
}

pub(crate) fn assign(be: &WgpuBackend, b: &KmeansBatch, centroids: &[f32]) -> Result<Vec<u32>> {
    be.scoped("kmeans_assign", || {
        let gs = groups(be, b)?;
        let mut enc = be.encoder();
        let dummy = be.output("unused", 4);
        let mut outs = Vec::new();
        for g in &gs {
            let cb = be.upload("centroids", &centroids[g.cents.start * b.dim..g.cents.end * b.dim]);
            let ab = be.output("assign", g.pts.len());
            encode_assign(be, &mut enc, g, &cb, &ab, &dummy)?;
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
        let mut outs = Vec::new();
        for g in &gs {
            let pb = be.upload("prev", &prev[g.cents.start * b.dim..g.cents.end * b.dim]);
            let ab = be.upload("assign", &assign[g.pts.clone()]);
            let ob = be.output("centroids", g.cents.len() * b.dim);
            encode_update(be, &mut enc, g, b.dim, &pb, &ab, &ob)?;
            outs.push((ob, g.cents.len() * b.dim));
        }
        let reads: Vec<Readback> = outs.iter().map(|(buf, n)| Readback { buf, bytes: (*n * 4) as u64 }).collect();
        let bytes = be.finish("kmeans_update", enc, &reads)?;
        Ok(bytes.iter().flat_map(|x| words_f32(x)).collect())
    })
}

/// Lloyd iterations on the device from seeded centroids `init`, with the same semantics as the
/// trait's default `lloyd_unchecked`.
pub(crate) fn lloyd(be: &WgpuBackend, b: &KmeansBatch, init: Vec<f32>, max_iter: u32) -> Result<KmeansResult> {
    be.scoped("kmeans", || {
        let gs = groups(be, b)?;
        let n_prob = b.n_problems();
        let mut iterations = vec![0u32; n_prob];
        let mut active = vec![true; n_prob];
        let dummy = be.output("unused", 4);
        // Per group: centroid ping-pong and assignment ping-pong buffers.
        let mut cents: Vec<[wgpu::Buffer; 2]> = Vec::new();
        let mut asg: Vec<[wgpu::Buffer; 2]> = Vec::new();
        let mut enc = be.encoder();
        let mut reads_bufs = Vec::new();
        for g in &gs {
            let c0 = be.upload("centroids", &init[g.cents.start * b.dim..g.cents.end * b.dim]);
            let c1 = be.output("centroids", g.cents.len() * b.dim);
            let a0 = be.output("assign", g.pts.len());
            let a1 = be.output("assign", g.pts.len());
            encode_assign(be, &mut enc, g, &c0, &a0, &dummy)?;
            cents.push([c0, c1]);
            asg.push([a0, a1]);
        }
        for (i, g) in gs.iter().enumerate() {
            reads_bufs.push((i, g.pts.len()));
        }
        let reads: Vec<Readback> = reads_bufs.iter().map(|&(i, n)| Readback { buf: &asg[i][0], bytes: (n * 4) as u64 }).collect();
        let mut assign: Vec<u32> = be.finish("kmeans", enc, &reads)?.iter().flat_map(|x| words_u32(x)).collect();
        let mut cur = 0usize; // index of the current centroids / assignment buffers
        for _ in 0..max_iter {
            if !active.iter().any(|&a| a) {
                break;
            }
            let mut enc = be.encoder();
            for (i, g) in gs.iter().enumerate() {
                encode_update(be, &mut enc, g, b.dim, &cents[i][cur], &asg[i][cur], &cents[i][1 - cur])?;
                encode_assign(be, &mut enc, g, &cents[i][1 - cur], &asg[i][1 - cur], &dummy)?;
            }
            let reads: Vec<Readback> =
                gs.iter().enumerate().map(|(i, g)| Readback { buf: &asg[i][1 - cur], bytes: (g.pts.len() * 4) as u64 }).collect();
            let next: Vec<u32> = be.finish("kmeans", enc, &reads)?.iter().flat_map(|x| words_u32(x)).collect();
            for p in 0..n_prob {
                if !active[p] {
                    continue;
                }
                iterations[p] += 1;
                let r = b.range(p);
                if next[r.clone()] == assign[r] {
                    active[p] = false;
                }
            }
            assign = next;
            cur = 1 - cur;
        }
        let enc = be.encoder();
        let reads: Vec<Readback> =
            gs.iter().enumerate().map(|(i, g)| Readback { buf: &cents[i][cur], bytes: (g.cents.len() * b.dim * 4) as u64 }).collect();
        let centroids: Vec<f32> = be.finish("kmeans", enc, &reads)?.iter().flat_map(|x| words_f32(x)).collect();
        Ok(KmeansResult { assign, centroids, iterations })
    })
}
