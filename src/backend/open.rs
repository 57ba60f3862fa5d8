//! Choosing and opening a backend: [`BackendChoice`] (what `--backend` names) and [`open`].

use std::sync::Arc;

use super::{cpu, cpu_fast, Backend};
use crate::error::{Error, Result};

/// Which backend to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum BackendChoice {
    /// The fast CPU path (`cpu_fast`).
    Cpu,
    /// The literal reference (`cpu`), the parity oracle.
    CpuRef,
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
            "cpu-ref" => Ok(BackendChoice::CpuRef),
            "cuda" => Ok(BackendChoice::Cuda),
            "wgpu" => Ok(BackendChoice::Wgpu),
            "auto" => Ok(BackendChoice::Auto),
            _ => Err(Error::BadSetting { name: "backend", value: s.to_string(), why: "expected cpu, cpu-ref, cuda, wgpu or auto".into() }),
        }
    }
}

/// Open a backend. `Auto` tries CUDA, then a real GPU through wgpu, then the (fast) CPU; the returned
/// note says which was chosen and why the others were skipped.
pub fn open(choice: BackendChoice) -> Result<(Arc<dyn Backend>, String)> {
    match choice {
        BackendChoice::Cpu => Ok((Arc::new(cpu_fast::CpuFastBackend::new()), "cpu: asked for (fast path)".into())),
        BackendChoice::CpuRef => Ok((Arc::new(cpu::CpuBackend::new()), "cpu-ref: asked for (the reference)".into())),
        BackendChoice::Cuda => open_cuda().map(|b| (b, "cuda: asked for".into())),
        BackendChoice::Wgpu => open_wgpu(true).map(|b| (b, "wgpu: asked for".into())),
        BackendChoice::Auto => {
            let mut skipped = Vec::new();
            // A bad setting (TWIN_GSU=v9) is the caller's error on every backend: not a reason
            // to fall back to the next one.
            match open_cuda() {
                Ok(b) => return Ok((b, "auto chose cuda".into())),
                Err(e @ Error::BadSetting { .. }) => return Err(e),
                Err(e) => skipped.push(e.to_string()),
            }
            match open_wgpu(false) {
                Ok(b) => return Ok((b, format!("auto chose wgpu ({})", skipped.join("; ")))),
                Err(e @ Error::BadSetting { .. }) => return Err(e),
                Err(e) => skipped.push(e.to_string()),
            }
            Ok((Arc::new(cpu_fast::CpuFastBackend::new()), format!("auto chose cpu ({})", skipped.join("; "))))
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
