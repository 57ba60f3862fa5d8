//! The CPU backend: SPEC.md implemented literally, the reference for every GPU kernel.
//! Multi-threaded with rayon over requests/candidates/points; long reductions in f64.

pub mod attn;
pub mod bce;
pub mod bias_act;
pub mod cluster_tree;
pub mod copy_rows;
pub mod cross_bias;
pub mod esu;
pub mod gather;
pub mod gemm;
pub mod gsu_topk;
pub mod gsu_train;
pub mod kmeans;
pub mod log_size_bias;
pub mod optim;
mod real;
pub mod segment_sum;
pub mod twin_rows;

pub use real::{dot, Real};

use std::sync::Arc;

use super::{
    AttnGrads, AttnOut, AttnSaved, Backend, BackendKind, CrossBwdIn, CrossDims, CrossTableGrads, DeviceTable, GemmKind, HostTable,
    KmeansBatch, OnlineBatch, OnlineTables, TopK,
};
use crate::error::Result;

/// `Σ a_i b_i` in f64 with eight independent accumulators (combined in a fixed order): each
/// product of two f32 is exact in f64, and the split breaks the add-latency chain.
#[inline]
pub fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let n8 = a.len().min(b.len()) / 8 * 8;
    let mut acc = [0f64; 8];
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for j in 0..8 {
            acc[j] += ca[j] as f64 * cb[j] as f64;
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (x, y) in a[n8..].iter().zip(&b[n8..]) {
        s += *x as f64 * *y as f64;
    }
    s
}

pub struct CpuBackend {
    id: u64,
}

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend { id: super::next_device_id() }
    }
    pub(crate) fn table<'a>(&self, t: &'a DeviceTable) -> Result<&'a HostTable> {
        t.downcast::<HostTable>(BackendKind::Cpu, self.id)
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// The CPU backend's tensors are host memory: the trait's host implementations as they are.
impl crate::backend::DeviceOps for CpuBackend {
    fn as_backend(&self) -> &dyn Backend {
        self
    }
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }
    fn device_id(&self) -> u64 {
        self.id
    }
    fn describe(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    unsafe fn upload_table_unchecked(&self, name: &'static str, table: &HostTable) -> Result<DeviceTable> {
        Ok(DeviceTable {
            name,
            rows: table.rows,
            cols: table.cols,
            dtype: table.dtype(),
            backend: BackendKind::Cpu,
            device_id: self.id,
            inner: Arc::new(table.clone()),
        })
    }

    unsafe fn gather_unchecked(&self, table: &DeviceTable, ids: &[u32]) -> Result<Vec<f32>> {
        Ok(gather::gather(self.table(table)?, ids))
    }

    unsafe fn cross_bias_unchecked(&self, table: &DeviceTable, rows: &[u32], n_cross: usize) -> Result<Vec<f32>> {
        Ok(cross_bias::gather_sum(self.table(table)?, rows, n_cross))
    }

    unsafe fn cross_bias_dense_unchecked(&self, e: &[f32], w_c: &[f32], beta: &[f32], dims: CrossDims) -> Result<Vec<f32>> {
        Ok(cross_bias::dense(e, w_c, beta, dims))
    }

    unsafe fn log_size_bias_unchecked(&self, bias: &[f32], sizes: &[f32], heads: usize) -> Result<Vec<f32>> {
        Ok(log_size_bias::log_size_bias(bias, sizes, heads))
    }

    unsafe fn gsu_topk_unchecked(&self, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], k: usize) -> Result<TopK> {
        gsu_topk::gsu_topk(self.table(&t.p_q)?, self.table(&t.p_k)?, t.heads, batch, bias, k)
    }

    unsafe fn esu_unchecked(&self, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], topk: &TopK) -> Result<Vec<f32>> {
        let tabs = esu::EsuTables {
            p_q: self.table(&t.p_q)?,
            p_k: self.table(&t.p_k)?,
            p_v: self.table(&t.p_v)?,
            cross_value: self.table(&t.cross_value)?,
            w_o: self.table(&t.w_o)?,
            n_cross: t.n_cross(),
            heads: t.heads,
        };
        Ok(esu::esu(&tabs, batch, bias, topk))
    }

    unsafe fn attn_fwd_unchecked(&self, heads: usize, q: &[f32], k: &[f32], v: &[f32], bias: &[f32], offsets: &[u32]) -> Result<AttnOut> {
        let (p, pooled) = attn::attn_fwd(attn::AttnIn { heads, q, k, v, bias, offsets });
        Ok(AttnOut { p, pooled })
    }

    unsafe fn attn_bwd_unchecked(&self, heads: usize, x: AttnSaved<'_>, dpooled: &[f32]) -> Result<AttnGrads> {
        let g = attn::attn_bwd(attn::AttnIn { heads, q: x.q, k: x.k, v: x.v, bias: x.bias, offsets: x.offsets }, x.p, dpooled);
        Ok(AttnGrads { dq: g.dq, dk: g.dk, dv: g.dv, dbias: g.dbias })
    }

    unsafe fn segment_sum_unchecked(&self, src: &[f32], width: usize, perm: &[u32], seg_offsets: &[u32]) -> Result<Vec<f32>> {
        Ok(segment_sum::segment_sum(src, width, perm, seg_offsets))
    }

    unsafe fn gemm_unchecked(&self, kind: GemmKind, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Result<Vec<f32>> {
        Ok(match kind {
            GemmKind::NN => gemm::mm(a, m, k, b, n),
            GemmKind::NT => gemm::mm_nt(a, m, k, b, n),
            GemmKind::TN => gemm::mm_tn(a, k, m, b, n),
        })
    }

    unsafe fn cross_tables_bwd_unchecked(&self, x: CrossBwdIn<'_>) -> Result<CrossTableGrads<f32>> {
        Ok(cross_bias::cross_tables_bwd(x.dcb, x.dcv, x.e, x.w_c, x.beta, x.w_vc, x.offsets, x.dims))
    }

    unsafe fn bce_unchecked(&self, logits: &[f32], labels: &[f32]) -> Result<(f64, Vec<f32>)> {
        Ok(bce::bce(logits, labels))
    }

    unsafe fn kmeans_assign_unchecked(&self, batch: &KmeansBatch, centroids: &[f32]) -> Result<Vec<u32>> {
        Ok(kmeans::assign(batch, centroids))
    }

    unsafe fn kmeans_update_unchecked(&self, batch: &KmeansBatch, assign: &[u32], prev: &[f32]) -> Result<Vec<f32>> {
        Ok(kmeans::update(batch, assign, prev))
    }
}
