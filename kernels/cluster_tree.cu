// cluster_tree.cu — the clustering tree's per-level bookkeeping on the device (SPEC §4.2,
// TWIN-V2 Algorithm 1's queue taken breadth first). Reference: src/backend/cpu/cluster_tree.rs
// (Backend::kmeans_tree); host side src/backend/cuda/cluster_tree.rs. The k-means of a level
// runs with kernels/kmeans.cu (seed, then Lloyd); these kernels prepare each level and split its
// problems into children. Integer work only: bit-identical to the reference by construction.
//
// Shapes (u32 unless said). N points of the job, R roots, P problems in the level (P ≤ N / γ,
// every problem holds at least γ points), n_p points and k_p centroids of problem p:
//   ids [N] item id of every job point; streams [2R] per-root u64 stream as lo, hi words;
//   table [T] the δ thresholds (cpu::cluster_tree::delta_table: δ(n) = 2 + #{j : table[j] ≤ n});
//   work [N_d] job point index of each level point, problem by problem, ascending in a problem;
//   offsets [P+1], root [P] the level's problems; coffs [P+1] prefix sums of k; seeds [2P];
//   assign [N_d] local centroid of each level point (kmeans.cu); iters [P] Lloyd iterations;
//   cnt, cidx, cbase [Σk] per centroid: its part's size, its child rank among the problem's
//     final (size < γ) or next-level children, and its first point among those children's points;
//   prob [5, stride] per problem (rows PR_*): final clusters, their points, next-level problems,
//     their points, forced flag; the scan turns the first four rows into absolute bases;
//   status [16] (ST_*): the next level's problem, point and centroid counts, the result's
//     cluster and member counts so far, and the summed TreeStats counters as u64 (lo, hi).
//   members [N], roff [N+1], rroot [N]: the final clusters, appended level after level.
//
// cluster_tree_prepare_fwd: one block of 256 threads. P = status[NEXT_P]; each thread takes a
//   contiguous run of ⌈P/256⌉ problems: k_p = δ(n_p) by binary search in the table, seeds[p] =
//   derive_seed_extend(streams[root[p]], depth) (level 0 also writes root[p] = p), then one
//   block scan gives coffs; status[NEXT_K] = Σk (the host sizes the centroids by it).
// cluster_tree_gather_fwd: 1-D grid-stride over N_d, 256 threads: lvl_ids[i] = ids[work[i]]
//   (level 0: work[i] = i, written here), the row ids copy_rows_fwd gathers the points by.
// cluster_tree_count_fwd: one warp per problem (8 per 256-thread block, grid ⌈P/8⌉). Counts the
//   points of each centroid (cnt, integer atomics), the non-empty parts; fewer than two makes
//   the problem forced: ⌈n/(γ-1)⌉ position chunks, all final. Else a warp scan over the centroids
//   in order gives each part its child rank and point base within its kind (final or next).
//   Writes the problem's prob column.
// cluster_tree_scan_fwd: one block of 256 threads, each a contiguous run of problems. Exclusive
//   prefix sums of the four counts over the level's problems (final ones offset by the result's
//   counts so far), written in place; updates status: result counts, next level's P and N, and
//   the stats Σ1, Σforced, Σ n(it+1), Σ n·it, Σ n·k(it+1) (u64, wrapping like release Rust).
// cluster_tree_scatter_fwd: one warp per problem (as count). Writes the problem's children:
//   final clusters (roff end, rroot) and next-level problems (noff end, nroot); then moves its
//   points 32 at a time: each lane's rank among earlier lanes of its part (32 shuffles), the
//   part's running cursor (cbase, read, __syncwarp, advanced by the part's last lane), so every
//   point keeps its order within its part (a stable scatter). Forced problems copy their points
//   in place order and cut roff every γ-1 points.
// No float math; every count fits u32 (N ≤ u32::MAX, check::tree_job).

#include "common.cuh"

// status words
enum {
    ST_NEXT_P = 0,
    ST_NEXT_N = 1,
    ST_NEXT_K = 2,
    ST_RES_C = 3,
    ST_RES_M = 4,
    ST_PROBLEMS = 6,  // u64 counters from here, two words each
    ST_FORCED = 8,
    ST_ASSIGN_PTS = 10,
    ST_UPDATE_PTS = 12,
    ST_ASSIGN_DIST = 14,
};
// rows of prob
enum { PR_FINAL = 0, PR_FINAL_PTS = 1, PR_NEXT = 2, PR_NEXT_PTS = 3, PR_FORCED = 4 };

