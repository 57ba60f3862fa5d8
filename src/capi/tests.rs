//! The C ABI from Rust: every function through its C signature, errors, NULLs and panics.

use super::guard::set_last;
use super::*;
use crate::data::Items;
use crate::features;
use crate::model::{Model, ModelConfig};
use std::ffi::CString;
use std::path::Path;
use std::time::Duration;

fn items(n: usize) -> Items {
    Items {
        author: (0..n as u64).map(|i| (i * 7919 % 31) as u32).collect(),
        topic: (0..n as u64).map(|i| (i * 13 % 11) as u32).collect(),
        duration_bucket: (0..n).map(|i| features::duration_bucket(i as f32 * 3.7)).collect(),
        external_id: (0..n as u64).map(|i| i * 10).collect(),
        n_authors: 31,
        n_topics: 11,
    }
}

fn write_model(path: &Path, n: usize, seed: u64) {
    let it = items(n);
    Model::init(ModelConfig::for_items(&it), &it, seed).unwrap().save(path).unwrap();
}

fn cpath(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn last_error() -> String {
    // SAFETY: NULL with length 0 only asks for the length.
    let n = unsafe { twin_last_error(std::ptr::null_mut(), 0) };
    let mut buf = vec![0u8; n + 1];
    // SAFETY: `buf` holds `n + 1` writable bytes.
    let m = unsafe { twin_last_error(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(m, n);
    assert_eq!(buf[n], 0);
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn cpu_options() -> TwinEngineOptions {
    let mut o = std::mem::MaybeUninit::<TwinEngineOptions>::uninit();
    // SAFETY: `o` is valid for one write.
    assert_eq!(unsafe { twin_engine_options_default(o.as_mut_ptr()) }, TWIN_OK);
    // SAFETY: initialised by the successful call above.
    let mut o = unsafe { o.assume_init() };
    o.backend = TWIN_BACKEND_CPU;
    o
}

/// Opens `path` on the CPU; panics with the last error on failure.
fn open(path: &Path) -> *mut TwinEngine {
    let (p, o) = (cpath(path), cpu_options());
    let mut h = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated path, valid options, `h` writable.
    let rc = unsafe { twin_engine_open(p.as_ptr(), &o, &mut h) };
    assert_eq!(rc, TWIN_OK, "{}", last_error());
    assert!(!h.is_null());
    h
}

/// Twelve behaviours on a catalogue of `n` items.
fn behaviours(n: u32) -> Vec<TwinBehaviour> {
    (0..12u32)
        .map(|i| TwinBehaviour {
            item: (i * 17) % n,
            timestamp: 1_700_000_000 + i as i64 * 3_600,
            play_time: 5.0 + i as f32,
            completion: (i as f32 / 12.0).min(1.0),
            size: 1,
        })
        .collect()
}

fn request<'a>(long: &'a [TwinBehaviour], short: &'a [TwinBehaviour], cands: &'a [u32]) -> TwinRequest {
    TwinRequest {
        request_time: 1_700_100_000,
        long_seq: long.as_ptr(),
        long_len: long.len(),
        short_seq: short.as_ptr(),
        short_len: short.len(),
        candidates: cands.as_ptr(),
        n_candidates: cands.len(),
    }
}

fn score(h: *const TwinEngine, req: &TwinRequest, out: &mut [f32]) -> (i32, u64) {
    let mut v = 0u64;
    // SAFETY: `h` is a live handle or NULL, `req` points into live slices, `out` is writable.
    let rc = unsafe { twin_engine_score(h, req, out.as_mut_ptr(), out.len(), &mut v) };
    (rc, v)
}

#[test]
fn scores_match_the_engine_and_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.twin");
    write_model(&path, 200, 7);
    let h = open(&path);
    // SAFETY: live handle.
    assert_eq!(unsafe { twin_engine_model_version(h) }, 1);
    // SAFETY: live handle.
    assert_eq!(unsafe { twin_engine_n_items(h) }, 200);

    let (long, short, cands) = (behaviours(200), behaviours(200)[8..].to_vec(), vec![3u32, 150, 42]);
    let mut out = [f32::NAN; 4];
    let (rc, v) = score(h, &request(&long, &short, &cands), &mut out);
    assert_eq!((rc, v), (TWIN_OK, 1), "{}", last_error());
    assert_eq!(twin_last_error_code(), TWIN_OK);
    assert_eq!(last_error(), "");
    assert!(out[3].is_nan(), "only n_candidates values are written");

    let engine = Engine::open(&path, EngineConfig { backend: BackendChoice::Cpu, ..EngineConfig::default() }).unwrap();
    let want = engine
        .score(&ScoreRequest {
            request_time: 1_700_100_000,
            long: super::behaviours(&long),
            short: super::behaviours(&short),
            candidates: cands.clone(),
            debug: false,
        })
        .unwrap();
    assert_eq!(&out[..3], &want.ctr[..]);
    assert!(out[..3].iter().all(|&c| c > 0.0 && c < 1.0));

    // Unknown item id: invalid input naming the field and the value.
    let bad = [3u32, 200];
    let (rc, _) = score(h, &request(&long, &short, &bad), &mut out);
    assert_eq!(rc, TWIN_ERR_INVALID_INPUT);
    assert_eq!(twin_last_error_code(), TWIN_ERR_INVALID_INPUT);
    let msg = last_error();
    assert!(msg.contains("candidates") && msg.contains("200"), "{msg}");

    // NaN play time in a behaviour.
    let mut nan = long.clone();
    nan[4].play_time = f32::NAN;
    let (rc, _) = score(h, &request(&nan, &short, &cands), &mut out);
    assert_eq!(rc, TWIN_ERR_INVALID_INPUT);
    assert!(last_error().contains("long[].play_time[4]"), "{}", last_error());

    // Empty candidates (NULL with length 0 is an empty array).
    let mut r = request(&long, &short, &cands);
    r.candidates = std::ptr::null();
    r.n_candidates = 0;
    assert_eq!(score(h, &r, &mut out).0, TWIN_ERR_INVALID_INPUT);
    assert!(last_error().contains("candidates"), "{}", last_error());

    // NULL array with a non-zero length.
    let mut r = request(&long, &short, &cands);
    r.short_seq = std::ptr::null();
    assert_eq!(score(h, &r, &mut out).0, TWIN_ERR_NULL_ARG);
    assert!(last_error().contains("short_seq"), "{}", last_error());

    // Misaligned array.
    let raw = [0u32; 8];
    let mut r = request(&long, &short, &cands);
    // SAFETY: one byte into a live array; only the address is used (the check refuses it).
    r.candidates = unsafe { raw.as_ptr().cast::<u8>().add(1) }.cast();
    r.n_candidates = 2;
    assert_eq!(score(h, &r, &mut out).0, TWIN_ERR_INVALID_INPUT);
    assert!(last_error().contains("aligned"), "{}", last_error());

    // More candidates than max_candidates: refused before any slice is made.
    let mut r = request(&long, &short, &cands);
    r.n_candidates = usize::MAX;
    let mut big = [0f32; 1];
    // SAFETY: live handle; `out_len = usize::MAX` is a lie the size check must catch before
    // any write (it is larger than n_candidates, so it passes BUFFER_TOO_SMALL).
    let rc = unsafe { twin_engine_score(h, &r, big.as_mut_ptr(), usize::MAX, std::ptr::null_mut()) };
    assert_eq!(rc, TWIN_ERR_TOO_LARGE);
    assert!(last_error().contains("candidates"), "{}", last_error());

    // Success clears the last error.
    assert_eq!(score(h, &request(&long, &short, &cands), &mut out).0, TWIN_OK);
    assert_eq!((twin_last_error_code(), last_error()), (TWIN_OK, String::new()));

    // SAFETY: live handle, no other call in flight; not used afterwards.
    unsafe { twin_engine_close(h) };
}

#[test]
fn null_arguments_are_refused() {
    let (long, cands) = (behaviours(50), [1u32, 2, 3]);
    let mut out = [0f32; 3];
    let (rc, _) = score(std::ptr::null(), &request(&long, &[], &cands), &mut out);
    assert_eq!(rc, TWIN_ERR_NULL_ARG);
    assert_eq!(last_error(), "twin_engine_score: engine is NULL");
    // SAFETY: NULL handles are allowed and refused.
    unsafe {
        assert_eq!(twin_engine_model_version(std::ptr::null()), 0);
        assert_eq!(twin_last_error_code(), TWIN_ERR_NULL_ARG);
        assert_eq!(twin_engine_n_items(std::ptr::null()), 0);
        assert_eq!(twin_engine_swap(std::ptr::null(), c"x".as_ptr(), std::ptr::null_mut()), TWIN_ERR_NULL_ARG);
        twin_engine_close(std::ptr::null_mut());
        assert_eq!(twin_last_error_code(), TWIN_OK);
        assert_eq!(twin_engine_options_default(std::ptr::null_mut()), TWIN_ERR_NULL_ARG);
        assert_eq!(twin_engine_open(c"x".as_ptr(), std::ptr::null(), std::ptr::null_mut()), TWIN_ERR_NULL_ARG);
        let mut h = 1usize as *mut TwinEngine;
        assert_eq!(twin_engine_open(std::ptr::null(), std::ptr::null(), &mut h), TWIN_ERR_NULL_ARG);
        assert!(h.is_null(), "a failed open clears *out");
        assert!(last_error().contains("model_path"));
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.twin");
    write_model(&path, 50, 1);
    let h = open(&path);
    let r = request(&long, &[], &cands);
    // SAFETY: live handle; NULL req / out_ctr are refused before use.
    unsafe {
        assert_eq!(twin_engine_score(h, std::ptr::null(), out.as_mut_ptr(), 3, std::ptr::null_mut()), TWIN_ERR_NULL_ARG);
        assert!(last_error().contains("req"));
        assert_eq!(twin_engine_score(h, &r, std::ptr::null_mut(), 3, std::ptr::null_mut()), TWIN_ERR_NULL_ARG);
        assert!(last_error().contains("out_ctr"));
        // out_model_version may be NULL.
        assert_eq!(twin_engine_score(h, &r, out.as_mut_ptr(), 3, std::ptr::null_mut()), TWIN_OK);
        assert_eq!(twin_engine_swap(h, std::ptr::null(), std::ptr::null_mut()), TWIN_ERR_NULL_ARG);
        twin_engine_close(h);
    }
}

#[test]
fn small_buffer_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.twin");
    write_model(&path, 50, 2);
    let h = open(&path);
    let (long, cands) = (behaviours(50)[..3].to_vec(), [1u32, 2, 3]);
    let mut out = [-1f32; 2];
    let (rc, _) = score(h, &request(&long, &[], &cands), &mut out);
    assert_eq!(rc, TWIN_ERR_BUFFER_TOO_SMALL);
    assert_eq!(out, [-1.0, -1.0]);
    let msg = last_error();
    assert!(msg.contains("out_len = 2") && msg.contains("n_candidates = 3"), "{msg}");
    // SAFETY: live handle, not used afterwards.
    unsafe { twin_engine_close(h) };
}

#[test]
fn bad_paths_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.twin");
    let corrupt = dir.path().join("corrupt.twin");
    std::fs::write(&corrupt, b"this is not a twin-engine model file at all").unwrap();
    let truncated = dir.path().join("truncated.twin");
    write_model(&truncated, 50, 3);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();

    for (p, code) in [(&missing, TWIN_ERR_IO), (&corrupt, TWIN_ERR_CORRUPT_FILE), (&truncated, TWIN_ERR_CORRUPT_FILE)] {
        let c = cpath(p);
        let mut h = std::ptr::null_mut();
        // SAFETY: valid path, NULL options (defaults), writable `h`.
        let rc = unsafe { twin_engine_open(c.as_ptr(), std::ptr::null(), &mut h) };
        assert_eq!(rc, code, "{}", last_error());
        assert!(h.is_null());
        let msg = last_error();
        assert!(msg.contains(p.to_str().unwrap()), "{msg}");
    }

    // Invalid UTF-8.
    let mut h = std::ptr::null_mut();
    // SAFETY: a NUL-terminated byte string.
    let rc = unsafe { twin_engine_open(c"/tmp/\xff\xfe.twin".as_ptr(), std::ptr::null(), &mut h) };
    assert_eq!(rc, TWIN_ERR_INVALID_INPUT);
    assert!(last_error().contains("not valid UTF-8"), "{}", last_error());
}

#[test]
fn swap_to_a_bad_file_keeps_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, small) = (dir.path().join("a.twin"), dir.path().join("b.twin"), dir.path().join("small.twin"));
    write_model(&a, 200, 4);
    write_model(&b, 200, 5);
    write_model(&small, 40, 5);
    let corrupt = dir.path().join("corrupt.twin");
    let mut bytes = std::fs::read(&b).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&corrupt, &bytes).unwrap();

    let h = open(&a);
    let (long, cands) = (behaviours(200), [5u32, 6, 7]);
    let mut before = [0f32; 3];
    assert_eq!(score(h, &request(&long, &[], &cands), &mut before), (TWIN_OK, 1));

    let mut v = 0u64;
    let c = cpath(&corrupt);
    // SAFETY: live handle, valid path, writable `v`.
    assert_eq!(unsafe { twin_engine_swap(h, c.as_ptr(), &mut v) }, TWIN_ERR_CORRUPT_FILE);
    assert_eq!(v, 0, "no version written on failure");
    assert!(last_error().contains(corrupt.to_str().unwrap()), "{}", last_error());
    // SAFETY: live handle.
    assert_eq!(unsafe { twin_engine_model_version(h) }, 1);
    let mut after = [0f32; 3];
    assert_eq!(score(h, &request(&long, &[], &cands), &mut after), (TWIN_OK, 1));
    assert_eq!(before, after);

    // A different catalogue is refused too.
    let c = cpath(&small);
    // SAFETY: as above.
    assert_eq!(unsafe { twin_engine_swap(h, c.as_ptr(), &mut v) }, TWIN_ERR_INVALID_INPUT);
    assert!(last_error().contains("n_items"), "{}", last_error());
    // SAFETY: live handle.
    assert_eq!(unsafe { twin_engine_model_version(h) }, 1);

    // A good file is taken; the version numbers are the engine's (failed swaps used some).
    let c = cpath(&b);
    // SAFETY: as above.
    assert_eq!(unsafe { twin_engine_swap(h, c.as_ptr(), &mut v) }, TWIN_OK, "{}", last_error());
    assert!(v > 1);
    // SAFETY: live handle.
    assert_eq!(unsafe { twin_engine_model_version(h) }, v);
    let (rc, sv) = score(h, &request(&long, &[], &cands), &mut after);
    assert_eq!((rc, sv), (TWIN_OK, v));
    assert_ne!(before, after, "a different model scores differently");
    // SAFETY: live handle, not used afterwards.
    unsafe { twin_engine_close(h) };
}

