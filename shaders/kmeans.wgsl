// kmeans — batched Lloyd steps for many independent problems (SPEC §4.3).
// Shapes: N points of dim d (the 64-dim item embeddings), P problems, problem p owns points
//         offsets[p]..offsets[p+1] and centroids coff[p]..coff[p+1] (Σk rows of dim d).
// Geometry: 64 invocations per workgroup; 2-D grid flattened as wid.x + wid.y * nwg.x.
// kmeans_assign_fwd_v1: one invocation per point (problem found by binary search); distance
//         Σ_t (x_t - c_t)² summed sequentially in t order in f32, exactly as the CPU reference;
//         nearest centroid, ties to the lower index (strict <). Bit-identical to the CPU.
//         The square is rounded on its own (`sq` below) before the add so no FMA contraction
//         can change the result.
// kmeans_update_fwd_v1: one invocation per (centroid, dimension t), looping over its problem's
//         points in point order and summing members in f32 (WGSL has no f64: the CPU sums in
//         f64, so the means agree to f32 rounding of a sequential sum, not bit for bit); a
//         centroid with no member keeps its previous value.
// kmeans_converge_fwd_v1: one invocation per problem, after an update + assign round: a problem
//         not yet done counts the round and is done when none of its assignments changed
//         (compared point by point with the previous round's `old`). The Lloyd loop then runs
//         on the device without the host.
// state [2P]: done flags [P] then iteration counts [P]. assign and update skip a done problem
//         (a fixed point of update + assign), update copying its centroids forward so the
//         ping-pong buffers stay equal; the standalone ops bind an all-zero state.
// kmeans_seed_fwd: k-means++ (SPEC §4.3), bit-identical to cpu::kmeans::seed_one and to CUDA's
//         kmeans_seed_fwd. One workgroup of 256 per problem (2-D grid flattened); a dispatch runs
//         picks c in [c_begin, c_end) of every problem (the host splits the k picks over several
//         dispatches so no invocation passes llvmpipe's 65,535 loop trips in all). Per pick all
//         invocations copy the chosen point into centroid row c (`out` is written with `=`) and
//         update mind[i] = min(mind[i], Σ_t (x_t - c_t)² in t order, f32) (pick 0 assigns);
//         invocation 0 then draws the next pick from the problem's SplitMix64 stream
//         (seeds `old` [2P] as lo, hi words): total = Σ_i (f64) mind[i] sequentially in point
//         order, u = next_f64 · total, the first point with mind > 0 whose running f64 sum
//         passes u, else the last such point; a zero total draws below(n). WGSL has no u64 and
//         no f64: the RNG runs on vec2<u32> (lo, hi) words and the f64 sums and the one product
//         on IEEE-754 binary64 bit patterns with round-to-nearest-even in integer arithmetic
//         (only non-negative operands occur: no cancellation, no subnormal results), so every
//         rounding is the CPU's. The sequential loops are unrolled by 8 (same order).
//         `state` is scratch here: [3P] rng lo, hi and the pending pick per problem, then mind
//         [N] as f32 bits; it carries the problem from one dispatch to the next.
struct Params { n: u32, dim: u32, n_prob: u32, total_k: u32, c_begin: u32, c_end: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> points: array<f32>;
@group(0) @binding(2) var<storage, read> offsets: array<u32>;
@group(0) @binding(3) var<storage, read> coff: array<u32>;
@group(0) @binding(4) var<storage, read> cents: array<f32>;
@group(0) @binding(5) var<storage, read_write> assign: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read_write> state: array<u32>;
@group(0) @binding(8) var<storage, read> old: array<u32>;

// Largest p with o[p] <= i over the P + 1 offsets (empty problems are impossible here).
fn problem_of_point(i: u32) -> u32 {
    var lo = 0u;
    var hi = P.n_prob;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (offsets[mid] <= i) { lo = mid; } else { hi = mid; }
    }
    return lo;
}
fn problem_of_centroid(g: u32) -> u32 {
    var lo = 0u;
    var hi = P.n_prob;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (coff[mid] <= g) { lo = mid; } else { hi = mid; }
    }
    return lo;
}


