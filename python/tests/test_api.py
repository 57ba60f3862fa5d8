"""The Python API over the engine: datasets and logs (CSV and Parquet), scoring, clustering,
training, errors as typed exceptions, no copies of well-typed arrays, the GIL released."""

import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import twin_engine as te


# ---------------------------------------------------------------- backends, datasets, logs


def test_backends_lists_cpu_and_says_why_others_are_absent():
    b = {x["name"]: x for x in te.backends()}
    assert set(b) == {"cpu", "cuda", "wgpu"}
    assert b["cpu"]["available"] and "cpu" in b["cpu"]["detail"].lower()
    for name in ("cuda", "wgpu"):
        assert isinstance(b[name]["available"], bool)
        if not b[name]["available"]:
            assert name in b[name]["detail"]  # "backend cuda is unavailable: ..."


def test_movielens_parquet_written_by_pyarrow_reads_as_the_csv(ratings_csv, tmp_path):
    from_csv = te.read_log(ratings_csv)
    assert from_csv.source == "movielens" and from_csv.n_users > 600 and from_csv.n_behaviours > 100_000
    table = pacsv.read_csv(ratings_csv)
    pq.write_table(table, tmp_path / "ratings.parquet", row_group_size=10_000)
    # The Parquet has no movies.csv beside it; compare with the CSV read in the same situation.
    (tmp_path / "ratings.csv").write_bytes(ratings_csv.read_bytes())
    want = te.read_log(tmp_path / "ratings.csv").arrays()
    got = te.read_log(tmp_path / "ratings.parquet").arrays()
    assert want.keys() == got.keys()
    for k in want:
        assert want[k].dtype == got[k].dtype and np.array_equal(want[k], got[k]), k
    # Dataset.open takes the log or a saved dataset file alike.
    te.Dataset.open(tmp_path / "ratings.parquet").save(tmp_path / "ml.twd")
    back = te.Dataset.open(tmp_path / "ml.twd")
    assert back.n_behaviours == from_csv.n_behaviours and np.array_equal(back.arrays()["timestamp"], want["timestamp"])


def test_dataset_errors_are_typed_and_name_what_is_wrong(tmp_path):
    with pytest.raises(te.TwinIOError) as e:
        te.Dataset.open(tmp_path / "absent.csv")
    assert isinstance(e.value, OSError) and "absent.csv" in str(e.value)
    bad = tmp_path / "ratings.csv"
    bad.write_text("userId,movieId,rating,timestamp\n1,2,4.5,100\n1,3,9.5,101\n")
    with pytest.raises(te.InvalidInputError) as e:
        te.read_log(bad)
    assert isinstance(e.value, ValueError)
    assert "ratings.csv:3: rating: 9.5 is outside [0, 5]" in str(e.value)
    pqbad = tmp_path / "log.parquet"
    pq.write_table(pa.table({"userId": [1, 2], "movieId": [3, 4], "rating": [4.0, -1.0], "timestamp": [5, 6]}), pqbad)
    with pytest.raises(te.InvalidInputError, match=r"log.parquet:2: rating: -1 is outside"):
        te.read_log(pqbad)
    corrupt = tmp_path / "x.twd"
    corrupt.write_bytes(b"TWINDATA" + b"\x00" * 40)
    with pytest.raises(te.TwinError) as e:
        te.Dataset.open(corrupt)
    assert isinstance(e.value, (te.CorruptFileError, te.UnsupportedVersionError))


# ---------------------------------------------------------------- scoring


def _history(ds, u):
    a = ds.arrays()
    r = slice(int(a["user_offsets"][u]), int(a["user_offsets"][u + 1]))
    return {k: a[k][r] for k in ("item", "timestamp", "play_time", "duration")}, int(a["timestamp"][r][-1]) + 1


def test_engine_scores_lists_and_arrays_alike(synth):
    ds, model = synth
    eng = te.Engine(model, variant="twin", backend="cpu")
    assert eng.model_version == 1 and "cpu" in eng.backend.lower() and eng.variant == "twin"
    hist, t = _history(ds, 3)
    cands = np.array([5, 17, 1999], dtype=np.uint32)
    ctr = eng.score(t, cands, long=hist, short=hist)
    assert ctr.dtype == np.float32 and ctr.shape == (3,)
    assert np.all((ctr > 0) & (ctr < 1))
    as_lists = {k: v.tolist() for k, v in hist.items()}
    assert np.array_equal(eng.score(t, [5, 17, 1999], long=as_lists, short=as_lists), ctr)
    # The history matters: another user's history scores the same candidates differently.
    other, t2 = _history(ds, 4)
    assert not np.array_equal(eng.score(t, cands, long=other, short=other), ctr)


def test_well_typed_arrays_are_not_copied():
    a = np.arange(10, dtype=np.uint32)
    assert te._array("candidates", a, np.uint32) is a
    b = np.arange(10, dtype=np.int64)
    assert te._array("candidates", b, np.uint32) is not b  # converted once
    assert te._array("x", a[::2], np.uint32).flags.c_contiguous


