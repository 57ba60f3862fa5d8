// kmeans — batched Lloyd steps for many independent problems (SPEC §4.3).
// Shapes: N points of dim d (the 64-dim item embeddings), P problems, problem p owns points
//         offsets[p]..offsets[p+1] and centroids coff[p]..coff[p+1] (Σk rows of dim d).
// Geometry: 64 invocations per workgroup; 2-D grid flattened as wid.x + wid.y * nwg.x.
// kmeans_assign_fwd_v1: one invocation per point (problem found by binary search); distance
//         Σ_t (x_t - c_t)² summed sequentially in t order in f32, exactly as the CPU reference;
//         nearest centroid, ties to the lower index (strict <). Bit-identical to the CPU.
//         The square is rounded on its own (`sq` below) before the add so no FMA contraction
//         can change the result.
// The centroid update (v1 and v2, bit-identical to the CPU: members summed in point order in
//         f64 emulated on binary64 bit patterns) is in kmeans_update.wgsl, with its own header;
//         it reads these buffers and the `state` done flags below.
// kmeans_assign_fwd_v2 (dim == 64 only; the host runs v1 for other dims): v1's arithmetic and
//         tie rule, bit-identical, without v1's repeated reads (the twin of CUDA's v2). 64
//         invocations per workgroup, one point each. The workgroup's points span problems
//         p0..p1 (contiguous), whose centroid rows coff[p0]..coff[p1 + 1] are contiguous too:
//         when they number ≤ 64 (16 KiB) the workgroup stages them in workgroup memory, else it
//         reads them from global memory as v1 does. Each invocation holds its point's 64
//         coordinates in a private array instead of re-reading the row for every centroid.
//         Barriers sit in uniform control flow: an invocation past N or in a done problem
//         helps stage, then stores nothing.
// kmeans_converge_fwd: one invocation per problem, after an update + assign round: a problem
//         not yet done counts the round and is done when none of its assignments changed
//         (compared point by point with the previous round's `old`). The Lloyd loop then runs
//         on the device without the host.
// state [2P]: done flags [P] then iteration counts [P]. assign and the update skip a done
//         problem (a fixed point of update + assign), the update copying its centroids forward
//         so the ping-pong buffers stay equal; the standalone ops bind an all-zero state.
// kmeans_seed_fwd: k-means++ (SPEC §4.3), bit-identical to cpu::kmeans::seed_one and to CUDA's
//         kmeans_seed_fwd. One workgroup of 256 per problem (2-D grid flattened); a dispatch runs
//         picks c in [c_begin, c_end) of every problem (the host splits the k picks over several
//         dispatches so no invocation passes llvmpipe's 65,535 loop trips in all). Per pick all
//         invocations copy the chosen point into centroid row c (`out` is written with `=`) and
//         update mind[i] = min(mind[i], Σ_t (x_t - c_t)² in t order, f32) (pick 0 assigns);
//         invocation 0 then draws the next pick from the problem's SplitMix64 stream
//         (seeds `old` [2P] as lo, hi words): total = Σ_i (f64) mind[i] sequentially in point
//         order, u = next_f64 · total, the first point with mind > 0 whose running f64 sum
//         passes u, else the last such point; a zero total draws below(n). WGSL has no u64 and
//         no f64: the RNG runs on vec2<u32> (lo, hi) words and the f64 sums and the one product
//         on IEEE-754 binary64 bit patterns with round-to-nearest-even in integer arithmetic
//         (only non-negative operands occur: no cancellation, no subnormal results), so every
//         rounding is the CPU's. The sequential loops are unrolled by 8 (same order).
//         `state` is scratch here: [3P] rng lo, hi and the pending pick per problem, then mind
//         [N] as f32 bits; it carries the problem from one dispatch to the next.
// The 64-bit integer and binary64 helpers (mul32, splitmix_next, dadd, unit_times, ...) are in
// emu64.wgsl, which the host appends to this source.
struct Params { n: u32, dim: u32, n_prob: u32, total_k: u32, c_begin: u32, c_end: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> points: array<f32>;
@group(0) @binding(2) var<storage, read> offsets: array<u32>;
@group(0) @binding(3) var<storage, read> coff: array<u32>;
@group(0) @binding(4) var<storage, read> cents: array<f32>;
@group(0) @binding(5) var<storage, read_write> assign: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> state: array<u32>;
@group(0) @binding(8) var<storage, read> old: array<u32>;

//#include "problems.wgsl"

@compute @workgroup_size(64)
fn kmeans_assign_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (i >= P.n) { return; }
    let p = problem_of_point(i);
    if (state[p] != 0u) { return; }
    let c0 = coff[p];
    let c1 = coff[p + 1u];
    let xb = i * P.dim;
    var best = 0u;
    var best_d = bitcast<f32>(0x7f800000u); // +inf
    for (var j = c0; j < c1; j++) {
        let cb = j * P.dim;
        var acc = 0.0;
        for (var t = 0u; t < P.dim; t++) {
            let d = points[xb + t] - cents[cb + t];
            let sq = d * d;
            acc = acc + sq;
        }
        if (acc < best_d) {
            best_d = acc;
            best = j - c0;
        }
    }
    assign[i] = best;
}

