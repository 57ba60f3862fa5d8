// gsu_train.cu — the training GSU (SPEC §5, step 2): score every long position against its
// sample's folded query, keep the top K per sample (SPEC §3.3's tie rule), write the finalists in
// sequence order and the row map. Reference: src/backend/cpu/gsu_train.rs (scores, select,
// fin_offsets, row_map); reached through DeviceOps::gsu_train_dev. Compiled with --fmad=false so
// the score rounds exactly like the CPU's (bit-identical).
//
// Shapes (SPEC letters): B samples, sample b owns long positions long_offsets[b]..long_offsets[b+1]
//   (L_b of them, n_long in all); H = 2 id + 2 sm; h heads; J cross features.
//   qbar [B, H] f32; tables item [·, id], author [·, id], topic [·, sm], duration [·, sm] f32;
//   cb [ΣV, h] f32 (read only when bias); per position feat [P, 4] u32 (item, author, topic,
//   duration rows), cross [P, J] u32 (rows of cb), log_n [P] f32; long_offsets, fin_offsets
//   [B+1] u32 (fin_offsets[b+1] - fin_offsets[b] = min(L_b, K), from the host's staging).
//   Outputs (every element written with `=`): scores [n_long] f32, sel [n_fin] u32 (the long
//   position of each finalist), map [map_len] u32 (map_len = n_long + tail).
//   Staging::twin_rows checked every id against its table / cb rows, the offsets, and
//   P + tail <= u32::MAX / 2; FeatTables::check each table's length <= u32::MAX. Products that
//   can pass 2^32 (position * width, row * width) are formed in 64 bits.
// Score of position p of sample b, in f32, exactly the reference's operations in its order:
//   dot = Σ_i x_h(p)[i] * qbar[b, i]   (from 0, i ascending over item | author | topic | duration)
//   bias: bs = Σ_j Σ_a cb[cross[p, j], a] (from 0, j outer, a inner);
//         score = (dot * q_scale + bs * inv_h) + log_n[p]      (inv_h = 1/h in f32, from the host)
//   else: score = dot * q_scale.
// Selection: position q beats p when key(q) > key(p), or the keys are equal and q > p, where key
//   is the order-preserving u32 of the score with -0 folded into +0: for non-NaN scores exactly
//   "the larger score wins, an equal score goes to the larger position" (the reference's order),
//   and a strict total order even with NaN, so exactly min(L_b, K) positions have rank < K and
//   the writes below stay inside the sample's finalist rows. When L_b <= K every position is kept.
//
// gsu_train_fwd: grid B blocks (block b = sample b), 256 threads, no dynamic shared memory.
//   (1) thread t scores positions lo + t, lo + t + 256, ... into `scores`; __syncthreads (the
//       block's global writes are visible to the block after the barrier).
//   (2) the sample's positions in chunks of 256 (a loop every thread of the block runs the same
//       number of times): thread t takes p = chunk + t; if L_b > K its rank = how many positions
//       of the sample beat it (the scan over the sample stops once it reaches K); kept iff
//       rank < K. A block-wide exclusive prefix count of the kept flags (ballot + popc per warp,
//       warp totals through shared memory) gives each kept position its finalist index
//       f = fin_offsets[b] + (kept in earlier chunks) + prefix: sel[f] = p, map[p] = f; a dropped
//       position gets map[p] = 0xFFFFFFFF (NOT_KEPT). Finalists so come out in ascending position.
//   Cost: O(L_b * K) to O(L_b^2) comparisons per sample (v1: correct first, no sort).
// gsu_train_map_tail_fwd: 1-D grid-stride over the tail (256 threads, grid min(ceil(tail / 256),
//   32 * SMs)): map[n_long + t] = n_fin + t (short rows and what the caller appends).
// Neither kernel is launched with nothing to write (n_long = 0, tail = 0). Versions: v1 only.

#include "common.cuh"

#define GSU_TRAIN_THREADS 256u
#define GSU_TRAIN_WARPS (GSU_TRAIN_THREADS / 32u)
#define NOT_KEPT 0xffffffffu

struct GsuTrainParams {
    u32 n_samples;  // B
    u32 id_w;       // id: item / author width
    u32 small_w;    // sm: topic / duration width
    u32 heads;      // h
    u32 n_cross;    // J
    u32 k;          // K
    u32 bias;       // 1: the bias form of the score
    float q_scale;
    float inv_h;  // 1/h rounded to f32
    u32 pad0;
    u32 pad1;
    u32 pad2;
};

struct GsuTrainTailParams {
    u32 n_long;
    u32 n_fin;
    u32 n_tail;  // map_len - n_long
    u32 pad0;
};

