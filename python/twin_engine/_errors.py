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


class OverloadedError(TwinError, RuntimeError):
    """The engine's request queue is full; retry later or raise ``queue_capacity``."""


__all__ = [
    "TwinError",
    "InvalidInputError",
    "IncompatibleError",
    "TooLargeError",
    "TwinIOError",
    "CorruptFileError",
    "UnsupportedVersionError",
    "BackendUnavailableError",
    "BackendError",
    "OverloadedError",
]
