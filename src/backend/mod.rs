//! The backend abstraction: the engine's kernels as batched operations.
//!
//! Every op takes whole batches: many requests (online path) or many independent k-means
//! problems (offline clustering) per call, ragged sequences as `offsets + flat arrays`.
//! The CPU backend (`cpu`) implements SPEC.md literally and is the reference every GPU
//! backend is checked against (tests/parity).
//!
//! Conventions shared by all ops (letters as in SPEC.md):
//! - `R` requests; request `r` has `L_r` behaviours (`seq_offsets[r]..seq_offsets[r+1]`) and
//!   `B_r` candidates (`cand_offsets[r]..cand_offsets[r+1]`); `ΣL`, `ΣB` are the flat lengths.
//! - `D = h * d_k` projection width, `h` heads, `J` cross features.
//! - All matrices are row-major, f32 unless a table says f16. Reductions accumulate in f32 or
//!   wider; the CPU reference uses f64 where the sum is long.
//! - Validation (`check`) runs in the trait's provided methods before the backend's
//!   `*_unchecked` implementation, so no backend reads out of bounds or repeats the checks. The
//!   `*_unchecked` methods are `unsafe`: safe code cannot send unvalidated ids into a kernel.

pub mod check;
pub mod cpu;
pub(crate) mod host_tensor;
mod tensor;
mod transfers;
mod types;

pub use tensor::{
    f32s, words, Act, AttnDev, AttnGradsDev, BceDev, Elem, F32Slot, HostMem, IdSlot, ItemPoints, LossForm, OffsetsSlot, OnlineDev,
    OnlineSlot, Rows, Staged, Staging, Tensor, STAGE_ALIGN_WORDS,
};
pub use transfers::{TransferCounter, Transfers};

use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};

/// GSU keeps `K = min(TOP_K, L)` behaviours per candidate (SPEC §3.4).
pub const TOP_K: usize = 100;
/// Longest sequence one request may carry (raw TWIN behaviours or TWIN-V2 clusters).
pub const MAX_SEQ_LEN: usize = 1 << 20;
/// Largest top-K a caller may ask for; the fused GPU kernels size their per-candidate heaps by it.
pub const MAX_TOP_K: usize = 256;
/// Largest k-means k per problem (δ = ⌊|V|^0.3⌋ for |V| ≤ 10^7 stays well under it).
pub const MAX_KMEANS_K: usize = 1024;

pub use cpu::cross_bias::CrossTableGrads;
pub use cpu::optim::AdamStep;
pub use types::*;

