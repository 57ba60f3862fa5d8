//! CPU emulator of the CUDA the kernels use (feature `cuda-emu`): `kernels/*.cu` compiled as C++
//! against `emu/cuda_emu.h` and run by `emu/runtime.cpp` (see `emu/README.md`). This module is
//! the thin Rust face of its C ABI: emulated device allocations with guard zones, and launches by
//! kernel name with cuLaunchKernel-style argument arrays.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

mod ffi {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" {
        pub fn emu_alloc(bytes: usize) -> *mut c_void;
        pub fn emu_free(p: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
        pub fn emu_check(p: *const c_void, err: *mut c_char, err_len: usize) -> c_int;
        pub fn emu_check_all(err: *mut c_char, err_len: usize) -> c_int;
        pub fn emu_memset(p: *mut c_void, byte: c_int, n: usize, err: *mut c_char, err_len: usize) -> c_int;
        #[allow(clippy::too_many_arguments)]
        pub fn emu_launch(
            kernel: *const c_char,
            gx: u32,
            gy: u32,
            gz: u32,
            bx: u32,
            by: u32,
            bz: u32,
            dyn_smem: usize,
            args: *mut *mut c_void,
            seed: u64,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn emu_kernel_count() -> usize;
        pub fn emu_kernel_name(i: usize) -> *const c_char;
        pub fn emu_kernel_arity(kernel: *const c_char) -> c_int;
    }
}

const ERR_LEN: usize = 2048;

/// Runs `f` with an error buffer; `Err` with the buffer's message when `f` returns non-zero.
fn with_err(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), String> {
    let mut buf = vec![0u8; ERR_LEN];
    if f(buf.as_mut_ptr().cast(), ERR_LEN) == 0 {
        return Ok(());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(ERR_LEN);
    Err(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// One emulated device allocation: host memory between two guard zones, 256-byte aligned, filled
/// with 0xCD when made. Freed on drop; [`Alloc::free`] also reports an out-of-bounds write.
#[derive(Debug)]
pub struct Alloc {
    ptr: *mut c_void,
    bytes: usize,
}

impl Alloc {
    /// `bytes` of emulated device memory (0 is allowed and gives a unique pointer).
    pub fn new(bytes: usize) -> Result<Self, String> {
        // SAFETY: emu_alloc has no preconditions; it returns null only when the host is out of memory.
        let ptr = unsafe { ffi::emu_alloc(bytes) };
        if ptr.is_null() {
            return Err(format!("emulated allocation of {bytes} bytes failed"));
        }
        Ok(Alloc { ptr, bytes })
    }

    /// A new allocation holding a copy of `data`.
    pub fn from_slice<T: bytemuck::Pod>(data: &[T]) -> Result<Self, String> {
        let mut a = Alloc::new(std::mem::size_of_val(data))?;
        a.write(data);
        Ok(a)
    }

    /// The device address (a host pointer) kernels receive.
    pub fn ptr(&self) -> *mut c_void {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Copies `data` to the start of the allocation. Panics if it does not fit.
    pub fn write<T: bytemuck::Pod>(&mut self, data: &[T]) {
        let src: &[u8] = bytemuck::cast_slice(data);
        assert!(src.len() <= self.bytes, "write of {} bytes into an allocation of {}", src.len(), self.bytes);
        // SAFETY: `ptr` is valid for `bytes` bytes (emu_alloc), src.len() <= bytes, and the host
        // slice cannot overlap memory the emulator allocated.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.cast::<u8>(), src.len()) };
    }

    /// The first `n` elements of type `T`. Panics if they do not fit.
    pub fn read<T: bytemuck::Pod>(&self, n: usize) -> Vec<T> {
        let mut out = vec![T::zeroed(); n];
        let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
        assert!(dst.len() <= self.bytes, "read of {} bytes from an allocation of {}", dst.len(), self.bytes);
        // SAFETY: `ptr` is valid for `bytes` bytes and no kernel runs during this call (launches
        // are synchronous), so the bytes are not being written.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.cast::<u8>(), dst.as_mut_ptr(), dst.len()) };
        out
    }

    /// Sets every byte of the allocation to `byte`.
    pub fn fill(&mut self, byte: u8) -> Result<(), String> {
        // SAFETY: the range is exactly this live allocation; emu_memset checks it again.
        with_err(|e, l| unsafe { ffi::emu_memset(self.ptr, c_int::from(byte), self.bytes, e, l) })
    }

    /// Checks the allocation's guard zones.
    pub fn check(&self) -> Result<(), String> {
        // SAFETY: `ptr` is a live emulator allocation; the call only reads its guards.
        with_err(|e, l| unsafe { ffi::emu_check(self.ptr, e, l) })
    }

    /// Frees the allocation; `Err` if a kernel wrote into a guard zone (the memory is freed anyway).
    pub fn free(mut self) -> Result<(), String> {
        let p = std::mem::replace(&mut self.ptr, std::ptr::null_mut());
        // SAFETY: `p` came from emu_alloc and is freed exactly once (drop sees null afterwards).
        with_err(|e, l| unsafe { ffi::emu_free(p, e, l) })
    }
}

impl Drop for Alloc {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        // SAFETY: `ptr` came from emu_alloc and has not been freed (free() nulls it).
        if let Err(e) = with_err(|e, l| unsafe { ffi::emu_free(self.ptr, e, l) }) {
            if !std::thread::panicking() {
                panic!("emulated allocation dropped with a damaged guard: {e}");
            }
        }
    }
}

// SAFETY: an Alloc owns plain heap memory that no thread-affine state guards; writes need
// `&mut self`, and kernels touch it only inside `unsafe` launches whose caller answers for races.
unsafe impl Send for Alloc {}
// SAFETY: as above; `&self` methods only read the memory or the emulator's locked bookkeeping.
unsafe impl Sync for Alloc {}

/// Pointer to a parameter value, for the `args` of [`launch`] (cuLaunchKernel takes a pointer to
/// each parameter's value; for a pointer parameter, a pointer to the pointer).
pub fn arg<T>(v: &mut T) -> *mut c_void {
    (v as *mut T).cast()
}

/// Launches `kernel` (its `extern "C"` name) over `grid` x `block` threads with `smem` bytes of
/// dynamic shared memory. `args[i]` points at the i-th parameter's value, exactly as for
/// cuLaunchKernel; every pointer inside must be an emulator allocation (or host memory the kernel
/// may touch). `seed` draws the order in which threads and blocks run. Runs to completion; `Err`
/// names the kernel and block on a deadlock, divergent barrier, bad warp mask, write past the
/// dynamic shared memory, or a guard zone damaged by this thread's allocations.
///
/// # Safety
/// The kernel reads and writes wherever its arguments point: `args` must match its parameter
/// list in number and type, and every buffer must be large enough for the given geometry.
pub unsafe fn launch(
    kernel: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    smem: usize,
    args: &[*mut c_void],
    seed: u64,
) -> Result<(), String> {
    let name = CString::new(kernel).map_err(|_| format!("kernel name {kernel:?} contains a NUL"))?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let arity = unsafe { ffi::emu_kernel_arity(name.as_ptr()) };
    if arity < 0 {
        return Err(format!("unknown kernel '{kernel}' (not in the emulator's registry)"));
    }
    if arity as usize != args.len() {
        return Err(format!("kernel {kernel} takes {arity} arguments, {} given", args.len()));
    }
    let mut slots = args.to_vec();
    // SAFETY: name and slots live across the call; the caller guarantees that the argument
    // values match the kernel's parameters and that the buffers cover what it touches.
    with_err(|e, l| unsafe {
        ffi::emu_launch(name.as_ptr(), grid.0, grid.1, grid.2, block.0, block.1, block.2, smem, slots.as_mut_ptr(), seed, e, l)
    })
}

/// Checks the guard zones of every live emulator allocation (all threads').
pub fn check_all() -> Result<(), String> {
    // SAFETY: reads only the emulator's own bookkeeping and guard bytes.
    with_err(|e, l| unsafe { ffi::emu_check_all(e, l) })
}

/// Names of every kernel the emulator can launch.
pub fn kernels() -> Vec<String> {
    // SAFETY: emu_kernel_count has no preconditions.
    let n = unsafe { ffi::emu_kernel_count() };
    (0..n)
        .filter_map(|i| {
            // SAFETY: i < count, so the result is null or a static NUL-terminated string.
            let p = unsafe { ffi::emu_kernel_name(i) };
            // SAFETY: non-null names point at string literals in the registry.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}
