//! C ABI: lets C and C++ ranking services embed the [`Engine`](crate::serve::Engine)
//! (issue 6). The header is `include/twin_engine.h`; `examples/c/score.c` shows its use.
//!
//! Conventions, as the header documents them:
//! - Every fallible function returns an `int32_t` status (`TWIN_OK` = 0, else a `TWIN_ERR_*`
//!   code) and records a thread-local message that names the field and the offending value
//!   ([`twin_last_error`], [`twin_last_error_code`]); a successful call clears it.
//! - No panic crosses the boundary: every body runs under `catch_unwind` and a panic becomes
//!   `TWIN_ERR_PANIC`.
//! - Pointers are checked for NULL (a NULL array with length 0 is an empty array) and for
//!   alignment; lengths are checked against the engine's limits before any slice is made.
//! - The handle is `Send + Sync` like the engine: `score`, `swap` and `model_version` may run
//!   concurrently on one handle; `close` must not overlap any other call on it.
//!
//! The `#[repr(C)]` types here mirror the header's structs field for field; `tests/capi.rs`
//! compares their sizes and offsets with what the C compiler sees, and `tests/capi_header.rs`
//! checks every declaration of the header against cbindgen's reading of this module.
//! Errors and the panic guard are in `capi/guard.rs`, argument checks in `capi/args.rs`.

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::backend::{BackendChoice, DType};
use crate::error::Error;
use crate::serve::{Engine, EngineConfig, ScoreRequest};
use crate::train::Variant;

mod args;
mod guard;
#[cfg(test)]
mod tests;

use args::{behaviours, config_from, default_options, engine_arg, path_arg, slice_arg};
use guard::{guard, Fail, LAST_ERROR};

// ---- status codes (mirror `twin_status` in the header) ----

pub const TWIN_OK: i32 = 0;
/// A required pointer argument was NULL.
pub const TWIN_ERR_NULL_ARG: i32 = 1;
/// Bad request or option: unknown item id, NaN, empty candidates, bad enum value, invalid
/// UTF-8 path, misaligned array, a model whose catalogue differs on swap, ...
pub const TWIN_ERR_INVALID_INPUT: i32 = 2;
/// A length over the engine's limits (candidates, sequence length).
pub const TWIN_ERR_TOO_LARGE: i32 = 3;
/// The file could not be read (missing, permissions, ...).
pub const TWIN_ERR_IO: i32 = 4;
/// The file is not a valid model (bad magic, truncated, checksum, inconsistent content).
pub const TWIN_ERR_CORRUPT_FILE: i32 = 5;
/// The backend failed while running (driver, runtime, shader compiler).
pub const TWIN_ERR_BACKEND: i32 = 6;
/// The request queue is full; retry later or raise `queue_capacity`.
pub const TWIN_ERR_OVERLOADED: i32 = 7;
/// `out_len` is smaller than the candidate count.
pub const TWIN_ERR_BUFFER_TOO_SMALL: i32 = 8;
/// A bug inside the library (a caught panic); the handle stays usable.
pub const TWIN_ERR_PANIC: i32 = 9;
/// The model file was written by a newer format version.
pub const TWIN_ERR_UNSUPPORTED_VERSION: i32 = 10;
/// The requested backend cannot run here (not compiled in, no driver, no adapter).
pub const TWIN_ERR_BACKEND_UNAVAILABLE: i32 = 11;
/// An error this version of the C API does not classify more precisely.
pub const TWIN_ERR_INTERNAL: i32 = 12;

// ---- option enums (mirror `twin_backend`, `twin_variant`, `twin_dtype`) ----

pub const TWIN_BACKEND_AUTO: i32 = 0;
pub const TWIN_BACKEND_CPU: i32 = 1;
pub const TWIN_BACKEND_CUDA: i32 = 2;
pub const TWIN_BACKEND_WGPU: i32 = 3;

