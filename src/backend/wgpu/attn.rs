//! `attn_fwd` / `attn_bwd` (shaders/attn.wgsl): training attention on ragged samples.
//!
//! Samples are cut into tiles of at most `tile_rows(d_k)` rows (the shader's per-invocation loops
//! then stay far below llvmpipe's 65,535-iteration cap); tile passes work per (tile, head), sample
//! passes combine a sample's tiles in tile order. Forward: tile → combine → normalise (three
//! dispatches); backward: tile → combine → rows → dq (four). One upload, one submission and one
//! download per group of samples; samples are grouped so that every buffer of a group fits one
//! storage binding, and a single sample too large for one binding is `Error::TooLarge`.
//!
//! Tensor forms (`attn_fwd_dev`, `attn_bwd_dev`): the operands stay on the device and the tiles
//! are cut there from the staged offsets (shaders/attn_tiles.wgsl, the same tiles as `tiles()`
//! for one group), so the same passes give the slice forms' results bit for bit with no upload
//! but parameter blocks and no download. Sizes past one storage binding (or more than 2^20
//! samples) take the host form.

use std::ops::Range;

use super::{grid, split_by, words_f32, Readback, WgpuBackend, B};
use crate::backend::{host_tensor, AttnDev, AttnGrads, AttnGradsDev, AttnOut, AttnSaved, Elem, OffsetsSlot, Staged, Tensor};
use crate::error::{Error, Result};

const SRC: &str = include_str!("../../../shaders/attn.wgsl");
/// q, k, v, bias, tiles, toff, dpooled (read); p, pooled/dq, dk, dv, dbias, scratch (read-write).
const BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::W, B::W, B::W, B::W, B::W, B::W];
/// Workgroup-memory rows per tile (`CHMAX` in the shader).
const CHMAX: usize = 1024;
const TILES_SRC: &str = include_str!("../../../shaders/attn_tiles.wgsl");
/// offsets (read, the staged section); toff, tiles (read-write).
const TILES_BINDS: &[B] = &[B::R, B::W, B::W];
/// Samples the tensor forms take on the device (`attn_tiles_count_fwd` walks them in one workgroup).
const DEV_MAX_SAMPLES: usize = 1 << 20;

/// Mirrors `Params` in shaders/attn_tiles.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TilesParams {
    n_samples: u32,
    ch: u32,
    n_slots: u32,
    pad: u32,
}

/// Mirrors `Params` in shaders/attn.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_tiles: u32,
    n_samples: u32,
    d: u32,
    heads: u32,
    dk: u32,
    scale: f32,
    stats_off: u32,
    pad: u32,
}

/// Rows per tile: the column sums walk about `d_k * rows / 64` steps per invocation.
fn tile_rows(dk: usize) -> usize {
    (65536 / dk.max(1)).clamp(64, CHMAX)
}

/// Shapes of one call.
struct Shape {
    h: usize,
    d: usize,
    dk: usize,
    ch: usize,
    /// floats per (tile, head) record in the scratch buffer
    rec: usize,
}

impl Shape {
    fn new(heads: usize, d: usize, rec_extra: usize) -> Shape {
        let dk = d / heads;
        Shape { h: heads, d, dk, ch: tile_rows(dk), rec: rec_extra + dk }
    }
    fn params(&self, n_tiles: usize, n_samples: usize) -> Params {
        Params {
            n_tiles: n_tiles as u32,
            n_samples: n_samples as u32,
            d: self.d as u32,
            heads: self.h as u32,
            dk: self.dk as u32,
            scale: (1.0 / (self.dk as f64).sqrt()) as f32,
            stats_off: (n_tiles * self.h * self.rec) as u32,
            pad: 0,
        }
    }
}