// dot + Σ_i row[i] * q[i], i ascending (the reference's running sum continued).
__device__ __forceinline__ float dot_into(float dot, const float* __restrict__ row, const float* __restrict__ q, u32 n) {
    for (u32 i = 0; i < n; ++i) dot = dot + row[i] * q[i];
    return dot;
}

// Order-preserving key of a score: larger score, larger key; -0 and +0 share one key.
__device__ __forceinline__ u32 score_key(float s) {
    u32 b = __float_as_uint(s);
    if (b == 0x80000000u) b = 0u;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

extern "C" __global__ void __launch_bounds__(256)
gsu_train_fwd(const GsuTrainParams P, const float* __restrict__ qbar, const float* __restrict__ t_item,
              const float* __restrict__ t_author, const float* __restrict__ t_topic, const float* __restrict__ t_dur,
              const float* __restrict__ cb, const u32* __restrict__ feat, const u32* __restrict__ cross,
              const float* __restrict__ log_n, const u32* __restrict__ long_offsets,
              const u32* __restrict__ fin_offsets, float* __restrict__ scores, u32* __restrict__ sel,
              u32* __restrict__ map) {
    __shared__ u32 warp_kept[GSU_TRAIN_WARPS];
    const u32 b = blockIdx.x;
    if (b >= P.n_samples) return;  // uniform over the block
    const u32 tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;
    const u64 lo = long_offsets[b], hi = long_offsets[b + 1];
    const u64 id = P.id_w, sm = P.small_w, J = P.n_cross, h = P.heads;
    const float* q = qbar + (u64)b * (2 * id + 2 * sm);

    // (1) scores
    for (u64 p = lo + tid; p < hi; p += GSU_TRAIN_THREADS) {
        const u32* f = feat + p * 4;
        float dot = 0.0f;
        dot = dot_into(dot, t_item + (u64)f[0] * id, q, (u32)id);
        dot = dot_into(dot, t_author + (u64)f[1] * id, q + id, (u32)id);
        dot = dot_into(dot, t_topic + (u64)f[2] * sm, q + 2 * id, (u32)sm);
        dot = dot_into(dot, t_dur + (u64)f[3] * sm, q + 2 * id + sm, (u32)sm);
        float s;
        if (P.bias) {
            float bs = 0.0f;
            for (u64 j = 0; j < J; ++j) {
                const float* row = cb + (u64)cross[p * J + j] * h;
                for (u64 a = 0; a < h; ++a) bs = bs + row[a];
            }
            s = (dot * P.q_scale + bs * P.inv_h) + log_n[p];
        } else {
            s = dot * P.q_scale;
        }
        scores[p] = s;
    }
    __syncthreads();

    // (2) top-K in position order
    const u64 len = hi - lo;
    const bool all = len <= (u64)P.k;
    const u32 fin0 = fin_offsets[b];
    u32 before = 0;  // finalists in earlier chunks
    for (u64 c0 = lo; c0 < hi; c0 += GSU_TRAIN_THREADS) {
        const u64 p = c0 + tid;
        bool keep = false;
        if (p < hi) {
            if (all) {
                keep = true;
            } else {
                const u32 kp = score_key(scores[p]);
                u32 rank = 0;
                for (u64 o = lo; o < hi && rank < P.k; ++o) {
                    const u32 ko = score_key(scores[o]);
                    rank += (ko > kp || (ko == kp && o > p)) ? 1u : 0u;
                }
                keep = rank < P.k;
            }
        }
        const u32 votes = __ballot_sync(FULL_MASK, keep ? 1 : 0);
        if (lane == 0) warp_kept[warp] = (u32)__popc(votes);
        __syncthreads();
        u32 prefix = (u32)__popc(votes & ((1u << lane) - 1u)), chunk = 0;
        for (u32 w = 0; w < GSU_TRAIN_WARPS; ++w) {
            const u32 n = warp_kept[w];
            prefix += w < warp ? n : 0u;
            chunk += n;
        }
        if (p < hi) {
            if (keep) {
                const u32 fi = fin0 + before + prefix;
                sel[fi] = (u32)p;
                map[p] = fi;
            } else {
                map[p] = NOT_KEPT;
            }
        }
        before += chunk;
        __syncthreads();  // warp_kept is rewritten by the next chunk
    }
}

extern "C" __global__ void __launch_bounds__(256)
gsu_train_map_tail_fwd(const GsuTrainTailParams P, u32* __restrict__ map) {
    for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < P.n_tail; t += (u64)gridDim.x * blockDim.x) {
        map[(u64)P.n_long + t] = P.n_fin + (u32)t;
    }
}
