// cluster_tree — a clustering job's whole hierarchy on the device (SPEC §4.2; the reference is
// src/backend/cpu/cluster_tree.rs, host code src/backend/wgpu/cluster_tree.rs).
// The host appends emu64.wgsl (64-bit integers on u32 words: add64, mul64lo, shr64, mul32, ...).
// Shapes: the job's N points (ids [N] into the item embeddings [rows, dim]), R roots. A level holds
//         P problems; problem p owns level points offsets[p]..offsets[p+1] (work [N]: point
//         index into ids) and centroids coff[p]..coff[p+1]; root[p] is its root. The level meta
//         buffer holds offsets [P+1] at word 0 and root [P] at word P.root_base (a 256-byte
//         boundary). Every problem has at least γ ≥ 2 points, so P ≤ N/2 and Σk ≤ N.
// Shared: flat() from grid.wgsl, problem_of_point/centroid from problems.wgsl.
// Geometry: "per item" entries run 64 invocations per workgroup on a 2-D grid flattened as
//         wid.x + wid.y * nwg.x, one invocation per item, returning past P.n items; "single"
//         entries run one workgroup of 256 that loops over the problems in 256 chunks.
// Per level, after the host-encoded k-means (kmeans.wgsl: seed, assign, Lloyd rounds):
// cluster_tree_init_fwd (per item, n = max(N, R + 1)): level 0: work[i] = i, offsets = the job's
//         root offsets, root[r] = r.
// cluster_tree_prepare_fwd (single): k_p = δ(n_p) from the threshold table (2 + #{j : table[j] ≤ n}),
//         coff = exclusive prefix sum of k (coff[P] = Σk), seeds[p] = derive_seed_extend(
//         streams[root[p]], depth) as (lo, hi) words (rng.rs, SplitMix64's mix on u32 pairs).
// cluster_tree_gather_fwd (per item, n = N_level · dim): the level's points, pts[i, t] =
//         emb[ids[work[i]], t].
// cluster_tree_count_fwd (per item, n = N_level): cnt[coff[p] + assign[i]] += 1 (atomic).
// cluster_tree_part_fwd (per item, n = P): per problem, its non-empty parts (forced when fewer
//         than 2: position chunks of γ - 1, all final) and its children: pp[8p..8p+8] = final
//         clusters, final members, next problems, next points, largest next child, Σ δ(next
//         child), forced flag, 0.
// cluster_tree_scan_fwd (single): exclusive prefix sums of the first four pp words over the
//         problems (final clusters and members offset by the running totals status[5], [6]),
//         and the level status [18]: next P, next N, next largest n, next largest k, next Σk,
//         result clusters, result members, 0, then u64 (lo, hi) pairs: problems, forced,
//         Σ n(it+1), Σ n·it, Σ n·k·(it+1) (it from the k-means state [2P]: done flags, iterations).
// cluster_tree_emit_fwd (per item, n = P): walks the problem's centroids in order giving each
//         non-empty part its place: a final cluster (res offsets [C+1] at word 0, res roots at
//         P.res_root) or a next-level problem (next meta), and leaves in cnt[g] the part's
//         destination: FINAL | member offset, next-level point offset, FINAL | FORCED | the
//         problem's member offset (forced problem), or NONE (empty).
// cluster_tree_scatter_fwd (per item, n = Σk): one invocation per centroid copies its members'
//         point indices, in point order (stable), to members or to the next level's work; a
//         forced problem's centroid j copies positions j, j + k, ... (members keep their order).
struct Params { n: u32, n_prob: u32, dim: u32, gamma: u32, depth: u32, table_len: u32, res_root: u32, root_base: u32 }
@group(0) @binding(0) var<uniform> P: Params;

const FINAL: u32 = 0x80000000u;
const FORCED: u32 = 0x40000000u;
const OFFSET_MASK: u32 = 0x3FFFFFFFu;
const NONE: u32 = 0xFFFFFFFFu;

// Shared by the level entries (one binding each): the δ table, the level's problem offsets and
// its centroid offsets. Entry-specific buffers follow, each declared for one entry.
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> offsets: array<u32>;
@group(0) @binding(3) var<storage, read> coff: array<u32>;
@group(0) @binding(5) var<storage, read_write> pp: array<u32>;

//#include "grid.wgsl"
//#include "problems.wgsl"

// δ(n) = 2 + #{j : table[j] ≤ n} (the table is ascending).
fn delta(n: u32) -> u32 {
    var lo = 0u;
    var hi = P.table_len;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (table[mid] <= n) { lo = mid + 1u; } else { hi = mid; }
    }
    return 2u + lo;
}

