// attn.cu — training attention forward and backward (SPEC §5: ESU pooling without W^o, ragged
// rows per sample). Reference: src/backend/cpu/attn.rs (same math, same names).
//
// Shapes (SPEC letters): B samples, N rows in all, h heads, D = h * d_k, s = 1/sqrt(d_k).
//   q [B, D], k, v [N, D], bias [N, h], offsets [B+1] (sample b owns rows offsets[b]..offsets[b+1]),
//   p [N, h], pooled / dpooled / dq [B, D], dk, dv [N, D], dbias [N, h]; all f32, row-major.
//   check::attn guarantees: offsets start at 0, never decrease and end at N; D = h * d_k > 0;
//   N * D <= u32::MAX (element offsets are still formed in 64 bits: row * D may pass 2^31).
// Launch (both kernels): grid B*h blocks, block (b, a) = (blockIdx.x / h, blockIdx.x % h), 128
//   threads (4 warps), no dynamic shared memory. Rows are handled by "row groups" of G lanes,
//   G = the smallest power of two >= min(d_k, 32) (host passes it): the block has S = 128 / G
//   groups, group g takes rows g, g + S, g + 2S, ... of the sample (a fixed assignment), lane u of
//   a group takes dims t = u, u + G, ... of the head. Row loops run ceil(rows / S) trips on every
//   lane so the group shuffles always see a full warp.
// attn_fwd, per (b, a):
//   (1) α_r = s * (q_a · k_{r,a}) + bias[r, a]: lane partials (dims in order) combined by a fixed
//       xor butterfly inside the group; α goes to p (scratch); block max M.
//   (2) e_r = expf(α_r - M) into p; Z = Σ_r e_r: per-thread sums over rows tid, tid + 128, ... in
//       order, a fixed warp butterfly, then the 4 warp sums added in warp order.
//   (3) p_r = e_r / Z.  (4) pooled_{b,a,t} = Σ_r p_r v_{r,t}: each group sums its rows in order,
//       then one thread per dim adds the S group partials in group order.
//   A sample with no rows writes pooled = 0 (and has no p rows).
// attn_bwd, per (b, a) (p from the forward, dpooled given):
//   (1) g_r = dpooled_a · v_{r,a} (kept in dbias as scratch); Σ_r p_r g_r reduced as Z above.
//   (2) dα_r = p_r (g_r - Σ p g); dbias[r, a] = dα_r; dk_{r,a} = (s dα_r) q_a; dv_{r,a} = p_r dpooled_a.
//   (3) dq_{b,a,t} = s * Σ_r dα_r k_{r,t}: group partials in row order, added in group order.
//   A sample with no rows writes dq = 0.
// Gradients are written with `=` (never `+=`): every row belongs to exactly one sample, so each
// element of dk, dv, dbias, dq, p, pooled is written by exactly one block. No atomics; every
// reduction has a fixed shape and order, so results are bit-identical run to run.

#include "common.cuh"

#define ATTN_THREADS 128u
#define ATTN_WARPS (ATTN_THREADS / 32u)

struct AttnParams {
    u32 n_samples;  // B
    u32 dim;        // D
    u32 heads;      // h
    u32 dk;         // d_k = D / h
    u32 group;      // G: lanes per row group, a power of two in 1..=32
    float scale;    // s = 1/sqrt(d_k)
    u32 pad0;
    u32 pad1;
};

