//! Device tensors on wgpu: buffers uploaded once (`upload`, counted), read back in one staging
//! copy (`finish`), and the serving network's ops encoded on them: `online_dev` (the fused online
//! path on sections of the staged batch, copied device-side into its bindings), `copy_rows` and
//! `bias_act` (shaders bound at the staged offsets), `gemm_dev` (shaders/gemm.wgsl).
//!
//! Where the device-resident form cannot run (a table or operand larger than one storage
//! binding, or a batch the online path would cut into request groups) the op falls back to the
//! trait's host implementation, which is correct and makes the transfers it always made.

use std::any::Any;
use std::ops::Range;
use std::sync::Arc;

use super::esu::{self, Seq};
use super::pool::PoolBuf;
use super::{cross_bias, gemm, grid, gsu_topk, log_size_bias, split, Readback, WgpuBackend, B};
use crate::backend::cpu::copy_rows::SrcCols;
use crate::backend::{
    host_tensor, Act, AdamStep, AttnDev, AttnGradsDev, Backend, BackendKind, BceDev, CrossGradsDev, CrossParams, DeviceOps, Elem, F32Slot,
    FeatTables, GemmKind, GsuTrainIn, GsuTrainOut, IdSlot, OffsetsSlot, OnlineBatch, OnlineDev, OnlineSlot, OnlineTables, Rows, Staged,
    Staging, Tensor, TwinRowsSlot,
};
use crate::error::Result;

const COPY_SRC: &str = include_str!("../../../shaders/copy_rows.wgsl");
const COPY_BINDS: &[B] = &[B::W, B::R, B::R, B::R];
const OPTIM_SRC: &str = include_str!("../../../shaders/optim.wgsl");
/// w (rw), g (r), s1 (rw), s2 (rw), rows (r).
const OPTIM_BINDS: &[B] = &[B::W, B::R, B::W, B::W, B::R];
const BIAS_SRC: &str = include_str!("../../../shaders/bias_act.wgsl");
const BIAS_BINDS: &[B] = &[B::W, B::R];

/// Mirrors `Params` in shaders/copy_rows.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CopyParams {
    n: u32,
    width: u32,
    dst_cols: u32,
    dst_col: u32,
    has_dst_ids: u32,
    has_src_ids: u32,
    src_cols: u32,
    src_col: u32,
}

/// Mirrors `Params` in shaders/bias_act.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BiasParams {
    m: u32,
    n: u32,
    act: u32,
    pad0: u32,
}

/// Mirrors `Params` in shaders/optim.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct OptimParams {
    n: u32,
    cols: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bc1: f32,
    bc2: f32,
}

/// A tensor's device buffer (at least 16 bytes), back to the backend's pool when dropped.
pub(crate) struct WgpuMem(pub PoolBuf);

/// wgpu's own sections of a staged online batch: the per-candidate info and the NaN flag's
/// initial value.
pub(crate) struct NativeOnline {
    info: Range<usize>,
    nan: Range<usize>,
}

fn bytes(r: &Range<usize>) -> (u64, u64) {
    ((r.start * 4) as u64, (r.len() * 4) as u64)
}

