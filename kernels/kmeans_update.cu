// kmeans_update.cu — k-means update v2 (issue 13 item 2; SPEC §4.3): the centroid update of
// kernels/kmeans.cu's batches, bit-identical to src/backend/cpu/kmeans.rs::update and to
// kmeans_update_fwd_v1 (v1), from a stable counting sort by assignment instead of v1's scan of the
// problem's assignments once per centroid. Compiled with --fmad=false like kmeans.cu.
// KmeansVersion::V2 (the default) runs it with kmeans_assign_fwd_v2; TWIN_KMEANS=v1 (or
// CudaBackend::set_kmeans_version) runs v1 of both.
//
// Shapes as in kmeans.cu: points [N, dim] f32 problem by problem, offsets [P+1], coffs [P+1]
// (prefix sums of k), assign [N] u32 local centroid index (< k_p), centroids [Σk, dim] f32
// (updated in place), done [P] (a done problem is skipped by every kernel here: it is a fixed
// point, see kmeans.cu). Every problem has 1 <= k_p <= n_p. Scratch, allocated once per batch
// and reused every Lloyd round: plan [2P+2], mat [Σk + N/4], kst [2Σk], order [N] u32.
//
// Work items: a problem of n points and k centroids is cut into S = max(1, min(n/2048,
// n/(4k))) slices of ceil(n/S) consecutive points; an item is one slice, run by one warp (8 per
// 256-thread block; grid ceil((P + N/2048)/8), items past plan[P] leave). mat holds a count per
// (centroid, slice), centroid-major, problem by problem: Σ S·k <= Σk + N/4 (S·k <= max(k, n/4)).
// Many problems share every launch; one large problem spreads over many items.
//   _plan (once per batch; one block of 256): prefix sums over problems of S (plan[0..P]) and
//     of S·k (plan[P+1..2P+1]), scanned as one u64.
//   _count: per item, members per centroid (shared-memory atomics on 512 counters per warp;
//     with k > 512 the item's own mat entries are the counters).
//   _scan (a warp per problem, grid ceil(P/8)): the problem's mat scanned exclusively from
//     offsets[p], in place: where each (centroid, slice) starts in order; kst[coffs[p] + j] and
//     kst[Σk + coffs[p] + j] = where centroid j's members start and end (read without a search).
//   _scatter: per item, 32 points a step in point order; lanes of one centroid find each other
//     by ballots (a round per distinct centroid), take cursor + rank among them, the last one
//     moves the cursor: order[offsets[p]..offsets[p+1]) lists problem p's points by centroid,
//     each centroid's members in point order (a stable counting sort).
//   kmeans_update_fwd_v2: a thread per (centroid j, dimension t), grid ceil(Σk·dim/256), for
//     centroids below 1,024 members: sums order[kst[j]..kst[Σk+j]) in that order in f64, 32
//     values loaded ahead; mean = (float)(sum / count); no member keeps the previous value.
//   _big: centroids of >= 1,024 members when dim <= 256: blocks of 256 over the centroids (grid
//     min(Σk, 1024)); rounds of 8192/dim (<= 1024) member rows gathered into 32 KiB of shared
//     memory by all threads (every load of a round issued first), then thread t < dim adds
//     dimension t of each row in order in f64: the same sum, with many loads in flight where a
//     few thousand sequential sums (one large problem) would wait on memory latency.
// Traffic per round: assignments read twice (count, scatter), order written once and read
// once, points read once, centroids written once; v1 reads the assignments k times.

#include "common.cuh"

struct KmeansParams {  // the same struct as kmeans.cu's
    u32 n_points;    // N
    u32 dim;         // coordinates per point
    u32 n_problems;  // P
    u32 total_k;     // Σk
};

