//! Device buffers of the CUDA backend: copies in and out (counted for benchmarks), zeroed
//! scratch, and outputs poisoned before their kernels run.

use cudarc::driver::{CudaSlice, DevicePtrMut, DeviceRepr, ValidAsZeroBits};

use super::{device_err, CudaBackend};
use crate::error::Result;

impl CudaBackend {
    /// Host → device copy; an empty slice becomes a one-element buffer (no zero-size allocations).
    pub(crate) fn htod<T: DeviceRepr + ValidAsZeroBits + Default + Clone>(&self, op: &'static str, data: &[T]) -> Result<CudaSlice<T>> {
        if data.is_empty() {
            return self.zeros(op, 1);
        }
        self.copies.up(std::mem::size_of_val(data));
        self.stream.clone_htod(data).map_err(device_err(op))
    }

    /// A buffer of at least one element that a kernel will write in full: poisoned with 0xFF
    /// bytes when `poison_outputs` is on (NaN for f32, u32::MAX for indices), else zeroed.
    /// Accumulators and flags that a kernel expects to start at zero use [`Self::zeros`].
    pub(crate) fn output<T: DeviceRepr + ValidAsZeroBits>(&self, op: &'static str, n: usize) -> Result<CudaSlice<T>> {
        let mut s = self.zeros::<T>(op, n)?;
        if self.poison_outputs() {
            let bytes = s.num_bytes();
            let (ptr, _guard) = s.device_ptr_mut(&self.stream);
            // SAFETY: `ptr` is this freshly allocated slice's own device memory of `bytes` bytes,
            // allocated on `self.stream`, and the memset is ordered on the same stream. 0xFF bytes
            // are a valid bit pattern for the f32/u32/u64 buffers the backend allocates.
            unsafe { cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, self.stream.cu_stream()) }.map_err(device_err(op))?;
        }
        Ok(s)
    }

    /// Zeroed device buffer of at least one element.
    pub(crate) fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, op: &'static str, n: usize) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros::<T>(n.max(1)).map_err(device_err(op))
    }

    /// [`Self::output`] of `n + flags` words whose last `flags` words start at zero: the error
    /// flags a kernel raises (NaN seen), downloaded with the results in one copy.
    pub(crate) fn output_with_flags(&self, op: &'static str, n: usize, flags: usize) -> Result<CudaSlice<u32>> {
        let mut s = self.output::<u32>(op, n + flags)?;
        if self.poison_outputs() && flags > 0 {
            let mut tail = s.slice_mut(n..n + flags);
            self.stream.memset_zeros(&mut tail).map_err(device_err(op))?;
        }
        Ok(s)
    }

    /// Device → host copy of the first `n` elements (synchronous for pageable memory).
    pub(crate) fn dtoh<T: DeviceRepr + Default + Clone>(&self, op: &'static str, s: &CudaSlice<T>, n: usize) -> Result<Vec<T>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let v = s.slice(0..n);
        self.copies.down(n * std::mem::size_of::<T>());
        self.stream.clone_dtoh(&v).map_err(device_err(op))
    }
}
