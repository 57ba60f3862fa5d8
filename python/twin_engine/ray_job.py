"""TWIN-V2's offline clustering job, sharded by user across a Ray cluster.

Input: an interaction log as Parquet, one file or a folder of files (a partitioned log, e.g.
``year=2015/part-0.parquet``; every ``*.parquet`` below the folder, in path order). Output:
one Parquet file of clusters per shard and a ``manifest.json`` naming them. Steps:

1. **Partition** (a Ray task per input file): read the file's user, item, time, play and
   duration columns; give each row its shard, ``splitmix64(user id) % shards``; return one
   table per shard (through Ray's object store) and the file's distinct item ids.
2. **Catalogue** (driver): the embeddings' item ids (``item_ids``; default: every item in the
   log, ascending, which is the dense order of a dataset ``twin import`` built from it and so
   of a model trained on that). Each row's item becomes its embedding row.
3. **Cluster** (a Ray task per shard): gather the shard's rows from every file, sort them by
   (user, time, file, row), so equal times keep the log's order as ``twin import`` does, and run
   the engine's batched clustering (:func:`twin_engine.cluster`) on whatever backend the worker
   has (``backend="auto"``: CUDA, a GPU through Vulkan, else the CPU). Each user's k-means is
   seeded by its user id, so its clusters do not depend on the shard it landed in: the sharded
   result equals one process's :func:`twin_engine.cluster_dataset` user for user, byte for byte
   (``python/tests/test_ray_job.py`` checks it).
4. **Write**: shard ``k`` goes to ``part-0000k.parquet`` (one row per cluster: ``user_id``,
   ``cluster`` (index within the user, ordered by newest member), ``item_id`` / ``item_row``,
   ``timestamp``, ``play_time``, ``completion``, ``size``, ``group``, ``members`` (positions in
   the user's history, oldest = 0)); then ``manifest.json`` (written last, atomically) lists
   every part with its users, behaviours, clusters, bytes and SHA-256, and the job's settings.

On an existing Ray cluster::

    python -m twin_engine.ray_job --address auto --log /shared/log/ --out /shared/clusters/ \\
        --model /shared/model.twm --shards 1024 --backend auto [--gpus-per-task 1]

Every node needs ``twin_engine`` installed (``pip install '.[ray]'``), and the log,
``--out`` and the model on a filesystem every node mounts at the same path (NFS, a mounted
bucket): the job reads and writes local paths. A shard is clustered in one task's memory: its
rows (40 bytes a behaviour) plus, at the peak, about 100 bytes a behaviour and 0.6 GB (measured;
the engine bounds its batches to 2^21 points): choose ``--shards`` so that a shard fits a worker
(PERF.md, "Python / Ray offline job").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

import twin_engine as te

try:  # Imported lazily by callers who only want the column maps; required to run the job.
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - the job itself reports it
    pa = pc = pq = None


@dataclass(frozen=True)
class Columns:
    """Which log columns hold what. ``duration`` may be a column name or a constant (MovieLens:
    the maximum rating, so completion = rating / 5). Times are seconds."""

    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    play: str = "play_time"
    duration: Union[str, float] = "duration"


#: MovieLens ``ratings`` (play time = rating, duration = 5), as ``twin import`` reads it.
MOVIELENS = Columns(user="userId", item="movieId", time="timestamp", play="rating", duration=5.0)


@dataclass
class JobConfig:
    shards: int = 8
    gamma: int = 20
    groups: int = 5
    seed: int = 0
    max_iter: int = 20
    cutoff: Optional[int] = None
    backend: str = "auto"
    #: CPU threads each cluster task asks Ray for (and gives the engine's thread pool).
    cpus_per_task: int = 1
    #: GPUs each cluster task asks Ray for: Ray shows a task only the GPUs it asked for, so on a
    #: GPU cluster set 1 (or a fraction, to share a GPU between tasks) with ``backend="auto"``.
    gpus_per_task: float = 0
    columns: Columns = field(default_factory=Columns)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mix of the user ids: shards stay balanced whatever the ids look like."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def shard_of(user_ids: np.ndarray, shards: int) -> np.ndarray:
    """The shard of each user id."""
    return (_splitmix64(user_ids) % np.uint64(shards)).astype(np.int64)


def log_files(path: str) -> List[str]:
    """The Parquet files of a log: the file itself, or every ``*.parquet`` below the folder,
    in path order (the log's order)."""
    if os.path.isfile(path):
        return [path]
    out = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        out.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".parquet") and not f.startswith((".", "_")))
    if not out:
        raise te.InvalidInputError(f"log = {path!r}: no *.parquet files found")
    return sorted(out)


