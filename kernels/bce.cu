// bce.cu — mean binary cross-entropy on logits and its gradient (SPEC §5, TWIN eq. 2).
// Reference: src/backend/cpu/bce.rs (same formulas, also in f64). Compiled with --fmad=false so
// the f64 arithmetic rounds like the CPU's (no contraction).
//
// Shapes: B samples; logits [B] f32, labels [B] f32 (any finite value; 0/1 in training),
//   loss [B] f64 (per-sample terms), dlogit [B] f32. check (Backend::bce) guarantees B >= 1,
//   B <= u32::MAX and finite inputs.
// Launch bce_fwd: 1-D grid-stride over the B samples, 256 threads per block, grid
//   min(ceil(B / 256), 32 * SMs). Thread b, in f64 (s = logits[b], y = labels[b]):
//   loss[b]   = max(s, 0) - s y + log1p(exp(-|s|))      (the stable form of the cross-entropy)
//   dlogit[b] = (1 / (1 + exp(-s)) - y) * inv_b           (inv_b = 1/B from the host, in f64)
//   rounded to f32 once. The mean is formed on the host: Σ_b loss[b] in f64 in sample order, times
//   1/B, exactly the CPU's order of additions. (Device-resident steps form it on the device
//   with bce_mean_fwd: one thread adds the B terms in sample order and scales by 1/B, the same
//   additions; B is a batch, so the sequential sum costs microseconds.) Each element written with `=` by its own thread;
//   no atomics, no device reduction, so results are the same run to run.

#include "common.cuh"

struct BceParams {
    u32 n;  // B
    u32 pad0;
    double inv_b;  // 1 / B
};

extern "C" __global__ void __launch_bounds__(256)
bce_fwd(const BceParams P, const float* __restrict__ logits, const float* __restrict__ labels,
        double* __restrict__ loss, float* __restrict__ dlogit) {
    const u64 total = P.n;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const double s = (double)logits[i], y = (double)labels[i];
        loss[i] = fmax(s, 0.0) - s * y + log1p(exp(-fabs(s)));
        dlogit[i] = (float)((1.0 / (1.0 + exp(-s)) - y) * P.inv_b);
    }
}

extern "C" __global__ void __launch_bounds__(32)
bce_mean_fwd(const BceParams P, const double* __restrict__ loss, double* __restrict__ mean) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double sum = 0.0;
    for (u32 i = 0; i < P.n; ++i) sum = sum + loss[i];
    mean[0] = sum * P.inv_b;
}
