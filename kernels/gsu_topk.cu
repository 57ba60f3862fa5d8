// gsu_topk.cu — CP-GSU relevance + top-K (SPEC §3.3-3.4).
//
// Shapes (SPEC letters): R requests; request r has L_r behaviours (global rows
// seq_off[r]..seq_off[r+1]) and B_r candidates (global cand_off[r]..cand_off[r+1]).
// P_Q, P_K [n_items, D] f32 or f16; bias [ΣL, h] f32 (cross bias + ln n already added);
// K ≤ 256 (MAX_TOP_K). Output per candidate c: idx [ΣB, K] u32 (local positions), score
// [ΣB, K] f32, count [ΣB] = min(K, L_r); slots past count hold 0xffffffff / -inf.
//
// Score. v1 and v2 perform the same operations in the same order (v1 == v2 bit for bit):
//   q_d   = P_Q[cand, d] * scale                         (scale = 1/sqrt(d_k) rounded to f32)
//   dot   = fmaf over d = 0..D-1 of q_d * P_K[item, d]   (f32 accumulation)
//   bsum  = Σ_a bias[l, a] in a order (f32)
//   g     = (dot + bsum) / h
// v3 (not bit-identical to v1/v2 or the CPU): q̂, k̂ = P_Q, P_K rows as f16 (f32 tables are
// rounded to nearest when staged; f16 tables are exact), dot = Σ_d q̂_d k̂_d on tensor cores
// (exact products, f32 accumulation in the hardware's order), g = (dot * scale + bsum) / h.
// Ranking key: 64-bit ((order-preserving bits of g) << 32) | position. -0 is folded into +0, so
// a larger key means a higher score and, on equal scores, the larger (more recent) position:
// exactly SPEC's tie rule, and every key of a row is distinct. Key 0 never encodes a finite or
// infinite score, so it marks "empty". A NaN score raises flag[0] (the host reports an error).
//
// Top-K of n distinct keys (block_topk in topk_select.cuh, 256 threads): radix select of the
// K-th largest key with eight 8-bit passes (shared histogram, integer atomics), compaction of the
// keys >= it (exactly K of them), bitonic sort of 256 slots, write-out. Deterministic.
//
// v1 (simple, two kernels):
//   gsu_topk_fwd_v1_score: grid (ΣB, ceil(max L / 256) capped), 256 threads, dyn smem 4*D bytes
//     (the candidate's scaled q). One thread per (candidate, behaviour) writes g into the
//     ΣB x L_r score matrix in global memory (row offsets score_off, u64).
//   gsu_topk_fwd_v1_select: grid ΣB, 256 threads: block_topk over the candidate's score row.
// v2 (fused, the B x L score matrix never reaches global memory):
//   gsu_topk_fwd_v2_{f16,f32} (P_K dtype; P_Q dtype by flag): grid = number of work items,
//     256 threads. A work item is (request, tile of ≤ 64 candidates, chunk [pos0, pos1) of the
//     sequence). The block keeps the tile's scaled queries in shared memory (transposed, D x 64),
//     walks the chunk 64 behaviours at a time: gathers the 64 key rows (f16/f32 → f32,
//     transposed into shared memory), computes the 64 x 64 scores with a 4 x 4 register tile per
//     thread, stores them in a shared 64 x 64 tile, and each warp folds its 8 candidates' scores
//     into per-candidate running top-K lists kept sorted in shared memory (a key enters only if it
//     beats the current K-th key; insertion = warp-parallel rank + shift). At the end the tile
//     writes each candidate's chunk top-K (K keys, 0-padded) to `partial`.
//     Dynamic shared memory: 8*64*K + 4*D*64 + 4*D*68 + 4*64*68 + 4*64 + 4*64 bytes
//     (≈ 134 KiB for D = 128, K = 100; the host falls back to v1 when it exceeds the opt-in limit).
//   gsu_topk_fwd_v2_merge: grid ΣB, 256 threads: block_topk over the candidate's nch*K partial
//     keys (nch = chunks of its request) → final sorted row.
// v3 (tensor cores + warp select; v2's work items with tiles of 32 candidates, v2's merge):
//   gsu_topk_fwd_v3_{f16,f32} (P_K dtype; P_Q dtype by flag): grid = number of work items, 256
//     threads (8 warps), __launch_bounds__(256, 2). The tile's 32 query rows are staged once as
//     f16 in shared memory ([32][Dp + 8] halves, Dp = D rounded up to 16, zero padded); for each
//     64 behaviours of the chunk the key rows are gathered coalesced (16-byte pieces, consecutive
//     threads along a row; f32 → f16 when staged) into [64][Dp + 8], and each warp computes one
//     16 x 16 tile of the 32 x 64 dot products with WMMA m16n16k16 (A = queries row-major,
//     B = keys column-major, f32 accumulators, Dp/16 k-steps) into a shared f32 score tile.
//     Selection (FAISS WarpSelect-style): warp w owns candidates w, w+8, w+16, w+24; each key
//     costs one compare against the candidate's K-th best so far; keys that pass are appended
//     (ballot + popc) to a 32-slot pending buffer, and a full buffer is merged into the
//     candidate's descending list of Kp = max(32, pow2 >= K) keys by a warp bitonic sort of the
//     32 and a bitonic merge (registers + shuffles, no block barrier). At the chunk's end the
//     pending keys are merged and the list's first K keys written to `partial` as in v2.
//     Dynamic shared memory: 32 + 8*32*Kp + 8*32*32 + 2*32*(Dp+8) + 2*64*(Dp+8) + 4*32*68 + 4*64
//     + 4*32 bytes (74.4 KiB at D = 128, K <= 128; 106.4 KiB at K = 256: two blocks per sm_90
//     SM). A finite f32 table value beyond the f16 range raises flag bit 2 (the host reports it).
//     What changed from v2: dots on tensor cores (v2: f32 FMAs on CUDA cores), rows gathered
//     coalesced (v2: a thread per row), one compare per key and merges of 32 keys at a time (v2:
//     a rank-and-shift insertion per passing key), 74 KiB of shared memory instead of 134 KiB at
//     D = 128, K = 100.
// Bounds: every id, offset and length was checked on the host (check::online, check::
// behaviour_bias); work items and offsets are built by the host from those checked offsets.

