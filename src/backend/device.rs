//! The device-tensor half of a backend (split from `Backend` by concern): handles in, handles
//! out, explicit up- and downloads (`tensor`). Every backend implements it; the defaults are the
//! host implementations (`host_tensor`), which the CPU backend runs as they are and a GPU backend
//! overrides with device-resident versions. `Backend: DeviceOps`, so an `Arc<dyn Backend>` has
//! these methods (bring the trait into scope: `use twin_engine::backend::DeviceOps`).

use super::cpu::optim::AdamStep;
use super::tensor::{AttnDev, AttnGradsDev, BceDev, F32Slot, IdSlot, OffsetsSlot};
use super::train_rows::{CrossGradsDev, CrossParams, FeatTables, GsuTrainIn, GsuTrainOut, TwinRowsSlot};
use super::{
    check, cpu, f32s, words, Act, Backend, Elem, GemmKind, OnlineBatch, OnlineDev, OnlineSlot, OnlineTables, Rows, Staged, Staging, Tensor,
};
use crate::error::{Error, Result};

/// Ops on device tensors (see the module docs).
pub trait DeviceOps: Send + Sync {
    /// The backend itself (the host implementations run its slice-level kernels).
    fn as_backend(&self) -> &dyn Backend;

    /// A `[rows, cols]` tensor holding `data` (one upload).
    fn tensor_from(&self, name: &'static str, rows: usize, cols: usize, elem: Elem, data: &[u32]) -> Result<Tensor> {
        check::len(name, data.len(), rows * cols, "rows * cols")?;
        if elem == Elem::F32 {
            check::finite(name, &f32s(data))?;
        }
        // SAFETY: the length matches the shape.
        unsafe { self.tensor_from_unchecked(name, rows, cols, elem, data) }
    }
    /// The backend's [`Backend::tensor_from`].
    ///
    /// # Safety
    /// `data.len() == rows * cols`.
    unsafe fn tensor_from_unchecked(&self, name: &'static str, rows: usize, cols: usize, elem: Elem, data: &[u32]) -> Result<Tensor> {
        Ok(super::host_tensor::tensor(self.as_backend(), name, rows, cols, elem, data.to_vec()))
    }

    /// An f32 tensor holding `data` (one upload; non-finite values refused).
    fn tensor_f32(&self, name: &'static str, rows: usize, cols: usize, data: &[f32]) -> Result<Tensor> {
        self.tensor_from(name, rows, cols, Elem::F32, &words(data))
    }

    /// A zeroed `[rows, cols]` tensor (no upload).
    fn tensor_zeros(&self, name: &'static str, rows: usize, cols: usize, elem: Elem) -> Result<Tensor> {
        Ok(super::host_tensor::tensor(self.as_backend(), name, rows, cols, elem, vec![0; rows * cols]))
    }

    /// Overwrite a tensor's words (one upload).
    fn tensor_write(&self, t: &Tensor, data: &[u32]) -> Result<()> {
        check::len(t.name, data.len(), t.len(), "the tensor's rows * cols")?;
        // SAFETY: the length matches.
        unsafe { self.tensor_write_unchecked(t, data) }
    }
    /// The backend's [`Backend::tensor_write`].
    ///
    /// # Safety
    /// `data.len() == t.len()`.
    unsafe fn tensor_write_unchecked(&self, t: &Tensor, data: &[u32]) -> Result<()> {
        super::host_tensor::write(self.as_backend(), t, data)
    }

    /// Copy every staged section to the backend in one upload.
    fn upload_staging(&self, st: Staging) -> Result<Staged> {
        let n = st.words.len();
        // SAFETY: one row of exactly `n` words.
        let tensor = unsafe { self.tensor_from_unchecked("staged batch", 1, n, Elem::U32, &st.words)? };
        Ok(Staged { id: st.id, tensor })
    }

    /// Download the tensors' words, all in one device→host copy.
    fn tensor_read(&self, ts: &[&Tensor]) -> Result<Vec<Vec<u32>>> {
        super::host_tensor::read(self.as_backend(), ts)
    }

