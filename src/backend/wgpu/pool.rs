//! The wgpu backend's pool of storage buffers: tensors (and the scratch buffers of the
//! device-resident ops, which have the same usage) take a buffer of a power-of-two size class
//! from it and give it back when dropped, so a serving loop or a training step creates buffers
//! only until its shapes repeat. The CUDA backend's `Pool` (cuda/buffers.rs) is the model.
//!
//! # When a pooled buffer may be reused
//!
//! Dropping a `wgpu::Buffer` does not free it while a submitted command buffer uses it: wgpu
//! keeps the resource alive until that submission completes. Keeping the *handle* in the pool
//! and handing it to a new owner is therefore safe exactly when every later use of it is
//! ordered after the earlier submissions by the queue:
//!
//! - Commands recorded by the new owner are submitted to the backend's one queue after the
//!   earlier submissions; wgpu executes one queue's submissions in order and inserts the
//!   barriers between a command buffer's uses and those of earlier submissions (write after
//!   read, write after write), as for any buffer used by two submissions.
//! - `queue.write_buffer` (uploads, poison, `tensor_overwrite`) is a queue operation too: the
//!   data is staged at once and copied at the start of the *next* `submit`, which comes after
//!   every earlier submission. What queue order does not cover is a command buffer that was
//!   *recorded* before the write but is submitted after it: it would see the new data. So a
//!   `PoolBuf` must outlive the submission of every encoder that recorded it. Every op here
//!   holds its buffers in locals or in the tensors it returns until after its `submit`; an op
//!   that fails between recording and submitting drops its encoder unsubmitted, so the buffers
//!   it returns to the pool were never used by the device. No storage buffer is mapped from the
//!   host (they have no MAP_* usage), so there is no other host write.
//! - A handle is never cloned out of a `PoolBuf` for longer than the `PoolBuf` lives (a clone
//!   left in a tensor after its `PoolBuf` returned would alias the next owner).
//!
//! # Contents
//!
//! wgpu zeroes a new buffer; a reused one holds its last owner's data. [`WgpuBackend::pooled_zeroed`]
//! (and `_in`, in the caller's encoder) clears a reused buffer on the device;
//! [`WgpuBackend::pooled_output`] is for buffers a kernel writes in full (poisoned when
//! `poison_outputs` is on, as `output` is), [`WgpuBackend::pooled_upload`] for host data.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use super::WgpuBackend;

/// At most this many bytes are kept; past that a returned buffer is dropped (freed by wgpu
/// once the device is done with it).
const POOL_CAP_BYTES: u64 = 1 << 30;
/// At most this many buffers are kept.
const POOL_CAP_BUFFERS: usize = 256;
const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// Counts of the pool since the backend was opened, and what it keeps now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers handed out from the pool.
    pub hits: u64,
    /// Buffers created because the pool had none of the size class and usage.
    pub misses: u64,
    /// Buffers given back and kept.
    pub returned: u64,
    /// Buffers given back but dropped (the pool was full).
    pub dropped: u64,
    /// Buffers kept now.
    pub kept_buffers: usize,
    /// Bytes kept now.
    pub kept_bytes: u64,
}

type Key = (u64, wgpu::BufferUsages);

/// Freed buffers by (size class in bytes, usage).
pub(crate) struct Pool {
    /// The largest buffer size rounded up to a power of two (a storage binding's limit).
    limit: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    free: HashMap<Key, Vec<wgpu::Buffer>>,
    stats: PoolStats,
}

impl Pool {
    pub(crate) fn new(limit: u64) -> Pool {
        Pool { limit, state: Mutex::new(State::default()) }
    }

