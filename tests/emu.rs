//! Tests of the CPU emulator of CUDA itself (feature `cuda-emu`): warp operations against
//! hand-computed results, block reductions and barrier counts over many block shapes and seeds,
//! a racy kernel the shuffled schedule catches, out-of-bounds writes, deadlocks, uninitialised
//! shared memory, and real kernels from kernels/ launched through the registry.
//! Test kernels: emu/tests/emu_tests.cu.
#![cfg(feature = "cuda-emu")]

use std::ffi::c_void;

use twin_engine::emu::{self, arg, Alloc};

/// Launch with pointer-or-value arguments given as mutable locals.
fn launch(kernel: &str, grid: (u32, u32, u32), block: (u32, u32, u32), smem: usize, args: &[*mut c_void], seed: u64) -> Result<(), String> {
    // SAFETY: every caller passes argument values that match the kernel's parameter list in
    // emu/tests/emu_tests.cu or kernels/gather.cu, with buffers sized for the geometry.
    unsafe { emu::launch(kernel, grid, block, smem, args, seed) }
}

const POISON32: u32 = 0xffff_ffff;

/// One shuffle case on a 32-thread block: returns (u64, u32, f32 bits) per lane.
fn shfl_case(mode: u32, mask: u32, lane_arg: &[i32; 32], width: i32) -> Vec<(u64, u32, u32)> {
    let input: Vec<u64> = (0..32u64).map(|l| (l << 40) | (1000 + l)).collect();
    let a_in = Alloc::from_slice(&input).unwrap();
    let a_arg = Alloc::from_slice(lane_arg).unwrap();
    let mut o64 = Alloc::new(32 * 8).unwrap();
    let mut o32 = Alloc::new(32 * 4).unwrap();
    let mut of = Alloc::new(32 * 4).unwrap();
    for a in [&mut o64, &mut o32, &mut of] {
        a.fill(0xff).unwrap();
    }
    let (mut p_in, mut p_arg, mut p64, mut p32, mut pf) = (a_in.ptr(), a_arg.ptr(), o64.ptr(), o32.ptr(), of.ptr());
    let (mut mode, mut mask, mut width) = (mode, mask, width);
    let args =
        [arg(&mut p_in), arg(&mut p_arg), arg(&mut mode), arg(&mut mask), arg(&mut width), arg(&mut p64), arg(&mut p32), arg(&mut pf)];
    launch("emu_t_shfl", (1, 1, 1), (32, 1, 1), 0, &args, 7).unwrap();
    let (v64, v32, vf) = (o64.read::<u64>(32), o32.read::<u32>(32), of.read::<f32>(32));
    (0..32).map(|l| (v64[l], v32[l], vf[l].to_bits())).collect()
}

/// `src[l]` = the lane whose value lane l must get, None = lane not in the mask (output untouched).
fn check_shfl(name: &str, got: &[(u64, u32, u32)], src: &[Option<usize>]) {
    for (l, (&g, s)) in got.iter().zip(src).enumerate() {
        let want = match s {
            Some(j) => (((*j as u64) << 40) | (1000 + *j as u64), 1000 + *j as u32, ((1000 + *j) as f32).to_bits()),
            None => (u64::MAX, POISON32, POISON32),
        };
        assert_eq!(g, want, "{name}: lane {l}");
    }
}

