// copy_rows — row copy into a column range (the serving network's MLP-input assembly).
// Reference: src/backend/cpu/copy_rows.rs; twin of kernels/copy_rows.cu.
// Shapes: dst [R_d, dst_cols], src [R_s, src_cols] of 32-bit words (copied as bits: bit-identical);
//   dst[dst_row(i), dst_col + c] = src[src_row(i), src_col + c] for i < n, c < width, a row map being the
//   listed ids (bound at the staged batch's offset) when has_*_ids, else the identity.
//   check::copy_rows bounds every id and dst_col + width <= dst_cols; every tensor holds at most
//   u32::MAX words, so the u32 index arithmetic cannot wrap.
// Geometry: 64 invocations per workgroup, one per copied word (i, c); 2-D grid past 65,535 groups.
// copy_rows_fwd: one version (a copy: its floor is the bytes moved). Written with `=`.
struct Params { n: u32, width: u32, dst_cols: u32, dst_col: u32, has_dst_ids: u32, has_src_ids: u32, src_cols: u32, src_col: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<storage, read> dst_ids: array<u32>;
@group(0) @binding(3) var<storage, read> src: array<u32>;
@group(0) @binding(4) var<storage, read> src_ids: array<u32>;

@compute @workgroup_size(64)
fn copy_rows_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (e >= P.n * P.width) { return; }
    let i = e / P.width;
    let c = e % P.width;
    var dr = i;
    if (P.has_dst_ids != 0u) { dr = dst_ids[i]; }
    var sr = i;
    if (P.has_src_ids != 0u) { sr = src_ids[i]; }
    dst[dr * P.dst_cols + P.dst_col + c] = src[sr * P.src_cols + P.src_col + c];
}