    /// Stage one online batch for [`Backend::online_dev`] (validated here, like `online`'s).
    fn stage_online(&self, st: &mut Staging, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Result<OnlineSlot> {
        check::online(t, batch, k)?;
        let sizes = words(batch.sizes);
        let host = [
            st.push(batch.seq_offsets),
            st.push(batch.items),
            st.push(batch.cross),
            st.push(&sizes),
            st.push(batch.cand_offsets),
            st.push(batch.cands),
        ];
        let native = self.stage_online_native(st, t, batch, k)?;
        Ok(OnlineSlot {
            staging: st.id,
            k,
            n_cands: batch.cands.len(),
            n_behaviours: batch.items.len(),
            n_items: t.n_items(),
            cross_rows: t.cross_bias.rows,
            host,
            native,
        })
    }
    /// A backend's own layout of a validated batch, staged beside the host layout (CUDA packs its
    /// request map and GSU plan). The default stages nothing more.
    fn stage_online_native(
        &self,
        _st: &mut Staging,
        _t: &OnlineTables,
        _batch: &OnlineBatch,
        _k: usize,
    ) -> Result<Option<Box<dyn std::any::Any + Send + Sync>>> {
        Ok(None)
    }

    /// The online path (SPEC §3) on a staged batch; results stay on the device.
    fn online_dev(&self, t: &OnlineTables, staged: &Staged, slot: &OnlineSlot) -> Result<OnlineDev> {
        staged.owns("online slot", slot.staging)?;
        check::tables(t)?;
        check::len("online slot n_items", slot.n_items, t.n_items(), "the tables' n_items")?;
        check::len("online slot cross rows", slot.cross_rows, t.cross_bias.rows, "the tables' cross rows")?;
        // SAFETY: the batch passed check::online against tables of the same shape when staged.
        unsafe { self.online_dev_unchecked(t, staged, slot) }
    }
    /// The backend's [`Backend::online_dev`].
    ///
    /// # Safety
    /// `slot` was staged into `staged` against tables shaped like `t`.
    unsafe fn online_dev_unchecked(&self, t: &OnlineTables, staged: &Staged, slot: &OnlineSlot) -> Result<OnlineDev> {
        super::host_tensor::online_dev(self.as_backend(), t, staged, slot)
    }

    /// `dst[dst_row(i), dst_col ..] = src[src_row(i), ..]` for every copied row `i` (math in
    /// `cpu::copy_rows`). Listed rows come from `staged`; the row count is the listed ids' count,
    /// else `dst.rows`.
    fn copy_rows(&self, dst: &Tensor, dst_col: usize, dst_rows: Rows<'_>, src: &Tensor, src_rows: Rows<'_>, staged: &Staged) -> Result<()> {
        self.copy_cols(dst, dst_col, dst_rows, src, 0..src.cols, src_rows, staged)
    }

    /// [`Backend::copy_rows`] of the source columns `src_cols` only (a column block of each row).
    #[allow(clippy::too_many_arguments)]
    fn copy_cols(
        &self,
        dst: &Tensor,
        dst_col: usize,
        dst_rows: Rows<'_>,
        src: &Tensor,
        src_cols: std::ops::Range<usize>,
        src_rows: Rows<'_>,
        staged: &Staged,
    ) -> Result<()> {
        let n = check::copy_rows(dst, dst_col, dst_rows, src, &src_cols, src_rows, staged)?;
        let sc = cpu::copy_rows::SrcCols { stride: src.cols, start: src_cols.start, width: src_cols.len() };
        // SAFETY: check::copy_rows bounded every id and column range.
        unsafe { self.copy_cols_unchecked(dst, dst_col, dst_rows, src, sc, src_rows, staged, n) }
    }
    /// The backend's [`Backend::copy_cols`].
    ///
    /// # Safety
    /// The inputs passed `check::copy_rows`, which returned `n`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn copy_cols_unchecked(
        &self,
        dst: &Tensor,
        dst_col: usize,
        dst_rows: Rows<'_>,
        src: &Tensor,
        sc: cpu::copy_rows::SrcCols,
        src_rows: Rows<'_>,
        staged: &Staged,
        n: usize,
    ) -> Result<()> {
        super::host_tensor::copy_rows_op(self.as_backend(), dst, dst_col, dst_rows, src, sc, src_rows, staged, n)
    }

