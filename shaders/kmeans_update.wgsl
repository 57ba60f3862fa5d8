// kmeans_update — the k-means centroid update (SPEC §4.3) of kmeans.wgsl's batches, bit-identical
// to src/backend/cpu/kmeans.rs::update in both versions: each centroid's members are summed in
// point order in f64 and the mean is rounded to f32; a centroid with no member keeps its value.
// WGSL has no f64, so the sums run on binary64 bit patterns (signed add, round to nearest even,
// in integer arithmetic: `dadd_signed` of `f64_of_f32_signed(x)`), and the mean
// (f32)(sum / count) is an exact long division rounded to binary64, then to binary32
// (`dmean_f32`); these helpers are in emu64.wgsl, which the host appends to this source.
// KmeansVersion::V2 (the default) runs v2; TWIN_KMEANS=v1 runs v1. The WGSL twin of
// kernels/kmeans_update.cu (v2) and of kmeans.cu's kmeans_update_fwd_v1 (v1).
//
// Shapes (as kmeans.wgsl): points [N, dim] f32 problem by problem, offsets [P + 1], coff [P + 1]
// (prefix sums of k, ending at Σk), assign [N] u32 local centroid index, cents [Σk, dim] f32 (the
// previous centroids), out [Σk, dim] f32 (written with `=`, every element), state [2P] (done
// flags then iteration counts; read only here: a done problem copies its centroids forward, so
// the Lloyd ping-pong buffers stay equal; the standalone op binds all zeros). An assignment
// >= k_p is no member of any centroid (both versions). Every problem has 1 <= k_p <= n_p.
// Params is kmeans.wgsl's (`c_begin`, `c_end` unused here).
// Geometry: 64 invocations per workgroup (the plan: one workgroup of 256); 2-D grids flattened as
// wid.x + wid.y * nwg.x.
//
// kmeans_update_fwd_v1: an invocation per (centroid, dimension t), grid ⌈Σk·dim / 64⌉, looping
//   over its problem's n points in point order and adding the members' coordinate t.
//   Reads the problem's assignments once per (centroid, dimension).
//
// v2: a stable counting sort of each problem's points by assignment, then the same sums over the
// members in sorted (= point) order. Scratch [2P + 2 + Σk + N/4 + N] u32, one buffer allocated
// once per batch (the Lloyd loop reuses it every round): plan [2P + 2], mat [Σk + N/4], order [N].
// Work items: a problem of n points and k centroids is cut into S = max(1, min(n / 2048,
// n / (4k))) slices of ⌈n / S⌉ consecutive points (the CUDA rule), so S·k <= max(k, n / 4) and mat
// holds Σk + N/4 words; an item is one slice, run by one invocation. Items <= P + N / 2048.
//   _plan (once per batch; one workgroup of 256, each invocation ⌈P/256⌉ consecutive problems,
//     then a sequential scan of the 256 totals): plan[0..P] = item offsets (prefix of S),
//     plan[P] = items, plan[P+1..2P+1] = mat offsets (prefix of S·k), plan[2P+1] = entries.
//   (host) mat cleared every round.
//   _count: per item (grid ⌈(P + N/2048) / 64⌉, items past plan[P] leave), its points in
//     order: mat[(centroid j, slice q)] += 1, centroid-major (j·S + q); only this invocation
//     touches its slice's column, so no atomics.
//   _scan: per problem (grid ⌈P / 64⌉), its S·k entries scanned exclusively in place from
//     offsets[p]: where each (centroid, slice) starts in the problem's sorted order.
//   _scatter: per item, its points in order: order[mat[(j, q)]++] = i. Afterwards the cursor of
//     (j, S-1) is where centroid j's members end and the one just below (j, 0) where they start
//     (offsets[p] for j = 0): order[offsets[p]..offsets[p+1]) lists problem p's members centroid
//     by centroid, each in point order (a stable counting sort).
//   kmeans_update_fwd_v2: an invocation per (centroid, dimension t), grid ⌈Σk·dim / 64⌉, summing
//     its members order[start..end) in that order, exactly as v1 does.
//   Every kernel skips a done problem (the sum copies its centroids forward).
// lavapipe ends an invocation after 65,535 loop trips: every loop here is bounded by its problem's
// n (v1's scan, a slice <= n points, a scan of S·k <= max(k, n/4) entries, a centroid's <= n
// members) or by 2⌈P/256⌉ + 256 (the plan), so on lavapipe problems stay below that many points,
// as kmeans.wgsl's assignment/convergence loops already require.
// Traffic per round: v1 reads each problem's n assignments k·dim times (once per (centroid,
// dimension) invocation: Σ k·dim·n loop trips) and each point once; v2 reads the assignments
// twice, writes order once and reads it dim times (neighbouring invocations share the words),
// reads each point once and mat a few words per (centroid, slice): Σ (2n + S·k + n·dim) trips.
struct Params { n: u32, dim: u32, n_prob: u32, total_k: u32, c_begin: u32, c_end: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> points: array<f32>;
@group(0) @binding(2) var<storage, read> offsets: array<u32>;
@group(0) @binding(3) var<storage, read> coff: array<u32>;
@group(0) @binding(4) var<storage, read> cents: array<f32>;
@group(0) @binding(5) var<storage, read> assign: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read> state: array<u32>;
@group(0) @binding(8) var<storage, read_write> scratch: array<u32>;

const SLICE: u32 = 2048u; // points per slice of a large problem

//#include "problems.wgsl"

// ---- kmeans_update_fwd_v1 ----------------------------------------------------------------------

@compute @workgroup_size(64)
fn kmeans_update_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (e >= P.total_k * P.dim) { return; }
    let g = e / P.dim;
    let t = e - g * P.dim;
    let p = problem_of_centroid(g);
    if (state[p] != 0u) {
        out[e] = cents[e];
        return;
    }
    let j = g - coff[p];
    var sum = vec2<u32>(0u, 0u);
    var cnt = 0u;
    for (var i = offsets[p]; i < offsets[p + 1u]; i++) {
        if (assign[i] == j) {
            sum = dadd_signed(sum, f64_of_f32_signed(points[i * P.dim + t]));
            cnt = cnt + 1u;
        }
    }
    if (cnt > 0u) {
        out[e] = dmean_f32(sum, cnt);
    } else {
        out[e] = cents[e];
    }
}

