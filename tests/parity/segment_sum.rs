//! segment_sum (deterministic scatter-add): every backend adds each segment's source rows in the
//! listed order, so the result must equal the CPU reference bit for bit, and be the same run to
//! run. Cases: keys with heavy repeats (`segments_of`), hand-made segments that are empty, list
//! rows out of order and repeat rows, widths 1..130, and segments longer than the WGSL pass size
//! (65,536 entries: several passes on wgpu) and than llvmpipe's 65,535-iteration loop cap.

use twin_engine::backend::cpu::segment_sum::segments_of;
use twin_engine::backend::Backend;
use twin_engine::rng::SplitMix64;
use twin_engine::Error;

use crate::attn::bits;
use crate::common::*;
use crate::parity_test;
use crate::split_test;

struct Case {
    name: String,
    src: Vec<f32>,
    width: usize,
    perm: Vec<u32>,
    offs: Vec<u32>,
}

/// `n` source rows whose keys are uniform below `n_keys` (many repeats), grouped by key.
fn keyed(n: usize, width: usize, n_keys: u64, seed: u64) -> Case {
    let mut rng = SplitMix64::new(seed);
    let keys: Vec<u32> = (0..n).map(|_| rng.below(n_keys) as u32).collect();
    let (_, perm, offs) = segments_of(&keys);
    Case { name: format!("keyed N{n} W{width} keys{n_keys}"), src: randn(&mut rng, n * width, 1.0), width, perm, offs }
}

/// Hand-made segments: lengths as given (0 = empty), rows drawn at random (out of order, with
/// repeats) from `n` source rows.
fn listed(n: usize, width: usize, lens: &[usize], seed: u64) -> Case {
    let mut rng = SplitMix64::new(seed);
    let mut offs = vec![0u32];
    let mut perm = Vec::new();
    for &l in lens {
        perm.extend((0..l).map(|_| rng.below(n as u64) as u32));
        offs.push(perm.len() as u32);
    }
    Case { name: format!("listed N{n} W{width} lens{lens:?}"), src: randn(&mut rng, n * width, 1.0), width, perm, offs }
}