#include "common.cuh"
#include "topk_select.cuh"
#include "wmma.cuh"

#define V2_TB 64           // candidates per tile
#define V2_LT 64           // behaviours per sub-tile
#define V2_KS (V2_LT + 4)  // padded row stride (floats) of the transposed key tile
#define V2_SS (V2_LT + 4)  // padded row stride (floats) of the score tile
#define WORK_WORDS 10      // u32 words per v2 work item (see gsu_topk_fwd_v2)

struct GsuScoreParams {
    u32 n_cand;  // ΣB
    u32 dim;     // D
    u32 heads;   // h
    u32 q_f16;   // P_Q stored as f16
    u32 k_f16;   // P_K stored as f16
    float scale; // 1/sqrt(d_k)
};

struct GsuSelectParams {
    u32 n_cand;  // ΣB
    u32 k;       // K (row stride of the outputs)
};

struct GsuV2Params {
    u32 n_work;  // number of work items (= grid)
    u32 dim;     // D
    u32 heads;   // h
    u32 q_f16;   // P_Q stored as f16
    u32 k;       // K
    float scale; // 1/sqrt(d_k)
};

// Dynamic shared memory of every kernel in this file (one declaration: layouts differ per kernel).
extern __shared__ __align__(16) unsigned char smem_raw[];

__device__ __forceinline__ float gsu_finish(float dot, float bsum, u32 heads) {
    return (dot + bsum) / (float)heads;
}

__device__ __forceinline__ float bias_sum(const float* __restrict__ bias, u64 l, u32 heads) {
    float b = 0.0f;
    for (u32 a = 0; a < heads; ++a) b = b + bias[l * heads + a];
    return b;
}


// ---------------------------------------------------------------- v1: score matrix + select

