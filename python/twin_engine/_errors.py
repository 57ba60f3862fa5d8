"""The exceptions twin_engine raises: one class per kind of engine error.

Every message names the field and the offending value (``candidates[2] = 99999 is out of range
(vocabulary size 9742)``). Each class derives from ``TwinError`` and from the builtin exception
it resembles, so ``except ValueError`` / ``except OSError`` work as usual.
"""


class TwinError(Exception):
    """Base class of every error raised by twin_engine."""


class InvalidInputError(TwinError, ValueError):
    """A bad argument or input value: unknown item id, NaN, empty candidates, bad option,
    unsorted history, malformed log row, wrong array length."""


class AliasedError(InvalidInputError):
    """One array passed as two operands that must be distinct (the message names both)."""


class WrongDtypeError(InvalidInputError):
    """An array of the wrong element type (the message names the expected and the given type)."""


class IncompatibleError(TwinError, ValueError):
    """Two inputs each valid but not belonging together (a model of another catalogue,
    clusters built past the split, an existing checkpoint without ``resume=True``)."""


class TooLargeError(TwinError, ValueError):
    """A size over the engine's limits (candidates, sequence length, queue)."""


class TwinIOError(TwinError, OSError):
    """A file could not be read or written."""


class CorruptFileError(TwinError, ValueError):
    """A file that is not what it claims to be: wrong magic, truncated, checksum mismatch."""


class UnsupportedVersionError(TwinError, ValueError):
    """A file written by a format version this build does not read."""


class BackendUnavailableError(TwinError, RuntimeError):
    """The requested backend cannot run here (not compiled in, no driver, no adapter)."""


class BackendError(TwinError, RuntimeError):
    """The backend failed while running (driver, runtime, shader compiler)."""


class DriverError(BackendError):
    """A call into the GPU driver, runtime or kernel/shader compiler failed; the message names
    the backend, the operation and the driver's own error."""


class DeviceError(BackendError):
    """The device ran, but what it returned fails a check the engine makes on it (a fault in the
    backend, never in the input)."""


class OverloadedError(TwinError, RuntimeError):
    """The engine's request queue is full; retry later or raise ``queue_capacity``."""


class EngineStoppedError(TwinError, RuntimeError):
    """The serving engine is shutting down or its batching worker stopped; another engine (or a
    retry after a restart) may serve the request."""


class InternalPanicError(TwinError, RuntimeError):
    """A panic inside the engine, caught at a boundary: a bug (please report the message); the
    engine keeps working."""


class SpawnError(TwinError, OSError):
    """The operating system refused to start a thread the engine needs."""


class SerializeError(TwinError, ValueError):
    """A value (a model's config) could not be written as JSON."""


__all__ = [
    "TwinError",
    "InvalidInputError",
    "AliasedError",
    "WrongDtypeError",
    "IncompatibleError",
    "TooLargeError",
    "TwinIOError",
    "CorruptFileError",
    "UnsupportedVersionError",
    "BackendUnavailableError",
    "BackendError",
    "DriverError",
    "DeviceError",
    "OverloadedError",
    "EngineStoppedError",
    "InternalPanicError",
    "SpawnError",
    "SerializeError",
]
