//! NVRTC compilation of the kernel files: probes for the libraries (cudarc would panic without
//! them), the include path and `-lineinfo` switch, and a per-process PTX cache.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use cudarc::nvrtc::{CompileOptions, Ptx};

use super::{unavailable, KernelSource, BACKEND, KERNEL_SOURCES};
use crate::error::{DriverError, Error, Result};

/// Whether libnvrtc can be loaded (checked before any cudarc nvrtc call, which would panic).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library names cudarc would use; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether libcuda (the driver) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: as above, a dlopen probe only.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Include directory for NVRTC: `TWIN_CUDA_INCLUDE`, else the pip wheel's or a system CUDA's.
/// The kernels include no CUDA header today (kernels/common.cuh is inlined by
/// `KernelSource::text`, not found through this path); it is passed so that they may.
pub fn include_dir() -> Option<String> {
    if let Ok(p) = std::env::var("TWIN_CUDA_INCLUDE") {
        if !p.is_empty() {
            return Some(p);
        }
    }
    ["/opt/cuda13/nvidia/cu13/include", "/usr/local/cuda/include"]
        .iter()
        .find(|p| std::path::Path::new(p).join("cuda_fp16.h").exists())
        .map(|p| p.to_string())
}

/// `TWIN_CUDA_LINEINFO=1`: compile with `-lineinfo` so Nsight Compute maps counters to source
/// lines (profiling runs; no effect on the generated code's speed).
pub fn lineinfo() -> bool {
    std::env::var("TWIN_CUDA_LINEINFO").is_ok_and(|v| !v.is_empty() && v != "0")
}

type PtxCache = Mutex<HashMap<(String, &'static str, bool), Ptx>>;
static PTX_CACHE: OnceLock<PtxCache> = OnceLock::new();

/// Compile one kernel file for `arch` (e.g. "sm_90"), cached per process. Checks that every
/// declared entry point is in the PTX.
pub fn compile_kernel(src: &KernelSource, arch: &str) -> Result<Ptx> {
    if !nvrtc_present() {
        return Err(unavailable("libnvrtc could not be loaded (install NVRTC and put it on LD_LIBRARY_PATH)"));
    }
    let cache = PTX_CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let line = lineinfo();
    let key = (arch.to_string(), src.stem, line);
    if let Some(p) = cache.lock().map_err(|_| unavailable("PTX cache poisoned"))?.get(&key) {
        return Ok(p.clone());
    }
    let mut options = vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()];
    if line {
        options.push("-lineinfo".into());
    }
    let opts = CompileOptions {
        fmad: Some(src.fmad),
        include_paths: include_dir().into_iter().collect(),
        options,
        name: Some(format!("{}.cu", src.stem)),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(src.text(), opts)
        .map_err(|error| Error::driver(BACKEND, "nvrtc compile", DriverError::Nvrtc { file: src.stem, error }))?;
    let text = ptx.to_src();
    for f in src.functions {
        if !text.contains(&format!(".entry {f}(")) {
            return Err(Error::Device {
                backend: BACKEND,
                op: "nvrtc compile",
                message: format!("kernels/{}.cu: entry point `{f}` missing from the PTX", src.stem),
            });
        }
    }
    cache.lock().map_err(|_| unavailable("PTX cache poisoned"))?.insert(key, ptx.clone());
    Ok(ptx)
}

/// Compile every kernel file for `arch` ("sm_90"); returns (stem, PTX bytes) per file. Needs only
/// libnvrtc, no GPU: CI runs it to fail on any compile error.
pub fn compile_all_kernels(arch: &str) -> Result<Vec<(String, usize)>> {
    KERNEL_SOURCES.iter().map(|s| compile_kernel(s, arch).map(|p| (s.stem.to_string(), p.to_src().len()))).collect()
}
