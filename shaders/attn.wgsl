// attn — training attention forward and backward (SPEC §5: ESU pooling without W^o, ragged rows
// per sample). Reference: src/backend/cpu/attn.rs (same math, same names).
// Shapes (SPEC letters): B samples, N rows, h heads, D = h * d_k, s = 1/√d_k; q [B, D], k, v [N, D],
//   bias [N, h], p [N, h], pooled / dpooled / dq [B, D], dk, dv [N, D], dbias [N, h], all f32.
//   Sample b owns rows offsets[b]..offsets[b+1] (checked by check::attn). The host cuts every
//   sample into tiles of at most CH rows, CH = clamp(65536 / d_k, 64, 1024):
//   tiles[3c..3c+3] = (sample, first row, end row); toff [B+1]: sample b owns tiles
//   toff[b]..toff[b+1] (a sample with no rows has none). The tensor forms cut the same tiles on
//   the device (shaders/attn_tiles.wgsl) into n_tiles slots, the slots past the last real tile
//   holding the empty tile (0, 0, 0): a pass over it reads no row of k or v, writes only its own
//   scratch record, which no sample pass reads. Scratch: per (tile, head) w = c*h + a a
//   record of `rec` floats at w*rec (fwd: m, z, u[d_k], rec = 2 + d_k; bwd: Σpg, dq part[d_k],
//   rec = 1 + d_k), then per (sample, head) stats at stats_off (fwd: M, Z; bwd: Σpg).
// Geometry: workgroups of 64 invocations on a 2-D grid flattened as w = wid.x + wid.y * nwg.x.
//   Tile passes: one workgroup per (tile, head); sample passes: one per (sample, head).
// Loops are bounded so that llvmpipe's cap of 65,535 loop iterations per invocation is never hit
//   for shapes that fit one storage binding: a tile pass walks ≤ 16 rows per invocation for the
//   logits and ≤ ceil(d_k/64) * CH/R ≤ ~2048 row steps for the column sums; a sample pass walks
//   its sample's tiles (≤ 32k tiles in a 128 MiB binding).
// Column sums ("stripes"): with cols = min(d_k, 64) and R = 64 / cols, invocation (stripe, t)
//   adds rows stripe, stripe + R, ... of the tile in order, then one invocation per column adds
//   the R stripe partials in stripe order. Workgroup max/sum reductions come from common.wgsl
//   (subgroups or a tree in workgroup memory): fixed shape, so results repeat run to run.
// attn_fwd_tile: α_r = s q_a·k_{r,a} + bias[r,a] (one row per invocation, d_k in order) → p (as
//   scratch); m = max α, e_r = exp(α_r − m), z = Σ e, u_t = Σ_r e_r v_{r,t} (stripes) → record.
// attn_fwd_combine: M = max_c m_c, Z = Σ_c z_c exp(m_c − M), pooled_t = Σ_c u_{c,t} exp(m_c − M) / Z
//   (tiles in order); (M, Z) → stats. A sample with no tile gets pooled = 0.
// attn_fwd_norm: p_r = exp(α_r − M) / Z.
// attn_bwd_tile: g_r = dpooled_a·v_{r,a} → dbias (as scratch); Σ_r p_r g_r (workgroup sum) → record.
// attn_bwd_combine: Σpg = the tiles' partial sums added in tile order → stats.
// attn_bwd_rows: dα_r = p_r (g_r − Σpg) → dbias; dk_{r,a} = (s dα_r) q_a, dv_{r,a} = p_r dpooled_a;
//   dq part_t = Σ_r (s dα_r) k_{r,t} (stripes) → record.
// attn_bwd_dq: dq_t = Σ_c part_{c,t} in tile order (0 for a sample with no tile).
// Every output element is written with `=` by exactly one invocation (gradients are not
// accumulated); no atomics.
struct Params { n_tiles: u32, n_samples: u32, d: u32, heads: u32, dk: u32, scale: f32, stats_off: u32, pad: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> tiles: array<u32>;
@group(0) @binding(6) var<storage, read> toff: array<u32>;
@group(0) @binding(7) var<storage, read> dpooled: array<f32>;
@group(0) @binding(8) var<storage, read_write> p: array<f32>;
@group(0) @binding(9) var<storage, read_write> out_b: array<f32>;   // pooled (fwd) / dq (bwd)
@group(0) @binding(10) var<storage, read_write> gk: array<f32>;     // dk (bwd)
@group(0) @binding(11) var<storage, read_write> gv: array<f32>;     // dv (bwd)
@group(0) @binding(12) var<storage, read_write> gbias: array<f32>;  // dbias (bwd)
@group(0) @binding(13) var<storage, read_write> scratch: array<f32>;

//#include "common.wgsl"
const RWG: u32 = 64u;  // workgroup size, as common.wgsl's reductions need it
const CHMAX: u32 = 1024u;
var<workgroup> row_a: array<f32, CHMAX>;  // e_r (fwd) / s·dα_r (bwd), per row of the tile
var<workgroup> row_b: array<f32, CHMAX>;  // p_r (bwd)
var<workgroup> part: array<f32, RWG>;

// q[qb..qb+d_k] · x[xb..xb+d_k], d_k in order (unrolled by 4: fewer loop trips on llvmpipe).
fn dot_q(qb: u32, xb: u32) -> f32 {
    var acc = 0.0;
    let d4 = P.dk & ~3u;
    var t = 0u;
    for (; t < d4; t = t + 4u) {
        acc = acc + q[qb + t] * k[xb + t];
        acc = acc + q[qb + t + 1u] * k[xb + t + 1u];
        acc = acc + q[qb + t + 2u] * k[xb + t + 2u];
        acc = acc + q[qb + t + 3u] * k[xb + t + 3u];
    }
    for (; t < P.dk; t++) { acc = acc + q[qb + t] * k[xb + t]; }
    return acc;
}

fn dot_dp(db: u32, xb: u32) -> f32 {
    var acc = 0.0;
    let d4 = P.dk & ~3u;
    var t = 0u;
    for (; t < d4; t = t + 4u) {
        acc = acc + dpooled[db + t] * v[xb + t];
        acc = acc + dpooled[db + t + 1u] * v[xb + t + 1u];
        acc = acc + dpooled[db + t + 2u] * v[xb + t + 2u];
        acc = acc + dpooled[db + t + 3u] * v[xb + t + 3u];
    }
    for (; t < P.dk; t++) { acc = acc + dpooled[db + t] * v[xb + t]; }
    return acc;
}

@compute @workgroup_size(64)
fn attn_fwd_tile(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 lanes: Lanes) {
    let lid = lanes_setup(lanes);
    let w = wid.x + wid.y * nwg.x;
    if (w >= P.n_tiles * P.heads) { return; }
    let c = w / P.heads;
    let a = w - c * P.heads;
    let b = tiles[3u * c];
    let rs = tiles[3u * c + 1u];
    let n = tiles[3u * c + 2u] - rs;
    let qb = b * P.d + a * P.dk;
    var m = bitcast<f32>(0xff800000u);
    for (var i = lid; i < n; i = i + RWG) {
        let r = rs + i;
        let al = dot_q(qb, r * P.d + a * P.dk) * P.scale + bias[r * P.heads + a];
        p[r * P.heads + a] = al;
        row_a[i] = al;
        m = max(m, al);
    }
    let mc = wg_max_f32(m);
    var z = 0.0;
    for (var i = lid; i < n; i = i + RWG) {
        let e = exp(row_a[i] - mc);
        row_a[i] = e;
        z = z + e;
    }
    let zc = wg_sum_f32(z); // its barriers also publish row_a
    let rec = w * (2u + P.dk);
    let cols = min(P.dk, RWG);
    let R = RWG / cols;
    let stripe = lid / cols;
    let tl = lid - stripe * cols;
    for (var t0 = 0u; t0 < P.dk; t0 = t0 + cols) {
        let t = t0 + tl;
        var acc = 0.0;
        if (stripe < R && t < P.dk) {
            for (var i = stripe; i < n; i = i + R) {
                acc = acc + row_a[i] * v[(rs + i) * P.d + a * P.dk + t];
            }
        }
        part[lid] = acc;
        workgroupBarrier();
        if (lid < cols && t < P.dk) {
            var s = 0.0;
            for (var j = 0u; j < R; j++) { s = s + part[j * cols + lid]; }
            scratch[rec + 2u + t] = s;
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        scratch[rec] = mc;
        scratch[rec + 1u] = zc;
    }
}

@compute @workgroup_size(64)
fn attn_fwd_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    lanes: Lanes) {
    let lid = lanes_setup(lanes);
    let w = wid.x + wid.y * nwg.x;
    if (w >= P.n_samples * P.heads) { return; }
    let b = w / P.heads;
    let a = w - b * P.heads;
    let c0 = toff[b];
    let c1 = toff[b + 1u];
    let rec = 2u + P.dk;
    var m = bitcast<f32>(0xff800000u);
    for (var c = c0 + lid; c < c1; c = c + RWG) { m = max(m, scratch[(c * P.heads + a) * rec]); }
    let M = wg_max_f32(m);
    var z = 0.0;
    for (var c = c0 + lid; c < c1; c = c + RWG) {
        let x = (c * P.heads + a) * rec;
        z = z + scratch[x + 1u] * exp(scratch[x] - M);
    }
    let Z = wg_sum_f32(z);
    let ob = b * P.d + a * P.dk;
    for (var t = lid; t < P.dk; t = t + RWG) {
        var acc = 0.0;
        for (var c = c0; c < c1; c++) {
            let x = (c * P.heads + a) * rec;
            acc = acc + scratch[x + 2u + t] * exp(scratch[x] - M);
        }
        out_b[ob + t] = select(0.0, acc / Z, c1 > c0);
    }
    if (lid == 0u) {
        scratch[P.stats_off + 2u * w] = M;
        scratch[P.stats_off + 2u * w + 1u] = Z;
    }
}

@compute @workgroup_size(64)
fn attn_fwd_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let w = wid.x + wid.y * nwg.x;
    if (w >= P.n_tiles * P.heads) { return; }
    let c = w / P.heads;
    let a = w - c * P.heads;
    let b = tiles[3u * c];
    let rs = tiles[3u * c + 1u];
    let re = tiles[3u * c + 2u];
    let st = P.stats_off + 2u * (b * P.heads + a);
    let M = scratch[st];
    let Z = scratch[st + 1u];
    for (var r = rs + lid; r < re; r = r + RWG) {
        let x = r * P.heads + a;
        p[x] = exp(p[x] - M) / Z;
    }
}

