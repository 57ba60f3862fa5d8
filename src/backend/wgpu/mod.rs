//! The WGSL backend (wgpu 30 on Vulkan): every op of [`Backend`] as compute shaders under
//! `shaders/<stem>.wgsl`, one Rust module per stem beside this file.
//!
//! - Device: Vulkan only. `new(false)` refuses a CPU adapter (lavapipe), `new(true)` prefers a
//!   real GPU and accepts lavapipe. SUBGROUP and SHADER_F16 are requested only when the adapter
//!   has them; [`WgpuOptions`] (or `TWIN_WGPU_NO_SUBGROUPS=1`, `TWIN_WGPU_NO_F16=1`) forces the
//!   workgroup-memory reductions / f32 table storage so both paths can be tested anywhere.
//! - Shaders are specialised by a tiny line preprocessor (`//#if NAME`, `//#else`, `//#endif`)
//!   on the flags SUBGROUP and T0_F16/T1_F16/T2_F16 (storage type of the table in slot 0/1/2,
//!   exposed to WGSL as `t0_t`, `t1_t`, `t2_t`). Each (stem, entry, flags) pipeline and its
//!   explicit bind-group layout is compiled once per device and cached.
//! - Parameters: one `bytemuck` uniform struct per op (binding 0), storage buffers after it.
//! - Every call is wrapped in validation + out-of-memory error scopes: a wgpu validation error
//!   becomes `Error::Driver` (the wgpu error kept as its source), never a panic.
//! - Buffers larger than the adapter's max storage binding are split: tables into row chunks
//!   (the gather runs once per chunk), batches into groups of ids / requests / problems. The
//!   online ops bind P_Q/P_K/P_V/cross values whole: when one is chunked, the rows a call needs
//!   are first gathered into a compact per-call table (`split.rs`).
//!
//! Files: `device.rs` (options, adapter choice, device creation), `pipelines.rs` (the pipeline
//! cache, bind-group layouts, dispatch), `buffers.rs` (uploads, outputs, readbacks, error
//! scopes, resident tables), `pool.rs` (the buffer pool), `tensor.rs` (device tensors and
//! `DeviceOps`), and one file per op; this file holds the backend and its `Backend` dispatch.

mod attn;
mod bce;
mod bias_act;
mod buffers;
mod cluster_tree;
mod copy_rows;
mod cross_bias;
mod device;
mod esu;
mod gather;
mod gemm;
mod gsu_topk;
mod kmeans;
mod kmeans_seed;
mod log_size_bias;
mod measure;
mod online;
mod optim;
mod pipelines;
mod pool;
mod segment_sum;
mod split;
mod tensor;
mod train_rows;
mod wgsl;

pub use buffers::WgpuTable;
pub(crate) use buffers::{pack, split_by, words_f32, words_u32, Readback};
pub use device::WgpuOptions;
pub(crate) use pipelines::{grid, Pipe, B, F_T0_F16, F_T1_F16, F_T2_F16};
pub use pool::PoolStats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{
    check, AttnGrads, AttnOut, AttnSaved, Backend, BackendKind, CrossBwdIn, CrossDims, CrossTableGrads, DeviceTable, GemmKind, HostTable,
    ItemPoints, KmeansBatch, KmeansResult, OnlineBatch, OnlineOutput, OnlineTables, Tensor, TopK, TransferCounter, Transfers, TreeJob,
    TreeResult,
};
use crate::error::{Error, Result};

/// Which GSU kernel `gsu_topk`/`online` use.
pub use crate::backend::versions::{EsuVersion, GsuVersion, KernelVersions, KmeansVersion};