#[test]
fn shuffles_with_partial_masks_match_hand_computed_lanes() {
    let all = |v: i32| [v; 32];
    let own = |l: usize| Some(l);
    // xor 1 among lanes 0..15 only: pairs swap, lanes 16..31 do not take part.
    let src: Vec<_> = (0..32).map(|l| (l < 16).then_some(l ^ 1)).collect();
    check_shfl("xor 1, mask 0xffff", &shfl_case(3, 0x0000_ffff, &all(1), 32), &src);
    // xor 4 in groups of 8 stays inside each group.
    let src: Vec<_> = (0..32).map(|l| Some(l ^ 4)).collect();
    check_shfl("xor 4, width 8", &shfl_case(3, !0, &all(4), 8), &src);
    // xor 8 in groups of 8: lanes 8..15 and 24..31 read the earlier group (0..7, 16..23); lanes
    // 0..7 and 16..23 would read a later group, so they keep their own value.
    let src = [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23, 16, 17, 18, 19, 20, 21, 22, 23].map(Some);
    check_shfl("xor 8, width 8", &shfl_case(3, !0, &all(8), 8), &src);
    // up 3 in the upper half-warp (mask and width 16): lanes 16..18 keep theirs, 19.. read l-3.
    let src: Vec<_> = (0..32)
        .map(|l| {
            if l < 16 {
                None
            } else if l < 19 {
                own(l)
            } else {
                Some(l - 3)
            }
        })
        .collect();
    check_shfl("up 3, mask 0xffff0000, width 16", &shfl_case(1, 0xffff_0000, &all(3), 16), &src);
    let src: Vec<_> = (0..32).map(|l| Some(if l == 0 { 0 } else { l - 1 })).collect();
    check_shfl("up 1", &shfl_case(1, !0, &all(1), 32), &src);
    // down 2 in groups of 16: the last two lanes of each group keep theirs.
    let src: Vec<_> = (0..32).map(|l| Some(if l % 16 < 14 { l + 2 } else { l })).collect();
    check_shfl("down 2, width 16", &shfl_case(2, !0, &all(2), 16), &src);
    // broadcast of lane 3 to the lanes of mask 0x0f0f0f0f.
    let src: Vec<_> = (0..32).map(|l| ((0x0f0f_0f0fu32 >> l) & 1 == 1).then_some(3)).collect();
    check_shfl("broadcast 3, mask 0x0f0f0f0f", &shfl_case(0, 0x0f0f_0f0f, &all(3), 32), &src);
    // idx 2 in groups of 8: each group's lane 2.
    let src: Vec<_> = (0..32).map(|l| Some((l & !7) | 2)).collect();
    check_shfl("idx 2, width 8", &shfl_case(0, !0, &all(2), 8), &src);
    // per-lane sources: rotate by 5.
    let mut rot = [0i32; 32];
    for (l, r) in rot.iter_mut().enumerate() {
        *r = ((l + 5) % 32) as i32;
    }
    let src: Vec<_> = (0..32).map(|l| Some((l + 5) % 32)).collect();
    check_shfl("rotate 5", &shfl_case(0, !0, &rot, 32), &src);
    // Reading a lane outside the mask is undefined on the GPU: the emulator returns a NaN poison.
    let got = shfl_case(3, 0x0000_ffff, &all(16), 32);
    for (l, g) in got.iter().enumerate().take(16) {
        assert_eq!(*g, (0x7ff8_dead_7fc0_dead, 0x7fc0_dead, 0x7fc0_dead), "outside-mask read, lane {l}");
    }
}

#[test]
fn block_reduction_equals_sequential_sum_for_all_shapes_and_seeds() {
    let mut shapes: Vec<(u32, u32, u32)> =
        [1u32, 2, 3, 31, 32, 33, 63, 64, 65, 97, 100, 127, 128, 129, 255, 256, 257, 511, 513, 777, 1000, 1023, 1024]
            .iter()
            .map(|&n| (n, 1, 1))
            .collect();
    shapes.extend([(4, 4, 4), (7, 3, 5), (32, 8, 4), (1, 1, 64), (3, 11, 1), (17, 1, 9)]);
    let grid = (3u32, 2u32, 1u32);
    let blocks = 6usize;
    for &(bx, by, bz) in &shapes {
        let nthr = bx * by * bz;
        let n = 3 * nthr + 7; // elements per block: not a multiple of the block
        let data: Vec<u32> = (0..blocks as u32 * n).map(|i| i.wrapping_mul(2_654_435_761) >> 8).collect();
        let want: Vec<u64> = data.chunks(n as usize).map(|c| c.iter().map(|&v| v as u64).sum()).collect();
        let a_in = Alloc::from_slice(&data).unwrap();
        let out = Alloc::new(blocks * 8).unwrap();
        let seeds = if matches!(nthr, 33 | 100 | 1024) { 0..24u64 } else { 0..4u64 };
        for seed in seeds {
            let (mut p_in, mut nn, mut p_out) = (a_in.ptr(), n, out.ptr());
            launch("emu_t_block_sum", grid, (bx, by, bz), 0, &[arg(&mut p_in), arg(&mut nn), arg(&mut p_out)], seed).unwrap();
            assert_eq!(out.read::<u64>(blocks), want, "block ({bx},{by},{bz}), seed {seed}");
        }
    }
}

