// copy_rows.cu — row copy into a column range: assembles the MLP input of the serving network
// (SPEC §5) from embedding rows and the sequence modules' outputs on the device.
// Reference: src/backend/cpu/copy_rows.rs, reached through Backend::copy_rows.
//
// Shapes: dst [R_d, dst_cols] and src [R_s, src_cols] of 32-bit words (f32 or u32: copied as
//   bits, so every backend matches the reference bit for bit); n rows copied, w columns:
//     dst[dst_row(i), dst_col + c] = src[src_row(i), src_col + c]      i < n, c < w
//   where a row map is dst_ids[i] / src_ids[i] when has_*_ids is set, else the identity.
//   check::copy_rows guarantees every id below its tensor's rows, dst_col + w <= dst_cols,
//   src_col + w <= src_cols, and
//   R * cols <= u32::MAX; offsets are formed in 64 bits anyway.
// Launch copy_rows_fwd: 1-D grid-stride over n * w elements (consecutive threads read
//   consecutive words of a row: coalesced), 256 threads per block, grid min(ceil(n w / 256),
//   32 * SMs). No shared memory. Each destination element is written with `=` by one thread;
//   callers list each destination row once (the network's module candidate rows are distinct), so
//   no two threads write one element.
// Versions: one (a memory copy: its floor is the bytes moved).

#include "common.cuh"

struct CopyRowsParams {
    u32 n;         // rows copied
    u32 width;     // w columns per row
    u32 dst_cols;
    u32 dst_col;
    u32 has_dst_ids;
    u32 has_src_ids;
    u32 src_cols;  // source row stride
    u32 src_col;   // first source column
};

extern "C" __global__ void __launch_bounds__(256)
copy_rows_fwd(const CopyRowsParams p, u32* __restrict__ dst, const u32* __restrict__ dst_ids,
              const u32* __restrict__ src, const u32* __restrict__ src_ids) {
    const u64 total = (u64)p.n * p.width;
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (u64)gridDim.x * blockDim.x) {
        const u64 i = e / p.width, c = e % p.width;
        const u64 dr = p.has_dst_ids ? (u64)dst_ids[i] : i;
        const u64 sr = p.has_src_ids ? (u64)src_ids[i] : i;
        dst[dr * p.dst_cols + p.dst_col + c] = src[sr * p.src_cols + p.src_col + c];
    }
}