#[test]
fn options_are_checked_and_defaults_round_trip() {
    let o = cpu_options();
    let cfg = config_from(&TwinEngineOptions { backend: TWIN_BACKEND_AUTO, ..o }).unwrap();
    let d = EngineConfig::default();
    assert_eq!(format!("{cfg:?}"), format!("{d:?}"));
    // Zero sizes take the defaults.
    let z = TwinEngineOptions { queue_capacity: 0, max_batch_requests: 0, max_batch_candidates: 0, max_candidates: 0, max_seq_len: 0, ..o };
    assert_eq!(format!("{:?}", config_from(&z).unwrap()), format!("{:?}", EngineConfig { backend: BackendChoice::Cpu, ..d }));
    let c =
        config_from(&TwinEngineOptions { variant: TWIN_VARIANT_TWIN_V2, dtype: TWIN_DTYPE_F16, batching: 0, max_wait_us: 7, ..o }).unwrap();
    assert_eq!((c.variant, c.dtype, c.batching, c.max_wait), (Variant::TwinV2, DType::F16, false, Duration::from_micros(7)));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.twin");
    write_model(&path, 30, 6);
    let p = cpath(&path);
    for (bad, field) in [
        (TwinEngineOptions { backend: 9, ..o }, "opts.backend = 9"),
        (TwinEngineOptions { variant: -1, ..o }, "opts.variant = -1"),
        (TwinEngineOptions { dtype: 2, ..o }, "opts.dtype = 2"),
        (TwinEngineOptions { struct_size: 8, ..o }, "opts.struct_size = 8"),
    ] {
        let mut h = std::ptr::null_mut();
        // SAFETY: valid path and options, writable `h`.
        assert_eq!(unsafe { twin_engine_open(p.as_ptr(), &bad, &mut h) }, TWIN_ERR_INVALID_INPUT);
        assert!(last_error().contains(field), "{}", last_error());
    }
    // The engine's own limit checks come through with their codes.
    let mut h = std::ptr::null_mut();
    let big = TwinEngineOptions { max_seq_len: 1 << 40, ..o };
    // SAFETY: as above.
    assert_eq!(unsafe { twin_engine_open(p.as_ptr(), &big, &mut h) }, TWIN_ERR_TOO_LARGE);
    assert!(last_error().contains("max_seq_len"), "{}", last_error());
    // A queue of 2^40 or 2^63 slots, or a wait of 2^64 - 1 µs: refused, not an abort of the
    // host process (the queue is allocated up front) nor a lone request waiting for ever.
    for (big, field) in [
        (TwinEngineOptions { queue_capacity: 1 << 40, ..o }, "queue_capacity = 1099511627776"),
        (TwinEngineOptions { queue_capacity: 1 << 63, ..o }, "queue_capacity"),
        (TwinEngineOptions { max_wait_us: u64::MAX, ..o }, "max_wait_us"),
    ] {
        // SAFETY: as above.
        assert_eq!(unsafe { twin_engine_open(p.as_ptr(), &big, &mut h) }, TWIN_ERR_TOO_LARGE);
        assert!(last_error().contains(field), "{}", last_error());
    }
    // A backend not compiled in (or without a device here) is reported as unavailable.
    #[cfg(not(feature = "cuda"))]
    {
        let cuda = TwinEngineOptions { backend: TWIN_BACKEND_CUDA, ..o };
        // SAFETY: as above.
        assert_eq!(unsafe { twin_engine_open(p.as_ptr(), &cuda, &mut h) }, TWIN_ERR_BACKEND_UNAVAILABLE, "{}", last_error());
    }
    // Unbatched engine, tiny limits.
    let small = TwinEngineOptions { batching: 0, max_candidates: 2, max_seq_len: 4, ..o };
    // SAFETY: as above.
    assert_eq!(unsafe { twin_engine_open(p.as_ptr(), &small, &mut h) }, TWIN_OK, "{}", last_error());
    let long = behaviours(30);
    let mut out = [0f32; 3];
    assert_eq!(score(h, &request(&long[..4], &[], &[1, 2]), &mut out).0, TWIN_OK);
    assert_eq!(score(h, &request(&long[..5], &[], &[1, 2]), &mut out).0, TWIN_ERR_TOO_LARGE);
    assert!(last_error().contains("long_seq = 5 exceeds the limit 4"), "{}", last_error());
    assert_eq!(score(h, &request(&long[..4], &[], &[1, 2, 3]), &mut out).0, TWIN_ERR_TOO_LARGE);
    // SAFETY: live handle, not used afterwards.
    unsafe { twin_engine_close(h) };
}

