//! The few driver operations the CUDA backend uses, behind one interface: allocate, free, copy
//! up, down and across, memset, launch a kernel by name (grid, block, dynamic shared bytes and
//! its arguments), raise a kernel's shared-memory limit, synchronise and time. The real driver
//! (`DriverDevice`, cudarc) implements it here; the CPU emulator (feature `cuda-emu`) does in
//! `emu_device.rs`. Planners, launch geometry, params structs and every op's host code are the
//! same code over both.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute_enum, CUresult};
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

use super::launch::ArgSlot;
use crate::error::{DriverError, Result};

/// What every device operation returns: the driver's (or the emulator's) own error, typed; the
/// backend adds its name and the op (`device_err`) to make an `Error::Driver`.
pub(crate) type DevResult<T> = std::result::Result<T, DriverError>;

/// Device addresses are `u64`: what kernels take for pointer parameters (host addresses on
/// the emulator).
pub(crate) trait Device: Send + Sync {
    fn alloc(&self, bytes: usize) -> DevResult<u64>;
    /// Release an allocation; stream-ordered, so work already queued that uses it finishes first.
    fn free(&self, addr: u64);
    fn htod(&self, dst: u64, src: &[u8]) -> DevResult<()>;
    /// Waits for the queued work, then copies.
    fn dtoh(&self, src: u64, dst: &mut [u8]) -> DevResult<()>;
    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> DevResult<()>;
    fn memset(&self, dst: u64, byte: u8, bytes: usize) -> DevResult<()>;
    /// Launch `kernel` (an entry point of `KERNEL_SOURCES`) with one slot per parameter.
    ///
    /// # Safety
    /// `args` must match the kernel's parameter list in number, order and type, and every
    /// address in them must be valid for everything the kernel reads and writes at `cfg`.
    unsafe fn launch(&self, kernel: &'static str, cfg: LaunchConfig, args: &[ArgSlot]) -> DevResult<()>;
    /// Allow `bytes` of dynamic shared memory for `kernel` (needed above 48 KiB on a GPU).
    fn set_max_dynamic_smem(&self, kernel: &'static str, bytes: u32) -> DevResult<()>;
    fn synchronize(&self) -> DevResult<()>;
    /// Run `f` and time it on the device's clock (events on a GPU).
    fn time_ms(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64>;
    fn clock(&self) -> &'static str;
    /// Every kernel launched so far, where the device keeps count (the emulator does).
    fn launched(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

/// The real driver: one context, its default stream, the loaded kernels.
pub(crate) struct DriverDevice {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub functions: HashMap<&'static str, CudaFunction>,
}

impl DriverDevice {
    fn function(&self, kernel: &'static str) -> DevResult<&CudaFunction> {
        // Not loaded: what the driver itself answers for an unknown function name.
        self.functions.get(kernel).ok_or(DriverError::Cuda(cudarc::driver::DriverError(CUresult::CUDA_ERROR_NOT_FOUND)))
    }
}

impl Device for DriverDevice {
    fn alloc(&self, bytes: usize) -> DevResult<u64> {
        self.ctx.bind_to_thread().map_err(DriverError::from)?;
        // SAFETY: a plain allocation of `bytes` on this context; the address is owned by the
        // caller's `Buf` and freed once, by `free`.
        unsafe {
            if self.ctx.has_async_alloc() {
                cudarc::driver::result::malloc_async(self.stream.cu_stream(), bytes.max(1))
            } else {
                cudarc::driver::result::malloc_sync(bytes.max(1))
            }
        }
        .map_err(DriverError::from)
    }

    fn free(&self, addr: u64) {
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        // SAFETY: `addr` came from `alloc` and is freed once (its `Buf` is being dropped); the
        // async free is ordered after every kernel queued on the stream that may still use it.
        let _ = unsafe {
            if self.ctx.has_async_alloc() {
                cudarc::driver::result::free_async(addr, self.stream.cu_stream())
            } else {
                cudarc::driver::result::free_sync(addr)
            }
        };
    }

    fn htod(&self, dst: u64, src: &[u8]) -> DevResult<()> {
        self.ctx.bind_to_thread().map_err(DriverError::from)?;
        // SAFETY: `dst` is an allocation of at least `src.len()` bytes (the caller's `Buf`);
        // from pageable memory the driver has read `src` before the call returns.
        unsafe { cudarc::driver::result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }.map_err(DriverError::from)
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> DevResult<()> {
        self.ctx.bind_to_thread().map_err(DriverError::from)?;
        // SAFETY: `src` holds at least `dst.len()` bytes; the stream is synchronised before `dst`
        // is read by anyone.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }.map_err(DriverError::from)?;
        self.stream.synchronize().map_err(DriverError::from)
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> DevResult<()> {
        self.ctx.bind_to_thread().map_err(DriverError::from)?;
        // SAFETY: both are allocations of at least `bytes` bytes, ordered on one stream.
        unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }.map_err(DriverError::from)
    }

    fn memset(&self, dst: u64, byte: u8, bytes: usize) -> DevResult<()> {
        self.ctx.bind_to_thread().map_err(DriverError::from)?;
        // SAFETY: `dst` is an allocation of at least `bytes` bytes; any byte pattern is valid
        // for the plain-old-data buffers the backend allocates.
        unsafe { cudarc::driver::result::memset_d8_async(dst, byte, bytes, self.stream.cu_stream()) }.map_err(DriverError::from)
    }

    unsafe fn launch(&self, kernel: &'static str, cfg: LaunchConfig, args: &[ArgSlot]) -> DevResult<()> {
        let f = self.function(kernel)?;
        let mut b = self.stream.launch_builder(f);
        for a in args {
            b.arg(a);
        }
        // SAFETY: the caller guarantees the argument list and the addresses (this function's
        // contract); each slot holds its parameter's bytes at offset 0, as the driver reads them.
        unsafe { b.launch(cfg) }.map(|_| ()).map_err(DriverError::from)
    }

    fn set_max_dynamic_smem(&self, kernel: &'static str, bytes: u32) -> DevResult<()> {
        self.function(kernel)?
            .set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
            .map_err(DriverError::from)
    }

    fn synchronize(&self) -> DevResult<()> {
        self.stream.synchronize().map_err(DriverError::from)
    }

    fn time_ms(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        use super::device_err;
        let start = self.stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(device_err("record start event"))?;
        f()?;
        let end = self.stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(device_err("record end event"))?;
        Ok(start.elapsed_ms(&end).map_err(device_err("event elapsed time"))? as f64)
    }

    fn clock(&self) -> &'static str {
        "CUDA events on the backend's stream"
    }
}
