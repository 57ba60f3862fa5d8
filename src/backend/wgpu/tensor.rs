//! Device tensors on wgpu: pooled buffers uploaded once (`upload`, counted), read back in one
//! staging copy (`finish`), and `DeviceOps` dispatching to the ops encoded on them, one file
//! each: `online_dev` (online.rs), `copy_rows` (copy_rows.rs), `bias_act` (bias_act.rs),
//! `gemm_dev` (gemm.rs), the optimisers (optim.rs), attention (attn.rs) and the training step's
//! sequence ops (train_rows.rs).
//!
//! Where the device-resident form cannot run (a table or operand larger than one storage
//! binding, or a batch the online path would cut into request groups) the op falls back to the
//! trait's host implementation, which is correct and makes the transfers it always made.

use std::ops::Range;
use std::sync::Arc;

use super::pool::PoolBuf;
use super::{Readback, WgpuBackend};
use crate::backend::cpu::copy_rows::SrcCols;
use crate::backend::{
    Act, AdamStep, AttnDev, AttnGradsDev, Backend, BackendKind, BceDev, CrossGradsDev, CrossParams, DeviceOps, Elem, F32Slot, FeatTables,
    GemmKind, GsuTrainIn, GsuTrainOut, IdSlot, OffsetsSlot, OnlineBatch, OnlineDev, OnlineSlot, OnlineTables, Rows, Staged, Staging,
    Tensor, TwinRowsSlot,
};
use crate::error::Result;

/// A tensor's device buffer (at least 16 bytes), back to the backend's pool when dropped.
pub(crate) struct WgpuMem(pub PoolBuf);

pub(super) fn bytes(r: &Range<usize>) -> (u64, u64) {
    ((r.start * 4) as u64, (r.len() * 4) as u64)
}

impl WgpuBackend {
    pub(super) fn mem<'a>(&self, t: &'a Tensor) -> Result<&'a wgpu::Buffer> {
        t.storage::<WgpuMem>(BackendKind::Wgpu, self.id).map(|m| &*m.0)
    }

    pub(crate) fn tensor_storage<'a>(&self, t: &'a Tensor) -> Result<&'a wgpu::Buffer> {
        self.mem(t)
    }

    pub(crate) fn tensor_of(&self, name: &'static str, rows: usize, cols: usize, elem: Elem, buf: PoolBuf) -> Tensor {
        self.wrap(name, rows, cols, elem, buf)
    }

    pub(super) fn wrap(&self, name: &'static str, rows: usize, cols: usize, elem: Elem, buf: PoolBuf) -> Tensor {
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
