// esu.cu — ESU per-head softmax pooling + W^o (SPEC §3.5).
//
// Shapes: P_Q, P_K, P_V [n_items, D] (f32 or f16, flags), cross_value U [V, D] f32 (or f16),
// W^o [D, D] f32 (or f16), bias [ΣL, h] f32, topk idx [ΣB, K] (local positions), count [ΣB]
// (1 ≤ count ≤ min(K, L_r), checked by check::topk_for), cross [ΣL, J] rows, out [ΣB, D] f32
// (written with =, every element of every candidate row). K ≤ 256.
// Per candidate c with finalists f = 0..n-1 (l_f = seq_off[r] + idx[c, f]):
//   α[f, a] = (q_a · k_{l_f, a}) * scale + bias[l_f, a]            (f32, d_k terms in order)
//   p[f, a] = exp(α[f, a] - max_f α[·, a]) / Σ_f exp(...)         (max-subtracted, f32, expf)
//   v_f     = P_V[item_f] + Σ_j U[cross[l_f, j]]                   (f32, j in order)
//   pooled[i] = Σ_f p[f, a(i)] * v_f[i],  a(i) = i / d_k           (fmaf, f in order)
//   out[c, o] = Σ_i pooled[i] * W^o[i, o]                          (fmaf, i in order)
// v1 and v2 perform the same operations in the same order for every candidate (dots fmaf over
// i ascending, the softmax's lane-strided partial sums and xor-shuffle reductions, pooling fmaf
// over f ascending, · W^o fmaf over i ascending): v2 == v1 bit for bit on the emulator (which
// contracts nothing), and a candidate's row does not depend on its group or batch neighbours.
// Both differ from the CPU reference (f64) by f32 rounding: tests/parity/esu.rs's tolerance.
//
// v1 — esu_fwd_v1: grid ΣB (one block per candidate), 128 threads, dynamic shared memory
// 4 * (2*D + K*h + K) bytes (q, pooled, α/p, finalist rows); the host refuses shapes above 48 KiB.
// Steps: (1) one thread per (finalist, head) pair computes α, reading its d_k key elements from
// global memory; (2) one warp per head does the softmax with shuffle reductions (fixed order:
// deterministic); (3) one thread per output column i pools over the finalists (row reads
// coalesced, but each finalist is a dependent chain rows → items → P_V / cross → U); (4) one
// thread per column o of W^o, which every block re-reads (64 KiB at D = 128, f32) from L2.
//
// v2 — esu_fwd_v2: grid = number of candidate groups, 256 threads, __launch_bounds__(256, 2).
// A group is G ≤ 8 consecutive candidates of one request (group_off [n_groups + 1]: a request's
// candidates are cut into groups of G, the last one ragged; the host picks G, see esu.rs). The
// group's finalists are flattened into pairs p = offs[g] + f (P = Σ_g count ≤ G*K):
//   (0) q rows of the group staged (f32, per head padded to dkp = d_k | 1 so the dot phase is
//       free of bank conflicts); counts → pair offsets.
//   (1) ids first: one thread per pair reads idx → l, then items[l], cross[l, 0..J) and
//       bias[l, 0..h) into shared memory, all pairs in parallel (no per-finalist chain).
//   (2) logits: the key rows of R pairs at a time are staged coalesced (16-byte f32 / 8-byte f16
//       pieces when D % 4 == 0) into [R][h*dkp]; one thread per (pair, head) runs v1's dot.
//   (3) softmax: one warp per (candidate, head), v1's code on the candidate's pairs.
//   (4) pooling: v_f = P_V + Σ_j U rows of R pairs at a time staged coalesced into [R][D] (the
//       row loads of a tile are independent: one latency per tile, not two per finalist); one
//       thread per (candidate, column) accumulates its pairs of the tile in f order.
//   (5) · W^o: W^o staged in tiles of wo_rows = R*h*dkp/D rows (contiguous, coalesced), each
//       read once per group; one thread per (4 candidates, column o) holds 4 accumulators
//       (carried across tiles in shared memory), so each staged element feeds up to 4 outputs.
// Dynamic shared memory (4-byte words): 16 + G*h*dkp + G*D + G*K*h + G*K + G*K*J + R*h*dkp
// (D = 128, h = 4, J = 3, R = 64: 66 KiB at G = 8, K = 100; 105 KiB at G = 8, K = 256), so two
// blocks fit an sm_90 SM (228 KiB); the host shrinks R, then G, to keep it ≤ 113 KiB.
// Versions: v1, v2 (the host's EsuVersion; TWIN_ESU=v1|v2).