def test_engine_errors_name_field_and_value(synth, tmp_path):
    ds, model = synth
    eng = te.Engine(model, variant="twin", backend="cpu")
    hist, t = _history(ds, 0)
    with pytest.raises(te.InvalidInputError, match=r"candidates\[1\] = 2000 is out of range \(vocabulary size 2000\)"):
        eng.score(t, [1, 2000], long=hist)
    with pytest.raises(te.InvalidInputError, match=r"candidates\[0\] = -3 is out of range"):
        eng.score(t, [-3], long=hist)
    with pytest.raises(te.InvalidInputError, match=r"candidates: request 0 is empty"):
        eng.score(t, [], long=hist)
    bad = dict(hist, play_time=np.where(np.arange(len(hist["item"])) == 2, np.nan, hist["play_time"]).astype(np.float32))
    with pytest.raises(te.InvalidInputError, match=r"long\[\]\.play_time\[2\] = NaN is not finite"):
        eng.score(t, [1], long=bad)
    with pytest.raises(te.InvalidInputError, match=r"long.timestamp: length 1 does not match long.item"):
        eng.score(t, [1], long=dict(hist, timestamp=[1]))
    with pytest.raises(te.InvalidInputError, match=r"long: missing play_time"):
        eng.score(t, [1], long={"item": [1], "timestamp": [1], "duration": [1.0]})
    with pytest.raises(te.InvalidInputError, match=r"variant = 'twin3'"):
        te.Engine(model, variant="twin3")
    with pytest.raises(te.BackendUnavailableError) if not _available("cuda") else _nothing():
        te.Engine(model, backend="cuda")
    # A bad swap is refused and the old model keeps serving.
    junk = tmp_path / "junk.twm"
    junk.write_bytes(b"not a model")
    with pytest.raises(te.CorruptFileError):
        eng.swap(junk)
    assert eng.model_version == 1
    assert eng.swap(model) == 2 and eng.model_version == 2


