// gemm.cu — dense f32 GEMM for training (projections, MLP, weight and input gradients).
// Reference: src/backend/cpu/gemm.rs (mm / mm_nt / mm_tn), reached through Backend::gemm.
//
// Shapes (row-major f32): out [m, n] = op(a) · op(b), reduced over k, by entry point:
//   gemm_fwd_nn: a [m, k], b [k, n]        out[i, j] = Σ_p a[i, p] b[p, j]
//   gemm_fwd_nt: a [m, k], b [n, k]        out[i, j] = Σ_p a[i, p] b[j, p]
//   gemm_fwd_tn: a [k, m], b [k, n]        out[i, j] = Σ_p a[p, i] b[p, j]
//   Training uses m up to ~80,000 (behaviour rows) with k = 144, n = 128; the MLP m = B = 512 with
//   k = 408..64, n = 256..1; weight gradients are TN with k = the forward's m (up to ~80,000).
//   check::gemm guarantees m*k, k*n, m*n <= u32::MAX and finite inputs; element offsets are formed
//   in 64 bits anyway (i * k may pass 2^31). m, n, k > 0 (the host returns early otherwise).
// Launch (all three): 1-D grid of tiles_m * tiles_n blocks (tiles_m = ceil(m/64), tiles_n =
//   ceil(n/64); block t covers output rows 64 (t / tiles_n) .. +64, columns 64 (t % tiles_n) .. +64),
//   256 threads (16 x 16: tx = tid % 16, ty = tid / 16), 2 * 16 * 68 floats of static shared memory
//   (8.5 KiB), no dynamic shared memory.
// Per block: k is walked in tiles of BK = 16. Each thread loads 4 elements of the 64x16 slice of
//   op(a) and 4 of the 16x64 slice of op(b) (zero outside the matrix, so edge tiles need no other
//   branch), stores them k-major in shared memory (As[kk][row], Bs[kk][col], rows padded to 68
//   floats against bank conflicts on the transposing stores), and, while the block computes on
//   this tile, already holds the next tile's values in registers (prefetch hides global latency).
//   Thread (tx, ty) owns the 4x4 register micro-tile rows ty + 16r, columns tx + 16c (r, c < 4):
//   acc[r][c] = fmaf(As[kk][ty+16r], Bs[kk][tx+16c], acc[r][c]) for kk = 0..15 of every tile, so
//   each output element is reduced over p = 0, 1, ..., k-1 in increasing order by one thread
//   (padding adds exact zeros). Global loads are coalesced: consecutive threads read consecutive
//   addresses along whichever index is contiguous in memory for that operand layout.
// Output is written with `=` (never `+=`) by the one thread owning it, rows < m and columns < n
// only. No atomics: results are bit-identical run to run. Compiled with fmad on (the explicit fmaf
// fixes the rounding anyway).
// Split k (v2 of the launch, chosen by the host from the shape alone, never from the card): when
//   the output has few tiles and k is long (weight gradients: 144 x 128 over 76,800 rows is 6
//   tiles), the grid is splits * tiles blocks; block t reduces p in [s * k_split, min(k, (s + 1) *
//   k_split)) for s = t / tiles, tile t % tiles, into its own partial slice out + s * m * n, and
//   gemm_combine_fwd then sums the `splits` partials of each element in s order (fixed order: the
//   same bits every run and on every card, though not the unsplit kernel's bits). splits == 1 is
//   the unsplit kernel exactly (k_split = k, one slice).

#include "common.cuh"

#define GEMM_THREADS 256u
#define BM 64u
#define BN 64u
#define BK 16u
#define PAD 68u  // BM/BN + 4: row stride of the shared tiles

#define KIND_NN 0
#define KIND_NT 1
#define KIND_TN 2

struct GemmParams {
    u32 m;        // output rows
    u32 n;        // output columns
    u32 k;        // reduction length
    u32 tiles_n;  // ceil(n / 64)
    u32 tiles;    // ceil(m / 64) * tiles_n
    u32 k_split;  // p per split (a multiple of 16, or k when unsplit)
    u32 splits;   // partial slices (1: unsplit)
    u32 pad0;
};

struct GemmCombineParams {
    u32 mn;      // m * n
    u32 splits;  // partial slices to add, in order
};

// Element e (0..1023) of the 64x16 op(a) slice at (i0, p0): its (row r, k c) position and value.
template <int KIND>
__device__ __forceinline__ float load_a(const GemmParams& P, const float* __restrict__ a, u32 i0, u32 p0, u32 kend, u32 e, u32& r,
                                       u32& c) {
    if (KIND == KIND_TN) {  // a [k, m]: contiguous along i
        c = e >> 6;
        r = e & 63u;
    } else {  // a [m, k]: contiguous along p
        r = e >> 4;
        c = e & 15u;
    }
    const u64 i = (u64)i0 + r, p = (u64)p0 + c;  // 64-bit: i0 + 63 may pass u32 near the limits
    if (i >= P.m || p >= kend) return 0.0f;
    return KIND == KIND_TN ? a[p * P.m + i] : a[i * P.k + p];
}

