//! Device tensors on CUDA: pooled allocations (`Buf::alloc_pooled`), explicit counted up- and
//! downloads, and the device-resident ops of the serving network (`online_dev`, `copy_rows`,
//! `gemm_dev`, `bias_act`), which launch on tensors without touching the host; the training
//! step's sequence ops (cross tables, GSU, attention rows, mapped sums) launch from `train_rows`.

use std::any::Any;
use std::mem::size_of;
use std::sync::Arc;

use super::buffers::Buf;
use super::gsu_topk::{self, cand_req, pack_batch, pack_plan, view, BatchRanges, GsuOut, GsuPlan, PlanRanges};
use super::{bias_act, copy_rows, cross_bias, device_err, esu, gemm, log_size_bias, train_rows, CudaBackend, Packer};
use crate::backend::cpu::copy_rows::SrcCols;
use crate::backend::{
    Act, AdamStep, AttnDev, AttnGradsDev, Backend, BackendKind, BceDev, CrossGradsDev, CrossParams, DeviceOps, Elem, F32Slot, FeatTables,
    GemmKind, GsuTrainIn, GsuTrainOut, IdSlot, OffsetsSlot, OnlineBatch, OnlineDev, OnlineSlot, OnlineTables, Rows, Staged, Staging,
    Tensor, TwinRowsSlot,
};
use crate::error::{Error, Result};

/// A tensor's device memory.
pub(crate) struct CudaMem(pub Buf<u32>);

/// CUDA's own layout of a staged online batch: its request map and GSU plan beside the batch.
pub(crate) struct NativeOnline {
    br: BatchRanges,
    pr: PlanRanges,
    plan: GsuPlan,
    /// The ESU's plan and its group offsets in the staged words.
    eplan: esu::EsuPlan,
    er: std::ops::Range<usize>,
}

