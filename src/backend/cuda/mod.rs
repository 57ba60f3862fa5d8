//! The CUDA backend (feature `cuda`): kernels in `kernels/*.cu`, compiled at run time with NVRTC
//! for the device's architecture (sm_90 on H100/H200), loaded through cudarc.
//!
//! - Absence is an error, not a crash: `CudaBackend::new` checks that libcuda and libnvrtc can be
//!   loaded before cudarc touches them (cudarc panics otherwise), turns "no device" into
//!   `Error::BackendUnavailable`, and catches any remaining panic from the driver bindings.
//! - PTX is compiled once per process and architecture (`PTX_CACHE`); each backend instance loads
//!   the modules into its context once, at `new`.
//! - One stream (the context's default stream) carries all work, so stream order is the only
//!   synchronisation needed; cudarc's per-allocation event tracking is switched off.
//! - Every op validates with `check::` exactly like the CPU backend before any device work, so the
//!   kernels index without bounds checks.
//! - `online` runs cross bias → ln n → GSU top-K (fused v2 by default) → ESU → W^o on the device
//!   with one upload of the batch and one download of the results; `kmeans` keeps the points and
//!   centroids on the device across Lloyd iterations; `kmeans_tree` keeps a clustering job's
//!   whole hierarchy there (one upload, a status download per level, one final download).
//!
//! GSU versions: `GsuVersion::V1` (score matrix + per-row select), `GsuVersion::V2` (fused,
//! default) and `GsuVersion::V3` (dots on tensor cores in f16 with f32 accumulation, warp-level
//! selection; not bit-identical to v1/v2). Choose with `CudaBackend::set_gsu_version` or
//! `TWIN_GSU=v1|v2|v3` (src/backend/versions.rs: one switch per op for every backend).
//! ESU versions: `EsuVersion::V1` (a block per candidate) and `EsuVersion::V2` (default: a block
//! per group of up to 8 candidates of one request, W^o staged once per group, the finalists' ids
//! loaded before their rows; bit-identical to v1). `CudaBackend::set_esu_version` or
//! `TWIN_ESU=v1|v2`. k-means: `TWIN_KMEANS=v1|v2` (see kmeans.rs).
//! Kernel names read as `<op>_<fwd|bwd>[_v<N>][_variant]` in Nsight Compute.

mod attn;
mod bce;
mod bias_act;
mod buffers;
mod cluster_tree;
mod compile;
mod copy_rows;
mod cross_bias;
mod device;
#[cfg(feature = "cuda-emu")]
mod emu_device;
mod esu;
mod gather;
mod gemm;
mod gsu_topk;
mod kmeans;
mod launch;
mod log_size_bias;
mod measure;
mod online;
mod optim;
mod segment_sum;
mod sources;
mod tensor;
mod train_rows;

pub use crate::backend::versions::{EsuVersion, GsuVersion, KernelVersions, KmeansVersion};
pub use compile::{compile_all_kernels, compile_kernel, driver_present, include_dir, lineinfo, nvrtc_present};
pub use sources::{KernelSource, KERNEL_SOURCES};

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, LaunchConfig};

use buffers::{Buf, Pool};
use device::{Device, DriverDevice};
use half::f16;
use launch::Launch;

use super::{
    check, AttnGrads, AttnOut, AttnSaved, Backend, BackendKind, CrossBwdIn, CrossDims, CrossTableGrads, DType, DeviceTable, Elem, GemmKind,
    HostTable, ItemPoints, KmeansBatch, KmeansResult, OnlineBatch, OnlineOutput, OnlineTables, TableData, Tensor, TopK, TransferCounter,
    Transfers, TreeJob, TreeResult,
};
use crate::error::{DriverError, Error, Result};

const BACKEND: &str = "cuda";

/// `map_err(device_err("op"))`: a driver (or emulator) failure during `op`, its error kept typed.
pub(crate) fn device_err<E: Into<DriverError>>(op: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::driver(BACKEND, op, e)
}

fn unavailable(why: impl Into<String>) -> Error {
    Error::BackendUnavailable { backend: BACKEND, why: why.into() }
}

/// Opening the device: the driver answers that there is no usable device here (none, busy in
/// exclusive mode, a driver too old or a stub library) → `BackendUnavailable`, with the
/// driver's words; any other driver failure is one → `Error::Driver`, typed.
fn absent_or_failed(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    use cudarc::driver::sys::CUresult as R;
    move |e| match e.0 {
        R::CUDA_ERROR_NO_DEVICE
        | R::CUDA_ERROR_INVALID_DEVICE
        | R::CUDA_ERROR_DEVICE_UNAVAILABLE
        | R::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
        | R::CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE
        | R::CUDA_ERROR_STUB_LIBRARY
        | R::CUDA_ERROR_SYSTEM_NOT_READY => unavailable(format!("{op}: {}", DriverError::from(e))),
        _ => Error::driver(BACKEND, op, e),
    }
}

