"""twin-engine from Python: score candidates with a TWIN / TWIN-V2 model, cluster lifelong
histories (TWIN-V2's offline job), train and evaluate, read interaction logs (CSV or Parquet).

The work runs in the Rust engine with the GIL released; arrays cross the boundary without
per-element copies where the layout allows (a NumPy array of the expected dtype is read in
place; results are NumPy arrays handed over by the engine). Errors are ``TwinError``
subclasses whose message names the field and the value.

    >>> import twin_engine as te
    >>> ds = te.Dataset.open("ratings.csv")                  # or .parquet, or a twin dataset file
    >>> te.init_model(ds, "m.twm")
    >>> cl = te.cluster_dataset(ds, te.item_embeddings("m.twm"))
    >>> eng = te.Engine("m.twm", variant="twin", backend="cpu")
    >>> eng.score(request_time=1_500_000_000, candidates=[1, 2, 3],
    ...           long={"item": [7, 8], "timestamp": [1, 2], "play_time": [4.0, 5.0], "duration": [5.0, 5.0]})
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import _native
from ._errors import (
    AliasedError,
    BackendError,
    BackendUnavailableError,
    CorruptFileError,
    DeviceError,
    DriverError,
    EngineStoppedError,
    IncompatibleError,
    InternalPanicError,
    InvalidInputError,
    OverloadedError,
    SerializeError,
    SpawnError,
    TooLargeError,
    TwinError,
    TwinIOError,
    UnsupportedVersionError,
    WrongDtypeError,
)
from ._native import Dataset

__version__: str = _native.__version__

VARIANTS = ("twin-v2", "twin", "sim-soft", "din-short", "no-seq")
BACKENDS = ("cpu", "cuda", "wgpu", "auto")

PathLike = Union[str, "os.PathLike[str]"]
ArrayLike = Union[np.ndarray, Sequence[Any]]

__all__ = [
    "Dataset",
    "Engine",
    "backends",
    "cluster",
    "cluster_dataset",
    "user_clusters",
    "item_embeddings",
    "init_model",
    "train",
    "evaluate",
    "read_log",
    "VARIANTS",
    "BACKENDS",
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


# ---------------------------------------------------------------- argument conversion


def _scalar(v: Any) -> Any:
    """A NumPy scalar as the plain Python value (``1.5``, not ``np.float64(1.5)``) for messages."""
    return v.item() if isinstance(v, np.generic) else v


def _array(name: str, x: ArrayLike, dtype: Any) -> np.ndarray:
    """``x`` as a 1-D C-contiguous array of ``dtype``: returned as is when it already is one (no
    copy), converted once otherwise. Integer values outside the dtype's range and non-integer
    values for an integer dtype are refused naming the argument, the index and the value."""
    dtype = np.dtype(dtype)
    if isinstance(x, np.ndarray) and x.dtype == dtype and x.ndim == 1 and x.flags.c_contiguous:
        return x
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{name}: not an array of numbers ({e})") from None
    if a.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, dtype)
    if dtype.kind in "iu":
        if a.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(a) | (a != np.floor(a)))
            if bad.size:
                raise InvalidInputError(f"{name}[{bad[0]}] = {_scalar(a[bad[0]])!r} is not an integer")
        elif a.dtype.kind not in "iub":
            raise InvalidInputError(f"{name}: expected integers, got {a.dtype} values (e.g. {_scalar(a.flat[0])!r})")
        info = np.iinfo(dtype)
        bad = np.flatnonzero((a < info.min) | (a > info.max))
        if bad.size:
            raise InvalidInputError(f"{name}[{bad[0]}] = {_scalar(a[bad[0]])!r} is out of range for {dtype} ({info.min}..{info.max})")
    elif a.dtype.kind not in "iubf":
        raise InvalidInputError(f"{name}: expected numbers, got {a.dtype} values (e.g. {_scalar(a.flat[0])!r})")
    return np.ascontiguousarray(a, dtype=dtype)


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise InvalidInputError(f"{name} = {value!r}: expected one of {', '.join(allowed)}")
    return value


def _path(name: str, p: Optional[PathLike]) -> Optional[str]:
    if p is None:
        return None
    try:
        return os.fspath(p)
    except TypeError:
        raise InvalidInputError(f"{name} = {p!r}: expected a path") from None


def _dataset(d: Union[Dataset, PathLike]) -> Dataset:
    return d if isinstance(d, Dataset) else Dataset.open(_path("dataset", d))


def _seq(name: str, s: Optional[Mapping[str, ArrayLike]]):
    """A history mapping as the native tuple (item, timestamp, play_time, value, size, raw)."""
    if s is None:
        return None
    if not isinstance(s, Mapping):
        raise InvalidInputError(f"{name}: expected a mapping with item, timestamp, play_time and duration (or completion)")
    missing = [k for k in ("item", "timestamp", "play_time") if k not in s]
    if missing:
        raise InvalidInputError(f"{name}: missing {', '.join(missing)}")
    raw = "duration" in s
    if not raw and "completion" not in s:
        raise InvalidInputError(f"{name}: give duration (raw behaviours) or completion (clusters)")
    value = s["duration"] if raw else s["completion"]
    size = s.get("size")
    return (
        _array(f"{name}.item", s["item"], np.uint32),
        _array(f"{name}.timestamp", s["timestamp"], np.int64),
        _array(f"{name}.play_time", s["play_time"], np.float32),
        _array(f"{name}.{'duration' if raw else 'completion'}", value, np.float32),
        None if size is None else _array(f"{name}.size", size, np.uint32),
        raw,
    )


# ---------------------------------------------------------------- backends, data, models


def backends() -> List[Dict[str, Any]]:
    """Every backend this build knows: ``[{"name", "available", "detail"}]``; ``detail`` says
    what the backend is, or why it cannot run here. ``auto`` picks the first available of
    cuda, a real GPU through wgpu, then cpu."""
    return [{"name": n, "available": a, "detail": d} for n, a, d in _native.backends()]


def read_log(path: PathLike, item_features: Optional[PathLike] = None) -> Dataset:
    """Reads an interaction log into a :class:`Dataset`: Parquet (recognised by its magic,
    whatever the name), MovieLens ratings (``ratings*.csv``, ``u.data``, ``ratings.dat``) or a
    KuaiRand / KuaiRec CSV log; ``item_features`` (CSV or Parquet) for Kuai logs. The columns
    are those ``twin import`` takes."""
    return Dataset.read_log(_path("path", path), _path("item_features", item_features))


def item_embeddings(model: PathLike) -> np.ndarray:
    """A model file's item-id embeddings, ``float32 [n_items, id_dim]``: the points the
    clustering works on. Row ``i`` is the dataset's item ``i`` (items in ascending external id)."""
    return _native.item_embeddings(_path("model", model))


