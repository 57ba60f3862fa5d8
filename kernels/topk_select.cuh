// topk_select.cuh — top-K selection over 64-bit ranking keys, shared by the GSU kernels
// (kernels/gsu_topk.cu; SPEC §3.4's order and tie rule).
//
// Key: ((order-preserving bits of the f32 score) << 32) | position. -0 is folded into +0, so a
// larger key means a higher score and, on equal scores, the larger (more recent) position:
// SPEC's tie rule, and every key of a row is distinct. Key 0 never encodes a finite or infinite
// score, so it marks "empty".
// block_topk: the kk largest of n distinct keys with one block of 256 threads: radix select of
//   the kk-th largest key (eight 8-bit passes, shared histogram, integer atomics), compaction of
//   the keys >= it (exactly kk), bitonic sort of 256 slots, write-out. Deterministic.
// warp_merge: FAISS WarpSelect's merge of 32 pending keys into a warp's sorted list of 32J keys,
//   registers and shuffles only (no block barrier).
// Included after common.cuh (u32, u64, FULL_MASK) with `#include "topk_select.cuh"`, resolved
// textually as common.cuh is (src/backend/cuda/sources.rs, build.rs); device code only, no
// __shared__ arrays at file scope (block_topk's shared arrays are its own statics).

#ifndef TWIN_KERNELS_TOPK_SELECT_CUH
#define TWIN_KERNELS_TOPK_SELECT_CUH

// block_topk's block size (it must be launched with exactly this many threads).
#define TOPK_THREADS 256