@compute @workgroup_size(64)
fn kmeans_assign_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (i >= P.n) { return; }
    let p = problem_of_point(i);
    if (state[p] != 0u) { return; }
    let c0 = coff[p];
    let c1 = coff[p + 1u];
    let xb = i * P.dim;
    var best = 0u;
    var best_d = bitcast<f32>(0x7f800000u); // +inf
    for (var j = c0; j < c1; j++) {
        let cb = j * P.dim;
        var acc = 0.0;
        for (var t = 0u; t < P.dim; t++) {
            let d = points[xb + t] - cents[cb + t];
            let sq = d * d;
            acc = acc + sq;
        }
        if (acc < best_d) {
            best_d = acc;
            best = j - c0;
        }
    }
    assign[i] = best;
}

@compute @workgroup_size(64)
fn kmeans_update_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (e >= P.total_k * P.dim) { return; }
    let g = e / P.dim;
    let t = e - g * P.dim;
    let p = problem_of_centroid(g);
    if (state[p] != 0u) {
        out[e] = cents[e];
        return;
    }
    let j = g - coff[p];
    var sum = 0.0;
    var cnt = 0u;
    for (var i = offsets[p]; i < offsets[p + 1u]; i++) {
        if (assign[i] == j) {
            sum = sum + points[i * P.dim + t];
            cnt = cnt + 1u;
        }
    }
    if (cnt > 0u) {
        out[e] = sum / f32(cnt);
    } else {
        out[e] = cents[e];
    }
}

@compute @workgroup_size(64)
fn kmeans_converge_fwd_v1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let q = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (q >= P.n_prob) { return; }
    if (state[q] != 0u) { return; }
    state[P.n_prob + q] = state[P.n_prob + q] + 1u;
    var changed = false;
    for (var i = offsets[q]; i < offsets[q + 1u]; i++) {
        if (old[i] != assign[i]) {
            changed = true;
            break;
        }
    }
    if (!changed) { state[q] = 1u; }
}

// ---- kmeans_seed_fwd: 64-bit integers as vec2<u32>(lo, hi) -----------------------------------

// Full 64-bit product of two u32.
fn mul32(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xFFFFu;
    let a1 = a >> 16u;
    let b0 = b & 0xFFFFu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xFFFFu) + (p10 & 0xFFFFu);
    return vec2<u32>((p00 & 0xFFFFu) | (mid << 16u), p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u));
}
fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}
// Low 64 bits of a 64 × 64 product (u64 wrapping_mul).
fn mul64lo(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let p = mul32(a.x, b.x);
    return vec2<u32>(p.x, p.y + a.x * b.y + a.y * b.x);
}
// a >> s for 0 < s < 32.
fn shr64(a: vec2<u32>, s: u32) -> vec2<u32> {
    return vec2<u32>((a.x >> s) | (a.y << (32u - s)), a.y >> s);
}
// SplitMix64::next_u64.
fn splitmix_next(st: ptr<function, vec2<u32>>) -> vec2<u32> {
    *st = add64(*st, vec2<u32>(0x7F4A7C15u, 0x9E3779B9u));
    var z = *st;
    z = mul64lo(z ^ shr64(z, 30u), vec2<u32>(0x1CE4E5B9u, 0xBF58476Du));
    z = mul64lo(z ^ shr64(z, 27u), vec2<u32>(0x133111EBu, 0x94D049BBu));
    return z ^ shr64(z, 31u);
}
// (x · n) >> 64: SplitMix64::below(n).
fn below(x: vec2<u32>, n: u32) -> u32 {
    let a = mul32(x.x, n);
    let b = mul32(x.y, n);
    let t = b.x + a.y;
    return b.y + select(0u, 1u, t < b.x);
}

// ---- binary64 bit patterns (lo, hi), non-negative operands only ------------------------------

const D_INF_HI: u32 = 0x7FF00000u;
const D_NAN_HI: u32 = 0x7FF80000u;

