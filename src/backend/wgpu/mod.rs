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
//!   becomes `Error::Device`, never a panic.
//! - Buffers larger than the adapter's max storage binding are split: tables into row chunks
//!   (the gather runs once per chunk), batches into groups of ids / requests / problems. The
//!   online ops bind P_Q/P_K/P_V/cross values whole: when one is chunked, the rows a call needs
//!   are first gathered into a compact per-call table (`split.rs`).

mod attn;
mod bce;
mod buffers;
mod cluster_tree;
mod cross_bias;
mod esu;
mod gather;
mod gemm;
mod gsu_topk;
mod kmeans;
mod kmeans_seed;
mod log_size_bias;
mod measure;
mod pool;
mod segment_sum;
mod split;
mod tensor;
mod train_rows;
mod wgsl;

pub use pool::PoolStats;
pub(crate) use wgsl::preprocess;
use wgsl::REDUCE_PRELUDE;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{
    check, AttnGrads, AttnOut, AttnSaved, Backend, BackendKind, CrossBwdIn, CrossDims, CrossTableGrads, DType, DeviceTable, GemmKind,
    HostTable, ItemPoints, KmeansBatch, KmeansResult, OnlineBatch, OnlineOutput, OnlineTables, TableData, Tensor, TopK, TransferCounter,
    Transfers, TreeJob, TreeResult,
};
use crate::error::{Error, Result};

pub(crate) const F_SUBGROUP: u32 = 1;
pub(crate) const F_T0_F16: u32 = 2;
pub(crate) const F_T1_F16: u32 = 4;
pub(crate) const F_T2_F16: u32 = 8;

/// Which GSU kernel `gsu_topk`/`online` use.
pub use crate::backend::versions::{EsuVersion, GsuVersion, KernelVersions, KmeansVersion};

/// Construction options (tests use them to force each path).
#[derive(Clone, Debug)]
pub struct WgpuOptions {
    /// Accept a CPU Vulkan adapter (lavapipe).
    pub allow_cpu_adapter: bool,
    /// Use the workgroup-memory reductions even if the adapter has subgroups.
    pub no_subgroups: bool,
    /// Store f16 tables as f32 even if the adapter has SHADER_F16.
    pub no_f16: bool,
    /// Cap on one storage binding in bytes (below the adapter's), to exercise buffer splitting.
    pub max_binding: Option<u64>,
    /// Fill output buffers with NaN / u32::MAX before each dispatch so an unwritten element
    /// shows. Default: on in debug builds or with `TWIN_WGPU_POISON=1`.
    pub poison_outputs: bool,
    /// The kernel versions to run (`TWIN_GSU`, `TWIN_ESU`, `TWIN_KMEANS`); WGSL has no GSU v3
    /// (tensor cores) and runs v2 for it.
    pub versions: KernelVersions,
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).map(|v| !v.is_empty() && v != "0").unwrap_or(false)
}

impl WgpuOptions {
    /// Defaults, with the `TWIN_WGPU_*` and `TWIN_GSU`/`TWIN_ESU`/`TWIN_KMEANS` environment
    /// overrides applied; an unknown version is an error.
    pub fn from_env(allow_cpu_adapter: bool) -> Result<Self> {
        Ok(WgpuOptions {
            allow_cpu_adapter,
            no_subgroups: env_flag("TWIN_WGPU_NO_SUBGROUPS"),
            no_f16: env_flag("TWIN_WGPU_NO_F16"),
            max_binding: std::env::var("TWIN_WGPU_MAX_BINDING").ok().and_then(|v| v.parse().ok()),
            poison_outputs: cfg!(debug_assertions) || env_flag("TWIN_WGPU_POISON"),
            versions: KernelVersions::from_env()?,
        })
    }
}

/// A table resident on the device: row chunks, each within one storage binding.
pub struct WgpuTable {
    pub(crate) chunks: Vec<wgpu::Buffer>,
    pub(crate) rows_per_chunk: usize,
    /// Stored as f16 on the device (else f32, converted on upload).
    pub(crate) f16: bool,
}

/// Binding kinds of an explicit layout: binding 0 is always the uniform parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum B {
    /// read-only storage
    R,
    /// read-write storage
    W,
}