#define KM_U2_SLICE 2048u  // points per work item (slice) of a large problem
#define KM_U2_WARPS 8u     // work items (warps) per 256-thread block
#define KM_U2_KW 512u      // cursors per warp in shared memory; more centroids: in `mat` (global)
#define KM_U2_SCAN 16u     // matrix entries per lane per scan pass
#define KM_U2_LOADS 32u    // member values loaded ahead per thread in the sum
#define KM_U2_BIG 1024u    // members from which a centroid is summed by _big
#define KM_U2_STAGE 8192u  // floats of member rows staged per round by _big (32 KiB)
#define KM_U2_ROWS 1024u   // at most this many member rows a round in _big

// Slices of a problem of n points and k centroids: max(1, min(n / 2048, n / (4k))), so that
// slices·k <= max(k, n / 4) and the batch's matrix fits Σk + N/4 words.
__device__ __forceinline__ u32 km_u2_slices(u32 n, u32 k) {
    u32 s = n / KM_U2_SLICE;
    const u32 by_k = (n / 4u) / k;
    if (by_k < s) s = by_k;
    return s > 0u ? s : 1u;
}

// The warp's work item: slice q of problem prob, points [a, b); its count/cursor of centroid j is
// mat[mbase + j * slices]. False when the warp has no item or the problem is done.
struct KmU2Item {
    u32 prob, slices, k, a, b;
    u64 mbase;
};

__device__ __forceinline__ bool km_u2_item(const KmeansParams& p, const u32* __restrict__ offsets, const u32* __restrict__ coffs,
                                           const u32* __restrict__ plan, const u32* __restrict__ done, KmU2Item& it) {
    const u32 item = blockIdx.x * KM_U2_WARPS + (threadIdx.x >> 5);
    if (item >= plan[p.n_problems]) return false;
    const u32 prob = find_segment(plan, p.n_problems, item);  // every problem has >= 1 slice
    if (done[prob] != 0u) return false;
    const u32 q = item - plan[prob];
    it.prob = prob;
    it.slices = plan[prob + 1] - plan[prob];
    it.k = coffs[prob + 1] - coffs[prob];
    const u32 s = offsets[prob], e = offsets[prob + 1], n = e - s;
    const u64 len = (u64)(n / it.slices) + (n % it.slices != 0u ? 1u : 0u);
    const u64 a = s + (u64)q * len, b = a + len;
    it.a = a < e ? (u32)a : e;
    it.b = b < e ? (u32)b : e;
    it.mbase = (u64)plan[p.n_problems + 1 + prob] + q;
    return true;
}

// One block of 256 threads: plan[0..P] = work-item offsets (prefix of slices), plan[P+1..2P+1]
// = matrix offsets (prefix of slices·k). Both scanned as one u64 (items << 32 | entries); the
// host checks that the entries total fits in 32 bits.
extern "C" __global__ void __launch_bounds__(256)
kmeans_update_fwd_v2_plan(const KmeansParams p, const u32* __restrict__ offsets, const u32* __restrict__ coffs,
                          u32* __restrict__ plan) {
    __shared__ u64 warp_tot[8];
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    u64 carry = 0;
    for (u32 base = 0; base < p.n_problems; base += 256u) {
        const u32 q = base + threadIdx.x;
        u64 v = 0;
        if (q < p.n_problems) {
            const u32 k = coffs[q + 1] - coffs[q];
            const u32 s = km_u2_slices(offsets[q + 1] - offsets[q], k);
            v = ((u64)s << 32) | (u64)(s * k);
        }
        u64 incl = v;
        for (u32 d = 1; d < 32u; d <<= 1) {
            const u64 o = __shfl_up_sync(FULL_MASK, incl, d);
            if (lane >= d) incl += o;
        }
        if (lane == 31u) warp_tot[warp] = incl;
        __syncthreads();
        u64 before = 0, total = 0;
        for (u32 w = 0; w < 8u; ++w) {
            const u64 t = warp_tot[w];
            if (w < warp) before += t;
            total += t;
        }
        if (q < p.n_problems) {
            const u64 excl = carry + before + incl - v;
            plan[q] = (u32)(excl >> 32);
            plan[p.n_problems + 1 + q] = (u32)excl;
        }
        carry += total;
        __syncthreads();  // warp_tot is rewritten by the next round
    }
    if (threadIdx.x == 0) {
        plan[p.n_problems] = (u32)(carry >> 32);
        plan[2 * p.n_problems + 1] = (u32)carry;
    }
}

