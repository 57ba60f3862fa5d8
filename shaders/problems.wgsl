// problems.wgsl — which problem of a batch of clustering problems a point or a centroid belongs
// to: binary searches over the problems' offsets (SPEC §4; every problem owns at least one
// point and one centroid, so the largest p with offsets[p] <= i is i's problem).
// Included with the line `//#include "problems.wgsl"` (src/backend/wgpu/wgsl.rs). The including
// shader declares `P.n_prob` (the number of problems), `offsets` (point offsets, [n_prob + 1])
// and `coff` (centroid offsets, [n_prob + 1]).

// Largest p with offsets[p] <= i.
fn problem_of_point(i: u32) -> u32 {
    var lo = 0u;
    var hi = P.n_prob;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (offsets[mid] <= i) { lo = mid; } else { hi = mid; }
    }
    return lo;
}

// Largest p with coff[p] <= g.
fn problem_of_centroid(g: u32) -> u32 {
    var lo = 0u;
    var hi = P.n_prob;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (coff[mid] <= g) { lo = mid; } else { hi = mid; }
    }
    return lo;
}
