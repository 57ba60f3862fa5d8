"""The offline clustering job sharded on a local Ray cluster with 2 workers: on MovieLens and on
a synthetic log, each a partitioned Parquet log, the sharded clusters equal one process's
(`twin_engine.cluster_dataset` over the dataset the Rust reader builds from the same log) for
every user, byte for byte. CI runs this file as its own step under `timeout`."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

import twin_engine as te  # noqa: E402
from twin_engine import ray_job  # noqa: E402

FIELDS = ("item_row", "timestamp", "play_time", "completion", "size", "group")


@pytest.fixture(scope="module")
def cluster_2_workers():
    # A local cluster: a head node with 2 CPUs, so 2 cluster tasks (workers) run at once.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    assert ray.cluster_resources().get("CPU") == 2
    yield
    ray.shutdown()


def per_user_bytes_sharded(table: pa.Table) -> dict:
    """user id -> the bytes of its clusters, in cluster order (the job's output)."""
    t = table.sort_by([("user_id", "ascending"), ("cluster", "ascending")])
    uid = t.column("user_id").to_numpy()
    cols = {k: t.column(k).to_numpy() for k in FIELDS}
    members = t.column("members")
    lens = np.asarray(pc.list_value_length(members).to_numpy(), dtype=np.uint64)
    flat = members.combine_chunks().flatten().to_numpy() if len(t) else np.zeros(0, np.uint32)
    starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]]) if len(uid) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(uid)]
    moff = np.r_[0, np.cumsum(lens)].astype(np.int64)
    out = {}
    for s, e in zip(starts, ends):
        parts = [cols[k][s:e].tobytes() for k in FIELDS] + [lens[s:e].tobytes(), flat[moff[s] : moff[e]].astype(np.uint32).tobytes()]
        out[int(uid[s])] = b"".join(parts)
    return out


def per_user_bytes_single(res: dict, user_ids: np.ndarray) -> dict:
    """The same bytes from one process's `cluster_dataset` result."""
    uo, mo = res["user_offsets"].astype(np.int64), res["member_offsets"].astype(np.int64)
    cols = {k: res["item" if k == "item_row" else k] for k in FIELDS}
    lens = np.diff(mo).astype(np.uint64)
    out = {}
    for slot, u in enumerate(res["users"]):
        s, e = uo[slot], uo[slot + 1]
        if s == e:
            continue  # a user with nothing to cluster has no rows in the job's output either
        parts = [cols[k][s:e].tobytes() for k in FIELDS] + [lens[s:e].tobytes(), res["members"][mo[s] : mo[e]].tobytes()]
        out[int(user_ids[u])] = b"".join(parts)
    return out


def assert_same(sharded: dict, single: dict):
    assert sharded.keys() == single.keys(), f"{len(sharded.keys() ^ single.keys())} users differ in presence"
    differ = [u for u in single if sharded[u] != single[u]]
    assert not differ, f"{len(differ)} of {len(single)} users' clusters differ, e.g. user {differ[0]}"


def check_manifest(out, manifest, n_users, n_behaviours, shards):
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f) == json.loads(json.dumps(manifest))
    assert len(manifest["shards"]) == shards
    assert manifest["users"] == n_users and manifest["behaviours"] == n_behaviours
    assert sum(1 for s in manifest["shards"] if s["users"] > 0) >= 2  # really sharded
    table = ray_job.read_clusters(out)  # checks every part's SHA-256
    assert table.num_rows == manifest["clusters"]
    return table


