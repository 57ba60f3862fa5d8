// gemm — dense f32 GEMM for training (projections, MLP, weight and input gradients).
// Reference: src/backend/cpu/gemm.rs (mm / mm_nt / mm_tn); CUDA twin: kernels/gemm.cu (same tiles).
// Shapes (row-major f32): out [m, n] = op(a) · op(b) reduced over k, by entry point:
//   gemm_fwd_nn: a [m, k], b [k, n];  gemm_fwd_nt: a [m, k], b [n, k];  gemm_fwd_tn: a [k, m], b [k, n].
//   The host binds a group of output rows (NN, NT: the same rows of a) or a slice of k rows
//   (TN: rows of a and b), so P.m is the rows bound here, P.k the row length of a k-contiguous
//   operand (a for NN/NT, b for NT) and [P.p0, P.p1) the k positions this dispatch adds.
// Geometry: 256 invocations (16 x 16: tx = lid % 16, ty = lid / 16) per workgroup, one workgroup
//   per 64x64 output tile on a 2-D grid flattened as w = wid.x + wid.y * nwg.x (tile row
//   w / tiles_n, tile column w % tiles_n; workgroups past n_tiles return at once).
// Per workgroup: k in tiles of 16; every invocation loads 4 elements of the 64x16 slice of op(a)
//   and 4 of the 16x64 slice of op(b) (0 outside the matrix or past p1) into workgroup memory,
//   k-major (As[kk*64 + row], Bs[kk*64 + col]); invocation (tx, ty) owns the 4x4 micro-tile rows
//   ty + 16r, columns tx + 16c and adds acc[r][c] = acc[r][c] + As[kk][ty+16r] * Bs[kk][tx+16c]
//   for kk = 0..15 of every tile: each output element is reduced over p in increasing order by
//   one invocation (padding adds exact zeros).
// llvmpipe ends an invocation after 65,535 loop iterations in all, so one dispatch adds at most
//   16,384 positions of k (1,024 tiles × 17 loop trips); longer k runs as several dispatches
//   (p0 = 0, 16384, ...: the host's chunks) where P.first = 0 makes a dispatch continue from the
//   f32 partial sums the previous one stored in out — the same additions in the same order, so
//   the result does not depend on the chunking and repeats bit for bit. The first dispatch writes
//   every element of its tile with `=`; each element is only ever written by its own invocation.
struct Params { m: u32, n: u32, k: u32, p0: u32, p1: u32, tiles_n: u32, n_tiles: u32, first: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const KIND_NN: u32 = 0u;
const KIND_NT: u32 = 1u;
const KIND_TN: u32 = 2u;

var<workgroup> As: array<f32, 1024>;  // [16][64]: As[kk*64 + row]
var<workgroup> Bs: array<f32, 1024>;  // [16][64]: Bs[kk*64 + col]

// op(a)[i, p] (0 outside the bound rows or past p1).
fn a_at(kind: u32, i: u32, p: u32) -> f32 {
    if (i >= P.m || p >= P.p1) { return 0.0; }
    if (kind == KIND_TN) { return a[p * P.m + i]; }
    return a[i * P.k + p];
}

// op(b)[p, j] (0 outside the matrix or past p1).
fn b_at(kind: u32, p: u32, j: u32) -> f32 {
    if (j >= P.n || p >= P.p1) { return 0.0; }
    if (kind == KIND_NT) { return b[j * P.k + p]; }
    return b[p * P.n + j];
}

// Element e (0..1023) of both tiles at k position pt; the (row, k) split of e follows the operand's
// contiguous index, as in the CUDA kernel.
fn load(kind: u32, i0: u32, j0: u32, pt: u32, e: u32) {
    var r = e >> 4u;
    var c = e & 15u;
    if (kind == KIND_TN) {
        c = e >> 6u;
        r = e & 63u;
    }
    As[c * 64u + r] = a_at(kind, i0 + r, pt + c);
    r = e & 63u;
    c = e >> 6u;
    if (kind == KIND_NT) {
        r = e >> 4u;
        c = e & 15u;
    }
    Bs[c * 64u + r] = b_at(kind, pt + c, j0 + r);
}

// Output element (i0 + ty + 16r, j0 + tx + 16c) of the tile, or none past m / n.
fn out_index(i: u32, j: u32) -> u32 {
    if (i >= P.m || j >= P.n) { return 0xffffffffu; }
    return i * P.n + j;
}

fn prev(i: u32, j0: u32, tx: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (P.first != 0u) { return v; }
    for (var c = 0u; c < 4u; c++) {
        let o = out_index(i, j0 + tx + 16u * c);
        if (o != 0xffffffffu) { v[c] = out[o]; }
    }
    return v;
}

fn put(i: u32, j0: u32, tx: u32, v: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        let o = out_index(i, j0 + tx + 16u * c);
        if (o != 0xffffffffu) { out[o] = v[c]; }
    }
}

fn gemm_body(kind: u32, w: u32, lid: u32) {
    let ti = w / P.tiles_n;
    let tj = w - ti * P.tiles_n;
    let i0 = ti * 64u;
    let j0 = tj * 64u;
    let tx = lid & 15u;
    let ty = lid >> 4u;
    // acc_r holds columns tx, tx+16, tx+32, tx+48 of row ty + 16r.
    var acc0 = prev(i0 + ty, j0, tx);
    var acc1 = prev(i0 + ty + 16u, j0, tx);
    var acc2 = prev(i0 + ty + 32u, j0, tx);
    var acc3 = prev(i0 + ty + 48u, j0, tx);
    for (var pt = P.p0; pt < P.p1; pt = pt + 16u) {
        load(kind, i0, j0, pt, lid);
        load(kind, i0, j0, pt, lid + 256u);
        load(kind, i0, j0, pt, lid + 512u);
        load(kind, i0, j0, pt, lid + 768u);
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            let base = kk * 64u;
            let bv = vec4<f32>(Bs[base + tx], Bs[base + tx + 16u], Bs[base + tx + 32u], Bs[base + tx + 48u]);
            acc0 = acc0 + As[base + ty] * bv;
            acc1 = acc1 + As[base + ty + 16u] * bv;
            acc2 = acc2 + As[base + ty + 32u] * bv;
            acc3 = acc3 + As[base + ty + 48u] * bv;
        }
        workgroupBarrier();
    }
    put(i0 + ty, j0, tx, acc0);
    put(i0 + ty + 16u, j0, tx, acc1);
    put(i0 + ty + 32u, j0, tx, acc2);
    put(i0 + ty + 48u, j0, tx, acc3);
}

@compute @workgroup_size(256)
fn gemm_fwd_nn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let w = wid.x + wid.y * nwg.x;
    if (w >= P.n_tiles) { return; }
    gemm_body(KIND_NN, w, lid);
}

@compute @workgroup_size(256)
fn gemm_fwd_nt(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let w = wid.x + wid.y * nwg.x;
    if (w >= P.n_tiles) { return; }
    gemm_body(KIND_NT, w, lid);
}

@compute @workgroup_size(256)
fn gemm_fwd_tn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let w = wid.x + wid.y * nwg.x;
    if (w >= P.n_tiles) { return; }
    gemm_body(KIND_TN, w, lid);
}