// A warp per work item: mat[mbase + j·slices] = members of centroid j in the slice.
extern "C" __global__ void __launch_bounds__(256)
kmeans_update_fwd_v2_count(const KmeansParams p, const u32* __restrict__ offsets, const u32* __restrict__ coffs,
                           const u32* __restrict__ assign, const u32* __restrict__ plan, u32* __restrict__ mat,
                           const u32* __restrict__ done) {
    __shared__ u32 cnt_s[KM_U2_WARPS * KM_U2_KW];
    KmU2Item it;
    if (!km_u2_item(p, offsets, coffs, plan, done, it)) return;  // warp-uniform
    const u32 lane = threadIdx.x & 31u;
    const bool local = it.k <= KM_U2_KW;
    u32* cnt = local ? cnt_s + (threadIdx.x >> 5) * KM_U2_KW : mat + it.mbase;
    const u64 stride = local ? 1u : it.slices;
    for (u32 j = lane; j < it.k; j += 32u) cnt[j * stride] = 0u;
    __syncwarp();
    for (u32 i = it.a + lane; i < it.b; i += 32u) atomicAdd(&cnt[assign[i] * stride], 1u);
    __syncwarp();
    if (local) {
        for (u32 j = lane; j < it.k; j += 32u) mat[it.mbase + (u64)j * it.slices] = cnt[j];
    }
}

// A warp per problem: the problem's matrix (centroid-major, slices in order) scanned exclusively
// from offsets[p], in place: entry (j, q) becomes where slice q's members of centroid j start in
// `order`; kst[coffs[p] + j] = entry (j, 0), where centroid j's members start, and
// kst[Σk + coffs[p] + j] where they end (the next centroid's start, or the problem's end).
extern "C" __global__ void __launch_bounds__(256)
kmeans_update_fwd_v2_scan(const KmeansParams p, const u32* __restrict__ offsets, const u32* __restrict__ coffs,
                          const u32* __restrict__ plan, u32* __restrict__ mat, u32* __restrict__ kst,
                          const u32* __restrict__ done) {
    const u32 prob = blockIdx.x * KM_U2_WARPS + (threadIdx.x >> 5);
    if (prob >= p.n_problems || done[prob] != 0u) return;  // warp-uniform
    const u32 lane = threadIdx.x & 31u;
    const u32 slices = plan[prob + 1] - plan[prob], k = coffs[prob + 1] - coffs[prob];
    const u32 len = slices * k;
    u32* seg = mat + plan[p.n_problems + 1 + prob];
    u32* ks = kst + coffs[prob];                // starts
    u32* ke = kst + p.total_k + coffs[prob];    // ends
    u32 carry = offsets[prob];
    for (u32 c0 = 0; c0 < len; c0 += 32u * KM_U2_SCAN) {
        const u32 x0 = c0 + lane * KM_U2_SCAN;
        u32 v[KM_U2_SCAN];
        u32 tot = 0;
#pragma unroll
        for (u32 r = 0; r < KM_U2_SCAN; ++r) {
            v[r] = x0 + r < len ? seg[x0 + r] : 0u;
            tot += v[r];
        }
        const u32 incl = warp_incl_scan(tot, lane);
        u32 run = carry + incl - tot;
#pragma unroll
        for (u32 r = 0; r < KM_U2_SCAN; ++r) {
            const u32 x = x0 + r;
            if (x < len) {
                seg[x] = run;
                if (x % slices == 0u) {
                    const u32 j = x / slices;
                    ks[j] = run;
                    if (j > 0u) ke[j - 1u] = run;
                }
            }
            run += v[r];
        }
        carry += __shfl_sync(FULL_MASK, incl, 31);
    }
    if (lane == 0u) ke[k - 1u] = offsets[prob + 1];
}