fn barrier_rounds(block: u32, second_sync: u32, seed: u64) -> Vec<u32> {
    let grid = 2u32;
    let bad = Alloc::new((grid * block) as usize * 4).unwrap();
    let (mut rounds, mut ss, mut p_bad) = (5u32, second_sync, bad.ptr());
    launch("emu_t_barrier_count", (grid, 1, 1), (block, 1, 1), 0, &[arg(&mut rounds), arg(&mut ss), arg(&mut p_bad)], seed).unwrap();
    bad.read::<u32>((grid * block) as usize)
}

#[test]
fn barrier_counts_hold_after_every_barrier() {
    for block in [1u32, 32, 33, 100, 256, 1024] {
        for seed in 0..6 {
            assert!(barrier_rounds(block, 1, seed).iter().all(|&b| b == 0), "block {block}, seed {seed}");
        }
    }
    // Without the second barrier a fast thread's next increment races the slow threads' check.
    for seed in 0..4 {
        let bad = barrier_rounds(256, 0, seed);
        assert!(bad.iter().any(|&b| b > 0), "seed {seed}: the missing barrier went unnoticed");
    }
}

#[test]
fn ballot_popc_ffs() {
    type Case = (u32, fn(u32) -> bool, u32); // (mask, predicate of the lane, expected ballot)
    let cases: [Case; 3] = [
        // lanes 0..7 and 16..23 vote; true for multiples of 3: 0, 3, 6, 18, 21.
        (0x00ff_00ff, |l| l % 3 == 0, (1 << 0) | (1 << 3) | (1 << 6) | (1 << 18) | (1 << 21)),
        (!0, |l| l % 2 == 1, 0xaaaa_aaaa),
        (!0, |_| false, 0),
    ];
    for (mask, pred, want) in cases {
        let p: Vec<u32> = (0..32).map(|l| pred(l) as u32).collect();
        let a_p = Alloc::from_slice(&p).unwrap();
        let outs: Vec<Alloc> = (0..3).map(|_| Alloc::from_slice(&[POISON32; 32]).unwrap()).collect();
        let (mut pp, mut m, mut o0, mut o1, mut o2) = (a_p.ptr(), mask, outs[0].ptr(), outs[1].ptr(), outs[2].ptr());
        launch("emu_t_ballot", (1, 1, 1), (32, 1, 1), 0, &[arg(&mut pp), arg(&mut m), arg(&mut o0), arg(&mut o1), arg(&mut o2)], 3)
            .unwrap();
        let (b, pc, ff) = (outs[0].read::<u32>(32), outs[1].read::<u32>(32), outs[2].read::<u32>(32));
        for l in 0..32 {
            if (mask >> l) & 1 == 0 {
                assert_eq!((b[l], pc[l], ff[l]), (POISON32, POISON32, POISON32), "lane {l} outside the mask");
            } else {
                assert_eq!((b[l], pc[l], ff[l]), (want, want.count_ones(), if want == 0 { 0 } else { want.trailing_zeros() + 1 }));
            }
        }
    }
}

fn racy_sum(sync: u32, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let (grid, block) = (4u32, 256u32);
    let data: Vec<u32> = (0..grid * block).map(|i| i * 7 + 1).collect();
    let want: Vec<u32> = data.chunks(block as usize).map(|c| c.iter().sum()).collect();
    let a_in = Alloc::from_slice(&data).unwrap();
    let out = Alloc::new(grid as usize * 4).unwrap();
    let (mut p_in, mut s, mut p_out) = (a_in.ptr(), sync, out.ptr());
    launch("emu_t_racy_sum", (grid, 1, 1), (block, 1, 1), 0, &[arg(&mut p_in), arg(&mut s), arg(&mut p_out)], seed).unwrap();
    (out.read::<u32>(grid as usize), want)
}