// (f64) x for x ≥ 0 (finite or +inf): exact.
fn f64_of_f32(x: f32) -> vec2<u32> {
    let b = bitcast<u32>(x);
    let e = b >> 23u;
    let m = b & 0x7FFFFFu;
    if (e == 0u) {
        if (m == 0u) { return vec2<u32>(0u, 0u); }
        // subnormal m · 2^-149: normal in binary64
        let lead = 31u - countLeadingZeros(m);
        let f = (m << (23u - lead)) & 0x7FFFFFu;
        return vec2<u32>(f << 29u, ((lead + 874u) << 20u) | (f >> 3u));
    }
    if (e == 255u) { return vec2<u32>(0u, D_INF_HI); }
    return vec2<u32>(m << 29u, ((e + 896u) << 20u) | (m >> 3u));
}
// v >> d with every bit shifted out ORed into bit 0 (sticky).
fn shr64_sticky(v: vec2<u32>, d: u32) -> vec2<u32> {
    if (d == 0u) { return v; }
    if (d >= 64u) { return vec2<u32>(select(0u, 1u, (v.x | v.y) != 0u), 0u); }
    if (d >= 32u) {
        let s = d - 32u;
        if (s == 0u) { return vec2<u32>(v.y | select(0u, 1u, v.x != 0u), 0u); }
        let lost = v.x != 0u || (v.y << (32u - s)) != 0u;
        return vec2<u32>((v.y >> s) | select(0u, 1u, lost), 0u);
    }
    let lost = (v.x << (32u - d)) != 0u;
    return vec2<u32>((v.x >> d) | (v.y << (32u - d)) | select(0u, 1u, lost), v.y >> d);
}
// a > b as non-negative binary64 (false when b is NaN).
fn dgt(a: vec2<u32>, b: vec2<u32>) -> bool {
    if (b.y > D_INF_HI || (b.y == D_INF_HI && b.x != 0u)) { return false; }
    return a.y > b.y || (a.y == b.y && a.x > b.x);
}
// a + b, both ≥ 0 and not NaN, round to nearest even. Works on the 53-bit significands
// shifted left by 9 (leading bit at 61, 9 guard bits, sticky in bit 0).
fn dadd(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    var x = a;
    var y = b;
    if (y.y > x.y || (y.y == x.y && y.x > x.x)) {
        x = b;
        y = a;
    }
    let ex = x.y >> 20u;
    let ey = y.y >> 20u;
    if (ex == 0x7FFu || ey == 0u) { return x; }
    let fx = (x.y & 0xFFFFFu) | 0x100000u;
    let fy = (y.y & 0xFFFFFu) | 0x100000u;
    let mx = vec2<u32>(x.x << 9u, (fx << 9u) | (x.x >> 23u));
    var my = vec2<u32>(y.x << 9u, (fy << 9u) | (y.x >> 23u));
    my = shr64_sticky(my, ex - ey);
    var s = add64(mx, my);
    var e = ex;
    if ((s.y >> 30u) != 0u) {
        s = shr64_sticky(s, 1u);
        e = e + 1u;
    }
    let rem = s.x & 0x1FFu;
    s.x = s.x & ~0x1FFu;
    if (rem > 0x100u || (rem == 0x100u && (s.x & 0x200u) != 0u)) {
        s = add64(s, vec2<u32>(0x200u, 0u));
        if ((s.y >> 30u) != 0u) {
            s = shr64(s, 1u);
            e = e + 1u;
        }
    }
    if (e >= 0x7FFu) { return vec2<u32>(0u, D_INF_HI); }
    let m = shr64(s, 9u);
    return vec2<u32>(m.x, (e << 20u) | (m.y & 0xFFFFFu));
}
// Add with carry out: (sum, carry).
fn addc(a: u32, b: u32) -> vec2<u32> {
    let s = a + b;
    return vec2<u32>(s, select(0u, 1u, s < a));
}
// Bit i of a 128-bit value w (words low to high).
fn bit128(w: vec4<u32>, i: u32) -> u32 {
    return (w[i / 32u] >> (i % 32u)) & 1u;
}
// Whether any of the low nb bits of w is set (nb ≤ 128).
fn low_nonzero(w: vec4<u32>, nb: u32) -> bool {
    var nz = false;
    for (var q = 0u; q < 4u; q++) {
        let lo = q * 32u;
        if (nb >= lo + 32u) {
            nz = nz || w[q] != 0u;
        } else if (nb > lo) {
            nz = nz || (w[q] & ((1u << (nb - lo)) - 1u)) != 0u;
        }
    }
    return nz;
}
// (r >> 11) as f64 · 2^-53 · t, t ≥ 0 (SplitMix64::next_f64() * t), one rounding to nearest even.
fn unit_times(r: vec2<u32>, t: vec2<u32>) -> vec2<u32> {
    let a = shr64(r, 11u); // 53-bit integer: the exact value a · 2^-53
    let et = t.y >> 20u;
    let a_zero = (a.x | a.y) == 0u;
    if (et == 0x7FFu) {
        if (a_zero) { return vec2<u32>(0u, D_NAN_HI); }
        return vec2<u32>(0u, D_INF_HI);
    }
    if (a_zero || et == 0u) { return vec2<u32>(0u, 0u); }
    let b = vec2<u32>(t.x, (t.y & 0xFFFFFu) | 0x100000u);
    // 106-bit product a · b in four words.
    let p00 = mul32(a.x, b.x);
    let p01 = mul32(a.x, b.y);
    let p10 = mul32(a.y, b.x);
    let p11 = mul32(a.y, b.y);
    let w0 = p00.x;
    let s1a = addc(p00.y, p01.x);
    let s1b = addc(s1a.x, p10.x);
    let c1 = s1a.y + s1b.y;
    let s2a = addc(p01.y, p10.y);
    let s2b = addc(s2a.x, p11.x);
    let s2c = addc(s2b.x, c1);
    let w = vec4<u32>(w0, s1b.x, s2c.x, p11.y + s2a.y + s2b.y + s2c.y);
    var lead = 0u;
    if (w.w != 0u) {
        lead = 127u - countLeadingZeros(w.w);
    } else if (w.z != 0u) {
        lead = 95u - countLeadingZeros(w.z);
    } else {
        lead = 63u - countLeadingZeros(w.y);
    }
    // value = w · 2^(et - 1128): keep the 53 bits from `lead` down.
    let sh = lead - 52u; // 0..53
    var q = vec2<u32>(0u, 0u);
    // q = w >> sh (fits 53 bits)
    let wi = sh / 32u;
    let bi = sh % 32u;
    let l0 = w[wi];
    let l1 = select(0u, w[min(wi + 1u, 3u)], wi + 1u < 4u);
    let l2 = select(0u, w[min(wi + 2u, 3u)], wi + 2u < 4u);
    if (bi == 0u) {
        q = vec2<u32>(l0, l1);
    } else {
        q = vec2<u32>((l0 >> bi) | (l1 << (32u - bi)), (l1 >> bi) | (l2 << (32u - bi)));
    }
    q.y = q.y & 0x1FFFFFu;
    var e = lead + et - 105u;
    if (sh > 0u) {
        let half = bit128(w, sh - 1u) == 1u;
        let sticky = low_nonzero(w, sh - 1u);
        if (half && (sticky || (q.x & 1u) == 1u)) {
            q = add64(q, vec2<u32>(1u, 0u));
            if ((q.y >> 21u) != 0u) {
                q = shr64(q, 1u);
                e = e + 1u;
            }
        }
    }
    if (e >= 0x7FFu) { return vec2<u32>(0u, D_INF_HI); }
    return vec2<u32>(q.x, (e << 20u) | (q.y & 0xFFFFFu));
}

