// kmeans.cu — batched k-means steps for TWIN-V2 clustering (SPEC §4.3). Compiled with
// --fmad=false: every kernel here must round exactly like src/backend/cpu/kmeans.rs.
//
// A batch holds P independent problems. points [N, dim] f32 problem by problem,
// offsets [P+1] (problem p owns points offsets[p]..offsets[p+1]), coffs [P+1] prefix sums of k
// (problem p owns centroid rows coffs[p]..coffs[p+1]), centroids [Σk, dim] f32,
// assign [N] u32 local centroid index (0..k_p). Every problem has 1 ≤ k_p ≤ n_p
// (check::kmeans), so no segment is empty and the binary searches below always land.
//
// kmeans_assign_fwd_v1: one thread per point, 256 per block, grid ceil(N/256).
//   d_j = Σ_t (x_t - c_t)^2 in f32, t in order, with explicit __fsub_rn/__fmul_rn/__fadd_rn;
//   nearest = first j with the strictly smallest d_j (ties to the lower index). Bit-identical
//   to the CPU. Centroid reads are warp-uniform (broadcast) when a warp stays in one problem.
// kmeans_assign_fwd_v2 (dim == 64 only; the host runs v1 for other dims): the same arithmetic
//   and tie rule as v1, bit-identical, with the reads v1 repeats removed. One thread per point,
//   256 per block, grid ceil(N/256). The block's points span problems p0..p1 (contiguous), whose
//   centroid rows coffs[p0]..coffs[p1+1] are contiguous too: when they number ≤ KM_V2_ROWS
//   (160 rows, 40 KiB of static shared memory) the block stages them in shared memory with
//   coalesced loads, else it reads them from global memory as v1 does. Each thread holds its
//   point's 64 coordinates in registers (loaded once as float4) instead of re-reading the row
//   for every centroid. Centroid reads are broadcasts when a warp stays in one problem.
//   Predicted (H200, N = 10^6, k = 63): 256 MB of points read once + centroids from shared
//   memory; 4·N·k·64 = 16 GFLOP-equivalent f32 ops (no FMA: --fmad=false) ≈ 0.25-0.5 ms on
//   CUDA cores, against v1's ~4-15 ms (L1-bound re-reads). Not measured (no GPU lent yet).
// kmeans_update_fwd_v1: one block per centroid (grid Σk), blockDim a multiple of 32 (host picks
//   min(256, round_up(dim, 32))); thread t owns dimension t (loops over dim in blockDim steps).
//   Each warp scans the problem's assignments 32 at a time with a ballot and adds the members'
//   coordinates in point order (ascending bits) in f64: deterministic, no float atomics, the
//   same sum as the CPU. mean = (float)(sum / count); a centroid with no member keeps its
//   previous value (updated in place: a block reads and writes only its own centroid row).
//   Cost: every centroid's block reads all its problem's assignments (N·k words per dim block).
// kmeans_update_fwd_v2 and its passes (KmeansVersion::V2, the default, with assign v2):
//   kernels/kmeans_update.cu.
// kmeans_changed_fwd: one thread per point; changed[p] = 1 when any assignment of problem p
//   differs between two iterations (benign same-value stores).
// kmeans_converge_fwd: one thread per problem, after changed: a problem not yet done counts the
//   iteration just run and is done when none of its assignments changed; changed[] is cleared
//   for the next round. With it the Lloyd loop runs on the device without the host (no flag
//   downloads per iteration).
// kmeans_seed_fwd: k-means++ (SPEC §4.3) for every problem, bit-identical to
//   cpu::kmeans::seed_one with the problem's SplitMix64 stream seeds[p] (u64 as lo, hi words):
//   one block per problem, 256 threads. Thread 0 draws (first = below(n); then per pick the
//   D² draw: total = Σ_i (double)mind[i] summed sequentially in point order, u = next_f64 ·
//   total, the first point whose running sum passes u among points with mind > 0, else the last
//   such point; a zero total draws below(n)); all threads copy the chosen point into its
//   centroid row and update mind[i] = min(mind[i], Σ_t (x_t - c_t)² in t order, rn ops) in
//   parallel. The sequential sum keeps the CPU's f64 order: it costs n per pick on one thread,
//   which the many problems of a level run side by side. mind [N] is scratch (written first).
// done [P] (assign, update v1/v2): a problem marked done is skipped. A done problem is a fixed point of
//   update + assign (the host loop keeps iterating it and gets the same bits), so skipping it
//   changes no result; the standalone ops pass an all-zero done.

#include "common.cuh"

