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
//! compares their sizes and offsets with what the C compiler sees.

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use crate::backend::{BackendChoice, DType};
use crate::error::Error;
use crate::serve::{Behaviour, Engine, EngineConfig, ScoreRequest};
use crate::train::Variant;

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

// ---- errors and the panic guard ----

/// A failure on its way to C: a status code and the message `twin_last_error` returns.
#[derive(Debug)]
struct Fail {
    code: i32,
    message: String,
}

impl Fail {
    fn new(code: i32, message: impl Into<String>) -> Fail {
        Fail { code, message: message.into() }
    }
    fn null(func: &str, arg: &str) -> Fail {
        Fail::new(TWIN_ERR_NULL_ARG, format!("{func}: {arg} is NULL"))
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::new(code_of(&e), e.to_string())
    }
}

/// The status code for each library error.
fn code_of(e: &Error) -> i32 {
    match e {
        Error::LengthMismatch { .. }
        | Error::OutOfRange { .. }
        | Error::NonFinite { .. }
        | Error::InvalidValue { .. }
        | Error::Empty { .. }
        | Error::BadOffsets { .. }
        | Error::BadShape { .. }
        | Error::Parse { .. }
        | Error::Incompatible { .. } => TWIN_ERR_INVALID_INPUT,
        Error::TooLarge { .. } => TWIN_ERR_TOO_LARGE,
        Error::Io { .. } => TWIN_ERR_IO,
        Error::CorruptFile { .. } => TWIN_ERR_CORRUPT_FILE,
        Error::UnsupportedVersion { .. } => TWIN_ERR_UNSUPPORTED_VERSION,
        Error::BackendUnavailable { .. } => TWIN_ERR_BACKEND_UNAVAILABLE,
        Error::Overloaded { .. } => TWIN_ERR_OVERLOADED,
        Error::Driver { .. } | Error::Device { .. } | Error::ForeignTable { .. } => TWIN_ERR_BACKEND,
        // A panic caught inside the engine (its batching worker keeps serving).
        Error::Panic { .. } => TWIN_ERR_PANIC,
        // The engine shutting down or without its worker, a thread the OS would not start, a
        // config that would not serialise: the C API has no closer code for these.
        Error::EngineStopped { .. } | Error::Spawn { .. } | Error::Serialize { .. } => TWIN_ERR_INTERNAL,
        // Variants added later map here until the C API names them.
        #[allow(unreachable_patterns)]
        _ => TWIN_ERR_INTERNAL,
    }
}

thread_local! {
    /// The last status and message of a `twin_*` call on this thread.
    static LAST_ERROR: RefCell<(i32, String)> = const { RefCell::new((TWIN_OK, String::new())) };
}

fn set_last(code: i32, message: String) {
    // `try_with`: during thread teardown the slot may be gone; the status code still reports.
    let _ = LAST_ERROR.try_with(|l| *l.borrow_mut() = (code, message));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Runs `body` with panics caught; records the outcome as this thread's last error.
fn guard(func: &str, body: impl FnOnce() -> Result<(), Fail>) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            set_last(TWIN_OK, String::new());
            TWIN_OK
        }
        Ok(Err(f)) => {
            set_last(f.code, f.message);
            f.code
        }
        Err(payload) => {
            set_last(TWIN_ERR_PANIC, format!("{func}: internal panic: {}", panic_message(payload.as_ref())));
            TWIN_ERR_PANIC
        }
    }
}

// ---- argument helpers ----

/// A NUL-terminated UTF-8 path argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the duration of the call.
unsafe fn path_arg<'a>(func: &str, arg: &str, p: *const c_char) -> Result<&'a Path, Fail> {
    if p.is_null() {
        return Err(Fail::null(func, arg));
    }
    // SAFETY: `p` is non-null and, per this function's contract, NUL-terminated and live.
    let s = unsafe { CStr::from_ptr(p) };
    match s.to_str() {
        Ok(s) => Ok(Path::new(s)),
        Err(e) => Err(Fail::new(
            TWIN_ERR_INVALID_INPUT,
            format!("{func}: {arg} is not valid UTF-8 (invalid byte at offset {}): {}", e.valid_up_to(), s.to_string_lossy()),
        )),
    }
}

/// `len` elements at `p` as a slice, after checking NULL, alignment and `len <= limit`.
///
/// # Safety
/// When `p` is non-null and the checks pass, `p` points to `len` initialised `T`s that stay
/// valid and unmodified for `'a`.
unsafe fn slice_arg<'a, T>(field: &'static str, p: *const T, len: usize, limit: usize) -> Result<&'a [T], Fail> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Fail::new(TWIN_ERR_NULL_ARG, format!("req.{field} is NULL but its length is {len}")));
    }
    if (p as usize) % std::mem::align_of::<T>() != 0 {
        return Err(Fail::new(
            TWIN_ERR_INVALID_INPUT,
            format!("req.{field} = {p:p} is not aligned to {} bytes", std::mem::align_of::<T>()),
        ));
    }
    // Also keeps `len * size_of::<T>()` within isize::MAX, as `from_raw_parts` requires.
    let limit = limit.min(isize::MAX as usize / std::mem::size_of::<T>().max(1));
    if len > limit {
        return Err(Error::TooLarge { field, value: len as u64, limit: limit as u64 }.into());
    }
    // SAFETY: non-null, aligned, `len * size_of::<T>() <= isize::MAX` (checked above); the
    // caller guarantees `len` initialised elements that outlive `'a`.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// The engine behind a handle.