@compute @workgroup_size(64)
fn attn_bwd_tile(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 lanes: Lanes) {
    let lid = lanes_setup(lanes);
    let w = wid.x + wid.y * nwg.x;
    if (w >= P.n_tiles * P.heads) { return; }
    let c = w / P.heads;
    let a = w - c * P.heads;
    let b = tiles[3u * c];
    let rs = tiles[3u * c + 1u];
    let re = tiles[3u * c + 2u];
    let db = b * P.d + a * P.dk;
    var s = 0.0;
    for (var r = rs + lid; r < re; r = r + RWG) {
        let g = dot_dp(db, r * P.d + a * P.dk);
        let x = r * P.heads + a;
        gbias[x] = g;
        s = s + p[x] * g;
    }
    let sc = wg_sum_f32(s);
    if (lid == 0u) { scratch[w * (1u + P.dk)] = sc; }
}

@compute @workgroup_size(64)
fn attn_bwd_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let w = wid.x + wid.y * nwg.x;
    if (w >= P.n_samples * P.heads || lid != 0u) { return; }
    let b = w / P.heads;
    let a = w - b * P.heads;
    var s = 0.0;
    for (var c = toff[b]; c < toff[b + 1u]; c++) { s = s + scratch[(c * P.heads + a) * (1u + P.dk)]; }
    scratch[P.stats_off + w] = s;
}

