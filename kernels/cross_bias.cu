// cross_bias.cu — cross-feature bias (SPEC §3.2), both forms, the training-time cross tables and
// their backward.
// Compiled with --fmad=false so the f64 (inference forward) and f32 (training tables, backward)
// arithmetic below rounds exactly like the CPU reference (no FMA contraction).
//
// cross_bias_fwd (inference, gather-sum):
//   table [V, h] (f32, or f16 when p.table_f16), rows [N, J] (cross-table rows), out [N, h] f32.
//   out[n, a] = Σ_j table[rows[n*J + j], a], summed in j order in f64, rounded once to f32
//   (bit-identical to src/backend/cpu/cross_bias.rs::gather_sum).
// cross_bias_dense_fwd (training form):
//   e [N, J, C], w_c [h, J, C], beta [h, J], out [N, h] f32.
//   out[n, a] = Σ_j beta[a, j] * (Σ_c e[n, j, c] * w_c[a, j, c]), all in f64 in index order.
// cross_bias_bwd (training backward into the parameters, src/backend/cpu/cross_bias.rs::
//   cross_tables_bwd): the stacked tables are cb[v, a] = β[a,j] (E[v] · w_c[a,j]) and
//   cv[v] = E[v] W^{vc}[jC..(j+1)C, :] for v in feature j's rows offsets[j]..offsets[j+1].
//   Shapes: V stacked cross rows, h heads, J features, C = dim, D = model width;
//   dcb [V, h], dcv [V, D], e [V, C], w_c [h, J, C], beta [h, J], w_vc [J*C, D], offsets [J+1];
//   outputs de [V, C], dw_c [h, J*C], dbeta [h, J], dw_vc [J*C, D] f32: four pointers (the
//   host-slice op passes four consecutive ranges of one packed buffer and downloads it once; the
//   tensor op, DeviceOps::cross_tables_bwd_dev, passes four tensors). Element i of the
//   concatenation [dE | dw_c | dβ | dW^{vc}] goes to its section's pointer.
//   One thread per output element, each a sum over v ascending in f32 with exactly the CPU's
//   operations in the CPU's order (--fmad=false: bit-identical to the reference), written with `=`:
//     dE[v, t]           = Σ_col W^{vc}[jC+t, col] dcv[v, col] + Σ_a (dcb[v,a] β[a,j]) w_c[a,j,t]
//                          (j = the first feature whose rows hold v)
//     dw_c[a, j, t]      = Σ_v (dcb[v, a] β[a,j]) E[v, t]
//     dβ[a, j]           = Σ_v dcb[v, a] (E[v] · w_c[a,j])          (dot in t order)
//     dW^{vc}[jC+t, col] = Σ_v E[v, t] dcv[v, col]
//   for v in feature j's rows. check::cross_tables_bwd guarantees the shapes and offsets that
//   start at 0, never decrease and end at V; indices are formed in 64 bits.
// cross_tables_fwd (the training-time cross tables, src/backend/cpu/cross_bias.rs::cross_tables,
//   DeviceOps::cross_tables_dev): same shapes as cross_bias_bwd (params CrossBiasBwdParams);
//   e [V, C], w_c [h, J*C], beta [h, J], w_vc [J*C, D], offsets [J+1] → cb [V, h], cv [V, D] f32.
//   One thread per element of [cb | cv], written with `=`, in f32 with the CPU's operations in
//   the CPU's order (--fmad=false: bit-identical), j = the first feature whose rows hold v:
//     cb[v, a]   = β[a,j] * (Σ_t E[v, t] w_c[a,j,t])          (dot from 0, t ascending)
//     cv[v, col] = Σ_t E[v, t] W^{vc}[jC+t, col]              (from 0, t ascending)
//   CrossParams::check guarantees the shapes, offsets 0 .. V non-decreasing, V * max(C, D, h)
//   <= u32::MAX; indices are formed in 64 bits.
// Launch (all four): one thread per output element ((n, a) for the forward kernels), 1-D
//   grid-stride, 256 threads per block, grid min(ceil(total / 256), 32 * SMs); never launched
//   with no output element.
// Versions: one each. Bounds: rows checked against V (check::cross_bias); dense shapes checked
// by check::cross_bias_dense; backward shapes by check::cross_tables_bwd (host slices) or
// CrossParams::check plus the dcb / dcv shapes (tensors).

#include "common.cuh"

struct CrossBiasParams {
    u32 n;          // N behaviours
    u32 heads;      // h
    u32 n_cross;    // J
    u32 table_f16;  // 1 when the table is stored as f16
};

struct CrossBiasDenseParams {
    u32 n;        // N behaviours
    u32 heads;    // h
    u32 n_cross;  // J
    u32 dim;      // C, per-feature embedding width
};

struct CrossBiasBwdParams {
    u32 v_rows;   // V
    u32 heads;    // h
    u32 n_cross;  // J
    u32 dim;      // C
    u32 d;        // D
    u32 pad0;
    u32 pad1;
    u32 pad2;
};

// The first feature j whose rows offsets[j]..offsets[j+1] hold v (the CPU's `feature`; 0 if none).
__device__ __forceinline__ u64 feature_of(const u32* __restrict__ offsets, u64 n_cross, u64 v) {
    for (u64 j = 0; j < n_cross; ++j) {
        if (offsets[j] <= v && v < offsets[j + 1]) return j;
    }
    return 0;
}