// Element e (0..1023) of the 16x64 op(b) slice at (p0, j0): its (k c, column r) position and value.
template <int KIND>
__device__ __forceinline__ float load_b(const GemmParams& P, const float* __restrict__ b, u32 p0, u32 j0, u32 kend, u32 e, u32& c,
                                       u32& r) {
    if (KIND == KIND_NT) {  // b [n, k]: contiguous along p
        r = e >> 4;
        c = e & 15u;
    } else {  // b [k, n]: contiguous along j
        c = e >> 6;
        r = e & 63u;
    }
    const u64 j = (u64)j0 + r, p = (u64)p0 + c;
    if (j >= P.n || p >= kend) return 0.0f;
    return KIND == KIND_NT ? b[j * P.k + p] : b[p * P.n + j];
}

template <int KIND>
__device__ __forceinline__ void gemm_tile(const GemmParams P, const float* __restrict__ a, const float* __restrict__ b,
                                          float* __restrict__ out) {
    __shared__ float As[BK * PAD];
    __shared__ float Bs[BK * PAD];
    const u32 tid = threadIdx.x, tx = tid & 15u, ty = tid >> 4;
    const u32 split = blockIdx.x / P.tiles, tile = blockIdx.x - split * P.tiles;
    const u32 ti = tile / P.tiles_n, tj = tile - ti * P.tiles_n;
    const u32 i0 = ti * BM, j0 = tj * BN;
    // This block's k range [kbeg, kend) and output slice.
    const u32 kbeg = split * P.k_split;
    const u32 kend = P.k - kbeg < P.k_split ? P.k : kbeg + P.k_split;
    out += (u64)split * P.m * P.n;

    float acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] = 0.0f;

    // Registers holding the next tile: values and their shared-memory slots.
    float va[4], vb[4];
    u32 sa[4], sb[4];
#pragma unroll
    for (u32 q = 0; q < 4u; ++q) {
        u32 r, c;
        va[q] = load_a<KIND>(P, a, i0, kbeg, kend, tid + q * GEMM_THREADS, r, c);
        sa[q] = c * PAD + r;
        vb[q] = load_b<KIND>(P, b, kbeg, j0, kend, tid + q * GEMM_THREADS, c, r);
        sb[q] = c * PAD + r;
    }

    // Tile count, not p0 < k: p0 + 16 could wrap for k within 16 of u32::MAX.
    const u32 len = kend - kbeg;
    const u32 n_kt = len / BK + (len % BK != 0u ? 1u : 0u);
    for (u32 kt = 0; kt < n_kt; ++kt) {
        const u32 p0 = kbeg + kt * BK;
#pragma unroll
        for (u32 q = 0; q < 4u; ++q) {
            As[sa[q]] = va[q];
            Bs[sb[q]] = vb[q];
        }
        __syncthreads();
        if (kt + 1u < n_kt) {  // prefetch the next tile (uniform over the block)
#pragma unroll
            for (u32 q = 0; q < 4u; ++q) {
                u32 r, c;
                va[q] = load_a<KIND>(P, a, i0, p0 + BK, kend, tid + q * GEMM_THREADS, r, c);
                vb[q] = load_b<KIND>(P, b, p0 + BK, j0, kend, tid + q * GEMM_THREADS, c, r);
            }
        }
#pragma unroll
        for (u32 kk = 0; kk < BK; ++kk) {
            float ar[4], bc[4];
#pragma unroll
            for (u32 r = 0; r < 4u; ++r) ar[r] = As[kk * PAD + ty + 16u * r];
#pragma unroll
            for (u32 c = 0; c < 4u; ++c) bc[c] = Bs[kk * PAD + tx + 16u * c];
#pragma unroll
            for (u32 r = 0; r < 4u; ++r)
#pragma unroll
                for (u32 c = 0; c < 4u; ++c) acc[r][c] = fmaf(ar[r], bc[c], acc[r][c]);
        }
        __syncthreads();  // everyone is done reading before the next tile overwrites
    }

#pragma unroll
    for (u32 r = 0; r < 4u; ++r) {
        const u64 i = (u64)i0 + ty + 16u * r;
        if (i >= P.m) continue;
#pragma unroll
        for (u32 c = 0; c < 4u; ++c) {
            const u64 j = (u64)j0 + tx + 16u * c;
            if (j < P.n) out[i * P.n + j] = acc[r][c];
        }
    }
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
gemm_fwd_nn(const GemmParams P, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out) {
    gemm_tile<KIND_NN>(P, a, b, out);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
gemm_fwd_nt(const GemmParams P, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out) {
    gemm_tile<KIND_NT>(P, a, b, out);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
gemm_fwd_tn(const GemmParams P, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out) {
    gemm_tile<KIND_TN>(P, a, b, out);
}

// Split-k combine: out[e] = Σ_s part[s * mn + e], s = 0 .. splits-1 in order, written with `=`.
// Launch: 1-D grid-stride over e < mn, 256 threads.
extern "C" __global__ void __launch_bounds__(256)
gemm_combine_fwd(const GemmCombineParams P, const float* __restrict__ part, float* __restrict__ out) {
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < P.mn; e += (u64)gridDim.x * blockDim.x) {
        float acc = part[e];
        for (u32 s = 1; s < P.splits; ++s) acc += part[(u64)s * P.mn + e];
        out[e] = acc;
    }
}
