"""Type stubs of the compiled extension ``twin_engine._native`` (python/src/*.rs). Use the
Pythonic layer in ``twin_engine`` (which converts arguments and documents each function);
these are its building blocks. Arrays must already have the dtypes shown."""

from os import PathLike
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, PathLike[str]]
# (item, timestamp, play_time, duration-or-completion, size, value_is_duration)
_Seq = Tuple[
    npt.NDArray[np.uint32],
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.float32],
    Optional[npt.NDArray[np.uint32]],
    bool,
]

def backends() -> List[Tuple[str, bool, str]]: ...
def auto_backend() -> Tuple[str, str]: ...

class Engine:
    def __init__(
        self,
        model: _Path,
        variant: str = "twin",
        backend: str = "auto",
        dtype: str = "f32",
        batching: bool = True,
        max_batch_requests: int = 64,
        max_batch_candidates: int = 16384,
        max_wait_us: int = 500,
        queue_capacity: int = 4096,
        max_candidates: int = 4096,
        max_seq_len: int = 100000,
    ) -> None: ...
    def score(
        self, request_time: int, candidates: npt.NDArray[np.uint32], long: Optional[_Seq] = None, short: Optional[_Seq] = None
    ) -> npt.NDArray[np.float32]: ...
    def swap(self, path: _Path) -> int: ...
    @property
    def model_version(self) -> int: ...
    @property
    def model_path(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def backend_note(self) -> str: ...
    @property
    def variant(self) -> str: ...

class Dataset:
    """An interaction dataset held by the engine (users' sequences, item catalogue, samples)."""

    @staticmethod
    def open(path: _Path, item_features: Optional[_Path] = None) -> Dataset:
        """A twin dataset file (by its magic), else a log as :meth:`read_log` reads it."""
    @staticmethod
    def read_log(path: _Path, item_features: Optional[_Path] = None) -> Dataset:
        """A log: Parquet (by its magic), MovieLens ratings or a KuaiRand/KuaiRec CSV log."""
    @staticmethod
    def generate(
        users: int = 200,
        items: int = 20000,
        authors: int = 2000,
        topics: int = 64,
        min_len: int = 10,
        max_len: int = 100000,
        samples_per_user: int = 20,
        seed: int = 42,
        fixed_len: Optional[int] = None,
    ) -> Dataset:
        """Synthetic long-sequence users (``twin gen``'s generator)."""
    def save(self, path: _Path) -> None:
        """Saves as a twin dataset file (atomically)."""
    @property
    def n_users(self) -> int: ...
    @property
    def n_items(self) -> int: ...
    @property
    def n_behaviours(self) -> int: ...
    @property
    def n_samples(self) -> int: ...
    @property
    def source(self) -> str: ...
    def describe(self) -> str: ...
    def arrays(self) -> Dict[str, np.ndarray]:
        """Every column as a NumPy array: user_offsets, user_ids, item, timestamp, play_time,
        duration, item_external_id, item_author, item_topic, item_duration_bucket,
        sample_user, sample_item, sample_request_time, sample_label."""

def cluster(
    offsets: npt.NDArray[np.uint64],
    item: npt.NDArray[np.uint32],
    timestamp: npt.NDArray[np.int64],
    play_time: npt.NDArray[np.float32],
    duration: npt.NDArray[np.float32],
    embeddings: npt.NDArray[np.float32],
    user_keys: Optional[npt.NDArray[np.uint64]] = None,
    cutoff: Optional[int] = None,
    gamma: int = 20,
    groups: int = 5,
    seed: int = 0,
    max_iter: int = 20,
    backend: str = "cpu",
) -> Dict[str, Any]: ...
def cluster_dataset(
    dataset: Dataset,
    embeddings: npt.NDArray[np.float32],
    users: Optional[npt.NDArray[np.uint32]] = None,
    cutoff: Optional[int] = None,
    key: str = "external",
    gamma: int = 20,
    groups: int = 5,
    seed: int = 0,
    max_iter: int = 20,
    backend: str = "cpu",
    out: Optional[_Path] = None,
) -> Dict[str, Any]: ...
def item_embeddings(model: _Path) -> npt.NDArray[np.float32]: ...
def init_model(dataset: Dataset, out: _Path, seed: int = 1) -> str: ...
def train(
    dataset: Dataset,
    out: _Path,
    variant: str = "twin",
    epochs: int = 4,
    batch: int = 128,
    lr: float = 0.001,
    lr_emb: float = 0.05,
    test_fraction: float = 0.2,
    max_long: int = 10000,
    seed: int = 1,
    backend: str = "auto",
    init: Optional[_Path] = None,
    clusters: Optional[_Path] = None,
    checkpoint: Optional[_Path] = None,
    resume: bool = False,
) -> str: ...
def evaluate(
    dataset: Dataset,
    model: _Path,
    variant: str = "twin",
    clusters: Optional[_Path] = None,
    test_fraction: float = 0.2,
    max_long: int = 10000,
    batch: int = 256,
    backend: str = "auto",
) -> str: ...