pub const TWIN_VARIANT_TWIN_V2: i32 = 0;
pub const TWIN_VARIANT_TWIN: i32 = 1;
pub const TWIN_VARIANT_SIM_SOFT: i32 = 2;
pub const TWIN_VARIANT_DIN_SHORT: i32 = 3;
pub const TWIN_VARIANT_NO_SEQ: i32 = 4;

pub const TWIN_DTYPE_F32: i32 = 0;
pub const TWIN_DTYPE_F16: i32 = 1;

// ---- #[repr(C)] types (mirror the header's structs) ----

/// `twin_behaviour`: one behaviour of the user's history, or (TWIN-V2) one cluster.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TwinBehaviour {
    pub item: u32,
    pub timestamp: i64,
    pub play_time: f32,
    pub completion: f32,
    pub size: u32,
}

/// `twin_request`: one user × `n_candidates` candidates.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TwinRequest {
    pub request_time: i64,
    pub long_seq: *const TwinBehaviour,
    pub long_len: usize,
    pub short_seq: *const TwinBehaviour,
    pub short_len: usize,
    pub candidates: *const u32,
    pub n_candidates: usize,
}

/// `twin_engine_options`. Size fields equal to 0 take the library default.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwinEngineOptions {
    /// `sizeof(twin_engine_options)` as the caller was compiled: a later library that adds
    /// fields at the end can tell an older caller's struct from its own.
    pub struct_size: u32,
    pub backend: i32,
    pub variant: i32,
    pub dtype: i32,
    /// Non-zero: gather concurrent requests into one backend call.
    pub batching: i32,
    pub max_wait_us: u64,
    pub queue_capacity: u64,
    pub max_batch_requests: u64,
    pub max_batch_candidates: u64,
    pub max_candidates: u64,
    pub max_seq_len: u64,
}

/// `twin_engine`: the opaque handle C sees.
pub struct TwinEngine {
    engine: Engine,
}

// ---- the exported functions ----

static VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(s) => s,
    Err(_) => c"unknown",
};

/// The library version, e.g. `"0.1.0"`: a static NUL-terminated string (never free it).
#[no_mangle]
pub extern "C" fn twin_version_string() -> *const c_char {
    VERSION.as_ptr()
}

/// Fills `*out` with the library defaults (auto backend, TWIN variant, f32 tables, batching on).
///
/// # Safety
/// `out` is NULL or valid for writing one `twin_engine_options`.
#[no_mangle]
pub unsafe extern "C" fn twin_engine_options_default(out: *mut TwinEngineOptions) -> i32 {
    guard("twin_engine_options_default", || {
        if out.is_null() {
            return Err(Fail::null("twin_engine_options_default", "out"));
        }
        // SAFETY: non-null and, per the contract, valid for writing one options struct;
        // `write` does not read the possibly uninitialised old value.
        unsafe { out.write(default_options()) };
        Ok(())
    })
}

/// Loads `model_path` onto the backend `opts` names (NULL: defaults) and stores the new
/// handle in `*out` (NULL on failure).
///
/// # Safety
/// `model_path` is NULL or NUL-terminated; `opts` is NULL or points to a valid options struct;
/// `out` is NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn twin_engine_open(model_path: *const c_char, opts: *const TwinEngineOptions, out: *mut *mut TwinEngine) -> i32 {
    const F: &str = "twin_engine_open";
    guard(F, || {
        if out.is_null() {
            return Err(Fail::null(F, "out"));
        }
        // SAFETY: non-null and valid for one pointer write (contract); cleared first so a
        // failed open never leaves a stale handle behind.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: the contract makes `model_path` NULL or NUL-terminated and live for the call.
        let path = unsafe { path_arg(F, "model_path", model_path) }?;
        let cfg = if opts.is_null() {
            EngineConfig::default()
        } else {
            // SAFETY: non-null and, per the contract, points to a valid options struct; read
            // by value (every bit pattern of its integer fields is a valid value).
            config_from(&unsafe { opts.read_unaligned() })?
        };
        let engine = Engine::open(path, cfg)?;
        let h = Box::into_raw(Box::new(TwinEngine { engine }));
        // SAFETY: as above, `out` is valid for one pointer write.
        unsafe { out.write(h) };
        Ok(())
    })
}

