// esu — ESU softmax pooling (SPEC §3.5) over the GSU finalists, then · W^o.
// Shapes: per candidate b: K' = count_b ≤ K finalists (positions from the GSU), h heads,
//         d_k = D / h, J cross features. q_b = P_Q[cand_b] (t0_t), k_l = P_K[item_l] (t1_t),
//         v_l = P_V[item_l] (t2_t) + Σ_j U[cross_{l,j}] (f32 [V, D]), W^o f32 [D, D],
//         bias [ΣL, h] f32. cand_info as in gsu_topk. out [ΣB, D] f32, every element of every
//         candidate row written once with `=` (both versions).
// Per candidate (both versions, same operations in the same order):
//   α_{f,a} = (Σ_{i in head a, ascending} q_i k_{l_f,i}) · scale + bias[l_f, a]     (f32)
//   p_{f,a} = exp(α_{f,a} − m_a) / z_a, m_a = max_f α, z_a = Σ_f exp(α − m_a): invocation t
//             of 64 takes f = t, t+64, ... (running max / sum in that order), then the shared
//             workgroup reductions (common.wgsl: subgroup ops where the adapter has them, else a
//             tree in workgroup memory) combine the 64 partials;
//   v_{f,i} = f32(P_V) + U[cross_0] + ... (j ascending);
//   pooled_i = Σ_f p_{f,a(i)} v_{f,i} (f ascending);  out_o = Σ_i pooled_i W^o[i, o] (i ascending).
// Every product-sum is written `acc = acc + x * y` in both versions, so whatever contraction
// the driver applies it applies to both: v2 == v1 bit for bit (tests/parity/esu.rs, wgpu_v2),
// provided both pipelines get the same subgroup size (fixed on lavapipe and NVIDIA; a driver
// that picks the width per pipeline could differ in the last bits of the softmax sums).
// esu_fwd_v1 — one workgroup of 64 per candidate (2-D grid, P.n_cand). scratch: α/p at
//         [b, f, a] (ΣB × K × h), pooled at pool_off + [b, D]. (1) one finalist per invocation,
//         its ids and rows read from global memory; (2) per head, softmax in place; (3) one
//         output dimension per invocation, each finalist a dependent chain idx → row → item /
//         cross → P_V / U; (4) one output per invocation, all of W^o read per candidate.
// esu_fwd_v2 — one workgroup of 64 per GROUP of ng ≤ G ≤ 8 consecutive candidates of one
//         request (2-D grid, P.n_cand = number of groups). Group offsets: grp_off ≠ 0xffffffff:
//         cand_info[grp_off + g] .. cand_info[grp_off + g + 1] (the host appends them after the
//         [3ΣB] records; a request's candidates cut into groups of G, the last one ragged);
//         grp_off = 0xffffffff: group g is candidate g alone. The group's finalists are
//         flattened into pairs q = offs[g] + f (np = Σ counts ≤ G·K). Workgroup memory only:
//   (0) per candidate s0, count → pair offsets; q rows staged (f32) [g][D]; pooled = 0.
//   (1) ids first: one pair per invocation reads idx → l → items[l], cross[l, ..], bias[l, ..]
//       into ids [np] + [np][J] and α [np][h], for all pairs at once (no per-finalist chain).
//   (2) logits: key rows of R = tile_rows pairs staged (f32) [R][D]; one invocation per
//       (pair, head) runs v1's dot (unrolled by 4, same order) → α in place of the bias.
//   (3) softmax: per (candidate, head) in turn, v1's code on the candidate's pairs.
//   (4) pooling: v rows (P_V + Σ_j U) of R pairs staged [R][D]; one invocation per
//       (candidate, column) folds its candidate's pairs of the tile in f order into pooled.
//   (5) · W^o: W^o staged in tiles of wo_rows rows [wo_rows][D], each read once per group; an
//       invocation owns column o of 4 candidates (4 accumulators, carried across tiles in the
//       q array), so each staged element feeds up to 4 outputs; the last tile writes out.
//   Fits (esu.rs `v2_plan`, else v1 runs): G·D ≤ QW (1024), P·(1 + J) ≤ IW (2048) and
//   P·h ≤ AW (2048) with P = G·K, R·D and wo_rows·D ≤ TW (1536); ~31 KiB of workgroup memory
//   in all (checked against the device's limit). On a CPU adapter (llvmpipe ends an invocation
//   after 65,535 loop trips in all) the host also shrinks G until its trip estimate fits.
// Versions: v1, v2 (the host's EsuVersion; TWIN_ESU=v1|v2).
struct Params { n_cand: u32, d: u32, heads: u32, dk: u32, k: u32, n_cross: u32, scale: f32, pool_off: u32,
                grp_off: u32, tile_rows: u32, wo_rows: u32, pad: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> pq: array<t0_t>;
@group(0) @binding(2) var<storage, read> pk: array<t1_t>;
@group(0) @binding(3) var<storage, read> pv: array<t2_t>;
@group(0) @binding(4) var<storage, read> cv: array<f32>;
@group(0) @binding(5) var<storage, read> wo: array<f32>;
@group(0) @binding(6) var<storage, read> cand_info: array<u32>;
@group(0) @binding(7) var<storage, read> items: array<u32>;
@group(0) @binding(8) var<storage, read> cross: array<u32>;
@group(0) @binding(9) var<storage, read> bias: array<f32>;
@group(0) @binding(10) var<storage, read> tk_idx: array<u32>;
@group(0) @binding(11) var<storage, read> tk_count: array<u32>;
@group(0) @binding(12) var<storage, read_write> out: array<f32>;
@group(0) @binding(13) var<storage, read_write> scratch: array<f32>;

//#include "common.wgsl"
const RWG: u32 = 64u;  // workgroup size, as common.wgsl's reductions need it
var<workgroup> wg_cnt: u32;

@compute @workgroup_size(64)
fn esu_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              lanes: Lanes) {
    let lid = lanes_setup(lanes);
    let c = wid.x + wid.y * nwg.x;
    if (c >= P.n_cand) { return; }
    let s0 = cand_info[3u * c];
    let qb = cand_info[3u * c + 2u] * P.d;
    if (lid == 0u) { wg_cnt = tk_count[c]; }
    let cnt = workgroupUniformLoad(&wg_cnt);
    let ab = c * P.k * P.heads;
    let tb = c * P.k;
    // (1) logits of the finalists
    for (var f = lid; f < cnt; f = f + 64u) {
        let l = s0 + tk_idx[tb + f];
        let kb = items[l] * P.d;
        for (var a = 0u; a < P.heads; a++) {
            var dot = 0.0;
            for (var i = a * P.dk; i < (a + 1u) * P.dk; i++) {
                dot = dot + f32(pq[qb + i]) * f32(pk[kb + i]);
            }
            scratch[ab + f * P.heads + a] = dot * P.scale + bias[l * P.heads + a];
        }
    }
    // (2) per-head softmax; each invocation rewrites only the entries it wrote in (1)
    for (var a = 0u; a < P.heads; a++) {
        var m = bitcast<f32>(0xff800000u);
        for (var f = lid; f < cnt; f = f + 64u) { m = max(m, scratch[ab + f * P.heads + a]); }
        m = wg_max_f32(m);
        var z = 0.0;
        for (var f = lid; f < cnt; f = f + 64u) { z = z + exp(scratch[ab + f * P.heads + a] - m); }
        z = wg_sum_f32(z);
        for (var f = lid; f < cnt; f = f + 64u) {
            let e = ab + f * P.heads + a;
            scratch[e] = exp(scratch[e] - m) / z;
        }
    }
    storageBarrier();
    workgroupBarrier();
    // (3) pooling, one dimension per invocation
    let pb = P.pool_off + c * P.d;
    for (var i = lid; i < P.d; i = i + 64u) {
        let a = i / P.dk;
        var acc = 0.0;
        for (var f = 0u; f < cnt; f++) {
            let l = s0 + tk_idx[tb + f];
            var v = f32(pv[items[l] * P.d + i]);
            for (var j = 0u; j < P.n_cross; j++) {
                v = v + cv[cross[l * P.n_cross + j] * P.d + i];
            }
            acc = acc + scratch[ab + f * P.heads + a] * v;
        }
        scratch[pb + i] = acc;
    }
    storageBarrier();
    workgroupBarrier();
    // (4) · W^o
    for (var o = lid; o < P.d; o = o + 64u) {
        var acc = 0.0;
        for (var i = 0u; i < P.d; i++) {
            acc = acc + scratch[pb + i] * wo[i * P.d + o];
        }
        out[c * P.d + o] = acc;
    }
}