// Order-preserving map of a float's bits: a < b (as floats, not NaN) <=> ord(a) < ord(b).
__device__ __forceinline__ u32 ord_of(float s) {
    const u32 b = __float_as_uint(s);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float score_of(u32 o) {
    const u32 b = (o & 0x80000000u) ? (o & 0x7fffffffu) : ~o;
    return __uint_as_float(b);
}

__device__ __forceinline__ u64 make_key(float s, u32 pos) {
    const float c = (s == 0.0f) ? 0.0f : s;  // -0 ranks as +0 (the CPU compares -0 == +0)
    return ((u64)ord_of(c) << 32) | (u64)pos;
}

// Key loaders for block_topk.
struct ScoreRowKeys {
    const float* row;
    __device__ __forceinline__ u64 operator()(u32 i) const { return make_key(row[i], i); }
};

struct PartialKeys {
    const u64* row;
    __device__ __forceinline__ u64 operator()(u32 i) const { return row[i]; }
};

// The kk largest of n distinct keys (1 <= kk <= 256, at least kk keys nonzero), written in
// descending order to row c of the outputs (stride K), padding up to K. blockDim.x must be 256.
template <typename KeyAt>
__device__ void block_topk(const KeyAt key_at, const u32 n, const u32 kk, const u64 c, const u32 K,
                           u32* __restrict__ out_idx, float* __restrict__ out_score, u32* __restrict__ out_count) {
    __shared__ u32 hist[256];
    __shared__ u32 s_digit, s_k, s_cnt;
    __shared__ u64 sel[256];
    const u32 tid = threadIdx.x;

    // 1. Radix select: the kk-th largest key, 8 bits at a time from the top.
    u64 prefix = 0, mask = 0;
    u32 k = kk;  // rank still to find among keys matching `prefix` on `mask` (uniform)
    for (int shift = 56; shift >= 0; shift -= 8) {
        hist[tid] = 0;
        __syncthreads();
        for (u32 i = tid; i < n; i += TOPK_THREADS) {
            const u64 key = key_at(i);
            if ((key & mask) == prefix) atomicAdd(&hist[(u32)(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid < 32) {
            // Lane l owns bins 255-8l .. 248-8l (high to low); find the bin holding rank k.
            const u32 lane = tid;
            const int top = 255 - (int)lane * 8;
            u32 s = 0;
            for (int j = 0; j < 8; ++j) s += hist[top - j];
            u32 incl = s;
            for (int o = 1; o < 32; o <<= 1) {
                const u32 v = __shfl_up_sync(FULL_MASK, incl, o);
                if (lane >= (u32)o) incl += v;
            }
            const u32 ball = __ballot_sync(FULL_MASK, incl >= k);
            const u32 first = (u32)(__ffs(ball) - 1);
            if (lane == first) {
                u32 cum = incl - s;
                for (int j = 0; j < 8; ++j) {
                    const u32 h = hist[top - j];
                    if (cum + h >= k) {
                        s_digit = (u32)(top - j);
                        s_k = k - cum;
                        break;
                    }
                    cum += h;
                }
            }
        }
        __syncthreads();
        prefix |= (u64)s_digit << shift;
        mask |= (u64)0xff << shift;
        k = s_k;
        __syncthreads();
    }
    // `prefix` is now the kk-th largest key; exactly kk keys are >= it.

    // 2. Compact the winners (any order), 3. sort them descending.
    sel[tid] = 0;
    if (tid == 0) s_cnt = 0;
    __syncthreads();
    for (u32 i = tid; i < n; i += TOPK_THREADS) {
        const u64 key = key_at(i);
        if (key >= prefix) {
            const u32 slot = atomicAdd(&s_cnt, 1u);
            if (slot < 256u) sel[slot] = key;
        }
    }
    __syncthreads();
    for (u32 size = 2; size <= 256; size <<= 1) {
        for (u32 stride = size >> 1; stride > 0; stride >>= 1) {
            const u32 j = tid ^ stride;
            if (j > tid) {
                const u64 a = sel[tid], b = sel[j];
                const bool desc = (tid & size) == 0;
                if (desc ? (a < b) : (a > b)) {
                    sel[tid] = b;
                    sel[j] = a;
                }
            }
            __syncthreads();
        }
    }

    // 4. Write the row.
    for (u32 j = tid; j < K; j += TOPK_THREADS) {
        u32 idx = 0xffffffffu;
        float sc = __int_as_float(0xff800000);  // -inf
        if (j < kk) {
            idx = (u32)(sel[j] & 0xffffffffull);
            sc = score_of((u32)(sel[j] >> 32));
        }
        out_idx[c * K + j] = idx;
        out_score[c * K + j] = sc;
    }
    if (tid == 0) out_count[c] = kk;
}

__device__ __forceinline__ u64 u64_max(u64 a, u64 b) { return a > b ? a : b; }
__device__ __forceinline__ u64 u64_min(u64 a, u64 b) { return a < b ? a : b; }

// Merge the 32 keys pend[0..32) (0 = empty) into the descending list lst[0..32J), keeping its 32J
// largest (FAISS WarpSelect's merge): a bitonic sort of the 32 across the lanes (ascending),
// lst's last 32 replaced by max(lst[32(J-1) + l], sorted[l]) (the whole is then bitonic), and a
// bitonic merge of the 32J (strides >= 32 within a lane's registers, < 32 by shuffles).
// Element i of the list sits in lane i % 32, register i / 32.
template <int J>
__device__ __forceinline__ void warp_merge_j(u64* __restrict__ lst, const u64* __restrict__ pend, u32 lane) {
    u64 x = pend[lane];
    for (u32 size = 2; size <= 32u; size <<= 1) {
        for (u32 st = size >> 1; st > 0; st >>= 1) {
            const u64 y = __shfl_xor_sync(FULL_MASK, x, st);
            const bool up = (lane & size) == 0u, low = (lane & st) == 0u;
            x = (low == up) ? u64_min(x, y) : u64_max(x, y);
        }
    }
    u64 a[J];
#pragma unroll
    for (int j = 0; j < J; ++j) a[j] = lst[32 * j + lane];
    a[J - 1] = u64_max(a[J - 1], x);
#pragma unroll
    for (int s = J / 2; s >= 1; s >>= 1) {
#pragma unroll
        for (int j = 0; j < J; ++j) {
            if ((j & s) == 0) {
                const u64 hi = u64_max(a[j], a[j + s]), lo = u64_min(a[j], a[j + s]);
                a[j] = hi;
                a[j + s] = lo;
            }
        }
    }
    for (u32 st = 16; st > 0; st >>= 1) {
        const bool low = (lane & st) == 0u;
#pragma unroll
        for (int j = 0; j < J; ++j) {
            const u64 y = __shfl_xor_sync(FULL_MASK, a[j], st);
            a[j] = low ? u64_max(a[j], y) : u64_min(a[j], y);
        }
    }
#pragma unroll
    for (int j = 0; j < J; ++j) lst[32 * j + lane] = a[j];
    __syncwarp();
}

__device__ __forceinline__ void warp_merge(u64* __restrict__ lst, const u64* __restrict__ pend, u32 kp, u32 lane) {
    switch (kp) {
        case 32: warp_merge_j<1>(lst, pend, lane); break;
        case 64: warp_merge_j<2>(lst, pend, lane); break;
        case 128: warp_merge_j<4>(lst, pend, lane); break;
        default: warp_merge_j<8>(lst, pend, lane); break;
    }
}

#endif  // TWIN_KERNELS_TOPK_SELECT_CUH
