// optim — the optimizers' updates in place; twin of kernels/optim.cu, reference
// src/backend/cpu/optim.rs (same operations in the same order). WGSL promises no correctly
// rounded division or square root, so results agree with the CPU to a few ulp, not bit for bit.
// Geometry: 64 invocations per workgroup, one per element; 2-D grid past 65,535 groups.
// optim_adam_fwd: w, g, m, v [n]: m = β1 m + (1-β1) g; v = β2 v + ((1-β2) g) g;
//   w -= (lr (m / bc1)) / (sqrt(v / bc2) + ε).
// optim_adagrad_fwd: w, acc [R, cols], rows [n_rows] distinct (bound at the staged offset),
//   g [n_rows, cols]: a = acc + g²; w -= (lr g) / (sqrt(a) + ε). Written with `=` per element.
struct Params { n: u32, cols: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, bc1: f32, bc2: f32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> s1: array<f32>;
@group(0) @binding(4) var<storage, read_write> s2: array<f32>;
@group(0) @binding(5) var<storage, read> rows: array<u32>;

@compute @workgroup_size(64)
fn optim_adam_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (i >= P.n) { return; }
    let gi = g[i];
    let m = P.beta1 * s1[i] + (1.0 - P.beta1) * gi;
    let v = P.beta2 * s2[i] + (1.0 - P.beta2) * gi * gi;
    s1[i] = m;
    s2[i] = v;
    let mh = m / P.bc1;
    let vh = v / P.bc2;
    w[i] = w[i] - P.lr * mh / (sqrt(vh) + P.eps);
}

// n = rows * cols here; s1 is the accumulator, s2 unused.
@compute @workgroup_size(64)
fn optim_adagrad_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (e >= P.n) { return; }
    let k = e / P.cols;
    let c = e - k * P.cols;
    let at = rows[k] * P.cols + c;
    let gi = g[e];
    let a = s1[at] + gi * gi;
    s1[at] = a;
    w[at] = w[at] - P.lr * gi / (sqrt(a) + P.eps);
}
