//! The training step's sequence ops on device tensors (math in `cpu::gsu_train`,
//! `cpu::twin_rows`, `cpu::cross_bias` and `cpu::segment_sum::segment_sum_mapped`):
//!
//! - `cross_tables_fwd` / `cross_bias_bwd` (shaders/cross_bias.wgsl): the cross tables and
//!   their gradients, each computed into one packed buffer, then copied on the device into the
//!   result tensors.
//! - `gsu_train_fwd` + `gsu_train_select_fwd` (shaders/gsu_train.wgsl): scores and row-map tail, then
//!   the per-sample top-K and compaction (finalists, row map).
//! - `twin_rows_fwd`, `twin_rows_value_fwd` (shaders/twin_rows.wgsl): the attention rows.
//! - `segment_sum_mapped_fwd` (shaders/segment_sum.wgsl): segment sums through the row map, in
//!   passes as `segment_sum_dev`.
//!
//! The staged batch is bound whole (its sections' word offsets travel in the parameters) or, for
//! the offsets and positions of the cross and segment ops, at the sections' 256-byte aligned
//! offsets. Nothing is uploaded but parameter blocks and nothing is downloaded. An operand larger
//! than one storage binding, a cross width past the per-invocation loop budget or (the GSU) more
//! than `GSU_MAX_LONG` long positions take the trait's host form.

use std::ops::Range;

use super::{cross_bias, grid, segment_sum, WgpuBackend, B};
use crate::backend::train_rows::CrossGradLayout;
use crate::backend::{
    host_train, CrossGradsDev, CrossParams, Elem, FeatTables, GsuTrainIn, GsuTrainOut, IdSlot, OffsetsSlot, Staged, Tensor, TwinRowsSlot,
};
use crate::error::Result;

const GSU_SRC: &str = include_str!("../../../shaders/gsu_train.wgsl");
/// qbar, the four tables, cb, staged (read); scores, sel, row map (read-write).
const GSU_BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::W, B::W, B::W];
const ROWS_SRC: &str = include_str!("../../../shaders/twin_rows.wgsl");
/// sel, staged, the four tables, cb / cv (read); x_h / v, bias (read-write).
const ROWS_BINDS: &[B] = &[B::R, B::R, B::R, B::R, B::R, B::R, B::R, B::W, B::W];
/// src, perm, offsets (read), out (read-write), row map (read).
const MAPPED_BINDS: &[B] = &[B::R, B::R, B::R, B::W, B::R];
/// Long positions `gsu_train_select_fwd` takes on the device: one workgroup walks a sample in about
/// 17 loop trips per 256 positions, within llvmpipe's 65,535 per invocation.
const GSU_MAX_LONG: usize = 900_000;

/// Mirrors `Params` in shaders/gsu_train.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GsuParams {
    n_samples: u32,
    n_long: u32,
    map_len: u32,
    n_fin: u32,
    k: u32,
    width: u32,
    id: u32,
    small: u32,
    heads: u32,
    n_cross: u32,
    bias: u32,
    q_scale: f32,
    inv_h: f32,
    feat_off: u32,
    cross_off: u32,
    logn_off: u32,
    long_off: u32,
    fin_off: u32,
    pad0: u32,
    pad1: u32,
}

/// Mirrors `Params` in shaders/twin_rows.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RowsParams {
    n_att: u32,
    n_fin: u32,
    n_long: u32,
    width: u32,
    id: u32,
    small: u32,
    heads: u32,
    n_cross: u32,
    cols: u32,
    feat_off: u32,
    cross_off: u32,
    logn_off: u32,
}

/// Mirrors `Params` in shaders/segment_sum.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SegParams {
    n_seg: u32,
    width: u32,
    start: u32,
    chunk: u32,
    n_groups: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

/// A staged section bound in place (callers bind only non-empty sections).
fn section<'a>(buf: &'a wgpu::Buffer, r: &Range<usize>) -> wgpu::BufferBinding<'a> {
    wgpu::BufferBinding { buffer: buf, offset: (r.start * 4) as u64, size: wgpu::BufferSize::new((r.len().max(1) * 4) as u64) }
}

impl WgpuBackend {
    /// Whether every buffer (sizes in words) fits one storage binding.
    fn all_fit(&self, words: &[usize]) -> bool {
        words.iter().all(|&w| (w as u64).saturating_mul(4) <= self.max_binding())
    }

