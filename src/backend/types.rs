//! The data the backend trait's ops take and return: tables on the host and on a device, online
//! batches and their results, k-means problems, training-attention and cross-table operands.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use half::f16;

use super::check;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Cpu,
    Cuda,
    Wgpu,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum DType {
    F32,
    F16,
}

/// A host-side table `[rows, cols]`, row-major.
#[derive(Clone, Debug)]
pub enum TableData {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

#[derive(Clone, Debug)]
pub struct HostTable {
    pub rows: usize,
    pub cols: usize,
    pub data: TableData,
}

impl HostTable {
    pub fn f32(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        check::len("table data", data.len(), rows * cols, "rows * cols")?;
        Ok(HostTable { rows, cols, data: TableData::F32(data) })
    }
    pub fn f16(rows: usize, cols: usize, data: Vec<f16>) -> Result<Self> {
        check::len("table data", data.len(), rows * cols, "rows * cols")?;
        Ok(HostTable { rows, cols, data: TableData::F16(data) })
    }
    pub fn dtype(&self) -> DType {
        match self.data {
            TableData::F32(_) => DType::F32,
            TableData::F16(_) => DType::F16,
        }
    }
    /// The same table stored as f16 (round to nearest even).
    pub fn to_f16(&self) -> HostTable {
        let data = match &self.data {
            TableData::F32(v) => v.iter().map(|&x| f16::from_f32(x)).collect(),
            TableData::F16(v) => v.clone(),
        };
        HostTable { rows: self.rows, cols: self.cols, data: TableData::F16(data) }
    }
    /// Element `i` widened to f32.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match &self.data {
            TableData::F32(v) => v[i],
            TableData::F16(v) => v[i].to_f32(),
        }
    }
    /// Row `r` widened to f32, appended to `out`.
    pub fn extend_row(&self, r: usize, out: &mut Vec<f32>) {
        let (a, b) = (r * self.cols, (r + 1) * self.cols);
        match &self.data {
            TableData::F32(v) => out.extend_from_slice(&v[a..b]),
            TableData::F16(v) => out.extend(v[a..b].iter().map(|x| x.to_f32())),
        }
    }
}

/// A table resident on a backend (device memory for GPU backends), built by
/// [`Backend::upload_table`]. Cheap to clone; the backend downcasts `inner` to its own type.
#[derive(Clone)]
pub struct DeviceTable {
    pub name: &'static str,
    pub rows: usize,
    pub cols: usize,
    pub dtype: DType,
    pub backend: BackendKind,
    /// Identifies the backend instance (device) that owns the memory.
    pub device_id: u64,
    pub inner: Arc<dyn Any + Send + Sync>,
}

impl fmt::Debug for DeviceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceTable({} [{}x{}] {:?} on {})", self.name, self.rows, self.cols, self.dtype, self.backend)
    }
}

impl DeviceTable {
    /// Downcast to the backend's own storage type, or say whose table this is.
    pub fn downcast<T: 'static>(&self, caller: BackendKind, caller_id: u64) -> Result<&T> {
        if self.backend != caller || self.device_id != caller_id {
            return Err(Error::ForeignTable {
                table: self.name,
                owner: format!("{}#{}", self.backend, self.device_id),
                caller: format!("{}#{}", caller, caller_id),
            });
        }
        self.inner.downcast_ref::<T>().ok_or_else(|| Error::ForeignTable {
            table: self.name,
            owner: format!("{}#{}", self.backend, self.device_id),
            caller: format!("{}#{}", caller, caller_id),
        })
    }
}

/// The model's tables for the online path, resident on one backend. Built once per model
/// version (`model::Model::online_tables`), shared by every request.
#[derive(Clone, Debug)]
pub struct OnlineTables {
    /// `P_Q, P_K, P_V`: `[n_items, D]`, f32 or f16.
    pub p_q: DeviceTable,
    pub p_k: DeviceTable,
    pub p_v: DeviceTable,
    /// `t_{a,j}[v] = β_{a,j} (E_j[v] · w^c_{a,j})`: `[V, h]` f32, row `cross_offsets[j] + v`.
    pub cross_bias: DeviceTable,
    /// `U_j[v] = E_j[v] W^{vc}[8j..8j+8, :]`: `[V, D]` f32, the cross part of values.
    pub cross_value: DeviceTable,
    /// `W^o`: `[D, D]` f32, `out = pooled · W^o`.
    pub w_o: DeviceTable,
    /// `[J + 1]` row offsets of each cross feature's vocabulary in the cross tables.
    pub cross_offsets: Vec<u32>,
    pub heads: usize,
}