// rng::mix64 and rng::derive_seed_extend on (lo, hi) words.
fn mix64(v: vec2<u32>) -> vec2<u32> {
    var z = mul64lo(v ^ shr64(v, 30u), vec2<u32>(0x1CE4E5B9u, 0xBF58476Du));
    z = mul64lo(z ^ shr64(z, 27u), vec2<u32>(0x133111EBu, 0x94D049BBu));
    return z ^ shr64(z, 31u);
}
fn derive_seed_extend(acc: vec2<u32>, part: u32) -> vec2<u32> {
    return mix64(acc ^ mix64(add64(vec2<u32>(part, 0u), vec2<u32>(0x7F4A7C15u, 0x9E3779B9u))));
}

// ---- cluster_tree_init_fwd -------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> i_job_offs: array<u32>;
@group(0) @binding(2) var<storage, read_write> i_work: array<u32>;
@group(0) @binding(3) var<storage, read_write> i_meta: array<u32>;

@compute @workgroup_size(64)
fn cluster_tree_init_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i < P.n) { i_work[i] = i; }
    if (i <= P.n_prob) { i_meta[i] = i_job_offs[i]; }
    if (i < P.n_prob) { i_meta[P.root_base + i] = i; }
}

// ---- cluster_tree_prepare_fwd -------------------------------------------------------------------
@group(0) @binding(3) var<storage, read_write> k_coff: array<u32>;
@group(0) @binding(4) var<storage, read> k_root: array<u32>;
@group(0) @binding(5) var<storage, read> k_streams: array<u32>;
@group(0) @binding(6) var<storage, read_write> k_seeds: array<u32>;

var<workgroup> wg_sum: array<u32, 256>;

@compute @workgroup_size(256)
fn cluster_tree_prepare_fwd(@builtin(local_invocation_index) lid: u32) {
    let np = P.n_prob;
    let chunk = (np + 255u) / 256u;
    let b = min(lid * chunk, np);
    let e = min(b + chunk, np);
    var s = 0u;
    for (var p = b; p < e; p++) {
        let k = delta(offsets[p + 1u] - offsets[p]);
        k_coff[p] = k; // this invocation's own slot, replaced by the prefix below
        s += k;
        let r = k_root[p];
        let seed = derive_seed_extend(vec2<u32>(k_streams[2u * r], k_streams[2u * r + 1u]), P.depth);
        k_seeds[2u * p] = seed.x;
        k_seeds[2u * p + 1u] = seed.y;
    }
    wg_sum[lid] = s;
    workgroupBarrier();
    for (var off = 1u; off < 256u; off *= 2u) {
        var t = 0u;
        if (lid >= off) { t = wg_sum[lid - off]; }
        workgroupBarrier();
        wg_sum[lid] += t;
        workgroupBarrier();
    }
    var run = wg_sum[lid] - s;
    for (var p = b; p < e; p++) {
        let k = k_coff[p];
        k_coff[p] = run;
        run += k;
    }
    if (lid == 255u) { k_coff[np] = wg_sum[255]; }
}

// ---- cluster_tree_gather_fwd -----------------------------------------------------------------
@group(0) @binding(1) var<storage, read> g_emb: array<f32>;
@group(0) @binding(2) var<storage, read> g_ids: array<u32>;
@group(0) @binding(3) var<storage, read> g_work: array<u32>;
@group(0) @binding(4) var<storage, read_write> g_pts: array<f32>;

@compute @workgroup_size(64)
fn cluster_tree_gather_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32) {
    let e = flat(wid, nwg, lid);
    if (e >= P.n) { return; }
    let i = e / P.dim;
    let t = e - i * P.dim;
    g_pts[e] = g_emb[g_ids[g_work[i]] * P.dim + t];
}

// ---- cluster_tree_count_fwd ------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> assign: array<u32>;
@group(0) @binding(4) var<storage, read_write> c_cnt: array<atomic<u32>>;

@compute @workgroup_size(64)
fn cluster_tree_count_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= P.n) { return; }
    let p = problem_of_point(i);
    atomicAdd(&c_cnt[coff[p] + assign[i]], 1u);
}

// ---- cluster_tree_part_fwd -------------------------------------------------------------------
@group(0) @binding(4) var<storage, read> p_cnt: array<u32>;