    /// Copy the `rows * cols` words at word `at` of `src` into a new buffer, wrapped as `[rows, cols]`.
    fn carve(&self, enc: &mut wgpu::CommandEncoder, src: &wgpu::Buffer, at: usize, name: &'static str, rows: usize, cols: usize) -> Tensor {
        let dst = self.pooled_output(name, rows * cols);
        if rows * cols > 0 {
            enc.copy_buffer_to_buffer(src, (at * 4) as u64, &dst, 0, (rows * cols * 4) as u64);
        }
        self.tensor_of(name, rows, cols, Elem::F32, dst)
    }

    /// `DeviceOps::cross_tables_dev` (checked by `CrossParams::check`, which returned `d`).
    pub(crate) fn cross_tables_tensors(&self, p: &CrossParams<'_>, d: usize, staged: &Staged) -> Result<(Tensor, Tensor)> {
        let (h, jn, c, v) = (p.dims.heads, p.dims.n_cross, p.dims.dim, p.offsets.rows);
        let total = v * h + v * d;
        let words = [p.e.len(), p.w_c.len(), p.beta.len(), p.w_vc.len(), total, staged.tensor.len()];
        if !self.all_fit(&words) || jn + c + 1 > cross_bias::BWD_BUDGET {
            return host_train::cross_tables(self, p, d, staged);
        }
        let (eb, wcb, bb, wvb) =
            (self.tensor_storage(p.e)?, self.tensor_storage(p.w_c)?, self.tensor_storage(p.beta)?, self.tensor_storage(p.w_vc)?);
        let sb = self.tensor_storage(&staged.tensor)?;
        self.scoped("cross_tables_dev", || {
            let out = self.pooled_output("cross tables", total);
            let unused = self.zeroed("unused", 4);
            let mut enc = self.encoder();
            if total > 0 {
                let pipe = self.pipe("cross_bias", cross_bias::SRC, "cross_tables_fwd", 0, cross_bias::BINDS_BWD)?;
                let pu = self.uniform(&cross_bias::Params::bwd(&CrossGradLayout { d, ..CrossGradLayout::of_params(p) }, 0, 0));
                let binds = [
                    unused.as_entire_buffer_binding(),
                    section(sb, &p.offsets.range),
                    unused.as_entire_buffer_binding(),
                    out.as_entire_buffer_binding(),
                    eb.as_entire_buffer_binding(),
                    wcb.as_entire_buffer_binding(),
                    bb.as_entire_buffer_binding(),
                    wvb.as_entire_buffer_binding(),
                ];
                self.dispatch_bound(&mut enc, &pipe, &pu, &binds, grid((total as u64).div_ceil(64)));
            }
            let cb = self.carve(&mut enc, &out, 0, "cross bias table", v, h);
            let cv = self.carve(&mut enc, &out, v * h, "cross value table", v, d);
            self.queue.submit([enc.finish()]);
            Ok((cb, cv))
        })
    }

