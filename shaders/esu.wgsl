// esu — ESU softmax pooling (SPEC §3.5) over the GSU finalists, then · W^o.
// Shapes: per candidate b: K' = count_b ≤ K finalists (positions from the GSU), h heads,
//         d_k = D / h, J cross features. q_b = P_Q[cand_b] (t0_t), k_l = P_K[item_l] (t1_t),
//         v_l = P_V[item_l] (t2_t) + Σ_j U[cross_{l,j}] (f32 [V, D]), W^o f32 [D, D],
//         bias [ΣL, h] f32. cand_info as in gsu_topk. scratch: α/p at [b, f, a] (ΣB × K × h),
//         pooled at pool_off + [b, D].
// Geometry: one workgroup of 64 invocations per candidate (2-D grid).
// esu_fwd_v1: (1) α_{f,a} = q_a · k_{l_f,a} / √d_k + bias[l_f, a], one finalist per invocation;
//         (2) per head, max-subtracted softmax in f32: workgroup max and sum reductions
//         (subgroup ops where the adapter has them, else a tree in workgroup memory);
//         (3) pooled_i = Σ_f p_{f,a(i)} v_{l_f,i}, one output dimension per invocation, f in
//         rank order; (4) out_o = Σ_i pooled_i W^o[i, o], one output per invocation.
struct Params { n_cand: u32, d: u32, heads: u32, dk: u32, k: u32, n_cross: u32, scale: f32, pool_off: u32 }
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

const RWG: u32 = 64u;
var<workgroup> wg_cnt: u32;

@compute @workgroup_size(64)
fn esu_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32
//#if SUBGROUP
              , @builtin(subgroup_id) sgid: u32, @builtin(num_subgroups) nsg: u32,
              @builtin(subgroup_invocation_id) sgl: u32
//#endif
              ) {
    g_lid = lid;
//#if SUBGROUP
    g_sgid = sgid;
    g_nsg = nsg;
    g_sgl = sgl;
//#endif
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
