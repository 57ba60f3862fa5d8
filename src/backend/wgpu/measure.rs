//! What the adapter can do, measured: the memory floor of `twin bench` on a real GPU.

use super::{dev_err, WgpuBackend};
use crate::error::Result;

impl WgpuBackend {
    /// Buffer-to-buffer copy bandwidth in bytes/s (read + write counted): `reps` copies of
    /// `bytes` (capped by the device's largest buffer) in one submission, host clock around
    /// the submit and the wait. The benchmark's memory floor on a real GPU.
    pub fn copy_bandwidth(&self, bytes: u64, reps: u32) -> Result<f64> {
        let size = bytes.min(self.device.limits().max_buffer_size) / 4 * 4;
        self.scoped("copy bandwidth", || {
            let usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
            let src = self.device.create_buffer(&wgpu::BufferDescriptor { label: Some("bw src"), size, usage, mapped_at_creation: false });
            let dst = self.device.create_buffer(&wgpu::BufferDescriptor { label: Some("bw dst"), size, usage, mapped_at_creation: false });
            let run = |n: u32| -> Result<f64> {
                let mut enc = self.encoder();
                for _ in 0..n {
                    enc.copy_buffer_to_buffer(&src, 0, &dst, 0, size);
                }
                let t0 = std::time::Instant::now();
                self.queue.submit([enc.finish()]);
                self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| dev_err("copy bandwidth", e))?;
                Ok(t0.elapsed().as_secs_f64())
            };
            run(1)?;
            let t = run(reps)?;
            Ok(2.0 * size as f64 * reps as f64 / t.max(1e-9))
        })
    }
}