    /// `DeviceOps::cross_tables_bwd_dev` (checked there): the slice form's passes on the resident
    /// operands. The longest feature is at most `ΣV` rows, so `max(ΣV, D + h)` steps bound every
    /// sum (a pass past an element's end leaves it alone).
    pub(crate) fn cross_tables_bwd_tensors(
        &self,
        p: &CrossParams<'_>,
        dcb: &Tensor,
        dcv: &Tensor,
        staged: &Staged,
    ) -> Result<CrossGradsDev> {
        let lay = CrossGradLayout::of_params(p);
        let (h, jn, c, v, d) = (p.dims.heads, p.dims.n_cross, p.dims.dim, lay.v, lay.d);
        let total = lay.total();
        let words = [dcb.len(), dcv.len(), p.e.len(), p.w_c.len(), p.beta.len(), p.w_vc.len(), total, staged.tensor.len()];
        if !self.all_fit(&words) || jn + c + 1 > cross_bias::BWD_BUDGET {
            return host_train::cross_tables_bwd(self, p, dcb, dcv, staged);
        }
        let steps = (cross_bias::BWD_BUDGET - jn) / (c + 1);
        let passes = v.max(d + h).div_ceil(steps).max(1);
        let (dcbb, dcvb, sb) = (self.tensor_storage(dcb)?, self.tensor_storage(dcv)?, self.tensor_storage(&staged.tensor)?);
        let (eb, wcb, bb, wvb) =
            (self.tensor_storage(p.e)?, self.tensor_storage(p.w_c)?, self.tensor_storage(p.beta)?, self.tensor_storage(p.w_vc)?);
        self.scoped("cross_tables_bwd_dev", || {
            let out = self.pooled_output("cross grads", total);
            let mut enc = self.encoder();
            if total > 0 {
                let pipe = self.pipe("cross_bias", cross_bias::SRC, "cross_bias_bwd", 0, cross_bias::BINDS_BWD)?;
                for pass in 0..passes {
                    let pu = self.uniform(&cross_bias::Params::bwd(&lay, pass * steps, (pass + 1) * steps));
                    let binds = [
                        dcbb.as_entire_buffer_binding(),
                        section(sb, &p.offsets.range),
                        dcvb.as_entire_buffer_binding(),
                        out.as_entire_buffer_binding(),
                        eb.as_entire_buffer_binding(),
                        wcb.as_entire_buffer_binding(),
                        bb.as_entire_buffer_binding(),
                        wvb.as_entire_buffer_binding(),
                    ];
                    self.dispatch_bound(&mut enc, &pipe, &pu, &binds, grid((total as u64).div_ceil(64)));
                }
            }
            let [s0, s1, s2, s3] = lay.starts();
            let g = CrossGradsDev {
                de: self.carve(&mut enc, &out, s0, "cross e grad", p.e.rows, p.e.cols),
                dw_c: self.carve(&mut enc, &out, s1, "cross w_c grad", p.w_c.rows, p.w_c.cols),
                dbeta: self.carve(&mut enc, &out, s2, "cross beta grad", p.beta.rows, p.beta.cols),
                dw_vc: self.carve(&mut enc, &out, s3, "cross w_vc grad", p.w_vc.rows, p.w_vc.cols),
            };
            self.queue.submit([enc.finish()]);
            Ok(g)
        })
    }