#include "common.cuh"

struct EsuParams {
    u32 n_cand;   // ΣB
    u32 dim;      // D
    u32 heads;    // h
    u32 n_cross;  // J
    u32 k;        // K, row stride of idx
    u32 q_f16;    // dtype flags: 1 = f16
    u32 k_f16;
    u32 v_f16;
    u32 cv_f16;
    u32 wo_f16;
    float scale;  // 1/sqrt(d_k)
    u32 pad;
};

extern "C" __global__ void __launch_bounds__(128)
esu_fwd_v1(const EsuParams p, const void* __restrict__ p_q, const void* __restrict__ p_k, const void* __restrict__ p_v,
        const void* __restrict__ cross_value, const void* __restrict__ w_o, const u32* __restrict__ seq_off,
        const u32* __restrict__ items, const u32* __restrict__ cross, const u32* __restrict__ cand_req,
        const u32* __restrict__ cands, const float* __restrict__ bias, const u32* __restrict__ topk_idx,
        const u32* __restrict__ topk_count, float* __restrict__ out) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const u32 D = p.dim, H = p.heads, J = p.n_cross;
    const u32 dk = D / H;
    float* q_s = (float*)smem_raw;      // [D]
    float* pooled = q_s + D;            // [D]
    float* alpha = pooled + D;          // [K][h]: α, then p
    u32* rows = (u32*)(alpha + (u64)p.k * H);  // [K] global behaviour rows of the finalists

    const u32 c = blockIdx.x;
    const u32 r = cand_req[c];
    const u32 s0 = seq_off[r];
    const u32 n = topk_count[c];
    const u32 tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5, nwarps = blockDim.x >> 5;

    const u64 qrow = (u64)cands[c] * D;
    for (u32 i = tid; i < D; i += blockDim.x) q_s[i] = load_elem(p_q, p.q_f16, qrow + i);
    for (u32 f = tid; f < n; f += blockDim.x) rows[f] = s0 + topk_idx[(u64)c * p.k + f];
    __syncthreads();

    // (1) logits
    for (u32 pi = tid; pi < n * H; pi += blockDim.x) {
        const u32 f = pi / H, a = pi - f * H;
        const u32 l = rows[f];
        const u64 krow = (u64)items[l] * D + (u64)a * dk;
        float dot = 0.0f;
        for (u32 i = 0; i < dk; ++i) dot = fmaf(q_s[a * dk + i], load_elem(p_k, p.k_f16, krow + i), dot);
        alpha[pi] = dot * p.scale + bias[(u64)l * H + a];
    }
    __syncthreads();

    // (2) per-head softmax; lane owns finalists f = lane, lane+32, ... in every loop.
    for (u32 a = warp; a < H; a += nwarps) {
        float m = __int_as_float(0xff800000);
        for (u32 f = lane; f < n; f += 32u) m = fmaxf(m, alpha[f * H + a]);
        m = warp_max_f32(m);
        float z = 0.0f;
        for (u32 f = lane; f < n; f += 32u) {
            const float e = expf(alpha[f * H + a] - m);
            alpha[f * H + a] = e;
            z += e;
        }
        z = warp_sum_f32(z);
        for (u32 f = lane; f < n; f += 32u) alpha[f * H + a] = alpha[f * H + a] / z;
    }
    __syncthreads();

    // (3) pooling of v = P_V + Σ_j U
    for (u32 i = tid; i < D; i += blockDim.x) {
        const u32 a = i / dk;
        float acc = 0.0f;
        for (u32 f = 0; f < n; ++f) {
            const u32 l = rows[f];
            float v = load_elem(p_v, p.v_f16, (u64)items[l] * D + i);
            for (u32 j = 0; j < J; ++j) v += load_elem(cross_value, p.cv_f16, (u64)cross[(u64)l * J + j] * D + i);
            acc = fmaf(alpha[f * H + a], v, acc);
        }
        pooled[i] = acc;
    }
    __syncthreads();

    // (4) · W^o
    for (u32 o = tid; o < D; o += blockDim.x) {
        float acc = 0.0f;
        for (u32 i = 0; i < D; ++i) acc = fmaf(pooled[i], load_elem(w_o, p.wo_f16, (u64)i * D + o), acc);
        out[(u64)c * D + o] = acc;
    }
}