    /// Powers of two from 256 bytes; past the binding limit the size itself (rounded to 256).
    fn class(&self, bytes: u64) -> u64 {
        let p = bytes.max(256).next_power_of_two();
        if p <= self.limit {
            p
        } else {
            bytes.div_ceil(256) * 256
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, key: Key) -> Option<wgpu::Buffer> {
        let mut g = self.lock();
        let b = g.free.get_mut(&key).and_then(|v| v.pop());
        if b.is_some() {
            g.stats.hits += 1;
            g.stats.kept_buffers -= 1;
            g.stats.kept_bytes -= key.0;
        } else {
            g.stats.misses += 1;
        }
        b
    }

    fn put(&self, key: Key, buf: wgpu::Buffer) {
        let mut g = self.lock();
        if g.stats.kept_buffers >= POOL_CAP_BUFFERS || g.stats.kept_bytes + key.0 > POOL_CAP_BYTES {
            g.stats.dropped += 1;
            drop(g);
            drop(buf);
            return;
        }
        g.stats.returned += 1;
        g.stats.kept_buffers += 1;
        g.stats.kept_bytes += key.0;
        g.free.entry(key).or_default().push(buf);
    }

    fn stats(&self) -> PoolStats {
        self.lock().stats
    }
}

/// A storage buffer that goes back to its pool when dropped (or an unpooled one, dropped).
pub(crate) struct PoolBuf {
    buf: wgpu::Buffer,
    home: Option<(Arc<Pool>, Key)>,
}

impl PoolBuf {
    /// A buffer that is not the pool's (dropped with the tensor).
    pub(crate) fn unpooled(buf: wgpu::Buffer) -> PoolBuf {
        PoolBuf { buf, home: None }
    }
}

impl Deref for PoolBuf {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.buf
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        if let Some((pool, key)) = self.home.take() {
            // The handle moves to the pool; `self.buf`'s own reference is released below.
            pool.put(key, self.buf.clone());
        }
    }
}

impl WgpuBackend {
    /// A buffer of at least `words` words (and 16 bytes) from the pool, and whether it is new
    /// (then wgpu has zeroed it).
    fn pooled(&self, label: &str, words: usize) -> (PoolBuf, bool) {
        let key = (self.pool.class((words.max(4) * 4) as u64), STORAGE);
        let (buf, fresh) = match self.pool.take(key) {
            Some(b) => (b, false),
            None => {
                let desc = wgpu::BufferDescriptor { label: Some(label), size: key.0, usage: key.1, mapped_at_creation: false };
                (self.device.create_buffer(&desc), true)
            }
        };
        (PoolBuf { buf, home: Some((self.pool.clone(), key)) }, fresh)
    }

    /// A pooled buffer a kernel writes in full: poisoned with 0xFF bytes when `poison_outputs`
    /// is on (a queue write, ordered before the caller's next submission), else as it comes.
    pub(crate) fn pooled_output(&self, label: &str, words: usize) -> PoolBuf {
        let (b, _) = self.pooled(label, words);
        if self.opts.poison_outputs {
            // The words `output` poisons: kernels index and reads copy a buffer's first `words`
            // only (the rest of the size class, bound with it, is never addressed).
            let size = words.max(4) * 4;
            self.copies.aux(size);
            self.queue.write_buffer(&b, 0, &vec![0xFFu8; size]);
        }
        b
    }

    /// A pooled buffer that reads as zeros: a reused one is cleared on the device at once (its
    /// own submission, ordered before the caller's).
    pub(crate) fn pooled_zeroed(&self, label: &str, words: usize) -> PoolBuf {
        let (b, fresh) = self.pooled(label, words);
        if !fresh {
            let mut enc = self.encoder();
            enc.clear_buffer(&b, 0, None);
            self.queue.submit([enc.finish()]);
        }
        b
    }

    /// [`Self::pooled_zeroed`] with the clear recorded in `enc` (before anything the caller
    /// records next). The caller must not `queue.write_buffer` it before submitting `enc`: the
    /// write would run first and be cleared.
    pub(crate) fn pooled_zeroed_in(&self, enc: &mut wgpu::CommandEncoder, label: &str, words: usize) -> PoolBuf {
        let (b, fresh) = self.pooled(label, words);
        if !fresh {
            enc.clear_buffer(&b, 0, None);
        }
        b
    }

    /// A pooled buffer holding `data` (counted as an upload); the words past it up to 16 bytes
    /// are zero, as `upload` pads them. A queue write, ordered after every earlier submission.
    pub(crate) fn pooled_upload(&self, label: &str, data: &[u32]) -> PoolBuf {
        let (b, _) = self.pooled(label, data.len());
        self.copies.up(data.len() * 4);
        if data.len() < 4 {
            let mut v = data.to_vec();
            v.resize(4, 0);
            self.queue.write_buffer(&b, 0, bytemuck::cast_slice(&v));
        } else {
            self.queue.write_buffer(&b, 0, bytemuck::cast_slice(data));
        }
        b
    }

    /// Hits, misses and what the buffer pool keeps now.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }
}