// ---- v2: a group of candidates per workgroup ------------------------------------------------

const GMAX: u32 = 8u;
const QW: u32 = 1024u;  // q rows [G][D], then the · W^o accumulators [G][D]
const PW: u32 = 1024u;  // pooled [G][D]
const TW: u32 = 1536u;  // staged tile: keys / values [R][D], W^o [wo_rows][D]
const IW: u32 = 2048u;  // ids: items [np], then cross rows [np][J]
const AW: u32 = 2048u;  // bias → α → p [np][h]
var<workgroup> v2_q: array<f32, QW>;
var<workgroup> v2_pool: array<f32, PW>;
var<workgroup> v2_tile: array<f32, TW>;
var<workgroup> v2_ids: array<u32, IW>;
var<workgroup> v2_al: array<f32, AW>;
var<workgroup> v2_offs: array<u32, 9>;      // pair offsets of the group's candidates (+ np)
var<workgroup> v2_s0: array<u32, GMAX>;     // first behaviour of each candidate's request
var<workgroup> v2_np: u32;

// Candidate (within the group) of pair q < np: offs[g] ≤ q < offs[g + 1].
fn v2_cand(q: u32, ng: u32) -> u32 {
    var g = 0u;
    for (; g + 1u < ng; g++) {
        if (v2_offs[g + 1u] > q) { break; }
    }
    return g;
}