/// A table resident on the device.
pub(crate) enum CudaTable {
    F32(Buf<f32>),
    F16(Buf<f16>),
}

/// Device address of a table plus its dtype flag, as the kernels take them.
#[derive(Clone, Copy)]
pub(crate) struct TablePtr {
    pub ptr: u64,
    pub f16: u32,
}

pub struct CudaBackend {
    id: u64,
    /// The driver (or the emulator) every op runs over.
    dev: Arc<dyn Device>,
    desc: String,
    arch: String,
    sm_count: u32,
    smem_optin: u32,
    /// Boost clock in kHz (the nominal peaks of `twin bench`).
    clock_khz: u32,
    gsu_version: AtomicU8,
    /// `KmeansVersion` as u8.
    kmeans_version: AtomicU8,
    /// `EsuVersion` as u8, and v2's forced group size (0: chosen per batch); see esu.rs.
    esu_version: AtomicU8,
    esu_group: AtomicU8,
    /// Fill every output buffer with 0xFF bytes (NaN / u32::MAX) before its kernel runs, so an
    /// element a kernel forgets to write reads back as NaN, not as a plausible 0.
    poison: AtomicBool,
    copies: TransferCounter,
    /// Freed tensor allocations kept for reuse.
    pool: Arc<Pool>,
}

/// `TWIN_CUDA_POISON=1|0` overrides the default (on in debug builds, as on wgpu).
fn poison_default() -> bool {
    match std::env::var("TWIN_CUDA_POISON").ok().as_deref() {
        Some("0") | Some("") => false,
        Some(_) => true,
        None => cfg!(debug_assertions),
    }
}