const AV2_ROWS: u32 = 64u;
var<workgroup> av2_cents: array<f32, 4096>; // AV2_ROWS rows of 64
var<workgroup> av2_range: vec2<u32>;        // staged centroid rows [x, y); y = x: none staged

@compute @workgroup_size(64)
fn kmeans_assign_fwd_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let first = (wid.x + wid.y * nwg.x) * 64u;
    let i = first + lid;
    if (lid == 0u) {
        var r = vec2<u32>(0u, 0u);
        if (first < P.n) {
            let p0 = problem_of_point(first);
            let p1 = problem_of_point(min(first + 63u, P.n - 1u));
            if (coff[p1 + 1u] - coff[p0] <= AV2_ROWS) { r = vec2<u32>(coff[p0], coff[p1 + 1u]); }
        }
        av2_range = r;
    }
    let range = workgroupUniformLoad(&av2_range);
    let staged = (range.y - range.x) * 64u;
    for (var e = lid; e < staged; e = e + 64u) {
        av2_cents[e] = cents[range.x * 64u + e];
    }
    workgroupBarrier();
    if (i >= P.n) { return; }
    let p = problem_of_point(i);
    if (state[p] != 0u) { return; }
    var x: array<f32, 64>;
    let xb = i * 64u;
    for (var t = 0u; t < 64u; t++) { x[t] = points[xb + t]; }
    let c0 = coff[p];
    let c1 = coff[p + 1u];
    let in_wg = range.y > range.x && c0 >= range.x && c1 <= range.y;
    var best = 0u;
    var best_d = bitcast<f32>(0x7f800000u); // +inf
    for (var j = c0; j < c1; j++) {
        var acc = 0.0;
        if (in_wg) {
            let cb = (j - range.x) * 64u;
            for (var t = 0u; t < 64u; t++) {
                let d = x[t] - av2_cents[cb + t];
                let sq = d * d;
                acc = acc + sq;
            }
        } else {
            let cb = j * 64u;
            for (var t = 0u; t < 64u; t++) {
                let d = x[t] - cents[cb + t];
                let sq = d * d;
                acc = acc + sq;
            }
        }
        if (acc < best_d) {
            best_d = acc;
            best = j - c0;
        }
    }
    assign[i] = best;
}

@compute @workgroup_size(64)
fn kmeans_converge_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let q = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (q >= P.n_prob) { return; }
    if (state[q] != 0u) { return; }
    state[P.n_prob + q] = state[P.n_prob + q] + 1u;
    var changed = false;
    for (var i = offsets[q]; i < offsets[q + 1u]; i++) {
        if (old[i] != assign[i]) {
            changed = true;
            break;
        }
    }
    if (!changed) { state[q] = 1u; }
}

// ---- kmeans_seed_fwd -------------------------------------------------------------------------

var<workgroup> wg_pick: u32;

// Running f64 sum over mind: one point.
fn sum_step(acc: vec2<u32>, i: u32, e: u32, mb: u32) -> vec2<u32> {
    if (i >= e) { return acc; }
    let d = state[mb + i];
    if (d == 0u) { return acc; }
    return dadd(acc, f64_of_f32(bitcast<f32>(d)));
}

