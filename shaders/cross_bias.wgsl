// cross_bias — cross-feature bias (SPEC §3.2), both forms; f32 throughout.
// Shapes: N behaviours (N = ΣL), h heads, J cross features, C = 8 embedding width,
//         V stacked cross vocabulary rows.
// Geometry: 64 invocations per workgroup, one per output element (n, a); 2-D grid.
// cross_bias_fwd_v1 (inference form): out[n, a] = Σ_j T[rows[n*J + j], a], T = [V, h], summed
//         in j order in f32.
// cross_bias_dense_fwd_v1 (training form): out[n, a] = Σ_j β[a,j] (e[n,j,:] · w_c[a,j,:]),
//         e = [N, J, C], w_c = [h, J, C], β = [h, J]; dot in c order, then j order, in f32.
struct Params { n: u32, heads: u32, n_cross: u32, dim: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a0: array<f32>;   // v1: T        dense: e
@group(0) @binding(2) var<storage, read> a1: array<u32>;   // v1: rows     dense: w_c (bits)
@group(0) @binding(3) var<storage, read> a2: array<f32>;   // v1: unused   dense: β
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 64u + lid;
}

@compute @workgroup_size(64)
fn cross_bias_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
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
fn cross_bias_dense_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
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