@compute @workgroup_size(64)
fn attn_bwd_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let w = wid.x + wid.y * nwg.x;
    if (w >= P.n_tiles * P.heads) { return; }
    let c = w / P.heads;
    let a = w - c * P.heads;
    let b = tiles[3u * c];
    let rs = tiles[3u * c + 1u];
    let n = tiles[3u * c + 2u] - rs;
    let qb = b * P.d + a * P.dk;
    let spg = scratch[P.stats_off + b * P.heads + a];
    for (var i = lid; i < n; i = i + RWG) {
        let x = (rs + i) * P.heads + a;
        let pr = p[x];
        let da = pr * (gbias[x] - spg);
        gbias[x] = da;
        row_a[i] = P.scale * da;
        row_b[i] = pr;
    }
    workgroupBarrier();
    let rec = w * (1u + P.dk);
    let cols = min(P.dk, RWG);
    let R = RWG / cols;
    let stripe = lid / cols;
    let tl = lid - stripe * cols;
    for (var t0 = 0u; t0 < P.dk; t0 = t0 + cols) {
        let t = t0 + tl;
        var acc = 0.0;
        if (stripe < R && t < P.dk) {
            let qt = q[qb + t];
            let dpt = dpooled[qb + t];
            for (var i = stripe; i < n; i = i + R) {
                let o = (rs + i) * P.d + a * P.dk + t;
                let sda = row_a[i];
                gk[o] = sda * qt;
                gv[o] = row_b[i] * dpt;
                acc = acc + sda * k[o];
            }
        }
        part[lid] = acc;
        workgroupBarrier();
        if (lid < cols && t < P.dk) {
            var s = 0.0;
            for (var j = 0u; j < R; j++) { s = s + part[j * cols + lid]; }
            scratch[rec + 1u + t] = s;
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(64)
fn attn_bwd_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let w = wid.x + wid.y * nwg.x;
    if (w >= P.n_samples * P.heads) { return; }
    let b = w / P.heads;
    let a = w - b * P.heads;
    let c0 = toff[b];
    let c1 = toff[b + 1u];
    let ob = b * P.d + a * P.dk;
    for (var t = lid; t < P.dk; t = t + RWG) {
        var acc = 0.0;
        for (var c = c0; c < c1; c++) { acc = acc + scratch[(c * P.heads + a) * (1u + P.dk) + 1u + t]; }
        out_b[ob + t] = acc;
    }
}
