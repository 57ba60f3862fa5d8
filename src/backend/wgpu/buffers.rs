//! Buffers of the wgpu backend: uploads (counted), parameter blocks (counted apart), outputs
//! poisoned or zeroed, one-staging readbacks, error scopes, the split of a batch into groups
//! within one binding, and device-resident tables (row chunks within one binding each).

use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::{dev_err, WgpuBackend};
use crate::backend::{BackendKind, DType, DeviceTable, HostTable, TableData};
use crate::error::{Error, Result};

/// A table resident on the device: row chunks, each within one storage binding.
pub struct WgpuTable {
    pub(crate) chunks: Vec<wgpu::Buffer>,
    pub(crate) rows_per_chunk: usize,
    /// Stored as f16 on the device (else f32, converted on upload).
    pub(crate) f16: bool,
}

/// One staged output: a device buffer and how to read it back.
pub(crate) struct Readback<'a> {
    pub buf: &'a wgpu::Buffer,
    pub bytes: u64,
}

pub(crate) fn words_f32(b: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(b)
}
pub(crate) fn words_u32(b: &[u8]) -> Vec<u32> {
    bytemuck::pod_collect_to_vec(b)
}

/// Split `0..n` into consecutive ranges whose per-item cost sum stays within `limit`
/// (a single item over the limit gets its own range).
pub(crate) fn split_by(n: usize, limit: u64, cost: impl Fn(usize) -> u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut acc = 0u64;
    for i in 0..n {
        let c = cost(i);
        if i > start && acc + c > limit {
            out.push(start..i);
            start = i;
            acc = 0;
        }
        acc += c;
    }
    if start < n || out.is_empty() {
        out.push(start..n);
    }
    out
}

/// Pack units with cost vectors greedily into consecutive groups within `lim` per component
/// (a unit over the limit gets its own group; no units, no groups).
pub(crate) fn pack<const N: usize>(costs: &[[u64; N]], lim: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut acc = [0u64; N];
    for (u, c) in costs.iter().enumerate() {
        if u > start && (0..N).any(|i| acc[i] + c[i] > lim) {
            out.push(start..u);
            start = u;
            acc = [0; N];
        }
        for i in 0..N {
            acc[i] += c[i];
        }
    }
    if start < costs.len() {
        out.push(start..costs.len());
    }
    out
}