impl CudaBackend {
    /// Open device `ordinal`: a typed error (never a panic) when libcuda, libnvrtc or a GPU is
    /// missing, or when a kernel fails to compile.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !driver_present() {
            return Err(unavailable("libcuda (the NVIDIA driver library) could not be loaded"));
        }
        if !nvrtc_present() {
            return Err(unavailable("libnvrtc could not be loaded (install NVRTC 13.0 and put it on LD_LIBRARY_PATH)"));
        }
        match std::panic::catch_unwind(|| Self::open(ordinal)) {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                Err(unavailable(format!("the CUDA driver bindings panicked: {msg}")))
            }
        }
    }

    fn open(ordinal: usize) -> Result<Self> {
        let count = CudaContext::device_count().map_err(absent_or_failed("count devices"))?;
        if count <= 0 || ordinal >= count as usize {
            return Err(unavailable(format!("device {ordinal} requested, {count} present")));
        }
        let ctx = CudaContext::new(ordinal).map_err(absent_or_failed("create a context"))?;
        // SAFETY: this backend submits all work to one stream (below), so stream order alone
        // orders every read and write; no slice is shared with another stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let (major, minor) = ctx.compute_capability().map_err(device_err("compute capability"))?;
        let arch = format!("sm_{major}{minor}");
        let name = ctx.name().map_err(device_err("device name"))?;
        let sm_count =
            ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).map_err(device_err("device attribute"))? as u32;
        let smem_optin = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(device_err("device attribute"))? as u32;
        let clock_khz = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE).map_err(device_err("device attribute"))? as u32;
        let mut map = HashMap::new();
        for src in KERNEL_SOURCES {
            let ptx = compile_kernel(src, &arch)?;
            let module = ctx.load_module(ptx).map_err(device_err("load module"))?;
            for &f in src.functions {
                map.insert(f, module.load_function(f).map_err(device_err("load function"))?);
            }
        }
        let dev = Arc::new(DriverDevice { ctx, stream, functions: map });
        Self::over(dev, format!("cuda device {ordinal}: {name} ({arch}, {sm_count} SMs)"), arch, sm_count, smem_optin, clock_khz)
    }

    /// The backend over `dev`, with the device's geometry (the planners size launches by it).
    /// Versions from `TWIN_GSU`, `TWIN_ESU`, `TWIN_KMEANS` (an unknown value is an error).
    fn over(dev: Arc<dyn Device>, desc: String, arch: String, sm_count: u32, smem_optin: u32, clock_khz: u32) -> Result<Self> {
        let v = KernelVersions::from_env()?;
        Ok(CudaBackend {
            id: super::next_device_id(),
            pool: Arc::new(Pool::new(dev.clone())),
            dev,
            desc,
            arch,
            sm_count,
            smem_optin,
            clock_khz,
            gsu_version: AtomicU8::new(v.gsu as u8),
            kmeans_version: AtomicU8::new(v.kmeans as u8),
            esu_version: AtomicU8::new(v.esu as u8),
            esu_group: AtomicU8::new(0),
            poison: AtomicBool::new(poison_default()),
            copies: TransferCounter::default(),
        })
    }

    /// Architecture the kernels were compiled for ("sm_90").
    pub fn arch(&self) -> &str {
        &self.arch
    }

    pub fn gsu_version(&self) -> GsuVersion {
        GsuVersion::from_u8(self.gsu_version.load(Ordering::Relaxed))
    }

    pub fn set_gsu_version(&self, v: GsuVersion) {
        self.gsu_version.store(v as u8, Ordering::Relaxed);
    }

    pub fn kmeans_version(&self) -> KmeansVersion {
        KmeansVersion::from_u8(self.kmeans_version.load(Ordering::Relaxed))
    }

    pub fn set_kmeans_version(&self, v: KmeansVersion) {
        self.kmeans_version.store(v as u8, Ordering::Relaxed);
    }

    /// Poison output buffers (see the field); the parity tests switch it on.
    pub fn set_poison_outputs(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    pub fn poison_outputs(&self) -> bool {
        self.poison.load(Ordering::Relaxed)
    }

    /// The kernels this backend has launched, where its device keeps count (the emulator).
    pub fn launched_kernels(&self) -> Vec<&'static str> {
        self.dev.launched()
    }

    /// Describe a launch of `kernel` (an entry point listed in `KERNEL_SOURCES`).
    pub(crate) fn launcher(&self, kernel: &'static str) -> Launch<'_> {
        Launch::new(self, kernel)
    }

    pub(crate) fn table<'a>(&self, t: &'a DeviceTable) -> Result<&'a CudaTable> {
        t.downcast::<CudaTable>(BackendKind::Cuda, self.id)
    }

    pub(crate) fn table_ptr(&self, t: &DeviceTable) -> Result<TablePtr> {
        let tab = self.table(t)?;
        // The table's memory stays alive as long as the caller holds `t`.
        Ok(match tab {
            CudaTable::F32(s) => TablePtr { ptr: s.addr(), f16: 0 },
            CudaTable::F16(s) => TablePtr { ptr: s.addr(), f16: 1 },
        })
    }

    /// Grid for the 1-D grid-stride kernels (256 threads per block).
    pub(crate) fn grid_1d(&self, total: u64) -> LaunchConfig {
        let blocks = total.div_ceil(256).clamp(1, self.sm_count.max(1) as u64 * 32);
        LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
    }

    pub(crate) fn sm_count(&self) -> u32 {
        self.sm_count
    }

    pub(crate) fn smem_optin(&self) -> u32 {
        self.smem_optin
    }

    /// Allow `bytes` of dynamic shared memory for `name` (needed above 48 KiB).
    pub(crate) fn allow_smem(&self, name: &'static str, bytes: u32) -> Result<()> {
        if bytes > 48 * 1024 {
            self.dev.set_max_dynamic_smem(name, bytes).map_err(device_err("set max dynamic shared memory"))?;
        }
        Ok(())
    }
}

/// A `usize` that a kernel takes as u32.
pub(crate) fn u32_of(field: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::TooLarge { field, value: v as u64, limit: u32::MAX as u64 })
}

/// Packs many u32 arrays (f32 as bits, u64 as lo/hi pairs) into one buffer for one upload.
/// Sections start at multiples of 4 words (16 bytes), so u64 and vector reads stay aligned.
#[derive(Default)]
pub(crate) struct Packer {
    pub words: Vec<u32>,
}

impl Packer {
    pub fn push(&mut self, xs: &[u32]) -> Range<usize> {
        while self.words.len() % 4 != 0 {
            self.words.push(0);
        }
        let a = self.words.len();
        self.words.extend_from_slice(xs);
        a..self.words.len()
    }
    pub fn push_f32(&mut self, xs: &[f32]) -> Range<usize> {
        while self.words.len() % 4 != 0 {
            self.words.push(0);
        }
        let a = self.words.len();
        self.words.extend(xs.iter().map(|x| x.to_bits()));
        a..self.words.len()
    }
}

/// Split a u64 into the (lo, hi) words the kernels read.
pub(crate) fn push_u64(v: &mut Vec<u32>, x: u64) {
    v.push(x as u32);
    v.push((x >> 32) as u32);
}

