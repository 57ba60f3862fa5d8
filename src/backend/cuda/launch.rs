//! Kernel launches over [`Device`](super::device::Device): each argument is copied into a slot
//! that the driver (or the emulator) reads the parameter from, so one launch description works
//! on both. `be.launcher("name").arg(&params).arg(&buf)...` then `launch(cfg)`.

use std::mem::{align_of, size_of, MaybeUninit};

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::buffers::{Buf, View};
use super::device::DevResult;
use super::CudaBackend;

/// One kernel parameter's bytes, aligned for any parameter type the kernels take.
#[repr(C, align(16))]
pub(crate) struct ArgSlot([MaybeUninit<u8>; 64]);

// SAFETY: the driver reads the parameter's bytes from the start of the slot; the slot outlives
// the launch call that passes it.
unsafe impl DeviceRepr for ArgSlot {}

impl ArgSlot {
    fn of<T: Copy>(v: &T) -> ArgSlot {
        const { assert!(size_of::<T>() <= 64 && align_of::<T>() <= 16, "kernel parameter larger than a slot") };
        let mut s = ArgSlot([MaybeUninit::uninit(); 64]);
        // SAFETY: `T` fits in the slot (checked above); copying its bytes, padding included, into
        // `MaybeUninit` storage reads nothing as initialised.
        unsafe { std::ptr::copy_nonoverlapping(v as *const T as *const MaybeUninit<u8>, s.0.as_mut_ptr(), size_of::<T>()) };
        s
    }

    /// Where the parameter starts, for launchers that take `void**` (the emulator).
    #[allow(dead_code)] // used by the emulated device (feature `cuda-emu`)
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.0.as_ptr() as *const u8
    }
}

/// A value a kernel takes by value: the `#[repr(C)]` params structs (mirroring the `.cu`
/// structs field for field) and scalars.
///
/// # Safety
/// The type must have exactly the layout of the kernel parameter it is passed as.
pub(crate) unsafe trait KernelParam: Copy + 'static {}

// SAFETY: scalars have the layout of the CUDA types of the same width.
unsafe impl KernelParam for u32 {}
// SAFETY: as above (device addresses are passed as u64).
unsafe impl KernelParam for u64 {}
// SAFETY: as above.
unsafe impl KernelParam for f32 {}

/// What `Launch::arg` accepts: by-value parameters, and buffers or views (their address).
pub(crate) trait PushArg {
    fn slot(&self) -> ArgSlot;
}

impl<T: KernelParam> PushArg for T {
    fn slot(&self) -> ArgSlot {
        ArgSlot::of(self)
    }
}

impl<T> PushArg for Buf<T> {
    fn slot(&self) -> ArgSlot {
        ArgSlot::of(&self.addr())
    }
}

impl<T> PushArg for View<'_, T> {
    fn slot(&self) -> ArgSlot {
        ArgSlot::of(&self.addr())
    }
}

/// A launch being described.
pub(crate) struct Launch<'a> {
    be: &'a CudaBackend,
    kernel: &'static str,
    args: Vec<ArgSlot>,
}

impl<'a> Launch<'a> {
    pub(crate) fn new(be: &'a CudaBackend, kernel: &'static str) -> Self {
        Launch { be, kernel, args: Vec::with_capacity(12) }
    }

    pub(crate) fn arg(&mut self, a: &impl PushArg) -> &mut Self {
        self.args.push(a.slot());
        self
    }

    /// # Safety
    /// As [`Device::launch`](super::device::Device::launch): the arguments pushed match the
    /// kernel's parameters and every buffer is valid for what the kernel touches at `cfg`.
    pub(crate) unsafe fn launch(&mut self, cfg: LaunchConfig) -> DevResult<()> {
        // SAFETY: this function's contract, passed on.
        unsafe { self.be.dev.launch(self.kernel, cfg, &self.args) }
    }
}