def init_model(dataset: Union[Dataset, PathLike], out: PathLike, seed: int = 1) -> str:
    """Writes a freshly initialised model for the dataset's item catalogue (deterministic in
    ``seed``, as ``twin init``) to ``out``; returns its description."""
    return _native.init_model(_dataset(dataset), _path("out", out), seed)


# ---------------------------------------------------------------- clustering


def cluster(
    offsets: ArrayLike,
    item: ArrayLike,
    timestamp: ArrayLike,
    play_time: ArrayLike,
    duration: ArrayLike,
    embeddings: np.ndarray,
    *,
    user_keys: Optional[ArrayLike] = None,
    cutoff: Optional[int] = None,
    gamma: int = 20,
    groups: int = 5,
    seed: int = 0,
    max_iter: int = 20,
    backend: str = "cpu",
) -> Dict[str, Any]:
    """Clusters lifelong histories (TWIN-V2 Algorithm 1) with the engine's batched clustering.

    Histories are flat arrays: user ``u`` owns ``offsets[u]:offsets[u+1]`` of ``item`` (row of
    ``embeddings``), ``timestamp`` (seconds, oldest first), ``play_time`` and ``duration``
    (completion = play_time / duration, clamped to [0, 1]). ``embeddings`` is ``float32
    [n_items, dim]``. Only behaviours before ``cutoff`` are clustered when it is given.

    ``user_keys`` (uint64, one per user; default: the user's position) seed each user's k-means:
    a user's clusters depend only on its own history, the embeddings, the seed and its key, so
    a job sharded by user with the log's user ids as keys gives every user the same clusters
    as one process does (``twin_engine.ray_job``).

    Returns NumPy arrays: ``user_offsets`` (``[U+1]`` into the cluster arrays), per cluster
    ``item`` (the member nearest the centroid), ``timestamp`` (newest member), ``play_time`` and
    ``completion`` (means), ``size`` (member count ``n``), ``group`` (completion group),
    ``member_offsets`` / ``members`` (positions in the user's history); and ``users``.
    """
    return _native.cluster(
        _array("offsets", offsets, np.uint64),
        _array("item", item, np.uint32),
        _array("timestamp", timestamp, np.int64),
        _array("play_time", play_time, np.float32),
        _array("duration", duration, np.float32),
        _embeddings(embeddings),
        None if user_keys is None else _array("user_keys", user_keys, np.uint64),
        cutoff,
        gamma,
        groups,
        seed,
        max_iter,
        _choice("backend", backend, BACKENDS),
    )


