//! Errors on their way to C: the status code of each [`Error`], the thread-local last
//! message, and the guard every exported body runs under (no panic crosses the boundary).

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;
use crate::error::Error;

/// A failure on its way to C: a status code and the message `twin_last_error` returns.
#[derive(Debug)]
pub(super) struct Fail {
    pub(super) code: i32,
    pub(super) message: String,
}

impl Fail {
    pub(super) fn new(code: i32, message: impl Into<String>) -> Fail {
        Fail { code, message: message.into() }
    }
    pub(super) fn null(func: &str, arg: &str) -> Fail {
        Fail::new(TWIN_ERR_NULL_ARG, format!("{func}: {arg} is NULL"))
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::new(code_of(&e), e.to_string())
    }
}

/// The status code for each library error.
pub(super) fn code_of(e: &Error) -> i32 {
    match e {
        Error::LengthMismatch { .. }
        | Error::OutOfRange { .. }
        | Error::NonFinite { .. }
        | Error::InvalidValue { .. }
        | Error::Empty { .. }
        | Error::BadOffsets { .. }
        | Error::BadShape { .. }
        | Error::Aliased { .. }
        | Error::WrongDtype { .. }
        | Error::BadSetting { .. }
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
        // No `_` arm: a new variant does not compile until it is given a code here (and, if it
        // needs a new one, in include/twin_engine.h).
    }
}

thread_local! {
    /// The last status and message of a `twin_*` call on this thread.
    pub(super) static LAST_ERROR: RefCell<(i32, String)> = const { RefCell::new((TWIN_OK, String::new())) };
}

pub(super) fn set_last(code: i32, message: String) {
    // `try_with`: during thread teardown the slot may be gone; the status code still reports.
    let _ = LAST_ERROR.try_with(|l| *l.borrow_mut() = (code, message));
}

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Runs `body` with panics caught; records the outcome as this thread's last error.
pub(super) fn guard(func: &str, body: impl FnOnce() -> Result<(), Fail>) -> i32 {
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