// ---- kmeans_seed_fwd -------------------------------------------------------------------------

var<workgroup> wg_pick: u32;

// Running f64 sum over mind: one point.
fn sum_step(acc: vec2<u32>, i: u32, e: u32, mb: u32) -> vec2<u32> {
    if (i >= e) { return acc; }
    let d = state[mb + i];
    if (d == 0u) { return acc; }
    return dadd(acc, f64_of_f32(bitcast<f32>(d)));
}

struct Scan { cum: vec2<u32>, last: u32, found: u32 }

// The D² draw over one point: `found` is 1 + the local index once the running sum passes u.
fn scan_step(sc: Scan, i: u32, e: u32, s: u32, mb: u32, u: vec2<u32>) -> Scan {
    var r = sc;
    if (r.found != 0u || i >= e) { return r; }
    let d = state[mb + i];
    if (d != 0u) {
        r.last = i - s;
        r.cum = dadd(r.cum, f64_of_f32(bitcast<f32>(d)));
        if (dgt(r.cum, u)) { r.found = i - s + 1u; }
    }
    return r;
}

@compute @workgroup_size(256)
fn kmeans_seed_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let p = wid.x + wid.y * nwg.x;
    if (p >= P.n_prob) { return; }
    let s = offsets[p];
    let e = offsets[p + 1u];
    let n = e - s;
    let c0 = coff[p];
    let k = coff[p + 1u] - c0;
    let sb = 3u * p;
    let mb = 3u * P.n_prob;
    var st = vec2<u32>(0u, 0u);
    if (lid == 0u) {
        if (P.c_begin == 0u) {
            st = vec2<u32>(old[2u * p], old[2u * p + 1u]);
            wg_pick = below(splitmix_next(&st), n);
        } else {
            st = vec2<u32>(state[sb], state[sb + 1u]);
            wg_pick = state[sb + 2u];
        }
    }
    for (var c = P.c_begin; c < P.c_end; c++) {
        workgroupBarrier();
        storageBarrier();
        let pick = wg_pick;
        if (c < k) {
            let xb = (s + pick) * P.dim;
            let ob = (c0 + c) * P.dim;
            for (var t = lid; t < P.dim; t += 256u) {
                out[ob + t] = points[xb + t];
            }
            for (var i = s + lid; i < e; i += 256u) {
                let ib = i * P.dim;
                var acc = 0.0;
                for (var t = 0u; t < P.dim; t++) {
                    let d = points[ib + t] - points[xb + t];
                    let sq = d * d;
                    acc = acc + sq;
                }
                if (c == 0u || acc < bitcast<f32>(state[mb + i])) {
                    state[mb + i] = bitcast<u32>(acc);
                }
            }
        }
        storageBarrier();
        if (lid == 0u && c + 1u < k) {
            var total = vec2<u32>(0u, 0u);
            for (var i = s; i < e; i += 8u) {
                total = sum_step(total, i, e, mb);
                total = sum_step(total, i + 1u, e, mb);
                total = sum_step(total, i + 2u, e, mb);
                total = sum_step(total, i + 3u, e, mb);
                total = sum_step(total, i + 4u, e, mb);
                total = sum_step(total, i + 5u, e, mb);
                total = sum_step(total, i + 6u, e, mb);
                total = sum_step(total, i + 7u, e, mb);
            }
            if ((total.x | total.y) != 0u) {
                let u = unit_times(splitmix_next(&st), total);
                var sc = Scan(vec2<u32>(0u, 0u), 0u, 0u);
                for (var i = s; i < e && sc.found == 0u; i += 8u) {
                    sc = scan_step(sc, i, e, s, mb, u);
                    sc = scan_step(sc, i + 1u, e, s, mb, u);
                    sc = scan_step(sc, i + 2u, e, s, mb, u);
                    sc = scan_step(sc, i + 3u, e, s, mb, u);
                    sc = scan_step(sc, i + 4u, e, s, mb, u);
                    sc = scan_step(sc, i + 5u, e, s, mb, u);
                    sc = scan_step(sc, i + 6u, e, s, mb, u);
                    sc = scan_step(sc, i + 7u, e, s, mb, u);
                }
                wg_pick = select(sc.last, sc.found - 1u, sc.found != 0u);
            } else {
                wg_pick = below(splitmix_next(&st), n);
            }
        }
    }
    if (lid == 0u) {
        state[sb] = st.x;
        state[sb + 1u] = st.y;
        state[sb + 2u] = wg_pick;
    }
}