extern "C" __global__ void __launch_bounds__(256)
gsu_topk_fwd_v1_score(const GsuScoreParams p, const void* __restrict__ p_q, const void* __restrict__ p_k,
                      const u32* __restrict__ seq_off, const u32* __restrict__ items,
                      const u32* __restrict__ cand_req, const u32* __restrict__ cands,
                      const float* __restrict__ bias, const u64* __restrict__ score_off,
                      float* __restrict__ scores, u32* __restrict__ flag) {
    float* q_s = (float*)smem_raw;  // [D]
    const u32 c = blockIdx.x;
    const u32 r = cand_req[c];
    const u32 s0 = seq_off[r];
    const u32 L = seq_off[r + 1] - s0;
    const u64 qrow = (u64)cands[c] * p.dim;
    for (u32 d = threadIdx.x; d < p.dim; d += blockDim.x) q_s[d] = load_elem(p_q, p.q_f16, qrow + d) * p.scale;
    __syncthreads();
    float* out = scores + score_off[c];
    for (u32 l = blockIdx.y * blockDim.x + threadIdx.x; l < L; l += gridDim.y * blockDim.x) {
        const u64 krow = (u64)items[s0 + l] * p.dim;
        float dot = 0.0f;
        for (u32 d = 0; d < p.dim; ++d) dot = fmaf(q_s[d], load_elem(p_k, p.k_f16, krow + d), dot);
        const float g = gsu_finish(dot, bias_sum(bias, (u64)s0 + l, p.heads), p.heads);
        if (g != g) flag[0] = 1u;
        out[l] = g;
    }
}

extern "C" __global__ void __launch_bounds__(256)
gsu_topk_fwd_v1_select(const GsuSelectParams p, const u32* __restrict__ seq_off, const u32* __restrict__ cand_req,
                       const u64* __restrict__ score_off, const float* __restrict__ scores,
                       u32* __restrict__ out_idx, float* __restrict__ out_score, u32* __restrict__ out_count) {
    const u32 c = blockIdx.x;
    const u32 r = cand_req[c];
    const u32 L = seq_off[r + 1] - seq_off[r];
    const u32 kk = L < p.k ? L : p.k;
    ScoreRowKeys keys;
    keys.row = scores + score_off[c];
    block_topk(keys, L, kk, (u64)c, p.k, out_idx, out_score, out_count);
}

// ---------------------------------------------------------------- v2: fused tiles + merge

// Gather the key rows of behaviours l0..l0+nl-1 into k_s[d * V2_KS + l] (f32), zeros past nl.
template <bool F16>
__device__ __forceinline__ void v2_load_keys(const void* __restrict__ p_k, const u32* __restrict__ items, u64 g0,
                                             u32 nl, u32 dim, float* __restrict__ k_s) {
    const u32 tid = threadIdx.x;
    if (F16 && (dim % 8u) == 0u) {
        const u32 cpr = dim / 8u;  // 16-byte chunks per row
        const unsigned short* t = (const unsigned short*)p_k;
        for (u32 i = tid; i < V2_LT * cpr; i += blockDim.x) {
            const u32 l = i % V2_LT, ch = i / V2_LT;
            uint4 raw = make_uint4(0u, 0u, 0u, 0u);
            if (l < nl) raw = *(const uint4*)(t + (u64)items[g0 + l] * dim + 8u * ch);
            const u32 w[4] = {raw.x, raw.y, raw.z, raw.w};
            for (u32 e = 0; e < 4; ++e) {
                k_s[(8u * ch + 2u * e) * V2_KS + l] = f16_to_f32((unsigned short)(w[e] & 0xffffu));
                k_s[(8u * ch + 2u * e + 1u) * V2_KS + l] = f16_to_f32((unsigned short)(w[e] >> 16));
            }
        }
    } else if (!F16 && (dim % 4u) == 0u) {
        const u32 cpr = dim / 4u;
        const float* t = (const float*)p_k;
        for (u32 i = tid; i < V2_LT * cpr; i += blockDim.x) {
            const u32 l = i % V2_LT, ch = i / V2_LT;
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (l < nl) v = *(const float4*)(t + (u64)items[g0 + l] * dim + 4u * ch);
            k_s[(4u * ch + 0u) * V2_KS + l] = v.x;
            k_s[(4u * ch + 1u) * V2_KS + l] = v.y;
            k_s[(4u * ch + 2u) * V2_KS + l] = v.z;
            k_s[(4u * ch + 3u) * V2_KS + l] = v.w;
        }
    } else {
        for (u32 i = tid; i < V2_LT * dim; i += blockDim.x) {
            const u32 l = i % V2_LT, d = i / V2_LT;
            float v = 0.0f;
            if (l < nl) v = load_elem(p_k, F16 ? 1u : 0u, (u64)items[g0 + l] * dim + d);
            k_s[d * V2_KS + l] = v;
        }
    }
}