// A warp per work item, 32 points a step in point order: lanes with the same centroid find each
// other by ballots (one round per distinct centroid), take cursor + rank among them, and the last
// of them advances the cursor: order[s_p..e_p) lists the problem's points by centroid, each
// centroid's members in point order (a stable counting sort).
extern "C" __global__ void __launch_bounds__(256)
kmeans_update_fwd_v2_scatter(const KmeansParams p, const u32* __restrict__ offsets, const u32* __restrict__ coffs,
                             const u32* __restrict__ assign, const u32* __restrict__ plan, u32* __restrict__ mat,
                             u32* __restrict__ order, const u32* __restrict__ done) {
    __shared__ u32 cur_s[KM_U2_WARPS * KM_U2_KW];
    KmU2Item it;
    if (!km_u2_item(p, offsets, coffs, plan, done, it)) return;  // warp-uniform
    const u32 lane = threadIdx.x & 31u;
    const bool local = it.k <= KM_U2_KW;
    u32* cur = local ? cur_s + (threadIdx.x >> 5) * KM_U2_KW : mat + it.mbase;
    const u64 stride = local ? 1u : it.slices;
    if (local) {
        for (u32 j = lane; j < it.k; j += 32u) cur[j] = mat[it.mbase + (u64)j * it.slices];
    }
    __syncwarp();
    for (u32 base = it.a; base < it.b; base += 32u) {
        const u32 i = base + lane;
        const bool valid = i < it.b;
        const u32 key = valid ? assign[i] : 0xffffffffu;  // assignments are < k_p <= N < 2^32 - 1
        u32 todo = __ballot_sync(FULL_MASK, valid), peers = 0u;
        while (todo != 0u) {  // warp-uniform
            const u32 lk = __shfl_sync(FULL_MASK, key, __ffs((int)todo) - 1);
            const u32 m = __ballot_sync(FULL_MASK, key == lk);
            if (key == lk) peers = m;
            todo &= ~m;
        }
        u32 pos = 0;
        if (valid) {
            pos = cur[key * stride] + (u32)__popc(peers & ((1u << lane) - 1u));
            order[pos] = i;
        }
        __syncwarp();  // every peer read the cursor before the last one moves it
        if (valid && lane == 31u - (u32)__clz((int)peers)) cur[key * stride] = pos + 1u;
        __syncwarp();
    }
}

// Centroid j's members are order[kst[j] .. kst[Σk + j]), as _scan wrote them this round for a
// problem not done. For a done problem they are an earlier round's (or poison, if never
// scanned): tests on them only reject, and km_u2_active (a binary search) decides.
__device__ __forceinline__ bool km_u2_active(const KmeansParams& p, const u32* __restrict__ coffs, const u32* __restrict__ done, u32 j) {
    return done[find_segment(coffs, p.n_problems, j)] == 0u;
}

// A centroid this large is summed by _big (a block, member rows staged), not a thread per value.
__device__ __forceinline__ bool km_u2_big(const KmeansParams& p, u32 count) {
    return count >= KM_U2_BIG && p.dim <= KM_U2_STAGE / 32u;
}