struct KmeansParams {
    u32 n_points;    // N
    u32 dim;         // coordinates per point
    u32 n_problems;  // P
    u32 total_k;     // Σk
};

extern "C" __global__ void __launch_bounds__(256)
kmeans_assign_fwd_v1(const KmeansParams p, const float* __restrict__ points, const u32* __restrict__ offsets,
                  const u32* __restrict__ coffs, const float* __restrict__ centroids, u32* __restrict__ assign,
                  const u32* __restrict__ done) {
    const u32 i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n_points) return;
    const u32 prob = find_segment(offsets, p.n_problems, i);
    if (done[prob] != 0u) return;
    const u32 c0 = coffs[prob], c1 = coffs[prob + 1];
    const float* x = points + (u64)i * p.dim;
    u32 best = 0;
    float best_d = __int_as_float(0x7f800000);  // +inf
    for (u32 j = c0; j < c1; ++j) {
        const float* c = centroids + (u64)j * p.dim;
        float acc = 0.0f;
        for (u32 t = 0; t < p.dim; ++t) {
            const float d = __fsub_rn(x[t], c[t]);
            acc = __fadd_rn(acc, __fmul_rn(d, d));
        }
        if (acc < best_d) {
            best_d = acc;
            best = j - c0;
        }
    }
    assign[i] = best;
}

#define KM_V2_DIM 64
#define KM_V2_ROWS 160

extern "C" __global__ void __launch_bounds__(256)
kmeans_assign_fwd_v2(const KmeansParams p, const float* __restrict__ points, const u32* __restrict__ offsets,
                     const u32* __restrict__ coffs, const float* __restrict__ centroids, u32* __restrict__ assign,
                     const u32* __restrict__ done) {
    __shared__ float cs[KM_V2_ROWS * KM_V2_DIM];
    __shared__ u32 rows[2];
    const u32 first = blockIdx.x * blockDim.x;  // < n_points: the grid is ceil(N / 256)
    if (threadIdx.x == 0) {
        const u32 end = first + blockDim.x;
        const u32 last = (end < p.n_points ? end : p.n_points) - 1u;
        rows[0] = coffs[find_segment(offsets, p.n_problems, first)];
        rows[1] = coffs[find_segment(offsets, p.n_problems, last) + 1u];
    }
    __syncthreads();
    const u32 r0 = rows[0], n_rows = rows[1] - rows[0];
    const bool staged = n_rows <= KM_V2_ROWS;
    if (staged) {
        const float* src = centroids + (u64)r0 * KM_V2_DIM;
        for (u32 w = threadIdx.x; w < n_rows * KM_V2_DIM; w += blockDim.x) cs[w] = src[w];
    }
    __syncthreads();
    const u32 i = first + threadIdx.x;
    if (i >= p.n_points) return;
    const u32 prob = find_segment(offsets, p.n_problems, i);
    if (done[prob] != 0u) return;
    float x[KM_V2_DIM];
    const float4* row = reinterpret_cast<const float4*>(points + (u64)i * KM_V2_DIM);
#pragma unroll
    for (u32 q = 0; q < KM_V2_DIM / 4; ++q) {
        const float4 v = row[q];
        x[4 * q] = v.x;
        x[4 * q + 1] = v.y;
        x[4 * q + 2] = v.z;
        x[4 * q + 3] = v.w;
    }
    const u32 c0 = coffs[prob], c1 = coffs[prob + 1];
    const float* cbase = staged ? cs + (u64)(c0 - r0) * KM_V2_DIM : centroids + (u64)c0 * KM_V2_DIM;
    u32 best = 0;
    float best_d = __int_as_float(0x7f800000);  // +inf
    for (u32 j = 0; j < c1 - c0; ++j) {
        const float* c = cbase + (u64)j * KM_V2_DIM;
        float acc = 0.0f;
#pragma unroll
        for (u32 t = 0; t < KM_V2_DIM; ++t) {
            const float d = __fsub_rn(x[t], c[t]);
            acc = __fadd_rn(acc, __fmul_rn(d, d));
        }
        if (acc < best_d) {
            best_d = acc;
            best = j;
        }
    }
    assign[i] = best;
}

