// gather.cu — precomputed-projection gather (SPEC §3.1).
//
// Shapes (SPEC letters): table [n_items, D] (f32 or f16), ids [N], out [N, D] f32.
//   out[n, d] = table[ids[n], d], f16 widened exactly to f32.
// Launch: 1-D grid-stride, 256 threads per block, grid = min(ceil(N*D/256), 32 * SMs).
//   Consecutive threads take consecutive columns of a row, so each row read is coalesced.
// Versions: one. gather_fwd_f32 / gather_fwd_f16 differ only in the table element type.
// Bounds: ids were checked against n_items on the host (check::gather) before launch.

#include "common.cuh"

struct GatherParams {
    u32 n;     // number of ids (N)
    u32 cols;  // D
};

extern "C" __global__ void __launch_bounds__(256)
gather_fwd_f32(const GatherParams p, const float* __restrict__ table, const u32* __restrict__ ids,
               float* __restrict__ out) {
    const u64 total = (u64)p.n * p.cols;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 r = i / p.cols;
        const u64 c = i - r * p.cols;
        out[i] = table[(u64)ids[r] * p.cols + c];
    }
}

extern "C" __global__ void __launch_bounds__(256)
gather_fwd_f16(const GatherParams p, const unsigned short* __restrict__ table, const u32* __restrict__ ids,
               float* __restrict__ out) {
    const u64 total = (u64)p.n * p.cols;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 r = i / p.cols;
        const u64 c = i - r * p.cols;
        out[i] = f16_to_f32(table[(u64)ids[r] * p.cols + c]);
    }
}
