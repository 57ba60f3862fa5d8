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
pub mod cpu_fast;
mod device;
pub(crate) mod host_tensor;
mod host_train;
mod open;
mod tensor;
mod train_rows;
mod transfers;
mod types;
pub mod versions;

pub use device::DeviceOps;
pub use tensor::{
    f32s, words, Act, AttnDev, AttnGradsDev, BceDev, Elem, F32Slot, HostMem, IdSlot, ItemPoints, LossForm, OffsetsSlot, OnlineDev,
    OnlineSlot, Rows, Staged, Staging, Tensor, STAGE_ALIGN_WORDS,
};
pub use train_rows::{CrossGradsDev, CrossParams, FeatTables, GsuTrainIn, GsuTrainOut, TwinBounds, TwinRowsIn, TwinRowsSlot};
pub use transfers::{TransferCounter, Transfers};

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
pub use open::{next_device_id, open, BackendChoice};
pub use types::*;
pub use versions::{EsuVersion, GsuVersion, KernelVersions, KmeansVersion};

/// The engine's kernels. Object safe: callers hold `Arc<dyn Backend>`.
///
/// Ops that return host vectors exist so each kernel can be tested and benchmarked on its own;
/// the composite ops (`online`, `kmeans`) have default implementations that chain them, which
/// GPU backends override with fused, device-resident versions.
pub trait Backend: DeviceOps {
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

    /// The clustering job's whole hierarchy (SPEC §4.2): every level's k-means and partition,
    /// as specified in `cpu::cluster_tree`. Device backends keep the points, the levels and the
    /// partitions on the device and download only a few status words per level and the final
    /// clusters; the default runs the reference loop over [`Backend::kmeans_items`].
    fn kmeans_tree(&self, pts: &ItemPoints, job: &TreeJob) -> Result<TreeResult> {
        check::tree_job(job, pts.rows)?;
        if let Some(t) = &pts.dev {
            t.expect("item points", pts.rows, pts.dim, Elem::F32)?;
        }
        // SAFETY: the job was checked against the points above.
        unsafe { self.kmeans_tree_unchecked(pts, job) }
    }
    /// The backend's [`Backend::kmeans_tree`].
    ///
    /// # Safety
    /// The job passed [`check::tree_job`] against `pts`.
    unsafe fn kmeans_tree_unchecked(&self, pts: &ItemPoints, job: &TreeJob) -> Result<TreeResult> {
        cpu::cluster_tree::tree(self, pts, job)
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
        // The batch and the first centroids were checked by `lloyd`; every later centroid comes
        // from `kmeans_update` of those checked points, so the per-call checks (a scan of every
        // point, twice per iteration) are skipped.
        let mut centroids = centroids;
        // SAFETY: validated by the caller (see above).
        let mut assign = unsafe { self.kmeans_assign_unchecked(batch, &centroids)? };
        let n_prob = batch.n_problems();
        let mut iterations = vec![0u32; n_prob];
        let mut active = vec![true; n_prob];
        for _ in 0..max_iter {
            if !active.iter().any(|&a| a) {
                break;
            }
            // Converged problems are fixed points of update+assign, so iterating them again
            // changes nothing; only the counters need the mask.
            // SAFETY: `assign` holds one in-range index per point (it came from the assignment)
            // and `centroids` has Σk rows, as the checks at entry required.
            let next_c = unsafe { self.kmeans_update_unchecked(batch, &assign, &centroids)? };
            // SAFETY: as above; `next_c` has the same shape as `centroids`.
            let next_a = unsafe { self.kmeans_assign_unchecked(batch, &next_c)? };
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

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "wgpu")]
pub mod wgpu;