/// The engine's kernels. Object safe: callers hold `Arc<dyn Backend>`.
///
/// Ops that return host vectors exist so each kernel can be tested and benchmarked on its own;
/// the composite ops (`online`, `kmeans`) have default implementations that chain them, which
/// GPU backends override with fused, device-resident versions.
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// Unique per backend instance; stamps the tables it uploads.
    fn device_id(&self) -> u64;
    /// Human-readable device description (adapter name, compute capability, threads).
    fn describe(&self) -> String;

    /// Host↔device copies since this backend was opened (zeros where there is no device memory).
    fn transfers(&self) -> Transfers {
        Transfers::default()
    }

    /// Wait until every piece of work submitted to the device so far has finished.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Run `f` once and return how long it took in milliseconds, on the device's own clock where
    /// the backend has one (CUDA events recorded on its stream around `f`), else on the host's
    /// monotonic clock with the device synchronised before and after.
    fn time_ms(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.synchronize()?;
        let t0 = Instant::now();
        f()?;
        self.synchronize()?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }

    /// Which clock [`Backend::time_ms`] reads.
    fn clock(&self) -> &'static str {
        "host monotonic clock, device synchronised"
    }

    /// Make a host table resident. Rejects non-finite values (SPEC: a NaN is an input error).
    fn upload_table(&self, name: &'static str, table: &HostTable) -> Result<DeviceTable> {
        check::host_table(name, table)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.upload_table_unchecked(name, table) }
    }
    /// The backend's [`Backend::upload_table`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn upload_table_unchecked(&self, name: &'static str, table: &HostTable) -> Result<DeviceTable>;

    /// Precomputed-projection gather: `out[n] = table[ids[n]]` widened to f32, `[N, cols]`.
    fn gather(&self, table: &DeviceTable, ids: &[u32]) -> Result<Vec<f32>> {
        check::gather(table, ids)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.gather_unchecked(table, ids) }
    }
    /// The backend's [`Backend::gather`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn gather_unchecked(&self, table: &DeviceTable, ids: &[u32]) -> Result<Vec<f32>>;

    /// Cross-feature bias, inference form: `out[n, a] = Σ_j table[rows[n*J + j], a]`.
    /// `table` is `[V, h]`; returns `[N, h]`.
    fn cross_bias(&self, table: &DeviceTable, rows: &[u32], n_cross: usize) -> Result<Vec<f32>> {
        check::cross_bias(table, rows, n_cross)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.cross_bias_unchecked(table, rows, n_cross) }
    }
    /// The backend's [`Backend::cross_bias`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn cross_bias_unchecked(&self, table: &DeviceTable, rows: &[u32], n_cross: usize) -> Result<Vec<f32>>;

    /// Cross-feature bias, training form: `out[n, a] = Σ_j β[a,j] (e[n,j,:] · w_c[a,j,:])`.
    /// `e: [N, J, C]`, `w_c: [h, J, C]`, `beta: [h, J]`; returns `[N, h]`.
    fn cross_bias_dense(&self, e: &[f32], w_c: &[f32], beta: &[f32], dims: CrossDims) -> Result<Vec<f32>> {
        check::cross_bias_dense(e, w_c, beta, dims)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.cross_bias_dense_unchecked(e, w_c, beta, dims) }
    }
    /// The backend's [`Backend::cross_bias_dense`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn cross_bias_dense_unchecked(&self, e: &[f32], w_c: &[f32], beta: &[f32], dims: CrossDims) -> Result<Vec<f32>>;

    /// Log-cluster-size reweighting: `out[n, a] = bias[n, a] + ln(sizes[n])`, `[N, h]`.
    fn log_size_bias(&self, bias: &[f32], sizes: &[f32], heads: usize) -> Result<Vec<f32>> {
        check::log_size_bias(bias, sizes, heads)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.log_size_bias_unchecked(bias, sizes, heads) }
    }
    /// The backend's [`Backend::log_size_bias`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn log_size_bias_unchecked(&self, bias: &[f32], sizes: &[f32], heads: usize) -> Result<Vec<f32>>;

    /// CP-GSU: `g_{b,l} = (1/h) Σ_a (q_{b,a}·k_{l,a}/√d_k + bias[l,a])`, keep the `min(k, L_r)`
    /// largest per candidate. `bias: [ΣL, h]` already holds the cross bias and `ln n`.
    fn gsu_topk(&self, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], k: usize) -> Result<TopK> {
        check::online(t, batch, k)?;
        check::behaviour_bias(t, batch, bias)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.gsu_topk_unchecked(t, batch, bias, k) }
    }
    /// The backend's [`Backend::gsu_topk`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn gsu_topk_unchecked(&self, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], k: usize) -> Result<TopK>;

    /// ESU: per-head softmax over the finalists of `α = q_a·k_{l,a}/√d_k + bias[l,a]`, pooling of
    /// `v_l = P_V[item_l] + Σ_j cross_value[cross_l,j]`, then `· W^o`. Returns `[ΣB, D]`.
    fn esu(&self, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], topk: &TopK) -> Result<Vec<f32>> {
        check::online(t, batch, topk.k.max(1))?;
        check::behaviour_bias(t, batch, bias)?;
        check::topk_for(batch, topk)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.esu_unchecked(t, batch, bias, topk) }
    }
    /// The backend's [`Backend::esu`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn esu_unchecked(&self, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], topk: &TopK) -> Result<Vec<f32>>;

    /// Training attention forward (SPEC §5; ESU pooling without `W^o`, ragged rows per sample):
    /// `α = q_a·k_{r,a}/√d_k + bias[r,a]`, per-head softmax over sample `b`'s rows
    /// `offsets[b]..offsets[b+1]`, `pooled_{b,a} = Σ_r p v_{r,a}`. `q [B, D]`, `k, v [N, D]`,
    /// `bias [N, h]`. Returns the softmax weights `p [N, h]` (kept for the backward) and `pooled [B, D]`.
    fn attn_fwd(&self, heads: usize, q: &[f32], k: &[f32], v: &[f32], bias: &[f32], offsets: &[u32]) -> Result<AttnOut> {
        check::attn(heads, q, k, v, bias, offsets)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.attn_fwd_unchecked(heads, q, k, v, bias, offsets) }
    }
    /// The backend's [`Backend::attn_fwd`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn attn_fwd_unchecked(&self, heads: usize, q: &[f32], k: &[f32], v: &[f32], bias: &[f32], offsets: &[u32]) -> Result<AttnOut>;

    /// Training attention backward: given `attn_fwd`'s inputs, its `p` and `dpooled [B, D]`,
    /// the gradients of `q`, `k`, `v` and `bias` (each written, not accumulated).
    fn attn_bwd(&self, heads: usize, x: AttnSaved<'_>, dpooled: &[f32]) -> Result<AttnGrads> {
        check::attn(heads, x.q, x.k, x.v, x.bias, x.offsets)?;
        check::len("p", x.p.len(), x.bias.len(), "bias length (N * h)")?;
        check::len("dpooled", dpooled.len(), x.q.len(), "q length (B * D)")?;
        check::finite("dpooled", dpooled)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.attn_bwd_unchecked(heads, x, dpooled) }
    }
    /// The backend's [`Backend::attn_bwd`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn attn_bwd_unchecked(&self, heads: usize, x: AttnSaved<'_>, dpooled: &[f32]) -> Result<AttnGrads>;

    /// Deterministic scatter-add: `out[s] = Σ src[perm[i]]` over `i` in `seg_offsets[s]..seg_offsets[s+1]`,
    /// added in that order. `src [N, width]`; returns `[S, width]`.
    fn segment_sum(&self, src: &[f32], width: usize, perm: &[u32], seg_offsets: &[u32]) -> Result<Vec<f32>> {
        check::segment_sum(src, width, perm, seg_offsets)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.segment_sum_unchecked(src, width, perm, seg_offsets) }
    }
    /// The backend's [`Backend::segment_sum`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn segment_sum_unchecked(&self, src: &[f32], width: usize, perm: &[u32], seg_offsets: &[u32]) -> Result<Vec<f32>>;

    /// Dense f32 GEMM, row-major: `out [m, n] = op(a) · op(b)` where, by `kind`,
    /// `NN`: `a [m, k]`, `b [k, n]`; `NT`: `a [m, k]`, `b [n, k]`; `TN`: `a [k, m]`, `b [k, n]`.
    /// Every output element is reduced over `k` by one thread in a fixed order (deterministic).
    fn gemm(&self, kind: GemmKind, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Result<Vec<f32>> {
        check::gemm(a, b, m, k, n)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.gemm_unchecked(kind, a, b, m, k, n) }
    }
    /// The backend's [`Backend::gemm`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn gemm_unchecked(&self, kind: GemmKind, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Result<Vec<f32>>;

    /// Backward of the training-time cross tables into `E`, `w^c`, `β` and `W^{vc}`
    /// (math in `cpu::cross_bias::cross_tables_bwd`).
    fn cross_tables_bwd(&self, x: CrossBwdIn<'_>) -> Result<CrossTableGrads<f32>> {
        check::cross_tables_bwd(&x)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.cross_tables_bwd_unchecked(x) }
    }
    /// The backend's [`Backend::cross_tables_bwd`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn cross_tables_bwd_unchecked(&self, x: CrossBwdIn<'_>) -> Result<CrossTableGrads<f32>>;

    /// Mean binary cross-entropy of `logits` against `labels` and `dlogit = (σ(s) - y) / B`
    /// (math in `cpu::bce`). Returns `(loss, dlogit)`.
    fn bce(&self, logits: &[f32], labels: &[f32]) -> Result<(f64, Vec<f32>)> {
        check::len("labels", labels.len(), logits.len(), "logits length")?;
        if logits.is_empty() {
            return Err(Error::Empty { field: "logits", index: 0 });
        }
        check::finite("logits", logits)?;
        check::finite("labels", labels)?;
        if logits.len() > u32::MAX as usize {
            return Err(Error::TooLarge { field: "logits", value: logits.len() as u64, limit: u32::MAX as u64 });
        }
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.bce_unchecked(logits, labels) }
    }
    /// The backend's [`Backend::bce`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn bce_unchecked(&self, logits: &[f32], labels: &[f32]) -> Result<(f64, Vec<f32>)>;

    // ---- device tensors (see `tensor`): handles in, handles out, explicit up- and downloads ----

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
        Ok(host_tensor::tensor(self, name, rows, cols, elem, data.to_vec()))
    }

    /// An f32 tensor holding `data` (one upload; non-finite values refused).
    fn tensor_f32(&self, name: &'static str, rows: usize, cols: usize, data: &[f32]) -> Result<Tensor> {
        self.tensor_from(name, rows, cols, Elem::F32, &words(data))
    }

    /// A zeroed `[rows, cols]` tensor (no upload).
    fn tensor_zeros(&self, name: &'static str, rows: usize, cols: usize, elem: Elem) -> Result<Tensor> {
        Ok(host_tensor::tensor(self, name, rows, cols, elem, vec![0; rows * cols]))
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
        host_tensor::write(self, t, data)
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
        host_tensor::read(self, ts)
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
        host_tensor::online_dev(self, t, staged, slot)
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
        host_tensor::copy_rows_op(self, dst, dst_col, dst_rows, src, sc, src_rows, staged, n)
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
        host_tensor::gemm_dev(self, kind, a, b, m, k, n)
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
        host_tensor::bias_act_op(self, x, bias, act)
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
        host_tensor::bias_act_bwd(self, dy, y, act)
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
        host_tensor::attn_fwd(self, heads, q, k, v, bias, offs, staged)
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
        host_tensor::attn_bwd(self, heads, x, p, dpooled, offs, staged)
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
        host_tensor::segment_sum(self, src, perm, segs, staged)
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
        host_tensor::bce(self, logits, labels, staged)
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
        host_tensor::adam(self, w, g, m, v, s)
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
        host_tensor::adagrad_rows(self, w, acc, rows, g, staged, lr, eps)
    }

    /// The whole online path (SPEC §3) for a batch of requests.
    fn online(&self, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Result<OnlineOutput> {
        check::online(t, batch, k)?;
        let cross = self.cross_bias(&t.cross_bias, batch.cross, t.n_cross())?;
        let bias = self.log_size_bias(&cross, batch.sizes, t.heads)?;
        let topk = self.gsu_topk(t, batch, &bias, k)?;
        let out = self.esu(t, batch, &bias, &topk)?;
        Ok(OnlineOutput { topk, out })
    }

    /// k-means++ seeding (SPEC §4.3), one RNG stream per problem from `seeds[p]`.
    /// Returns `[Σk, dim]` initial centroids. The default runs the reference on the host.
    fn kmeans_seed(&self, batch: &KmeansBatch, seeds: &[u64]) -> Result<Vec<f32>> {
        check::kmeans(batch)?;
        check::len("seeds", seeds.len(), batch.n_problems(), "number of problems")?;
        Ok(cpu::kmeans::seed_all(batch, seeds))
    }

    /// Nearest-centroid assignment, `[N]` local centroid indices. Distance is SPEC's
    /// `Σ_t (x_t - c_t)^2` in f32 summed in `t` order; ties go to the lower centroid index.
    fn kmeans_assign(&self, batch: &KmeansBatch, centroids: &[f32]) -> Result<Vec<u32>> {
        check::kmeans(batch)?;
        check::centroids(batch, centroids)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.kmeans_assign_unchecked(batch, centroids) }
    }
    /// The backend's [`Backend::kmeans_assign`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn kmeans_assign_unchecked(&self, batch: &KmeansBatch, centroids: &[f32]) -> Result<Vec<u32>>;

    /// Centroid update: mean of each centroid's members (summed in point order, f64 on the
    /// reference); a centroid with no member keeps its previous value. Returns `[Σk, dim]`.
    fn kmeans_update(&self, batch: &KmeansBatch, assign: &[u32], prev: &[f32]) -> Result<Vec<f32>> {
        check::kmeans(batch)?;
        check::centroids(batch, prev)?;
        check::assignments(batch, assign)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.kmeans_update_unchecked(batch, assign, prev) }
    }
    /// The backend's [`Backend::kmeans_update`], called after validation.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn kmeans_update_unchecked(&self, batch: &KmeansBatch, assign: &[u32], prev: &[f32]) -> Result<Vec<f32>>;

    /// Item embeddings `[rows, dim]` for [`Backend::kmeans_items`]: checked (finite), and made
    /// resident where the backend clusters on the device.
    fn item_points<'a>(&self, emb: &'a [f32], dim: usize) -> Result<ItemPoints<'a>> {
        if dim == 0 {
            return Err(Error::BadShape { field: "embedding dim", value: 0, why: "must be positive" });
        }
        let rows = emb.len() / dim;
        check::len("embeddings", emb.len(), rows * dim, "a multiple of dim")?;
        check::finite("embeddings", emb)?;
        let dev = self.item_points_native(emb, rows, dim)?;
        Ok(ItemPoints { host: emb, rows, dim, dev })
    }
    /// The backend's resident copy of checked embeddings, if it clusters on the device.
    fn item_points_native(&self, _emb: &[f32], _rows: usize, _dim: usize) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// k-means (seed, then Lloyd as [`Backend::kmeans`]) for many problems whose points are rows
    /// `ids` of `pts`, problem `p` owning `ids[offsets[p]..offsets[p+1]]`: the clustering job's
    /// levels. The same result as `kmeans` on the gathered rows.
    fn kmeans_items(
        &self,
        pts: &ItemPoints,
        ids: &[u32],
        offsets: &[u32],
        k: &[u32],
        seeds: &[u64],
        max_iter: u32,
    ) -> Result<KmeansResult> {
        check::ids_below("kmeans point ids", ids, pts.rows)?;
        check::kmeans_problems(ids.len(), offsets, k)?;
        check::len("seeds", seeds.len(), k.len(), "number of problems")?;
        if let Some(t) = &pts.dev {
            t.expect("item points", pts.rows, pts.dim, Elem::F32)?;
        }
        // SAFETY: ids, offsets, k and seeds checked above.
        unsafe { self.kmeans_items_unchecked(pts, ids, offsets, k, seeds, max_iter) }
    }
    /// The backend's [`Backend::kmeans_items`]; the default gathers the rows on the host and runs
    /// [`Backend::kmeans`].
    ///
    /// # Safety
    /// The inputs passed the checks of [`Backend::kmeans_items`].
    unsafe fn kmeans_items_unchecked(
        &self,
        pts: &ItemPoints,
        ids: &[u32],
        offsets: &[u32],
        k: &[u32],
        seeds: &[u64],
        max_iter: u32,
    ) -> Result<KmeansResult> {
        host_tensor::kmeans_items(self, pts, ids, offsets, k, seeds, max_iter)
    }

    /// Seed, then Lloyd iterations until no assignment changes or `max_iter` updates.
    /// A problem's result does not depend on which other problems share the batch.
    fn kmeans(&self, batch: &KmeansBatch, seeds: &[u64], max_iter: u32) -> Result<KmeansResult> {
        let centroids = self.kmeans_seed(batch, seeds)?; // validates the batch and the seeds
                                                         // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.lloyd_unchecked(batch, centroids, max_iter) }
    }

    /// Lloyd iterations from the given initial centroids `[Σk, dim]` (what `kmeans` runs after
    /// seeding): assign, then update + assign until no assignment of a problem changes or
    /// `max_iter` updates. GPU backends keep points and centroids on the device throughout.
    fn lloyd(&self, batch: &KmeansBatch, centroids: Vec<f32>, max_iter: u32) -> Result<KmeansResult> {
        check::kmeans(batch)?;
        check::centroids(batch, &centroids)?;
        // SAFETY: the checks above validated every input this backend indexes by.
        unsafe { self.lloyd_unchecked(batch, centroids, max_iter) }
    }

    /// The backend's [`Backend::lloyd`], called after validation. The default chains the
    /// host-level ops.
    ///
    /// # Safety
    /// The inputs must have passed the checks of the checked method: kernels index without bounds checks.
    unsafe fn lloyd_unchecked(&self, batch: &KmeansBatch, centroids: Vec<f32>, max_iter: u32) -> Result<KmeansResult> {
        let mut centroids = centroids;
        let mut assign = self.kmeans_assign(batch, &centroids)?;
        let n_prob = batch.n_problems();
        let mut iterations = vec![0u32; n_prob];
        let mut active = vec![true; n_prob];
        for _ in 0..max_iter {
            if !active.iter().any(|&a| a) {
                break;
            }
            // Converged problems are fixed points of update+assign, so iterating them again
            // changes nothing; only the counters need the mask.
            let next_c = self.kmeans_update(batch, &assign, &centroids)?;
            let next_a = self.kmeans_assign(batch, &next_c)?;
            for p in 0..n_prob {
                if !active[p] {
                    continue;
                }
                iterations[p] += 1;
                let r = batch.range(p);
                if next_a[r.clone()] == assign[r] {
                    active[p] = false;
                }
            }
            centroids = next_c;
            assign = next_a;
        }
        Ok(KmeansResult { assign, centroids, iterations })
    }
}