impl WgpuBackend {
    pub(crate) fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.copies.up(bytes.len());
        if bytes.len() % 4 != 0 || bytes.len() < 16 {
            let mut v = bytes.to_vec();
            v.resize(v.len().div_ceil(4).max(4) * 4, 0);
            return self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &v,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            });
        }
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        })
    }

    pub(crate) fn uniform<T: bytemuck::Pod>(&self, p: &T) -> wgpu::Buffer {
        // A dispatch's parameters: CUDA passes these as kernel arguments.
        self.copies.aux(std::mem::size_of::<T>());
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::bytes_of(p),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// A device buffer of `words` 32-bit words, poisoned with 0xFFFFFFFF (NaN / u32::MAX)
    /// when `poison_outputs` is on.
    pub(crate) fn output(&self, label: &str, words: usize) -> wgpu::Buffer {
        let size = (words.max(4) * 4) as u64;
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        if self.opts.poison_outputs {
            self.copies.aux(size as usize);
            let bytes = vec![0xFFu8; size as usize];
            return self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents: &bytes, usage });
        }
        self.device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false })
    }

    /// A zero-initialised device buffer of `words` (wgpu zeroes new buffers: no transfer).
    pub(crate) fn zeroed(&self, label: &str, words: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (words.max(4) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    pub(crate) fn encoder(&self) -> wgpu::CommandEncoder {
        self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
    }

    /// Submit `enc` after copying every readback into one staging buffer; wait; return the
    /// bytes of each readback. One download per call.
    pub(crate) fn finish(&self, op: &'static str, mut enc: wgpu::CommandEncoder, reads: &[Readback]) -> Result<Vec<Vec<u8>>> {
        let mut offs = Vec::with_capacity(reads.len());
        let mut total = 0u64;
        for r in reads {
            offs.push(total);
            total += r.bytes.div_ceil(4) * 4;
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: total.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        for (r, &o) in reads.iter().zip(&offs) {
            let n = r.bytes.div_ceil(4) * 4;
            if n > 0 {
                enc.copy_buffer_to_buffer(r.buf, 0, &staging, o, n);
            }
        }
        self.queue.submit([enc.finish()]);
        self.copies.down(total as usize);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |res| {
            let _ = tx.send(res);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| dev_err(op, e))?;
        rx.recv().map_err(|e| dev_err(op, e))?.map_err(|e| dev_err(op, e))?;
        let out = {
            let view = staging.get_mapped_range(..).map_err(|e| dev_err(op, e))?;
            reads.iter().zip(&offs).map(|(r, &o)| view[o as usize..(o + r.bytes) as usize].to_vec()).collect()
        };
        staging.unmap();
        Ok(out)
    }

    /// Run `f` inside validation and out-of-memory error scopes.
    pub(crate) fn scoped<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let r = f();
        let ve = pollster::block_on(val.pop());
        let oe = pollster::block_on(oom.pop());
        if let Some(e) = ve {
            return Err(dev_err(op, e));
        }
        if let Some(e) = oe {
            return Err(dev_err(op, e));
        }
        r
    }

    pub(crate) fn table<'a>(&self, t: &'a DeviceTable) -> Result<&'a WgpuTable> {
        t.downcast::<WgpuTable>(BackendKind::Wgpu, self.id)
    }

    /// `Backend::upload_table` (checked there): the table in row chunks of at most one binding each (f16 kept
    /// as f16 when the device stores it, else widened to f32).
    pub(crate) fn upload_chunked(&self, name: &'static str, table: &HostTable) -> Result<DeviceTable> {
        let f16 = self.f16 && table.dtype() == DType::F16;
        let width = if f16 { 2 } else { 4 };
        let row_bytes = (table.cols * width).max(1) as u64;
        // Chunks hold a whole number of rows and an even number of f16 values.
        let mut rows_per_chunk = ((self.max_binding / row_bytes) as usize).max(1);
        if f16 && rows_per_chunk > 1 && (rows_per_chunk * table.cols) % 2 == 1 {
            rows_per_chunk -= 1;
        }
        let rows_per_chunk = rows_per_chunk.min(table.rows.max(1));
        let inner = self.scoped("upload_table", || {
            let mut chunks = Vec::new();
            let mut r0 = 0;
            loop {
                let r1 = (r0 + rows_per_chunk).min(table.rows);
                let (a, b) = (r0 * table.cols, r1 * table.cols);
                let buf = match (&table.data, f16) {
                    (TableData::F16(v), true) => self.upload(name, &v[a..b]),
                    (TableData::F16(v), false) => self.upload(name, &v[a..b].iter().map(|x| x.to_f32()).collect::<Vec<f32>>()),
                    (TableData::F32(v), _) => self.upload(name, &v[a..b]),
                };
                chunks.push(buf);
                r0 = r1;
                if r0 >= table.rows {
                    break;
                }
            }
            Ok(WgpuTable { chunks, rows_per_chunk, f16 })
        })?;
        Ok(DeviceTable {
            name,
            rows: table.rows,
            cols: table.cols,
            dtype: table.dtype(),
            backend: BackendKind::Wgpu,
            device_id: self.id,
            inner: Arc::new(inner),
        })
    }

    pub(crate) fn f16_flag(t: &WgpuTable, bit: u32) -> u32 {
        if t.f16 {
            bit
        } else {
            0
        }
    }

    /// The one binding holding the whole table, or a typed error when it is split.
    pub(crate) fn whole<'a>(
        &self,
        name: &'static str,
        t: &'a WgpuTable,
        rows: usize,
        cols: usize,
        width: usize,
    ) -> Result<&'a wgpu::Buffer> {
        if t.chunks.len() == 1 {
            return Ok(&t.chunks[0]);
        }
        Err(Error::TooLarge { field: name, value: (rows * cols * width) as u64, limit: self.max_binding })
    }
}