impl OnlineTables {
    pub fn n_items(&self) -> usize {
        self.p_k.rows
    }
    pub fn d_model(&self) -> usize {
        self.p_k.cols
    }
    pub fn n_cross(&self) -> usize {
        self.cross_offsets.len().saturating_sub(1)
    }
    pub fn d_head(&self) -> usize {
        self.d_model() / self.heads.max(1)
    }
}

/// A batch of online requests (SPEC §3): ragged, flat.
#[derive(Clone, Copy, Debug)]
pub struct OnlineBatch<'a> {
    /// `[R + 1]`: behaviours of request `r` are `seq_offsets[r]..seq_offsets[r+1]`.
    pub seq_offsets: &'a [u32],
    /// `[ΣL]` item ids of the behaviours (TWIN-V2: of the virtual items).
    pub items: &'a [u32],
    /// `[ΣL * J]` cross-table rows (`cross_offsets[j] + bucket`), behaviour-major.
    pub cross: &'a [u32],
    /// `[ΣL]` cluster sizes `n ≥ 1` (1 for raw behaviours).
    pub sizes: &'a [f32],
    /// `[R + 1]`: candidates of request `r` are `cand_offsets[r]..cand_offsets[r+1]`.
    pub cand_offsets: &'a [u32],
    /// `[ΣB]` candidate item ids.
    pub cands: &'a [u32],
}

impl OnlineBatch<'_> {
    pub fn n_requests(&self) -> usize {
        self.seq_offsets.len().saturating_sub(1)
    }
    pub fn seq_range(&self, r: usize) -> std::ops::Range<usize> {
        self.seq_offsets[r] as usize..self.seq_offsets[r + 1] as usize
    }
    pub fn cand_range(&self, r: usize) -> std::ops::Range<usize> {
        self.cand_offsets[r] as usize..self.cand_offsets[r + 1] as usize
    }
}

/// An owned [`OnlineBatch`], built request by request.
#[derive(Clone, Debug, Default)]
pub struct OnlineRequests {
    pub seq_offsets: Vec<u32>,
    pub items: Vec<u32>,
    pub cross: Vec<u32>,
    pub sizes: Vec<f32>,
    pub cand_offsets: Vec<u32>,
    pub cands: Vec<u32>,
}

impl OnlineRequests {
    pub fn new() -> Self {
        OnlineRequests { seq_offsets: vec![0], cand_offsets: vec![0], ..Default::default() }
    }
    /// Append one request. `cross` is `[L * J]`, `sizes` `[L]`.
    pub fn push(&mut self, items: &[u32], cross: &[u32], sizes: &[f32], cands: &[u32]) {
        self.items.extend_from_slice(items);
        self.cross.extend_from_slice(cross);
        self.sizes.extend_from_slice(sizes);
        self.cands.extend_from_slice(cands);
        self.seq_offsets.push(self.items.len() as u32);
        self.cand_offsets.push(self.cands.len() as u32);
    }
    pub fn as_batch(&self) -> OnlineBatch<'_> {
        OnlineBatch {
            seq_offsets: &self.seq_offsets,
            items: &self.items,
            cross: &self.cross,
            sizes: &self.sizes,
            cand_offsets: &self.cand_offsets,
            cands: &self.cands,
        }
    }
}

/// GSU result: for each of the `ΣB` candidates, up to `k` positions local to its request's
/// sequence (`0..L_r`), in descending score order (ties: larger position first).
/// Row `i` holds `count[i] = min(k, L_r)` entries; the rest are `u32::MAX` / `-inf`.
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    pub k: usize,
    pub idx: Vec<u32>,
    pub score: Vec<f32>,
    pub count: Vec<u32>,
}

impl TopK {
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let n = self.count[i] as usize;
        (&self.idx[i * self.k..i * self.k + n], &self.score[i * self.k..i * self.k + n])
    }
}

/// Output of the whole online path for a batch.
#[derive(Clone, Debug)]
pub struct OnlineOutput {
    pub topk: TopK,
    /// `[ΣB, D]`: `concat_a(Σ_l p_{b,l,a} v_{l,a}) W^o`.
    pub out: Vec<f32>,
}

/// Many independent k-means problems over `dim`-dimensional points (SPEC §4.3).
#[derive(Clone, Copy, Debug)]
pub struct KmeansBatch<'a> {
    pub dim: usize,
    /// `[N, dim]` points of all problems, problem by problem.
    pub points: &'a [f32],
    /// `[P + 1]`: problem `p` owns points `offsets[p]..offsets[p+1]`.
    pub offsets: &'a [u32],
    /// `[P]`: number of centroids of each problem, `1 ≤ k ≤ n_p`.
    pub k: &'a [u32],
}