/// The WGSL backend on one Vulkan device (opened in device.rs).
pub struct WgpuBackend {
    id: u64,
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    subgroups: bool,
    f16: bool,
    subgroup_range: (u32, u32),
    max_binding: u64,
    opts: WgpuOptions,
    pipes: Mutex<HashMap<(&'static str, u32), Arc<Pipe>>>,
    copies: TransferCounter,
    pool: Arc<pool::Pool>,
}

/// A failure during `op`: wgpu's own error → `Error::Driver` (kept typed, see `DriverError`); a
/// message from a host-side check of what the device returned → `Error::Device`.
fn dev_err(op: &'static str, e: impl WgpuFailure) -> Error {
    e.into_error(op)
}

/// What `dev_err` takes: each wgpu error type the backend sees, or a check's message.
pub(crate) trait WgpuFailure {
    fn into_error(self, op: &'static str) -> Error;
}

macro_rules! wgpu_driver_failure {
    ($($t:ty),*) => {$(
        impl WgpuFailure for $t {
            fn into_error(self, op: &'static str) -> Error {
                Error::driver("wgpu", op, self)
            }
        }
    )*};
}
wgpu_driver_failure!(wgpu::Error, wgpu::PollError, wgpu::BufferAsyncError, wgpu::MapRangeError, crate::error::DriverError);

/// The map callback was dropped without being called: the map never completed.
impl WgpuFailure for std::sync::mpsc::RecvError {
    fn into_error(self, op: &'static str) -> Error {
        Error::driver("wgpu", op, wgpu::BufferAsyncError)
    }
}

impl WgpuFailure for String {
    fn into_error(self, op: &'static str) -> Error {
        Error::Device { backend: "wgpu", op, message: self }
    }
}

impl Backend for WgpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Wgpu
    }
    fn device_id(&self) -> u64 {
        self.id
    }
    fn describe(&self) -> String {
        format!(
            "wgpu: {} ({:?}, {:?}, driver {} {}), subgroups {} (size {}..{}), f16 tables {}, max binding {} MiB, GSU {}, ESU {}, k-means {}",
            self.info.name,
            self.info.device_type,
            self.info.backend,
            self.info.driver,
            self.info.driver_info,
            if self.subgroups { "on" } else { "off" },
            self.subgroup_range.0,
            self.subgroup_range.1,
            if self.f16 { "f16" } else { "f32" },
            self.max_binding >> 20,
            self.opts.versions.gsu.min(GsuVersion::V2).name(),
            self.opts.versions.esu.name(),
            self.opts.versions.kmeans.name()
        )
    }

    fn transfers(&self) -> Transfers {
        self.copies.get()
    }

    unsafe fn upload_table_unchecked(&self, name: &'static str, table: &HostTable) -> Result<DeviceTable> {
        self.upload_chunked(name, table)
    }

    unsafe fn gather_unchecked(&self, table: &DeviceTable, ids: &[u32]) -> Result<Vec<f32>> {
        gather::gather(self, table, ids)
    }

    unsafe fn cross_bias_unchecked(&self, table: &DeviceTable, rows: &[u32], n_cross: usize) -> Result<Vec<f32>> {
        cross_bias::gather_sum(self, table, rows, n_cross)
    }

    unsafe fn cross_bias_dense_unchecked(&self, e: &[f32], w_c: &[f32], beta: &[f32], dims: CrossDims) -> Result<Vec<f32>> {
        cross_bias::dense(self, e, w_c, beta, dims)
    }

    unsafe fn log_size_bias_unchecked(&self, bias: &[f32], sizes: &[f32], heads: usize) -> Result<Vec<f32>> {
        log_size_bias::log_size_bias(self, bias, sizes, heads)
    }