struct TreePrepareParams {
    u32 n_table;  // entries of the δ table
    u32 depth;    // the level being prepared
    u32 first;    // level 0: root[p] = p
    u32 pad;
};

struct TreeGatherParams {
    u32 n_points;  // N_d
    u32 first;     // level 0: work[i] = i
};

struct TreeLevelParams {
    u32 n_problems;  // P
    u32 gamma;       // γ ≥ 2
    u32 stride;      // row stride of prob
    u32 pad;
};

__device__ __forceinline__ u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// δ(n) = 2 + #{j : table[j] ≤ n} (the table ascends).
__device__ __forceinline__ u32 delta_of(const u32* __restrict__ table, u32 n_table, u32 n) {
    u32 lo = 0, hi = n_table;  // first j with table[j] > n lies in [lo, hi]
    while (lo < hi) {
        const u32 mid = lo + (hi - lo) / 2;
        if (table[mid] <= n) lo = mid + 1; else hi = mid;
    }
    return 2u + lo;
}

// Exclusive prefix of v over the block's threads (blockDim.x a multiple of 32, at most 1024);
// *total gets the block's sum. Every thread of the block must call it.
__device__ u32 block_excl_scan(u32 v, u32* total) {
    __shared__ u32 wsum[33];
    const u32 lane = threadIdx.x & 31u, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const u32 incl = warp_incl_scan(v, lane);
    if (lane == 31u) wsum[wid] = incl;
    __syncthreads();
    if (wid == 0) {
        const u32 s = lane < nw ? wsum[lane] : 0u;
        const u32 si = warp_incl_scan(s, lane);
        if (lane < nw) wsum[lane] = si - s;
        if (lane == 31u) wsum[32] = si;
    }
    __syncthreads();
    const u32 out = wsum[wid] + incl - v;
    *total = wsum[32];
    __syncthreads();  // wsum is read above before any later call rewrites it
    return out;
}

// Sum of v over the block (every thread gets it). Every thread of the block must call it.
__device__ u64 block_sum64(u64 v) {
    __shared__ u64 wsum64[32];
    const u32 lane = threadIdx.x & 31u, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_u64(v);
    if (lane == 0u) wsum64[wid] = v;
    __syncthreads();
    u64 t = 0;
    for (u32 w = 0; w < nw; ++w) t += wsum64[w];
    __syncthreads();
    return t;
}

extern "C" __global__ void __launch_bounds__(256)
cluster_tree_prepare_fwd(const TreePrepareParams q, const u32* __restrict__ offsets, u32* __restrict__ root,
                         const u32* __restrict__ streams, const u32* __restrict__ table, u32* __restrict__ coffs,
                         u32* __restrict__ seeds, u32* __restrict__ status) {
    const u32 P = status[ST_NEXT_P];
    const u32 per = (P + blockDim.x - 1) / blockDim.x;
    const u32 p0 = umin32(threadIdx.x * per, P), p1 = umin32(p0 + per, P);
    const u64 salt = mix64((u64)q.depth + 0x9E3779B97F4A7C15ull);
    u32 sum = 0;
    for (u32 p = p0; p < p1; ++p) {
        sum += delta_of(table, q.n_table, offsets[p + 1] - offsets[p]);
        if (q.first) root[p] = p;
        const u32 r = q.first ? p : root[p];
        const u64 s = mix64(((u64)streams[2 * r] | ((u64)streams[2 * r + 1] << 32)) ^ salt);
        seeds[2 * p] = (u32)s;
        seeds[2 * p + 1] = (u32)(s >> 32);
    }
    u32 total;
    u32 run = block_excl_scan(sum, &total);
    for (u32 p = p0; p < p1; ++p) {
        run += delta_of(table, q.n_table, offsets[p + 1] - offsets[p]);
        coffs[p + 1] = run;
    }
    if (threadIdx.x == 0) {
        coffs[0] = 0;
        status[ST_NEXT_K] = total;
    }
}

extern "C" __global__ void __launch_bounds__(256)
cluster_tree_gather_fwd(const TreeGatherParams q, const u32* __restrict__ ids, u32* __restrict__ work,
                        u32* __restrict__ lvl_ids) {
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < q.n_points; e += (u64)gridDim.x * blockDim.x) {
        const u32 i = (u32)e;
        u32 w = i;
        if (q.first) work[i] = i; else w = work[i];
        lvl_ids[i] = ids[w];
    }
}