// Sum over an aligned group of G lanes; every lane of the group ends with the same value.
__device__ __forceinline__ float group_sum(float v, u32 G) {
    for (u32 o = G >> 1; o > 0u; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// Block-wide max; every thread returns the same value. Ends with a barrier (red reusable).
__device__ __forceinline__ float block_max(float v, float* red) {
    for (u32 o = 16u; o > 0u; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    if ((threadIdx.x & 31u) == 0u) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float r = red[0];
    for (u32 w = 1u; w < ATTN_WARPS; ++w) r = fmaxf(r, red[w]);
    __syncthreads();
    return r;
}

// Block-wide sum in a fixed order (warp butterfly, then warps in order); same value everywhere.
__device__ __forceinline__ float block_sum(float v, float* red) {
    for (u32 o = 16u; o > 0u; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    if ((threadIdx.x & 31u) == 0u) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float r = red[0];
    for (u32 w = 1u; w < ATTN_WARPS; ++w) r += red[w];
    __syncthreads();
    return r;
}

// out[t0 + u] (t < d_k) = Σ over groups, in group order, of `acc` (the group partials): `part`
// holds ATTN_THREADS floats. Called by every thread of the block.
__device__ __forceinline__ void groups_to(float acc, float* part, u32 S, u32 G, u32 t0, u32 dk, float mul, float* out) {
    part[threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.x < G && t0 + threadIdx.x < dk) {
        float s = 0.0f;
        for (u32 g = 0; g < S; ++g) s += part[g * G + threadIdx.x];
        out[t0 + threadIdx.x] = mul * s;
    }
    __syncthreads();
}

extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attn_fwd(const AttnParams P, const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
         const float* __restrict__ bias, const u32* __restrict__ offsets, float* p, float* __restrict__ pooled) {
    __shared__ float red[ATTN_WARPS];
    __shared__ float part[ATTN_THREADS];
    const u32 H = P.heads, D = P.dim, dk = P.dk, G = P.group;
    const u32 b = blockIdx.x / H, a = blockIdx.x - b * H;
    const u32 r0 = offsets[b], rows = offsets[b + 1] - r0;
    const u32 tid = threadIdx.x;
    const u32 S = ATTN_THREADS / G, grp = tid / G, u = tid - grp * G;
    const float* qa = q + (u64)b * D + (u64)a * dk;
    float* out = pooled + (u64)b * D + (u64)a * dk;
    if (rows == 0u) {  // uniform over the block
        for (u32 t = tid; t < dk; t += ATTN_THREADS) out[t] = 0.0f;
        return;
    }

    // (1) logits into p, block max
    float m = __int_as_float(0xff800000);  // -inf
    for (u32 base = 0; base < rows; base += S) {
        const u32 r = base + grp;
        const bool ok = r < rows;
        const u64 row = (u64)(r0 + (ok ? r : 0u));
        float dot = 0.0f;
        if (ok) {
            const float* kr = k + row * D + (u64)a * dk;
            for (u32 t = u; t < dk; t += G) dot = fmaf(qa[t], kr[t], dot);
        }
        dot = group_sum(dot, G);
        if (ok) {
            const float alpha = dot * P.scale + bias[row * H + a];
            if (u == 0u) p[row * H + a] = alpha;
            m = fmaxf(m, alpha);
        }
    }
    const float M = block_max(m, red);  // its barrier also publishes the α writes

    // (2) e = exp(α - M), Z = Σ e; (3) p = e / Z (each thread rewrites only its own rows)
    float z = 0.0f;
    for (u32 r = tid; r < rows; r += ATTN_THREADS) {
        const u64 i = (u64)(r0 + r) * H + a;
        const float e = expf(p[i] - M);
        p[i] = e;
        z += e;
    }
    const float Z = block_sum(z, red);
    for (u32 r = tid; r < rows; r += ATTN_THREADS) {
        const u64 i = (u64)(r0 + r) * H + a;
        p[i] = p[i] / Z;
    }
    __syncthreads();

    // (4) pooling: group partials over its rows in order, then groups in order
    for (u32 t0 = 0; t0 < dk; t0 += G) {
        const u32 t = t0 + u;
        float acc = 0.0f;
        if (t < dk) {
            for (u32 r = grp; r < rows; r += S) {
                const u64 row = (u64)(r0 + r);
                acc = fmaf(p[row * H + a], v[row * D + (u64)a * dk + t], acc);
            }
        }
        groups_to(acc, part, S, G, t0, dk, 1.0f, out);
    }
}

extern "C" __global__ void __launch_bounds__(ATTN_THREADS)
attn_bwd(const AttnParams P, const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
         const u32* __restrict__ offsets, const float* __restrict__ p, const float* __restrict__ dpooled,
         float* __restrict__ dq, float* __restrict__ dk_out, float* __restrict__ dv_out, float* dbias) {
    __shared__ float red[ATTN_WARPS];
    __shared__ float part[ATTN_THREADS];
    const u32 H = P.heads, D = P.dim, dk = P.dk, G = P.group;
    const u32 b = blockIdx.x / H, a = blockIdx.x - b * H;
    const u32 r0 = offsets[b], rows = offsets[b + 1] - r0;
    const u32 tid = threadIdx.x;
    const u32 S = ATTN_THREADS / G, grp = tid / G, u = tid - grp * G;
    const u64 qoff = (u64)b * D + (u64)a * dk;
    const float* qa = q + qoff;
    const float* dpa = dpooled + qoff;
    float* dqa = dq + qoff;
    if (rows == 0u) {  // uniform over the block
        for (u32 t = tid; t < dk; t += ATTN_THREADS) dqa[t] = 0.0f;
        return;
    }

    // (1) g_r = dpooled_a · v_r (into dbias), Σ p g (one lane per group contributes)
    float pg = 0.0f;
    for (u32 base = 0; base < rows; base += S) {
        const u32 r = base + grp;
        const bool ok = r < rows;
        const u64 row = (u64)(r0 + (ok ? r : 0u));
        float dot = 0.0f;
        if (ok) {
            const float* vr = v + row * D + (u64)a * dk;
            for (u32 t = u; t < dk; t += G) dot = fmaf(dpa[t], vr[t], dot);
        }
        dot = group_sum(dot, G);
        if (ok && u == 0u) {
            dbias[row * H + a] = dot;
            pg = fmaf(p[row * H + a], dot, pg);
        }
    }
    const float SPG = block_sum(pg, red);  // its barrier also publishes the g writes

    // (2) dα, dbias, dk, dv; the same group reads g_r (all lanes) before lane 0 overwrites it
    for (u32 base = 0; base < rows; base += S) {
        const u32 r = base + grp;
        const bool ok = r < rows;
        const u64 row = (u64)(r0 + (ok ? r : 0u));
        float pr = 0.0f, da = 0.0f;
        if (ok) {
            pr = p[row * H + a];
            da = pr * (dbias[row * H + a] - SPG);
        }
        __syncwarp();
        if (ok) {
            if (u == 0u) dbias[row * H + a] = da;
            const float sda = P.scale * da;
            const u64 o = row * D + (u64)a * dk;
            for (u32 t = u; t < dk; t += G) {
                dk_out[o + t] = sda * qa[t];
                dv_out[o + t] = pr * dpa[t];
            }
        }
    }
    __syncthreads();

    // (3) dq = s Σ_r dα_r k_r: group partials in row order, then groups in order
    for (u32 t0 = 0; t0 < dk; t0 += G) {
        const u32 t = t0 + u;
        float acc = 0.0f;
        if (t < dk) {
            for (u32 r = grp; r < rows; r += S) {
                const u64 row = (u64)(r0 + r);
                acc = fmaf(dbias[row * H + a], k[row * D + (u64)a * dk + t], acc);
            }
        }
        groups_to(acc, part, S, G, t0, dk, P.scale, dqa);
    }
}