/// Which backend to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    Cpu,
    Cuda,
    Wgpu,
    #[default]
    Auto,
}

impl std::str::FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(BackendChoice::Cpu),
            "cuda" => Ok(BackendChoice::Cuda),
            "wgpu" => Ok(BackendChoice::Wgpu),
            "auto" => Ok(BackendChoice::Auto),
            _ => Err(Error::BadShape { field: "backend", value: 0, why: "expected cpu, cuda, wgpu or auto" }),
        }
    }
}

/// Open a backend. `Auto` tries CUDA, then a real GPU through wgpu, then the CPU; the returned
/// note says which was chosen and why the others were skipped.
pub fn open(choice: BackendChoice) -> Result<(Arc<dyn Backend>, String)> {
    match choice {
        BackendChoice::Cpu => Ok((Arc::new(cpu::CpuBackend::new()), "cpu: asked for".into())),
        BackendChoice::Cuda => open_cuda().map(|b| (b, "cuda: asked for".into())),
        BackendChoice::Wgpu => open_wgpu(true).map(|b| (b, "wgpu: asked for".into())),
        BackendChoice::Auto => {
            let mut skipped = Vec::new();
            match open_cuda() {
                Ok(b) => return Ok((b, "auto chose cuda".into())),
                Err(e) => skipped.push(e.to_string()),
            }
            match open_wgpu(false) {
                Ok(b) => return Ok((b, format!("auto chose wgpu ({})", skipped.join("; ")))),
                Err(e) => skipped.push(e.to_string()),
            }
            Ok((Arc::new(cpu::CpuBackend::new()), format!("auto chose cpu ({})", skipped.join("; "))))
        }
    }
}

#[allow(unreachable_code)]
fn open_cuda() -> Result<Arc<dyn Backend>> {
    #[cfg(feature = "cuda")]
    {
        return Ok(Arc::new(crate::backend::cuda::CudaBackend::new(0)?));
    }
    Err(Error::BackendUnavailable { backend: "cuda", why: "this build has no `cuda` feature".into() })
}

/// `allow_cpu_adapter`: lavapipe (a CPU Vulkan driver) only when wgpu is asked for by name.
#[allow(unreachable_code, unused_variables)]
fn open_wgpu(allow_cpu_adapter: bool) -> Result<Arc<dyn Backend>> {
    #[cfg(feature = "wgpu")]
    {
        return Ok(Arc::new(crate::backend::wgpu::WgpuBackend::new(allow_cpu_adapter)?));
    }
    Err(Error::BackendUnavailable { backend: "wgpu", why: "this build has no `wgpu` feature".into() })
}

static NEXT_DEVICE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh id for a backend instance.
pub fn next_device_id() -> u64 {
    NEXT_DEVICE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "wgpu")]
pub mod wgpu;
