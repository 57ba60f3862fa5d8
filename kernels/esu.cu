// esu.cu — ESU per-head softmax pooling + W^o (SPEC §3.5).
//
// Shapes: P_Q, P_K, P_V [n_items, D] (f32 or f16, flags), cross_value U [V, D] f32 (or f16),
// W^o [D, D] f32 (or f16), bias [ΣL, h] f32, topk idx [ΣB, K] (local positions), count [ΣB]
// (1 ≤ count ≤ min(K, L_r), checked by check::topk_for), cross [ΣL, J] rows, out [ΣB, D] f32.
// Per candidate c with finalists f = 0..n-1 (l_f = seq_off[r] + idx[c, f]):
//   α[f, a] = (q_a · k_{l_f, a}) * scale + bias[l_f, a]            (f32, d_k terms in order)
//   p[f, a] = exp(α[f, a] - max_f α[·, a]) / Σ_f exp(...)         (max-subtracted, f32, expf)
//   v_f     = P_V[item_f] + Σ_j U[cross[l_f, j]]                   (f32)
//   pooled[i] = Σ_f p[f, a(i)] * v_f[i],  a(i) = i / d_k
//   out[c, o] = Σ_i pooled[i] * W^o[i, o]
// Launch esu_fwd: grid ΣB (one block per candidate), 128 threads, dynamic shared memory
// 4 * (2*D + K*h + K) bytes (q, pooled, α/p, finalist rows); the host refuses shapes above 48 KiB.
// Steps: (1) one thread per (finalist, head) pair computes α; (2) one warp per head does the
// softmax with shuffle reductions (fixed order: deterministic); (3) one thread per output column
// i pools over the finalists (row reads coalesced); (4) one thread per column o of W^o.
// Versions: one.

typedef unsigned int u32;
typedef unsigned long long u64;

#define FULL_MASK 0xffffffffu

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

__device__ __forceinline__ float f16_to_f32(unsigned short h) {
#ifdef TWIN_CUDA_EMU
    return emu::half_bits_to_float(h);  // exact binary16 -> binary32 (emu/cuda_emu.h)
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

__device__ __forceinline__ float load_elem(const void* p, u32 is_f16, u64 i) {
    return is_f16 ? f16_to_f32(((const unsigned short*)p)[i]) : ((const float*)p)[i];
}

__device__ __forceinline__ float warp_max_f32(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum_f32(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

extern "C" __global__ void __launch_bounds__(128)
esu_fwd(const EsuParams p, const void* __restrict__ p_q, const void* __restrict__ p_k, const void* __restrict__ p_v,
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