pub(crate) struct Pipe {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

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

fn dev_err(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Device { backend: "wgpu", op, message: e.to_string() }
}

/// Workgroups for `n` work items: a 2-D grid within the 65535-per-dimension limit; shaders
/// flatten it as `wid.x + wid.y * nwg.x` and return when past the end.
pub(crate) fn grid(n_groups: u64) -> (u32, u32) {
    let n = n_groups.max(1);
    if n <= 65535 {
        (n as u32, 1)
    } else {
        (65535, n.div_ceil(65535) as u32)
    }
}

/// One staged output: a device buffer and how to read it back.
pub(crate) struct Readback<'a> {
    pub buf: &'a wgpu::Buffer,
    pub bytes: u64,
}

impl WgpuBackend {
    /// Open the best Vulkan adapter: a discrete GPU, then an integrated one, then (only with
    /// `allow_cpu_adapter`) lavapipe. Environment overrides as in [`WgpuOptions::from_env`].
    pub fn new(allow_cpu_adapter: bool) -> Result<Self> {
        Self::with_options(WgpuOptions::from_env(allow_cpu_adapter)?)
    }

    pub fn with_options(opts: WgpuOptions) -> Result<Self> {
        let unavailable = |why: String| Error::BackendUnavailable { backend: "wgpu", why };
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN;
        let instance = wgpu::Instance::new(desc);
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
        if adapters.is_empty() {
            return Err(unavailable("no Vulkan adapter found".into()));
        }
        let rank = |t: wgpu::DeviceType| match t {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        };
        let mut seen = Vec::new();
        let mut best: Option<wgpu::Adapter> = None;
        for a in adapters {
            let info = a.get_info();
            seen.push(format!("{} ({:?})", info.name, info.device_type));
            if info.device_type == wgpu::DeviceType::Cpu && !opts.allow_cpu_adapter {
                continue;
            }
            if best.as_ref().map_or(true, |b| rank(info.device_type) < rank(b.get_info().device_type)) {
                best = Some(a);
            }
        }
        let adapter = best.ok_or_else(|| {
            unavailable(format!("only CPU Vulkan adapters ({}); lavapipe is used only when wgpu is asked for", seen.join(", ")))
        })?;
        let info = adapter.get_info();
        let af = adapter.features();
        let subgroups = af.contains(wgpu::Features::SUBGROUP) && !opts.no_subgroups;
        let f16 = af.contains(wgpu::Features::SHADER_F16) && !opts.no_f16;
        let mut features = wgpu::Features::empty();
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        if f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("twin-engine"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| unavailable(format!("request_device on {}: {e}", info.name)))?;
        // Errors outside a scope (there should be none) are logged, not panics.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| eprintln!("wgpu: uncaptured error: {e}")));
        let device_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let mut max_binding = device_binding;
        if let Some(m) = opts.max_binding {
            max_binding = max_binding.min(m.max(256));
        }
        max_binding &= !255; // keep chunk offsets aligned
        let subgroup_range = (info.subgroup_min_size, info.subgroup_max_size);
        Ok(WgpuBackend {
            id: super::next_device_id(),
            device,
            queue,
            info,
            subgroups,
            f16,
            subgroup_range,
            max_binding,
            opts,
            pipes: Mutex::new(HashMap::new()),
            copies: TransferCounter::default(),
            pool: Arc::new(pool::Pool::new(device_binding)),
        })
    }

