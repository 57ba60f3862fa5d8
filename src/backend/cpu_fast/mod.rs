//! The fast CPU backend: what `--backend cpu` and `auto` without a GPU run. The online path
//! (GSU as blocked f32 GEMM tiles selected as they are produced, ESU, f16 tables widened with
//! F16C), k-means assignment and the dense GEMMs are its own; every other op runs the
//! reference's code (`cpu`, kept exactly as it is and selectable as `cpu-ref`), which is also
//! the oracle the parity tests check this backend against (tests/parity, label `cpu-fast`).
//!
//! Its results differ from the reference by f32 rounding where it sums in f32 (GSU scores,
//! ESU); k-means assignments are bit-identical (screened by a GEMM, survivors recomputed as the
//! reference does: see `kmeans`), so clusters are too.

mod esu;
mod gsu_topk;
mod kmeans;
mod online;
mod scratch;
mod widen;

use std::sync::Arc;

use super::cpu::{self, attn, bce, cross_bias, gather, log_size_bias, segment_sum};
use super::{
    check, AttnGrads, AttnOut, AttnSaved, Backend, BackendKind, CrossBwdIn, CrossDims, CrossTableGrads, DeviceTable, GemmKind, HostTable,
    KmeansBatch, OnlineBatch, OnlineOutput, OnlineTables, TableData, TopK,
};
use crate::error::Result;

pub struct CpuFastBackend {
    id: u64,
    pools: online::Pools,
}

impl CpuFastBackend {
    pub fn new() -> Self {
        CpuFastBackend { id: super::next_device_id(), pools: online::Pools { f32s: scratch::Pool::new(), pairs: scratch::Pool::new() } }
    }
    fn table<'a>(&self, t: &'a DeviceTable) -> Result<&'a HostTable> {
        t.downcast::<HostTable>(BackendKind::Cpu, self.id)
    }
    /// GSU (and ESU when `with_esu`) on the fast path.
    fn run(&self, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], k: usize, with_esu: bool) -> Result<(TopK, Vec<f32>)> {
        let w_o = self.table(&t.w_o)?;
        let widened;
        let w_o: &[f32] = match &w_o.data {
            TableData::F32(v) => v,
            TableData::F16(v) => {
                widened = v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
                &widened
            }
        };
        let x = online::Ctx { p_q: self.table(&t.p_q)?, esu: self.esu_tabs(t, w_o)?, batch, bias, k, with_esu };
        online::run(&self.pools, &x)
    }
    fn esu_tabs<'a>(&self, t: &'a OnlineTables, w_o: &'a [f32]) -> Result<esu::EsuTabs<'a>> {
        Ok(esu::EsuTabs {
            p_k: self.table(&t.p_k)?,
            p_v: self.table(&t.p_v)?,
            cross_value: self.table(&t.cross_value)?,
            w_o,
            n_cross: t.n_cross(),
            heads: t.heads,
        })
    }
}

impl Default for CpuFastBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Host memory, as the reference: the trait's host implementations of the tensor ops.
impl crate::backend::DeviceOps for CpuFastBackend {
    fn as_backend(&self) -> &dyn Backend {
        self
    }
}

impl Backend for CpuFastBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }
    fn device_id(&self) -> u64 {
        self.id
    }
    fn describe(&self) -> String {
        let f16c = if cfg!(any(target_arch = "x86", target_arch = "x86_64")) && f16c() { ", F16C" } else { "" };
        format!("cpu-fast ({} threads{f16c})", rayon::current_num_threads())
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
        Ok(self.run(t, batch, bias, k, false)?.0)
    }

    unsafe fn esu_unchecked(&self, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], topk: &TopK) -> Result<Vec<f32>> {
        let w_o: Vec<f32> = {
            let w = self.table(&t.w_o)?;
            (0..w.rows * w.cols).map(|i| w.get(i)).collect()
        };
        Ok(esu::esu(&self.esu_tabs(t, &w_o)?, self.table(&t.p_q)?, batch, bias, topk))
    }

    /// GSU and ESU fused per request: the key rows gathered for the GSU serve ESU too.
    fn online(&self, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Result<OnlineOutput> {
        check::online(t, batch, k)?;
        let cross = self.cross_bias(&t.cross_bias, batch.cross, t.n_cross())?;
        let bias = self.log_size_bias(&cross, batch.sizes, t.heads)?;
        let (topk, out) = self.run(t, batch, &bias, k, true)?;
        Ok(OnlineOutput { topk, out })
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
            GemmKind::NN => cpu::gemm::mm(a, m, k, b, n),
            GemmKind::NT => cpu::gemm::mm_nt(a, m, k, b, n),
            GemmKind::TN => cpu::gemm::mm_tn(a, k, m, b, n),
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
        Ok(cpu::kmeans::update(batch, assign, prev))
    }
}

/// Whether this CPU converts f16 with F16C (the `half` crate detects it the same way).
fn f16c() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        false
    }
}