def read_rows(path: str, file_index: int, cols: Columns) -> "pa.Table":
    """One log file's rows in the job's canonical columns (user u64, item u64, ts i64, play f32,
    dur f32, file u32, row u32)."""
    names = [cols.user, cols.item, cols.time, cols.play] + ([cols.duration] if isinstance(cols.duration, str) else [])
    schema_names = pq.read_schema(path).names
    missing = [n for n in names if n not in schema_names]
    if missing:
        raise te.InvalidInputError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(schema_names)})")
    t = pq.read_table(path, columns=names)
    n = t.num_rows

    def col(name: str, dtype: Any) -> np.ndarray:
        c = t.column(name)
        if c.null_count:
            i = int(np.flatnonzero(c.is_null().to_numpy(zero_copy_only=False))[0])
            raise te.InvalidInputError(f"{path}: row {i + 1}: {name} is null")
        a = c.to_numpy()
        if np.dtype(dtype).kind == "u" and a.dtype.kind == "i" and a.size and a.min() < 0:
            i = int(np.argmin(a))
            raise te.InvalidInputError(f"{path}: row {i + 1}: {name} = {a[i]} is negative")
        return a.astype(dtype, copy=False)

    dur = col(cols.duration, np.float32) if isinstance(cols.duration, str) else np.full(n, cols.duration, np.float32)
    return pa.table(
        {
            "user": col(cols.user, np.uint64),
            "item": col(cols.item, np.uint64),
            "ts": col(cols.time, np.int64),
            "play": col(cols.play, np.float32),
            "dur": dur,
            "file": np.full(n, file_index, np.uint32),
            "row": np.arange(n, dtype=np.uint32),
        }
    )


def partition_file(path: str, file_index: int, cfg: JobConfig) -> List[Any]:
    """Step 1 for one file: ``[distinct item ids, shard 0 table, ..., shard S-1 table]``."""
    t = read_rows(path, file_index, cfg.columns)
    shard = shard_of(t.column("user").to_numpy(), cfg.shards)
    order = np.argsort(shard, kind="stable")  # keeps the file's order within a shard
    bounds = np.searchsorted(shard[order], np.arange(cfg.shards + 1))
    t = t.take(pa.array(order))
    parts = [t.slice(int(bounds[k]), int(bounds[k + 1] - bounds[k])) for k in range(cfg.shards)]
    return [np.unique(t.column("item").to_numpy())] + parts


def cluster_rows(rows: "pa.Table", catalogue: np.ndarray, embeddings: np.ndarray, cfg: JobConfig) -> "pa.Table":
    """Step 3 on one shard's rows (any order): sorted per user by (time, file, row) and clustered;
    one output row per cluster."""
    if rows.num_rows == 0:
        return _empty_clusters()
    order = pc.sort_indices(rows, sort_keys=[("user", "ascending"), ("ts", "ascending"), ("file", "ascending"), ("row", "ascending")])
    rows = rows.take(order)
    user = rows.column("user").to_numpy()
    ext_item = rows.column("item").to_numpy()
    item = np.searchsorted(catalogue, ext_item)
    unknown = (item >= len(catalogue)) | (catalogue[np.minimum(item, len(catalogue) - 1)] != ext_item)
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise te.InvalidInputError(f"item id {ext_item[i]} (user {user[i]}) is not in the embeddings' catalogue ({len(catalogue)} items)")
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    offsets = np.r_[starts, len(user)].astype(np.uint64)
    keys = user[starts]
    res = te.cluster(
        offsets,
        item.astype(np.uint32),
        rows.column("ts").to_numpy(),
        rows.column("play").to_numpy(),
        rows.column("dur").to_numpy(),
        embeddings,
        user_keys=keys,
        cutoff=cfg.cutoff,
        gamma=cfg.gamma,
        groups=cfg.groups,
        seed=cfg.seed,
        max_iter=cfg.max_iter,
        backend=cfg.backend,
    )
    return clusters_table(res, keys, catalogue)


def clusters_table(res: Dict[str, Any], keys: np.ndarray, catalogue: np.ndarray) -> "pa.Table":
    """A :func:`twin_engine.cluster` result as the job's output table (one row per cluster)."""
    uo = res["user_offsets"].astype(np.int64)
    per_user = np.diff(uo)
    first = np.repeat(uo[:-1], per_user)
    mo = res["member_offsets"].astype(np.int64)
    return pa.table(
        {
            "user_id": np.repeat(keys, per_user).astype(np.uint64),
            "cluster": (np.arange(len(first)) - first).astype(np.uint32),
            "item_id": catalogue[res["item"]].astype(np.uint64),
            "item_row": res["item"],
            "timestamp": res["timestamp"],
            "play_time": res["play_time"],
            "completion": res["completion"],
            "size": res["size"],
            "group": res["group"],
            "members": pa.LargeListArray.from_arrays(pa.array(mo), pa.array(res["members"])),
        }
    )


