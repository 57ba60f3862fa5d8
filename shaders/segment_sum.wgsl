// segment_sum — deterministic scatter-add (SPEC §5: "gradients are scatter-added back").
// Reference: src/backend/cpu/segment_sum.rs.
// Shapes: src [N, W] f32 (W = width), perm [M] source rows (each < N), seg_off [S+1] (segment s
//   lists perm[seg_off[s]..seg_off[s+1]], offsets local to this call's group of segments),
//   out [S, W]. Validated on the host (check::segment_sum).
// Geometry: 64 invocations per workgroup, one invocation per output element e = s*W + c, 2-D grid
//   flattened as g = wid.x + wid.y * nwg.x (workgroups past n_groups return at once).
// segment_sum_fwd: out[s, c] = ((0 + src[perm[i0], c]) + src[perm[i0+1], c]) + ... in list order:
//   exactly the CPU's additions, so the result is bit-identical to the reference and run to run
//   (no atomics, no reordering). llvmpipe stops an invocation after 65,535 loop iterations, so a
//   dispatch adds at most `chunk` entries of each segment (8 per loop trip): the host dispatches
//   passes start = 0, chunk, 2 chunk, ... and pass start > 0 continues from the f32 partial sum
//   the previous pass stored in out (the same value a register would hold: same additions, same
//   order). Pass 0 writes every element (0 for an empty segment); a later pass skips segments it
//   has finished. Every element is written with `=` by its own invocation only.
// segment_sum_mapped_fwd (src/backend/cpu/segment_sum.rs::segment_sum_mapped): as
//   segment_sum_fwd, with perm listing positions (each < the map's length, checked by
//   train_rows::check_mapped) that rowmap [P] sends to rows of src (each < N by construction: only
//   the GSU writes the map); an entry whose map value is 0xFFFFFFFF (NOT_KEPT) is skipped rather
//   than added as zero, so out[s, c] = the kept rows added in list order, bit-identical to the
//   reference. Same passes of `chunk` list entries (skipped entries count toward a pass).
struct Params { n_seg: u32, width: u32, start: u32, chunk: u32, n_groups: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> perm: array<u32>;
@group(0) @binding(3) var<storage, read> seg_off: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> rowmap: array<u32>;   // segment_sum_mapped_fwd only

@compute @workgroup_size(64)
fn segment_sum_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= P.n_groups) { return; }
    let e = g * 64u + lid;
    if (e >= P.n_seg * P.width) { return; }
    let s = e / P.width;
    let c = e - s * P.width;
    let end = seg_off[s + 1u];
    let i0 = seg_off[s] + P.start;
    var acc = 0.0;
    if (P.start > 0u) {
        if (i0 >= end) { return; }
        acc = out[e];
    }
    let i1 = i0 + min(end - i0, P.chunk);
    let W = P.width;
    var i = i0;
    for (; i + 8u <= i1; i = i + 8u) {
        acc = acc + src[perm[i] * W + c];
        acc = acc + src[perm[i + 1u] * W + c];
        acc = acc + src[perm[i + 2u] * W + c];
        acc = acc + src[perm[i + 3u] * W + c];
        acc = acc + src[perm[i + 4u] * W + c];
        acc = acc + src[perm[i + 5u] * W + c];
        acc = acc + src[perm[i + 6u] * W + c];
        acc = acc + src[perm[i + 7u] * W + c];
    }
    for (; i < i1; i++) { acc = acc + src[perm[i] * W + c]; }
    out[e] = acc;
}

// acc + src[row of position pos, c], or acc when the position is not kept.
fn add_mapped(acc: f32, pos: u32, c: u32) -> f32 {
    let r = rowmap[pos];
    if (r == 0xffffffffu) { return acc; }
    return acc + src[r * P.width + c];
}

@compute @workgroup_size(64)
fn segment_sum_mapped_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= P.n_groups) { return; }
    let e = g * 64u + lid;
    if (e >= P.n_seg * P.width) { return; }
    let s = e / P.width;
    let c = e - s * P.width;
    let end = seg_off[s + 1u];
    let i0 = seg_off[s] + P.start;
    var acc = 0.0;
    if (P.start > 0u) {
        if (i0 >= end) { return; }
        acc = out[e];
    }
    let i1 = i0 + min(end - i0, P.chunk);
    var i = i0;
    for (; i + 8u <= i1; i = i + 8u) {
        acc = add_mapped(acc, perm[i], c);
        acc = add_mapped(acc, perm[i + 1u], c);
        acc = add_mapped(acc, perm[i + 2u], c);
        acc = add_mapped(acc, perm[i + 3u], c);
        acc = add_mapped(acc, perm[i + 4u], c);
        acc = add_mapped(acc, perm[i + 5u], c);
        acc = add_mapped(acc, perm[i + 6u], c);
        acc = add_mapped(acc, perm[i + 7u], c);
    }
    for (; i < i1; i++) { acc = add_mapped(acc, perm[i], c); }
    out[e] = acc;
}