impl Backend for CudaBackend {
    fn kmeans_seed(&self, batch: &KmeansBatch, seeds: &[u64]) -> Result<Vec<f32>> {
        check::kmeans(batch)?;
        check::len("seeds", seeds.len(), batch.n_problems(), "number of problems")?;
        kmeans::seed(self, batch, seeds)
    }

    fn item_points_native(&self, emb: &[f32], rows: usize, dim: usize) -> Result<Option<Tensor>> {
        // SAFETY: `emb` holds rows * dim values (checked by item_points).
        let words: Vec<u32> = emb.iter().map(|x| x.to_bits()).collect();
        Ok(Some(unsafe { super::DeviceOps::tensor_from_unchecked(self, "item points", rows, dim, Elem::F32, &words)? }))
    }

    unsafe fn kmeans_items_unchecked(
        &self,
        pts: &ItemPoints,
        ids: &[u32],
        offsets: &[u32],
        k: &[u32],
        seeds: &[u64],
        max_iter: u32,
    ) -> Result<KmeansResult> {
        match &pts.dev {
            Some(t) => kmeans::kmeans_items(self, self.tensor_buf(t)?, pts.dim, ids, offsets, k, seeds, max_iter),
            None => super::host_tensor::kmeans_items(self, pts, ids, offsets, k, seeds, max_iter),
        }
    }

    unsafe fn kmeans_tree_unchecked(&self, pts: &ItemPoints, job: &TreeJob) -> Result<TreeResult> {
        match &pts.dev {
            Some(t) => cluster_tree::tree(self, self.tensor_buf(t)?, pts.dim, job),
            None => super::cpu::cluster_tree::tree(self, pts, job),
        }
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }
    fn device_id(&self) -> u64 {
        self.id
    }
    fn describe(&self) -> String {
        format!(
            "{} (GSU {}, ESU {}, k-means {})",
            self.desc,
            self.gsu_version().name(),
            self.esu_version().name(),
            self.kmeans_version().name()
        )
    }

    fn transfers(&self) -> Transfers {
        self.copies.get()
    }

    fn synchronize(&self) -> Result<()> {
        self.dev.synchronize().map_err(device_err("synchronize"))
    }

    fn time_ms(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.dev.time_ms(f)
    }

    fn clock(&self) -> &'static str {
        self.dev.clock()
    }

    unsafe fn upload_table_unchecked(&self, name: &'static str, table: &HostTable) -> Result<DeviceTable> {
        let inner = match &table.data {
            TableData::F32(v) => CudaTable::F32(self.htod("upload table", v)?),
            TableData::F16(v) => CudaTable::F16(self.htod("upload table", v)?),
        };
        Ok(DeviceTable {
            name,
            rows: table.rows,
            cols: table.cols,
            dtype: match table.data {
                TableData::F32(_) => DType::F32,
                TableData::F16(_) => DType::F16,
            },
            backend: BackendKind::Cuda,
            device_id: self.id,
            inner: Arc::new(inner),
        })
    }

    unsafe fn gather_unchecked(&self, table: &DeviceTable, ids: &[u32]) -> Result<Vec<f32>> {
        gather::gather(self, table, ids)
    }

    unsafe fn cross_bias_unchecked(&self, table: &DeviceTable, rows: &[u32], n_cross: usize) -> Result<Vec<f32>> {
        cross_bias::cross_bias(self, table, rows, n_cross)
    }

    unsafe fn cross_bias_dense_unchecked(&self, e: &[f32], w_c: &[f32], beta: &[f32], dims: CrossDims) -> Result<Vec<f32>> {
        cross_bias::cross_bias_dense(self, e, w_c, beta, dims)
    }

    unsafe fn log_size_bias_unchecked(&self, bias: &[f32], sizes: &[f32], heads: usize) -> Result<Vec<f32>> {
        log_size_bias::log_size_bias(self, bias, sizes, heads)
    }

    unsafe fn gsu_topk_unchecked(&self, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], k: usize) -> Result<TopK> {
        gsu_topk::gsu_topk(self, t, batch, bias, k)
    }

    unsafe fn esu_unchecked(&self, t: &OnlineTables, batch: &OnlineBatch, bias: &[f32], topk: &TopK) -> Result<Vec<f32>> {
        esu::esu(self, t, batch, bias, topk)
    }

    fn online(&self, t: &OnlineTables, batch: &OnlineBatch, k: usize) -> Result<OnlineOutput> {
        check::online(t, batch, k)?;
        online::online(self, t, batch, k)
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
        kmeans::lloyd(self, batch, centroids, max_iter)
    }
}
