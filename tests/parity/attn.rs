//! attn_fwd / attn_bwd (training attention, ragged samples) against the CPU reference.
//!
//! Inputs are random with outliers: every 37th q and every 101st k value is ±6 (single q·k terms
//! of 36), every 89th bias is ±30, so some softmax rows are dominated by one behaviour and others
//! are flat. Samples include 0, 1, 97, 1025 and 100,003 rows. Both sides compute in f32 with
//! different summation orders (the GPU reduces tiles / row groups, the CPU adds sequentially):
//! forward atol 1e-5 + rtol 1e-4, backward atol 2e-5 + rtol 2e-4 (the gradients are sums of
//! products of already-rounded weights and logits).

use twin_engine::backend::{AttnOut, AttnSaved, Backend};
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::common::*;
use crate::parity_test;
use crate::split_test;

pub struct Case {
    pub heads: usize,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub bias: Vec<f32>,
    pub offsets: Vec<u32>,
    pub dpooled: Vec<f32>,
}

/// Normal(0, scale) with every `every`-th value (from `phase`) replaced by ±`big`.
fn noisy(rng: &mut SplitMix64, n: usize, scale: f64, every: usize, phase: usize, big: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = rng.normal() * scale;
            if i % every == phase {
                if x < 0.0 {
                    -big
                } else {
                    big
                }
            } else {
                x as f32
            }
        })
        .collect()
}