def test_movielens_sharded_equals_single_process(cluster_2_workers, ratings_csv, tmp_path):
    ds = te.read_log(ratings_csv)
    model = tmp_path / "ml.twm"
    te.init_model(ds, model, seed=3)
    # The log, partitioned by year as a daily/yearly log would be: a user's ratings spread over
    # many files, and equal timestamps stay together in their file's order.
    log = tmp_path / "log"
    t = pacsv.read_csv(ratings_csv)
    year = (t.column("timestamp").to_numpy() // (365 * 86_400)).astype(np.int64) + 1970
    for y in np.unique(year):
        d = log / f"year={y}"
        d.mkdir(parents=True)
        pq.write_table(t.filter(pa.array(year == y)), d / "part-0.parquet")
    assert len(ray_job.log_files(str(log))) > 10
    out = tmp_path / "clusters"
    cfg = ray_job.JobConfig(shards=4, backend="cpu", seed=11, columns=ray_job.MOVIELENS)
    manifest = ray_job.run(str(log), str(out), model=str(model), config=cfg)
    table = check_manifest(str(out), manifest, ds.n_users, ds.n_behaviours, 4)

    single = te.cluster_dataset(ds, te.item_embeddings(model), key="external", seed=11, backend="cpu")
    assert_same(per_user_bytes_sharded(table), per_user_bytes_single(single, ds.arrays()["user_ids"]))
    assert manifest["clusters"] == len(single["size"])


def test_synthetic_sharded_equals_single_process(cluster_2_workers, tmp_path):
    ds = te.Dataset.generate(users=300, items=5_000, authors=300, topics=32, min_len=20, max_len=1_500, samples_per_user=2, seed=9)
    model = tmp_path / "s.twm"
    te.init_model(ds, model, seed=2)
    a = ds.arrays()
    n = np.diff(a["user_offsets"]).astype(np.int64)
    # External ids unlike the dense indices (the generator's ids are 0..U-1), ascending as the
    # dataset's users are; the job keys each user's k-means by this id.
    uid = a["user_ids"] * 7_919 + 1_000_003
    rows = pa.table(
        {
            "user_id": np.repeat(uid, n),
            "item_id": a["item_external_id"][a["item"]],
            "timestamp": a["timestamp"],
            "play_time": a["play_time"],
            "duration": a["duration"],
        }
    )
    # Partitioned by month, in a folder tree, with a row order that is per file only.
    log = tmp_path / "log"
    month = a["timestamp"] // (30 * 86_400)
    for m in np.unique(month):
        d = log / f"month={m}"
        d.mkdir(parents=True)
        pq.write_table(rows.filter(pa.array(month == m)), d / "part-0.parquet", row_group_size=5_000)
    out = tmp_path / "clusters"
    emb = te.item_embeddings(model)
    cfg = ray_job.JobConfig(shards=5, backend="cpu")
    manifest = ray_job.run(str(log), str(out), embeddings=emb, item_ids=a["item_external_id"], config=cfg)
    table = check_manifest(str(out), manifest, ds.n_users, ds.n_behaviours, 5)
    sharded = per_user_bytes_sharded(table)
    hist = (a["user_offsets"], a["item"], a["timestamp"], a["play_time"], a["duration"], emb)
    assert_same(sharded, per_user_bytes_single(te.cluster(*hist, user_keys=uid), uid))
    # The check can fail: keyed by dataset index (what `twin cluster` does), users differ.
    by_index = per_user_bytes_single(te.cluster_dataset(ds, emb, key="index"), uid)
    assert sum(sharded[u] != by_index[u] for u in by_index) > len(by_index) // 2


def test_job_refuses_a_mismatched_catalogue(cluster_2_workers, tmp_path):
    log = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": [1, 1], "item_id": [5, 6], "timestamp": [1, 2], "play_time": [1.0, 2.0], "duration": [3.0, 3.0]}), log)
    with pytest.raises(te.IncompatibleError, match="embeddings have 3 rows but the catalogue has 2 items"):
        ray_job.run(str(log), str(tmp_path / "o"), embeddings=np.zeros((3, 4), np.float32), config=ray_job.JobConfig(shards=2, backend="cpu"))
    with pytest.raises(te.InvalidInputError, match="missing column"):
        ray_job.run(str(log), str(tmp_path / "o"), embeddings=np.zeros((2, 4), np.float32), config=ray_job.JobConfig(columns=ray_job.MOVIELENS))