// A thread per (centroid j, dimension t), grid ceil(Σk·dim / 256), for centroids below
// KM_U2_BIG members: sum order[st..en) in that (point) order in f64, KM_U2_LOADS values loaded
// ahead; mean = (float)(sum / count); no member: unchanged.
extern "C" __global__ void __launch_bounds__(256)
kmeans_update_fwd_v2(const KmeansParams p, const float* __restrict__ points,
                     const u32* __restrict__ coffs, const u32* __restrict__ kst, const u32* __restrict__ order,
                     float* __restrict__ centroids, const u32* __restrict__ done) {
    const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (u64)p.total_k * p.dim) return;
    const u32 j = (u32)(g / p.dim), t = (u32)(g % p.dim);
    const u32 st = kst[j], en = kst[p.total_k + j];
    if (st == en || km_u2_big(p, en - st) || !km_u2_active(p, coffs, done, j)) return;
    double sum = 0.0;
    u32 m = st;
    for (; en - m >= KM_U2_LOADS; m += KM_U2_LOADS) {  // full batches: every load issued first
        u32 idx[KM_U2_LOADS];
        float v[KM_U2_LOADS];
#pragma unroll
        for (u32 r = 0; r < KM_U2_LOADS; ++r) idx[r] = order[m + r];
#pragma unroll
        for (u32 r = 0; r < KM_U2_LOADS; ++r) v[r] = points[(u64)idx[r] * p.dim + t];
#pragma unroll
        for (u32 r = 0; r < KM_U2_LOADS; ++r) sum = sum + (double)v[r];
    }
    if (m < en) {  // the last < KM_U2_LOADS members, predicated
        float v[KM_U2_LOADS];
#pragma unroll
        for (u32 r = 0; r < KM_U2_LOADS; ++r) v[r] = m + r < en ? points[(u64)order[m + r] * p.dim + t] : 0.0f;
#pragma unroll
        for (u32 r = 0; r < KM_U2_LOADS; ++r) {
            if (m + r < en) sum = sum + (double)v[r];
        }
    }
    centroids[(u64)j * p.dim + t] = (float)(sum / (double)(en - st));
}

// Centroids of >= KM_U2_BIG members (dim <= 256): blocks of 256 stride over the centroids
// (grid min(Σk, 1024)); per centroid, rounds of KM_U2_STAGE / dim member rows gathered into
// shared memory by all threads (coalesced, many loads in flight), then thread t < dim adds
// dimension t of each row in order in f64. The same sum as the per-thread kernel.
extern "C" __global__ void __launch_bounds__(256)
kmeans_update_fwd_v2_big(const KmeansParams p, const float* __restrict__ points,
                         const u32* __restrict__ coffs, const u32* __restrict__ kst, const u32* __restrict__ order,
                         float* __restrict__ centroids, const u32* __restrict__ done) {
    __shared__ float rows[KM_U2_STAGE];
    __shared__ u32 ids[KM_U2_ROWS];
    const u32 per = KM_U2_STAGE / p.dim < KM_U2_ROWS ? KM_U2_STAGE / p.dim : KM_U2_ROWS;  // >= 32 rows a round
    for (u32 j = blockIdx.x; j < p.total_k; j += gridDim.x) {
        const u32 st = kst[j], en = kst[p.total_k + j];
        if (!km_u2_big(p, en - st) || !km_u2_active(p, coffs, done, j)) continue;  // block-uniform
        double sum = 0.0;
        for (u32 m0 = st; m0 < en; m0 += per) {
            const u32 nr = en - m0 < per ? en - m0 : per, total = nr * p.dim;
            __syncthreads();  // the previous round's rows and ids are consumed
            for (u32 r = threadIdx.x; r < nr; r += 256u) ids[r] = order[m0 + r];
            __syncthreads();
            float v[KM_U2_STAGE / 256u];  // blockDim is 256: every load of the round issued first
#pragma unroll
            for (u32 q = 0; q < KM_U2_STAGE / 256u; ++q) {
                const u32 e = q * 256u + threadIdx.x, r = e / p.dim;
                v[q] = e < total ? points[(u64)ids[r] * p.dim + (e - r * p.dim)] : 0.0f;
            }
#pragma unroll
            for (u32 q = 0; q < KM_U2_STAGE / 256u; ++q) {
                const u32 e = q * 256u + threadIdx.x;
                if (e < total) rows[e] = v[q];
            }
            __syncthreads();
            if (threadIdx.x < p.dim) {
                for (u32 r = 0; r < nr; ++r) sum = sum + (double)rows[r * p.dim + threadIdx.x];
            }
        }
        if (threadIdx.x < p.dim) centroids[(u64)j * p.dim + threadIdx.x] = (float)(sum / (double)(en - st));
    }
}
