// kmeans.cu — batched k-means steps for TWIN-V2 clustering (SPEC §4.3). Compiled with
// --fmad=false: every kernel here must round exactly like src/backend/cpu/kmeans.rs.
//
// A batch holds P independent problems. points [N, dim] f32 problem by problem,
// offsets [P+1] (problem p owns points offsets[p]..offsets[p+1]), coffs [P+1] prefix sums of k
// (problem p owns centroid rows coffs[p]..coffs[p+1]), centroids [Σk, dim] f32,
// assign [N] u32 local centroid index (0..k_p). Every problem has 1 ≤ k_p ≤ n_p
// (check::kmeans), so no segment is empty and the binary searches below always land.
//
// kmeans_assign_fwd: one thread per point, 256 per block, grid ceil(N/256).
//   d_j = Σ_t (x_t - c_t)^2 in f32, t in order, with explicit __fsub_rn/__fmul_rn/__fadd_rn;
//   nearest = first j with the strictly smallest d_j (ties to the lower index). Bit-identical
//   to the CPU. Centroid reads are warp-uniform (broadcast) when a warp stays in one problem.
// kmeans_update_fwd: one block per centroid (grid Σk), blockDim a multiple of 32 (host picks
//   min(256, round_up(dim, 32))); thread t owns dimension t (loops over dim in blockDim steps).
//   Each warp scans the problem's assignments 32 at a time with a ballot and adds the members'
//   coordinates in point order (ascending bits) in f64: deterministic, no float atomics, the
//   same sum as the CPU. mean = (float)(sum / count); a centroid with no member keeps its
//   previous value (updated in place: a block reads and writes only its own centroid row).
// kmeans_changed_fwd: one thread per point; changed[p] = 1 when any assignment of problem p
//   differs between two iterations (benign same-value stores).
// kmeans_converge_fwd: one thread per problem, after changed: a problem not yet done counts the
//   iteration just run and is done when none of its assignments changed; changed[] is cleared
//   for the next round. With it the Lloyd loop runs on the device without the host (no flag
//   downloads per iteration).
// done [P] (assign, update): a problem marked done is skipped. A done problem is a fixed point of
//   update + assign (the host loop keeps iterating it and gets the same bits), so skipping it
//   changes no result; the standalone ops pass an all-zero done.

typedef unsigned int u32;
typedef unsigned long long u64;

struct KmeansParams {
    u32 n_points;    // N
    u32 dim;         // coordinates per point
    u32 n_problems;  // P
    u32 total_k;     // Σk
};

// Largest s in [0, n_seg) with offs[s] <= i, for offs[0] = 0 <= i < offs[n_seg], segments non-empty.
__device__ __forceinline__ u32 find_segment(const u32* __restrict__ offs, u32 n_seg, u32 i) {
    u32 lo = 0, hi = n_seg;  // invariant: offs[lo] <= i < offs[hi]
    while (hi - lo > 1) {
        const u32 mid = lo + (hi - lo) / 2;
        if (offs[mid] <= i) lo = mid; else hi = mid;
    }
    return lo;
}

extern "C" __global__ void __launch_bounds__(256)
kmeans_assign_fwd(const KmeansParams p, const float* __restrict__ points, const u32* __restrict__ offsets,
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

extern "C" __global__ void __launch_bounds__(256)
kmeans_update_fwd(const KmeansParams p, const float* __restrict__ points, const u32* __restrict__ offsets,
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