def _empty_clusters() -> "pa.Table":
    return clusters_table(
        {
            "user_offsets": np.zeros(1, np.uint64),
            "member_offsets": np.zeros(1, np.uint64),
            "members": np.zeros(0, np.uint32),
            "item": np.zeros(0, np.uint32),
            "timestamp": np.zeros(0, np.int64),
            "play_time": np.zeros(0, np.float32),
            "completion": np.zeros(0, np.float32),
            "size": np.zeros(0, np.uint32),
            "group": np.zeros(0, np.uint8),
        },
        np.zeros(0, np.uint64),
        np.zeros(1, np.uint64),
    )


def write_atomic_parquet(table: "pa.Table", path: str) -> Dict[str, Any]:
    tmp = f"{path}.tmp-{os.getpid()}"
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    os.replace(tmp, path)
    return {"bytes": os.path.getsize(path), "sha256": digest}


def cluster_shard(shard: int, out_dir: str, catalogue: np.ndarray, embeddings: np.ndarray, cfg: JobConfig, *parts: "pa.Table") -> Dict[str, Any]:
    """Step 3 and 4 for one shard; returns its manifest entry."""
    t0, c0 = time.perf_counter(), time.process_time()
    rows = pa.concat_tables(parts) if parts else None
    table = cluster_rows(rows, catalogue, embeddings, cfg) if rows is not None else _empty_clusters()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    name = f"part-{shard:05d}.parquet"
    info = write_atomic_parquet(table, os.path.join(out_dir, name))
    return {
        "shard": shard,
        "file": name,
        "users": int(len(np.unique(rows.column("user").to_numpy()))) if rows is not None and rows.num_rows else 0,
        "behaviours": int(rows.num_rows) if rows is not None else 0,
        "clusters": int(table.num_rows),
        "cluster_seconds": seconds,
        "cluster_cpu_seconds": cpu_seconds,
        "worker_pid": os.getpid(),
        **info,
    }


