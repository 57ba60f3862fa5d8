// gsu_topk — CP-GSU relevance + top-K (SPEC §3.4), fused: the B×L scores are never stored.
// Shapes: per candidate b of request r: q_b = P_Q[cand_b] (t0_t), the request's L behaviours
//         k_l = P_K[item_l] (t1_t), bias [ΣL, h] f32 (cross bias + ln n), D = h * d_k,
//         K = min(k, L) ≤ 256 kept. cand_info[3b..3b+3] = (first behaviour, L, candidate item).
// Score: g_{b,l} = (Σ_i q_i k_{l,i} / √d_k + Σ_a bias[l,a]) / h, dot in i order in f32.
// Order: key = score mapped to an order-preserving u32 (-0 folded into +0), ties broken by the
//         larger position; (key, pos) pairs are all distinct, so the top-K set is exact for
//         the f32 scores. Output: positions local to the request, descending; rows padded with
//         u32::MAX / -inf past count = min(k, L). A NaN score sets nan_flag (atomicMin of the
//         candidate index) and the host returns the same NonFinite error as the CPU backend.
// lavapipe note: llvmpipe stops any invocation after 65535 loop iterations in total; v2 stays
//         far below it for L ≤ 2^20, v1 (one invocation walks all L) only for L ≲ 3000.
// gsu_topk_fwd_v1 (simple): one invocation per candidate (64 per workgroup), scoring l = 0..L
//         in order and inserting into a sorted list of K entries kept in its own output row.
// gsu_topk_fwd_v2 (fused, default): one workgroup of 256 invocations per candidate. The
//         sequence is scored in chunks of 256 (one position per invocation); the running
//         top-256 and the chunk live in workgroup memory (2 × 512 u32 = 4 KiB); when any chunk
//         entry beats the current K-th (a workgroup max-reduction from common.wgsl: subgroups
//         or a tree in workgroup memory), a 512-entry bitonic sort (45 barrier steps) merges
//         the chunk in.
struct Params { n_cand: u32, d: u32, heads: u32, k: u32, scale: f32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> pq: array<t0_t>;
@group(0) @binding(2) var<storage, read> pk: array<t1_t>;
@group(0) @binding(3) var<storage, read> cand_info: array<u32>;
@group(0) @binding(4) var<storage, read> items: array<u32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> out_idx: array<u32>;
@group(0) @binding(7) var<storage, read_write> out_score: array<u32>; // f32 bits
@group(0) @binding(8) var<storage, read_write> out_count: array<u32>;
@group(0) @binding(9) var<storage, read_write> nan_flag: array<atomic<u32>>;

//#include "common.wgsl"
const RWG: u32 = 256u;  // workgroup size of v2, as common.wgsl's reductions need it

fn score(qb: u32, l: u32) -> f32 {
    let kb = items[l] * P.d;
    var dot = 0.0;
    // Unrolled by 8, same sequential order: llvmpipe caps the loop iterations of one
    // invocation at 65535 in all (gallivm's loop limiter), so long sequences need few trips.
    let d8 = P.d & ~7u;
    var i = 0u;
    for (; i < d8; i = i + 8u) {
        dot = dot + f32(pq[qb + i]) * f32(pk[kb + i]);
        dot = dot + f32(pq[qb + i + 1u]) * f32(pk[kb + i + 1u]);
        dot = dot + f32(pq[qb + i + 2u]) * f32(pk[kb + i + 2u]);
        dot = dot + f32(pq[qb + i + 3u]) * f32(pk[kb + i + 3u]);
        dot = dot + f32(pq[qb + i + 4u]) * f32(pk[kb + i + 4u]);
        dot = dot + f32(pq[qb + i + 5u]) * f32(pk[kb + i + 5u]);
        dot = dot + f32(pq[qb + i + 6u]) * f32(pk[kb + i + 6u]);
        dot = dot + f32(pq[qb + i + 7u]) * f32(pk[kb + i + 7u]);
    }
    for (; i < P.d; i++) {
        dot = dot + f32(pq[qb + i]) * f32(pk[kb + i]);
    }
    var b = 0.0;
    var a = 0u;
    for (; a + 4u <= P.heads; a = a + 4u) {
        b = b + bias[l * P.heads + a];
        b = b + bias[l * P.heads + a + 1u];
        b = b + bias[l * P.heads + a + 2u];
        b = b + bias[l * P.heads + a + 3u];
    }
    for (; a < P.heads; a++) {
        b = b + bias[l * P.heads + a];
    }
    return (dot * P.scale + b) / f32(P.heads);
}

fn is_nan(s: f32) -> bool {
    let b = bitcast<u32>(s);
    return (b & 0x7f800000u) == 0x7f800000u && (b & 0x007fffffu) != 0u;
}

// Order-preserving map f32 -> u32 (larger score, larger key); never 0 for a non-NaN score.
fn key_of(s: f32) -> u32 {
    var b = bitcast<u32>(s);
    if ((b & 0x7fffffffu) == 0u) { b = 0u; }
    if ((b & 0x80000000u) != 0u) { return ~b; }
    return b | 0x80000000u;
}

fn score_of(k: u32) -> f32 {
    if ((k & 0x80000000u) != 0u) { return bitcast<f32>(k & 0x7fffffffu); }
    return bitcast<f32>(~k);
}

fn write_row(c: u32, t: u32, kk: u32, key: u32, pos: u32) {
    if (t < kk) {
        out_idx[c * P.k + t] = pos;
        out_score[c * P.k + t] = bitcast<u32>(score_of(key));
    } else {
        out_idx[c * P.k + t] = 0xffffffffu;
        out_score[c * P.k + t] = 0xff800000u;
    }
}

@compute @workgroup_size(64)
fn gsu_topk_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let c = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (c >= P.n_cand) { return; }
    let s0 = cand_info[3u * c];
    let len = cand_info[3u * c + 1u];
    let qb = cand_info[3u * c + 2u] * P.d;
    let kk = min(P.k, len);
    // The running list lives in the candidate's own output row (keys in out_score as u32,
    // positions in out_idx): large private arrays mis-run on lavapipe for L > ~500.
    let rb = c * P.k;
    var cnt = 0u;
    var saw_nan = false;
    for (var l = 0u; l < len; l++) {
        let s = score(qb, s0 + l);
        saw_nan = saw_nan || is_nan(s);
        let key = key_of(s);
        // Full: an equal key wins (its position is larger), a smaller one is dropped.
        let full = cnt >= kk;
        if (!full || key >= out_score[rb + kk - 1u]) {
            var j = select(cnt, kk - 1u, full);
            if (!full) { cnt = cnt + 1u; }
            while (j > 0u && out_score[rb + j - 1u] <= key) {
                out_score[rb + j] = out_score[rb + j - 1u];
                out_idx[rb + j] = out_idx[rb + j - 1u];
                j = j - 1u;
            }
            out_score[rb + j] = key;
            out_idx[rb + j] = l;
        }
    }
    if (saw_nan) { atomicMin(&nan_flag[0], c); }
    for (var t = 0u; t < P.k; t++) {
        write_row(c, t, kk, out_score[rb + t], out_idx[rb + t]);
    }
    out_count[c] = kk;
}