    pub fn options(&self) -> &WgpuOptions {
        &self.opts
    }
    /// Whether the subgroup reductions are in use.
    pub fn uses_subgroups(&self) -> bool {
        self.subgroups
    }
    /// Whether f16 tables stay f16 on the device.
    pub fn uses_f16(&self) -> bool {
        self.f16
    }
    /// Largest storage binding this backend creates, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.max_binding
    }
    pub fn is_cpu_adapter(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    pub(crate) fn table<'a>(&self, t: &'a DeviceTable) -> Result<&'a WgpuTable> {
        t.downcast::<WgpuTable>(BackendKind::Wgpu, self.id)
    }

    /// The cached pipeline for `entry` of shader `src` under `flags`.
    pub(crate) fn pipe(&self, stem: &'static str, src: &'static str, entry: &'static str, flags: u32, binds: &[B]) -> Result<Arc<Pipe>> {
        let flags = if self.subgroups { flags | F_SUBGROUP } else { flags & !F_SUBGROUP };
        let mut map = self.pipes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(&(entry, flags)) {
            return Ok(p.clone());
        }
        let mut defs = Vec::new();
        let mut prelude = String::new();
        if flags & (F_T0_F16 | F_T1_F16 | F_T2_F16) != 0 {
            prelude.push_str("enable f16;\n");
        }
        for (i, bit) in [F_T0_F16, F_T1_F16, F_T2_F16].iter().enumerate() {
            let ty = if flags & bit != 0 { "f16" } else { "f32" };
            prelude.push_str(&format!("alias t{i}_t = {ty};\n"));
        }
        if flags & F_SUBGROUP != 0 {
            defs.push("SUBGROUP");
        }
        let body = if src.contains("RWG") { format!("{src}\n{REDUCE_PRELUDE}") } else { src.to_string() };
        let code = prelude + &preprocess(&body, &defs);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(stem), source: wgpu::ShaderSource::Wgsl(code.into()) });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: false, min_binding_size: None },
            count: None,
        }];
        for (i, b) in binds.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: *b == B::R },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(entry), entries: &entries });
        let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(dev_err("shader compile", format!("{stem}.wgsl `{entry}` (flags {flags:#x}): {e}")));
        }
        let p = Arc::new(Pipe { pipeline, layout });
        map.insert((entry, flags), p.clone());
        Ok(p)
    }

    /// The adapter this backend runs on (name, device type, driver).
    pub fn adapter(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
}

pub(crate) fn words_f32(b: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(b)
}
pub(crate) fn words_u32(b: &[u8]) -> Vec<u32> {
    bytemuck::pod_collect_to_vec(b)
}

/// Split `0..n` into consecutive ranges whose per-item cost sum stays within `limit`
/// (a single item over the limit gets its own range).
pub(crate) fn split_by(n: usize, limit: u64, cost: impl Fn(usize) -> u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut acc = 0u64;
    for i in 0..n {
        let c = cost(i);
        if i > start && acc + c > limit {
            out.push(start..i);
            start = i;
            acc = 0;
        }
        acc += c;
    }
    if start < n || out.is_empty() {
        out.push(start..n);
    }
    out
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
        let f16 = self.f16 && table.dtype() == DType::F16;
        let width = if f16 { 2 } else { 4 };
        let row_bytes = (table.cols * width).max(1) as u64;
        // Chunks hold a whole number of rows and an even number of f16 values.
        let mut rows_per_chunk = ((self.max_binding / row_bytes) as usize).max(1);
        if f16 && rows_per_chunk > 1 && (rows_per_chunk * table.cols) % 2 == 1 {
            rows_per_chunk -= 1;
        }
        let rows_per_chunk = rows_per_chunk.min(table.rows.max(1));
        let inner = self.scoped("upload_table", || {
            let mut chunks = Vec::new();
            let mut r0 = 0;
            loop {
                let r1 = (r0 + rows_per_chunk).min(table.rows);
                let (a, b) = (r0 * table.cols, r1 * table.cols);
                let buf = match (&table.data, f16) {
                    (TableData::F16(v), true) => self.upload(name, &v[a..b]),
                    (TableData::F16(v), false) => self.upload(name, &v[a..b].iter().map(|x| x.to_f32()).collect::<Vec<f32>>()),
                    (TableData::F32(v), _) => self.upload(name, &v[a..b]),
                };
                chunks.push(buf);
                r0 = r1;
                if r0 >= table.rows {
                    break;
                }
            }
            Ok(WgpuTable { chunks, rows_per_chunk, f16 })
        })?;
        Ok(DeviceTable {
            name,
            rows: table.rows,
            cols: table.cols,
            dtype: table.dtype(),
            backend: BackendKind::Wgpu,
            device_id: self.id,
            inner: Arc::new(inner),
        })
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
