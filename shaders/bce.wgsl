// bce — mean binary cross-entropy on logits and its gradient (SPEC §5, TWIN eq. 2).
// Reference: src/backend/cpu/bce.rs (f64 there, f32 here); CUDA twin: kernels/bce.cu (f64).
// Shapes: B samples (this dispatch's group: P.n of them); logits [B], labels [B] (any finite value;
//   0/1 in training), loss [B] (per-sample terms), dlogit [B], all f32. Validated on the host
//   (Backend::bce: equal lengths, B >= 1, finite).
// Geometry: 64 invocations per workgroup, one invocation per sample b = (wid.x + wid.y * nwg.x) * 64
//   + lid on a 2-D grid; no loops, no workgroup memory.
// bce_fwd, with s = logits[b], y = labels[b]:
//   loss[b]   = max(s, 0) - s y + log1p(exp(-|s|))     (the stable form of the cross-entropy;
//               log1p(x) = log(u) x / (u - 1) with u = 1 + x, exact to a few ulps for small x)
//   dlogit[b] = (σ(s) - y) * inv_b, σ(s) = 1 / (1 + exp(-s)) for s >= 0, e^s / (1 + e^s) below
//   (no overflow either way); inv_b = 1 / B (the whole batch's B, from the host).
// The mean is formed on the host: Σ_b loss[b] in f64 in sample order, times 1/B. Each element is
// written with `=` by its own invocation; no atomics, so results repeat run to run.
struct Params { n: u32, n_groups: u32, inv_b: f32, pad: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogit: array<f32>;

fn log1p_(x: f32) -> f32 {
    let u = 1.0 + x;
    if (u == 1.0) { return x; }
    return log(u) * (x / (u - 1.0));
}

@compute @workgroup_size(64)
fn bce_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= P.n_groups) { return; }
    let i = g * 64u + lid;
    if (i >= P.n) { return; }
    let s = logits[i];
    let y = labels[i];
    loss[i] = max(s, 0.0) - s * y + log1p_(exp(-abs(s)));
    var sig: f32;
    if (s >= 0.0) {
        sig = 1.0 / (1.0 + exp(-s));
    } else {
        let e = exp(s);
        sig = e / (1.0 + e);
    }
    dlogit[i] = (sig - y) * P.inv_b;
}