@compute @workgroup_size(64)
fn esu_fwd_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              lanes: Lanes) {
    let lid = lanes_setup(lanes);
    let grp = wid.x + wid.y * nwg.x;
    if (grp >= P.n_cand) { return; }
    let D = P.d;
    let H = P.heads;
    let J = P.n_cross;
    let dk = P.dk;
    var c0 = grp;
    var ng = 1u;
    if (P.grp_off != 0xffffffffu) {
        c0 = cand_info[P.grp_off + grp];
        ng = cand_info[P.grp_off + grp + 1u] - c0;
    }
    // (0) pair offsets and request starts; q rows; pooled = 0.
    if (lid == 0u) {
        var acc = 0u;
        for (var g = 0u; g < ng; g++) {
            v2_offs[g] = acc;
            v2_s0[g] = cand_info[3u * (c0 + g)];
            acc = acc + tk_count[c0 + g];
        }
        for (var g = ng; g <= GMAX; g++) { v2_offs[g] = acc; }
        v2_np = acc;
    }
    for (var w = lid; w < ng * D; w = w + 64u) {
        let g = w / D;
        v2_q[w] = f32(pq[cand_info[3u * (c0 + g) + 2u] * D + (w - g * D)]);
        v2_pool[w] = 0.0;
    }
    let np = workgroupUniformLoad(&v2_np);
    // (1) ids first, every pair of the group at once.
    for (var q = lid; q < np; q = q + 64u) {
        let g = v2_cand(q, ng);
        let l = v2_s0[g] + tk_idx[(c0 + g) * P.k + (q - v2_offs[g])];
        v2_ids[q] = items[l];
        for (var j = 0u; j < J; j++) { v2_ids[np + q * J + j] = cross[l * J + j]; }
        for (var a = 0u; a < H; a++) { v2_al[q * H + a] = bias[l * H + a]; }
    }
    workgroupBarrier();
    // (2) logits, R pairs at a time.
    let R = P.tile_rows;
    for (var t0 = 0u; t0 < np; t0 = t0 + R) {
        let nr = min(R, np - t0);
        for (var rr = 0u; rr < nr; rr++) {
            let kb = v2_ids[t0 + rr] * D;
            for (var e = lid; e < D; e = e + 64u) { v2_tile[rr * D + e] = f32(pk[kb + e]); }
        }
        workgroupBarrier();
        for (var w = lid; w < nr * H; w = w + 64u) {
            let rr = w / H;
            let a = w - rr * H;
            let q = t0 + rr;
            let qb = v2_cand(q, ng) * D + a * dk;
            let kb = rr * D + a * dk;
            var dot = 0.0;
            let d4 = dk & ~3u;
            var i = 0u;
            for (; i < d4; i = i + 4u) {
                dot = dot + v2_q[qb + i] * v2_tile[kb + i];
                dot = dot + v2_q[qb + i + 1u] * v2_tile[kb + i + 1u];
                dot = dot + v2_q[qb + i + 2u] * v2_tile[kb + i + 2u];
                dot = dot + v2_q[qb + i + 3u] * v2_tile[kb + i + 3u];
            }
            for (; i < dk; i++) { dot = dot + v2_q[qb + i] * v2_tile[kb + i]; }
            v2_al[q * H + a] = dot * P.scale + v2_al[q * H + a];
        }
        workgroupBarrier();
    }
    // (3) softmax per (candidate, head): v1's loops and reductions on the candidate's pairs.
    for (var g = 0u; g < ng; g++) {
        let base = v2_offs[g];
        let cnt = v2_offs[g + 1u] - base;
        for (var a = 0u; a < H; a++) {
            var m = bitcast<f32>(0xff800000u);
            for (var f = lid; f < cnt; f = f + 64u) { m = max(m, v2_al[(base + f) * H + a]); }
            m = wg_max_f32(m);
            var z = 0.0;
            for (var f = lid; f < cnt; f = f + 64u) { z = z + exp(v2_al[(base + f) * H + a] - m); }
            z = wg_sum_f32(z);
            for (var f = lid; f < cnt; f = f + 64u) {
                let e = (base + f) * H + a;
                v2_al[e] = exp(v2_al[e] - m) / z;
            }
        }
    }
    workgroupBarrier();
    // (4) pooling, R pairs at a time: v rows staged, then (candidate, column) folds in f order.
    for (var t0 = 0u; t0 < np; t0 = t0 + R) {
        let nr = min(R, np - t0);
        for (var rr = 0u; rr < nr; rr++) {
            let q = t0 + rr;
            let vb = v2_ids[q] * D;
            for (var i = lid; i < D; i = i + 64u) {
                var v = f32(pv[vb + i]);
                for (var j = 0u; j < J; j++) {
                    v = v + cv[v2_ids[np + q * J + j] * D + i];
                }
                v2_tile[rr * D + i] = v;
            }
        }
        workgroupBarrier();
        for (var w = lid; w < ng * D; w = w + 64u) {
            let g = w / D;
            let i = w - g * D;
            let a = i / dk;
            let lo = max(v2_offs[g], t0);
            let hi = min(v2_offs[g + 1u], t0 + nr);
            if (lo < hi) {
                var acc = v2_pool[w];
                for (var q = lo; q < hi; q++) {
                    acc = acc + v2_al[q * H + a] * v2_tile[(q - t0) * D + i];
                }
                v2_pool[w] = acc;
            }
        }
        workgroupBarrier();
    }
    // (5) · W^o in tiles of wo_rows rows, each staged once for the group; column o of 4
    // candidates per invocation (slots past ng repeat the last candidate and are not stored).
    let TI = P.wo_rows;
    let nq = (ng + 3u) / 4u;
    for (var i0 = 0u; i0 < D; i0 = i0 + TI) {
        let ni = min(TI, D - i0);
        for (var w = lid; w < ni * D; w = w + 64u) { v2_tile[w] = wo[i0 * D + w]; }
        workgroupBarrier();
        let last = i0 + ni >= D;
        for (var w = lid; w < nq * D; w = w + 64u) {
            let gq = w / D;
            let o = w - gq * D;
            let g0 = gq * 4u;
            let p0 = g0 * D + i0;
            let p1 = min(g0 + 1u, ng - 1u) * D + i0;
            let p2 = min(g0 + 2u, ng - 1u) * D + i0;
            let p3 = min(g0 + 3u, ng - 1u) * D + i0;
            var a0 = 0.0;
            var a1 = 0.0;
            var a2 = 0.0;
            var a3 = 0.0;
            if (i0 > 0u) {
                a0 = v2_q[p0 - i0 + o];
                a1 = v2_q[p1 - i0 + o];
                a2 = v2_q[p2 - i0 + o];
                a3 = v2_q[p3 - i0 + o];
            }
            for (var i = 0u; i < ni; i++) {
                let wv = v2_tile[i * D + o];
                a0 = a0 + v2_pool[p0 + i] * wv;
                a1 = a1 + v2_pool[p1 + i] * wv;
                a2 = a2 + v2_pool[p2 + i] * wv;
                a3 = a3 + v2_pool[p3 + i] * wv;
            }
            let gn = min(4u, ng - g0);
            if (last) {
                out[(c0 + g0) * D + o] = a0;
                if (gn > 1u) { out[(c0 + g0 + 1u) * D + o] = a1; }
                if (gn > 2u) { out[(c0 + g0 + 2u) * D + o] = a2; }
                if (gn > 3u) { out[(c0 + g0 + 3u) * D + o] = a3; }
            } else {
                v2_q[p0 - i0 + o] = a0;
                if (gn > 1u) { v2_q[p1 - i0 + o] = a1; }
                if (gn > 2u) { v2_q[p2 - i0 + o] = a2; }
                if (gn > 3u) { v2_q[p3 - i0 + o] = a3; }
            }
        }
        workgroupBarrier();
    }
}