extern "C" __global__ void __launch_bounds__(256)
cluster_tree_count_fwd(const TreeLevelParams q, const u32* __restrict__ offsets, const u32* __restrict__ coffs,
                       const u32* __restrict__ assign, u32* __restrict__ cnt, u32* __restrict__ cidx,
                       u32* __restrict__ cbase, u32* __restrict__ prob) {
    const u32 p = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31u;
    if (p >= q.n_problems) return;  // warp-uniform
    const u32 s = offsets[p], e = offsets[p + 1], n = e - s;
    const u32 c0 = coffs[p], k = coffs[p + 1] - c0;
    for (u32 j = lane; j < k; j += 32) cnt[c0 + j] = 0;
    __syncwarp();
    for (u32 i = s + lane; i < e; i += 32) atomicAdd(&cnt[c0 + assign[i]], 1u);
    __syncwarp();
    u32 nonempty = 0;
    for (u32 j = lane; j < k; j += 32) nonempty += cnt[c0 + j] != 0u;
    nonempty = warp_sum_u32(nonempty);
    u32 f = 0, fm = 0, x = 0, xn = 0;
    const u32 forced = nonempty <= 1u;
    if (forced) {
        f = (n + q.gamma - 2) / (q.gamma - 1);
        fm = n;
    } else {
        for (u32 j0 = 0; j0 < k; j0 += 32) {  // warp-uniform trip count
            const u32 j = j0 + lane;
            const u32 m = j < k ? cnt[c0 + j] : 0u;
            const u32 is_f = m > 0u && m < q.gamma, is_x = m >= q.gamma;
            const u32 i_f = warp_incl_scan(is_f, lane), i_fm = warp_incl_scan(is_f * m, lane);
            const u32 i_x = warp_incl_scan(is_x, lane), i_xn = warp_incl_scan(is_x * m, lane);
            if (j < k) {
                cidx[c0 + j] = is_f ? f + i_f - 1u : x + i_x - is_x;
                cbase[c0 + j] = is_f ? fm + i_fm - m : xn + i_xn - is_x * m;
            }
            f += __shfl_sync(FULL_MASK, i_f, 31);
            fm += __shfl_sync(FULL_MASK, i_fm, 31);
            x += __shfl_sync(FULL_MASK, i_x, 31);
            xn += __shfl_sync(FULL_MASK, i_xn, 31);
        }
    }
    if (lane == 0) {
        prob[PR_FINAL * q.stride + p] = f;
        prob[PR_FINAL_PTS * q.stride + p] = fm;
        prob[PR_NEXT * q.stride + p] = x;
        prob[PR_NEXT_PTS * q.stride + p] = xn;
        prob[PR_FORCED * q.stride + p] = forced;
    }
}

extern "C" __global__ void __launch_bounds__(256)
cluster_tree_scan_fwd(const TreeLevelParams q, const u32* __restrict__ offsets, const u32* __restrict__ coffs,
                      const u32* __restrict__ iters, u32* __restrict__ prob, u32* __restrict__ status) {
    const u32 P = q.n_problems;
    const u32 per = (P + blockDim.x - 1) / blockDim.x;
    const u32 p0 = umin32(threadIdx.x * per, P), p1 = umin32(p0 + per, P);
    u32 f = 0, fm = 0, x = 0, xn = 0;
    u64 forced = 0, ap = 0, up = 0, ad = 0;
    for (u32 p = p0; p < p1; ++p) {
        f += prob[PR_FINAL * q.stride + p];
        fm += prob[PR_FINAL_PTS * q.stride + p];
        x += prob[PR_NEXT * q.stride + p];
        xn += prob[PR_NEXT_PTS * q.stride + p];
        forced += prob[PR_FORCED * q.stride + p];
        const u64 n = offsets[p + 1] - offsets[p], k = coffs[p + 1] - coffs[p], it = iters[p];
        ap += n * (it + 1);
        up += n * it;
        ad += n * k * (it + 1);
    }
    const u32 res_c = status[ST_RES_C], res_m = status[ST_RES_M];
    u32 tf, tfm, tx, txn;
    u32 bf = res_c + block_excl_scan(f, &tf);
    u32 bfm = res_m + block_excl_scan(fm, &tfm);
    u32 bx = block_excl_scan(x, &tx);
    u32 bxn = block_excl_scan(xn, &txn);
    forced = block_sum64(forced);
    ap = block_sum64(ap);
    up = block_sum64(up);
    ad = block_sum64(ad);
    for (u32 p = p0; p < p1; ++p) {
        u32* col = prob + p;
        const u32 vf = col[PR_FINAL * q.stride], vfm = col[PR_FINAL_PTS * q.stride];
        const u32 vx = col[PR_NEXT * q.stride], vxn = col[PR_NEXT_PTS * q.stride];
        col[PR_FINAL * q.stride] = bf;
        col[PR_FINAL_PTS * q.stride] = bfm;
        col[PR_NEXT * q.stride] = bx;
        col[PR_NEXT_PTS * q.stride] = bxn;
        bf += vf;
        bfm += vfm;
        bx += vx;
        bxn += vxn;
    }
    if (threadIdx.x == 0) {
        status[ST_NEXT_P] = tx;
        status[ST_NEXT_N] = txn;
        status[ST_RES_C] = res_c + tf;
        status[ST_RES_M] = res_m + tfm;
        u64* st = (u64*)status;
        st[ST_PROBLEMS / 2] += (u64)P;
        st[ST_FORCED / 2] += forced;
        st[ST_ASSIGN_PTS / 2] += ap;
        st[ST_UPDATE_PTS / 2] += up;
        st[ST_ASSIGN_DIST / 2] += ad;
    }
}