#[test]
fn missing_barrier_is_caught_by_the_shuffled_schedule() {
    let seeds = 1..=8u64;
    for seed in seeds.clone() {
        let (got, want) = racy_sum(1, seed);
        assert_eq!(got, want, "the correct kernel failed for seed {seed}");
    }
    // Run in thread order (0, 1, ..., 255) this racy kernel would pass: the reading thread is in
    // the last warp, after every warp's store. Only a shuffled order exposes the race.
    let caught: Vec<u64> = seeds.filter(|&s| racy_sum(0, s).0 != racy_sum(1, s).1).collect();
    eprintln!("racy sum caught for seeds {caught:?} of 1..=8");
    assert!(!caught.is_empty(), "the missing __syncthreads was not caught for any seed");
}

#[test]
fn out_of_bounds_write_is_reported() {
    let n = 100u32;
    let buf = Alloc::new(n as usize * 4).unwrap();
    let (mut p, mut nn) = (buf.ptr(), n);
    let err = launch("emu_t_write_past", (1, 1, 1), (128, 1, 1), 0, &[arg(&mut p), arg(&mut nn)], 1).unwrap_err();
    assert!(err.contains("emu_t_write_past") && err.contains("past the end of allocation") && err.contains("400 bytes"), "{err}");
    assert!(err.contains("+0..+3"), "names the overwritten bytes: {err}");
    assert!(buf.check().is_err());
    assert!(emu::check_all().unwrap_err().contains("past the end"));
    let e = buf.free().unwrap_err();
    eprintln!("oob: {err}\nfree: {e}");
    assert!(e.contains("past the end of allocation"), "{e}");
    // An in-bounds launch of the same kernel on a larger buffer is clean.
    let ok = Alloc::new((n as usize + 1) * 4).unwrap();
    let mut p = ok.ptr();
    launch("emu_t_write_past", (1, 1, 1), (128, 1, 1), 0, &[arg(&mut p), arg(&mut nn)], 1).unwrap();
    ok.free().unwrap();
}

#[test]
fn write_past_dynamic_shared_memory_is_reported() {
    let out = Alloc::new(32 * 4).unwrap();
    for (at, fine) in [(63u32, true), (64, false), (100, false)] {
        let (mut a, mut p) = (at, out.ptr());
        let r = launch("emu_t_smem_write", (1, 1, 1), (32, 1, 1), 64, &[arg(&mut a), arg(&mut p)], 1);
        assert_eq!(r.is_ok(), fine, "byte {at} of 64: {r:?}");
        if let Err(e) = r {
            assert!(e.contains("dynamic shared memory"), "{e}");
        }
    }
}

#[test]
fn uninitialised_shared_memory_reads_garbage() {
    let out = Alloc::new((2 * 64 + 2) * 4).unwrap();
    for seed in 0..4 {
        let mut p = out.ptr();
        launch("emu_t_uninit_shared", (2, 1, 1), (64, 1, 1), 16, &[arg(&mut p)], seed).unwrap();
        let v = out.read::<u32>(130);
        assert!(v[..64].iter().enumerate().all(|(i, &x)| x == i as u32), "block 0 wrote its own");
        assert!(v[64..].iter().all(|&x| x == 0xcdcd_cdcd), "seed {seed}: block 1 and dynamic smem must read 0xCD, got {v:?}");
    }
}

