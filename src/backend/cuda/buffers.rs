//! Device buffers of the CUDA backend over [`Device`]: typed owned allocations (`Buf`) and
//! borrowed ranges of them (`View`); copies in and out (counted for benchmarks), zeroed scratch,
//! and outputs poisoned before their kernels run.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::mem::size_of;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use bytemuck::Pod;

use super::device::Device;
use super::{device_err, CudaBackend};
use crate::error::Result;

/// `len` elements of `T` in device memory, freed when dropped.
pub(crate) struct Buf<T> {
    dev: Arc<dyn Device>,
    addr: u64,
    len: usize,
    /// Where the allocation returns when dropped (tensors); `None`: freed at once.
    pool: Option<(Arc<Pool>, usize)>,
    _t: PhantomData<T>,
}

impl<T> Drop for Buf<T> {
    fn drop(&mut self) {
        match &self.pool {
            Some((pool, bytes)) => pool.put(*bytes, self.addr),
            None => self.dev.free(self.addr),
        }
    }
}

/// Freed tensor allocations kept for reuse, by size class (powers of two from 256 bytes), so a
/// serving loop or a training step allocates from the driver only until its shapes repeat. At
/// most `POOL_CAP_BYTES` are kept; past that a freed allocation goes back to the driver.
pub(crate) struct Pool {
    dev: Arc<dyn Device>,
    free: Mutex<(HashMap<usize, Vec<u64>>, usize)>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.drain();
    }
}

const POOL_CAP_BYTES: usize = 1 << 30;

impl Pool {
    pub(crate) fn new(dev: Arc<dyn Device>) -> Pool {
        Pool { dev, free: Mutex::new((HashMap::new(), 0)) }
    }
    fn class(bytes: usize) -> usize {
        bytes.max(256).next_power_of_two()
    }
    fn take(&self, class: usize) -> Option<u64> {
        let mut g = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let a = g.0.get_mut(&class).and_then(|v| v.pop());
        if a.is_some() {
            g.1 -= class;
        }
        a
    }
    fn put(&self, class: usize, addr: u64) {
        let mut g = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if g.1 + class > POOL_CAP_BYTES {
            drop(g);
            self.dev.free(addr);
            return;
        }
        g.1 += class;
        g.0.entry(class).or_default().push(addr);
    }
    /// Give every kept allocation back to the driver.
    pub(crate) fn drain(&self) {
        let mut g = self.free.lock().unwrap_or_else(|e| e.into_inner());
        for (_, v) in g.0.drain() {
            for a in v {
                self.dev.free(a);
            }
        }
        g.1 = 0;
    }
}

impl<T> Buf<T> {
    pub(crate) fn addr(&self) -> u64 {
        self.addr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Elements `range` of the buffer (clamped to it).
    pub(crate) fn slice(&self, range: impl RangeBounds<usize>) -> View<'_, T> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        }
        .min(self.len);
        let end = match range.end_bound() {
            Bound::Included(&e) => e + 1,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.len,
        }
        .clamp(start, self.len);
        View { addr: self.addr + (start * size_of::<T>()) as u64, len: end - start, _b: PhantomData }
    }
}

/// A range of a [`Buf`], borrowed for as long as it is used.
#[derive(Clone, Copy)]
pub(crate) struct View<'a, T> {
    addr: u64,
    len: usize,
    _b: PhantomData<&'a T>,
}

impl<T> View<'_, T> {
    pub(crate) fn addr(&self) -> u64 {
        self.addr
    }
}

impl CudaBackend {
    /// Uninitialised device buffer of at least one element.
    fn alloc<T: Pod>(&self, op: &'static str, n: usize) -> Result<Buf<T>> {
        let len = n.max(1);
        let addr = self.dev.alloc(len * size_of::<T>()).map_err(device_err(op))?;
        Ok(Buf { dev: self.dev.clone(), addr, len, pool: None, _t: PhantomData })
    }

    /// Uninitialised device buffer of at least one element from the backend's pool.
    pub(crate) fn alloc_pooled<T: Pod>(&self, op: &'static str, n: usize) -> Result<Buf<T>> {
        let len = n.max(1);
        let class = Pool::class(len * size_of::<T>());
        let addr = match self.pool.take(class) {
            Some(a) => a,
            None => self.dev.alloc(class).map_err(device_err(op))?,
        };
        Ok(Buf { dev: self.dev.clone(), addr, len, pool: Some((self.pool.clone(), class)), _t: PhantomData })
    }

