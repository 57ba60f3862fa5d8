// kmeans — batched Lloyd steps for many independent problems (SPEC §4.3).
// Shapes: N points of dim d (the 64-dim item embeddings), P problems, problem p owns points
//         offsets[p]..offsets[p+1] and centroids coff[p]..coff[p+1] (Σk rows of dim d).
// Geometry: 64 invocations per workgroup; 2-D grid flattened as wid.x + wid.y * nwg.x.
// kmeans_assign_fwd_v1: one invocation per point (problem found by binary search); distance
//         Σ_t (x_t - c_t)² summed sequentially in t order in f32, exactly as the CPU reference;
//         nearest centroid, ties to the lower index (strict <). Bit-identical to the CPU.
//         The square is rounded on its own (`sq` below) before the add so no FMA contraction
//         can change the result.
// kmeans_update_fwd_v1: one invocation per (centroid, dimension t), looping over its problem's
//         points in point order and summing members in f32 (WGSL has no f64: the CPU sums in
//         f64, so the means agree to f32 rounding of a sequential sum, not bit for bit); a
//         centroid with no member keeps its previous value.
// kmeans_converge_fwd_v1: one invocation per problem, after an update + assign round: a problem
//         not yet done counts the round and is done when none of its assignments changed
//         (compared point by point with the previous round's `old`). The Lloyd loop then runs
//         on the device without the host.
// state [2P]: done flags [P] then iteration counts [P]. assign and update skip a done problem
//         (a fixed point of update + assign), update copying its centroids forward so the
//         ping-pong buffers stay equal; the standalone ops bind an all-zero state.
struct Params { n: u32, dim: u32, n_prob: u32, total_k: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> points: array<f32>;
@group(0) @binding(2) var<storage, read> offsets: array<u32>;
@group(0) @binding(3) var<storage, read> coff: array<u32>;
@group(0) @binding(4) var<storage, read> cents: array<f32>;
@group(0) @binding(5) var<storage, read_write> assign: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> state: array<u32>;
@group(0) @binding(8) var<storage, read> old: array<u32>;

// Largest p with o[p] <= i over the P + 1 offsets (empty problems are impossible here).
fn problem_of_point(i: u32) -> u32 {
    var lo = 0u;
    var hi = P.n_prob;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (offsets[mid] <= i) { lo = mid; } else { hi = mid; }
    }
    return lo;
}
fn problem_of_centroid(g: u32) -> u32 {
    var lo = 0u;
    var hi = P.n_prob;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (coff[mid] <= g) { lo = mid; } else { hi = mid; }
    }
    return lo;
}


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
    var sum = 0.0;
    var cnt = 0u;
    for (var i = offsets[p]; i < offsets[p + 1u]; i++) {
        if (assign[i] == j) {
            sum = sum + points[i * P.dim + t];
            cnt = cnt + 1u;
        }
    }
    if (cnt > 0u) {
        out[e] = sum / f32(cnt);
    } else {
        out[e] = cents[e];
    }
}

@compute @workgroup_size(64)
fn kmeans_converge_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
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
