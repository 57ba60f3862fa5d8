// gather — precomputed-projection gather (SPEC §3.1): out[n, :] = P[ids[n], :] widened to f32.
// Shapes: N ids (N = ΣL behaviours or ΣB candidates), table P [n_items, D] (D = h * d_k),
//         stored as t0_t (f16 where the adapter has SHADER_F16, else f32).
// Geometry: 64 invocations per workgroup, one per output element (n, c); 2-D grid of
//         workgroups flattened as wid.x + wid.y * nwg.x.
// gather_fwd: elementwise copy. When a table is larger than one storage binding it is
//         bound one row chunk [row_lo, row_hi) at a time; ids outside the chunk are skipped
//         (the dispatch for their chunk writes them). With sorted ids (split.rs compaction) a
//         dispatch covers only ids[base .. base + n], the ids inside its chunk.
struct Params { n: u32, cols: u32, row_lo: u32, row_hi: u32, base: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> tab: array<t0_t>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn gather_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (e >= P.n * P.cols) { return; }
    let n = e / P.cols;
    let c = e - n * P.cols;
    let id = ids[P.base + n];
    if (id < P.row_lo || id >= P.row_hi) { return; }
    out[P.base * P.cols + e] = f32(tab[(id - P.row_lo) * P.cols + c]);
}
