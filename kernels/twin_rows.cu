// twin_rows.cu — the attention rows of a training step (SPEC §5, step 3): each row's inherent
// features x_h and bias ln n + Σ_j cb[cross_j], and (after V = X W^v) its cross value
// V += Σ_j cv[cross_j]. Reference: src/backend/cpu/twin_rows.rs (rows, add_values); reached
// through DeviceOps::twin_rows_dev / twin_rows_value_dev. Compiled with --fmad=false (sums are
// plain f32 additions in the reference's order: bit-identical).
//
// Shapes (SPEC letters): N = n_att = n_fin + n_short attention rows; row n < n_fin reads long
//   position sel[n], row n >= n_fin reads position n_long + (n - n_fin). H = 2 id + 2 sm, h heads,
//   J cross features, D value width. Per position feat [P, 4] u32 (item, author, topic,
//   duration rows), cross [P, J] u32 (rows of cb / cv), log_n [P] f32; sel [n_fin] u32 (long
//   positions, written only by gsu_train_fwd); tables item [·, id], author [·, id], topic [·, sm],
//   duration [·, sm]; cb [ΣV, h]; cv [ΣV, D].
// twin_rows_fwd: x [N, H], bias [N, h] f32, each element written with `=` by one thread:
//   x[n, i]    = the i-th word of [item | author | topic | duration] rows of position p_n (a copy)
//   bias[n, a] = ((log_n[p_n] + cb[cross[p_n, 0], a]) + cb[cross[p_n, 1], a]) + ...  (j order)
// twin_rows_value_fwd: in place (+=), v [N, D]:
//   v[n, c] = ((v[n, c] + cv[cross[p_n, 0], c]) + cv[cross[p_n, 1], c]) + ...        (j order)
//   each element read and written by its own thread only.
// Launch (both): 1-D grid-stride over the elements (N*(H + h), resp. N*D), 256 threads per block,
//   grid min(ceil(total / 256), 32 * SMs); not launched when there is no element.
// Bounds: Staging::twin_rows checked every feat / cross id against its table and cb / cv rows;
//   train_rows::check_rows / check_values the tensors' shapes, each table and v, cv <= u32::MAX
//   words; positions are < P. Products are formed in 64 bits.
// Versions: one each (memory bound gathers).

#include "common.cuh"

struct TwinRowsParams {
    u32 n_att;    // N
    u32 n_fin;    // finalists (rows read through sel)
    u32 n_long;   // long positions (the short ones follow)
    u32 id_w;     // id
    u32 small_w;  // sm
    u32 heads;    // h
    u32 n_cross;  // J
    u32 width;    // D (twin_rows_value_fwd); unused by twin_rows_fwd
};

// Position read by attention row n.
__device__ __forceinline__ u64 row_position(const TwinRowsParams& P, const u32* __restrict__ sel, u64 n) {
    return n < P.n_fin ? (u64)sel[n] : (u64)P.n_long + (n - P.n_fin);
}

extern "C" __global__ void __launch_bounds__(256)
twin_rows_fwd(const TwinRowsParams P, const float* __restrict__ t_item, const float* __restrict__ t_author,
              const float* __restrict__ t_topic, const float* __restrict__ t_dur, const float* __restrict__ cb,
              const u32* __restrict__ feat, const u32* __restrict__ cross, const float* __restrict__ log_n,
              const u32* __restrict__ sel, float* __restrict__ x, float* __restrict__ bias) {
    const u64 id = P.id_w, sm = P.small_w, H = 2 * id + 2 * sm, h = P.heads, J = P.n_cross;
    const u64 n_x = (u64)P.n_att * H, total = n_x + (u64)P.n_att * h;
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (u64)gridDim.x * blockDim.x) {
        if (e < n_x) {
            const u64 n = e / H, i = e - n * H;
            const u32* f = feat + row_position(P, sel, n) * 4;
            float val;
            if (i < id) {
                val = t_item[(u64)f[0] * id + i];
            } else if (i < 2 * id) {
                val = t_author[(u64)f[1] * id + (i - id)];
            } else if (i < 2 * id + sm) {
                val = t_topic[(u64)f[2] * sm + (i - 2 * id)];
            } else {
                val = t_dur[(u64)f[3] * sm + (i - 2 * id - sm)];
            }
            x[e] = val;
        } else {
            const u64 o = e - n_x;
            const u64 n = o / h, a = o - n * h;
            const u64 p = row_position(P, sel, n);
            float acc = log_n[p];
            for (u64 j = 0; j < J; ++j) acc = acc + cb[(u64)cross[p * J + j] * h + a];
            bias[o] = acc;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
twin_rows_value_fwd(const TwinRowsParams P, const u32* __restrict__ cross, const u32* __restrict__ sel,
                    const float* __restrict__ cv, float* __restrict__ v) {
    const u64 D = P.width, J = P.n_cross;
    const u64 total = (u64)P.n_att * D;
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (u64)gridDim.x * blockDim.x) {
        const u64 n = e / D, c = e - n * D;
        const u64 p = row_position(P, sel, n);
        float acc = v[e];
        for (u64 j = 0; j < J; ++j) acc = acc + cv[(u64)cross[p * J + j] * D + c];
        v[e] = acc;
    }
}