#[test]
fn last_error_truncates_and_reports_the_full_length() {
    // SAFETY: NULL engine is refused and sets a known message.
    unsafe { twin_engine_model_version(std::ptr::null()) };
    let full = "twin_engine_model_version: engine is NULL";
    assert_eq!(last_error(), full);
    let mut buf = [b'#' as c_char; 8];
    // SAFETY: `buf` holds 8 writable bytes.
    let n = unsafe { twin_last_error(buf.as_mut_ptr(), buf.len()) };
    assert_eq!(n, full.len());
    // SAFETY: the call NUL-terminated `buf` within its 8 bytes.
    assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(), &full[..7]);
    // Length 0: nothing written.
    let mut one = [b'#' as c_char; 1];
    // SAFETY: `one` is writable; len 0 writes nothing.
    assert_eq!(unsafe { twin_last_error(one.as_mut_ptr(), 0) }, full.len());
    assert_eq!(one[0], b'#' as c_char);
    // The message is per thread.
    std::thread::spawn(|| assert_eq!((twin_last_error_code(), last_error()), (TWIN_OK, String::new()))).join().unwrap();
    assert_eq!(twin_last_error_code(), TWIN_ERR_NULL_ARG);
    // Truncation never splits a UTF-8 character.
    set_last(TWIN_ERR_IO, "é".repeat(4));
    let mut b4 = [0 as c_char; 4];
    // SAFETY: `b4` holds 4 writable bytes.
    assert_eq!(unsafe { twin_last_error(b4.as_mut_ptr(), 4) }, 8);
    // SAFETY: NUL-terminated by the call.
    assert_eq!(unsafe { CStr::from_ptr(b4.as_ptr()) }.to_str().unwrap(), "é");
}