// ---- v2: plan, count, scan, scatter, sum ---------------------------------------------------------

// Slices of a problem of n points and k centroids (kernels/kmeans_update.cu's km_u2_slices).
fn slices(n: u32, k: u32) -> u32 {
    let s = min(n / SLICE, (n / 4u) / max(k, 1u));
    return max(s, 1u);
}
fn mat_base() -> u32 { return 2u * P.n_prob + 2u; }
fn order_base() -> u32 { return mat_base() + P.total_k + P.n / 4u; }

var<workgroup> wg_items: array<u32, 256>;
var<workgroup> wg_ents: array<u32, 256>;

@compute @workgroup_size(256)
fn kmeans_update_fwd_v2_plan(@builtin(local_invocation_index) lid: u32) {
    let per = (P.n_prob + 255u) / 256u;
    let q0 = min(lid * per, P.n_prob);
    let q1 = min(q0 + per, P.n_prob);
    var items = 0u;
    var ents = 0u;
    for (var q = q0; q < q1; q++) {
        let k = coff[q + 1u] - coff[q];
        let s = slices(offsets[q + 1u] - offsets[q], k);
        items += s;
        ents += s * k;
    }
    wg_items[lid] = items;
    wg_ents[lid] = ents;
    workgroupBarrier();
    if (lid == 0u) {
        var a = 0u;
        var b = 0u;
        for (var l = 0u; l < 256u; l++) {
            let x = wg_items[l];
            let y = wg_ents[l];
            wg_items[l] = a;
            wg_ents[l] = b;
            a += x;
            b += y;
        }
        scratch[P.n_prob] = a;
        scratch[2u * P.n_prob + 1u] = b;
    }
    workgroupBarrier();
    var a = wg_items[lid];
    var b = wg_ents[lid];
    for (var q = q0; q < q1; q++) {
        let k = coff[q + 1u] - coff[q];
        let s = slices(offsets[q + 1u] - offsets[q], k);
        scratch[q] = a;
        scratch[P.n_prob + 1u + q] = b;
        a += s;
        b += s * k;
    }
}

