//! `segment_sum` (shaders/segment_sum.wgsl): deterministic scatter-add, one invocation per
//! output element adding its segment's source rows in list order (bit-identical to the CPU).
//!
//! - Segments are processed in groups whose output, perm slice and (when `src` is larger than one
//!   storage binding) host-gathered source rows each fit one binding; one segment too large for a
//!   binding is `Error::TooLarge`.
//! - llvmpipe's 65,535-iteration loop cap: one dispatch adds at most `CHUNK` entries per segment;
//!   longer segments take more passes that continue from the stored partial sums (same additions
//!   in the same order, so still bit-identical).

use super::{grid, split_by, words_f32, Readback, WgpuBackend, B};
use crate::backend::{Elem, IdSlot, OffsetsSlot, Staged, Tensor};
use crate::error::{Error, Result};

pub(super) const SRC: &str = include_str!("../../../shaders/segment_sum.wgsl");
const BINDS: &[B] = &[B::R, B::R, B::R, B::W];
/// Entries of one segment one dispatch adds: 8 per loop trip, so 8,192 trips per invocation.
pub(super) const CHUNK: usize = 65536;

/// Mirrors `Params` in shaders/segment_sum.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_seg: u32,
    width: u32,
    start: u32,
    chunk: u32,
    n_groups: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

pub(crate) fn segment_sum(be: &WgpuBackend, src: &[f32], width: usize, perm: &[u32], seg_offsets: &[u32]) -> Result<Vec<f32>> {
    let s_n = seg_offsets.len() - 1;
    if s_n == 0 || width == 0 {
        return Ok(vec![0.0; s_n * width]);
    }
    let lim = be.max_binding();
    let row = (width * 4) as u64;
    // `src` bound whole when it fits, else each group's rows gathered on the host in list order.
    let whole = src.len() as u64 * 4 <= lim;
    let seg_len = |s: usize| (seg_offsets[s + 1] - seg_offsets[s]) as u64;
    let cost = |s: usize| row + seg_len(s) * 4 + if whole { 0 } else { seg_len(s) * row } + 4;
    let groups = split_by(s_n, lim, cost);
    for g in &groups {
        let c: u64 = g.clone().map(cost).sum();
        if c > lim {
            return Err(Error::TooLarge {
                field: "segment_sum segment bytes (one segment must fit one storage binding)",
                value: c,
                limit: lim,
            });
        }
    }
    let mut out = vec![0f32; s_n * width];
    be.scoped("segment_sum", || {
        let src_whole = if whole { Some(be.upload("src", src)) } else { None };
        for g in &groups {
            let (i0, i1) = (seg_offsets[g.start] as usize, seg_offsets[g.end] as usize);
            let offs: Vec<u32> = seg_offsets[g.start..=g.end].iter().map(|&o| o - i0 as u32).collect();
            let (srcb, pl) = match &src_whole {
                Some(_) => (None, perm[i0..i1].to_vec()),
                None => {
                    let mut rows = Vec::with_capacity((i1 - i0) * width);
                    for &r in &perm[i0..i1] {
                        rows.extend_from_slice(&src[r as usize * width..(r as usize + 1) * width]);
                    }
                    (Some(be.upload("src rows", &rows)), (0..(i1 - i0) as u32).collect())
                }
            };
            let sb = src_whole.as_ref().or(srcb.as_ref()).expect("a source buffer");
            let pb = be.upload("perm", &pl);
            let ob = be.upload("seg_offsets", &offs);
            let total = g.len() * width;
            let outb = be.output("segment sums", total);
            let max_len = g.clone().map(seg_len).max().unwrap_or(0) as usize;
            let n_groups = total.div_ceil(64);
            let pipe = be.pipe("segment_sum", SRC, "segment_sum_fwd", 0, BINDS)?;
            let mut enc = be.encoder();
            for pass in 0..max_len.div_ceil(CHUNK).max(1) {
                let p = be.uniform(&Params {
                    n_seg: g.len() as u32,
                    width: width as u32,
                    start: (pass * CHUNK) as u32,
                    chunk: CHUNK as u32,
                    n_groups: n_groups as u32,
                    pad0: 0,
                    pad1: 0,
                    pad2: 0,
                });
                be.dispatch(&mut enc, &pipe, &p, &[sb, &pb, &ob, &outb], grid(n_groups as u64));
            }
            let bytes = be.finish("segment_sum", enc, &[Readback { buf: &outb, bytes: (total * 4) as u64 }])?;
            out[g.start * width..g.end * width].copy_from_slice(&words_f32(&bytes[0]));
        }
        Ok(())
    })?;
    Ok(out)
}

impl WgpuBackend {
    /// `segment_sum` on tensors (checked by `check::segment_sum_dev`): one group whose source,
    /// perm, offsets and output each fit a binding runs on the device, perm and offsets bound at
    /// their staged offsets (the staged offsets start at 0, as the shader expects); anything
    /// larger takes the host form.
    pub(crate) fn segment_sum_dev(&self, src: &Tensor, perm: &IdSlot, segs: &OffsetsSlot, staged: &Staged) -> Result<Tensor> {
        let (s_n, width) = (segs.segments, src.cols);
        let lim = self.max_binding();
        if [src.len(), s_n * width, staged.tensor.len()].iter().any(|&w| (w * 4) as u64 > lim) {
            return crate::backend::host_tensor::segment_sum(self, src, perm, segs, staged);
        }
        if perm.is_empty() {
            // Every segment is empty: zeros, and no section to bind.
            return self.tensor_zeroed("segment sum", s_n, width, Elem::F32);
        }
        let (srcb, sb) = (self.tensor_storage(src)?, self.tensor_storage(&staged.tensor)?);
        self.scoped("segment_sum_dev", || {
            let total = s_n * width;
            let outb = self.pooled_output("segment sums", total);
            if total > 0 {
                // The longest segment is at most the whole perm: enough passes of CHUNK entries
                // (a pass past a segment's end adds nothing to it).
                let max_len = perm.len();
                let n_groups = total.div_ceil(64);
                let pipe = self.pipe("segment_sum", SRC, "segment_sum_fwd", 0, BINDS)?;
                let mut enc = self.encoder();
                let bind = |r: &std::ops::Range<usize>| wgpu::BufferBinding {
                    buffer: sb,
                    offset: (r.start * 4) as u64,
                    size: wgpu::BufferSize::new((r.len().max(1) * 4) as u64),
                };
                for pass in 0..max_len.div_ceil(CHUNK).max(1) {
                    let p = self.uniform(&Params {
                        n_seg: s_n as u32,
                        width: width as u32,
                        start: (pass * CHUNK) as u32,
                        chunk: CHUNK as u32,
                        n_groups: n_groups as u32,
                        pad0: 0,
                        pad1: 0,
                        pad2: 0,
                    });
                    let binds = [srcb.as_entire_buffer_binding(), bind(&perm.range), bind(&segs.range), outb.as_entire_buffer_binding()];
                    self.dispatch_bound(&mut enc, &pipe, &p, &binds, grid(n_groups as u64));
                }
                self.queue.submit([enc.finish()]);
            }
            Ok(self.tensor_of("segment sum", s_n, width, Elem::F32, outb))
        })
    }
}