#[test]
fn deadlocks_and_divergent_barriers_are_errors_not_hangs() {
    let out = Alloc::new(32 * 4).unwrap();
    let run = |mode: u32| {
        let (mut m, mut p) = (mode, out.ptr());
        launch("emu_t_bad_sync", (2, 1, 1), (32, 1, 1), 0, &[arg(&mut m), arg(&mut p)], 5)
    };
    let e = run(0).unwrap_err();
    eprintln!("mode0: {e}");
    assert!(e.contains("emu_t_bad_sync") && e.contains("block (") && e.contains("divergent __syncthreads"), "{e}");
    let e = run(1).unwrap_err();
    eprintln!("mode1: {e}");
    assert!(e.contains("deadlock") && e.contains("__syncwarp") && e.contains("__syncthreads"), "{e}");
    let e = run(2).unwrap_err();
    eprintln!("mode2: {e}");
    assert!(e.contains("exited") && e.contains("__shfl_xor_sync"), "{e}");
    // Threads that exit before a barrier do not block it (as on the hardware).
    run(3).unwrap();
    assert_eq!(out.read::<u32>(16), (0..16).collect::<Vec<u32>>());
}

/// Mirrors `GatherParams` in kernels/gather.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct GatherParams {
    n: u32,
    cols: u32,
}

#[test]
fn real_kernel_gather_fwd_f32_through_the_registry() {
    // table [5, 3]: t[r][c] = 10 r + c + 0.5; ids [4, 0, 2, 2].
    let table: Vec<f32> = (0..5).flat_map(|r| (0..3).map(move |c| (10 * r + c) as f32 + 0.5)).collect();
    let ids = [4u32, 0, 2, 2];
    let want = [40.5f32, 41.5, 42.5, 0.5, 1.5, 2.5, 20.5, 21.5, 22.5, 20.5, 21.5, 22.5];
    let (a_t, a_ids) = (Alloc::from_slice(&table).unwrap(), Alloc::from_slice(&ids).unwrap());
    let mut out = Alloc::new(12 * 4).unwrap();
    // Grid-stride with fewer threads than elements, and one big block.
    for (grid, block) in [(2u32, 4u32), (1, 256), (3, 1)] {
        for seed in 0..3 {
            out.fill(0xff).unwrap();
            let mut prm = GatherParams { n: 4, cols: 3 };
            let (mut pt, mut pi, mut po) = (a_t.ptr(), a_ids.ptr(), out.ptr());
            launch("gather_fwd_f32", (grid, 1, 1), (block, 1, 1), 0, &[arg(&mut prm), arg(&mut pt), arg(&mut pi), arg(&mut po)], seed)
                .unwrap();
            assert_eq!(out.read::<f32>(12), want, "grid {grid}, block {block}, seed {seed}");
        }
    }
}

#[test]
fn real_kernel_gather_fwd_f16_converts_every_half_exactly() {
    let table: Vec<u16> = (0..=u16::MAX).collect();
    let ids: Vec<u32> = (0..65536u32).collect();
    let (a_t, a_ids) = (Alloc::from_slice(&table).unwrap(), Alloc::from_slice(&ids).unwrap());
    let out = Alloc::new(65536 * 4).unwrap();
    let mut prm = GatherParams { n: 65536, cols: 1 };
    let (mut pt, mut pi, mut po) = (a_t.ptr(), a_ids.ptr(), out.ptr());
    launch("gather_fwd_f16", (64, 1, 1), (256, 1, 1), 0, &[arg(&mut prm), arg(&mut pt), arg(&mut pi), arg(&mut po)], 11).unwrap();
    for (h, got) in table.iter().zip(out.read::<f32>(65536)) {
        let want = half::f16::from_bits(*h).to_f32();
        assert_eq!(got.to_bits(), want.to_bits(), "f16 bits {h:#06x}");
    }
}

#[test]
fn registry_holds_every_kernel_and_checks_launches() {
    let names = emu::kernels();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut expected = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "cu") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        for (i, _) in src.match_indices("extern \"C\" __global__") {
            let head = &src[i..src[i..].find('(').map(|p| i + p).unwrap()];
            let rest = &src[i..];
            // The name is the identifier before the parameter list (after __launch_bounds__(..)).
            let after_lb = if head.contains("__launch_bounds__") { &rest[rest.find(')').unwrap() + 1..] } else { rest };
            let name: String = after_lb[..after_lb.find('(').unwrap()].split_whitespace().last().unwrap().to_string();
            assert!(names.contains(&name), "{name} ({}) is not registered; have {names:?}", path.display());
            expected += 1;
        }
    }
    assert!(expected >= 22, "found only {expected} kernels in kernels/");
    let e = launch("gather_fwd_f32", (1, 1, 1), (32, 1, 1), 0, &[std::ptr::null_mut(); 3], 0).unwrap_err();
    assert!(e.contains("takes 4 arguments"), "{e}");
    assert!(launch("no_such_kernel", (1, 1, 1), (1, 1, 1), 0, &[], 0).unwrap_err().contains("unknown kernel"));
    let mut m = 3u32;
    let mut p: *mut c_void = std::ptr::null_mut();
    let e = launch("emu_t_bad_sync", (1, 1, 1), (1025, 1, 1), 0, &[arg(&mut m), arg(&mut p)], 0).unwrap_err();
    assert!(e.contains("invalid block"), "{e}");
}

