// gsu_train — the training GSU (SPEC §5, step 2): score every long position against its sample's
// folded query, keep the top K per sample in sequence order, write the row map.
// Reference: src/backend/cpu/gsu_train.rs (read its module docs); launcher
// src/backend/wgpu/train_rows.rs.
// Shapes: B samples, H = 2 id + 2 small, h heads, J cross features; qbar [B, H], the tables
//   item [·, id], author [·, id], topic [·, small], duration [·, small], cb [ΣV, h] (read only
//   when P.bias), all f32. The staged batch `st` is bound whole; its sections start at word
//   offsets in P: feat [P, 4], cross [P, J], log_n [P] (f32 bits), long_offsets [B+1],
//   fin_offsets [B+1] (min(L_b, K) rows each). Ids were checked against the tables when staged.
//   Outputs: scores [n_long] f32, sel [n_fin] u32 (long position of each finalist), rowmap
//   [map_len] u32 (map_len = n_long + n_short + tail).
// gsu_train_fwd: one invocation per map position p (64 per workgroup, 2-D grid flattened as
//   wid.x + wid.y * nwg.x). p < n_long: the sample by binary search in long_offsets, then the
//   reference's score in its f32 op order:
//     dot = Σ_i x[i] qbar[b, i] (i ascending: item, author, topic, duration columns),
//     with bias: bs = Σ_j Σ_a cb[cross[p, j], a]; score = (dot q_scale + bs inv_h) + log_n[p],
//     without: score = dot q_scale;  → scores[p].
//   p ≥ n_long: rowmap[p] = n_fin + (p - n_long) (the tail after the finalists).
//   H + J h + log2 B loop trips per invocation.
// gsu_train_select_fwd: one workgroup of 256 invocations per sample (reads the scores the previous
//   dispatch wrote). L_b ≤ K: every position is a finalist. Else the K-th best (key, position)
//   pair, larger first (key = the score as an order-preserving u32, -0 folded into +0: SPEC's
//   order, a tie to the larger position), by radix select: 4 passes of 8 bits over the keys, then
//   up to 4 over the positions of the threshold key's ties (workgroup-atomic histograms of 256
//   bins; counts, so the result does not depend on the order of the atomics). A position is a
//   finalist iff key > T_key, or key == T_key and position ≥ T_pos: exactly K of them. Then a
//   compaction in position order (Hillis-Steele scan over chunks of 256): sel[fin_offsets[b] + i]
//   = position of the i-th finalist, rowmap[position] = fin_offsets[b] + i, and NOT_KEPT
//   (0xFFFFFFFF) for every other long position of the sample.
//   Loop trips per invocation ≤ 17 ceil(L_b / 256) + 2048: the host runs it only for
//   n_long ≤ 900,000 (llvmpipe stops an invocation after 65,535 loop trips in all).
// v1, one version of each entry. Every output element is written once, with `=`.
struct Params {
    n_samples: u32, n_long: u32, map_len: u32, n_fin: u32,
    k: u32, width: u32, id: u32, small: u32,
    heads: u32, n_cross: u32, bias: u32, q_scale: f32,
    inv_h: f32, feat_off: u32, cross_off: u32, logn_off: u32,
    long_off: u32, fin_off: u32, pad0: u32, pad1: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> qbar: array<f32>;
@group(0) @binding(2) var<storage, read> t_item: array<f32>;
@group(0) @binding(3) var<storage, read> t_author: array<f32>;
@group(0) @binding(4) var<storage, read> t_topic: array<f32>;
@group(0) @binding(5) var<storage, read> t_dur: array<f32>;
@group(0) @binding(6) var<storage, read> cb: array<f32>;
@group(0) @binding(7) var<storage, read> st: array<u32>;
@group(0) @binding(8) var<storage, read_write> scores: array<f32>;
@group(0) @binding(9) var<storage, read_write> sel: array<u32>;
@group(0) @binding(10) var<storage, read_write> rowmap: array<u32>;

const NOT_KEPT: u32 = 0xffffffffu;

// The sample holding long position p < n_long: the largest b < B with long_offsets[b] ≤ p.
fn sample_of(p: u32) -> u32 {
    var lo = 0u;
    var hi = P.n_samples - 1u;
    while (lo < hi) {
        let mid = hi - (hi - lo) / 2u;
        if (st[P.long_off + mid] <= p) { lo = mid; } else { hi = mid - 1u; }
    }
    return lo;
}

fn score(p: u32) -> f32 {
    let b = sample_of(p);
    let qb = b * P.width;
    let fb = P.feat_off + 4u * p;
    let id = P.id;
    let sm = P.small;
    var dot = 0.0;
    let r0 = st[fb] * id;
    for (var t = 0u; t < id; t++) { dot = dot + t_item[r0 + t] * qbar[qb + t]; }
    let r1 = st[fb + 1u] * id;
    for (var t = 0u; t < id; t++) { dot = dot + t_author[r1 + t] * qbar[qb + id + t]; }
    let r2 = st[fb + 2u] * sm;
    for (var t = 0u; t < sm; t++) { dot = dot + t_topic[r2 + t] * qbar[qb + 2u * id + t]; }
    let r3 = st[fb + 3u] * sm;
    for (var t = 0u; t < sm; t++) { dot = dot + t_dur[r3 + t] * qbar[qb + 2u * id + sm + t]; }
    if (P.bias == 0u) { return dot * P.q_scale; }
    var bs = 0.0;
    for (var j = 0u; j < P.n_cross; j++) {
        let c = st[P.cross_off + p * P.n_cross + j] * P.heads;
        for (var a = 0u; a < P.heads; a++) { bs = bs + cb[c + a]; }
    }
    return (dot * P.q_scale + bs * P.inv_h) + bitcast<f32>(st[P.logn_off + p]);
}

@compute @workgroup_size(64)
fn gsu_train_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let p = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (p >= P.map_len) { return; }
    if (p < P.n_long) {
        scores[p] = score(p);
    } else {
        rowmap[p] = P.n_fin + (p - P.n_long);
    }
}

