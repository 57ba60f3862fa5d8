// log_size_bias.cu — log-cluster-size reweighting (SPEC §3.3). Compiled with --fmad=false.
//
// Shapes: bias [N, h] f32, sizes [N] f32 (n ≥ 1, checked by check::sizes), out [N, h] f32.
//   out[n, a] = bias[n, a] + (float)ln((double)sizes[n])   (as the CPU: ln in f64, add in f32)
// `out` may alias `bias` (the online path updates the bias in place): each thread reads and
// writes only its own element, so the pointers are not __restrict__.
// Launch: one thread per (n, a), 1-D grid-stride, 256 threads per block. Versions: one.

#include "common.cuh"

struct LogSizeBiasParams {
    u32 n;      // N behaviours
    u32 heads;  // h
};

extern "C" __global__ void __launch_bounds__(256)
log_size_bias_fwd(const LogSizeBiasParams p, const float* bias, const float* __restrict__ sizes, float* out) {
    const u64 total = (u64)p.n * p.heads;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 n = i / p.heads;
        const float ln = (float)log((double)sizes[n]);
        out[i] = bias[i] + ln;
    }
}