def run(
    log: str,
    out_dir: str,
    *,
    embeddings: Optional[np.ndarray] = None,
    model: Optional[str] = None,
    item_ids: Optional[np.ndarray] = None,
    config: Optional[JobConfig] = None,
) -> Dict[str, Any]:
    """Runs the job on the Ray cluster this process is connected to (``ray.init`` first) and
    returns the manifest (also written to ``out_dir/manifest.json``).

    The item embeddings come from ``embeddings`` (``[n_items, dim]``) or a ``model`` file; their
    rows are the items ``item_ids`` (ascending external ids; default: every item in the log)."""
    import ray

    if pa is None:
        raise te.InvalidInputError("the Ray job needs pyarrow: pip install pyarrow")
    cfg = config or JobConfig()
    if cfg.shards < 1:
        raise te.InvalidInputError(f"shards = {cfg.shards}: must be at least 1")
    if (embeddings is None) == (model is None):
        raise te.InvalidInputError("give exactly one of embeddings= and model=")
    emb = te.item_embeddings(model) if model is not None else np.ascontiguousarray(embeddings, dtype=np.float32)
    files = log_files(log)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()

    partition = ray.remote(num_returns=cfg.shards + 1)(partition_file)
    # num_returns >= 2, so each call gives a list of refs: [items, shard 0, ..., shard S-1].
    refs = [partition.remote(f, i, cfg) for i, f in enumerate(files)]
    if item_ids is None:
        catalogue = np.unique(np.concatenate(_get_or_drain(ray, [r[0] for r in refs], refs)))
    else:
        catalogue = np.asarray(item_ids, dtype=np.uint64)
        if np.any(catalogue[1:] <= catalogue[:-1]):
            raise te.InvalidInputError("item_ids: must be strictly ascending (the dataset's dense item order)")
    if len(catalogue) != emb.shape[0]:
        raise te.IncompatibleError(f"embeddings have {emb.shape[0]} rows but the catalogue has {len(catalogue)} items")
    # Every shard task takes a slice of every file, so none starts before all partitions are done:
    # waiting here costs nothing and times the partition step.
    ray.wait([r[0] for r in refs], num_returns=len(refs), fetch_local=False)
    t_part = time.perf_counter()
    cat_ref, emb_ref = ray.put(catalogue), ray.put(emb)
    # The engine's thread pool gets the task's CPUs, no more (Ray runs one task per CPU).
    task = ray.remote(
        num_cpus=cfg.cpus_per_task, num_gpus=cfg.gpus_per_task, runtime_env={"env_vars": {"RAYON_NUM_THREADS": str(cfg.cpus_per_task)}}
    )(cluster_shard)
    shards = _get_or_drain(ray, [task.remote(k, out_dir, cat_ref, emb_ref, cfg, *[r[k + 1] for r in refs]) for k in range(cfg.shards)], refs)
    seconds = time.perf_counter() - t0
    manifest = {
        "format": "twin-engine clusters, one Parquet file per shard",
        "columns": ["user_id", "cluster", "item_id", "item_row", "timestamp", "play_time", "completion", "size", "group", "members"],
        "sharding": "splitmix64(user_id) % shards",
        "log": os.path.abspath(log),
        "input_files": len(files),
        "catalogue_items": int(len(catalogue)),
        "embedding_dim": int(emb.shape[1]),
        "config": {k: v for k, v in asdict(cfg).items() if k != "columns"} | {"columns": asdict(cfg.columns)},
        "shards": shards,
        "users": sum(s["users"] for s in shards),
        "behaviours": sum(s["behaviours"] for s in shards),
        "clusters": sum(s["clusters"] for s in shards),
        "seconds": seconds,
        "partition_seconds": t_part - t0,
        "cluster_task_seconds": sum(s["cluster_seconds"] for s in shards),
        "cluster_cpu_seconds": sum(s["cluster_cpu_seconds"] for s in shards),
        "workers": len({s["worker_pid"] for s in shards}),
    }
    tmp = os.path.join(out_dir, f".manifest.json.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, "manifest.json"))
    return manifest


def _get_or_drain(ray: Any, wanted: List[Any], refs: List[List[Any]]) -> List[Any]:
    """``ray.get(wanted)``; on a task's error, every partition result is fetched (and its error
    dropped) before the first error is raised, so Ray does not also report each failed result
    left unread as an unhandled error."""
    try:
        return ray.get(wanted)
    except Exception:
        for r in refs:
            for x in r:
                try:
                    ray.get(x)
                except Exception:
                    pass
        raise


def read_clusters(out_dir: str) -> "pa.Table":
    """Every shard the manifest names, as one table (checks each file's SHA-256)."""
    with open(os.path.join(out_dir, "manifest.json")) as f:
        m = json.load(f)
    tables = []
    for s in m["shards"]:
        p = os.path.join(out_dir, s["file"])
        with open(p, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != s["sha256"]:
                raise te.CorruptFileError(f"{p}: SHA-256 differs from the manifest's")
        tables.append(pq.read_table(p))
    return pa.concat_tables(tables)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m twin_engine.ray_job", description=__doc__.split("\n\n")[0])
    p.add_argument("--log", required=True, help="a Parquet file or a folder of them (a partitioned log)")
    p.add_argument("--out", required=True, help="folder for part-*.parquet and manifest.json")
    p.add_argument("--model", required=True, help="model file whose item embeddings are clustered")
    p.add_argument("--address", default=None, help="Ray cluster address (auto: the running cluster; default: start a local one)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local cluster")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--columns", choices=["default", "movielens"], default="default")
    p.add_argument("--gamma", type=int, default=20)
    p.add_argument("--groups", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cutoff", type=int, default=None)
    p.add_argument("--backend", default="auto", choices=list(te.BACKENDS))
    p.add_argument("--cpus-per-task", type=int, default=1)
    p.add_argument("--gpus-per-task", type=float, default=0, help="GPUs each cluster task asks for (1 on a GPU cluster)")
    a = p.parse_args(argv)
    import ray

    ray.init(address=a.address, num_cpus=a.num_cpus, include_dashboard=False, log_to_driver=False)
    cols = MOVIELENS if a.columns == "movielens" else Columns()
    cfg = JobConfig(
        shards=a.shards,
        gamma=a.gamma,
        groups=a.groups,
        seed=a.seed,
        cutoff=a.cutoff,
        backend=a.backend,
        cpus_per_task=a.cpus_per_task,
        gpus_per_task=a.gpus_per_task,
        columns=cols,
    )
    m = run(a.log, a.out, model=a.model, config=cfg)
    print(json.dumps({k: m[k] for k in ("users", "behaviours", "clusters", "seconds", "partition_seconds", "cluster_task_seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