// Work item words: 0 seq0 (global row of the request's first behaviour), 1 pos0, 2 pos1 (local
// chunk bounds), 3 cand0 (global first candidate of the tile), 4 ncand (≤ 64), 5 chunk,
// 6 nch (chunks of this request), 7/8 part base lo/hi (u64 index in `partial` of the tile's
// first candidate, chunk 0). Candidate t of the tile, chunk ch: partial[base + (t*nch + ch)*K].
template <bool F16>
__device__ void gsu_v2_impl(const GsuV2Params p, const void* __restrict__ p_q, const void* __restrict__ p_k,
                            const u32* __restrict__ items, const u32* __restrict__ cands,
                            const float* __restrict__ bias, const u32* __restrict__ work,
                            u64* __restrict__ partial, u32* __restrict__ flag) {
    const u32 K = p.k, dim = p.dim;
    u64* lists = (u64*)smem_raw;                         // [V2_TB][K]
    float* q_s = (float*)(lists + (u64)V2_TB * K);       // [D][V2_TB]
    float* k_s = q_s + (u64)dim * V2_TB;                 // [D][V2_KS]
    float* sc = k_s + (u64)dim * V2_KS;                  // [V2_TB][V2_SS]
    float* bs = sc + V2_TB * V2_SS;                      // [V2_LT]
    u32* cnt = (u32*)(bs + V2_LT);                       // [V2_TB]

    const u32* w = work + (u64)blockIdx.x * WORK_WORDS;
    const u32 seq0 = w[0], pos0 = w[1], pos1 = w[2], cand0 = w[3], ncand = w[4], chunk = w[5], nch = w[6];
    const u64 part_base = (u64)w[7] | ((u64)w[8] << 32);
    const u32 len = pos1 - pos0;
    const u32 Kc = len < K ? len : K;  // list capacity for this chunk

    const u32 tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;
    const u32 tx = tid & 15u, ty = tid >> 4;  // 4x4 register tile: candidates 4ty.., behaviours 4tx..

    for (u32 i = tid; i < dim * V2_TB; i += blockDim.x) {
        const u32 t = i % V2_TB, d = i / V2_TB;
        float v = 0.0f;
        if (t < ncand) v = load_elem(p_q, p.q_f16, (u64)cands[cand0 + t] * dim + d) * p.scale;
        q_s[i] = v;
    }
    for (u32 t = tid; t < V2_TB; t += blockDim.x) cnt[t] = 0;

    for (u32 l0 = pos0; l0 < pos1; l0 += V2_LT) {
        const u32 nl = (pos1 - l0) < V2_LT ? (pos1 - l0) : V2_LT;
        __syncthreads();  // the previous sub-tile's k_s, sc, bs are no longer read
        v2_load_keys<F16>(p_k, items, (u64)seq0 + l0, nl, dim, k_s);
        for (u32 l = tid; l < V2_LT; l += blockDim.x) bs[l] = (l < nl) ? bias_sum(bias, (u64)seq0 + l0 + l, p.heads) : 0.0f;
        __syncthreads();

        float acc[4][4];
        for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
        for (u32 d = 0; d < dim; ++d) {
            const float4 qv = *(const float4*)(q_s + (u64)d * V2_TB + 4u * ty);
            const float4 kv = *(const float4*)(k_s + (u64)d * V2_KS + 4u * tx);
            const float qa[4] = {qv.x, qv.y, qv.z, qv.w};
            const float ka[4] = {kv.x, kv.y, kv.z, kv.w};
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(qa[i], ka[j], acc[i][j]);
        }
        for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) {
                const u32 l = 4u * tx + (u32)j;
                sc[(4u * ty + (u32)i) * V2_SS + l] = gsu_finish(acc[i][j], bs[l], p.heads);
            }
        __syncthreads();

        // Fold the sub-tile into the running lists: warp w owns candidates w, w+8, ..., (uniform loop).
        for (u32 t = warp; t < ncand; t += 8u) {
            u64* list = lists + (u64)t * K;
            u32 cn = cnt[t];
            for (u32 half = 0; half < V2_LT; half += 32u) {
                const u32 l = half + lane;
                const bool valid = l < nl;
                const float s = valid ? sc[t * V2_SS + l] : 0.0f;
                if (valid && s != s) flag[0] = 1u;
                const u64 key = valid ? make_key(s, l0 + l) : 0ull;
                const u64 thr = (cn < Kc) ? 0ull : list[Kc - 1];
                u32 m = __ballot_sync(FULL_MASK, valid && key > thr);
                while (m != 0u) {
                    const u32 b = (u32)(__ffs(m) - 1);
                    m &= m - 1u;
                    const u64 x = __shfl_sync(FULL_MASK, key, b);
                    if (cn == Kc && x <= list[Kc - 1]) continue;  // uniform: the list moved on
                    u32 gt = 0;  // rank of x = entries greater than x
                    for (u32 i = lane; i < cn; i += 32u) gt += (list[i] > x) ? 1u : 0u;
                    gt = warp_sum_u32(gt);
                    const u32 newcn = (cn + 1u) < Kc ? (cn + 1u) : Kc;
                    // Shift list[gt .. newcn-2] up by one, top chunk first.
                    for (int hi = (int)newcn - 1; hi > (int)gt; hi -= 32) {
                        const int dst = hi - (int)lane;
                        const bool act = dst > (int)gt;
                        u64 v = 0;
                        if (act) v = list[dst - 1];
                        __syncwarp();
                        if (act) list[dst] = v;
                        __syncwarp();
                    }
                    if (lane == 0) list[gt] = x;
                    __syncwarp();
                    cn = newcn;
                }
            }
            if (lane == 0) cnt[t] = cn;
            __syncwarp();
        }
    }
    __syncthreads();
    for (u32 t = warp; t < ncand; t += 8u) {
        const u32 cn = cnt[t];
        const u64 base = part_base + ((u64)t * nch + chunk) * K;
        for (u32 i = lane; i < K; i += 32u) partial[base + i] = (i < cn) ? lists[(u64)t * K + i] : 0ull;
    }
}