impl CudaBackend {
    fn mem<'a>(&self, t: &'a Tensor) -> Result<&'a Buf<u32>> {
        t.storage::<CudaMem>(BackendKind::Cuda, self.id).map(|m| &m.0)
    }

    pub(crate) fn tensor_buf<'a>(&self, t: &'a Tensor) -> Result<&'a Buf<u32>> {
        self.mem(t)
    }

    fn wrap(&self, name: &'static str, rows: usize, cols: usize, elem: Elem, buf: Buf<u32>) -> Tensor {
        Tensor { name, rows, cols, elem, backend: BackendKind::Cuda, device_id: self.id, inner: Arc::new(CudaMem(buf)) }
    }

    /// A pooled buffer every element of which a kernel will write: poisoned (0xFF bytes) when
    /// `poison_outputs` is on, else zeroed.
    fn pooled_output(&self, op: &'static str, n: usize) -> Result<Buf<u32>> {
        let b = self.alloc_pooled::<u32>(op, n)?;
        let byte = if self.poison_outputs() { 0xFF } else { 0 };
        self.dev.memset(b.addr(), byte, b.len() * 4).map_err(device_err(op))?;
        Ok(b)
    }

    /// A pooled f32 tensor every element of which a kernel will write (poisoned when on).
    pub(crate) fn tensor_output(&self, name: &'static str, rows: usize, cols: usize) -> Result<Tensor> {
        self.tensor_output_of(name, rows, cols, Elem::F32)
    }

    /// [`Self::tensor_output`] of element type `elem` (u32 outputs poison to u32::MAX).
    pub(crate) fn tensor_output_of(&self, name: &'static str, rows: usize, cols: usize, elem: Elem) -> Result<Tensor> {
        let b = self.pooled_output(name, rows * cols)?;
        Ok(self.wrap(name, rows, cols, elem, b))
    }

    pub(crate) fn tensor_upload(&self, name: &'static str, rows: usize, cols: usize, elem: Elem, data: &[u32]) -> Result<Tensor> {
        let b = self.alloc_pooled::<u32>("tensor upload", data.len())?;
        if !data.is_empty() {
            self.copies.up(data.len() * 4);
            self.dev.htod(b.addr(), bytemuck::cast_slice(data)).map_err(device_err("tensor upload"))?;
        }
        Ok(self.wrap(name, rows, cols, elem, b))
    }

    pub(crate) fn tensor_zeroed(&self, name: &'static str, rows: usize, cols: usize, elem: Elem) -> Result<Tensor> {
        let b = self.alloc_pooled::<u32>("tensor zeros", rows * cols)?;
        self.dev.memset(b.addr(), 0, b.len() * 4).map_err(device_err("tensor zeros"))?;
        Ok(self.wrap(name, rows, cols, elem, b))
    }

    pub(crate) fn tensor_overwrite(&self, t: &Tensor, data: &[u32]) -> Result<()> {
        let b = self.mem(t)?;
        if !data.is_empty() {
            self.copies.up(data.len() * 4);
            self.dev.htod(b.addr(), bytemuck::cast_slice(data)).map_err(device_err("tensor write"))?;
        }
        Ok(())
    }

    /// Every tensor's words in one device→host copy (gathered device-side first when several).
    pub(crate) fn tensors_read(&self, ts: &[&Tensor]) -> Result<Vec<Vec<u32>>> {
        let parts: Vec<(u64, usize)> = ts.iter().map(|t| self.mem(t).map(|b| (b.addr(), t.len()))).collect::<Result<_>>()?;
        self.dtoh_many("tensor read", &parts)
    }

    /// Pack the request map and the GSU plan into the staging area (host layout already there).
    pub(crate) fn stage_native(
        &self,
        st: &mut Staging,
        t: &OnlineTables,
        batch: &OnlineBatch,
        k: usize,
    ) -> Result<Option<Box<dyn Any + Send + Sync>>> {
        let creq = cand_req(batch);
        let plan = gsu_topk::plan(self, batch, t.d_model(), k)?;
        let mut pk = Packer { words: std::mem::take(&mut st.words) };
        let br = pack_batch(&mut pk, batch, &creq);
        let pr = pack_plan(&mut pk, &plan);
        let eplan = esu::plan(self, t, batch, k)?;
        let er = esu::pack_plan(&mut pk, &eplan);
        st.words = pk.words;
        Ok(Some(Box::new(NativeOnline { br, pr, plan, eplan, er })))
    }

    /// The online path (cross bias → ln n → GSU → ESU → W^o) on a staged batch; nothing moves
    /// between host and device.
    pub(crate) fn online_staged(&self, t: &OnlineTables, staged: &Staged, slot: &OnlineSlot) -> Result<OnlineDev> {
        // A caller can stage with one backend and run on another (the staging ids still agree):
        // a usage error, named as such.
        let nat = slot.native.as_ref().and_then(|b| b.downcast_ref::<NativeOnline>()).ok_or_else(|| Error::Incompatible {
            what: "online slot",
            why: "staged by another backend (stage it with this backend's stage_online)".into(),
        })?;
        let buf = self.mem(&staged.tensor)?;
        let (n_cand, n_beh, k) = (slot.n_cands, slot.n_behaviours, slot.k);
        let (d, h, j) = (t.d_model(), t.heads, t.n_cross());
        let nk = n_cand * k;
        let bias = self.pooled_output("online_dev: bias", n_beh * h)?;
        let bias_v = bias.slice(..n_beh * h);
        cross_bias::launch_cross_bias(self, self.table_ptr(&t.cross_bias)?, h, n_beh, j, &view(buf, &nat.br.cross), &bias_v)?;
        log_size_bias::launch_log_size_bias(self, n_beh, h, &bias_v, &view(buf, &nat.br.sizes), &bias_v)?;
        let topk = self.pooled_output("online_dev: topk", 2 * nk + n_cand)?;
        let flag = self.alloc_pooled::<u32>("online_dev: flag", 1)?;
        self.dev.memset(flag.addr(), 0, 4).map_err(device_err("online_dev: flag"))?;
        let out = self.pooled_output("online_dev: out", n_cand * d)?;
        let g = GsuOut {
            idx: topk.slice(0..nk),
            score: topk.slice(nk..2 * nk),
            count: topk.slice(2 * nk..2 * nk + n_cand),
            flag: flag.slice(..),
        };
        gsu_topk::launch(self, t, &nat.plan, buf, &nat.br, &nat.pr, &bias_v, &g)?;
        esu::launch(self, t, &nat.eplan, buf, &nat.br, &nat.er, &bias_v, &g.idx, &g.count, &out.slice(..n_cand * d))?;
        Ok(OnlineDev {
            out: self.wrap("online out", n_cand, d, Elem::F32, out),
            topk: self.wrap("online topk", 1, 2 * nk + n_cand, Elem::U32, topk),
            flag: self.wrap("online flag", 1, 1, Elem::U32, flag),
            flag_ok: 0,
        })
    }

    #[allow(clippy::too_many_arguments)]
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
        let (db, sb, ib) = (self.mem(dst)?, self.mem(src)?, self.mem(&staged.tensor)?);
        let ids = |r: Rows<'_>| match r {
            Rows::All => None,
            Rows::Ids(s) => Some(view(ib, &s.range)),
        };
        let (di, si) = (ids(dst_rows), ids(src_rows));
        copy_rows::launch(self, n, sc, dst.cols, dst_col, &db.slice(..), di.as_ref(), &sb.slice(..), si.as_ref())
    }

    pub(crate) fn gemm_dev_launch(&self, kind: GemmKind, a: &Tensor, b: &Tensor, m: usize, k: usize, n: usize) -> Result<Tensor> {
        if k == 0 {
            return self.tensor_zeroed("gemm out", m, n, Elem::F32);
        }
        let out = self.pooled_output("gemm_dev: out", m * n)?;
        if m > 0 && n > 0 {
            gemm::launch(self, kind, m, k, n, &self.mem(a)?.slice(..), &self.mem(b)?.slice(..), &out.slice(..))?;
        }
        Ok(self.wrap("gemm out", m, n, Elem::F32, out))
    }

    pub(crate) fn bias_act_bwd_dev(&self, dy: &Tensor, y: &Tensor, act: Act) -> Result<Tensor> {
        let db = self.pooled_output("bias_act_bwd: db", dy.cols)?;
        bias_act::launch_bwd(self, dy.rows, dy.cols, act.code(), &self.mem(dy)?.slice(..), &self.mem(y)?.slice(..), &db.slice(..))?;
        Ok(self.wrap("bias grad", 1, dy.cols, Elem::F32, db))
    }

    pub(crate) fn bias_act_dev(&self, x: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
        bias_act::launch(self, x.rows, x.cols, act.code(), &self.mem(x)?.slice(..), &self.mem(bias)?.slice(..))
    }
}

