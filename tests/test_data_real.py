"""Checks on the real data sets of ../shared/data (skipped where that folder is absent)."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modeling_userllm.data import load_collm, load_movielens_100k

SHARED_DATA = Path(os.environ.get("USERLLM_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "data"

requires_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA} (set USERLLM_SHARED)"
)


@pytest.fixture(scope="module")
def ml100k():
    return load_movielens_100k(SHARED_DATA / "ml-100k", min_history=0)


@requires_shared
def test_ml100k_has_943_users_1682_items_100000_ratings(ml100k):
    assert ml100k.num_users == 943 and ml100k.num_items == 1682
    assert ml100k.info["source"]["raw_ratings"] == 100_000
    assert sum(len(ml100k.interactions[s]) for s in ("train", "valid", "test")) == 100_000
    assert ml100k.info["source"]["missing_posters"] == 19


@requires_shared
def test_ml100k_histories_are_earlier_positives_only(ml100k):
    raw = pd.read_csv(SHARED_DATA / "ml-100k" / "u.data", sep="\t", names=["user", "item", "rating", "timestamp"])
    when = {(str(u), str(i)): (t, r) for u, i, r, t in raw.itertuples(index=False)}
    users, items = ml100k.info["id_maps"]["users"], ml100k.info["id_maps"]["items"]
    for split in ("train", "valid", "test"):
        table = ml100k.interactions[split].select_columns(["user_id", "timestamp", "history_item_ids"])
        for row in table.to_list():
            for past in row["history_item_ids"]:
                time, rating = when[(users[row["user_id"]], items[past])]
                assert time < row["timestamp"] and rating >= 4


@requires_shared
def test_ml100k_no_test_timestamp_precedes_a_train_timestamp(ml100k):
    def timestamps(split):
        return np.asarray(ml100k.interactions[split].data.table["timestamp"])

    train_max = timestamps("train").max()
    assert timestamps("valid").min() >= train_max
    assert timestamps("test").min() >= train_max


@requires_shared
def test_collm_keeps_its_published_split():
    data = load_collm(SHARED_DATA / "collm-ml-1m")
    assert [len(data.interactions[s]) for s in ("train", "valid", "test")] == [33_891, 10_401, 7_331]
    published = pd.read_parquet(SHARED_DATA / "collm-ml-1m" / "test.parquet")
    items = np.array(data.info["id_maps"]["items"])
    first = data.interactions["test"][0]
    assert items[first["item_id"]] == str(published.iid[0])
    expected = [str(raw) for raw in published.his[0] if raw != 0][-10:]
    assert items[first["history_item_ids"]].tolist() == expected
    assert data.items[first["item_id"]]["title"] == published.title[0]