    /// [`Backend::gemm`] on tensors: returns `out [m, n]`.
    fn gemm_dev(&self, kind: GemmKind, a: &Tensor, b: &Tensor, m: usize, k: usize, n: usize) -> Result<Tensor> {
        check::gemm_dev(kind, a, b, m, k, n)?;
        // SAFETY: shapes checked.
        unsafe { self.gemm_dev_unchecked(kind, a, b, m, k, n) }
    }
    /// The backend's [`Backend::gemm_dev`].
    ///
    /// # Safety
    /// The inputs passed `check::gemm_dev`.
    unsafe fn gemm_dev_unchecked(&self, kind: GemmKind, a: &Tensor, b: &Tensor, m: usize, k: usize, n: usize) -> Result<Tensor> {
        super::host_tensor::gemm_dev(self.as_backend(), kind, a, b, m, k, n)
    }

    /// In place: `x[i, j] = act(x[i, j] + bias[j])`, `x [m, n]` f32, `bias [1, n]` (math in
    /// `cpu::bias_act`).
    fn bias_act(&self, x: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
        check::bias_act(x, bias)?;
        // SAFETY: shapes checked.
        unsafe { self.bias_act_unchecked(x, bias, act) }
    }
    /// The backend's [`Backend::bias_act`].
    ///
    /// # Safety
    /// The inputs passed `check::bias_act`.
    unsafe fn bias_act_unchecked(&self, x: &Tensor, bias: &Tensor, act: Act) -> Result<()> {
        super::host_tensor::bias_act_op(self.as_backend(), x, bias, act)
    }

    /// Backward of [`Backend::bias_act`] for none / ReLU (math in `cpu::bias_act::bias_act_bwd`):
    /// `dy [m, n]` masked in place where ReLU's output `y` is not positive; returns the bias
    /// gradient `db [1, n]` (column sums in row order).
    fn bias_act_bwd(&self, dy: &Tensor, y: &Tensor, act: Act) -> Result<Tensor> {
        check::bias_act_bwd(dy, y, act)?;
        // SAFETY: shapes checked, tensors distinct.
        unsafe { self.bias_act_bwd_unchecked(dy, y, act) }
    }
    /// The backend's [`Backend::bias_act_bwd`].
    ///
    /// # Safety
    /// The inputs passed `check::bias_act_bwd`.
    unsafe fn bias_act_bwd_unchecked(&self, dy: &Tensor, y: &Tensor, act: Act) -> Result<Tensor> {
        super::host_tensor::bias_act_bwd(self.as_backend(), dy, y, act)
    }

