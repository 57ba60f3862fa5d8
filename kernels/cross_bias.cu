// cross_bias.cu — cross-feature bias (SPEC §3.2), both forms. Compiled with --fmad=false so
// the f64 arithmetic below rounds exactly like the CPU reference (no FMA contraction).
//
// cross_bias_fwd (inference, gather-sum):
//   table [V, h] (f32, or f16 when p.table_f16), rows [N, J] (cross-table rows), out [N, h] f32.
//   out[n, a] = Σ_j table[rows[n*J + j], a], summed in j order in f64, rounded once to f32
//   (bit-identical to src/backend/cpu/cross_bias.rs::gather_sum).
// cross_bias_dense_fwd (training form):
//   e [N, J, C], w_c [h, J, C], beta [h, J], out [N, h] f32.
//   out[n, a] = Σ_j beta[a, j] * (Σ_c e[n, j, c] * w_c[a, j, c]), all in f64 in index order.
// Launch (both): one thread per (n, a), 1-D grid-stride, 256 threads per block.
// Versions: one each. Bounds: rows checked against V (check::cross_bias); dense shapes checked
// by check::cross_bias_dense.

typedef unsigned int u32;
typedef unsigned long long u64;

struct CrossBiasParams {
    u32 n;          // N behaviours
    u32 heads;      // h
    u32 n_cross;    // J
    u32 table_f16;  // 1 when the table is stored as f16
};

struct CrossBiasDenseParams {
    u32 n;        // N behaviours
    u32 heads;    // h
    u32 n_cross;  // J
    u32 dim;      // C, per-feature embedding width
};

__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

extern "C" __global__ void __launch_bounds__(256)
cross_bias_fwd(const CrossBiasParams p, const void* __restrict__ table, const u32* __restrict__ rows,
               float* __restrict__ out) {
    const u64 total = (u64)p.n * p.heads;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 n = i / p.heads;
        const u32 a = (u32)(i - n * p.heads);
        double acc = 0.0;
        for (u32 j = 0; j < p.n_cross; ++j) {
            const u64 at = (u64)rows[n * p.n_cross + j] * p.heads + a;
            const float v = p.table_f16 ? f16_to_f32(((const unsigned short*)table)[at]) : ((const float*)table)[at];
            acc = acc + (double)v;
        }
        out[i] = (float)acc;
    }
}

extern "C" __global__ void __launch_bounds__(256)
cross_bias_dense_fwd(const CrossBiasDenseParams p, const float* __restrict__ e, const float* __restrict__ w_c,
                     const float* __restrict__ beta, float* __restrict__ out) {
    const u64 total = (u64)p.n * p.heads;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 n = i / p.heads;
        const u32 a = (u32)(i - n * p.heads);
        double acc = 0.0;
        for (u32 j = 0; j < p.n_cross; ++j) {
            const float* ev = e + (n * p.n_cross + j) * p.dim;
            const float* wv = w_c + ((u64)a * p.n_cross + j) * p.dim;
            double dot = 0.0;
            for (u32 c = 0; c < p.dim; ++c) {
                dot = dot + (double)ev[c] * (double)wv[c];
            }
            acc = acc + (double)beta[(u64)a * p.n_cross + j] * dot;
        }
        out[i] = (float)acc;
    }
}