extern "C" __global__ void __launch_bounds__(256)
kmeans_update_fwd_v1(const KmeansParams p, const float* __restrict__ points, const u32* __restrict__ offsets,
                  const u32* __restrict__ coffs, const u32* __restrict__ assign, float* __restrict__ centroids,
                  const u32* __restrict__ done) {
    const u32 j = blockIdx.x;  // global centroid row
    const u32 prob = find_segment(coffs, p.n_problems, j);
    if (done[prob] != 0u) return;  // block-uniform: every thread of the block leaves
    const u32 local = j - coffs[prob];
    const u32 s = offsets[prob], e = offsets[prob + 1];
    const u32 lane = threadIdx.x & 31u;
    for (u32 t0 = 0; t0 < p.dim; t0 += blockDim.x) {
        const u32 t = t0 + threadIdx.x;
        const bool active = t < p.dim;
        double sum = 0.0;
        u64 count = 0;
        // Every lane runs the same number of iterations: the ballot below needs the full warp.
        for (u32 base = s; base < e; base += 32) {
            const u32 i = base + lane;
            const bool member = (i < e) && (assign[i] == local);
            u32 mask = __ballot_sync(0xffffffffu, member);
            count += (u64)__popc(mask);
            while (mask != 0u) {
                const u32 b = (u32)(__ffs(mask) - 1);
                mask &= mask - 1u;
                if (active) sum = sum + (double)points[(u64)(base + b) * p.dim + t];
            }
        }
        if (active && count > 0) {
            centroids[(u64)j * p.dim + t] = (float)(sum / (double)count);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
kmeans_changed_fwd(const KmeansParams p, const u32* __restrict__ offsets, const u32* __restrict__ old_assign,
                   const u32* __restrict__ new_assign, u32* __restrict__ changed) {
    const u32 i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n_points) return;
    if (old_assign[i] != new_assign[i]) {
        changed[find_segment(offsets, p.n_problems, i)] = 1u;
    }
}

extern "C" __global__ void __launch_bounds__(256)
kmeans_converge_fwd(const KmeansParams p, u32* __restrict__ changed, u32* __restrict__ done, u32* __restrict__ iterations) {
    const u32 q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= p.n_problems) return;
    if (done[q] == 0u) {
        iterations[q] += 1u;
        if (changed[q] == 0u) done[q] = 1u;
    }
    changed[q] = 0u;
}

__device__ __forceinline__ u64 splitmix_next(u64* state) {
    *state += 0x9E3779B97F4A7C15ull;
    u64 z = *state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

extern "C" __global__ void __launch_bounds__(256)
kmeans_seed_fwd(const KmeansParams p, const float* __restrict__ points, const u32* __restrict__ offsets,
                const u32* __restrict__ coffs, const u32* __restrict__ seeds, float* __restrict__ mind,
                float* __restrict__ centroids) {
    const u32 prob = blockIdx.x;
    const u32 s = offsets[prob], e = offsets[prob + 1];
    const u32 n = e - s;
    const u32 c0 = coffs[prob], k = coffs[prob + 1] - coffs[prob];
    __shared__ u32 pick;
    __shared__ u64 state;
    if (threadIdx.x == 0) {
        state = (u64)seeds[2 * prob] | ((u64)seeds[2 * prob + 1] << 32);
        pick = (u32)__umul64hi(splitmix_next(&state), (u64)n);
    }
    __syncthreads();
    for (u32 c = 0; c < k; ++c) {
        const u32 chosen = s + pick;
        for (u32 t = threadIdx.x; t < p.dim; t += blockDim.x) {
            centroids[(u64)(c0 + c) * p.dim + t] = points[(u64)chosen * p.dim + t];
        }
        const float* cv = points + (u64)chosen * p.dim;
        for (u32 i = s + threadIdx.x; i < e; i += blockDim.x) {
            const float* x = points + (u64)i * p.dim;
            float acc = 0.0f;
            for (u32 t = 0; t < p.dim; ++t) {
                const float d = __fsub_rn(x[t], cv[t]);
                acc = __fadd_rn(acc, __fmul_rn(d, d));
            }
            if (c == 0 || acc < mind[i]) mind[i] = acc;
        }
        __syncthreads();  // mind complete; every thread has read `pick`
        if (c + 1 == k) break;
        if (threadIdx.x == 0) {
            double total = 0.0;
            for (u32 i = s; i < e; ++i) total = total + (double)mind[i];
            u32 next;
            if (total > 0.0) {
                const double u = (double)(splitmix_next(&state) >> 11) * (1.0 / 9007199254740992.0) * total;
                double cum = 0.0;
                u32 last_pos = 0;
                bool found = false;
                next = 0;
                for (u32 i = s; i < e; ++i) {
                    const float d = mind[i];
                    if (d > 0.0f) {
                        last_pos = i - s;
                        cum = cum + (double)d;
                        if (cum > u) {
                            next = i - s;
                            found = true;
                            break;
                        }
                    }
                }
                if (!found) next = last_pos;
            } else {
                next = (u32)__umul64hi(splitmix_next(&state), (u64)n);
            }
            pick = next;
        }
        __syncthreads();
    }
}