    /// Host → device copy; an empty slice becomes a one-element buffer (no zero-size allocations).
    pub(crate) fn htod<T: Pod>(&self, op: &'static str, data: &[T]) -> Result<Buf<T>> {
        if data.is_empty() {
            return self.zeros(op, 1);
        }
        let b = self.alloc::<T>(op, data.len())?;
        self.copies.up(std::mem::size_of_val(data));
        self.dev.htod(b.addr, bytemuck::cast_slice(data)).map_err(device_err(op))?;
        Ok(b)
    }

    /// A buffer of at least one element that a kernel will write in full: poisoned with 0xFF
    /// bytes when `poison_outputs` is on (NaN for f32 and f64, u32::MAX for indices), else
    /// zeroed. Accumulators and flags that a kernel expects to start at zero use [`Self::zeros`].
    pub(crate) fn output<T: Pod>(&self, op: &'static str, n: usize) -> Result<Buf<T>> {
        let b = self.alloc::<T>(op, n)?;
        let byte = if self.poison_outputs() { 0xFF } else { 0 };
        self.dev.memset(b.addr, byte, b.len * size_of::<T>()).map_err(device_err(op))?;
        Ok(b)
    }

    /// Zeroed device buffer of at least one element.
    pub(crate) fn zeros<T: Pod>(&self, op: &'static str, n: usize) -> Result<Buf<T>> {
        let b = self.alloc::<T>(op, n)?;
        self.dev.memset(b.addr, 0, b.len * size_of::<T>()).map_err(device_err(op))?;
        Ok(b)
    }

    /// Set every byte of `v` to zero (stream-ordered).
    pub(crate) fn memset_zeros<T>(&self, op: &'static str, v: &View<'_, T>) -> Result<()> {
        self.dev.memset(v.addr, 0, v.len * size_of::<T>()).map_err(device_err(op))
    }

    /// [`Self::output`] of `n + flags` words whose last `flags` words start at zero: the error
    /// flags a kernel raises (NaN seen), downloaded with the results in one copy.
    pub(crate) fn output_with_flags(&self, op: &'static str, n: usize, flags: usize) -> Result<Buf<u32>> {
        let s = self.output::<u32>(op, n + flags)?;
        if flags > 0 {
            self.memset_zeros(op, &s.slice(n..n + flags))?;
        }
        Ok(s)
    }

    /// Device → host copy of the first `n` elements (waits for the queued work).
    pub(crate) fn dtoh<T: Pod>(&self, op: &'static str, s: &Buf<T>, n: usize) -> Result<Vec<T>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let n = n.min(s.len);
        let mut out = vec![T::zeroed(); n];
        self.copies.down(n * size_of::<T>());
        self.dev.dtoh(s.addr, bytemuck::cast_slice_mut(&mut out)).map_err(device_err(op))?;
        Ok(out)
    }

    /// Several device ranges `(address, words)` in one device→host copy: gathered device-side into
    /// a pooled buffer first when there is more than one.
    pub(crate) fn dtoh_many(&self, op: &'static str, parts: &[(u64, usize)]) -> Result<Vec<Vec<u32>>> {
        let total: usize = parts.iter().map(|p| p.1).sum();
        let mut all = vec![0u32; total];
        if total > 0 {
            let (addr, staging) = if parts.len() == 1 {
                (parts[0].0, None)
            } else {
                let st = self.alloc_pooled::<u32>(op, total)?;
                let mut at = 0u64;
                for &(a, n) in parts {
                    if n > 0 {
                        self.dev.dtod(st.addr() + at, a, n * 4).map_err(device_err(op))?;
                    }
                    at += (n * 4) as u64;
                }
                (st.addr(), Some(st))
            };
            self.copies.down(total * 4);
            self.dev.dtoh(addr, bytemuck::cast_slice_mut(&mut all)).map_err(device_err(op))?;
            drop(staging);
        }
        let mut out = Vec::with_capacity(parts.len());
        let mut at = 0;
        for &(_, n) in parts {
            out.push(all[at..at + n].to_vec());
            at += n;
        }
        Ok(out)
    }

    /// Device-to-device copy of all of `src` into `dst` (same length).
    pub(crate) fn dtod<T>(&self, op: &'static str, src: &Buf<T>, dst: &Buf<T>) -> Result<()> {
        self.dev.dtod(dst.addr, src.addr, src.len.min(dst.len) * size_of::<T>()).map_err(device_err(op))
    }
}