struct Scan { cum: vec2<u32>, last: u32, found: u32 }

// The D² draw over one point: `found` is 1 + the local index once the running sum passes u.
fn scan_step(sc: Scan, i: u32, e: u32, s: u32, mb: u32, u: vec2<u32>) -> Scan {
    var r = sc;
    if (r.found != 0u || i >= e) { return r; }
    let d = state[mb + i];
    if (d != 0u) {
        r.last = i - s;
        r.cum = dadd(r.cum, f64_of_f32(bitcast<f32>(d)));
        if (dgt(r.cum, u)) { r.found = i - s + 1u; }
    }
    return r;
}

@compute @workgroup_size(256)
fn kmeans_seed_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let p = wid.x + wid.y * nwg.x;
    if (p >= P.n_prob) { return; }
    let s = offsets[p];
    let e = offsets[p + 1u];
    let n = e - s;
    let c0 = coff[p];
    let k = coff[p + 1u] - c0;
    let sb = 3u * p;
    let mb = 3u * P.n_prob;
    var st = vec2<u32>(0u, 0u);
    if (lid == 0u) {
        if (P.c_begin == 0u) {
            st = vec2<u32>(old[2u * p], old[2u * p + 1u]);
            wg_pick = below(splitmix_next(&st), n);
        } else {
            st = vec2<u32>(state[sb], state[sb + 1u]);
            wg_pick = state[sb + 2u];
        }
    }
    for (var c = P.c_begin; c < P.c_end; c++) {
        workgroupBarrier();
        storageBarrier();
        let pick = wg_pick;
        if (c < k) {
            let xb = (s + pick) * P.dim;
            let ob = (c0 + c) * P.dim;
            for (var t = lid; t < P.dim; t += 256u) {
                out[ob + t] = points[xb + t];
            }
            for (var i = s + lid; i < e; i += 256u) {
                let ib = i * P.dim;
                var acc = 0.0;
                for (var t = 0u; t < P.dim; t++) {
                    let d = points[ib + t] - points[xb + t];
                    let sq = d * d;
                    acc = acc + sq;
                }
                if (c == 0u || acc < bitcast<f32>(state[mb + i])) {
                    state[mb + i] = bitcast<u32>(acc);
                }
            }
        }
        storageBarrier();
        if (lid == 0u && c + 1u < k) {
            var total = vec2<u32>(0u, 0u);
            for (var i = s; i < e; i += 8u) {
                total = sum_step(total, i, e, mb);
                total = sum_step(total, i + 1u, e, mb);
                total = sum_step(total, i + 2u, e, mb);
                total = sum_step(total, i + 3u, e, mb);
                total = sum_step(total, i + 4u, e, mb);
                total = sum_step(total, i + 5u, e, mb);
                total = sum_step(total, i + 6u, e, mb);
                total = sum_step(total, i + 7u, e, mb);
            }
            if ((total.x | total.y) != 0u) {
                let u = unit_times(splitmix_next(&st), total);
                var sc = Scan(vec2<u32>(0u, 0u), 0u, 0u);
                for (var i = s; i < e && sc.found == 0u; i += 8u) {
                    sc = scan_step(sc, i, e, s, mb, u);
                    sc = scan_step(sc, i + 1u, e, s, mb, u);
                    sc = scan_step(sc, i + 2u, e, s, mb, u);
                    sc = scan_step(sc, i + 3u, e, s, mb, u);
                    sc = scan_step(sc, i + 4u, e, s, mb, u);
                    sc = scan_step(sc, i + 5u, e, s, mb, u);
                    sc = scan_step(sc, i + 6u, e, s, mb, u);
                    sc = scan_step(sc, i + 7u, e, s, mb, u);
                }
                wg_pick = select(sc.last, sc.found - 1u, sc.found != 0u);
            } else {
                wg_pick = below(splitmix_next(&st), n);
            }
        }
    }
    if (lid == 0u) {
        state[sb] = st.x;
        state[sb + 1u] = st.y;
        state[sb + 2u] = wg_pick;
    }
}