def cluster_dataset(
    dataset: Union[Dataset, PathLike],
    embeddings: np.ndarray,
    *,
    users: Optional[ArrayLike] = None,
    cutoff: Optional[int] = None,
    key: str = "external",
    gamma: int = 20,
    groups: int = 5,
    seed: int = 0,
    max_iter: int = 20,
    backend: str = "cpu",
    out: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """Clusters the users of a dataset (all, or the dataset indices ``users``); the result is
    :func:`cluster`'s, with ``users`` the dataset indices. ``key="external"`` seeds each user by
    its id in the log (what :mod:`twin_engine.ray_job` does, so both agree user for user);
    ``key="index"`` by its dataset index (what ``twin cluster`` does). ``out`` also saves a
    clusters file for ``train(variant="twin-v2", clusters=...)`` (build it with ``cutoff`` =
    the training split time)."""
    return _native.cluster_dataset(
        _dataset(dataset),
        _embeddings(embeddings),
        None if users is None else _array("users", users, np.uint32),
        cutoff,
        _choice("key", key, ("external", "index")),
        gamma,
        groups,
        seed,
        max_iter,
        _choice("backend", backend, BACKENDS),
        _path("out", out),
    )


def _embeddings(e: np.ndarray) -> np.ndarray:
    a = np.asarray(e)
    if a.ndim != 2:
        raise InvalidInputError(f"embeddings: expected a 2-D array [n_items, dim], got shape {a.shape}")
    if a.dtype.kind not in "iuf":
        raise InvalidInputError(f"embeddings: expected numbers, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def user_clusters(clusters: Mapping[str, np.ndarray], slot: int) -> Dict[str, np.ndarray]:
    """User ``slot``'s clusters from a :func:`cluster` result, as the ``long`` history of a
    TWIN-V2 :meth:`Engine.score` (``item``, ``timestamp``, ``play_time``, ``completion``,
    ``size``); views, not copies."""
    off = clusters["user_offsets"]
    if not 0 <= slot < len(off) - 1:
        raise InvalidInputError(f"slot = {slot} is out of range ({len(off) - 1} users)")
    r = slice(int(off[slot]), int(off[slot + 1]))
    return {k: clusters[k][r] for k in ("item", "timestamp", "play_time", "completion", "size")}


# ---------------------------------------------------------------- serving


class Engine:
    """A model loaded onto a backend, scoring one user x B candidates per call.

    ``Engine(model, variant="twin", backend="auto", dtype="f32", ...)`` opens a model file
    (``twin train``'s output). Calls release the GIL, and concurrent calls from Python threads
    are batched into one backend call (``batching=True``). ``swap(path)`` replaces the model
    atomically while requests keep being served.
    """

    def __init__(
        self,
        model: PathLike,
        variant: str = "twin",
        backend: str = "auto",
        dtype: str = "f32",
        *,
        batching: bool = True,
        max_batch_requests: int = 64,
        max_batch_candidates: int = 16_384,
        max_wait_us: int = 500,
        queue_capacity: int = 4_096,
        max_candidates: int = 4_096,
        max_seq_len: int = 100_000,
    ) -> None:
        self._e = _native.Engine(
            _path("model", model),
            _choice("variant", variant, VARIANTS),
            _choice("backend", backend, BACKENDS),
            _choice("dtype", dtype, ("f32", "f16")),
            batching,
            max_batch_requests,
            max_batch_candidates,
            max_wait_us,
            queue_capacity,
            max_candidates,
            max_seq_len,
        )

    def score(
        self,
        request_time: int,
        candidates: ArrayLike,
        long: Optional[Mapping[str, ArrayLike]] = None,
        short: Optional[Mapping[str, ArrayLike]] = None,
    ) -> np.ndarray:
        """CTR of each candidate item (``float32 [len(candidates)]``).

        ``long`` is the GSU's input, oldest first: raw behaviours (``item``, ``timestamp``,
        ``play_time``, ``duration``) for twin / sim-soft, or a user's clusters (``item``,
        ``timestamp``, ``play_time``, ``completion``, ``size``; see :func:`user_clusters`)
        for twin-v2. ``short`` holds the recent raw behaviours. Values may be lists or arrays;
        arrays of the right dtype (uint32 ids, int64 times, float32 values) are not copied.
        """
        return self._e.score(int(request_time), _array("candidates", candidates, np.uint32), _seq("long", long), _seq("short", short))

    def swap(self, path: PathLike) -> int:
        """Loads ``path`` as the next model version and switches to it atomically; returns the
        new version. A file that fails to load is refused and the current model keeps serving."""
        return self._e.swap(_path("path", path))

    @property
    def model_version(self) -> int:
        """1 for the model opened, +1 per successful swap."""
        return self._e.model_version

    @property
    def model_path(self) -> str:
        return self._e.model_path

    @property
    def backend(self) -> str:
        """The backend in use, in words."""
        return self._e.backend

    @property
    def backend_note(self) -> str:
        """Why this backend (what ``auto`` chose and what it skipped)."""
        return self._e.backend_note

    @property
    def variant(self) -> str:
        return self._e.variant

    def __repr__(self) -> str:
        return f"Engine(model={self.model_path!r}, variant={self.variant!r}, backend={self.backend!r}, version={self.model_version})"


# ---------------------------------------------------------------- training


def train(
    dataset: Union[Dataset, PathLike],
    out: PathLike,
    variant: str = "twin",
    *,
    epochs: int = 4,
    batch: int = 128,
    lr: float = 1e-3,
    lr_emb: float = 0.05,
    test_fraction: float = 0.2,
    max_long: int = 10_000,
    seed: int = 1,
    backend: str = "auto",
    init: Optional[PathLike] = None,
    clusters: Optional[PathLike] = None,
    checkpoint: Optional[PathLike] = None,
    resume: bool = False,
) -> Dict[str, Any]:
    """Trains one variant on the time split (the newest ``test_fraction`` of samples is the
    test set), as ``twin train`` does, and saves the model to ``out``. twin-v2 takes
    ``clusters`` built before the split, or clusters that history itself. Returns the report:
    per-epoch ``epochs`` (train loss, test AUC / GAUC / logloss, samples/s), ``step_losses``,
    ``split_time``, ``backend``."""
    return json.loads(
        _native.train(
            _dataset(dataset),
            _path("out", out),
            _choice("variant", variant, VARIANTS),
            epochs,
            batch,
            lr,
            lr_emb,
            test_fraction,
            max_long,
            seed,
            _choice("backend", backend, BACKENDS),
            _path("init", init),
            _path("clusters", clusters),
            _path("checkpoint", checkpoint),
            resume,
        )
    )


def evaluate(
    dataset: Union[Dataset, PathLike],
    model: PathLike,
    variant: str = "twin",
    *,
    clusters: Optional[PathLike] = None,
    test_fraction: float = 0.2,
    max_long: int = 10_000,
    batch: int = 256,
    backend: str = "auto",
) -> Dict[str, Any]:
    """Test metrics of a trained model on the time split, as ``twin eval``: ``auc``, ``gauc``,
    ``logloss``, ``test_samples``, ``gsu_input_length``."""
    return json.loads(
        _native.evaluate(
            _dataset(dataset),
            _path("model", model),
            _choice("variant", variant, VARIANTS),
            _path("clusters", clusters),
            test_fraction,
            max_long,
            batch,
            _choice("backend", backend, BACKENDS),
        )
    )
