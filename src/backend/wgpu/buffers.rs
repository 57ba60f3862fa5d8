//! Buffers of the wgpu backend: uploads (counted), parameter blocks (counted apart), outputs
//! poisoned or zeroed, dispatches over whole buffers or staged ranges, one-staging readbacks,
//! error scopes, and access to a table's chunks.

use wgpu::util::DeviceExt;

use super::{dev_err, Pipe, Readback, WgpuBackend, WgpuTable};
use crate::error::{Error, Result};

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

    pub(crate) fn dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipe: &Pipe,
        params: &wgpu::Buffer,
        bufs: &[&wgpu::Buffer],
        groups: (u32, u32),
    ) {
        let binds: Vec<wgpu::BufferBinding> = bufs.iter().map(|b| b.as_entire_buffer_binding()).collect();
        self.dispatch_bound(enc, pipe, params, &binds, groups);
    }

    /// [`Self::dispatch`] with buffer ranges (sections of a staged upload) as bindings.
    pub(crate) fn dispatch_bound(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipe: &Pipe,
        params: &wgpu::Buffer,
        binds: &[wgpu::BufferBinding],
        groups: (u32, u32),
    ) {
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() }];
        for (i, b) in binds.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: wgpu::BindingResource::Buffer(b.clone()) });
        }
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipe.layout, entries: &entries });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
        pass.set_pipeline(&pipe.pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
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