impl WgpuBackend {
    fn mem<'a>(&self, t: &'a Tensor) -> Result<&'a wgpu::Buffer> {
        t.storage::<WgpuMem>(BackendKind::Wgpu, self.id).map(|m| &*m.0)
    }

    pub(crate) fn tensor_storage<'a>(&self, t: &'a Tensor) -> Result<&'a wgpu::Buffer> {
        self.mem(t)
    }

    pub(crate) fn tensor_of(&self, name: &'static str, rows: usize, cols: usize, elem: Elem, buf: PoolBuf) -> Tensor {
        self.wrap(name, rows, cols, elem, buf)
    }

    fn wrap(&self, name: &'static str, rows: usize, cols: usize, elem: Elem, buf: PoolBuf) -> Tensor {
        Tensor { name, rows, cols, elem, backend: BackendKind::Wgpu, device_id: self.id, inner: Arc::new(WgpuMem(buf)) }
    }

    pub(crate) fn tensor_upload(&self, name: &'static str, rows: usize, cols: usize, elem: Elem, data: &[u32]) -> Result<Tensor> {
        let b = self.scoped("tensor upload", || Ok(self.pooled_upload(name, data)))?;
        Ok(self.wrap(name, rows, cols, elem, b))
    }

    /// A pooled tensor of zeros (a reused buffer is cleared on the device).
    pub(crate) fn tensor_zeroed(&self, name: &'static str, rows: usize, cols: usize, elem: Elem) -> Result<Tensor> {
        let b = self.scoped("tensor zeros", || Ok(self.pooled_zeroed(name, rows * cols)))?;
        Ok(self.wrap(name, rows, cols, elem, b))
    }

    pub(crate) fn tensor_overwrite(&self, t: &Tensor, data: &[u32]) -> Result<()> {
        let b = self.mem(t)?;
        if !data.is_empty() {
            self.copies.up(data.len() * 4);
            self.queue.write_buffer(b, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Every tensor's words in one staging copy and one map.
    pub(crate) fn tensors_read(&self, ts: &[&Tensor]) -> Result<Vec<Vec<u32>>> {
        let bufs: Vec<&wgpu::Buffer> = ts.iter().map(|t| self.mem(t)).collect::<Result<_>>()?;
        let reads: Vec<Readback> = bufs.iter().zip(ts).map(|(b, t)| Readback { buf: b, bytes: (t.len() * 4) as u64 }).collect();
        let got = self.scoped("tensor read", || self.finish("tensor read", self.encoder(), &reads))?;
        Ok(got.iter().map(|b| super::words_u32(b)).collect())
    }

    /// Stage the candidate info and the NaN flag when the batch runs as one request group on
    /// whole tables; otherwise nothing (the op then takes the host path).
    pub(crate) fn stage_native(
        &self,
        st: &mut Staging,
        t: &OnlineTables,
        batch: &OnlineBatch,
        k: usize,
    ) -> Result<Option<Box<dyn Any + Send + Sync>>> {
        if split::needed(self, t, true)? || gsu_topk::request_groups(self, t, batch, k).len() != 1 {
            return Ok(None);
        }
        let info = st.push(&gsu_topk::cand_info(batch, 0..batch.n_requests()));
        let nan = st.push(&[u32::MAX; 4]);
        Ok(Some(Box::new(NativeOnline { info, nan })))
    }

    pub(crate) fn online_staged(&self, t: &OnlineTables, staged: &Staged, slot: &OnlineSlot) -> Result<OnlineDev> {
        let Some(nat) = slot.native.as_ref().and_then(|b| b.downcast_ref::<NativeOnline>()) else {
            return host_tensor::online_dev(self, t, staged, slot);
        };
        let sb = self.mem(&staged.tensor)?;
        let (nc, nl, k) = (slot.n_cands, slot.n_behaviours, slot.k);
        let (d, h, j) = (t.d_model(), t.heads, t.n_cross());
        let nk = nc * k;
        self.scoped("online_dev", || {
            let mut enc = self.encoder();
            // The fused path's bindings are whole buffers: copy the staged sections into them on
            // the device (no host transfer).
            // Cleared first (a pooled buffer is not zero): the words past the section stay zero.
            let mut section = |r: &Range<usize>, label: &str| -> PoolBuf {
                let b = self.pooled_zeroed_in(&mut enc, label, r.len());
                let (off, len) = bytes(r);
                if len > 0 {
                    enc.copy_buffer_to_buffer(sb, off, &b, 0, len);
                }
                b
            };
            let [_, items_r, cross_r, sizes_r, _, _] = &slot.host;
            let items = section(items_r, "items");
            let cross = section(cross_r, "cross");
            let sizes = section(sizes_r, "sizes");
            let info = section(&nat.info, "cand info");
            let nan = section(&nat.nan, "nan flag");
            let cb = self.pooled_output("cross bias", nl * h);
            cross_bias::encode_gather_sum(self, &mut enc, &t.cross_bias, &cross, nl, j, &cb)?;
            let bias = self.pooled_output("bias", nl * h);
            log_size_bias::encode(self, &mut enc, &cb, &sizes, nl, h, &bias)?;
            // `o.nan` is a second handle of `nan`, dropped with `o` (the tensor keeps `nan`).
            let o = gsu_topk::encode(self, &mut enc, t, &info, &items, &bias, nc, k, Some((*nan).clone()))?;
            let s = Seq { info: &info, items: &items, cross: &cross, bias: &bias };
            let out = esu::encode(self, &mut enc, t, &s, &o.idx, &o.count, nc, k)?;
            let topk = self.pooled_zeroed_in(&mut enc, "online topk", 2 * nk + nc);
            for (src, at, words) in [(&o.idx, 0, nk), (&o.score, nk, nk), (&o.count, 2 * nk, nc)] {
                if words > 0 {
                    enc.copy_buffer_to_buffer(src, 0, &topk, (at * 4) as u64, (words * 4) as u64);
                }
            }
            self.queue.submit([enc.finish()]);
            Ok(OnlineDev {
                out: self.wrap("online out", nc, d, Elem::F32, PoolBuf::unpooled(out)),
                topk: self.wrap("online topk", 1, 2 * nk + nc, Elem::U32, topk),
                flag: self.wrap("online flag", 1, 1, Elem::U32, nan),
                flag_ok: u32::MAX,
            })
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_rows_dev(
        &self,
        dst: &Tensor,
        dst_col: usize,
        dst_rows: Rows<'_>,
        src: &Tensor,
        sc: SrcCols,
        src_rows: Rows<'_>,
        staged: &Staged,
        n: usize,
    ) -> Result<()> {
        let lim = self.max_binding();
        if (dst.len() * 4) as u64 > lim || (src.len() * 4) as u64 > lim || (staged.tensor.len() * 4) as u64 > lim {
            return host_tensor::copy_rows_op(self, dst, dst_col, dst_rows, src, sc, src_rows, staged, n);
        }
        if n == 0 || sc.width == 0 {
            return Ok(());
        }
        let (db, sb, ib) = (self.mem(dst)?, self.mem(src)?, self.mem(&staged.tensor)?);
        let ids = |r: Rows<'_>| -> wgpu::BufferBinding<'_> {
            match r {
                Rows::All => ib.as_entire_buffer_binding(),
                Rows::Ids(s) => {
                    let (off, len) = bytes(&s.range);
                    wgpu::BufferBinding { buffer: ib, offset: off, size: wgpu::BufferSize::new(len) }
                }
            }
        };
        let p = CopyParams {
            n: n as u32,
            width: sc.width as u32,
            dst_cols: dst.cols as u32,
            dst_col: dst_col as u32,
            has_dst_ids: matches!(dst_rows, Rows::Ids(_)) as u32,
            has_src_ids: matches!(src_rows, Rows::Ids(_)) as u32,
            src_cols: sc.stride as u32,
            src_col: sc.start as u32,
        };
        self.scoped("copy_rows", || {
            let pipe = self.pipe("copy_rows", COPY_SRC, "copy_rows_fwd_v1", 0, COPY_BINDS)?;
            let pu = self.uniform(&p);
            let mut enc = self.encoder();
            let binds = [db.as_entire_buffer_binding(), ids(dst_rows), sb.as_entire_buffer_binding(), ids(src_rows)];
            self.dispatch_bound(&mut enc, &pipe, &pu, &binds, grid(((n * sc.width) as u64).div_ceil(64)));
            self.queue.submit([enc.finish()]);
            Ok(())
        })
    }

    pub(crate) fn gemm_dev_enc(&self, kind: GemmKind, a: &Tensor, b: &Tensor, m: usize, k: usize, n: usize) -> Result<Tensor> {
        let lim = self.max_binding();
        if [a.len(), b.len(), m * n].iter().any(|&w| (w * 4) as u64 > lim) {
            return host_tensor::gemm_dev(self, kind, a, b, m, k, n);
        }
        let (ab, bb) = (self.mem(a)?, self.mem(b)?);
        self.scoped("gemm_dev", || {
            // k = 0: the product is zeros (a pooled buffer must be cleared).
            let out = if k == 0 { self.pooled_zeroed("gemm out", m * n) } else { self.pooled_output("gemm out", m * n) };
            if m > 0 && n > 0 && k > 0 {
                let mut enc = self.encoder();
                let k_stride = if kind == GemmKind::TN { 0 } else { k };
                gemm::encode(self, &mut enc, kind, [ab, bb, &out], m, n, k_stride, (0, k), true)?;
                self.queue.submit([enc.finish()]);
            }
            Ok(self.wrap("gemm out", m, n, Elem::F32, out))
        })
    }

    pub(crate) fn bias_act_bwd_dev(&self, dy: &Tensor, y: &Tensor, act: Act) -> Result<Tensor> {
        if (dy.len() * 4) as u64 > self.max_binding() {
            return host_tensor::bias_act_bwd(self, dy, y, act);
        }
        let (db_buf, yb) = (self.mem(dy)?, self.mem(y)?);
        self.scoped("bias_act_bwd", || {
            let db = self.pooled_output("bias grad", dy.cols);
            if dy.cols > 0 {
                let pipe = self.pipe("bias_act", BIAS_SRC, "bias_act_bwd_v1", 0, &[B::W, B::R, B::W])?;
                let pu = self.uniform(&BiasParams { m: dy.rows as u32, n: dy.cols as u32, act: act.code(), pad0: 0 });
                let mut enc = self.encoder();
                self.dispatch(&mut enc, &pipe, &pu, &[db_buf, yb, &db], grid((dy.cols as u64).div_ceil(64)));
                self.queue.submit([enc.finish()]);
            }
            Ok(self.wrap("bias grad", 1, dy.cols, Elem::F32, db))
        })
    }

    pub(crate) fn bias_act_dev(&self, x: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
        if (x.len() * 4) as u64 > self.max_binding() {
            return host_tensor::bias_act_op(self, x, bias, act);
        }
        if x.is_empty() {
            return Ok(());
        }
        let (xb, bb) = (self.mem(x)?, self.mem(bias)?);
        self.scoped("bias_act", || {
            let pipe = self.pipe("bias_act", BIAS_SRC, "bias_act_fwd_v1", 0, BIAS_BINDS)?;
            let pu = self.uniform(&BiasParams { m: x.rows as u32, n: x.cols as u32, act: act.code(), pad0: 0 });
            let mut enc = self.encoder();
            self.dispatch(&mut enc, &pipe, &pu, &[xb, bb], grid((x.len() as u64).div_ceil(64)));
            self.queue.submit([enc.finish()]);
            Ok(())
        })
    }

    pub(crate) fn adam_dev(&self, w: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, s: &AdamStep) -> Result<()> {
        if (w.len() * 4) as u64 > self.max_binding() {
            return host_tensor::adam(self, w, g, m, v, s);
        }
        if w.is_empty() {
            return Ok(());
        }
        let (wb, gb, mb, vb) = (self.mem(w)?, self.mem(g)?, self.mem(m)?, self.mem(v)?);
        let spare = self.zeroed("unused rows", 4);
        self.scoped("adam", || {
            let pipe = self.pipe("optim", OPTIM_SRC, "optim_adam_fwd_v1", 0, OPTIM_BINDS)?;
            let pu = self.uniform(&OptimParams {
                n: w.len() as u32,
                cols: 1,
                lr: s.lr,
                beta1: s.beta1,
                beta2: s.beta2,
                eps: s.eps,
                bc1: s.bc1,
                bc2: s.bc2,
            });
            let mut enc = self.encoder();
            self.dispatch(&mut enc, &pipe, &pu, &[wb, gb, mb, vb, &spare], grid((w.len() as u64).div_ceil(64)));
            self.queue.submit([enc.finish()]);
            Ok(())
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn adagrad_rows_dev(
        &self,
        w: &Tensor,
        acc: &Tensor,
        rows: &IdSlot,
        g: &Tensor,
        staged: &Staged,
        lr: f32,
        eps: f32,
    ) -> Result<()> {
        let lim = self.max_binding();
        if [w.len(), g.len(), staged.tensor.len()].iter().any(|&n| (n * 4) as u64 > lim) {
            return host_tensor::adagrad_rows(self, w, acc, rows, g, staged, lr, eps);
        }
        if rows.is_empty() || w.cols == 0 {
            return Ok(());
        }
        let (wb, ab, gb, ib) = (self.mem(w)?, self.mem(acc)?, self.mem(g)?, self.mem(&staged.tensor)?);
        let spare = self.zeroed("unused s2", 4);
        let (off, len) = bytes(&rows.range);
        self.scoped("adagrad", || {
            let pipe = self.pipe("optim", OPTIM_SRC, "optim_adagrad_fwd_v1", 0, OPTIM_BINDS)?;
            let n = rows.len() * w.cols;
            let pu = self.uniform(&OptimParams { n: n as u32, cols: w.cols as u32, lr, beta1: 0.0, beta2: 0.0, eps, bc1: 1.0, bc2: 1.0 });
            let mut enc = self.encoder();
            let binds = [
                wb.as_entire_buffer_binding(),
                gb.as_entire_buffer_binding(),
                ab.as_entire_buffer_binding(),
                spare.as_entire_buffer_binding(),
                wgpu::BufferBinding { buffer: ib, offset: off, size: wgpu::BufferSize::new(len) },
            ];
            self.dispatch_bound(&mut enc, &pipe, &pu, &binds, grid((n as u64).div_ceil(64)));
            self.queue.submit([enc.finish()]);
            Ok(())
        })
    }
}

impl DeviceOps for WgpuBackend {
    fn as_backend(&self) -> &dyn Backend {
        self
    }

    unsafe fn bce_dev_unchecked(&self, logits: &Tensor, labels: &F32Slot, staged: &Staged) -> Result<BceDev> {
        self.bce_dev(logits, labels, staged)
    }

    unsafe fn segment_sum_dev_unchecked(&self, src: &Tensor, perm: &IdSlot, segs: &OffsetsSlot, staged: &Staged) -> Result<Tensor> {
        self.segment_sum_dev(src, perm, segs, staged)
    }

    unsafe fn bias_act_bwd_unchecked(&self, dy: &Tensor, y: &Tensor, act: Act) -> Result<Tensor> {
        self.bias_act_bwd_dev(dy, y, act)
    }

    unsafe fn adam_unchecked(&self, w: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, s: &AdamStep) -> Result<()> {
        self.adam_dev(w, g, m, v, s)
    }

    unsafe fn adagrad_rows_unchecked(
        &self,
        w: &Tensor,
        acc: &Tensor,
        rows: &IdSlot,
        g: &Tensor,
        staged: &Staged,
        lr: f32,
        eps: f32,
    ) -> Result<()> {
        self.adagrad_rows_dev(w, acc, rows, g, staged, lr, eps)
    }

    unsafe fn tensor_from_unchecked(&self, name: &'static str, rows: usize, cols: usize, elem: Elem, data: &[u32]) -> Result<Tensor> {
        self.tensor_upload(name, rows, cols, elem, data)
    }

    fn tensor_zeros(&self, name: &'static str, rows: usize, cols: usize, elem: Elem) -> Result<Tensor> {
        self.tensor_zeroed(name, rows, cols, elem)
    }

    fn tensor_read(&self, ts: &[&Tensor]) -> Result<Vec<Vec<u32>>> {
        self.tensors_read(ts)
    }

    unsafe fn tensor_write_unchecked(&self, t: &Tensor, data: &[u32]) -> Result<()> {
        self.tensor_overwrite(t, data)
    }

    fn stage_online_native(
        &self,
        st: &mut Staging,
        t: &OnlineTables,
        batch: &OnlineBatch,
        k: usize,
    ) -> Result<Option<Box<dyn std::any::Any + Send + Sync>>> {
        self.stage_native(st, t, batch, k)
    }

    unsafe fn online_dev_unchecked(&self, t: &OnlineTables, staged: &Staged, slot: &OnlineSlot) -> Result<OnlineDev> {
        self.online_staged(t, staged, slot)
    }

    unsafe fn copy_cols_unchecked(
        &self,
        dst: &Tensor,
        dst_col: usize,
        dst_rows: Rows<'_>,
        src: &Tensor,
        sc: SrcCols,
        src_rows: Rows<'_>,
        staged: &Staged,
        n: usize,
    ) -> Result<()> {
        self.copy_rows_dev(dst, dst_col, dst_rows, src, sc, src_rows, staged, n)
    }

    unsafe fn gemm_dev_unchecked(&self, kind: GemmKind, a: &Tensor, b: &Tensor, m: usize, k: usize, n: usize) -> Result<Tensor> {
        self.gemm_dev_enc(kind, a, b, m, k, n)
    }

    unsafe fn bias_act_unchecked(&self, x: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
        self.bias_act_dev(x, bias, act)
    }

    // The attention and the training step's sequence ops: attn.rs and train_rows.rs.
    #[allow(clippy::too_many_arguments)]
    unsafe fn attn_fwd_dev_unchecked(
        &self,
        h: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        b: &Tensor,
        o: &OffsetsSlot,
        st: &Staged,
    ) -> Result<AttnDev> {
        self.attn_fwd_tensors(h, q, k, v, b, o, st)
    }

    #[allow(clippy::too_many_arguments)]
    unsafe fn attn_bwd_dev_unchecked(
        &self,
        h: usize,
        x: (&Tensor, &Tensor, &Tensor, &Tensor),
        p: &Tensor,
        dp: &Tensor,
        o: &OffsetsSlot,
        st: &Staged,
    ) -> Result<AttnGradsDev> {
        self.attn_bwd_tensors(h, x, p, dp, o, st)
    }

    unsafe fn cross_tables_dev_unchecked(&self, p: &CrossParams<'_>, d: usize, st: &Staged) -> Result<(Tensor, Tensor)> {
        self.cross_tables_tensors(p, d, st)
    }

    unsafe fn cross_tables_bwd_dev_unchecked(&self, p: &CrossParams<'_>, dcb: &Tensor, dcv: &Tensor, st: &Staged) -> Result<CrossGradsDev> {
        self.cross_tables_bwd_tensors(p, dcb, dcv, st)
    }

    unsafe fn gsu_train_dev_unchecked(&self, x: &GsuTrainIn<'_>, slot: &TwinRowsSlot, st: &Staged) -> Result<GsuTrainOut> {
        self.gsu_train_tensors(x, slot, st)
    }

    unsafe fn twin_rows_dev_unchecked(
        &self,
        f: &FeatTables<'_>,
        cb: &Tensor,
        h: usize,
        g: &GsuTrainOut,
        slot: &TwinRowsSlot,
        st: &Staged,
    ) -> Result<(Tensor, Tensor)> {
        self.twin_rows_tensors(f, cb, h, g, slot, st)
    }

    unsafe fn twin_rows_value_dev_unchecked(
        &self,
        v: &Tensor,
        cv: &Tensor,
        g: &GsuTrainOut,
        slot: &TwinRowsSlot,
        st: &Staged,
    ) -> Result<()> {
        self.twin_rows_value_tensors(v, cv, g, slot, st)
    }

    unsafe fn segment_sum_mapped_dev_unchecked(
        &self,
        src: &Tensor,
        perm: &IdSlot,
        segs: &OffsetsSlot,
        g: &GsuTrainOut,
        st: &Staged,
    ) -> Result<Tensor> {
        self.segment_sum_mapped_tensors(src, perm, segs, g, st)
    }
}