extern "C" __global__ void __launch_bounds__(256)
gsu_topk_fwd_v2_f16(const GsuV2Params p, const void* __restrict__ p_q, const void* __restrict__ p_k,
                    const u32* __restrict__ items, const u32* __restrict__ cands, const float* __restrict__ bias,
                    const u32* __restrict__ work, u64* __restrict__ partial, u32* __restrict__ flag) {
    gsu_v2_impl<true>(p, p_q, p_k, items, cands, bias, work, partial, flag);
}

extern "C" __global__ void __launch_bounds__(256)
gsu_topk_fwd_v2_f32(const GsuV2Params p, const void* __restrict__ p_q, const void* __restrict__ p_k,
                    const u32* __restrict__ items, const u32* __restrict__ cands, const float* __restrict__ bias,
                    const u32* __restrict__ work, u64* __restrict__ partial, u32* __restrict__ flag) {
    gsu_v2_impl<false>(p, p_q, p_k, items, cands, bias, work, partial, flag);
}

// req_part: [R] pairs (lo, hi) = u64 index of the request's first candidate's first partial key;
// req_nch: [R] chunks of the request. Candidate c (local index i in its request) owns
// partial[req_part[r] + i*nch*K .. + nch*K].
extern "C" __global__ void __launch_bounds__(256)
gsu_topk_fwd_v2_merge(const GsuSelectParams p, const u32* __restrict__ seq_off, const u32* __restrict__ cand_off,
                      const u32* __restrict__ cand_req, const u32* __restrict__ req_nch,
                      const u32* __restrict__ req_part, const u64* __restrict__ partial,
                      u32* __restrict__ out_idx, float* __restrict__ out_score, u32* __restrict__ out_count) {
    const u32 c = blockIdx.x;
    const u32 r = cand_req[c];
    const u32 L = seq_off[r + 1] - seq_off[r];
    const u32 kk = L < p.k ? L : p.k;
    const u32 nch = req_nch[r];
    const u64 base = ((u64)req_part[2 * r] | ((u64)req_part[2 * r + 1] << 32)) + (u64)(c - cand_off[r]) * nch * p.k;
    PartialKeys keys;
    keys.row = partial + base;
    block_topk(keys, nch * p.k, kk, (u64)c, p.k, out_idx, out_score, out_count);
}