extern "C" __global__ void __launch_bounds__(256)
cross_bias_fwd(const CrossBiasParams p, const void* __restrict__ table, const u32* __restrict__ rows,
               float* __restrict__ out) {
    const u64 total = (u64)p.n * p.heads;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 n = i / p.heads;
        const u32 a = (u32)(i - n * p.heads);
        double acc = 0.0;
        for (u32 j = 0; j < p.n_cross; ++j) {
            const u64 at = (u64)rows[n * p.n_cross + j] * p.heads + a;
            const float v = p.table_f16 ? f16_to_f32(((const unsigned short*)table)[at]) : ((const float*)table)[at];
            acc = acc + (double)v;
        }
        out[i] = (float)acc;
    }
}

extern "C" __global__ void __launch_bounds__(256)
cross_bias_dense_fwd(const CrossBiasDenseParams p, const float* __restrict__ e, const float* __restrict__ w_c,
                     const float* __restrict__ beta, float* __restrict__ out) {
    const u64 total = (u64)p.n * p.heads;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 n = i / p.heads;
        const u32 a = (u32)(i - n * p.heads);
        double acc = 0.0;
        for (u32 j = 0; j < p.n_cross; ++j) {
            const float* ev = e + (n * p.n_cross + j) * p.dim;
            const float* wv = w_c + ((u64)a * p.n_cross + j) * p.dim;
            double dot = 0.0;
            for (u32 c = 0; c < p.dim; ++c) {
                dot = dot + (double)ev[c] * (double)wv[c];
            }
            acc = acc + (double)beta[(u64)a * p.n_cross + j] * dot;
        }
        out[i] = (float)acc;
    }
}

extern "C" __global__ void __launch_bounds__(256)
cross_bias_bwd(const CrossBiasBwdParams p, const float* __restrict__ dcb, const float* __restrict__ dcv,
               const float* __restrict__ e, const float* __restrict__ w_c, const float* __restrict__ beta,
               const float* __restrict__ w_vc, const u32* __restrict__ offsets, float* __restrict__ de,
               float* __restrict__ dw_c, float* __restrict__ dbeta, float* __restrict__ dw_vc) {
    const u64 H = p.heads, J = p.n_cross, C = p.dim, D = p.d;
    const u64 n_de = (u64)p.v_rows * C, n_dwc = H * J * C, n_db = H * J, n_dwvc = J * C * D;
    const u64 total = n_de + n_dwc + n_db + n_dwvc;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        if (i < n_de) {
            const u64 v = i / C, t = i - v * C;
            const u64 j = feature_of(offsets, J, v);
            const float* wrow = w_vc + (j * C + t) * D;
            const float* g = dcv + v * D;
            float acc = 0.0f;
            for (u64 col = 0; col < D; ++col) acc = acc + wrow[col] * g[col];
            for (u64 a = 0; a < H; ++a) acc = acc + dcb[v * H + a] * beta[a * J + j] * w_c[(a * J + j) * C + t];
            de[i] = acc;
        } else if (i < n_de + n_dwc) {
            const u64 x = i - n_de;
            const u64 a = x / (J * C), j = (x / C) % J, t = x % C;
            const float bt = beta[a * J + j];
            float acc = 0.0f;
            for (u64 v = offsets[j]; v < offsets[j + 1]; ++v) acc = acc + dcb[v * H + a] * bt * e[v * C + t];
            dw_c[x] = acc;
        } else if (i < n_de + n_dwc + n_db) {
            const u64 x = i - n_de - n_dwc;
            const u64 a = x / J, j = x - a * J;
            const float* wv = w_c + (a * J + j) * C;
            float db = 0.0f;
            for (u64 v = offsets[j]; v < offsets[j + 1]; ++v) {
                float dot = 0.0f;
                for (u64 t = 0; t < C; ++t) dot = dot + e[v * C + t] * wv[t];
                db = db + dcb[v * H + a] * dot;
            }
            dbeta[x] = db;
        } else {
            const u64 x = i - n_de - n_dwc - n_db;
            const u64 row = x / D, col = x - row * D;  // row = j*C + t
            const u64 j = row / C, t = row - j * C;
            float acc = 0.0f;
            for (u64 v = offsets[j]; v < offsets[j + 1]; ++v) acc = acc + e[v * C + t] * dcv[v * D + col];
            dw_vc[x] = acc;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
cross_tables_fwd(const CrossBiasBwdParams p, const float* __restrict__ e, const float* __restrict__ w_c,
                 const float* __restrict__ beta, const float* __restrict__ w_vc, const u32* __restrict__ offsets,
                 float* __restrict__ cb, float* __restrict__ cv) {
    const u64 H = p.heads, J = p.n_cross, C = p.dim, D = p.d;
    const u64 n_cb = (u64)p.v_rows * H, total = n_cb + (u64)p.v_rows * D;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        if (i < n_cb) {
            const u64 v = i / H, a = i - v * H;
            const u64 j = feature_of(offsets, J, v);
            const float* ev = e + v * C;
            const float* wv = w_c + (a * J + j) * C;
            float dot = 0.0f;
            for (u64 t = 0; t < C; ++t) dot = dot + ev[t] * wv[t];
            cb[i] = beta[a * J + j] * dot;
        } else {
            const u64 x = i - n_cb;
            const u64 v = x / D, col = x - v * D;
            const u64 j = feature_of(offsets, J, v);
            const float* ev = e + v * C;
            float acc = 0.0f;
            for (u64 t = 0; t < C; ++t) acc = acc + ev[t] * w_vc[(j * C + t) * D + col];
            cv[x] = acc;
        }
    }
}