#[test]
fn float_to_half_rounds_like_the_half_crate() {
    // Every half's value, the midpoints between neighbouring halves and one f32 ulp either side
    // of them (ties to even, subnormals, the overflow threshold 65520), NaNs and infinities, and
    // a stride through all 2^32 bit patterns.
    let mut xs: Vec<f32> = Vec::new();
    for h in 0..=u16::MAX {
        let v = half::f16::from_bits(h).to_f32();
        xs.push(v);
        if v.is_finite() {
            let next = half::f16::from_bits(h.wrapping_add(1)).to_f32();
            if next.is_finite() && (next.abs() > v.abs()) == (v >= 0.0) {
                let mid = ((v as f64 + next as f64) / 2.0) as f32;
                xs.extend([mid, f32::from_bits(mid.to_bits() + 1), f32::from_bits(mid.to_bits() - 1)]);
            }
        }
    }
    xs.extend([65504.0f32, 65519.996, 65520.0, 65536.0, 1e10, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN]);
    xs.extend([f32::from_bits(0x7f80_0001), f32::from_bits(0xffc1_2345), f32::MIN_POSITIVE, 1e-45, 2.9802322e-8, 2.9802326e-8]);
    xs.extend((0..(1u64 << 32)).step_by(4099).map(|b| f32::from_bits(b as u32)));
    let n = xs.len();
    let a_in = Alloc::from_slice(&xs).unwrap();
    let out = Alloc::new(n * 2).unwrap();
    let (mut p_in, mut nn, mut p_out) = (a_in.ptr(), n as u32, out.ptr());
    launch("emu_t_f2h", (64, 1, 1), (256, 1, 1), 0, &[arg(&mut p_in), arg(&mut nn), arg(&mut p_out)], 3).unwrap();
    let got = out.read::<u16>(n);
    for (x, g) in xs.iter().zip(got) {
        let want = half::f16::from_f32(*x).to_bits();
        assert_eq!(g, want, "f32 {x:e} ({:#010x}): got {g:#06x}, want {want:#06x}", x.to_bits());
    }
    eprintln!("float -> half: {n} values equal the half crate's");
}

/// Host reference of `emu_t_wmma`: D = C + Σ_k A(i,k) B(k,j), products of halves in f32 (exact),
/// added one at a time in k order with f32 rounding: the emulator's documented order.
fn wmma_reference(a: &[u16], b: &[u16], c: &[f32], steps: usize, a_col: bool, b_col: bool) -> Vec<f32> {
    let h = |x: u16| half::f16::from_bits(x).to_f32();
    let kn = 16 * steps;
    let mut d = vec![0f32; 16 * 20];
    for i in 0..16 {
        for j in 0..16 {
            let mut acc = c[i * 16 + j];
            for k in 0..kn {
                let x = h(if a_col { a[k * 16 + i] } else { a[i * kn + k] });
                let y = h(if b_col { b[j * kn + k] } else { b[k * 16 + j] });
                let p = x * y;
                assert_eq!(p as f64, x as f64 * y as f64, "a product of two halves is exact in f32");
                acc += p;
            }
            d[i * 20 + j] = acc;
        }
    }
    d
}