def _available(name):
    return next(b["available"] for b in te.backends() if b["name"] == name)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_score_releases_the_gil_and_threads_batch(synth):
    ds, model = synth
    eng = te.Engine(model, variant="twin", backend="cpu", max_wait_us=2_000)
    reqs = [_history(ds, u) for u in range(16)]
    want = [eng.score(t, [1, 2, 3], long=h, short=h) for h, t in reqs]
    got = [None] * len(reqs)

    def one(i):
        h, t = reqs[i]
        got[i] = eng.score(t, [1, 2, 3], long=h, short=h)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(reqs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_cluster_releases_the_gil(synth):
    """While one thread clusters, another Python thread keeps running: with the GIL held it
    could not count at all until the call returned."""
    ds, model = synth
    a = ds.arrays()
    emb = te.item_embeddings(model)
    args = (a["user_offsets"], a["item"], a["timestamp"], a["play_time"], a["duration"], emb)
    t0 = time.perf_counter()
    te.cluster(*args)
    one_call = time.perf_counter() - t0
    counts = []
    done = threading.Event()

    def work():
        for _ in range(max(1, int(0.5 / max(one_call, 1e-3)))):
            te.cluster(*args)
        done.set()

    th = threading.Thread(target=work)
    th.start()
    n = 0
    while not done.is_set():
        n += 1
    th.join()
    counts.append(n)
    assert n > 10_000, f"the counting thread ran only {n} times while clustering ({one_call:.3f} s a call)"


# ---------------------------------------------------------------- clustering


def test_cluster_arrays_equal_cluster_dataset_and_hold_the_invariants(synth):
    ds, model = synth
    a = ds.arrays()
    emb = te.item_embeddings(model)
    assert emb.dtype == np.float32 and emb.shape[0] == ds.n_items
    res = te.cluster(a["user_offsets"], a["item"], a["timestamp"], a["play_time"], a["duration"], emb, user_keys=a["user_ids"])
    ref = te.cluster_dataset(ds, emb, key="external")
    for k in ("user_offsets", "item", "timestamp", "play_time", "completion", "size", "group", "member_offsets", "members"):
        assert res[k].tobytes() == ref[k].tobytes(), k
    # SPEC §4.5: every behaviour in exactly one cluster, sizes in 1..gamma.
    assert res["size"].sum() == ds.n_behaviours and res["size"].min() >= 1 and res["size"].max() < 20
    assert len(res["user_offsets"]) == ds.n_users + 1
    uo, mo = res["user_offsets"], res["member_offsets"]
    for u in range(ds.n_users):
        t = int(a["user_offsets"][u + 1] - a["user_offsets"][u])
        members = np.concatenate([res["members"][mo[c] : mo[c + 1]] for c in range(uo[u], uo[u + 1])])
        assert np.array_equal(np.sort(members), np.arange(t))
    # Compression: fewer clusters than behaviours.
    assert len(res["size"]) < ds.n_behaviours / 2
    # TWIN-V2 scoring on a user's clusters.
    eng = te.Engine(model, variant="twin-v2", backend="cpu")
    ctr = eng.score(int(a["timestamp"].max()) + 1, [1, 2], long=te.user_clusters(res, 0))
    assert ctr.shape == (2,) and np.all(np.isfinite(ctr))


def test_a_users_clusters_depend_on_its_key_not_its_neighbours(synth):
    """What the sharded job relies on: the same user clustered alone or among others, under
    the same key, gets the same clusters; under another key, other ones."""
    ds, model = synth
    a = ds.arrays()
    emb = te.item_embeddings(model)
    full = te.cluster_dataset(ds, emb, key="external")
    odd = np.arange(1, ds.n_users, 2, dtype=np.uint32)
    part = te.cluster_dataset(ds, emb, users=odd, key="external")

    def user(res, slot):
        uo, mo = res["user_offsets"], res["member_offsets"]
        r = slice(int(uo[slot]), int(uo[slot + 1]))
        return b"".join(res[k][r].tobytes() for k in ("item", "timestamp", "size", "group")) + res["members"][mo[r.start] : mo[r.stop]].tobytes()

    for slot, u in enumerate(odd):
        assert user(part, slot) == user(full, int(u))
    # Under other keys (the synthetic ids are the indices: shift them), other clusters.
    shifted = te.cluster(a["user_offsets"], a["item"], a["timestamp"], a["play_time"], a["duration"], emb, user_keys=a["user_ids"] + 1_000)
    assert sum(user(shifted, u) != user(full, u) for u in range(ds.n_users)) > ds.n_users // 2


def test_cluster_errors_name_field_and_value(synth):
    ds, model = synth
    a = ds.arrays()
    emb = te.item_embeddings(model)
    base = [a["user_offsets"], a["item"], a["timestamp"], a["play_time"], a["duration"], emb]

    def call(i, v, **kw):
        args = list(base)
        args[i] = v
        return te.cluster(*args, **kw)

    ts = a["timestamp"].copy()
    ts[5] = ts[4] - 1000
    with pytest.raises(te.InvalidInputError, match=r"behaviours.timestamp\[5\] = .* earlier than the previous behaviour"):
        call(2, ts)
    item = a["item"].copy()
    item[7] = 2_000
    with pytest.raises(te.InvalidInputError, match=r"behaviours.item\[7\] = 2000 is out of range"):
        call(1, item)
    off = a["user_offsets"].copy()
    off[-1] += 1
    with pytest.raises(te.InvalidInputError, match=r"user_offsets: offsets are malformed"):
        call(0, off)
    bad = emb.copy()
    bad[3, 1] = np.inf
    with pytest.raises(te.InvalidInputError, match=r"inf is not finite"):
        call(5, bad)
    with pytest.raises(te.InvalidInputError, match=r"gamma\[0\] = 1: must be at least 2"):
        te.cluster(*base, gamma=1)
    with pytest.raises(te.InvalidInputError, match=r"item\[0\] = 1.5 is not an integer"):
        call(1, np.r_[1.5, a["item"][1:]])
    with pytest.raises(te.InvalidInputError, match=r"user_keys: length 3 does not match"):
        te.cluster(*base, user_keys=[1, 2, 3])
    with pytest.raises(te.InvalidInputError, match=r"embeddings: expected a 2-D array"):
        call(5, emb[0])


# ---------------------------------------------------------------- training


def test_train_then_evaluate_and_serve(synth, tmp_path):
    ds, _ = synth
    out, ck = tmp_path / "twin.twm", tmp_path / "twin.ckpt"
    rep = te.train(ds, out, "twin", epochs=1, batch=64, backend="cpu", checkpoint=ck, max_long=200)
    assert rep["variant"] == "twin" and len(rep["epochs"]) == 1 and len(rep["step_losses"]) > 0
    e = rep["epochs"][0]
    assert 0 <= e["test"]["auc"] <= 1 and e["train_loss"] > 0 and np.isfinite(e["train_loss"])
    ev = te.evaluate(ds, out, "twin", backend="cpu", max_long=200)
    # The same model on the same test split: the same metrics as the epoch report.
    assert ev["test_samples"] == e["test"]["samples"]
    assert abs(ev["auc"] - e["test"]["auc"]) < 1e-9 and abs(ev["logloss"] - e["test"]["logloss"]) < 1e-9
    eng = te.Engine(out, variant="twin", backend="cpu")
    hist, t = _history(ds, 1)
    assert eng.score(t, [1], long=hist, short=hist).shape == (1,)
    with pytest.raises(te.IncompatibleError, match="exists: pass resume=True"):
        te.train(ds, out, "twin", epochs=1, checkpoint=ck, backend="cpu")
    with pytest.raises(te.InvalidInputError, match=r"variant = 'bert'"):
        te.train(ds, out, "bert")