/// Tiles of samples `bs`: `(tiles [3 * n_tiles] = (sample, first row, end row), toff [|bs| + 1])`,
/// samples and rows local to the group.
fn tiles(offsets: &[u32], bs: Range<usize>, ch: usize) -> (Vec<u32>, Vec<u32>) {
    let base = offsets[bs.start];
    let mut t = Vec::new();
    let mut toff = Vec::with_capacity(bs.len() + 1);
    toff.push(0u32);
    for b in bs.clone() {
        let (mut r, r1) = (offsets[b] - base, offsets[b + 1] - base);
        while r < r1 {
            let e = r1.min(r.saturating_add(ch as u32));
            t.extend_from_slice(&[(b - bs.start) as u32, r, e]);
            r = e;
        }
        toff.push((t.len() / 3) as u32);
    }
    (t, toff)
}

/// Samples grouped so that each group's buffers fit one storage binding: a sample costs the sum
/// of its shares of every buffer (so the sum bounds each buffer).
fn groups(be: &WgpuBackend, offsets: &[u32], s: &Shape) -> Result<Vec<Range<usize>>> {
    let lim = be.max_binding();
    let (h, d) = (s.h as u64, s.d as u64);
    let cost = |b: usize| {
        let rows = (offsets[b + 1] - offsets[b]) as u64;
        let tiles = rows.div_ceil(s.ch as u64);
        rows * d * 4 + d * 4 + tiles * (12 + h * s.rec as u64 * 4) + 2 * h * 4 + 4
    };
    let gs = split_by(offsets.len() - 1, lim, cost);
    for g in &gs {
        let c: u64 = g.clone().map(cost).sum();
        if c > lim {
            return Err(Error::TooLarge { field: "attn sample bytes (one sample must fit one storage binding)", value: c, limit: lim });
        }
    }
    Ok(gs)
}

/// Dispatch `entry` over `n` workgroups (nothing when `n` is 0).
fn run(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    entry: &'static str,
    p: &wgpu::Buffer,
    bufs: &[&wgpu::Buffer],
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let pipe = be.pipe("attn", SRC, entry, 0, BINDS)?;
    be.dispatch(enc, &pipe, p, bufs, grid(n as u64));
    Ok(())
}

pub(crate) fn attn_fwd(be: &WgpuBackend, heads: usize, q: &[f32], k: &[f32], v: &[f32], bias: &[f32], offsets: &[u32]) -> Result<AttnOut> {
    let b_n = offsets.len() - 1;
    let n = bias.len() / heads;
    if b_n == 0 {
        return Ok(AttnOut { p: vec![0.0; n * heads], pooled: Vec::new() });
    }
    let s = Shape::new(heads, q.len() / b_n, 2);
    let (h, d) = (s.h, s.d);
    let mut out = AttnOut { p: vec![0.0; n * h], pooled: vec![0.0; b_n * d] };
    for g in groups(be, offsets, &s)? {
        let (r0, r1) = (offsets[g.start] as usize, offsets[g.end] as usize);
        let (tl, toff) = tiles(offsets, g.clone(), s.ch);
        let (nt, nb) = (tl.len() / 3, g.len());
        let prm = s.params(nt, nb);
        let bytes = be.scoped("attn_fwd", || {
            let qb = be.upload("q", &q[g.start * d..g.end * d]);
            let kb = be.upload("k", &k[r0 * d..r1 * d]);
            let vb = be.upload("v", &v[r0 * d..r1 * d]);
            let bb = be.upload("bias", &bias[r0 * h..r1 * h]);
            let tb = be.upload("tiles", &tl);
            let ob = be.upload("tile offsets", &toff);
            let unused_r = be.upload("unused", &[0u32; 4]);
            let unused_w = be.output("unused", 4);
            let pb = be.output("p", (r1 - r0) * h);
            let pooled = be.output("pooled", nb * d);
            let scratch = be.output("attn scratch", prm.stats_off as usize + 2 * nb * h);
            let pu = be.uniform(&prm);
            let bufs = [&qb, &kb, &vb, &bb, &tb, &ob, &unused_r, &pb, &pooled, &unused_w, &unused_w, &unused_w, &scratch];
            let mut enc = be.encoder();
            run(be, &mut enc, "attn_fwd_tile", &pu, &bufs, nt * h)?;
            run(be, &mut enc, "attn_fwd_combine", &pu, &bufs, nb * h)?;
            run(be, &mut enc, "attn_fwd_norm", &pu, &bufs, nt * h)?;
            let reads = [Readback { buf: &pb, bytes: ((r1 - r0) * h * 4) as u64 }, Readback { buf: &pooled, bytes: (nb * d * 4) as u64 }];
            be.finish("attn_fwd", enc, &reads)
        })?;
        out.p[r0 * h..r1 * h].copy_from_slice(&words_f32(&bytes[0]));
        out.pooled[g.start * d..g.end * d].copy_from_slice(&words_f32(&bytes[1]));
    }
    Ok(out)
}

