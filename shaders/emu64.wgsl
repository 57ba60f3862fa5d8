// emu64 — 64-bit integers and IEEE-754 binary64 arithmetic on u32 words, for WGSL, which has
// neither u64 nor f64. No bindings and no entry points: the host appends this file to the shaders
// that use it (kmeans.wgsl: the k-means++ RNG and draw, the exact centroid means; cluster_tree.wgsl:
// the per-problem seeds). A u64 or a binary64 bit pattern is a vec2<u32>(lo, hi).
// - u64: mul32 (full product), add64, mul64lo (wrapping product), shr64, and SplitMix64's
//   splitmix_next / below, bit for bit as rng.rs.
// - binary64, non-negative operands (the seeding's D² sums): f64_of_f32, dadd, dgt, unit_times.
// - binary64, signed finite operands (the centroid sums): dadd_signed, then dmean_f32 =
//   (f32)(sum / n) with both roundings of the CPU (to binary64, then binary32).
// Every rounding is to nearest even, done in integer arithmetic, so results equal the CPU's.

// ---- 64-bit integers as vec2<u32>(lo, hi) ------------------------------------------------------

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

// ---- signed binary64 (finite operands; no f64 subnormal occurs where the sums are of f32
//      values: every operand and partial sum is a multiple of 2^-149) ------------------------------

fn sub64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}
// a << s for 0 ≤ s < 64.
fn shl64_any(a: vec2<u32>, s: u32) -> vec2<u32> {
    if (s == 0u) { return a; }
    if (s >= 32u) { return vec2<u32>(0u, a.x << (s - 32u)); }
    return vec2<u32>(a.x << s, (a.y << s) | (a.x >> (32u - s)));
}
fn clz64(a: vec2<u32>) -> u32 {
    if (a.y != 0u) { return countLeadingZeros(a.y); }
    return 32u + countLeadingZeros(a.x);
}
// (f64) x for any finite x: exact.
fn f64_of_f32_signed(x: f32) -> vec2<u32> {
    let b = bitcast<u32>(x);
    let d = f64_of_f32(bitcast<f32>(b & 0x7FFFFFFFu));
    return vec2<u32>(d.x, d.y | (b & 0x80000000u));
}
// a + b for finite binary64 a, b, round to nearest even (Berkeley SoftFloat's addMags/subMags on
// significands shifted left by 9: leading bit at 61, the bits shifted out jammed into bit 0).
// x + (-x) is +0, as on the CPU.
fn dadd_signed(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    var x = a;
    var y = b;
    let ha = a.y & 0x7FFFFFFFu;
    let hb = b.y & 0x7FFFFFFFu;
    if (hb > ha || (hb == ha && b.x > a.x)) {
        x = b;
        y = a;
    }
    let sx = x.y & 0x80000000u;
    let ex = (x.y >> 20u) & 0x7FFu;
    let ey = (y.y >> 20u) & 0x7FFu;
    if (ey == 0u) { return x; }
    let fx = (x.y & 0xFFFFFu) | 0x100000u;
    let fy = (y.y & 0xFFFFFu) | 0x100000u;
    let mx = vec2<u32>(x.x << 9u, (fx << 9u) | (x.x >> 23u));
    let my = shr64_sticky(vec2<u32>(y.x << 9u, (fy << 9u) | (y.x >> 23u)), ex - ey);
    var s = vec2<u32>(0u, 0u);
    var e = ex;
    if (sx == (y.y & 0x80000000u)) {
        s = add64(mx, my);
        if ((s.y >> 30u) != 0u) {
            s = shr64_sticky(s, 1u);
            e = e + 1u;
        }
    } else {
        s = sub64(mx, my);
        if ((s.x | s.y) == 0u) { return vec2<u32>(0u, 0u); }
        let lz = clz64(s);
        if (lz > 2u) {
            s = shl64_any(s, lz - 2u);
            e = e - (lz - 2u);
        }
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
    let m = shr64(s, 9u);
    return vec2<u32>(m.x, sx | (e << 20u) | (m.y & 0xFFFFFu));
}
// v >> s (0 ≤ s < 64) rounded to nearest even, `sticky` standing for nonzero bits below v.
fn shr64_rne(v: vec2<u32>, s: u32, sticky: bool) -> vec2<u32> {
    if (s == 0u) { return v; }
    let q = shr64_any(v, s);
    let low = sub64(v, shl64_any(q, s)); // the s bits shifted out
    let half = shl64_any(vec2<u32>(1u, 0u), s - 1u);
    let above = low.y > half.y || (low.y == half.y && low.x > half.x);
    let tie = low.x == half.x && low.y == half.y;
    if (above || (tie && (sticky || (q.x & 1u) == 1u))) {
        return add64(q, vec2<u32>(1u, 0u));
    }
    return q;
}
fn shr64_any(a: vec2<u32>, s: u32) -> vec2<u32> {
    if (s == 0u) { return a; }
    if (s >= 32u) { return vec2<u32>(a.y >> (s - 32u), 0u); }
    return vec2<u32>((a.x >> s) | (a.y << (32u - s)), a.y >> s);
}
// (f32)(sum / n) for a finite binary64 sum and 1 ≤ n < 2^32, as the CPU computes it: the
// quotient rounded to binary64, then to binary32 (nearest even both times).
fn dmean_f32(sum: vec2<u32>, n: u32) -> f32 {
    let sign = sum.y & 0x80000000u;
    let e = (sum.y >> 20u) & 0x7FFu;
    if (e == 0u) { return bitcast<f32>(sign); }
    // sum = M · 2^(e - 1075), M of 53 bits. Q = ⌊M · 2^K / n⌋ with K = bitlen(n) + 2 has 55 or
    // 56 bits; the remainder says whether the quotient is exact.
    let m = vec2<u32>(sum.x, (sum.y & 0xFFFFFu) | 0x100000u);
    let kk = 34u - countLeadingZeros(n);
    var r = 0u;
    var q = vec2<u32>(0u, 0u);
    for (var i = 0u; i < 53u + kk; i++) {
        var bit = 0u;
        if (i < 21u) {
            bit = (m.y >> (20u - i)) & 1u;
        } else if (i < 53u) {
            bit = (m.x >> (52u - i)) & 1u;
        }
        let top = r >> 31u;
        let r2 = (r << 1u) | bit;
        q = shl64_any(q, 1u);
        if (top != 0u || r2 >= n) {
            r = r2 - n;
            q.x = q.x | 1u;
        } else {
            r = r2;
        }
    }
    // To 53 bits (binary64), then to 24 (binary32, subnormal below 2^-126).
    let drop = 11u - clz64(q); // 64 - clz - 53: 2 or 3
    var m53 = shr64_rne(q, drop, r != 0u);
    var e2 = i32(e) - 1075 - i32(kk) + i32(drop); // value = m53 · 2^e2
    if ((m53.y >> 21u) != 0u) {
        m53 = shr64(m53, 1u);
        e2 = e2 + 1;
    }
    let biased = e2 + 52 + 127;
    if (biased >= 1) {
        var m24 = shr64_rne(m53, 29u, false).x;
        var be = u32(biased);
        if ((m24 >> 24u) != 0u) {
            m24 = m24 >> 1u;
            be = be + 1u;
        }
        return bitcast<f32>(sign | (be << 23u) | (m24 & 0x7FFFFFu));
    }
    // subnormal: m53 · 2^e2 = sub · 2^-149
    let sh = u32(29 + 1 - biased);
    if (sh >= 64u) { return bitcast<f32>(sign); }
    return bitcast<f32>(sign | shr64_rne(m53, sh, false).x);
}