// Order-preserving map f32 -> u32 (larger score, larger key), -0 folded into +0.
fn key_of(s: f32) -> u32 {
    var b = bitcast<u32>(s);
    if ((b & 0x7fffffffu) == 0u) { b = 0u; }
    if ((b & 0x80000000u) != 0u) { return ~b; }
    return b | 0x80000000u;
}

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> pfx: array<u32, 256>;
var<workgroup> wg_lo: u32;
var<workgroup> wg_len: u32;
var<workgroup> wg_fin: u32;
var<workgroup> wg_digit: u32;
var<workgroup> wg_need: u32;

// One radix-select pass: among the sample's candidates (the positions whose key matches `prefix`
// under `mask`, and when `ties` the positions of key `tkey` whose index matches), histogram digit
// `shift` of the key (or of the index when `ties`), and pick the digit holding the need-th largest.
// Returns (digit, need within that digit). Called by the whole workgroup (uniform arguments).
fn radix_pass(lid: u32, lo: u32, len: u32, ties: bool, tkey: u32, prefix: u32, mask: u32, shift: u32, need: u32) -> vec2<u32> {
    atomicStore(&hist[lid], 0u);
    workgroupBarrier();
    for (var i = lid; i < len; i = i + 256u) {
        let key = key_of(scores[lo + i]);
        if (ties) {
            if (key == tkey && (i & mask) == prefix) { atomicAdd(&hist[(i >> shift) & 255u], 1u); }
        } else if ((key & mask) == prefix) {
            atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        var above = 0u;
        var d = 255u;
        loop {
            let c = atomicLoad(&hist[d]);
            if (above + c >= need || d == 0u) { break; }
            above = above + c;
            d = d - 1u;
        }
        wg_digit = d;
        wg_need = need - above;
    }
    let digit = workgroupUniformLoad(&wg_digit);
    let left = workgroupUniformLoad(&wg_need);
    return vec2<u32>(digit, left);
}

@compute @workgroup_size(256)
fn gsu_train_select_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let b = wid.x + wid.y * nwg.x;
    if (b >= P.n_samples) { return; }
    if (lid == 0u) {
        wg_lo = st[P.long_off + b];
        wg_len = st[P.long_off + b + 1u] - wg_lo;
        wg_fin = st[P.fin_off + b];
    }
    let lo = workgroupUniformLoad(&wg_lo);
    let len = workgroupUniformLoad(&wg_len);
    let fin0 = workgroupUniformLoad(&wg_fin);
    if (len <= P.k) {
        for (var i = lid; i < len; i = i + 256u) {
            sel[fin0 + i] = lo + i;
            rowmap[lo + i] = fin0 + i;
        }
        return;
    }
    // The threshold key: 4 digits, most significant first.
    var need = P.k;
    var tkey = 0u;
    var mask = 0u;
    for (var ps = 0u; ps < 4u; ps++) {
        let shift = 24u - 8u * ps;
        let r = radix_pass(lid, lo, len, false, 0u, tkey, mask, shift, need);
        tkey = tkey | (r.x << shift);
        mask = mask | (255u << shift);
        need = r.y;
    }
    // Among the ties at tkey, the `need` largest indices: the threshold index, digits of len - 1.
    var tidx = 0u;
    var imask = 0u;
    for (var ps = 0u; ps < 4u; ps++) {
        let shift = 24u - 8u * ps;
        if (((len - 1u) >> shift) != 0u) {
            let r = radix_pass(lid, lo, len, true, tkey, tidx, imask, shift, need);
            tidx = tidx | (r.x << shift);
            need = r.y;
        }
        imask = imask | (255u << shift);
    }
    // Compaction in position order.
    var carry = 0u;
    for (var base = 0u; base < len; base = base + 256u) {
        let i = base + lid;
        var flag = 0u;
        if (i < len) {
            let key = key_of(scores[lo + i]);
            flag = select(0u, 1u, key > tkey || (key == tkey && i >= tidx));
        }
        pfx[lid] = flag;
        workgroupBarrier();
        for (var s = 1u; s < 256u; s = s * 2u) {
            var x = pfx[lid];
            if (lid >= s) { x = x + pfx[lid - s]; }
            workgroupBarrier();
            pfx[lid] = x;
            workgroupBarrier();
        }
        if (i < len) {
            if (flag == 1u) {
                let f = fin0 + carry + pfx[lid] - 1u;
                sel[f] = lo + i;
                rowmap[lo + i] = f;
            } else {
                rowmap[lo + i] = NOT_KEPT;
            }
        }
        carry = carry + pfx[255];
        workgroupBarrier();
    }
}