// ---- v2: a group of candidates per block -------------------------------------------------

#define ESU_V2_THREADS 256u

struct EsuV2Params {
    u32 n_groups;   // grid size
    u32 dim;        // D
    u32 heads;      // h
    u32 n_cross;    // J
    u32 k;          // K, row stride of idx
    u32 q_f16;      // dtype flags: 1 = f16
    u32 k_f16;
    u32 v_f16;
    u32 cv_f16;
    u32 wo_f16;
    float scale;    // 1/sqrt(d_k)
    u32 group;      // G: the largest group (sizes the shared arrays), 1..8
    u32 tile_rows;  // R: pairs per staged row tile
    u32 wo_rows;    // W^o rows per staged tile (≥ 1)
    u32 dkp;        // padded head width in shared rows (d_k or d_k + 1, odd)
    u32 vec;        // 1: D % 4 == 0, rows move in 4-element pieces
};

// Element e of a D-row in the head-padded layout [h][dkp].
__device__ __forceinline__ u32 pad_idx(u32 e, u32 dk, u32 dkp) { return (e / dk) * dkp + e % dk; }

// Elements i..i+3 (vec) or i of a table as f32; vec pieces are 16 (f32) or 8 (f16) bytes,
// aligned because D % 4 == 0 and i % 4 == 0 (allocations are 256-byte aligned).
__device__ __forceinline__ void load_piece(const void* p, u32 is_f16, u64 i, u32 vec, float* v) {
    if (!vec) {
        v[0] = load_elem(p, is_f16, i);
    } else if (is_f16) {
        const uint2 u = *(const uint2*)((const unsigned short*)p + i);
        v[0] = f16_to_f32((unsigned short)(u.x & 0xffffu));
        v[1] = f16_to_f32((unsigned short)(u.x >> 16));
        v[2] = f16_to_f32((unsigned short)(u.y & 0xffffu));
        v[3] = f16_to_f32((unsigned short)(u.y >> 16));
    } else {
        const float4 f = *(const float4*)((const float*)p + i);
        v[0] = f.x;
        v[1] = f.y;
        v[2] = f.z;
        v[3] = f.w;
    }
}

// Candidate (within the group) of pair q: offs[g] <= q < offs[g + 1] (≤ 8 compares).
__device__ __forceinline__ u32 pair_cand(const u32* offs, u32 q) {
    u32 g = 0;
    while (offs[g + 1] <= q) ++g;
    return g;
}

