// bias_act.cu — bias and activation in place: the MLP's layers after each GEMM (SPEC §5).
// Reference: src/backend/cpu/bias_act.rs, reached through Backend::bias_act. Compiled with
// --fmad=false (a lone add; σ in f64 must round like the CPU's).
//
// Shapes: x [m, n] f32 (in place), bias [n] f32; act 0 = none, 1 = ReLU, 2 = σ:
//   s = x[i, j] + bias[j]               (f32 add, as the CPU)
//   none: s;  ReLU: s < 0 ? +0 : s;  σ: (float)(1 / (1 + exp(-(double)s)))
//   (CUDA's double exp is within 1 ulp of the correctly rounded value, so σ can differ from the
//   CPU's libm in the last bit of the f32 only when the f64 result sits on a rounding boundary;
//   parity allows 1 ulp on σ and is exact on none / ReLU.)
//   check::bias_act guarantees the shapes and m * n <= u32::MAX.
// Launch bias_act_fwd: 1-D grid-stride over m * n elements, 256 threads per block, grid
//   min(ceil(m n / 256), 32 * SMs). Each element is read and written (`=`) by its own thread.
// bias_act_bwd: the backward for none / ReLU (σ is never differentiated here: training ends in
//   logits and BCE). dy [m, n] f32 in place, y [m, n] the forward's output, db [n]:
//   ReLU: dy[i, j] = 0 where y[i, j] <= 0;  db[j] = Σ_i dy[i, j] in row order, in f32 (the CPU's
//   order: bit-identical). One thread per column j walking the rows (consecutive threads read
//   consecutive columns of a row: coalesced), 1-D grid-stride over n, 256 per block.
// Versions: one each (element-wise: the floor is 8 bytes per element forward, 12 backward).

#include "common.cuh"

struct BiasActParams {
    u32 m;
    u32 n;
    u32 act;
};

extern "C" __global__ void __launch_bounds__(256)
bias_act_fwd(const BiasActParams p, float* __restrict__ x, const float* __restrict__ bias) {
    const u64 total = (u64)p.m * p.n;
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (u64)gridDim.x * blockDim.x) {
        const float s = x[e] + bias[e % p.n];
        float y = s;
        if (p.act == 1u) {
            y = s < 0.0f ? 0.0f : s;
        } else if (p.act == 2u) {
            y = (float)(1.0 / (1.0 + exp(-(double)s)));
        }
        x[e] = y;
    }
}

extern "C" __global__ void __launch_bounds__(256)
bias_act_bwd(const BiasActParams p, float* __restrict__ dy, const float* __restrict__ y, float* __restrict__ db) {
    for (u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x; j < p.n; j += (u64)gridDim.x * blockDim.x) {
        float sum = 0.0f;
        for (u64 i = 0; i < p.m; ++i) {
            const u64 e = i * p.n + j;
            float g = dy[e];
            if (p.act == 1u && y[e] <= 0.0f) {
                g = 0.0f;
                dy[e] = 0.0f;
            }
            sum = sum + g;
        }
        db[j] = sum;
    }
}
