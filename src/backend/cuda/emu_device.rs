//! The CUDA backend's [`Device`] on the CPU emulator (feature `cuda-emu`, `emu/README.md`):
//! the same kernels, compiled as C++, run by the same host code as on a GPU. Allocations carry
//! guard zones, every copy is checked against the allocation it touches, and each launch draws
//! its thread schedule from the backend's seed and a launch counter, so a missing barrier or a
//! shared-memory race shows up as a wrong result.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cudarc::driver::LaunchConfig;

use super::device::{DevResult, Device};
use super::launch::ArgSlot;
use super::CudaBackend;
use crate::emu::{self, Alloc};
use crate::error::{DriverError, Error, Result};

/// Geometry the emulated backend reports, an H100/H200's, so the planners size launches as on
/// the card: 132 SMs, 227 KiB of opt-in shared memory per block.
const SM_COUNT: u32 = 132;
const SMEM_OPTIN: u32 = 232_448;

pub(crate) struct EmuDevice {
    /// Live allocations by address (a host pointer).
    allocs: Mutex<BTreeMap<u64, Alloc>>,
    seed: u64,
    launches: AtomicU64,
    /// Guard-zone damage found when an allocation was freed; reported by the next copy down.
    damaged: Mutex<Vec<String>>,
    /// Names of the kernels launched (tests check that every kernel ran).
    launched: Mutex<std::collections::BTreeSet<&'static str>>,
}

fn err(e: impl Into<String>) -> DriverError {
    DriverError::Emulator(e.into())
}

impl EmuDevice {
    /// The allocation holding `[addr, addr + bytes)`, or an error naming the access.
    fn check_range(&self, what: &str, addr: u64, bytes: usize) -> DevResult<()> {
        let map = self.allocs.lock().map_err(|_| err("emulator allocation table poisoned"))?;
        let Some((&base, a)) = map.range(..=addr).next_back() else {
            return Err(err(format!("{what}: address {addr:#x} is not in any emulated allocation")));
        };
        if addr + bytes as u64 > base + a.len() as u64 {
            return Err(err(format!(
                "{what}: {bytes} bytes at offset {} overrun the allocation of {} bytes at {base:#x}",
                addr - base,
                a.len()
            )));
        }
        Ok(())
    }

    /// Guard damage seen so far (by frees) and in this device's live allocations (only its
    /// own: tests running beside it on other devices are not blamed).
    fn guards(&self) -> DevResult<()> {
        let damaged = std::mem::take(&mut *self.damaged.lock().map_err(|_| err("emulator damage list poisoned"))?);
        if !damaged.is_empty() {
            return Err(err(format!("out-of-bounds write: {}", damaged.join("; "))));
        }
        let map = self.allocs.lock().map_err(|_| err("emulator allocation table poisoned"))?;
        for a in map.values() {
            a.check().map_err(|e| err(format!("out-of-bounds write: {e}")))?;
        }
        Ok(())
    }
}

impl Device for EmuDevice {
    fn alloc(&self, bytes: usize) -> DevResult<u64> {
        let a = Alloc::new(bytes.max(1)).map_err(err)?;
        let addr = a.ptr() as u64;
        self.allocs.lock().map_err(|_| err("emulator allocation table poisoned"))?.insert(addr, a);
        Ok(addr)
    }

    fn free(&self, addr: u64) {
        let Ok(mut map) = self.allocs.lock() else { return };
        if let Some(a) = map.remove(&addr) {
            drop(map);
            if let Err(e) = a.free() {
                if let Ok(mut d) = self.damaged.lock() {
                    d.push(e);
                }
            }
        }
    }

    fn htod(&self, dst: u64, src: &[u8]) -> DevResult<()> {
        self.check_range("copy to the device", dst, src.len())?;
        // SAFETY: `[dst, dst + len)` lies inside a live emulated allocation (checked above), which
        // is host memory no kernel is running on (launches are synchronous).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> DevResult<()> {
        self.guards()?;
        self.check_range("copy from the device", src, dst.len())?;
        // SAFETY: as in `htod`, the source range lies inside a live allocation.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> DevResult<()> {
        self.check_range("device copy source", src, bytes)?;
        self.check_range("device copy destination", dst, bytes)?;
        // SAFETY: both ranges lie inside live allocations; `copy` allows overlap.
        unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) };
        Ok(())
    }

    fn memset(&self, dst: u64, byte: u8, bytes: usize) -> DevResult<()> {
        self.check_range("memset", dst, bytes)?;
        // SAFETY: the range lies inside a live allocation.
        unsafe { std::ptr::write_bytes(dst as *mut u8, byte, bytes) };
        Ok(())
    }

    unsafe fn launch(&self, kernel: &'static str, cfg: LaunchConfig, args: &[ArgSlot]) -> DevResult<()> {
        let ptrs: Vec<*mut c_void> = args.iter().map(|a| a.as_ptr() as *mut c_void).collect();
        if let Ok(mut l) = self.launched.lock() {
            l.insert(kernel);
        }
        let n = self.launches.fetch_add(1, Ordering::Relaxed);
        let seed = crate::rng::SplitMix64::new(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64();
        // SAFETY: this function's contract (the arguments match the kernel, the buffers cover
        // what it touches); the emulator only reads the argument slots.
        unsafe { emu::launch(kernel, cfg.grid_dim, cfg.block_dim, cfg.shared_mem_bytes as usize, &ptrs, seed) }
            .map_err(|e| err(format!("{e} (schedule seed {seed:#x})")))
    }

    fn set_max_dynamic_smem(&self, kernel: &'static str, bytes: u32) -> DevResult<()> {
        if bytes > SMEM_OPTIN {
            return Err(err(format!(
                "{kernel}: {bytes} bytes of dynamic shared memory exceed the {SMEM_OPTIN} an sm_90 block may opt in to"
            )));
        }
        Ok(())
    }

    fn synchronize(&self) -> DevResult<()> {
        self.guards()
    }

    fn time_ms(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        let t0 = Instant::now();
        f()?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }

    fn clock(&self) -> &'static str {
        "host monotonic clock (CPU emulator: not GPU time)"
    }

    fn launched(&self) -> Vec<&'static str> {
        self.launched.lock().map(|l| l.iter().copied().collect()).unwrap_or_default()
    }
}

impl CudaBackend {
    /// The CUDA backend on the CPU emulator: every kernel of `kernels/` runs through this
    /// backend's own host code, thread schedules drawn from `seed`. For tests, not for speed.
    pub fn emulated(seed: u64) -> Result<Self> {
        let names = emu::kernels();
        for src in super::KERNEL_SOURCES {
            for f in src.functions {
                if !names.iter().any(|n| n == f) {
                    return Err(Error::BackendUnavailable {
                        backend: "cuda",
                        why: format!("the emulator has no kernel `{f}` (kernels/{}.cu)", src.stem),
                    });
                }
            }
        }
        let dev = Arc::new(EmuDevice {
            allocs: Mutex::new(BTreeMap::new()),
            seed,
            launches: AtomicU64::new(0),
            damaged: Mutex::new(Vec::new()),
            launched: Mutex::new(Default::default()),
        });
        Self::over(
            dev,
            format!("cuda emulator on the CPU (sm_90 geometry: {SM_COUNT} SMs, {SMEM_OPTIN} B shared; schedule seed {seed})"),
            "sm_90".into(),
            SM_COUNT,
            SMEM_OPTIN,
            1_000_000,
        )
    }
}
