"""Shared fixtures: the real MovieLens data (TWIN_DATA_DIR, as the Rust tests) and small
synthetic datasets and models made by the engine itself."""

import os
from pathlib import Path

import numpy as np
import pytest

import twin_engine as te


def movielens_ratings() -> Path:
    d = os.environ.get("TWIN_DATA_DIR")
    p = Path(d) / "ml-latest-small" / "ratings.csv" if d else None
    if p is None or not p.is_file():
        # CI sets TWIN_DATA_DIR; a missing data set there is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(f"TWIN_DATA_DIR={d!r} has no ml-latest-small/ratings.csv")
        pytest.skip("TWIN_DATA_DIR with ml-latest-small is not available")
    return p


@pytest.fixture(scope="session")
def ratings_csv() -> Path:
    return movielens_ratings()


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """(dataset, model path): 60 synthetic users with histories of 30..400 behaviours."""
    d = tmp_path_factory.mktemp("synth")
    ds = te.Dataset.generate(users=60, items=2_000, authors=200, topics=16, min_len=30, max_len=400, samples_per_user=8, seed=5)
    model = d / "init.twm"
    te.init_model(ds, model, seed=1)
    return ds, model


def rng():
    return np.random.default_rng(7)
