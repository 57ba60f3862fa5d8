//! The card a benchmark runs on and its floors: memory bandwidth (measured with a device copy,
//! as the PyTorch peer measures it) and peak arithmetic rates (nominal on GPUs, measured on the
//! CPU). A row's floor is `max(bytes / bandwidth, flops / peak)`.

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

#[cfg(any(feature = "cuda", feature = "wgpu"))]
use crate::backend::Backend;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
use crate::error::Result;

#[derive(Clone, Debug, Serialize)]
pub struct Card {
    pub backend: String,
    pub device: String,
    /// Device copy bandwidth, bytes/s (read + write counted).
    pub bw_bytes_per_s: f64,
    /// Peak f32 rate (CUDA cores on a GPU), flop/s; 0 where unknown.
    pub f32_flops: f64,
    /// Peak f16 rate (tensor cores where the card has them), flop/s; 0 where unknown.
    pub f16_flops: f64,
    /// How each figure was obtained.
    pub how: String,
}

impl Card {
    /// The floor of a piece of work in microseconds; `None` when neither rate is known.
    pub fn floor_us(&self, bytes: f64, flops: f64, f16: bool) -> Option<f64> {
        let peak = if f16 && self.f16_flops > 0.0 { self.f16_flops } else { self.f32_flops };
        let mem = if self.bw_bytes_per_s > 0.0 { bytes / self.bw_bytes_per_s } else { 0.0 };
        let arith = if peak > 0.0 { flops / peak } else { 0.0 };
        let t = mem.max(arith);
        (t > 0.0).then_some(t * 1e6)
    }
}

/// The CUDA device behind `c`.
#[cfg(feature = "cuda")]
pub fn cuda_card(c: &crate::backend::cuda::CudaBackend) -> Result<Card> {
    let bw = c.copy_bandwidth(512 << 20, 10)?;
    let (f32_flops, f16_flops) = c.peak_flops()?;
    Ok(Card {
        backend: "cuda".into(),
        device: c.describe(),
        bw_bytes_per_s: bw,
        f32_flops,
        f16_flops,
        how: "bandwidth: 10 device copies of 512 MiB timed with CUDA events; peaks: SMs x boost clock x \
              (256 f32 flop, 4096 f16 tensor flop on sm_90) per SM per clock, nominal"
            .into(),
    })
}

/// The adapter behind `w` (the CPU's floors when it is a CPU driver such as lavapipe).
#[cfg(feature = "wgpu")]
pub fn wgpu_card(w: &crate::backend::wgpu::WgpuBackend) -> Result<Card> {
    let info = w.adapter();
    if info.device_type == wgpu::DeviceType::Cpu {
        let mut c = cpu_card();
        c.backend = "wgpu".into();
        c.device = format!("{} (a CPU Vulkan driver: this machine's CPU floors)", info.name);
        return Ok(c);
    }
    let bw = w.copy_bandwidth(256 << 20, 10)?;
    let (f32_flops, f16_flops, how) = match nominal_peaks(&info.name) {
        Some((a, b)) => (a, b, "peaks: the card's datasheet (dense), by adapter name"),
        None => (0.0, 0.0, "peaks unknown for this adapter: floors are memory-only"),
    };
    Ok(Card {
        backend: "wgpu".into(),
        device: w.describe(),
        bw_bytes_per_s: bw,
        f32_flops,
        f16_flops,
        how: format!("bandwidth: 10 buffer copies of 256 MiB, host clock after a wait; {how}"),
    })
}

/// Datasheet f32 (CUDA cores) and dense f16 tensor rates of the cards this project runs on.
pub fn nominal_peaks(name: &str) -> Option<(f64, f64)> {
    let n = name.to_ascii_uppercase();
    if n.contains("H100") || n.contains("H200") {
        Some((67e12, 989e12))
    } else if n.contains("A100") {
        Some((19.5e12, 312e12))
    } else {
        None
    }
}

/// The CPU: bandwidth from a parallel copy of 256 MiB, the f32 rate from GEMMs on every thread.
pub fn cpu_card() -> Card {
    let bw = cpu_copy_bandwidth(256 << 20, 5);
    let flops = cpu_flops();
    Card {
        backend: "cpu".into(),
        device: format!("{} CPU threads", rayon::current_num_threads()),
        bw_bytes_per_s: bw,
        f32_flops: flops,
        f16_flops: flops,
        how: format!(
            "bandwidth: 5 parallel copies of 256 MiB; peak: measured f32 GEMM (256³, matrixmultiply) on every thread{}",
            if cfg!(debug_assertions) {
                " (built with debug assertions: an unoptimised build measures a peak, and so floors, far below the machine's)"
            } else {
                ""
            }
        ),
    }
}

fn cpu_copy_bandwidth(bytes: usize, reps: u32) -> f64 {
    let n = bytes / 4;
    let src: Vec<f32> = (0..n).into_par_iter().map(|i| i as f32).collect();
    let mut dst = vec![0f32; n];
    let chunk = (n / rayon::current_num_threads().max(1)).max(1 << 16);
    let copy = |dst: &mut Vec<f32>| dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s));
    copy(&mut dst);
    let t = Instant::now();
    for _ in 0..reps {
        copy(&mut dst);
    }
    std::hint::black_box(&dst);
    2.0 * (n * 4) as f64 * reps as f64 / t.elapsed().as_secs_f64().max(1e-9)
}

/// Flop/s of f32 GEMM (256³, ndarray's matrixmultiply kernels, which pick AVX/FMA at run time)
/// on every thread at once for ~100 ms: the practical f32 peak of this machine.
fn cpu_flops() -> f64 {
    const N: usize = 256;
    const REPS: usize = 6;
    let threads = rayon::current_num_threads().max(1);
    let a = ndarray::Array2::<f32>::from_shape_fn((N, N), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.1);
    let b = a.t().to_owned();
    let _ = a.dot(&b);
    let t = Instant::now();
    let sums: f32 = (0..threads)
        .into_par_iter()
        .map(|_| {
            let mut c = a.dot(&b);
            for _ in 1..REPS {
                c = a.dot(&c.mapv(|x| x * 1e-3));
            }
            c[[0, 0]]
        })
        .sum();
    std::hint::black_box(sums);
    (2 * N * N * N * REPS * threads) as f64 / t.elapsed().as_secs_f64().max(1e-9)
}