pub(crate) fn attn_bwd(be: &WgpuBackend, heads: usize, x: AttnSaved<'_>, dpooled: &[f32]) -> Result<AttnGrads> {
    let offsets = x.offsets;
    let b_n = offsets.len() - 1;
    let n = x.bias.len() / heads;
    if b_n == 0 {
        return Ok(AttnGrads { dq: Vec::new(), dk: Vec::new(), dv: Vec::new(), dbias: vec![0.0; n * heads] });
    }
    let s = Shape::new(heads, x.q.len() / b_n, 1);
    let (h, d) = (s.h, s.d);
    let mut out = AttnGrads { dq: vec![0.0; b_n * d], dk: vec![0.0; n * d], dv: vec![0.0; n * d], dbias: vec![0.0; n * h] };
    for g in groups(be, offsets, &s)? {
        let (r0, r1) = (offsets[g.start] as usize, offsets[g.end] as usize);
        let (tl, toff) = tiles(offsets, g.clone(), s.ch);
        let (nt, nb, nr) = (tl.len() / 3, g.len(), r1 - r0);
        let prm = s.params(nt, nb);
        let bytes = be.scoped("attn_bwd", || {
            let qb = be.upload("q", &x.q[g.start * d..g.end * d]);
            let kb = be.upload("k", &x.k[r0 * d..r1 * d]);
            let vb = be.upload("v", &x.v[r0 * d..r1 * d]);
            let tb = be.upload("tiles", &tl);
            let ob = be.upload("tile offsets", &toff);
            let dpb = be.upload("dpooled", &dpooled[g.start * d..g.end * d]);
            let pb = be.upload("p", &x.p[r0 * h..r1 * h]);
            let unused_r = be.upload("unused", &[0u32; 4]);
            let dq = be.output("dq", nb * d);
            let dk = be.output("dk", nr * d);
            let dv = be.output("dv", nr * d);
            let dbias = be.output("dbias", nr * h);
            let scratch = be.output("attn scratch", prm.stats_off as usize + nb * h);
            let pu = be.uniform(&prm);
            let bufs = [&qb, &kb, &vb, &unused_r, &tb, &ob, &dpb, &pb, &dq, &dk, &dv, &dbias, &scratch];
            let mut enc = be.encoder();
            run(be, &mut enc, "attn_bwd_tile", &pu, &bufs, nt * h)?;
            run(be, &mut enc, "attn_bwd_combine", &pu, &bufs, nb * h)?;
            run(be, &mut enc, "attn_bwd_rows", &pu, &bufs, nt * h)?;
            run(be, &mut enc, "attn_bwd_dq", &pu, &bufs, nb * h)?;
            let reads = [
                Readback { buf: &dq, bytes: (nb * d * 4) as u64 },
                Readback { buf: &dk, bytes: (nr * d * 4) as u64 },
                Readback { buf: &dv, bytes: (nr * d * 4) as u64 },
                Readback { buf: &dbias, bytes: (nr * h * 4) as u64 },
            ];
            be.finish("attn_bwd", enc, &reads)
        })?;
        out.dq[g.start * d..g.end * d].copy_from_slice(&words_f32(&bytes[0]));
        out.dk[r0 * d..r1 * d].copy_from_slice(&words_f32(&bytes[1]));
        out.dv[r0 * d..r1 * d].copy_from_slice(&words_f32(&bytes[2]));
        out.dbias[r0 * h..r1 * h].copy_from_slice(&words_f32(&bytes[3]));
    }
    Ok(out)
}