extern "C" __global__ void __launch_bounds__(256, 2)
esu_fwd_v2(const EsuV2Params p, const void* __restrict__ p_q, const void* __restrict__ p_k, const void* __restrict__ p_v,
           const void* __restrict__ cross_value, const void* __restrict__ w_o, const u32* __restrict__ seq_off,
           const u32* __restrict__ items, const u32* __restrict__ cross, const u32* __restrict__ cand_req,
           const u32* __restrict__ cands, const float* __restrict__ bias, const u32* __restrict__ topk_idx,
           const u32* __restrict__ topk_count, const u32* __restrict__ group_off, float* __restrict__ out) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const u32 D = p.dim, H = p.heads, J = p.n_cross, K = p.k, G = p.group, R = p.tile_rows, dkp = p.dkp;
    const u32 dk = D / H, S = H * dkp;
    const u32 cw = p.vec ? 4u : 1u, nch = D / cw;  // piece width, pieces per row
    u32* offs = (u32*)smem_raw;                                // [16]: pair offsets of the group's candidates
    float* q_s = (float*)(offs + 16);                          // [G][S] padded q rows; then ·W^o accumulators [G][D]
    float* pooled = q_s + (u64)G * S;                          // [G][D]
    float* alpha = pooled + (u64)G * D;                        // [G*K][H]: bias, α, p per pair
    u32* item_s = (u32*)(alpha + (u64)G * K * H);              // [G*K] item of each pair
    u32* cross_s = item_s + (u64)G * K;                        // [G*K][J] cross rows of each pair
    float* tile = (float*)(cross_s + (u64)G * K * J);          // [R][S] keys | [R][D] values | [wo_rows][D] W^o

    const u32 c0 = group_off[blockIdx.x];
    const u32 ng = group_off[blockIdx.x + 1] - c0;  // 1..G candidates, all of one request
    const u32 s0 = seq_off[cand_req[c0]];
    const u32 tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5, nwarps = blockDim.x >> 5;

    // (0) pair offsets, q rows (head-padded), pooled = 0.
    if (tid == 0) {
        u32 acc = 0;
        for (u32 g = 0; g < ng; ++g) {
            offs[g] = acc;
            acc += topk_count[c0 + g];
        }
        for (u32 g = ng; g <= G; ++g) offs[g] = acc;
    }
    for (u32 w = tid; w < ng * nch; w += blockDim.x) {
        const u32 g = w / nch, e = (w - g * nch) * cw;
        float v[4];
        load_piece(p_q, p.q_f16, (u64)cands[c0 + g] * D + e, p.vec, v);
        #pragma unroll
        for (u32 x = 0; x < 4u; ++x)
            if (x < cw) q_s[g * S + pad_idx(e + x, dk, dkp)] = v[x];
    }
    for (u32 w = tid; w < ng * D; w += blockDim.x) pooled[w] = 0.0f;
    __syncthreads();
    const u32 P = offs[ng];

    // (1) ids first: every pair's behaviour row, item, cross rows and bias, in parallel.
    for (u32 q = tid; q < P; q += blockDim.x) {
        const u32 g = pair_cand(offs, q);
        const u32 l = s0 + topk_idx[(u64)(c0 + g) * K + (q - offs[g])];
        item_s[q] = items[l];
        for (u32 j = 0; j < J; ++j) cross_s[(u64)q * J + j] = cross[(u64)l * J + j];
        for (u32 a = 0; a < H; ++a) alpha[(u64)q * H + a] = bias[(u64)l * H + a];
    }
    __syncthreads();

    // (2) logits, R pairs at a time: key rows staged coalesced, then v1's dot per (pair, head).
    for (u32 t0 = 0; t0 < P; t0 += R) {
        const u32 nr = umin32(R, P - t0);
        for (u32 w = tid; w < nr * nch; w += blockDim.x) {
            const u32 rr = w / nch, e = (w - rr * nch) * cw;
            float v[4];
            load_piece(p_k, p.k_f16, (u64)item_s[t0 + rr] * D + e, p.vec, v);
            #pragma unroll
            for (u32 x = 0; x < 4u; ++x)
                if (x < cw) tile[rr * S + pad_idx(e + x, dk, dkp)] = v[x];
        }
        __syncthreads();
        for (u32 w = tid; w < nr * H; w += blockDim.x) {
            const u32 rr = w / H, a = w - rr * H, q = t0 + rr;
            const float* qa = q_s + pair_cand(offs, q) * S + a * dkp;
            const float* ka = tile + rr * S + a * dkp;
            float dot = 0.0f;
            for (u32 i = 0; i < dk; ++i) dot = fmaf(qa[i], ka[i], dot);
            alpha[(u64)q * H + a] = dot * p.scale + alpha[(u64)q * H + a];
        }
        __syncthreads();
    }

    // (3) per (candidate, head) softmax over the candidate's pairs: v1's code.
    for (u32 task = warp; task < ng * H; task += nwarps) {
        const u32 g = task / H, a = task - g * H;
        const u32 n = offs[g + 1] - offs[g];
        float* al = alpha + (u64)offs[g] * H + a;  // al[f * H]
        float m = __int_as_float(0xff800000);
        for (u32 f = lane; f < n; f += 32u) m = fmaxf(m, al[f * H]);
        m = warp_max_f32(m);
        float z = 0.0f;
        for (u32 f = lane; f < n; f += 32u) {
            const float e = expf(al[f * H] - m);
            al[f * H] = e;
            z += e;
        }
        z = warp_sum_f32(z);
        for (u32 f = lane; f < n; f += 32u) al[f * H] = al[f * H] / z;
    }
    __syncthreads();

    // (4) pooling, R pairs at a time: v = P_V + Σ_j U rows staged coalesced, then each
    // (candidate, column) thread folds the tile's pairs of its candidate in f order.
    for (u32 t0 = 0; t0 < P; t0 += R) {
        const u32 nr = umin32(R, P - t0);
        for (u32 w = tid; w < nr * nch; w += blockDim.x) {
            const u32 rr = w / nch, e = (w - rr * nch) * cw, q = t0 + rr;
            float v[4];
            load_piece(p_v, p.v_f16, (u64)item_s[q] * D + e, p.vec, v);
            for (u32 j = 0; j < J; ++j) {
                float u[4];
                load_piece(cross_value, p.cv_f16, (u64)cross_s[(u64)q * J + j] * D + e, p.vec, u);
                #pragma unroll
                for (u32 x = 0; x < 4u; ++x)
                    if (x < cw) v[x] += u[x];
            }
            #pragma unroll
            for (u32 x = 0; x < 4u; ++x)
                if (x < cw) tile[rr * D + e + x] = v[x];
        }
        __syncthreads();
        for (u32 w = tid; w < ng * D; w += blockDim.x) {
            const u32 g = w / D, i = w - g * D, a = i / dk;
            const u32 lo = umax32(offs[g], t0), hi = umin32(offs[g + 1], t0 + nr);
            if (lo >= hi) continue;
            float acc = pooled[w];
            for (u32 q = lo; q < hi; ++q) acc = fmaf(alpha[(u64)q * H + a], tile[(q - t0) * D + i], acc);
            pooled[w] = acc;
        }
        __syncthreads();
    }

    // (5) · W^o in tiles of wo_rows rows, each staged once for the group; a thread owns column o
    // of up to 4 candidates (accumulators carried across tiles in q_s).
    const u32 TI = p.wo_rows, nq = (ng + 3u) / 4u;
    for (u32 i0 = 0; i0 < D; i0 += TI) {
        const u32 ni = umin32(TI, D - i0);
        for (u32 w = tid; w < ni * nch; w += blockDim.x) {
            const u32 e = w * cw;
            float v[4];
            load_piece(w_o, p.wo_f16, (u64)i0 * D + e, p.vec, v);
            #pragma unroll
            for (u32 x = 0; x < 4u; ++x)
                if (x < cw) tile[e + x] = v[x];
        }
        __syncthreads();
        for (u32 w = tid; w < nq * D; w += blockDim.x) {
            const u32 gq = w / D, o = w - gq * D, g0 = gq * 4u, gn = umin32(4u, ng - g0);
            float acc[4];
            #pragma unroll
            for (u32 x = 0; x < 4u; ++x) acc[x] = (i0 == 0 || x >= gn) ? 0.0f : q_s[(g0 + x) * D + o];
            for (u32 i = 0; i < ni; ++i) {
                const float wv = tile[i * D + o];
                #pragma unroll
                for (u32 x = 0; x < 4u; ++x)
                    if (x < gn) acc[x] = fmaf(pooled[(g0 + x) * D + i0 + i], wv, acc[x]);
            }
            const bool last = i0 + ni >= D;
            #pragma unroll
            for (u32 x = 0; x < 4u; ++x) {
                if (x >= gn) continue;
                if (last)
                    out[(u64)(c0 + g0 + x) * D + o] = acc[x];
                else
                    q_s[(g0 + x) * D + o] = acc[x];
            }
        }
        __syncthreads();
    }
}