#[test]
fn panics_become_status_codes() {
    let rc = guard("f", || panic!("boom {}", 1));
    assert_eq!(rc, TWIN_ERR_PANIC);
    assert_eq!(last_error(), "f: internal panic: boom 1");
    assert_eq!(guard("f", || Ok(())), TWIN_OK);
    assert_eq!(twin_last_error_code(), TWIN_OK);
}

#[test]
fn every_error_variant_has_a_code() {
    let io = || std::io::Error::other("x");
    let cases = [
        (Error::LengthMismatch { field: "f", got: 1, expected: 2, expected_what: "w" }, TWIN_ERR_INVALID_INPUT),
        (Error::OutOfRange { field: "f", index: 0, value: 9, limit: 3 }, TWIN_ERR_INVALID_INPUT),
        (Error::NonFinite { field: "f", index: 0, value: f32::NAN }, TWIN_ERR_INVALID_INPUT),
        (Error::InvalidValue { field: "f", index: 0, value: 0.0, why: "w" }, TWIN_ERR_INVALID_INPUT),
        (Error::Empty { field: "f", index: 0 }, TWIN_ERR_INVALID_INPUT),
        (Error::BadOffsets { field: "f", index: 0, why: "w" }, TWIN_ERR_INVALID_INPUT),
        (Error::BadShape { field: "f", value: 0, why: "w" }, TWIN_ERR_INVALID_INPUT),
        (Error::Aliased { field: "f", other: "g" }, TWIN_ERR_INVALID_INPUT),
        (Error::WrongDtype { field: "f", expected: "f32", got: "u32" }, TWIN_ERR_INVALID_INPUT),
        (Error::BadSetting { name: "n", value: "v".into(), why: "w".into() }, TWIN_ERR_INVALID_INPUT),
        (Error::Parse { path: "p".into(), line: 1, field: "f".into(), what: "w".into() }, TWIN_ERR_INVALID_INPUT),
        (Error::TooLarge { field: "f", value: 2, limit: 1 }, TWIN_ERR_TOO_LARGE),
        (Error::io("p", io()), TWIN_ERR_IO),
        (Error::corrupt("p", "w"), TWIN_ERR_CORRUPT_FILE),
        (Error::UnsupportedVersion { path: "p".into(), found: 9, supported: 1 }, TWIN_ERR_UNSUPPORTED_VERSION),
        (Error::BackendUnavailable { backend: "cuda", why: "w".into() }, TWIN_ERR_BACKEND_UNAVAILABLE),
        (Error::Overloaded { queue: 4 }, TWIN_ERR_OVERLOADED),
        (Error::Device { backend: "cuda", op: "o", message: "m".into() }, TWIN_ERR_BACKEND),
        (Error::driver("cuda", "o", crate::error::DriverError::Emulator("m".into())), TWIN_ERR_BACKEND),
        (Error::EngineStopped { why: "is shutting down" }, TWIN_ERR_INTERNAL),
        (Error::Panic { op: "score batch", message: "m".into() }, TWIN_ERR_PANIC),
        (Error::Spawn { thread: "t", source: io() }, TWIN_ERR_INTERNAL),
        (Error::Serialize { what: "w", source: serde_json::from_str::<u8>("x").unwrap_err() }, TWIN_ERR_INTERNAL),
        (Error::Incompatible { what: "w", why: "y".into() }, TWIN_ERR_INVALID_INPUT),
        (Error::ForeignTable { table: "t", owner: "a".into(), caller: "b".into() }, TWIN_ERR_BACKEND),
    ];
    for (e, code) in cases {
        let f = Fail::from(e);
        assert_eq!(f.code, code, "{}", f.message);
        assert!(!f.message.is_empty());
    }
}

#[test]
fn version_string_is_the_crate_version() {
    // SAFETY: a static NUL-terminated string.
    let s = unsafe { CStr::from_ptr(twin_version_string()) };
    assert_eq!(s.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}