/// Tile slots for `b` samples over `n` rows: at least the tile count `Σ ceil(L_b / ch)`.
fn tile_slots(b: usize, n: usize, ch: usize) -> usize {
    n.min(n / ch + b)
}

/// Encode the tiles of the staged offsets `offs` (attn_tiles.wgsl): `(tiles, toff)`, with
/// `tile_slots` tiles (the slots past the real tiles are empty).
fn encode_tiles(
    be: &WgpuBackend,
    enc: &mut wgpu::CommandEncoder,
    staged: &wgpu::Buffer,
    offs: &OffsetsSlot,
    ch: usize,
) -> Result<(wgpu::Buffer, wgpu::Buffer)> {
    let (b, n) = (offs.segments, offs.rows);
    let slots = tile_slots(b, n, ch);
    let toff = be.output("tile offsets", b + 1);
    let tiles = be.output("tiles", 3 * slots);
    let p = be.uniform(&TilesParams { n_samples: b as u32, ch: ch as u32, n_slots: slots as u32, pad: 0 });
    // The offsets section holds B + 1 ≥ 1 words at a 256-byte aligned offset.
    let ob = wgpu::BufferBinding {
        buffer: staged,
        offset: (offs.range.start * 4) as u64,
        size: wgpu::BufferSize::new((offs.range.len() * 4) as u64),
    };
    let binds = [ob, toff.as_entire_buffer_binding(), tiles.as_entire_buffer_binding()];
    let count = be.pipe("attn_tiles", TILES_SRC, "attn_tiles_count_fwd", 0, TILES_BINDS)?;
    be.dispatch_bound(enc, &count, &p, &binds, (1, 1));
    if slots > 0 {
        let fill = be.pipe("attn_tiles", TILES_SRC, "attn_tiles_fill_fwd", 0, TILES_BINDS)?;
        be.dispatch_bound(enc, &fill, &p, &binds, grid(slots.div_ceil(64) as u64));
    }
    Ok((tiles, toff))
}

/// Whether every buffer of a tensor-form call (sizes in words) fits one storage binding.
fn fits(be: &WgpuBackend, words: &[usize]) -> bool {
    words.iter().all(|&w| (w as u64).saturating_mul(4) <= be.max_binding())
}