fn wmma_case(steps: u32, a_col: u32, b_col: u32, mode: u32, seed: u64) -> Result<(Vec<f32>, Vec<f32>), String> {
    let mut rng = twin_engine::rng::SplitMix64::new(seed * 31 + steps as u64);
    // Halves over many magnitudes: subnormals, ordinary values, up to ~2^12.
    let mut half_of = |_| {
        let scale = [1e-6, 0.01, 1.0, 300.0][rng.below(4) as usize];
        half::f16::from_f32((rng.normal() * scale) as f32).to_bits()
    };
    let n = 256 * steps as usize;
    let a: Vec<u16> = (0..n).map(&mut half_of).collect();
    let b: Vec<u16> = (0..n).map(&mut half_of).collect();
    let c: Vec<f32> = (0..256).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37).collect();
    let want = wmma_reference(&a, &b, &c, steps as usize, a_col != 0, b_col != 0);
    let (a_a, a_b, a_c) = (Alloc::from_slice(&a).unwrap(), Alloc::from_slice(&b).unwrap(), Alloc::from_slice(&c).unwrap());
    let out = Alloc::from_slice(&[f32::NAN; 16 * 20]).unwrap();
    let (mut pa, mut pb, mut pc, mut po) = (a_a.ptr(), a_b.ptr(), a_c.ptr(), out.ptr());
    let (mut st, mut ac, mut bc, mut m) = (steps, a_col, b_col, mode);
    launch(
        "emu_t_wmma",
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[arg(&mut pa), arg(&mut pb), arg(&mut pc), arg(&mut st), arg(&mut ac), arg(&mut bc), arg(&mut m), arg(&mut po)],
        seed,
    )?;
    let got = out.read::<f32>(16 * 20);
    Ok((got, want))
}

#[test]
fn wmma_mma_equals_a_host_loop_in_every_layout() {
    for steps in [1u32, 2, 4] {
        for (a_col, b_col) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            for seed in 0..3 {
                let (got, want) = wmma_case(steps, a_col, b_col, 0, seed).unwrap();
                for i in 0..16 {
                    for j in 0..20 {
                        let (g, w) = (got[i * 20 + j], want[i * 20 + j]);
                        if j < 16 {
                            assert_eq!(
                                g.to_bits(),
                                w.to_bits(),
                                "steps {steps} a_col {a_col} b_col {b_col} seed {seed}: d[{i}][{j}] {g} vs {w}"
                            );
                        } else {
                            assert!(g.is_nan(), "the store wrote past column 15 (ldm 20)");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn wmma_misuse_is_an_error() {
    let e = wmma_case(1, 0, 1, 1, 1).unwrap_err();
    assert!(e.contains("wmma::load_matrix_sync") && e.contains("not 32-byte"), "{e}");
    let e = wmma_case(2, 0, 1, 2, 1).unwrap_err();
    assert!(e.contains("exited") && e.contains("wmma::load_matrix_sync"), "{e}");
    let e = wmma_case(1, 1, 0, 3, 1).unwrap_err();
    assert!(e.contains("different arguments") && e.contains("wmma::load_matrix_sync(matrix_a)"), "{e}");
    // Without the __syncwarp between staging and the loads, a lane loads elements other lanes have
    // not stored yet. wmma loads read at the lane's own point and do not wait for the warp (they
    // do not order memory), so the first lane of the seed-drawn order runs past its staging into
    // the loads while the 8 lanes that staged its elements (7 of them others) have not run: every
    // seed shows it, and the same seeds with the __syncwarp (mode 0) are exact.
    let mut caught = 0;
    for s in 0..8 {
        let differs = |(g, w): (Vec<f32>, Vec<f32>)| (0..16).any(|i| (0..16).any(|j| g[i * 20 + j].to_bits() != w[i * 20 + j].to_bits()));
        assert!(!differs(wmma_case(2, 0, 0, 0, s).unwrap()), "seed {s}: the synchronised kernel differs");
        caught += usize::from(wmma_case(2, 0, 0, 4, s).map(differs).unwrap_or(true));
    }
    eprintln!("wmma load race caught for {caught} of 8 seeds");
    assert_eq!(caught, 8, "the missing __syncwarp before the wmma loads went unnoticed for some seeds");
}
