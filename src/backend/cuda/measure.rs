//! What the card can do, measured or read from its attributes: the floors of `twin bench`.

use super::CudaBackend;
use crate::backend::Backend;
use crate::error::Result;

impl CudaBackend {
    /// Device-to-device copy bandwidth in bytes/s: `reps` copies of a `bytes` buffer timed with
    /// events (read + write bytes counted, as the PyTorch peer does). The benchmark's memory floor.
    pub fn copy_bandwidth(&self, bytes: usize, reps: u32) -> Result<f64> {
        let n = (bytes / 4).max(1);
        let src = self.zeros::<u32>("bandwidth: alloc", n)?;
        let dst = self.zeros::<u32>("bandwidth: alloc", n)?;
        self.dtod("bandwidth: warm-up copy", &src, &dst)?;
        let ms = self.time_ms(&mut || {
            for _ in 0..reps {
                self.dtod("bandwidth: copy", &src, &dst)?;
            }
            Ok(())
        })?;
        Ok(2.0 * (n * 4) as f64 * reps as f64 / (ms.max(1e-6) / 1e3))
    }

    /// Peak f32 FMA rate on CUDA cores and f16 tensor-core rate (flop/s) from the SM count and
    /// the boost clock: 128 f32 lanes per SM; 4096 f16 flop/clock/SM on sm_90 (dense), 2048 on
    /// sm_80, and the f32 rate where tensor cores are unknown. Nominal peaks, not measurements.
    pub fn peak_flops(&self) -> Result<(f64, f64)> {
        let khz = self.clock_khz as f64;
        let per_sm_clock = self.sm_count as f64 * khz * 1e3;
        let f32_peak = per_sm_clock * 256.0;
        let f16_peak = match self.arch.as_str() {
            "sm_90" | "sm_90a" | "sm_100" | "sm_120" => per_sm_clock * 4096.0,
            "sm_80" | "sm_86" | "sm_89" => per_sm_clock * 2048.0,
            _ => f32_peak,
        };
        Ok((f32_peak, f16_peak))
    }
}
