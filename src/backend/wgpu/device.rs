//! The wgpu device: construction options (and their environment overrides), adapter ranking,
//! device and queue creation with the optional features and the binding limit, and what the
//! backend reports about the adapter it opened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{pool, KernelVersions, WgpuBackend};
use crate::backend::TransferCounter;
use crate::error::{Error, Result};

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
            id: crate::backend::next_device_id(),
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

    /// The adapter this backend runs on (name, device type, driver).
    pub fn adapter(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
}
