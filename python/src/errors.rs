//! Engine errors as Python exceptions: one class per kind (mirroring the C ABI's status codes),
//! defined in `twin_engine/_errors.py` so each can also derive from the builtin it resembles
//! (`InvalidInputError` is a `ValueError`, `TwinIOError` an `OSError`, ...). The message is the
//! engine's own, which names the field and the offending value.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;
use twin_engine::Error;

/// The exception class name for an engine error. Every variant is listed (no `_` arm), so a
/// new one does not compile until it is given a class here and in `_errors.py`.
pub fn kind_of(e: &Error) -> &'static str {
    match e {
        Error::LengthMismatch { .. }
        | Error::OutOfRange { .. }
        | Error::NonFinite { .. }
        | Error::InvalidValue { .. }
        | Error::Empty { .. }
        | Error::BadOffsets { .. }
        | Error::BadShape { .. }
        | Error::BadSetting { .. }
        | Error::Parse { .. } => "InvalidInputError",
        // Subclasses of InvalidInputError.
        Error::Aliased { .. } => "AliasedError",
        Error::WrongDtype { .. } => "WrongDtypeError",
        Error::Incompatible { .. } => "IncompatibleError",
        Error::TooLarge { .. } => "TooLargeError",
        Error::Io { .. } => "TwinIOError",
        Error::CorruptFile { .. } => "CorruptFileError",
        Error::UnsupportedVersion { .. } => "UnsupportedVersionError",
        Error::BackendUnavailable { .. } => "BackendUnavailableError",
        Error::Overloaded { .. } => "OverloadedError",
        Error::ForeignTable { .. } => "BackendError",
        // Subclasses of BackendError.
        Error::Driver { .. } => "DriverError",
        Error::Device { .. } => "DeviceError",
        Error::EngineStopped { .. } => "EngineStoppedError",
        Error::Panic { .. } => "InternalPanicError",
        Error::Spawn { .. } => "SpawnError",
        Error::Serialize { .. } => "SerializeError",
    }
}

/// A Python exception of class `kind` (from `twin_engine._errors`) carrying `msg`.
pub fn raise(py: Python<'_>, kind: &str, msg: String) -> PyErr {
    let class = py.import("twin_engine._errors").and_then(|m| m.getattr(kind)).and_then(|c| Ok(c.cast_into::<PyType>()?));
    match class {
        Ok(c) => PyErr::from_type(c, msg),
        // Only if the package's Python half is missing (the native module imported alone).
        Err(_) => PyRuntimeError::new_err(format!("{kind}: {msg}")),
    }
}

/// Converts engine errors at the boundary: `engine_call().map_err(py_err(py))?`.
pub fn py_err(py: Python<'_>) -> impl Fn(Error) -> PyErr + '_ {
    move |e| raise(py, kind_of(&e), e.to_string())
}

/// An invalid argument caught in the bindings themselves (names the argument and the value).
pub fn invalid(py: Python<'_>, msg: String) -> PyErr {
    raise(py, "InvalidInputError", msg)
}