/// Frees a handle (its batcher thread stops, its model is dropped). NULL is a no-op.
///
/// # Safety
/// `engine` is NULL or a handle from `twin_engine_open`, not yet closed, with no other call on
/// it in flight; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn twin_engine_close(engine: *mut TwinEngine) {
    guard("twin_engine_close", || {
        if !engine.is_null() {
            // SAFETY: per the contract, a live `Box<TwinEngine>` from `twin_engine_open`, owned
            // by the caller and not aliased by any other call; ownership returns to Rust here.
            drop(unsafe { Box::from_raw(engine) });
        }
        Ok(())
    });
}

/// Scores one request: writes `req->n_candidates` CTRs to `out_ctr` (in candidate order) and
/// the model version that scored them to `*out_model_version` (may be NULL).
///
/// # Safety
/// `engine` is NULL or a live handle; `req` is NULL or points to a valid `twin_request` whose
/// non-null arrays hold their stated number of elements; `out_ctr` is NULL or valid for writing
/// `out_len` floats; `out_model_version` is NULL or valid for one write. Nothing the request
/// points to may change during the call.
#[no_mangle]
pub unsafe extern "C" fn twin_engine_score(
    engine: *const TwinEngine,
    req: *const TwinRequest,
    out_ctr: *mut f32,
    out_len: usize,
    out_model_version: *mut u64,
) -> i32 {
    const F: &str = "twin_engine_score";
    guard(F, || {
        // SAFETY: per the contract, NULL or a live handle.
        let engine = unsafe { engine_arg(F, engine) }?;
        if req.is_null() {
            return Err(Fail::null(F, "req"));
        }
        if out_ctr.is_null() {
            return Err(Fail::null(F, "out_ctr"));
        }
        // SAFETY: non-null and, per the contract, points to a valid request (plain integers and
        // pointers, any bit pattern valid).
        let r = unsafe { req.read_unaligned() };
        if out_len < r.n_candidates {
            return Err(Fail::new(
                TWIN_ERR_BUFFER_TOO_SMALL,
                format!("{F}: out_len = {out_len} is smaller than req.n_candidates = {}", r.n_candidates),
            ));
        }
        let cfg = engine.config();
        // SAFETY: the contract says a non-null `long_seq` holds `long_len` initialised
        // behaviours, unchanged for the call; `slice_arg` checks NULL, alignment and
        // `max_seq_len` before making the slice.
        let long = unsafe { slice_arg("long_seq", r.long_seq, r.long_len, cfg.max_seq_len) }?;
        // SAFETY: as for `long_seq`, with `short_seq` / `short_len`.
        let short = unsafe { slice_arg("short_seq", r.short_seq, r.short_len, cfg.max_seq_len) }?;
        // SAFETY: as for `long_seq`, with `candidates` / `n_candidates` and `max_candidates`.
        let candidates = unsafe { slice_arg("candidates", r.candidates, r.n_candidates, cfg.max_candidates) }?;
        let request = ScoreRequest {
            request_time: r.request_time,
            long: behaviours(long),
            short: behaviours(short),
            candidates: candidates.to_vec(),
            debug: false,
        };
        let resp = engine.score(&request)?;
        if resp.ctr.len() != candidates.len() {
            return Err(Fail::new(
                TWIN_ERR_INTERNAL,
                format!("{F}: the engine returned {} CTRs for {} candidates", resp.ctr.len(), candidates.len()),
            ));
        }
        // SAFETY: `out_ctr` is non-null and valid for `out_len >= resp.ctr.len()` float writes
        // (contract + check above); a fresh Vec cannot overlap caller memory.
        unsafe { std::ptr::copy_nonoverlapping(resp.ctr.as_ptr(), out_ctr, resp.ctr.len()) };
        if !out_model_version.is_null() {
            // SAFETY: non-null and, per the contract, valid for one u64 write.
            unsafe { out_model_version.write(resp.model_version) };
        }
        Ok(())
    })
}

