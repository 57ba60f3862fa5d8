"""Users/s of the sharded clustering job (twin_engine.ray_job) on this machine: one process with
one engine thread, then a local Ray cluster of 1 and of 2 workers, on the same synthetic
partitioned Parquet log. Prints one JSON line per run and the bytes read and written, the
inputs of PERF.md's arithmetic for 10^8 users.

Each configuration runs once to warm up, then --repeats times; the line gives the fastest wall
time (on a shared machine, the run least disturbed by others) and the median, the CPU seconds
the cluster tasks used (users per CPU-second does not depend on what else the machine runs),
and the load average around the runs.

    python python/bench/ray_scaling.py [--users 400] [--min-len 500] [--max-len 8000] [--shards 8] [--repeats 3]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import twin_engine as te
from twin_engine import ray_job

SINGLE = """
import sys, time, numpy as np, twin_engine as te
ds = te.Dataset.open(sys.argv[1]); emb = np.load(sys.argv[2])
te.cluster_dataset(ds, emb, users=np.arange(min(8, ds.n_users), dtype=np.uint32), backend="cpu")  # warm
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); te.cluster_dataset(ds, emb, backend="cpu"); print(time.perf_counter() - t0)
"""


def write_log(ds, folder):
    a = ds.arrays()
    n = np.diff(a["user_offsets"]).astype(np.int64)
    rows = pa.table(
        {
            "user_id": np.repeat(a["user_ids"] * 7_919 + 1_000_003, n),
            "item_id": a["item_external_id"][a["item"]],
            "timestamp": a["timestamp"],
            "play_time": a["play_time"],
            "duration": a["duration"],
        }
    )
    month = a["timestamp"] // (30 * 86_400)
    for m in np.unique(month):
        d = os.path.join(folder, f"month={m}")
        os.makedirs(d)
        pq.write_table(rows.filter(pa.array(month == m)), os.path.join(d, "part-0.parquet"))
    return sum(os.path.getsize(f) for f in ray_job.log_files(folder))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--min-len", type=int, default=500)
    p.add_argument("--max-len", type=int, default=8_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    import ray

    tmp = tempfile.mkdtemp(prefix="twin-ray-bench-")
    ds = te.Dataset.generate(users=a.users, items=50_000, authors=2_000, topics=64, min_len=a.min_len, max_len=a.max_len, samples_per_user=1, seed=4)
    model = os.path.join(tmp, "m.twm")
    te.init_model(ds, model, seed=1)
    emb = te.item_embeddings(model)
    in_bytes = write_log(ds, os.path.join(tmp, "log"))
    info = {"users": ds.n_users, "behaviours": ds.n_behaviours, "mean_len": ds.n_behaviours / ds.n_users, "log_bytes": in_bytes, "cpus": os.cpu_count()}
    print(json.dumps(info), flush=True)

    # One process, one engine thread: the engine's own rate without Ray.
    ds.save(os.path.join(tmp, "d.twd"))
    np.save(os.path.join(tmp, "emb.npy"), emb)
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    load0 = os.getloadavg()[0]
    out = subprocess.check_output([sys.executable, "-c", SINGLE, os.path.join(tmp, "d.twd"), os.path.join(tmp, "emb.npy"), str(a.repeats)], env=env)
    secs = sorted(float(x) for x in out.split())
    print(
        json.dumps(
            {
                "run": "single process, 1 thread",
                "seconds_best": secs[0],
                "seconds_median": secs[len(secs) // 2],
                "users_per_s": ds.n_users / secs[0],
                "load": [load0, os.getloadavg()[0]],
            }
        ),
        flush=True,
    )

    item_ids = ds.arrays()["item_external_id"]
    for workers in (1, 2):
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        cfg = ray_job.JobConfig(shards=a.shards, backend="cpu")
        ray_job.run(os.path.join(tmp, "log"), os.path.join(tmp, f"warm{workers}"), embeddings=emb, item_ids=item_ids, config=cfg)
        load0, runs = os.getloadavg()[0], []
        for r in range(a.repeats):
            t0 = time.perf_counter()
            m = ray_job.run(os.path.join(tmp, "log"), os.path.join(tmp, f"out{workers}-{r}"), embeddings=emb, item_ids=item_ids, config=cfg)
            runs.append((time.perf_counter() - t0, m))
        ray.shutdown()
        runs.sort(key=lambda x: x[0])
        wall, m = runs[0]
        print(
            json.dumps(
                {
                    "run": f"ray, {workers} worker(s), {a.shards} shards",
                    "seconds_best": wall,
                    "seconds_median": runs[len(runs) // 2][0],
                    "users_per_s": ds.n_users / wall,
                    "users_per_s_per_worker": ds.n_users / wall / workers,
                    "partition_seconds": m["partition_seconds"],
                    "cluster_task_seconds": m["cluster_task_seconds"],
                    "cluster_cpu_seconds": m["cluster_cpu_seconds"],
                    "users_per_cpu_s": ds.n_users / m["cluster_cpu_seconds"],
                    "worker_processes": m["workers"],
                    "clusters": m["clusters"],
                    "out_bytes": sum(s["bytes"] for s in m["shards"]),
                    "load": [load0, os.getloadavg()[0]],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