    /// [`Backend::attn_fwd`] on tensors: `q [B, D]`, `k, v [N, D]`, `bias [N, h]`, sample rows
    /// from `offs` (staged in `staged`).
    #[allow(clippy::too_many_arguments)]
    fn attn_fwd_dev(
        &self,
        heads: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: &Tensor,
        offs: &OffsetsSlot,
        staged: &Staged,
    ) -> Result<AttnDev> {
        check::attn_dev(heads, q, k, v, bias, offs, staged)?;
        // SAFETY: shapes and offsets checked.
        unsafe { self.attn_fwd_dev_unchecked(heads, q, k, v, bias, offs, staged) }
    }
    /// The backend's [`Backend::attn_fwd_dev`].
    ///
    /// # Safety
    /// The inputs passed `check::attn_dev`.
    #[allow(clippy::too_many_arguments)]
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
        super::host_tensor::attn_fwd(self.as_backend(), heads, q, k, v, bias, offs, staged)
    }

    /// [`Backend::attn_bwd`] on tensors: the forward's inputs, its `p [N, h]` and
    /// `dpooled [B, D]`.
    #[allow(clippy::too_many_arguments)]
    fn attn_bwd_dev(
        &self,
        heads: usize,
        x: (&Tensor, &Tensor, &Tensor, &Tensor),
        p: &Tensor,
        dpooled: &Tensor,
        offs: &OffsetsSlot,
        staged: &Staged,
    ) -> Result<AttnGradsDev> {
        let (q, k, v, bias) = x;
        check::attn_dev(heads, q, k, v, bias, offs, staged)?;
        p.expect("attn p", bias.rows, bias.cols, Elem::F32)?;
        dpooled.expect("attn dpooled", q.rows, q.cols, Elem::F32)?;
        // SAFETY: shapes and offsets checked.
        unsafe { self.attn_bwd_dev_unchecked(heads, x, p, dpooled, offs, staged) }
    }
    /// The backend's [`Backend::attn_bwd_dev`].
    ///
    /// # Safety
    /// The inputs passed the checks of [`Backend::attn_bwd_dev`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn attn_bwd_dev_unchecked(
        &self,
        heads: usize,
        x: (&Tensor, &Tensor, &Tensor, &Tensor),
        p: &Tensor,
        dpooled: &Tensor,
        offs: &OffsetsSlot,
        staged: &Staged,
    ) -> Result<AttnGradsDev> {
        super::host_tensor::attn_bwd(self.as_backend(), heads, x, p, dpooled, offs, staged)
    }

    /// [`Backend::segment_sum`] on tensors: `out [S, W] = Σ src[perm[i]]` over each staged
    /// segment, added in list order (bit-identical to the CPU).
    fn segment_sum_dev(&self, src: &Tensor, perm: &IdSlot, segs: &OffsetsSlot, staged: &Staged) -> Result<Tensor> {
        check::segment_sum_dev(src, perm, segs, staged)?;
        // SAFETY: ids and offsets checked when staged, their sizes here.
        unsafe { self.segment_sum_dev_unchecked(src, perm, segs, staged) }
    }
    /// The backend's [`Backend::segment_sum_dev`].
    ///
    /// # Safety
    /// The inputs passed `check::segment_sum_dev`.
    unsafe fn segment_sum_dev_unchecked(&self, src: &Tensor, perm: &IdSlot, segs: &OffsetsSlot, staged: &Staged) -> Result<Tensor> {
        super::host_tensor::segment_sum(self.as_backend(), src, perm, segs, staged)
    }

    /// [`Backend::bce`] on tensors: `logits [B, 1]`, labels staged; the mean loss and `dlogit`
    /// stay on the device (math in `cpu::bce`, the mean summed in sample order).
    fn bce_dev(&self, logits: &Tensor, labels: &F32Slot, staged: &Staged) -> Result<BceDev> {
        staged.owns("bce labels", labels.staging)?;
        logits.expect("bce logits", labels.len(), 1, Elem::F32)?;
        if labels.is_empty() {
            return Err(Error::Empty { field: "logits", index: 0 });
        }
        // SAFETY: shapes checked; labels finite (checked when staged).
        unsafe { self.bce_dev_unchecked(logits, labels, staged) }
    }
    /// The backend's [`Backend::bce_dev`].
    ///
    /// # Safety
    /// The inputs passed the checks of [`Backend::bce_dev`].
    unsafe fn bce_dev_unchecked(&self, logits: &Tensor, labels: &F32Slot, staged: &Staged) -> Result<BceDev> {
        super::host_tensor::bce(self.as_backend(), logits, labels, staged)
    }

    /// Adam in place on a dense tensor (math in `cpu::optim`): `w`, `m`, `v` updated from `g`.
    fn adam(&self, w: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, s: &AdamStep) -> Result<()> {
        check::adam(w, g, m, v)?;
        // SAFETY: shapes checked, tensors distinct.
        unsafe { self.adam_unchecked(w, g, m, v, s) }
    }
    /// The backend's [`Backend::adam`].
    ///
    /// # Safety
    /// The inputs passed `check::adam`.
    unsafe fn adam_unchecked(&self, w: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, s: &AdamStep) -> Result<()> {
        super::host_tensor::adam(self.as_backend(), w, g, m, v, s)
    }

    /// Row-sparse Adagrad in place (math in `cpu::optim`): row `rows[k]` of `w` and `acc` takes
    /// gradient row `k` of `g`. `rows` staged with `Staging::rows` (distinct).
    #[allow(clippy::too_many_arguments)]
    fn adagrad_rows(&self, w: &Tensor, acc: &Tensor, rows: &IdSlot, g: &Tensor, staged: &Staged, lr: f32, eps: f32) -> Result<()> {
        check::adagrad_rows(w, acc, rows, g, staged)?;
        // SAFETY: shapes, row bounds and distinctness checked.
        unsafe { self.adagrad_rows_unchecked(w, acc, rows, g, staged, lr, eps) }
    }
    /// The backend's [`Backend::adagrad_rows`].
    ///
    /// # Safety
    /// The inputs passed `check::adagrad_rows`.
    #[allow(clippy::too_many_arguments)]
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
        super::host_tensor::adagrad_rows(self.as_backend(), w, acc, rows, g, staged, lr, eps)
    }

    /// The training-time cross tables (math in `cpu::cross_bias::cross_tables`): returns
    /// `(cb [ΣV, h], cv [ΣV, D])` from the current cross parameters.
    fn cross_tables_dev(&self, p: &CrossParams<'_>, staged: &Staged) -> Result<(Tensor, Tensor)> {
        let d = p.check(staged)?;
        // SAFETY: shapes and offsets checked.
        unsafe { self.cross_tables_dev_unchecked(p, d, staged) }
    }
    /// The backend's [`DeviceOps::cross_tables_dev`].
    ///
    /// # Safety
    /// `p` passed `CrossParams::check`, which returned `d`.
    unsafe fn cross_tables_dev_unchecked(&self, p: &CrossParams<'_>, d: usize, staged: &Staged) -> Result<(Tensor, Tensor)> {
        super::host_train::cross_tables(self.as_backend(), p, d, staged)
    }

    /// Gradients of the cross parameters from `dcb [ΣV, h]`, `dcv [ΣV, D]` (math in
    /// `cpu::cross_bias::cross_tables_bwd`), each written, not accumulated.
    fn cross_tables_bwd_dev(&self, p: &CrossParams<'_>, dcb: &Tensor, dcv: &Tensor, staged: &Staged) -> Result<CrossGradsDev> {
        let d = p.check(staged)?;
        dcb.expect("cross dcb", p.offsets.rows, p.dims.heads, Elem::F32)?;
        dcv.expect("cross dcv", p.offsets.rows, d, Elem::F32)?;
        // SAFETY: shapes and offsets checked.
        unsafe { self.cross_tables_bwd_dev_unchecked(p, dcb, dcv, staged) }
    }
    /// The backend's [`DeviceOps::cross_tables_bwd_dev`].
    ///
    /// # Safety
    /// The inputs passed the checks of [`DeviceOps::cross_tables_bwd_dev`].
    unsafe fn cross_tables_bwd_dev_unchecked(
        &self,
        p: &CrossParams<'_>,
        dcb: &Tensor,
        dcv: &Tensor,
        staged: &Staged,
    ) -> Result<CrossGradsDev> {
        super::host_train::cross_tables_bwd(self.as_backend(), p, dcb, dcv, staged)
    }

    /// The training GSU (math in `cpu::gsu_train`): scores every long position, keeps the top K
    /// per sample in sequence order and writes the row map.
    fn gsu_train_dev(&self, x: &GsuTrainIn<'_>, slot: &TwinRowsSlot, staged: &Staged) -> Result<GsuTrainOut> {
        super::train_rows::check_gsu(x, slot, staged)?;
        // SAFETY: shapes checked; the slot's ids were checked against these bounds when staged.
        unsafe { self.gsu_train_dev_unchecked(x, slot, staged) }
    }
    /// The backend's [`DeviceOps::gsu_train_dev`].
    ///
    /// # Safety
    /// The inputs passed `train_rows::check_gsu`.
    unsafe fn gsu_train_dev_unchecked(&self, x: &GsuTrainIn<'_>, slot: &TwinRowsSlot, staged: &Staged) -> Result<GsuTrainOut> {
        super::host_train::gsu_train(self.as_backend(), x, slot, staged)
    }

    /// The attention rows (math in `cpu::twin_rows::rows`): `(x_h [n_att, H], bias [n_att, h])`
    /// for the GSU's finalists then the short rows.
    fn twin_rows_dev(
        &self,
        feats: &FeatTables<'_>,
        cb: &Tensor,
        heads: usize,
        gsu: &GsuTrainOut,
        slot: &TwinRowsSlot,
        staged: &Staged,
    ) -> Result<(Tensor, Tensor)> {
        super::train_rows::check_rows(feats, cb, heads, gsu, slot, staged)?;
        // SAFETY: shapes checked; `gsu.sel` holds long positions (written by the GSU only).
        unsafe { self.twin_rows_dev_unchecked(feats, cb, heads, gsu, slot, staged) }
    }
    /// The backend's [`DeviceOps::twin_rows_dev`].
    ///
    /// # Safety
    /// The inputs passed `train_rows::check_rows`.
    unsafe fn twin_rows_dev_unchecked(
        &self,
        feats: &FeatTables<'_>,
        cb: &Tensor,
        heads: usize,
        gsu: &GsuTrainOut,
        slot: &TwinRowsSlot,
        staged: &Staged,
    ) -> Result<(Tensor, Tensor)> {
        super::host_train::twin_rows(self.as_backend(), feats, cb, heads, gsu, slot, staged)
    }

    /// In place: `v[n] += Σ_j cv[cross_j]` for every attention row (math in
    /// `cpu::twin_rows::add_values`).
    fn twin_rows_value_dev(&self, v: &Tensor, cv: &Tensor, gsu: &GsuTrainOut, slot: &TwinRowsSlot, staged: &Staged) -> Result<()> {
        super::train_rows::check_values(v, cv, gsu, slot, staged)?;
        // SAFETY: shapes checked; `gsu.sel` holds long positions.
        unsafe { self.twin_rows_value_dev_unchecked(v, cv, gsu, slot, staged) }
    }
    /// The backend's [`DeviceOps::twin_rows_value_dev`].
    ///
    /// # Safety
    /// The inputs passed `train_rows::check_values`.
    unsafe fn twin_rows_value_dev_unchecked(
        &self,
        v: &Tensor,
        cv: &Tensor,
        gsu: &GsuTrainOut,
        slot: &TwinRowsSlot,
        staged: &Staged,
    ) -> Result<()> {
        super::host_train::twin_rows_value(self.as_backend(), v, cv, gsu, slot, staged)
    }

    /// [`DeviceOps::segment_sum_dev`] through the GSU's row map (math in
    /// `cpu::segment_sum::segment_sum_mapped`): `perm` lists positions, the map sends each to a
    /// row of `src [map_rows, W]` or skips it.
    fn segment_sum_mapped_dev(
        &self,
        src: &Tensor,
        perm: &IdSlot,
        segs: &OffsetsSlot,
        gsu: &GsuTrainOut,
        slot: &TwinRowsSlot,
        staged: &Staged,
    ) -> Result<Tensor> {
        super::train_rows::check_mapped(src, perm, segs, gsu, slot, staged)?;
        // SAFETY: positions checked when staged and against the map here; the map's values are
        // below `map_rows` by construction.
        unsafe { self.segment_sum_mapped_dev_unchecked(src, perm, segs, gsu, staged) }
    }
    /// The backend's [`DeviceOps::segment_sum_mapped_dev`].
    ///
    /// # Safety
    /// The inputs passed `train_rows::check_mapped`.
    unsafe fn segment_sum_mapped_dev_unchecked(
        &self,
        src: &Tensor,
        perm: &IdSlot,
        segs: &OffsetsSlot,
        gsu: &GsuTrainOut,
        staged: &Staged,
    ) -> Result<Tensor> {
        super::host_train::segment_sum_mapped(self.as_backend(), src, perm, segs, gsu, staged)
    }
}