///
/// # Safety
/// `h` is NULL or a handle from `twin_engine_open` that has not been closed.
unsafe fn engine_arg<'a>(func: &str, h: *const TwinEngine) -> Result<&'a Engine, Fail> {
    if h.is_null() {
        return Err(Fail::null(func, "engine"));
    }
    // SAFETY: non-null, and per the contract a live `Box<TwinEngine>` from `twin_engine_open`;
    // only shared references are made while it lives (`Engine` is `Sync`).
    Ok(unsafe { &(*h).engine })
}

fn to_usize(field: &'static str, v: u64, default: usize) -> Result<usize, Fail> {
    if v == 0 {
        return Ok(default);
    }
    usize::try_from(v).map_err(|_| Error::TooLarge { field, value: v, limit: usize::MAX as u64 }.into())
}

fn bad_enum(field: &str, v: i32, of: &str) -> Fail {
    Fail::new(TWIN_ERR_INVALID_INPUT, format!("opts.{field} = {v} is not a {of} value"))
}

/// The engine configuration `opts` describes.
fn config_from(o: &TwinEngineOptions) -> Result<EngineConfig, Fail> {
    let want = std::mem::size_of::<TwinEngineOptions>();
    if o.struct_size as usize != want {
        return Err(Fail::new(
            TWIN_ERR_INVALID_INPUT,
            format!(
                "opts.struct_size = {} but this library's twin_engine_options is {want} bytes (start from twin_engine_options_default)",
                o.struct_size
            ),
        ));
    }
    let d = EngineConfig::default();
    let backend = match o.backend {
        TWIN_BACKEND_AUTO => BackendChoice::Auto,
        TWIN_BACKEND_CPU => BackendChoice::Cpu,
        TWIN_BACKEND_CUDA => BackendChoice::Cuda,
        TWIN_BACKEND_WGPU => BackendChoice::Wgpu,
        v => return Err(bad_enum("backend", v, "twin_backend")),
    };
    let variant = match o.variant {
        TWIN_VARIANT_TWIN_V2 => Variant::TwinV2,
        TWIN_VARIANT_TWIN => Variant::Twin,
        TWIN_VARIANT_SIM_SOFT => Variant::SimSoft,
        TWIN_VARIANT_DIN_SHORT => Variant::DinShort,
        TWIN_VARIANT_NO_SEQ => Variant::NoSeq,
        v => return Err(bad_enum("variant", v, "twin_variant")),
    };
    let dtype = match o.dtype {
        TWIN_DTYPE_F32 => DType::F32,
        TWIN_DTYPE_F16 => DType::F16,
        v => return Err(bad_enum("dtype", v, "twin_dtype")),
    };
    Ok(EngineConfig {
        backend,
        dtype,
        variant,
        batching: o.batching != 0,
        max_batch_requests: to_usize("opts.max_batch_requests", o.max_batch_requests, d.max_batch_requests)?,
        max_batch_candidates: to_usize("opts.max_batch_candidates", o.max_batch_candidates, d.max_batch_candidates)?,
        max_wait: Duration::from_micros(o.max_wait_us),
        queue_capacity: to_usize("opts.queue_capacity", o.queue_capacity, d.queue_capacity)?,
        max_candidates: to_usize("opts.max_candidates", o.max_candidates, d.max_candidates)?,
        max_seq_len: to_usize("opts.max_seq_len", o.max_seq_len, d.max_seq_len)?,
    })
}

fn default_options() -> TwinEngineOptions {
    let d = EngineConfig::default();
    let backend = match d.backend {
        BackendChoice::Auto => TWIN_BACKEND_AUTO,
        BackendChoice::Cpu | BackendChoice::CpuRef => TWIN_BACKEND_CPU,
        BackendChoice::Cuda => TWIN_BACKEND_CUDA,
        BackendChoice::Wgpu => TWIN_BACKEND_WGPU,
    };
    let variant = match d.variant {
        Variant::TwinV2 => TWIN_VARIANT_TWIN_V2,
        Variant::Twin => TWIN_VARIANT_TWIN,
        Variant::SimSoft => TWIN_VARIANT_SIM_SOFT,
        Variant::DinShort => TWIN_VARIANT_DIN_SHORT,
        Variant::NoSeq => TWIN_VARIANT_NO_SEQ,
    };
    let dtype = match d.dtype {
        DType::F32 => TWIN_DTYPE_F32,
        DType::F16 => TWIN_DTYPE_F16,
    };
    TwinEngineOptions {
        struct_size: std::mem::size_of::<TwinEngineOptions>() as u32,
        backend,
        variant,
        dtype,
        batching: d.batching as i32,
        max_wait_us: d.max_wait.as_micros().min(u64::MAX as u128) as u64,
        queue_capacity: d.queue_capacity as u64,
        max_batch_requests: d.max_batch_requests as u64,
        max_batch_candidates: d.max_batch_candidates as u64,
        max_candidates: d.max_candidates as u64,
        max_seq_len: d.max_seq_len as u64,
    }
}

fn behaviours(seq: &[TwinBehaviour]) -> Vec<Behaviour> {
    seq.iter()
        .map(|b| Behaviour { item: b.item, timestamp: b.timestamp, play_time: b.play_time, completion: b.completion, size: b.size })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Items;
    use crate::features;
    use crate::model::{Model, ModelConfig};
    use std::ffi::CString;

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
        let z =
            TwinEngineOptions { queue_capacity: 0, max_batch_requests: 0, max_batch_candidates: 0, max_candidates: 0, max_seq_len: 0, ..o };
        assert_eq!(format!("{:?}", config_from(&z).unwrap()), format!("{:?}", EngineConfig { backend: BackendChoice::Cpu, ..d }));
        let c = config_from(&TwinEngineOptions { variant: TWIN_VARIANT_TWIN_V2, dtype: TWIN_DTYPE_F16, batching: 0, max_wait_us: 7, ..o })
            .unwrap();
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
}