fn cases() -> Vec<Case> {
    vec![
        keyed(1, 1, 1, 1),
        keyed(97, 3, 10, 2),
        keyed(1025, 128, 300, 3),
        keyed(1025, 130, 7, 4),
        keyed(76_800, 128, 20_000, 5),
        listed(50, 5, &[0, 3, 0, 0, 17, 1, 0], 6),
        listed(200, 64, &[0], 7),
        listed(1000, 2, &[5, 150_000, 0, 70_000, 3], 8),
        listed(4000, 1, &[65_535, 65_536, 65_537, 131_073], 9),
    ]
}

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}[{i}]: got {} ({:#010x}), want {} ({:#010x}): not bit-identical",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

parity_test!(segment_sum_matches_cpu_bit_for_bit, |gpu, cpu| {
    for c in cases() {
        let want = cpu.segment_sum(&c.src, c.width, &c.perm, &c.offs).unwrap();
        let got = gpu.segment_sum(&c.src, c.width, &c.perm, &c.offs).unwrap();
        assert_bits(&c.name, &got, &want);
        // Run to run: a second call gives the same bits.
        let again = gpu.segment_sum(&c.src, c.width, &c.perm, &c.offs).unwrap();
        assert_eq!(bits(&got), bits(&again), "{}: differs run to run", c.name);
        eprintln!("  {}: {} values bit-identical", c.name, got.len());
    }
});

#[test]
fn segment_sum_cpu_is_deterministic() {
    let cpu = cpu();
    for c in cases() {
        let a = cpu.segment_sum(&c.src, c.width, &c.perm, &c.offs).unwrap();
        let b = cpu.segment_sum(&c.src, c.width, &c.perm, &c.offs).unwrap();
        assert_eq!(bits(&a), bits(&b), "{}", c.name);
    }
}

// wgpu with a 64 KiB binding cap: src larger than a binding is gathered per group of segments;
// still bit-identical. A single segment whose rows exceed a binding is a typed error.
split_test!(segment_sum_split, |u, cpu| {
    for c in [keyed(2000, 64, 300, 11), keyed(5000, 3, 40, 12), listed(300, 16, &[0, 900, 5, 0, 1000], 13)] {
        let want = cpu.segment_sum(&c.src, c.width, &c.perm, &c.offs).unwrap();
        let got = u.be.segment_sum(&c.src, c.width, &c.perm, &c.offs).unwrap();
        assert_bits(&format!("{} [{}]", c.name, u.label), &got, &want);
    }
    let c = listed(2000, 16, &[2, 1100], 14);
    assert!(matches!(u.be.segment_sum(&c.src, c.width, &c.perm, &c.offs), Err(Error::TooLarge { .. })));
});

parity_test!(segment_sum_errors_are_typed, |gpu, cpu| {
    let check = |be: &dyn Backend| {
        let c = listed(10, 4, &[2, 0, 3], 20);
        let (src, perm, offs) = (&c.src, &c.perm, &c.offs);
        let mut bad = perm.clone();
        bad[3] = 10;
        assert!(matches!(be.segment_sum(src, 4, &bad, offs), Err(Error::OutOfRange { field: "perm", index: 3, value: 10, limit: 10 })));
        assert!(matches!(be.segment_sum(src, 4, perm, &[0, 3, 2, 5]), Err(Error::BadOffsets { field: "seg_offsets", index: 2, .. })));
        assert!(matches!(be.segment_sum(src, 4, perm, &[2, 2, 5]), Err(Error::BadOffsets { field: "seg_offsets", index: 0, .. })));
        assert!(matches!(be.segment_sum(src, 4, perm, &[0, 2, 4]), Err(Error::LengthMismatch { field: "seg_offsets", .. })));
        assert!(matches!(be.segment_sum(src, 4, perm, &[]), Err(Error::BadOffsets { field: "seg_offsets", .. })));
        assert!(matches!(be.segment_sum(src, 0, perm, offs), Err(Error::BadShape { field: "width", .. })));
        assert!(matches!(be.segment_sum(&src[..39], 4, perm, offs), Err(Error::LengthMismatch { field: "src", .. })));
        let mut sn = src.clone();
        sn[17] = f32::NAN;
        assert!(matches!(be.segment_sum(&sn, 4, perm, offs), Err(Error::NonFinite { field: "src", index: 17, .. })));
        // No segments: empty output.
        assert!(be.segment_sum(src, 4, &[], &[0]).unwrap().is_empty());
    };
    check(&*cpu);
    check(&*gpu);
});

// The tensor form (`segment_sum_dev`: source resident, perm and offsets staged) equals the
// slice form bit for bit (same kernel), empty segments and repeated rows included.
parity_test!(segment_sum_on_tensors_equals_the_slice_form, |gpu, _cpu| {
    use twin_engine::backend::{f32s, Staging};
    for c in cases().into_iter().take(if small() { 6 } else { 9 }) {
        let n = c.src.len() / c.width;
        let mut st = Staging::new();
        let perm = st.ids("perm", &c.perm, n).unwrap();
        let segs = st.offsets("seg_offsets", &c.offs).unwrap();
        let staged = gpu.upload_staging(st).unwrap();
        let src = gpu.tensor_f32("src", n, c.width, &c.src).unwrap();
        let got = f32s(&gpu.tensor_read(&[&gpu.segment_sum_dev(&src, &perm, &segs, &staged).unwrap()]).unwrap()[0]);
        let want = if c.perm.is_empty() {
            vec![0.0; (c.offs.len() - 1) * c.width]
        } else {
            gpu.segment_sum(&c.src, c.width, &c.perm, &c.offs).unwrap()
        };
        assert_bits(&format!("tensor {}", c.name), &got, &want);
    }
    // A perm staged against more rows than the source has is refused.
    let mut st = Staging::new();
    let perm = st.ids("perm", &[0, 5], 6).unwrap();
    let segs = st.offsets("seg_offsets", &[0, 2]).unwrap();
    let staged = gpu.upload_staging(st).unwrap();
    let src = gpu.tensor_f32("src", 3, 2, &[1.0; 6]).unwrap();
    assert!(gpu.segment_sum_dev(&src, &perm, &segs, &staged).is_err());
});