/// Loads `model_path` as the next model version and switches to it atomically; requests in
/// flight finish on the old version. On failure the old version keeps serving.
///
/// # Safety
/// `engine` is NULL or a live handle; `model_path` is NULL or NUL-terminated;
/// `out_version` is NULL or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn twin_engine_swap(engine: *const TwinEngine, model_path: *const c_char, out_version: *mut u64) -> i32 {
    const F: &str = "twin_engine_swap";
    guard(F, || {
        // SAFETY: per the contract, NULL or a live handle.
        let engine = unsafe { engine_arg(F, engine) }?;
        // SAFETY: per the contract, NULL or NUL-terminated and live for the call.
        let path = unsafe { path_arg(F, "model_path", model_path) }?;
        let v = engine.swap(path)?;
        if !out_version.is_null() {
            // SAFETY: non-null and, per the contract, valid for one u64 write.
            unsafe { out_version.write(v) };
        }
        Ok(())
    })
}

/// The model version serving new requests (1 after open, +1 per successful swap); 0 when
/// `engine` is NULL (the last error then says so).
///
/// # Safety
/// `engine` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn twin_engine_model_version(engine: *const TwinEngine) -> u64 {
    const F: &str = "twin_engine_model_version";
    let mut v = 0;
    guard(F, || {
        // SAFETY: per the contract, NULL or a live handle.
        v = unsafe { engine_arg(F, engine) }?.model_version();
        Ok(())
    });
    v
}

/// The serving model's catalogue size: valid item ids are `0 .. n_items`. 0 when `engine` is NULL.
///
/// # Safety
/// `engine` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn twin_engine_n_items(engine: *const TwinEngine) -> u64 {
    const F: &str = "twin_engine_n_items";
    let mut n = 0;
    guard(F, || {
        // SAFETY: per the contract, NULL or a live handle.
        n = unsafe { engine_arg(F, engine) }?.current().model.n_items() as u64;
        Ok(())
    });
    n
}

/// The status of the last `twin_*` call on this thread (`TWIN_OK` after a success).
#[no_mangle]
pub extern "C" fn twin_last_error_code() -> i32 {
    LAST_ERROR.try_with(|l| l.borrow().0).unwrap_or(TWIN_OK)
}

/// Copies the last call's error message (empty after a success) into `buf`, truncated to
/// `len - 1` bytes and NUL-terminated (nothing is written when `len` is 0 or `buf` is NULL).
/// Returns the message's full length in bytes, without the NUL, as `snprintf` does: the
/// buffer was big enough when the result is `< len`.
///
/// # Safety
/// `buf` is NULL or valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn twin_last_error(buf: *mut c_char, len: usize) -> usize {
    catch_unwind(AssertUnwindSafe(|| {
        let msg = LAST_ERROR.try_with(|l| l.borrow().1.clone()).unwrap_or_default();
        // Interior NULs would cut the C string short; none are expected, but be safe.
        let msg = msg.replace('\0', "\u{FFFD}");
        if !buf.is_null() && len > 0 {
            let mut n = msg.len().min(len - 1);
            while !msg.is_char_boundary(n) {
                n -= 1;
            }
            // SAFETY: `buf` is non-null and valid for `len > n` byte writes (contract); the
            // source is a separate heap string, so the ranges do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr().cast::<c_char>(), buf, n) };
            // SAFETY: `n < len`, so `buf + n` is within the caller's `len` writable bytes.
            unsafe { buf.add(n).write(0) };
        }
        msg.len()
    }))
    .unwrap_or(0)
}

// The header's layout on 64-bit targets, checked at compile time (`tests/capi.rs` compares
// every size and offset with what the C compiler sees, on any target).
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<TwinBehaviour>() == 32);
    assert!(std::mem::offset_of!(TwinBehaviour, timestamp) == 8);
    assert!(std::mem::offset_of!(TwinBehaviour, size) == 24);
    assert!(std::mem::size_of::<TwinEngineOptions>() == 72);
};