var<workgroup> sk: array<u32, 512>;
var<workgroup> sp: array<u32, 512>;
var<workgroup> wg_len: u32;

@compute @workgroup_size(256)
fn gsu_topk_fwd_v2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   lanes: Lanes) {
    let lid = lanes_setup(lanes);
    let c = wid.x + wid.y * nwg.x;
    if (c >= P.n_cand) { return; }
    let s0 = cand_info[3u * c];
    let qb = cand_info[3u * c + 2u] * P.d;
    if (lid == 0u) { wg_len = cand_info[3u * c + 1u]; }
    let len = workgroupUniformLoad(&wg_len);
    let kk = min(P.k, len);
    sk[lid] = 0u;
    sp[lid] = 0u;
    for (var base = 0u; base < len; base = base + 256u) {
        let l = base + lid;
        var key = 0u;
        if (l < len) {
            let s = score(qb, s0 + l);
            if (is_nan(s)) { atomicMin(&nan_flag[0], c); }
            key = key_of(s);
        }
        workgroupBarrier();
        let tkey = sk[kk - 1u];
        let tpos = sp[kk - 1u];
        let beats = l < len && (key > tkey || (key == tkey && l > tpos));
        sk[256u + lid] = key;
        sp[256u + lid] = select(0u, l, l < len);
        let any = wg_max_u32(select(0u, 1u, beats));
        if (any != 0u) {
            for (var size = 2u; size <= 512u; size = size * 2u) {
                for (var stride = size / 2u; stride > 0u; stride = stride / 2u) {
                    let i = 2u * stride * (lid / stride) + (lid % stride);
                    let j = i + stride;
                    let desc = (i & size) == 0u;
                    let ak = sk[i];
                    let ap = sp[i];
                    let bk = sk[j];
                    let bp = sp[j];
                    let a_less = ak < bk || (ak == bk && ap < bp);
                    if (a_less == desc) {
                        sk[i] = bk;
                        sp[i] = bp;
                        sk[j] = ak;
                        sp[j] = ap;
                    }
                    workgroupBarrier();
                }
            }
        }
    }
    workgroupBarrier();
    for (var t = lid; t < P.k; t = t + 256u) {
        write_row(c, t, kk, sk[t], sp[t]);
    }
    if (lid == 0u) { out_count[c] = kk; }
}