@compute @workgroup_size(64)
fn cluster_tree_part_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let p = flat(wid, nwg, lid);
    if (p >= P.n_prob) { return; }
    let n = offsets[p + 1u] - offsets[p];
    let c0 = coff[p];
    let k = coff[p + 1u] - c0;
    var nonempty = 0u;
    for (var j = 0u; j < k; j++) {
        if (p_cnt[c0 + j] > 0u) { nonempty++; }
    }
    var f = 0u;
    var m = 0u;
    var q = 0u;
    var w = 0u;
    var nmax = 0u;
    var ksum = 0u;
    var forced = 0u;
    if (nonempty <= 1u) {
        forced = 1u;
        f = (n + P.gamma - 2u) / (P.gamma - 1u);
        m = n;
    } else {
        for (var j = 0u; j < k; j++) {
            let c = p_cnt[c0 + j];
            if (c == 0u) { continue; }
            if (c < P.gamma) {
                f++;
                m += c;
            } else {
                q++;
                w += c;
                nmax = max(nmax, c);
                ksum += delta(c);
            }
        }
    }
    let o = 8u * p;
    pp[o] = f;
    pp[o + 1u] = m;
    pp[o + 2u] = q;
    pp[o + 3u] = w;
    pp[o + 4u] = nmax;
    pp[o + 5u] = ksum;
    pp[o + 6u] = forced;
    pp[o + 7u] = 0u;
}

// ---- cluster_tree_scan_fwd -------------------------------------------------------------------
@group(0) @binding(4) var<storage, read> s_state: array<u32>;
@group(0) @binding(6) var<storage, read_write> status: array<u32>;

// Per invocation: (F, M, Q, W) sums; (Σδ, forced, max n, 0); the three u64 work counts.
var<workgroup> wg_a: array<vec4<u32>, 256>;
var<workgroup> wg_b: array<vec4<u32>, 256>;
var<workgroup> wg_c: array<vec2<u32>, 768>;
var<workgroup> wg_base: vec2<u32>;

@compute @workgroup_size(256)
fn cluster_tree_scan_fwd(@builtin(local_invocation_index) lid: u32) {
    let np = P.n_prob;
    let chunk = (np + 255u) / 256u;
    let b = min(lid * chunk, np);
    let e = min(b + chunk, np);
    var a = vec4<u32>(0u);
    var bb = vec4<u32>(0u);
    var ap = vec2<u32>(0u);
    var up = vec2<u32>(0u);
    var ad = vec2<u32>(0u);
    for (var p = b; p < e; p++) {
        let o = 8u * p;
        a += vec4<u32>(pp[o], pp[o + 1u], pp[o + 2u], pp[o + 3u]);
        bb = vec4<u32>(bb.x + pp[o + 5u], bb.y + pp[o + 6u], max(bb.z, pp[o + 4u]), 0u);
        let n = offsets[p + 1u] - offsets[p];
        let k = coff[p + 1u] - coff[p];
        let it = s_state[np + p];
        let it1 = add64(vec2<u32>(it, 0u), vec2<u32>(1u, 0u));
        ap = add64(ap, mul64lo(vec2<u32>(n, 0u), it1));
        up = add64(up, mul32(n, it));
        ad = add64(ad, mul64lo(mul32(n, k), it1));
    }
    if (lid == 0u) { wg_base = vec2<u32>(status[5], status[6]); }
    wg_a[lid] = a;
    wg_b[lid] = bb;
    wg_c[3u * lid] = ap;
    wg_c[3u * lid + 1u] = up;
    wg_c[3u * lid + 2u] = ad;
    workgroupBarrier();
    // Inclusive Hillis-Steele scan (sums; the max for the largest child).
    for (var off = 1u; off < 256u; off *= 2u) {
        var ta = vec4<u32>(0u);
        var tb = vec4<u32>(0u);
        var t0 = vec2<u32>(0u);
        var t1 = vec2<u32>(0u);
        var t2 = vec2<u32>(0u);
        if (lid >= off) {
            let src = lid - off;
            ta = wg_a[src];
            tb = wg_b[src];
            t0 = wg_c[3u * src];
            t1 = wg_c[3u * src + 1u];
            t2 = wg_c[3u * src + 2u];
        }
        workgroupBarrier();
        if (lid >= off) {
            wg_a[lid] += ta;
            let cb = wg_b[lid];
            wg_b[lid] = vec4<u32>(cb.x + tb.x, cb.y + tb.y, max(cb.z, tb.z), 0u);
            wg_c[3u * lid] = add64(wg_c[3u * lid], t0);
            wg_c[3u * lid + 1u] = add64(wg_c[3u * lid + 1u], t1);
            wg_c[3u * lid + 2u] = add64(wg_c[3u * lid + 2u], t2);
        }
        workgroupBarrier();
    }
    let base = wg_base;
    var run = wg_a[lid] - a;
    for (var p = b; p < e; p++) {
        let o = 8u * p;
        let v = vec4<u32>(pp[o], pp[o + 1u], pp[o + 2u], pp[o + 3u]);
        pp[o] = base.x + run.x;
        pp[o + 1u] = base.y + run.y;
        pp[o + 2u] = run.z;
        pp[o + 3u] = run.w;
        run += v;
    }
    if (lid == 255u) {
        let ta = wg_a[255];
        let tb = wg_b[255];
        status[0] = ta.z;
        status[1] = ta.w;
        status[2] = tb.z;
        status[3] = select(0u, delta(tb.z), ta.z > 0u);
        status[4] = tb.x;
        status[5] = base.x + ta.x;
        status[6] = base.y + ta.y;
        status[7] = 0u;
        status[8] = np;
        status[9] = 0u;
        status[10] = tb.y;
        status[11] = 0u;
        let c0 = wg_c[765];
        let c1 = wg_c[766];
        let c2 = wg_c[767];
        status[12] = c0.x;
        status[13] = c0.y;
        status[14] = c1.x;
        status[15] = c1.y;
        status[16] = c2.x;
        status[17] = c2.y;
    }
}