    unsafe fn gsu_topk_unchecked(&self, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], k: usize) -> Result<TopK> {
        if split::needed(self, t, false)? {
            return split::gsu_topk(self, t, batch, bias, k);
        }
        gsu_topk::gsu_topk(self, t, batch, bias, k)
    }

    unsafe fn esu_unchecked(&self, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], topk: &TopK) -> Result<Vec<f32>> {
        if split::needed(self, t, true)? {
            return split::esu(self, t, batch, bias, topk);
        }
        esu::esu(self, t, batch, bias, topk)
    }

    fn online(&self, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Result<OnlineOutput> {
        check::online(t, batch, k)?;
        if split::needed(self, t, true)? {
            return split::online(self, t, batch, k);
        }
        esu::online(self, t, batch, k)
    }

    unsafe fn attn_fwd_unchecked(&self, heads: usize, q: &[f32], k: &[f32], v: &[f32], bias: &[f32], offsets: &[u32]) -> Result<AttnOut> {
        attn::attn_fwd(self, heads, q, k, v, bias, offsets)
    }

    unsafe fn attn_bwd_unchecked(&self, heads: usize, x: AttnSaved<'_>, dpooled: &[f32]) -> Result<AttnGrads> {
        attn::attn_bwd(self, heads, x, dpooled)
    }

    unsafe fn segment_sum_unchecked(&self, src: &[f32], width: usize, perm: &[u32], seg_offsets: &[u32]) -> Result<Vec<f32>> {
        segment_sum::segment_sum(self, src, width, perm, seg_offsets)
    }

    unsafe fn gemm_unchecked(&self, kind: GemmKind, a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Result<Vec<f32>> {
        gemm::gemm(self, kind, a, b, m, k, n)
    }

    unsafe fn cross_tables_bwd_unchecked(&self, x: CrossBwdIn<'_>) -> Result<CrossTableGrads<f32>> {
        cross_bias::cross_tables_bwd(self, x)
    }

    unsafe fn bce_unchecked(&self, logits: &[f32], labels: &[f32]) -> Result<(f64, Vec<f32>)> {
        bce::bce(self, logits, labels)
    }

    unsafe fn kmeans_assign_unchecked(&self, batch: &KmeansBatch, centroids: &[f32]) -> Result<Vec<u32>> {
        kmeans::assign(self, batch, centroids)
    }

    unsafe fn kmeans_update_unchecked(&self, batch: &KmeansBatch, assign: &[u32], prev: &[f32]) -> Result<Vec<f32>> {
        kmeans::update(self, batch, assign, prev)
    }

    unsafe fn lloyd_unchecked(&self, batch: &KmeansBatch, centroids: Vec<f32>, max_iter: u32) -> Result<KmeansResult> {
        kmeans::lloyd(self, batch, kmeans::Init::Host(&centroids), max_iter)
    }

    fn kmeans_seed(&self, batch: &KmeansBatch, seeds: &[u64]) -> Result<Vec<f32>> {
        check::kmeans(batch)?;
        check::len("seeds", seeds.len(), batch.n_problems(), "number of problems")?;
        kmeans_seed::seed(self, batch, seeds)
    }

    /// Seeding and Lloyd on the device in one command buffer: one upload, one download.
    fn kmeans(&self, batch: &KmeansBatch, seeds: &[u64], max_iter: u32) -> Result<KmeansResult> {
        check::kmeans(batch)?;
        check::len("seeds", seeds.len(), batch.n_problems(), "number of problems")?;
        match kmeans_seed::plan(batch) {
            Some(per) => kmeans::lloyd(self, batch, kmeans::Init::Seed(seeds, per), max_iter),
            None => {
                let init = super::cpu::kmeans::seed_all(batch, seeds);
                kmeans::lloyd(self, batch, kmeans::Init::Host(&init), max_iter)
            }
        }
    }

    /// The embeddings resident for `kmeans_tree` (cluster_tree.rs).
    fn item_points_native(&self, emb: &[f32], rows: usize, dim: usize) -> Result<Option<Tensor>> {
        cluster_tree::item_points(self, emb, rows, dim)
    }

    /// The whole tree on the device: one upload, one status download a level, one final download.
    unsafe fn kmeans_tree_unchecked(&self, pts: &ItemPoints, job: &TreeJob) -> Result<TreeResult> {
        cluster_tree::tree(self, pts, job)
    }
}
