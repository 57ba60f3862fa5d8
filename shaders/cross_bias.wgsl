// cross_bias — cross-feature bias (SPEC §3.2), both forms; f32 throughout.
// Shapes: N behaviours (N = ΣL), h heads, J cross features, C = 8 embedding width,
//         V stacked cross vocabulary rows.
// Geometry: 64 invocations per workgroup, one per output element (n, a); 2-D grid.
// cross_bias_fwd (inference form): out[n, a] = Σ_j T[rows[n*J + j], a], T = [V, h], summed
//         in j order in f32.
// cross_bias_dense_fwd (training form): out[n, a] = Σ_j β[a,j] (e[n,j,:] · w_c[a,j,:]),
//         e = [N, J, C], w_c = [h, J, C], β = [h, J]; dot in c order, then j order, in f32.
// cross_bias_bwd (training backward, src/backend/cpu/cross_bias.rs::cross_tables_bwd; CUDA
//         twin cross_bias_bwd): V = P.n stacked cross rows, D = P.d; dcb [V, h], dcv [V, D],
//         e [V, C], w_c [h, J, C], β [h, J], w_vc [J*C, D], offsets [J+1] (feature j owns rows
//         offsets[j]..offsets[j+1]; checked by check::cross_tables_bwd);
//         out = [dE (V*C) | dw_c (h*J*C) | dβ (h*J) | dW^{vc} (J*C*D)], one invocation per element
//         (2-D grid of 64-invocation workgroups), each summing with `=` in the CPU's order:
//           dE[v, t]           = Σ_col W^{vc}[jC+t, col] dcv[v, col] + Σ_a (dcb[v,a] β[a,j]) w_c[a,j,t]
//           dw_c[a, j, t]      = Σ_v (dcb[v, a] β[a,j]) E[v, t]
//           dβ[a, j]           = Σ_v dcb[v, a] (E[v] · w_c[a,j])       (dot in t order)
//           dW^{vc}[jC+t, col] = Σ_v E[v, t] dcv[v, col]               (v ascending in feature j)
//         Each element's sum is a sequence of steps (dE: the D columns, then the h heads; the
//         others: the feature's rows in order). llvmpipe ends an invocation after 65,535 loop
//         iterations, so a dispatch takes steps [P.s0, P.s1) only; the host runs passes s0 = 0,
//         S, 2S, ... and a pass with s0 > 0 continues from the f32 partial sum in out (same
//         additions, same order) and leaves finished elements alone.
// cross_tables_fwd (training tables, src/backend/cpu/cross_bias.rs::cross_tables; CUDA twin
//         cross_tables_fwd): bindings as the backward (a1 = offsets [J+1], bw_* = e, w_c, β,
//         w_vc; a0, a2 unused), V = P.n, D = P.d; out = [cb (V*h) | cv (V*D)], one invocation per
//         element (2-D grid of 64-invocation workgroups), each written with `=`:
//           cb[v, a]   = β[a,j] · (Σ_t E[v, t] w_c[a,j,t])    (t ascending, from 0)
//           cv[v, col] = Σ_t E[v, t] W^{vc}[jC+t, col]        (t ascending, from 0)
//         j = the feature whose rows hold v (the first with offsets[j] ≤ v < offsets[j+1]).
//         J + C loop trips per invocation (the host keeps them far below llvmpipe's cap).
struct Params { n: u32, heads: u32, n_cross: u32, dim: u32, d: u32, s0: u32, s1: u32, pad: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a0: array<f32>;   // v1: T        dense: e          bwd: dcb
@group(0) @binding(2) var<storage, read> a1: array<u32>;   // v1: rows     dense: w_c (bits) bwd: offsets
@group(0) @binding(3) var<storage, read> a2: array<f32>;   // v1: unused   dense: β          bwd: dcv
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> bw_e: array<f32>;     // bwd: e
@group(0) @binding(6) var<storage, read> bw_wc: array<f32>;    // bwd: w_c
@group(0) @binding(7) var<storage, read> bw_beta: array<f32>;  // bwd: β
@group(0) @binding(8) var<storage, read> bw_wvc: array<f32>;   // bwd: w_vc

//#include "grid.wgsl"

@compute @workgroup_size(64)
fn cross_bias_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let e = flat(wid, nwg, lid);
    if (e >= P.n * P.heads) { return; }
    let n = e / P.heads;
    let a = e - n * P.heads;
    var acc = 0.0;
    for (var j = 0u; j < P.n_cross; j++) {
        acc = acc + a0[a1[n * P.n_cross + j] * P.heads + a];
    }
    out[e] = acc;
}