// A work item: slice q of problem p (S slices, k centroids), points [a, b); its count/cursor of
// centroid j is scratch[m + j·S]. `ok` is false past the last item or for a done problem.
struct Item { ok: bool, s: u32, k: u32, a: u32, b: u32, m: u32 }

fn item_of(item: u32) -> Item {
    var it = Item(false, 1u, 0u, 0u, 0u, 0u);
    if (item >= scratch[P.n_prob]) { return it; }
    var lo = 0u; // largest p with plan[p] <= item (every problem has >= 1 slice)
    var hi = P.n_prob;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (scratch[mid] <= item) { lo = mid; } else { hi = mid; }
    }
    let p = lo;
    if (state[p] != 0u) { return it; }
    let q = item - scratch[p];
    it.s = scratch[p + 1u] - scratch[p];
    it.k = coff[p + 1u] - coff[p];
    let s0 = offsets[p];
    let e = offsets[p + 1u];
    let n = e - s0;
    let len = n / it.s + select(0u, 1u, n % it.s != 0u);
    it.a = min(s0 + q * len, e);
    it.b = min(it.a + len, e);
    it.m = mat_base() + scratch[P.n_prob + 1u + p] + q;
    it.ok = true;
    return it;
}

@compute @workgroup_size(64)
fn kmeans_update_fwd_v2_count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let it = item_of((wid.x + wid.y * nwg.x) * 64u + lid);
    if (!it.ok) { return; }
    for (var i = it.a; i < it.b; i++) {
        let j = assign[i];
        if (j < it.k) {
            let m = it.m + j * it.s;
            scratch[m] = scratch[m] + 1u;
        }
    }
}

@compute @workgroup_size(64)
fn kmeans_update_fwd_v2_scan(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let p = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (p >= P.n_prob) { return; }
    if (state[p] != 0u) { return; }
    let m0 = mat_base() + scratch[P.n_prob + 1u + p];
    let m1 = mat_base() + scratch[P.n_prob + 2u + p];
    var run = offsets[p];
    for (var m = m0; m < m1; m++) {
        let c = scratch[m];
        scratch[m] = run;
        run += c;
    }
}

@compute @workgroup_size(64)
fn kmeans_update_fwd_v2_scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) lid: u32) {
    let it = item_of((wid.x + wid.y * nwg.x) * 64u + lid);
    if (!it.ok) { return; }
    let ob = order_base();
    for (var i = it.a; i < it.b; i++) {
        let j = assign[i];
        if (j < it.k) {
            let m = it.m + j * it.s;
            let pos = scratch[m];
            scratch[ob + pos] = i;
            scratch[m] = pos + 1u;
        }
    }
}

@compute @workgroup_size(64)
fn kmeans_update_fwd_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (e >= P.total_k * P.dim) { return; }
    let g = e / P.dim;
    let t = e - g * P.dim;
    let p = problem_of_centroid(g);
    if (state[p] != 0u) {
        out[e] = cents[e];
        return;
    }
    let j = g - coff[p];
    let s = scratch[p + 1u] - scratch[p];
    let m = mat_base() + scratch[P.n_prob + 1u + p] + j * s;
    let end = scratch[m + s - 1u];
    var start = offsets[p];
    if (j > 0u) { start = scratch[m - 1u]; }
    if (end <= start) {
        out[e] = cents[e];
        return;
    }
    let ob = order_base();
    var sum = vec2<u32>(0u, 0u);
    for (var r = ob + start; r < ob + end; r++) {
        sum = dadd_signed(sum, f64_of_f32_signed(points[scratch[r] * P.dim + t]));
    }
    out[e] = dmean_f32(sum, end - start);
}