    /// The four feature tables' buffers, or `None` when one does not fit a binding.
    fn feat_buffers<'a>(&self, f: &FeatTables<'a>) -> Result<Option<[&'a wgpu::Buffer; 4]>> {
        if !self.all_fit(&f.tables.map(|t| t.len())) {
            return Ok(None);
        }
        let [a, b, c, d] = f.tables;
        Ok(Some([self.tensor_storage(a)?, self.tensor_storage(b)?, self.tensor_storage(c)?, self.tensor_storage(d)?]))
    }

    /// `DeviceOps::gsu_train_dev` (checked by `train_rows::check_gsu`).
    pub(crate) fn gsu_train_tensors(&self, x: &GsuTrainIn<'_>, slot: &TwinRowsSlot, staged: &Staged) -> Result<GsuTrainOut> {
        let (b_n, n_long, n_fin, map_len) = (slot.samples, slot.n_long, slot.n_fin, slot.map_len());
        let cb_words = if x.bias { x.cb.len() } else { 0 };
        let words = [x.qbar.len(), cb_words, staged.tensor.len(), n_long, n_fin, map_len];
        let tables = self.feat_buffers(&x.feats)?;
        let Some(tables) = tables.filter(|_| n_long <= GSU_MAX_LONG && self.all_fit(&words)) else {
            return host_train::gsu_train(self, x, slot, staged);
        };
        let (qb, sb) = (self.tensor_storage(x.qbar)?, self.tensor_storage(&staged.tensor)?);
        let cbb = if x.bias { Some(self.tensor_storage(x.cb)?) } else { None };
        let dims = x.feats.dims;
        let prm = GsuParams {
            n_samples: b_n as u32,
            n_long: n_long as u32,
            map_len: map_len as u32,
            n_fin: n_fin as u32,
            k: slot.k.min(u32::MAX as usize) as u32,
            width: dims.width() as u32,
            id: dims.id as u32,
            small: dims.small as u32,
            heads: x.heads as u32,
            n_cross: slot.bounds.n_cross as u32,
            bias: x.bias as u32,
            q_scale: x.q_scale,
            inv_h: 1.0 / x.heads as f32,
            feat_off: slot.feat.start as u32,
            cross_off: slot.cross.start as u32,
            logn_off: slot.log_n.start as u32,
            long_off: slot.long_offsets.start as u32,
            fin_off: slot.fin_offsets.start as u32,
            pad0: 0,
            pad1: 0,
        };
        self.scoped("gsu_train_dev", || {
            let scores = self.pooled_output("gsu scores", n_long);
            let sel = self.pooled_output("gsu finalists", n_fin);
            let map = self.pooled_output("gsu row map", map_len);
            let unused = self.zeroed("unused cb", 4);
            let cbb = cbb.unwrap_or(&unused);
            let pu = self.uniform(&prm);
            let bufs = [qb, tables[0], tables[1], tables[2], tables[3], cbb, sb, &scores, &sel, &map];
            let mut enc = self.encoder();
            if map_len > 0 {
                let pipe = self.pipe("gsu_train", GSU_SRC, "gsu_train_fwd", 0, GSU_BINDS)?;
                self.dispatch(&mut enc, &pipe, &pu, &bufs, grid((map_len as u64).div_ceil(64)));
            }
            if n_long > 0 {
                let pipe = self.pipe("gsu_train", GSU_SRC, "gsu_train_select_fwd", 0, GSU_BINDS)?;
                self.dispatch(&mut enc, &pipe, &pu, &bufs, grid(b_n as u64));
            }
            self.queue.submit([enc.finish()]);
            Ok(GsuTrainOut {
                scores: self.tensor_of("gsu scores", n_long, 1, Elem::F32, scores),
                sel: self.tensor_of("gsu finalists", n_fin, 1, Elem::U32, sel),
                map: self.tensor_of("gsu row map", map_len, 1, Elem::U32, map),
                staging: slot.staging,
            })
        })
    }

    fn rows_params(&self, slot: &TwinRowsSlot, f: &FeatTables<'_>, heads: usize, cols: usize) -> RowsParams {
        RowsParams {
            n_att: slot.n_att() as u32,
            n_fin: slot.n_fin as u32,
            n_long: slot.n_long as u32,
            width: f.dims.width() as u32,
            id: f.dims.id as u32,
            small: f.dims.small as u32,
            heads: heads as u32,
            n_cross: slot.bounds.n_cross as u32,
            cols: cols as u32,
            feat_off: slot.feat.start as u32,
            cross_off: slot.cross.start as u32,
            logn_off: slot.log_n.start as u32,
        }
    }

    /// `DeviceOps::twin_rows_dev` (checked by `train_rows::check_rows`).
    pub(crate) fn twin_rows_tensors(
        &self,
        feats: &FeatTables<'_>,
        cb: &Tensor,
        heads: usize,
        gsu: &GsuTrainOut,
        slot: &TwinRowsSlot,
        staged: &Staged,
    ) -> Result<(Tensor, Tensor)> {
        let (n, hd) = (slot.n_att(), feats.dims.width());
        let tables = self.feat_buffers(feats)?;
        let words = [cb.len(), staged.tensor.len(), gsu.sel.len(), n * hd, n * heads];
        let Some(tables) = tables.filter(|_| self.all_fit(&words)) else {
            return host_train::twin_rows(self, feats, cb, heads, gsu, slot, staged);
        };
        let (selb, sb, cbb) = (self.tensor_storage(&gsu.sel)?, self.tensor_storage(&staged.tensor)?, self.tensor_storage(cb)?);
        self.scoped("twin_rows_dev", || {
            let xb = self.pooled_output("attention rows x_h", n * hd);
            let bias = self.pooled_output("attention bias", n * heads);
            let total = n * (hd + heads);
            if total > 0 {
                let pipe = self.pipe("twin_rows", ROWS_SRC, "twin_rows_fwd", 0, ROWS_BINDS)?;
                let pu = self.uniform(&self.rows_params(slot, feats, heads, 0));
                let mut enc = self.encoder();
                let bufs = [selb, sb, tables[0], tables[1], tables[2], tables[3], cbb, &xb, &bias];
                self.dispatch(&mut enc, &pipe, &pu, &bufs, grid((total as u64).div_ceil(64)));
                self.queue.submit([enc.finish()]);
            }
            Ok((self.tensor_of("attention rows x_h", n, hd, Elem::F32, xb), self.tensor_of("attention bias", n, heads, Elem::F32, bias)))
        })
    }

    /// `DeviceOps::twin_rows_value_dev` (checked by `train_rows::check_values`).
    pub(crate) fn twin_rows_value_tensors(
        &self,
        v: &Tensor,
        cv: &Tensor,
        gsu: &GsuTrainOut,
        slot: &TwinRowsSlot,
        staged: &Staged,
    ) -> Result<()> {
        if !self.all_fit(&[v.len(), cv.len(), staged.tensor.len(), gsu.sel.len()]) {
            return host_train::twin_rows_value(self, v, cv, gsu, slot, staged);
        }
        if v.is_empty() {
            return Ok(());
        }
        let (vb, cvb) = (self.tensor_storage(v)?, self.tensor_storage(cv)?);
        let (selb, sb) = (self.tensor_storage(&gsu.sel)?, self.tensor_storage(&staged.tensor)?);
        self.scoped("twin_rows_value_dev", || {
            let pipe = self.pipe("twin_rows", ROWS_SRC, "twin_rows_value_fwd", 0, ROWS_BINDS)?;
            let (un_r, un_w) = (self.zeroed("unused", 4), self.zeroed("unused", 4));
            // This entry reads no feature dims, heads or log_n.
            let pu = self.uniform(&RowsParams {
                n_att: slot.n_att() as u32,
                n_fin: slot.n_fin as u32,
                n_long: slot.n_long as u32,
                width: 0,
                id: 0,
                small: 0,
                heads: 0,
                n_cross: slot.bounds.n_cross as u32,
                cols: v.cols as u32,
                feat_off: 0,
                cross_off: slot.cross.start as u32,
                logn_off: 0,
            });
            let mut enc = self.encoder();
            let bufs = [selb, sb, &un_r, &un_r, &un_r, &un_r, cvb, vb, &un_w];
            self.dispatch(&mut enc, &pipe, &pu, &bufs, grid((v.len() as u64).div_ceil(64)));
            self.queue.submit([enc.finish()]);
            Ok(())
        })
    }

    /// `DeviceOps::segment_sum_mapped_dev` (checked by `train_rows::check_mapped`): as
    /// `segment_sum_dev`, every position sent through the GSU's row map.
    pub(crate) fn segment_sum_mapped_tensors(
        &self,
        src: &Tensor,
        perm: &IdSlot,
        segs: &OffsetsSlot,
        gsu: &GsuTrainOut,
        staged: &Staged,
    ) -> Result<Tensor> {
        let (s_n, width) = (segs.segments, src.cols);
        if !self.all_fit(&[src.len(), s_n * width, staged.tensor.len(), gsu.map.len()]) {
            return host_train::segment_sum_mapped(self, src, perm, segs, gsu, staged);
        }
        if perm.is_empty() {
            // Every segment is empty: zeros, and no section to bind.
            return self.tensor_zeroed("segment sum (mapped)", s_n, width, Elem::F32);
        }
        let (srcb, sb, mb) = (self.tensor_storage(src)?, self.tensor_storage(&staged.tensor)?, self.tensor_storage(&gsu.map)?);
        self.scoped("segment_sum_mapped_dev", || {
            let total = s_n * width;
            let outb = self.pooled_output("segment sums (mapped)", total);
            if total > 0 {
                let n_groups = total.div_ceil(64);
                let pipe = self.pipe("segment_sum", segment_sum::SRC, "segment_sum_mapped_fwd", 0, MAPPED_BINDS)?;
                let mut enc = self.encoder();
                // The longest segment is at most the whole perm (a pass past a segment's end adds
                // nothing to it).
                for pass in 0..perm.len().div_ceil(segment_sum::CHUNK).max(1) {
                    let pu = self.uniform(&SegParams {
                        n_seg: s_n as u32,
                        width: width as u32,
                        start: (pass * segment_sum::CHUNK) as u32,
                        chunk: segment_sum::CHUNK as u32,
                        n_groups: n_groups as u32,
                        pad0: 0,
                        pad1: 0,
                        pad2: 0,
                    });
                    let binds = [
                        srcb.as_entire_buffer_binding(),
                        section(sb, &perm.range),
                        section(sb, &segs.range),
                        outb.as_entire_buffer_binding(),
                        mb.as_entire_buffer_binding(),
                    ];
                    self.dispatch_bound(&mut enc, &pipe, &pu, &binds, grid(n_groups as u64));
                }
                self.queue.submit([enc.finish()]);
            }
            Ok(self.tensor_of("segment sum (mapped)", s_n, width, Elem::F32, outb))
        })
    }
}