impl KmeansBatch<'_> {
    pub fn n_problems(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    /// `[P + 1]` prefix sums of `k`: problem `p`'s centroids are rows `c[p]..c[p+1]`.
    pub fn centroid_offsets(&self) -> Vec<u32> {
        let mut o = Vec::with_capacity(self.k.len() + 1);
        let mut acc = 0u32;
        o.push(0);
        for &k in self.k {
            acc += k;
            o.push(acc);
        }
        o
    }
    pub fn range(&self, p: usize) -> std::ops::Range<usize> {
        self.offsets[p] as usize..self.offsets[p + 1] as usize
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct KmeansResult {
    /// `[N]` centroid index local to the point's problem (`0..k_p`).
    pub assign: Vec<u32>,
    /// `[Σk, dim]` final centroids.
    pub centroids: Vec<f32>,
    /// `[P]` Lloyd iterations run per problem.
    pub iterations: Vec<u32>,
}

/// [`Backend::attn_fwd`]'s outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttnOut {
    /// `[N, h]` softmax weights.
    pub p: Vec<f32>,
    /// `[B, D]`.
    pub pooled: Vec<f32>,
}

/// What [`Backend::attn_bwd`] reads: the forward's inputs and its `p`.
#[derive(Clone, Copy, Debug)]
pub struct AttnSaved<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub bias: &'a [f32],
    pub offsets: &'a [u32],
    pub p: &'a [f32],
}

/// [`Backend::attn_bwd`]'s outputs: `dq [B, D]`, `dk, dv [N, D]`, `dbias [N, h]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttnGrads {
    pub dq: Vec<f32>,
    pub dk: Vec<f32>,
    pub dv: Vec<f32>,
    pub dbias: Vec<f32>,
}

/// Operand layout of [`Backend::gemm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKind {
    /// `a [m, k] · b [k, n]`
    NN,
    /// `a [m, k] · b[n, k]ᵀ`
    NT,
    /// `a[k, m]ᵀ · b [k, n]`
    TN,
}

/// [`Backend::cross_tables_bwd`]'s inputs: table gradients `dcb [V, h]`, `dcv [V, D]` and the
/// parameters `e [V, C]`, `w_c [h, J, C]`, `beta [h, J]`, `w_vc [J*C, D]`, `offsets [J + 1]`.
/// Generic so the f64 training reference shares it; backends take f32.
#[derive(Clone, Copy, Debug)]
pub struct CrossBwdIn<'a, T = f32> {
    pub dcb: &'a [T],
    pub dcv: &'a [T],
    pub e: &'a [T],
    pub w_c: &'a [T],
    pub beta: &'a [T],
    pub w_vc: &'a [T],
    pub offsets: &'a [u32],
    pub dims: CrossDims,
}

/// Shapes of the training-form cross bias.
#[derive(Clone, Copy, Debug)]
pub struct CrossDims {
    pub heads: usize,
    pub n_cross: usize,
    pub dim: usize,
}

/// One clustering job's hierarchy (SPEC §4.2) for [`Backend::kmeans_tree`]: `R` root problems
/// (a user's completion group each), root `r` owning points `offsets[r]..offsets[r+1]` of `ids`
/// (rows of the resident item embeddings), listed in ascending history position.
#[derive(Clone, Copy, Debug)]
pub struct TreeJob<'a> {
    /// `[N]` item id (row of the item points) of every point.
    pub ids: &'a [u32],
    /// `[R + 1]`; every root holds at least `gamma` points.
    pub offsets: &'a [u32],
    /// `[R]` per-root RNG stream: a depth-`d` problem of root `r` seeds k-means++ with
    /// `rng::derive_seed_extend(streams[r], d)`.
    pub streams: &'a [u64],
    /// γ: a part with fewer points is a final cluster.
    pub gamma: u32,
    /// Lloyd iterations per k-means at most.
    pub max_iter: u32,
}

/// What [`Backend::kmeans_tree`] did, summed over its levels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Levels that ran k-means.
    pub levels: u32,
    /// k-means problems solved.
    pub problems: u64,
    /// Problems whose k-means left one non-empty part (cut by position instead).
    pub forced: u64,
    /// `Σ n_p (it_p + 1)`, `Σ n_p it_p`, `Σ n_p k_p (it_p + 1)` (see `cluster::ClusterStats`).
    pub assign_points: u64,
    pub update_points: u64,
    pub assign_distances: u64,
}

/// [`Backend::kmeans_tree`]'s final clusters, in the order the levels produce them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TreeResult {
    /// `[N]` point indices (into the job's `ids`), cluster by cluster, ascending in a cluster.
    pub members: Vec<u32>,
    /// `[C + 1]` offsets into `members`.
    pub offsets: Vec<u32>,
    /// `[C]` root problem of each cluster.
    pub root: Vec<u32>,
    pub stats: TreeStats,
}
