// bias_act — bias and activation in place (the MLP's layers after each GEMM, SPEC §5).
// Reference: src/backend/cpu/bias_act.rs; twin of kernels/bias_act.cu.
// Shapes: x [m, n] f32 in place, bias [n] f32; act 0 = none, 1 = ReLU, 2 = σ:
//   s = x[i, j] + bias[j]; none: s; ReLU: s < 0 ? 0 : s (bit-identical to the CPU);
//   σ: 1 / (1 + exp(-s)) in f32 (WGSL has no f64; the CPU rounds an f64 σ: within 1e-7 + 1e-5 |σ|).
// Geometry: 64 invocations per workgroup, one per element; 2-D grid past 65,535 groups.
// bias_act_fwd: one version (element-wise: its floor is 8 bytes per element). Written with `=`.
// bias_act_bwd: backward for none / ReLU: dy [m, n] in place (zeroed where ReLU's output
//   y <= 0), db[j] = Σ_i dy[i, j] in row order in f32 (bit-identical to the CPU). One invocation
//   per column walking the rows (m is a batch, far below llvmpipe's loop cap).
struct Params { m: u32, n: u32, act: u32, pad0: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(64)
fn bias_act_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (e >= P.m * P.n) { return; }
    let s = x[e] + bias[e % P.n];
    var y = s;
    if (P.act == 1u) {
        y = select(s, 0.0, s < 0.0);
    } else if (P.act == 2u) {
        y = 1.0 / (1.0 + exp(-s));
    }
    x[e] = y;
}

// Bindings here: x = dy (in place), bias = y (the forward's output), db.
@compute @workgroup_size(64)
fn bias_act_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let j = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (j >= P.n) { return; }
    var sum = 0.0;
    for (var i = 0u; i < P.m; i++) {
        let e = i * P.n + j;
        var g = x[e];
        if (P.act == 1u && bias[e] <= 0.0) {
            g = 0.0;
            x[e] = 0.0;
        }
        sum = sum + g;
    }
    db[j] = sum;
}
