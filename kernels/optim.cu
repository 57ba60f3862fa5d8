// optim.cu — the optimizers' updates in place (TWIN training, SPEC §5): Adam for dense tensors,
// row-sparse Adagrad for embedding rows. Reference: src/backend/cpu/optim.rs (the same f32
// operations in the same order; train::Optimizer runs it). Compiled with --fmad=false and
// NVRTC's IEEE division and square root, so the results are bit-identical to the CPU's.
//
// optim_adam_fwd: w, g, m, v [n] f32; one thread per element, 1-D grid-stride, 256 per block:
//   m = β1 m + (1-β1) g;  v = β2 v + ((1-β2) g) g;  w -= (lr (m / bc1)) / (sqrt(v / bc2) + ε)
//   bc1, bc2 (the step's bias corrections) come from the host, rounded from f64 like the CPU's.
//   Each element is read and written (`=`) by its own thread.
// optim_adagrad_fwd: w, acc [R, cols] f32, rows [n_rows] u32 (distinct, < R: checked when staged),
//   g [n_rows, cols]; one thread per (row k, column c), grid-stride:
//   a = acc[rows[k], c] + g² ;  w[rows[k], c] -= (lr g) / (sqrt(a) + ε). Distinct rows: no two
//   threads touch one element.
// Versions: one each (element-wise: the floor is the bytes, 16 per Adam element).

#include "common.cuh"

struct AdamParams {
    u32 n;
    float lr, beta1, beta2, eps, bc1, bc2;
};

struct AdagradParams {
    u32 n_rows;
    u32 cols;
    float lr;
    float eps;
};

extern "C" __global__ void __launch_bounds__(256)
optim_adam_fwd(const AdamParams p, float* __restrict__ w, const float* __restrict__ g, float* __restrict__ m,
               float* __restrict__ v) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (u64)gridDim.x * blockDim.x) {
        const float gi = g[i];
        const float mi = p.beta1 * m[i] + (1.0f - p.beta1) * gi;
        const float vi = p.beta2 * v[i] + (1.0f - p.beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float mh = mi / p.bc1;
        const float vh = vi / p.bc2;
        w[i] = w[i] - p.lr * mh / (sqrtf(vh) + p.eps);
    }
}

extern "C" __global__ void __launch_bounds__(256)
optim_adagrad_fwd(const AdagradParams p, float* __restrict__ w, float* __restrict__ acc, const u32* __restrict__ rows,
                  const float* __restrict__ g) {
    const u64 total = (u64)p.n_rows * p.cols;
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (u64)gridDim.x * blockDim.x) {
        const u64 k = e / p.cols, c = e % p.cols;
        const u64 at = (u64)rows[k] * p.cols + c;
        const float gi = g[e];
        const float a = acc[at] + gi * gi;
        acc[at] = a;
        w[at] = w[at] - p.lr * gi / (sqrtf(a) + p.eps);
    }
}
