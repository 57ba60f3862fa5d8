//! The library's one error type. Every variant names the field and the offending value, so a
//! caller (or the CLI's one-line message) can say exactly what was wrong with the input.

use std::path::PathBuf;
#[cfg(feature = "wgpu")]
use std::sync::Arc;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two arrays that must agree in length do not.
    #[error("{field}: length {got} does not match {expected_what} ({expected})")]
    LengthMismatch { field: &'static str, got: usize, expected: usize, expected_what: &'static str },

    /// An id (item, author, cross-feature row, centroid, ...) outside its vocabulary.
    #[error("{field}[{index}] = {value} is out of range (vocabulary size {limit})")]
    OutOfRange { field: &'static str, index: usize, value: u64, limit: u64 },

    /// A NaN or infinity where a finite number is required.
    #[error("{field}[{index}] = {value} is not finite")]
    NonFinite { field: &'static str, index: usize, value: f32 },

    /// A value that is finite but outside what the math allows (e.g. a cluster size < 1).
    #[error("{field}[{index}] = {value}: {why}")]
    InvalidValue { field: &'static str, index: usize, value: f64, why: &'static str },

    /// A sequence that must hold at least one element is empty.
    #[error("{field}: request {index} is empty")]
    Empty { field: &'static str, index: usize },

    /// A size over a configured or hard limit.
    #[error("{field} = {value} exceeds the limit {limit}")]
    TooLarge { field: &'static str, value: u64, limit: u64 },

    /// Offsets arrays must start at 0, be non-decreasing and end at the flat array's length.
    #[error("{field}: offsets are malformed at {index} ({why})")]
    BadOffsets { field: &'static str, index: usize, why: &'static str },

    /// A shape parameter that is inconsistent (e.g. D not divisible by the head count).
    #[error("{field} = {value}: {why}")]
    BadShape { field: &'static str, value: u64, why: &'static str },

    /// One tensor passed as two operands that must be distinct (an op reading one while it
    /// writes the other would race with itself). `field` is the later operand, `other` the
    /// earlier one it aliases.
    #[error("{field} is the same tensor as {other}; the op needs distinct tensors")]
    Aliased { field: &'static str, other: &'static str },

    /// A tensor whose element type is not the one the op reads or writes (`f32`, `u32`).
    #[error("{field}: element type is {got}, expected {expected}")]
    WrongDtype { field: &'static str, expected: &'static str, got: &'static str },

    /// A table handed to a backend that did not create it.
    #[error("table `{table}` lives on the {owner} backend, not on {caller}")]
    ForeignTable { table: &'static str, owner: String, caller: String },

    /// Two inputs that are each valid but do not belong together (a checkpoint of another
    /// catalogue, an output path that is one of the inputs, a slot staged into another upload
    /// or by another backend).
    #[error("{what}: {why}")]
    Incompatible { what: &'static str, why: String },

    /// A file that is not what it claims to be: wrong magic, truncated, checksum mismatch.
    #[error("{path}: {what}")]
    CorruptFile { path: PathBuf, what: String },

    /// A file written by a format version this build does not read.
    #[error("{path}: format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion { path: PathBuf, found: u32, supported: u32 },

    /// A malformed line or field in a text input (CSV logs, JSON requests).
    #[error("{path}:{line}: {field}: {what}")]
    Parse { path: PathBuf, line: usize, field: String, what: String },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// A setting (environment variable, option or configuration field) with a value this build
    /// does not know or accept (a server limit below its minimum, an unknown backend name).
    #[error("{name} = {value:?}: {why}")]
    BadSetting { name: &'static str, value: String, why: String },

    /// A backend that cannot run here (no driver, no adapter, feature not compiled in).
    #[error("backend {backend} is unavailable: {why}")]
    BackendUnavailable { backend: &'static str, why: String },

    /// The serving queue is full: the request was not queued (retry, or raise the capacity).
    #[error("the request queue is full ({queue} requests waiting); retry later")]
    Overloaded { queue: usize },

    /// A call into the GPU driver, runtime or kernel/shader compiler (or the CUDA emulator that
    /// stands in for them) failed. `source` is the driver's own error, typed: downcast
    /// `std::error::Error::source()` to [`DriverError`], then match it (its own `source()` is the
    /// cudarc / wgpu error itself).
    #[error("{backend}: {op}: {source}")]
    Driver { backend: &'static str, op: &'static str, source: DriverError },

    /// The device ran, but what it handed back fails a check the host makes on it (a kernel's
    /// status counts past their bounds, compiled PTX without a declared entry point, a planner
    /// with no work for a non-empty batch): a fault in the backend, never in the input.
    #[error("{backend}: {op}: {message}")]
    Device { backend: &'static str, op: &'static str, message: String },

    /// The serving engine can no longer take requests: it is shutting down, or its batching
    /// worker has stopped. Not the request's fault; another engine (or a retry after a restart)
    /// may serve it.
    #[error("the serving engine {why}")]
    EngineStopped { why: &'static str },

    /// A panic inside the library, caught at a boundary (the serving engine's batch); whatever
    /// caught it keeps working. A bug, never the input's fault.
    #[error("{op}: internal panic (caught): {message}")]
    Panic { op: &'static str, message: String },

    /// The operating system refused to start a thread the library needs.
    #[error("could not start the {thread} thread: {source}")]
    Spawn { thread: &'static str, source: std::io::Error },

    /// A value that could not be written as JSON (a model's config when saving).
    #[error("{what}: cannot be serialised to JSON: {source}")]
    Serialize { what: &'static str, source: serde_json::Error },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn corrupt(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::CorruptFile { path: path.into(), what: what.into() }
    }
    /// A driver failure of `backend` during `op`.
    pub fn driver(backend: &'static str, op: &'static str, source: impl Into<DriverError>) -> Self {
        Error::Driver { backend, op, source: source.into() }
    }
    /// The message of a caught panic's payload (`&str` or `String`; anything else is "panic").
    pub fn panic(op: &'static str, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        Error::Panic { op, message }
    }
}

/// The driver's own error inside [`Error::Driver`], one variant per kind of failure a backend
/// sees. The original error is kept (its `source()`), so callers can downcast to the cudarc or
/// wgpu type. `Clone`, so one batch's device failure can be every request's (the serving engine
/// answers each request of a failed batch with it): the wgpu errors that are not `Clone` are
/// held in an `Arc`, and `source()` hands out the error inside it, not the `Arc`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DriverError {
    /// A CUDA driver API call failed (its `CUresult`).
    #[cfg(feature = "cuda")]
    Cuda(cudarc::driver::DriverError),
    /// NVRTC could not compile `kernels/<file>.cu`; the compiler's log is in `error`.
    #[cfg(feature = "cuda")]
    Nvrtc { file: &'static str, error: cudarc::nvrtc::CompileError },
    /// wgpu reported an error (validation, out of memory, internal) in an error scope.
    #[cfg(feature = "wgpu")]
    Wgpu(Arc<wgpu::Error>),
    /// A shader module or pipeline failed to build; `shader` names the file, entry point and
    /// specialisation flags.
    #[cfg(feature = "wgpu")]
    Shader { shader: String, error: Arc<wgpu::Error> },
    /// Mapping a buffer for reading failed (or was aborted before its callback ran).
    #[cfg(feature = "wgpu")]
    Map(wgpu::BufferAsyncError),
    /// A mapped buffer's range could not be viewed.
    #[cfg(feature = "wgpu")]
    MapRange(wgpu::MapRangeError),
    /// Waiting for the device (polling) failed.
    #[cfg(feature = "wgpu")]
    Poll(Arc<wgpu::PollError>),
    /// The CUDA CPU emulator (feature `cuda-emu`) refused an access or a launch, or a kernel
    /// failed under it. Present in every build so the type is never empty; only the emulator
    /// makes one.
    Emulator(String),
}

#[cfg(feature = "cuda")]
impl From<cudarc::driver::DriverError> for DriverError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        DriverError::Cuda(e)
    }
}
#[cfg(feature = "wgpu")]
impl From<wgpu::Error> for DriverError {
    fn from(e: wgpu::Error) -> Self {
        DriverError::Wgpu(Arc::new(e))
    }
}
#[cfg(feature = "wgpu")]
impl From<wgpu::BufferAsyncError> for DriverError {
    fn from(e: wgpu::BufferAsyncError) -> Self {
        DriverError::Map(e)
    }
}
#[cfg(feature = "wgpu")]
impl From<wgpu::MapRangeError> for DriverError {
    fn from(e: wgpu::MapRangeError) -> Self {
        DriverError::MapRange(e)
    }
}
#[cfg(feature = "wgpu")]
impl From<wgpu::PollError> for DriverError {
    fn from(e: wgpu::PollError) -> Self {
        DriverError::Poll(Arc::new(e))
    }
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "cuda")]
            DriverError::Cuda(e) => {
                // cudarc's own text asks the driver for the description, which needs libcuda:
                // without it (an error built in a test) the code's name alone is printed.
                write!(f, "{:?}", e.0)?;
                if crate::backend::cuda::driver_present() {
                    if let Ok(s) = e.error_string() {
                        write!(f, " ({})", s.to_string_lossy())?;
                    }
                }
                Ok(())
            }
            #[cfg(feature = "cuda")]
            DriverError::Nvrtc { file, error } => {
                write!(f, "kernels/{file}.cu: ")?;
                match error {
                    cudarc::nvrtc::CompileError::CompileError { nvrtc, options, log } => {
                        write!(f, "{nvrtc:?} with options {options:?}:\n{}", log.to_string_lossy())
                    }
                    other => write!(f, "{other:?}"),
                }
            }
            #[cfg(feature = "wgpu")]
            DriverError::Wgpu(e) => write!(f, "{e}"),
            #[cfg(feature = "wgpu")]
            DriverError::Shader { shader, error } => write!(f, "{shader}: {error}"),
            #[cfg(feature = "wgpu")]
            DriverError::Map(e) => write!(f, "{e}"),
            #[cfg(feature = "wgpu")]
            DriverError::MapRange(e) => write!(f, "{e}"),
            #[cfg(feature = "wgpu")]
            DriverError::Poll(e) => write!(f, "{e}"),
            DriverError::Emulator(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "cuda")]
            DriverError::Cuda(e) => Some(e),
            #[cfg(feature = "cuda")]
            DriverError::Nvrtc { error, .. } => Some(error),
            #[cfg(feature = "wgpu")]
            DriverError::Wgpu(e) | DriverError::Shader { error: e, .. } => Some(&**e),
            #[cfg(feature = "wgpu")]
            DriverError::Map(e) => Some(e),
            #[cfg(feature = "wgpu")]
            DriverError::MapRange(e) => Some(e),
            #[cfg(feature = "wgpu")]
            DriverError::Poll(e) => Some(&**e),
            DriverError::Emulator(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_driver_error_names_backend_op_and_keeps_its_source() {
        let e = Error::driver("cuda", "alloc", DriverError::Emulator("copy to the device: 8 bytes overrun".into()));
        assert_eq!(e.to_string(), "cuda: alloc: copy to the device: 8 bytes overrun");
        let src = e.source().expect("a driver error has a source");
        match src.downcast_ref::<DriverError>() {
            Some(DriverError::Emulator(m)) => assert!(m.contains("overrun")),
            other => panic!("source is not the emulator's DriverError: {other:?}"),
        }
        // The emulator's text is the end of the chain.
        assert!(src.source().is_none());
    }

    #[test]
    fn a_shared_driver_error_is_a_clone_with_the_same_text() {
        let d = DriverError::Emulator("lost".into());
        let e1 = Error::Driver { backend: "cuda", op: "x", source: d.clone() };
        let e2 = Error::Driver { backend: "cuda", op: "x", source: d };
        assert_eq!(e1.to_string(), e2.to_string());
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn a_cuda_driver_error_downcasts_to_cudarcs_type() {
        use cudarc::driver::sys::CUresult;
        let e = Error::driver("cuda", "alloc", cudarc::driver::DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY));
        let text = e.to_string();
        assert!(text.starts_with("cuda: alloc: CUDA_ERROR_OUT_OF_MEMORY"), "{text}");
        let d = e.source().and_then(|s| s.downcast_ref::<DriverError>()).expect("DriverError source");
        assert!(matches!(d, DriverError::Cuda(_)));
        let inner = d.source().and_then(|s| s.downcast_ref::<cudarc::driver::DriverError>()).expect("cudarc source");
        assert_eq!(inner.0, CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }

    #[cfg(feature = "wgpu")]
    #[test]
    fn a_wgpu_error_downcasts_through_the_arc() {
        let e = Error::driver("wgpu", "readback", wgpu::PollError::Timeout);
        assert!(e.to_string().starts_with("wgpu: readback: The requested Wait timed out"), "{e}");
        let d = e.source().and_then(|s| s.downcast_ref::<DriverError>()).expect("DriverError source");
        let inner = d.source().and_then(|s| s.downcast_ref::<wgpu::PollError>()).expect("the PollError itself, not its Arc");
        assert!(matches!(inner, wgpu::PollError::Timeout));
        let m = Error::driver("wgpu", "readback", wgpu::BufferAsyncError);
        let d = m.source().and_then(|s| s.downcast_ref::<DriverError>()).unwrap();
        assert!(d.source().and_then(|s| s.downcast_ref::<wgpu::BufferAsyncError>()).is_some());
    }

    #[test]
    fn aliasing_and_dtype_errors_name_both_operands_and_types() {
        let e = Error::Aliased { field: "adam g", other: "adam w" };
        assert_eq!(e.to_string(), "adam g is the same tensor as adam w; the op needs distinct tensors");
        let e = Error::WrongDtype { field: "attn q", expected: "f32", got: "u32" };
        assert_eq!(e.to_string(), "attn q: element type is u32, expected f32");
    }

    #[test]
    fn engine_panic_and_serialise_errors_read_as_what_they_are() {
        assert_eq!(Error::EngineStopped { why: "is shutting down" }.to_string(), "the serving engine is shutting down");
        let p: Box<dyn std::any::Any + Send> = Box::new(String::from("index out of bounds"));
        let e = Error::panic("score batch", p.as_ref());
        assert!(matches!(&e, Error::Panic { op: "score batch", message } if message == "index out of bounds"), "{e}");
        let p: Box<dyn std::any::Any + Send> = Box::new(7u32);
        assert!(Error::panic("score batch", p.as_ref()).to_string().ends_with("internal panic (caught): panic"));
        let bad = serde_json::to_string(&std::collections::HashMap::from([((1u8, 2u8), 3u8)])).unwrap_err();
        let e = Error::Serialize { what: "model config", source: bad };
        assert!(e.to_string().starts_with("model config: cannot be serialised to JSON: "), "{e}");
        assert!(e.source().and_then(|s| s.downcast_ref::<serde_json::Error>()).is_some());
    }
}