impl WgpuBackend {
    /// `attn_fwd` on tensors (checked by `check::attn_dev`): tiles from the staged offsets, then
    /// the slice form's three passes on the resident operands.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attn_fwd_tensors(
        &self,
        heads: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        offs: &OffsetsSlot,
        staged: &Staged,
    ) -> Result<AttnDev> {
        let (b_n, n, d) = (offs.segments, offs.rows, q.cols);
        let s = Shape::new(heads, d, 2);
        let h = s.h;
        let slots = tile_slots(b_n, n, s.ch);
        let scratch = slots * h * s.rec + 2 * b_n * h;
        if b_n > DEV_MAX_SAMPLES || !fits(self, &[q.len(), k.len(), v.len(), n * h, scratch, 3 * slots, staged.tensor.len()]) {
            return host_tensor::attn_fwd(self, heads, q, k, v, bias, offs, staged);
        }
        if b_n == 0 {
            return Ok(AttnDev {
                p: self.tensor_zeroed("attn p", n, h, Elem::F32)?,
                pooled: self.tensor_zeroed("attn pooled", 0, d, Elem::F32)?,
            });
        }
        let (qb, kb, vb, bb) = (self.tensor_storage(q)?, self.tensor_storage(k)?, self.tensor_storage(v)?, self.tensor_storage(bias)?);
        let sb = self.tensor_storage(&staged.tensor)?;
        self.scoped("attn_fwd_dev", || {
            let mut enc = self.encoder();
            let (tb, ob) = encode_tiles(self, &mut enc, sb, offs, s.ch)?;
            let unused_r = self.zeroed("unused", 4);
            let unused_w = self.zeroed("unused", 4);
            let pb = self.pooled_output("attn p", n * h);
            let pooled = self.pooled_output("attn pooled", b_n * d);
            let scr = self.pooled_output("attn scratch", scratch);
            let pu = self.uniform(&s.params(slots, b_n));
            let bufs = [qb, kb, vb, bb, &tb, &ob, &unused_r, &pb, &pooled, &unused_w, &unused_w, &unused_w, &scr];
            run(self, &mut enc, "attn_fwd_tile", &pu, &bufs, slots * h)?;
            run(self, &mut enc, "attn_fwd_combine", &pu, &bufs, b_n * h)?;
            run(self, &mut enc, "attn_fwd_norm", &pu, &bufs, slots * h)?;
            self.queue.submit([enc.finish()]);
            Ok(AttnDev {
                p: self.tensor_of("attn p", n, h, Elem::F32, pb),
                pooled: self.tensor_of("attn pooled", b_n, d, Elem::F32, pooled),
            })
        })
    }

    /// `attn_bwd` on tensors (checked as `DeviceOps::attn_bwd_dev` does): tiles from the staged
    /// offsets, then the slice form's four passes on the resident operands.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attn_bwd_tensors(
        &self,
        heads: usize,
        (q, k, v, _bias): (&Tensor, &Tensor, &Tensor, &Tensor),
        p: &Tensor,
        dpooled: &Tensor,
        offs: &OffsetsSlot,
        staged: &Staged,
    ) -> Result<AttnGradsDev> {
        let (b_n, n, d) = (offs.segments, offs.rows, q.cols);
        let s = Shape::new(heads, d, 1);
        let h = s.h;
        let slots = tile_slots(b_n, n, s.ch);
        let scratch = slots * h * s.rec + b_n * h;
        if b_n > DEV_MAX_SAMPLES || !fits(self, &[q.len(), k.len(), v.len(), n * h, scratch, 3 * slots, staged.tensor.len()]) {
            return host_tensor::attn_bwd(self, heads, (q, k, v, _bias), p, dpooled, offs, staged);
        }
        let zero = |name, rows, cols| self.tensor_zeroed(name, rows, cols, Elem::F32);
        if b_n == 0 {
            return Ok(AttnGradsDev {
                dq: zero("attn dq", 0, d)?,
                dk: zero("attn dk", n, d)?,
                dv: zero("attn dv", n, d)?,
                dbias: zero("attn dbias", n, h)?,
            });
        }
        let (qb, kb, vb) = (self.tensor_storage(q)?, self.tensor_storage(k)?, self.tensor_storage(v)?);
        let (pb, dpb, sb) = (self.tensor_storage(p)?, self.tensor_storage(dpooled)?, self.tensor_storage(&staged.tensor)?);
        self.scoped("attn_bwd_dev", || {
            let mut enc = self.encoder();
            let (tb, ob) = encode_tiles(self, &mut enc, sb, offs, s.ch)?;
            let unused_r = self.zeroed("unused", 4);
            let dq = self.pooled_output("attn dq", b_n * d);
            let dk = self.pooled_output("attn dk", n * d);
            let dv = self.pooled_output("attn dv", n * d);
            let dbias = self.pooled_output("attn dbias", n * h);
            let scr = self.pooled_output("attn scratch", scratch);
            let pu = self.uniform(&s.params(slots, b_n));
            let bufs = [qb, kb, vb, &unused_r, &tb, &ob, dpb, pb, &dq, &dk, &dv, &dbias, &scr];
            run(self, &mut enc, "attn_bwd_tile", &pu, &bufs, slots * h)?;
            run(self, &mut enc, "attn_bwd_combine", &pu, &bufs, b_n * h)?;
            run(self, &mut enc, "attn_bwd_rows", &pu, &bufs, slots * h)?;
            run(self, &mut enc, "attn_bwd_dq", &pu, &bufs, b_n * h)?;
            self.queue.submit([enc.finish()]);
            Ok(AttnGradsDev {
                dq: self.tensor_of("attn dq", b_n, d, Elem::F32, dq),
                dk: self.tensor_of("attn dk", n, d, Elem::F32, dk),
                dv: self.tensor_of("attn dv", n, d, Elem::F32, dv),
                dbias: self.tensor_of("attn dbias", n, h, Elem::F32, dbias),
            })
        })
    }
}