const _: () = assert!(size_of::<u32>() == 4);

impl DeviceOps for CudaBackend {
    fn as_backend(&self) -> &dyn Backend {
        self
    }

    unsafe fn bce_dev_unchecked(&self, logits: &Tensor, labels: &F32Slot, staged: &Staged) -> Result<BceDev> {
        self.bce_dev(logits, labels, staged)
    }

    unsafe fn segment_sum_dev_unchecked(&self, src: &Tensor, perm: &IdSlot, segs: &OffsetsSlot, staged: &Staged) -> Result<Tensor> {
        self.segment_sum_dev(src, perm, segs, staged)
    }

    unsafe fn attn_fwd_dev_unchecked(
        &self,
        heads: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        offs: &OffsetsSlot,
        staged: &Staged,
    ) -> Result<AttnDev> {
        self.attn_fwd_dev(heads, q, k, v, bias, offs, staged)
    }

    unsafe fn attn_bwd_dev_unchecked(
        &self,
        heads: usize,
        x: (&Tensor, &Tensor, &Tensor, &Tensor),
        p: &Tensor,
        dpooled: &Tensor,
        offs: &OffsetsSlot,
        staged: &Staged,
    ) -> Result<AttnGradsDev> {
        self.attn_bwd_dev(heads, x, p, dpooled, offs, staged)
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
        self.gemm_dev_launch(kind, a, b, m, k, n)
    }

    unsafe fn bias_act_unchecked(&self, x: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
        self.bias_act_dev(x, bias, act)
    }

    unsafe fn cross_tables_dev_unchecked(&self, p: &CrossParams<'_>, d: usize, staged: &Staged) -> Result<(Tensor, Tensor)> {
        train_rows::cross_tables(self, p, d, staged)
    }

    unsafe fn cross_tables_bwd_dev_unchecked(
        &self,
        p: &CrossParams<'_>,
        dcb: &Tensor,
        dcv: &Tensor,
        staged: &Staged,
    ) -> Result<CrossGradsDev> {
        train_rows::cross_tables_bwd(self, p, dcb, dcv, staged)
    }

    unsafe fn gsu_train_dev_unchecked(&self, x: &GsuTrainIn<'_>, slot: &TwinRowsSlot, staged: &Staged) -> Result<GsuTrainOut> {
        train_rows::gsu_train(self, x, slot, staged)
    }

    unsafe fn twin_rows_dev_unchecked(
        &self,
        feats: &FeatTables<'_>,
        cb: &Tensor,
        heads: usize,
        gsu: &GsuTrainOut,
        slot: &TwinRowsSlot,
        staged: &Staged,
    ) -> Result<(Tensor, Tensor)> {
        train_rows::twin_rows(self, feats, cb, heads, gsu, slot, staged)
    }

    unsafe fn twin_rows_value_dev_unchecked(
        &self,
        v: &Tensor,
        cv: &Tensor,
        gsu: &GsuTrainOut,
        slot: &TwinRowsSlot,
        staged: &Staged,
    ) -> Result<()> {
        train_rows::twin_rows_value(self, v, cv, gsu, slot, staged)
    }

    unsafe fn segment_sum_mapped_dev_unchecked(
        &self,
        src: &Tensor,
        perm: &IdSlot,
        segs: &OffsetsSlot,
        gsu: &GsuTrainOut,
        staged: &Staged,
    ) -> Result<Tensor> {
        train_rows::segment_sum_mapped(self, src, perm, segs, gsu, staged)
    }
}
