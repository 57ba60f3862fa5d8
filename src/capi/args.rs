//! Arguments from C: paths, arrays and the handle checked for NULL, alignment and length
//! before any slice is made; options turned into an [`EngineConfig`].

use std::ffi::{c_char, CStr};
use std::path::Path;
use std::time::Duration;

use super::guard::Fail;
use super::*;
use crate::serve::{Behaviour, Engine, EngineConfig};

/// A NUL-terminated UTF-8 path argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the duration of the call.
pub(super) unsafe fn path_arg<'a>(func: &str, arg: &str, p: *const c_char) -> Result<&'a Path, Fail> {
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
pub(super) unsafe fn slice_arg<'a, T>(field: &'static str, p: *const T, len: usize, limit: usize) -> Result<&'a [T], Fail> {
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
pub(super) unsafe fn engine_arg<'a>(func: &str, h: *const TwinEngine) -> Result<&'a Engine, Fail> {
    if h.is_null() {
        return Err(Fail::null(func, "engine"));
    }
    // SAFETY: non-null, and per the contract a live `Box<TwinEngine>` from `twin_engine_open`;
    // only shared references are made while it lives (`Engine` is `Sync`).
    Ok(unsafe { &(*h).engine })
}

pub(super) fn to_usize(field: &'static str, v: u64, default: usize) -> Result<usize, Fail> {
    if v == 0 {
        return Ok(default);
    }
    usize::try_from(v).map_err(|_| Error::TooLarge { field, value: v, limit: usize::MAX as u64 }.into())
}

pub(super) fn bad_enum(field: &str, v: i32, of: &str) -> Fail {
    Fail::new(TWIN_ERR_INVALID_INPUT, format!("opts.{field} = {v} is not a {of} value"))
}

/// The engine configuration `opts` describes.
pub(super) fn config_from(o: &TwinEngineOptions) -> Result<EngineConfig, Fail> {
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

pub(super) fn default_options() -> TwinEngineOptions {
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

pub(super) fn behaviours(seq: &[TwinBehaviour]) -> Vec<Behaviour> {
    seq.iter()
        .map(|b| Behaviour { item: b.item, timestamp: b.timestamp, play_time: b.play_time, completion: b.completion, size: b.size })
        .collect()
}