// ---- cluster_tree_emit_fwd -------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> e_root: array<u32>;
@group(0) @binding(4) var<storage, read_write> e_cnt: array<u32>;
@group(0) @binding(6) var<storage, read_write> res: array<u32>;
@group(0) @binding(7) var<storage, read_write> next_meta: array<u32>;

@compute @workgroup_size(64)
fn cluster_tree_emit_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let p = flat(wid, nwg, lid);
    if (p >= P.n_prob) { return; }
    let o = 8u * p;
    var f = pp[o];
    var m = pp[o + 1u];
    var q = pp[o + 2u];
    var w = pp[o + 3u];
    let r = e_root[p];
    let n = offsets[p + 1u] - offsets[p];
    let c0 = coff[p];
    let k = coff[p + 1u] - c0;
    if (pp[o + 6u] != 0u) {
        let g1 = P.gamma - 1u;
        let chunks = (n + g1 - 1u) / g1;
        for (var c = 0u; c < chunks; c++) {
            res[f + c + 1u] = m + min((c + 1u) * g1, n);
            res[P.res_root + f + c] = r;
        }
        for (var j = 0u; j < k; j++) {
            e_cnt[c0 + j] = FINAL | FORCED | m;
        }
        return;
    }
    for (var j = 0u; j < k; j++) {
        let g = c0 + j;
        let c = e_cnt[g];
        if (c == 0u) {
            e_cnt[g] = NONE;
        } else if (c < P.gamma) {
            e_cnt[g] = FINAL | m;
            res[f + 1u] = m + c;
            res[P.res_root + f] = r;
            f++;
            m += c;
        } else {
            e_cnt[g] = w;
            next_meta[q + 1u] = w + c;
            next_meta[P.root_base + q] = r;
            q++;
            w += c;
        }
    }
}

// ---- cluster_tree_scatter_fwd ----------------------------------------------------------------
@group(0) @binding(4) var<storage, read> x_dest: array<u32>;
@group(0) @binding(5) var<storage, read> x_work: array<u32>;
@group(0) @binding(6) var<storage, read_write> members: array<u32>;
@group(0) @binding(7) var<storage, read_write> next_work: array<u32>;

@compute @workgroup_size(64)
fn cluster_tree_scatter_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let g = flat(wid, nwg, lid);
    if (g >= P.n) { return; }
    let d = x_dest[g];
    if (d == NONE) { return; }
    let p = problem_of_centroid(g);
    let s = offsets[p];
    let e = offsets[p + 1u];
    let c0 = coff[p];
    let j = g - c0;
    var at = d & OFFSET_MASK;
    if ((d & FORCED) != 0u) {
        let k = coff[p + 1u] - c0;
        for (var pos = j; pos < e - s; pos += k) {
            members[at + pos] = x_work[s + pos];
        }
    } else if ((d & FINAL) != 0u) {
        for (var i = s; i < e; i++) {
            if (assign[i] == j) {
                members[at] = x_work[i];
                at++;
            }
        }
    } else {
        for (var i = s; i < e; i++) {
            if (assign[i] == j) {
                next_work[at] = x_work[i];
                at++;
            }
        }
    }
}