extern "C" __global__ void __launch_bounds__(256)
cluster_tree_scatter_fwd(const TreeLevelParams q, const u32* __restrict__ offsets, const u32* __restrict__ coffs,
                         const u32* __restrict__ root, const u32* __restrict__ work, const u32* __restrict__ assign,
                         const u32* __restrict__ cnt, const u32* __restrict__ cidx, u32* __restrict__ cbase,
                         const u32* __restrict__ prob, u32* __restrict__ members, u32* __restrict__ roff,
                         u32* __restrict__ rroot, u32* __restrict__ nwork, u32* __restrict__ noff,
                         u32* __restrict__ nroot) {
    const u32 p = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31u;
    if (p >= q.n_problems) return;  // warp-uniform
    const u32 s = offsets[p], e = offsets[p + 1], n = e - s;
    const u32 c0 = coffs[p], k = coffs[p + 1] - c0, r = root[p];
    const u32 F = prob[PR_FINAL * q.stride + p], FM = prob[PR_FINAL_PTS * q.stride + p];
    const u32 X = prob[PR_NEXT * q.stride + p], XN = prob[PR_NEXT_PTS * q.stride + p];
    if (p == 0 && lane == 0) {
        roff[0] = 0;
        noff[0] = 0;
    }
    if (prob[PR_FORCED * q.stride + p] != 0u) {
        const u32 g = q.gamma - 1, chunks = (n + g - 1) / g;
        for (u32 t = lane; t < chunks; t += 32) {
            const u64 end = (u64)(t + 1) * g;
            roff[F + t + 1] = FM + (end < n ? (u32)end : n);
            rroot[F + t] = r;
        }
        for (u32 i = lane; i < n; i += 32) members[FM + i] = work[s + i];
        return;
    }
    for (u32 j = lane; j < k; j += 32) {
        const u32 m = cnt[c0 + j];
        if (m == 0u) continue;
        if (m < q.gamma) {
            const u32 cl = F + cidx[c0 + j];
            roff[cl + 1] = FM + cbase[c0 + j] + m;
            rroot[cl] = r;
        } else {
            const u32 np = X + cidx[c0 + j];
            noff[np + 1] = XN + cbase[c0 + j] + m;
            nroot[np] = r;
        }
    }
    __syncwarp();  // cbase read above before it becomes the parts' cursors
    for (u32 base = s; base < e; base += 32) {  // warp-uniform trip count
        const u32 i = base + lane;
        const bool valid = i < e;
        const u32 a = valid ? assign[i] : FULL_MASK;
        u32 before = 0, after = 0;
        for (u32 src = 0; src < 32; ++src) {
            const u32 v = __shfl_sync(FULL_MASK, a, src);
            if (v == a) {
                if (src < lane) ++before;
                else if (src > lane) ++after;
            }
        }
        u32 pos = 0;
        if (valid) pos = cbase[c0 + a] + before;
        __syncwarp();  // every lane read its cursor before the last lanes advance them
        if (valid && after == 0u) cbase[c0 + a] = pos + 1u;
        __syncwarp();  // cursors advanced before the next chunk reads them
        if (valid) {
            const u32 w = work[i];
            if (cnt[c0 + a] < q.gamma) members[FM + pos] = w;
            else nwork[XN + pos] = w;
        }
    }
}