@compute @workgroup_size(64)
fn cross_bias_dense_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let e = flat(wid, nwg, lid);
    if (e >= P.n * P.heads) { return; }
    let n = e / P.heads;
    let a = e - n * P.heads;
    var acc = 0.0;
    for (var j = 0u; j < P.n_cross; j++) {
        let eb = (n * P.n_cross + j) * P.dim;
        let wb = (a * P.n_cross + j) * P.dim;
        var dot = 0.0;
        for (var c = 0u; c < P.dim; c++) {
            dot = dot + a0[eb + c] * bitcast<f32>(a1[wb + c]);
        }
        acc = acc + a2[a * P.n_cross + j] * dot;
    }
    out[e] = acc;
}

// Partial sum to continue from: 0 in the first pass, else the value the previous pass stored.
fn resume(e: u32) -> f32 {
    if (P.s0 == 0u) { return 0.0; }
    return out[e];
}

@compute @workgroup_size(64)
fn cross_bias_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let e = flat(wid, nwg, lid);
    let H = P.heads;
    let J = P.n_cross;
    let C = P.dim;
    let D = P.d;
    let n_de = P.n * C;
    let n_dwc = H * J * C;
    let n_db = H * J;
    if (e >= n_de + n_dwc + n_db + J * C * D) { return; }
    if (e < n_de) {
        let v = e / C;
        let t = e - v * C;
        let len = D + H;
        if (P.s0 > 0u && P.s0 >= len) { return; }
        var j = 0u;  // the first feature whose rows hold v (the CPU's `feature`)
        for (var jj = 0u; jj < J; jj++) {
            if (a1[jj] <= v && v < a1[jj + 1u]) {
                j = jj;
                break;
            }
        }
        var acc = resume(e);
        let hi = min(len, P.s1);
        let wb = (j * C + t) * D;
        var s = P.s0;
        for (; s < min(hi, D); s++) { acc = acc + bw_wvc[wb + s] * a2[v * D + s]; }
        for (; s < hi; s++) {
            let a = s - D;
            acc = acc + a0[v * H + a] * bw_beta[a * J + j] * bw_wc[(a * J + j) * C + t];
        }
        out[e] = acc;
        return;
    }
    if (e < n_de + n_dwc) {
        let x = e - n_de;
        let a = x / (J * C);
        let j = (x / C) % J;
        let t = x % C;
        let rs = a1[j];
        let len = a1[j + 1u] - rs;
        if (P.s0 > 0u && P.s0 >= len) { return; }
        let bt = bw_beta[a * J + j];
        var acc = resume(e);
        for (var s = P.s0; s < min(len, P.s1); s++) {
            let v = rs + s;
            acc = acc + a0[v * H + a] * bt * bw_e[v * C + t];
        }
        out[e] = acc;
        return;
    }
    if (e < n_de + n_dwc + n_db) {
        let x = e - n_de - n_dwc;
        let a = x / J;
        let j = x - a * J;
        let rs = a1[j];
        let len = a1[j + 1u] - rs;
        if (P.s0 > 0u && P.s0 >= len) { return; }
        let wb = (a * J + j) * C;
        var db = resume(e);
        for (var s = P.s0; s < min(len, P.s1); s++) {
            let v = rs + s;
            var dot = 0.0;
            for (var t = 0u; t < C; t++) { dot = dot + bw_e[v * C + t] * bw_wc[wb + t]; }
            db = db + a0[v * H + a] * dot;
        }
        out[e] = db;
        return;
    }
    let x = e - n_de - n_dwc - n_db;
    let row = x / D;  // j*C + t
    let col = x - row * D;
    let j = row / C;
    let t = row - j * C;
    let rs = a1[j];
    let len = a1[j + 1u] - rs;
    if (P.s0 > 0u && P.s0 >= len) { return; }
    var acc = resume(e);
    for (var s = P.s0; s < min(len, P.s1); s++) {
        let v = rs + s;
        acc = acc + bw_e[v * C + t] * a2[v * D + col];
    }
    out[e] = acc;
}

// The first feature whose rows offsets[j]..offsets[j+1] hold v (0 if none).
fn feature_of(v: u32) -> u32 {
    for (var j = 0u; j < P.n_cross; j++) {
        if (a1[j] <= v && v < a1[j + 1u]) { return j; }
    }
    return 0u;
}

@compute @workgroup_size(64)
fn cross_tables_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let e = flat(wid, nwg, lid);
    let J = P.n_cross;
    let C = P.dim;
    let n_cb = P.n * P.heads;
    if (e >= n_cb + P.n * P.d) { return; }
    if (e < n_cb) {
        let v = e / P.heads;
        let a = e - v * P.heads;
        let j = feature_of(v);
        let wb = (a * J + j) * C;
        var dot = 0.0;
        for (var t = 0u; t < C; t++) { dot = dot + bw_e[v * C + t] * bw_wc[wb + t]; }
        out[e] = bw_beta[a * J + j] * dot;
        return;
    }
    let x = e - n_cb;
    let v = x / P.d;
    let col = x - v * P.d;
    let j = feature_of(v);
    var acc = 0.0;
    for (var t = 0u; t < C; t++) { acc = acc + bw_e[v * C + t] * bw_wvc[(j * C + t) * P.d + col]; }
    out[e] = acc;
}
