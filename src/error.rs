//! The library's one error type. Every variant names the field and the offending value, so a
//! caller (or the CLI's one-line message) can say exactly what was wrong with the input.

use std::path::PathBuf;

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

    /// A table handed to a backend that did not create it.
    #[error("table `{table}` lives on the {owner} backend, not on {caller}")]
    ForeignTable { table: &'static str, owner: String, caller: String },

    /// Two inputs that are each valid but do not belong together (a checkpoint of another
    /// catalogue, an output path that is one of the inputs).
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

    /// A setting (environment variable or option) with a value this build does not know.
    #[error("{name} = {value:?}: {why}")]
    BadSetting { name: &'static str, value: String, why: String },

    /// A backend that cannot run here (no driver, no adapter, feature not compiled in).
    #[error("backend {backend} is unavailable: {why}")]
    BackendUnavailable { backend: &'static str, why: String },

    /// The serving queue is full: the request was not queued (retry, or raise the capacity).
    #[error("the request queue is full ({queue} requests waiting); retry later")]
    Overloaded { queue: usize },

    /// An error reported by the GPU driver, runtime or shader compiler.
    #[error("{backend}: {op}: {message}")]
    Device { backend: &'static str, op: &'static str, message: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn corrupt(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::CorruptFile { path: path.into(), what: what.into() }
    }
}
