// segment_sum.cu — deterministic scatter-add (SPEC §5: "gradients are scatter-added back").
// Compiled with --fmad=false; the sums use __fadd_rn so nothing is contracted or reordered.
// Reference: src/backend/cpu/segment_sum.rs.
//
// Shapes: src [N, W] f32 (N source rows, W = width), perm [M] source rows (each < N), seg_offsets
//   [S+1] (segment s lists perm[seg_offsets[s]..seg_offsets[s+1]]), out [S, W]. check::segment_sum
//   guarantees perm < N, offsets that start at 0, never decrease and end at M, N*W and S*W <= u32::MAX
//   (element offsets are still formed in 64 bits).
// Launch segment_sum_fwd: 1-D grid-stride over the S*W output elements, 256 threads per block,
//   grid min(ceil(S*W / 256), 32 * SMs). Thread e = s*W + c owns output element (s, c) and loops
//   over its segment: out[s, c] = ((0 + src[perm[i0], c]) + src[perm[i0+1], c]) + ... in list order,
//   exactly the CPU's order of additions, so the result is bit-identical to the reference and run
//   to run. No atomics; each output element is written once with `=` (an empty segment gives 0).
//   Neighbouring threads read neighbouring columns of the same source row (coalesced).
// segment_sum_mapped_fwd (DeviceOps::segment_sum_mapped_dev; reference segment_sum_mapped): the
//   same launch and order, perm listing positions (each < the map's length) that the GSU's row map
//   [map_len] u32 sends to source rows (< N) or skips (0xFFFFFFFF, a long position that is not a
//   finalist): out[s, c] = Σ src[map[perm[i]], c] over the kept entries, in list order, from 0.
//   train_rows::check_mapped guarantees perm < map_len, valid offsets, N*W and S*W <= u32::MAX;
//   the map is written only by gsu_train_fwd / gsu_train_map_tail_fwd, so its values are < N or skip.
// Versions: one each.

#include "common.cuh"

struct SegmentSumParams {
    u32 n_seg;  // S
    u32 width;  // W
    u32 pad0;
    u32 pad1;
};

extern "C" __global__ void __launch_bounds__(256)
segment_sum_fwd(const SegmentSumParams P, const float* __restrict__ src, const u32* __restrict__ perm,
                const u32* __restrict__ seg_offsets, float* __restrict__ out) {
    const u64 W = P.width;
    const u64 total = (u64)P.n_seg * W;
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (u64)gridDim.x * blockDim.x) {
        const u64 s = e / W, c = e - s * W;
        const u32 i0 = seg_offsets[s], i1 = seg_offsets[s + 1];
        float acc = 0.0f;
        for (u32 i = i0; i < i1; ++i) acc = __fadd_rn(acc, src[(u64)perm[i] * W + c]);
        out[e] = acc;
    }
}

extern "C" __global__ void __launch_bounds__(256)
segment_sum_mapped_fwd(const SegmentSumParams P, const float* __restrict__ src, const u32* __restrict__ perm,
                       const u32* __restrict__ seg_offsets, const u32* __restrict__ map, float* __restrict__ out) {
    const u64 W = P.width;
    const u64 total = (u64)P.n_seg * W;
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (u64)gridDim.x * blockDim.x) {
        const u64 s = e / W, c = e - s * W;
        const u32 i0 = seg_offsets[s], i1 = seg_offsets[s + 1];
        float acc = 0.0f;
        for (u32 i = i0; i < i1; ++i) {
            const u32 r = map[perm[i]];
            if (r == 0xffffffffu) continue;
            acc = __fadd_rn(acc, src[(u64)r * W + c]);
        }
        out[e] = acc;
    }
}
