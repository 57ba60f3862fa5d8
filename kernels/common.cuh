// common.cuh — what every kernel file shares: integer names, the warp mask, f16 loads, warp
// reductions and scans, the segment search.
//
// Included by each kernels/*.cu as `#include "common.cuh"` (that exact line, at file scope,
// after the file's header comment). How the include resolves:
//   NVRTC (src/backend/cuda/sources.rs, KernelSource::text): the line is replaced by this
//     file's text (include_str!'d; NVRTC is given no headers), framed by #line directives.
//   CPU emulator (build.rs): the same textual replacement before build.rs scans the kernel, so
//     the scan sees this code too; each kernel file lands in its own C++ namespace, so these
//     definitions exist once per file.
// Keep it to device helpers, typedefs and macros: no __global__ entry points and no
// __shared__ arrays (each kernel file declares its own dynamic shared memory).
// The reductions are fixed-order butterflies: each lane's result depends only on the values
// and the lane pattern, never on scheduling, so results repeat run to run.

#ifndef TWIN_KERNELS_COMMON_CUH
#define TWIN_KERNELS_COMMON_CUH

typedef unsigned int u32;
typedef unsigned long long u64;

// All 32 lanes of a warp (the mask of every *_sync warp intrinsic here).
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ u32 umin32(u32 a, u32 b) { return a < b ? a : b; }
__device__ __forceinline__ u32 umax32(u32 a, u32 b) { return a > b ? a : b; }

// Exact binary16 -> binary32.
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
#ifdef TWIN_CUDA_EMU
    return emu::half_bits_to_float(h);  // exact binary16 -> binary32 (emu/cuda_emu.h)
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

// Element i of a table stored as f16 (is_f16 = 1) or f32, as f32.
__device__ __forceinline__ float load_elem(const void* p, u32 is_f16, u64 i) {
    return is_f16 ? f16_to_f32(((const unsigned short*)p)[i]) : ((const float*)p)[i];
}

// Warp-wide butterflies: every lane ends with the same value. All 32 lanes must call them.
__device__ __forceinline__ float warp_max_f32(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum_f32(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ u32 warp_sum_u32(u32 v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ u64 warp_sum_u64(u64 v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// Inclusive prefix sum of v over the warp's lanes (lane = threadIdx.x % 32).
__device__ __forceinline__ u32 warp_incl_scan(u32 v, u32 lane) {
    for (u32 d = 1; d < 32; d <<= 1) {
        const u32 t = __shfl_up_sync(FULL_MASK, v, d);
        if (lane >= d) v += t;
    }
    return v;
}

// Largest s in [0, n_seg) with offs[s] <= i, for offs[0] = 0 <= i < offs[n_seg], segments non-empty.
__device__ __forceinline__ u32 find_segment(const u32* __restrict__ offs, u32 n_seg, u32 i) {
    u32 lo = 0, hi = n_seg;  // invariant: offs[lo] <= i < offs[hi]
    while (hi - lo > 1) {
        const u32 mid = lo + (hi - lo) / 2;
        if (offs[mid] <= i) lo = mid; else hi = mid;
    }
    return lo;
}

#endif  // TWIN_KERNELS_COMMON_CUH
