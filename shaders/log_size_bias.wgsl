// log_size_bias — log-cluster-size reweighting (SPEC §3.3): out[n, a] = bias[n, a] + ln(n_n).
// Shapes: N behaviours (ΣL), h heads; bias [N, h] f32, sizes [N] f32 (≥ 1, checked on host).
// Geometry: 64 invocations per workgroup, one per output element (n, a); 2-D grid.
// log_size_bias_fwd: elementwise, f32 `log` (the CPU rounds ln in f64 to f32: ≤ a few ulp apart).
struct Params { n: u32, heads: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read> sizes: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn log_size_bias_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (e >= P.n * P.heads) { return; }
    let n = e / P.heads;
    out[e] = bias[e] + log(sizes[n]);
}
