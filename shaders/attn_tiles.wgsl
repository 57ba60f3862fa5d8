// attn_tiles — the attention tiles of staged sample offsets, built on the device for the tensor
// forms of attn (src/backend/wgpu/attn.rs: attn_fwd_dev / attn_bwd_dev), so that no offsets or
// tiles go through the host.
// Shapes: offs [B+1] the staged row offsets (0 first, non-decreasing, offs[B] = N; checked when
//   staged), bound at their staged section. Outputs, as shaders/attn.wgsl reads them: toff [B+1]
//   with toff[b] = Σ_{b'<b} ceil(L_b' / CH), and tiles [3 * n_slots]: tile c of sample b covers
//   rows offs[b] + (c - toff[b]) * CH .. min(that + CH, offs[b+1]) and is stored as
//   tiles[3c..3c+3] = (b, first row, end row) — exactly the host's `tiles()` for one group of
//   all samples. n_slots = min(N, N / CH + B) bounds the tile count; a slot c ≥ toff[B] gets the
//   empty tile (0, 0, 0), which every attn tile pass treats as no rows of sample 0 (B ≥ 1).
// attn_tiles_count_fwd: one workgroup of 256 invocations, dispatched alone; toff by a running
//   inclusive scan over chunks of 256 samples (Hillis-Steele in workgroup memory): ceil(B/256) * 9
//   loop trips per invocation (the host keeps B ≤ 2^20, far below llvmpipe's 65,535 in all).
// attn_tiles_fill_fwd: one invocation per tile slot (64 per workgroup, 2-D grid flattened as
//   wid.x + wid.y * nwg.x); the sample by binary search in toff (the largest b < B with
//   toff[b] ≤ c: ≤ 21 trips).
// v1, one version of each. Every element of toff and tiles is written with `=` once.
struct Params { n_samples: u32, ch: u32, n_slots: u32, pad: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> offs: array<u32>;
@group(0) @binding(2) var<storage, read_write> toff: array<u32>;
@group(0) @binding(3) var<storage, read_write> tiles: array<u32>;

var<workgroup> sc: array<u32, 256>;

@compute @workgroup_size(256)
fn attn_tiles_count_fwd(@builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) { toff[0] = 0u; }
    var carry = 0u;
    for (var base = 0u; base < P.n_samples; base = base + 256u) {
        let b = base + lid;
        var n = 0u;
        if (b < P.n_samples) {
            let len = offs[b + 1u] - offs[b];
            n = len / P.ch + select(0u, 1u, len % P.ch != 0u);
        }
        sc[lid] = n;
        workgroupBarrier();
        for (var s = 1u; s < 256u; s = s * 2u) {
            var x = sc[lid];
            if (lid >= s) { x = x + sc[lid - s]; }
            workgroupBarrier();
            sc[lid] = x;
            workgroupBarrier();
        }
        if (b < P.n_samples) { toff[b + 1u] = carry + sc[lid]; }
        carry = carry + sc[255];
        workgroupBarrier();
    }
}

@compute @workgroup_size(64)
fn attn_tiles_fill_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let c = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (c >= P.n_slots) { return; }
    var sb = 0u;
    var rs = 0u;
    var re = 0u;
    // c < toff[B] implies B ≥ 1 (toff[0] = 0).
    if (c < toff[P.n_samples]) {
        var lo = 0u;
        var hi = P.n_samples - 1u;
        while (lo < hi) {
            let mid = hi - (hi - lo) / 2u;
            if (toff[mid] <= c) { lo = mid; } else { hi = mid - 1u; }
        }
        sb = lo;
        let end = offs[lo + 1u];
        rs = offs[lo] + (c - toff[lo]) * P.ch;
        re = rs + min(P.ch, end - rs);
    }
    tiles[3u * c] = sb;
    tiles[3u * c + 1u] = rs;
    tiles[3u * c + 2u] = re;
}