// ---------------------------------------------------------------- v3: tensor-core tiles + warp select


#define V3_TB 32           // candidates per tile
#define V3_LT 64           // behaviours per sub-tile
#define V3_SS (V3_LT + 4)  // score tile row stride (floats)

struct GsuV3Params {
    u32 n_work;  // number of work items (= grid)
    u32 dim;     // D
    u32 dpad;    // D rounded up to a multiple of 16 (the WMMA k-steps); rows are staged with dpad + 8
    u32 heads;   // h
    u32 q_f16;   // P_Q stored as f16
    u32 k;       // K
    u32 kp;      // list slots per candidate: max(32, the power of two >= K), <= 256
    float scale; // 1/sqrt(d_k)
};

// f32 -> f16 bits, round to nearest even; a finite value beyond the f16 range raises flag bit 2.
__device__ __forceinline__ unsigned short v3_to_half(float x, u32* __restrict__ flag) {
#ifdef TWIN_CUDA_EMU
    const unsigned short h = emu::float_to_half_bits(x);
#else
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
#endif
    if ((h & 0x7fffu) == 0x7c00u && (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u) atomicOr(flag, 2u);
    return h;
}

// Stage rows ids[0..nrows) of `tab` (f16 bits or f32, converted) into dst[r * ds + d] for d < dim,
// zeros for rows nrows..rows-1. Consecutive threads take consecutive 16-byte pieces of a row.
__device__ __forceinline__ void v3_stage(const void* __restrict__ tab, bool f16, const u32* __restrict__ ids, u32 nrows,
                                         u32 rows, u32 dim, u32 ds, unsigned short* __restrict__ dst, u32* __restrict__ flag) {
    const u32 tid = threadIdx.x;
    if (f16 && (dim % 8u) == 0u) {
        const u32 cpr = dim / 8u;
        const unsigned short* t = (const unsigned short*)tab;
        for (u32 i = tid; i < rows * cpr; i += blockDim.x) {
            const u32 r = i / cpr, ch = i % cpr;
            uint4 v = make_uint4(0u, 0u, 0u, 0u);
            if (r < nrows) v = *(const uint4*)(t + (u64)ids[r] * dim + 8u * ch);
            *(uint4*)(dst + (u64)r * ds + 8u * ch) = v;
        }
    } else if (!f16 && (dim % 4u) == 0u) {
        const u32 cpr = dim / 4u;
        const float* t = (const float*)tab;
        for (u32 i = tid; i < rows * cpr; i += blockDim.x) {
            const u32 r = i / cpr, ch = i % cpr;
            uint2 h = make_uint2(0u, 0u);
            if (r < nrows) {
                const float4 v = *(const float4*)(t + (u64)ids[r] * dim + 4u * ch);
                h.x = (u32)v3_to_half(v.x, flag) | ((u32)v3_to_half(v.y, flag) << 16);
                h.y = (u32)v3_to_half(v.z, flag) | ((u32)v3_to_half(v.w, flag) << 16);
            }
            *(uint2*)(dst + (u64)r * ds + 4u * ch) = h;
        }
    } else {
        for (u32 i = tid; i < rows * dim; i += blockDim.x) {
            const u32 r = i / dim, d = i % dim;
            unsigned short h = 0;
            if (r < nrows) {
                const u64 at = (u64)ids[r] * dim + d;
                h = f16 ? ((const unsigned short*)tab)[at] : v3_to_half(((const float*)tab)[at], flag);
            }
            dst[(u64)r * ds + d] = h;
        }
    }
}


// Work items as v2 (WORK_WORDS words; tiles of <= V3_TB candidates); partial layout as v2, so
// gsu_topk_fwd_v2_merge finishes v3 too.
template <bool F16>
__device__ void gsu_v3_impl(const GsuV3Params p, const void* __restrict__ p_q, const void* __restrict__ p_k,
                            const u32* __restrict__ items, const u32* __restrict__ cands, const float* __restrict__ bias,
                            const u32* __restrict__ work, u64* __restrict__ partial, u32* __restrict__ flag) {
    const u32 K = p.k, kp = p.kp, dim = p.dim, dpad = p.dpad, ds = p.dpad + 8u;
    // 32-byte aligned carve-up (WMMA pointers must be 256-bit aligned); the host adds 32 bytes.
    unsigned char* base = smem_raw + ((32u - ((u32)(u64)smem_raw & 31u)) & 31u);
    u64* lists = (u64*)base;                                    // [V3_TB][kp], descending, 0 = empty
    u64* pend = lists + (u64)V3_TB * kp;                        // [V3_TB][32] keys that passed the filter
    unsigned short* q_s = (unsigned short*)(pend + V3_TB * 32); // [V3_TB][ds] f16 bits, unscaled
    unsigned short* k_s = q_s + (u64)V3_TB * ds;                // [V3_LT][ds] f16 bits
    float* sc = (float*)(k_s + (u64)V3_LT * ds);                // [V3_TB][V3_SS] dot products
    float* bs = sc + V3_TB * V3_SS;                             // [V3_LT] bias sums
    u32* npend = (u32*)(bs + V3_LT);                            // [V3_TB]

    const u32* w = work + (u64)blockIdx.x * WORK_WORDS;
    const u32 seq0 = w[0], pos0 = w[1], pos1 = w[2], cand0 = w[3], ncand = w[4], chunk = w[5], nch = w[6];
    const u64 part_base = (u64)w[7] | ((u64)w[8] << 32);
    const u32 tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;
    const u32 rt = warp >> 2, ct = warp & 3u;  // this warp's 16 x 16 score tile: candidates 16rt.., behaviours 16ct..
    // x / h as x * (1/h) when h is a power of two: the same correctly rounded value, no division.
    const bool h_pow2 = (p.heads & (p.heads - 1u)) == 0u;
    const float inv_h = 1.0f / (float)p.heads;

    for (u32 i = tid; i < V3_TB * kp; i += blockDim.x) lists[i] = 0ull;
    for (u32 t = tid; t < V3_TB; t += blockDim.x) npend[t] = 0u;
    if (dpad > dim) {  // zero columns dim..dpad-1 of q_s and k_s (contiguous rows); staging never writes them
        const u32 pc = dpad - dim;
        for (u32 i = tid; i < (V3_TB + V3_LT) * pc; i += blockDim.x) q_s[(u64)(i / pc) * ds + dim + i % pc] = 0;
    }
    v3_stage(p_q, p.q_f16 != 0u, cands + cand0, ncand, V3_TB, dim, ds, q_s, flag);

    for (u32 l0 = pos0; l0 < pos1; l0 += V3_LT) {
        const u32 nl = (pos1 - l0) < V3_LT ? (pos1 - l0) : V3_LT;
        __syncthreads();  // the previous sub-tile's k_s, sc, bs are no longer read (first: q_s staged)
        v3_stage(p_k, F16, items + seq0 + l0, nl, V3_LT, dim, ds, k_s, flag);
        for (u32 l = tid; l < V3_LT; l += blockDim.x) bs[l] = (l < nl) ? bias_sum(bias, (u64)seq0 + l0 + l, p.heads) : 0.0f;
        __syncthreads();

        // Dots on the tensor cores: 8 warps x one 16 x 16 tile of the 32 x 64 score tile.
        wm::fragment<wm::accumulator, 16, 16, 16, float> acc;
        wm::fill_fragment(acc, 0.0f);
        for (u32 kk = 0; kk < dpad; kk += 16u) {
            wm::fragment<wm::matrix_a, 16, 16, 16, gsu_half, wm::row_major> fa;
            wm::fragment<wm::matrix_b, 16, 16, 16, gsu_half, wm::col_major> fb;
            wm::load_matrix_sync(fa, (const gsu_half*)(q_s + (u64)16u * rt * ds + kk), ds);
            wm::load_matrix_sync(fb, (const gsu_half*)(k_s + (u64)16u * ct * ds + kk), ds);
            wm::mma_sync(acc, fa, fb, acc);
        }
        wm::store_matrix_sync(sc + 16u * rt * V3_SS + 16u * ct, acc, V3_SS, wm::mem_row_major);
        __syncthreads();

        // Selection: warp w owns candidates w, w+8, w+16, w+24. A key costs one compare against
        // the list's K-th key; keys that pass collect in pend and are merged 32 at a time.
        for (u32 t = warp; t < ncand; t += 8u) {
            u64* lst = lists + (u64)t * kp;
            u64* pd = pend + t * 32u;
            u32 n = npend[t];
            u64 thr = lst[K - 1u];
            for (u32 g = 0; g < V3_LT; g += 32u) {
                const u32 l = g + lane;
                const bool valid = l < nl;
                float s = 0.0f;
                if (valid) {
                    const float x = __fadd_rn(__fmul_rn(sc[t * V3_SS + l], p.scale), bs[l]);
                    s = h_pow2 ? __fmul_rn(x, inv_h) : __fdiv_rn(x, (float)p.heads);
                }
                if (valid && s != s) atomicOr(flag, 1u);
                const u64 key = valid ? make_key(s, l0 + l) : 0ull;
                const bool pass = valid && key > thr;
                const u32 m = __ballot_sync(FULL_MASK, pass);
                if (m == 0u) continue;
                const u32 rank = __popc(m & ((1u << lane) - 1u)), c = __popc(m), room = 32u - n;
                if (pass && rank < room) pd[n + rank] = key;
                if (n + c < 32u) {
                    n += c;
                    continue;
                }
                __syncwarp();
                warp_merge(lst, pd, kp, lane);
                if (pass && rank >= room) pd[rank - room] = key;
                n = n + c - 32u;
                thr = lst[K - 1u];
            }
            if (lane == 0) npend[t] = n;
        }
    }
    __syncthreads();
    for (u32 t = warp; t < ncand; t += 8u) {
        u64* lst = lists + (u64)t * kp;
        u64* pd = pend + t * 32u;
        const u32 n = npend[t];
        if (n > 0u) {
            if (lane >= n) pd[lane] = 0ull;
            __syncwarp();
            warp_merge(lst, pd, kp, lane);
        }
        const u64 out = part_base + ((u64)t * nch + chunk) * K;
        for (u32 i = lane; i < K; i += 32u) partial[out + i] = lst[i];
    }
}

extern "C" __global__ void __launch_bounds__(256, 2)
gsu_topk_fwd_v3_f16(const GsuV3Params p, const void* __restrict__ p_q, const void* __restrict__ p_k,
                    const u32* __restrict__ items, const u32* __restrict__ cands, const float* __restrict__ bias,
                    const u32* __restrict__ work, u64* __restrict__ partial, u32* __restrict__ flag) {
    gsu_v3_impl<true>(p, p_q, p_k, items, cands, bias, work, partial, flag);
}

extern "C" __global__ void __launch_bounds__(256, 2)
gsu_topk_fwd_v3_f32(const GsuV3Params p, const void* __restrict__ p_q, const void* __restrict__ p_k,
                    const u32* __restrict__ items, const u32* __restrict__ cands, const float* __restrict__ bias,
                    const u32* __restrict__ work, u64* __restrict__ partial, u32* __restrict__ flag) {
    gsu_v3_impl<false>(p, p_q, p_k, items, cands, bias, work, partial, flag);
}