fn normal(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

pub fn case(rows: &[usize], heads: usize, dk: usize, seed: u64) -> Case {
    let mut rng = SplitMix64::new(seed);
    let (b, n, d) = (rows.len(), rows.iter().sum::<usize>(), heads * dk);
    let mut offsets = vec![0u32];
    for &r in rows {
        offsets.push(offsets.last().unwrap() + r as u32);
    }
    Case {
        heads,
        q: noisy(&mut rng, b * d, 0.5, 37, 5, 6.0),
        k: noisy(&mut rng, n * d, 0.5, 101, 17, 6.0),
        v: normal(&mut rng, n * d),
        bias: noisy(&mut rng, n * heads, 1.0, 89, 3, 30.0),
        offsets,
        dpooled: normal(&mut rng, b * d),
    }
}

impl Case {
    pub fn fwd(&self, be: &dyn Backend) -> AttnOut {
        be.attn_fwd(self.heads, &self.q, &self.k, &self.v, &self.bias, &self.offsets).unwrap()
    }
    pub fn saved<'a>(&'a self, p: &'a [f32]) -> AttnSaved<'a> {
        AttnSaved { q: &self.q, k: &self.k, v: &self.v, bias: &self.bias, offsets: &self.offsets, p }
    }
}

/// (heads, d_k): the model's 4 × 32, a single narrow head, a d_k that is no power of two and a
/// d_k above 64 (several column passes in the kernels).
const HEADS_DK: [(usize, usize); 4] = [(4, 32), (1, 8), (3, 12), (2, 80)];

/// Rows per sample: B = 1, 3 and 17, with empty samples, 1, 97, 1025 and tile-edge sizes.
fn shapes() -> Vec<Vec<usize>> {
    vec![vec![97], vec![0, 1, 1025], vec![1, 0, 97, 5, 1025, 33, 0, 64, 65, 2, 1023, 1024, 7, 0, 300, 129, 1], vec![0]]
}

/// The long sample (100,003 rows), alone and beside short ones. Runs on every backend:
/// lavapipe takes about a second per call (tiles keep each invocation's loops short).
fn long_shapes() -> Vec<Vec<usize>> {
    vec![vec![100_003], vec![3, 100_003, 0]].into_iter().filter(|s| keep_len(s.iter().sum())).collect()
}

fn check_fwd(what: &str, got: &AttnOut, want: &AttnOut) {
    assert_close(&format!("{what} p"), &got.p, &want.p, |_| 1e-5, 1e-4);
    assert_close(&format!("{what} pooled"), &got.pooled, &want.pooled, |_| 1e-5, 1e-4);
}

parity_test!(attn_fwd_matches_cpu, |gpu, cpu| {
    for (hi, &(h, dk)) in HEADS_DK.iter().enumerate() {
        for (si, rows) in shapes().into_iter().enumerate() {
            let c = case(&rows, h, dk, 100 + (hi * 10 + si) as u64);
            let what = format!("attn_fwd h{h} dk{dk} B{}", rows.len());
            check_fwd(&what, &c.fwd(&*gpu), &c.fwd(&*cpu));
        }
    }
    for (h, dk) in [(4, 32), (1, 8)] {
        for (si, rows) in long_shapes().into_iter().enumerate() {
            let c = case(&rows, h, dk, 200 + si as u64);
            check_fwd(&format!("attn_fwd long h{h} dk{dk} B{}", rows.len()), &c.fwd(&*gpu), &c.fwd(&*cpu));
        }
    }
});

fn check_bwd(what: &str, gpu: &dyn Backend, cpu: &dyn Backend, c: &Case) {
    // Both backends get the reference's p, so only the backward differs.
    let p = c.fwd(cpu).p;
    let got = gpu.attn_bwd(c.heads, c.saved(&p), &c.dpooled).unwrap();
    let want = cpu.attn_bwd(c.heads, c.saved(&p), &c.dpooled).unwrap();
    let (atol, rtol) = (2e-5, 2e-4);
    assert_close(&format!("{what} dq"), &got.dq, &want.dq, |_| atol, rtol);
    assert_close(&format!("{what} dk"), &got.dk, &want.dk, |_| atol, rtol);
    assert_close(&format!("{what} dv"), &got.dv, &want.dv, |_| atol, rtol);
    assert_close(&format!("{what} dbias"), &got.dbias, &want.dbias, |_| atol, rtol);
}

parity_test!(attn_bwd_matches_cpu, |gpu, cpu| {
    for (hi, &(h, dk)) in HEADS_DK.iter().enumerate() {
        for (si, rows) in shapes().into_iter().enumerate() {
            let c = case(&rows, h, dk, 300 + (hi * 10 + si) as u64);
            check_bwd(&format!("attn_bwd h{h} dk{dk} B{}", rows.len()), &*gpu, &*cpu, &c);
        }
    }
    if keep_len(100_006) {
        let c = case(&[3, 100_003, 0], 4, 32, 400);
        check_bwd("attn_bwd long", &*gpu, &*cpu, &c);
    }
});

// The same call twice gives the same bits (fixed-order reductions, no atomics), and a sample's
// result does not depend on the other samples of the batch.
parity_test!(attn_is_deterministic, |gpu, cpu| {
    for be in [&gpu, &cpu] {
        let c = case(&[1, 0, 97, 1025, 5000], 4, 32, 500);
        let (a, b) = (c.fwd(&**be), c.fwd(&**be));
        assert_eq!(bits(&a.p), bits(&b.p), "p differs run to run");
        assert_eq!(bits(&a.pooled), bits(&b.pooled), "pooled differs run to run");
        let g1 = be.attn_bwd(4, c.saved(&a.p), &c.dpooled).unwrap();
        let g2 = be.attn_bwd(4, c.saved(&a.p), &c.dpooled).unwrap();
        assert_eq!(g1, g2, "attn_bwd differs run to run");
    }
});

// wgpu with a 64 KiB storage-binding cap: samples are processed in groups; the results match the
// unsplit backend bit for bit, and a sample larger than one binding is a typed error.
split_test!(attn_split, |u, whole, cpu| {
    let c = case(&[1, 0, 97, 40, 120, 3, 0, 64], 4, 32, 600);
    let (got, one) = (c.fwd(&*u.be), c.fwd(&*whole));
    assert_eq!(bits(&got.p), bits(&one.p), "{}: split p", u.label);
    assert_eq!(bits(&got.pooled), bits(&one.pooled), "{}: split pooled", u.label);
    check_fwd(&format!("attn_fwd [{}]", u.label), &got, &c.fwd(&*cpu));
    let g = u.be.attn_bwd(4, c.saved(&got.p), &c.dpooled).unwrap();
    assert_eq!(g, whole.attn_bwd(4, c.saved(&got.p), &c.dpooled).unwrap(), "{}: split bwd", u.label);
    check_bwd(&format!("attn_bwd [{}]", u.label), &*u.be, &*cpu, &c);
    let big = case(&[3, 1025], 4, 32, 601);
    assert!(matches!(u.be.attn_fwd(4, &big.q, &big.k, &big.v, &big.bias, &big.offsets), Err(Error::TooLarge { .. })));
});

parity_test!(attn_errors_are_typed, |gpu, cpu| {
    let check = |be: &dyn Backend| {
        let c = case(&[3, 0, 5], 4, 32, 700);
        let (q, k, v, bias, offs) = (&c.q, &c.k, &c.v, &c.bias, &c.offsets);
        let fwd = |q: &[f32], k: &[f32], v: &[f32], bias: &[f32], offs: &[u32]| be.attn_fwd(4, q, k, v, bias, offs);
        assert!(matches!(fwd(q, &k[..k.len() - 1], v, bias, offs), Err(Error::LengthMismatch { field: "k", .. })));
        assert!(matches!(fwd(q, k, &v[..v.len() - 128], bias, offs), Err(Error::LengthMismatch { field: "v", .. })));
        assert!(matches!(fwd(&q[..q.len() - 1], k, v, bias, offs), Err(Error::LengthMismatch { field: "q", .. })));
        let mut qn = q.clone();
        qn[7] = f32::NAN;
        assert!(matches!(fwd(&qn, k, v, bias, offs), Err(Error::NonFinite { field: "q", index: 7, .. })));
        let mut bn = bias.clone();
        bn[2] = f32::INFINITY;
        assert!(matches!(fwd(q, k, v, &bn, offs), Err(Error::NonFinite { field: "bias", index: 2, .. })));
        assert!(matches!(fwd(q, k, v, bias, &[0, 5, 3, 8]), Err(Error::BadOffsets { field: "offsets", index: 2, .. })));
        assert!(matches!(fwd(q, k, v, bias, &[1, 3, 3, 8]), Err(Error::BadOffsets { field: "offsets", index: 0, .. })));
        assert!(matches!(fwd(q, k, v, bias, &[0, 3, 3, 7]), Err(Error::LengthMismatch { field: "offsets", .. })));
        assert!(matches!(fwd(q, k, v, bias, &[]), Err(Error::BadOffsets { field: "offsets", .. })));
        assert!(matches!(be.attn_fwd(0, q, k, v, bias, offs), Err(Error::BadShape { field: "heads", .. })));
        let p = be.attn_fwd(4, q, k, v, bias, offs).unwrap().p;
        assert!(matches!(be.attn_bwd(4, c.saved(&p), &c.dpooled[1..]), Err(Error::LengthMismatch { field: "dpooled", .. })));
        assert!(matches!(be.attn_bwd(4, c.saved(&p[1..]), &c.dpooled), Err(Error::LengthMismatch { field: "p", .. })));
        let mut dn = c.dpooled.clone();
        dn[3] = f32::NAN;
        assert!(matches!(be.attn_bwd(4, c.saved(&p), &dn), Err(Error::NonFinite { field: "dpooled", index: 3, .. })));
        let mut kn = k.clone();
        kn[100] = f32::NEG_INFINITY;
        let bad = AttnSaved { k: &kn, ..c.saved(&p) };
        assert!(matches!(be.attn_bwd(4, bad, &c.dpooled), Err(Error::NonFinite { field: "k", index: 100, .. })));
        // No samples at all is valid and empty.
        let e = be.attn_fwd(4, &[], &[], &[], &[], &[0]).unwrap();
        assert!(e.p.is_empty() && e.pooled.is_empty());
    };
    check(&*cpu);
    check(&*gpu);
});

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// The tensor forms (`attn_fwd_dev`, `attn_bwd_dev`: operands resident, offsets staged) run the
// same kernels as the slice forms tested above, so they must give the slice forms' results bit
// for bit: ragged samples (empty ones included) at B = 1, 3, 97.
parity_test!(attn_on_tensors_equals_the_slice_forms, |gpu, _cpu| {
    use twin_engine::backend::{f32s, Staging};
    for (ci, lens) in [vec![1usize], vec![0, 5, 130], (0..97).map(|i| (i * 7) % 23).collect::<Vec<_>>()].iter().enumerate() {
        let mut rng = twin_engine::rng::SplitMix64::new(130 + ci as u64);
        let (b, n) = (lens.len(), lens.iter().sum::<usize>());
        let mut offs = vec![0u32];
        for l in lens {
            offs.push(offs[offs.len() - 1] + *l as u32);
        }
        let (q, k, v) = (randn(&mut rng, b * D, 1.0), randn(&mut rng, n * D, 1.0), randn(&mut rng, n * D, 1.0));
        let bias = randn(&mut rng, n * H, 0.5);
        let dpooled = randn(&mut rng, b * D, 0.1);
        let want = gpu.attn_fwd(H, &q, &k, &v, &bias, &offs).unwrap();
        let saved = twin_engine::backend::AttnSaved { q: &q, k: &k, v: &v, bias: &bias, offsets: &offs, p: &want.p };
        let want_g = gpu.attn_bwd(H, saved, &dpooled).unwrap();

        let mut st = Staging::new();
        let os = st.offsets("offsets", &offs).unwrap();
        let staged = gpu.upload_staging(st).unwrap();
        let t = |name, r, c, x: &[f32]| gpu.tensor_f32(name, r, c, x).unwrap();
        let (qt, kt, vt, bt) = (t("q", b, D, &q), t("k", n, D, &k), t("v", n, D, &v), t("bias", n, H, &bias));
        let o = gpu.attn_fwd_dev(H, &qt, &kt, &vt, &bt, &os, &staged).unwrap();
        let dpt = t("dpooled", b, D, &dpooled);
        let g = gpu.attn_bwd_dev(H, (&qt, &kt, &vt, &bt), &o.p, &dpt, &os, &staged).unwrap();
        let got = gpu.tensor_read(&[&o.p, &o.pooled, &g.dq, &g.dk, &g.dv, &g.dbias]).unwrap();
        let what = format!("attn tensors case {ci}");
        for (i, (name, w)) in
            [("p", &want.p), ("pooled", &want.pooled), ("dq", &want_g.dq), ("dk", &want_g.dk), ("dv", &want_g.dv), ("dbias", &want_g.dbias)]
                .iter()
                .enumerate()
        {
            assert_eq!(bits(&f32s(&got[i])), bits(w), "{what}: {name}");
        }
    }
    // Offsets must be staged valid, and shapes must match them.
    let mut st = Staging::new();
    assert!(st.offsets("offsets", &[0, 3, 2]).is_err());
    let os = st.offsets("offsets", &[0, 2]).unwrap();
    let staged = gpu.upload_staging(st).unwrap();
    let q = gpu.tensor_f32("q", 1, D, &vec![0.0; D]).unwrap();
    let k = gpu.tensor_f32("k", 3, D, &vec![0.0; 3 * D]).unwrap();
    let bias = gpu.tensor_f32("bias", 3, H, &vec![0.0; 3 * H]).unwrap();
    assert!(gpu.attn_fwd_dev(H, &q, &k, &k, &bias, &os, &staged).is_err(), "k has 3 rows, the offsets 2");
});
