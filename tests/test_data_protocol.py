"""The protocol on small hand-written logs: labels, histories, filters, splits."""

import numpy as np
import pandas as pd
import pytest

from modeling_userllm.data import Protocol, RecommendationData, apply_protocol, dataset_statistics


def make_items(num_items):
    return pd.DataFrame(
        {
            "raw_id": [str(i) for i in range(1, num_items + 1)],
            "title": [f"Movie {i}" for i in range(1, num_items + 1)],
            "description": [None] * num_items,
            "poster_path": [None] * num_items,
        }
    )


def make_log(rows):
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).astype(
        {"user": str, "item": str, "rating": float, "timestamp": int}
    )


def random_log(num_users=20, num_items=30, per_user=15, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        for item in rng.choice(num_items, per_user, replace=False):
            rows.append((user, item + 1, rng.integers(1, 6), rng.integers(0, 50)))
    return make_log(rows)


def build(log, num_items=30, **protocol):
    defaults = {"threshold": 4.0, "history_length": 3, "min_history": 0}
    return apply_protocol(log, make_items(num_items), name="fixture", protocol=Protocol(**{**defaults, **protocol}))


def all_rows(data):
    return pd.concat([data.interactions[s].to_pandas() for s in ("train", "valid", "test")], ignore_index=True)


def test_history_holds_only_strictly_earlier_positives_oldest_first():
    log = random_log()
    data = build(log)
    raw = log.assign(user_id=log.user.astype(int), item_id=log.item.astype(int) - 1)
    users = data.info["id_maps"]["users"]
    for row in all_rows(data).itertuples():
        mine = raw[(raw.user == users[row.user_id]) & (raw.timestamp < row.timestamp) & (raw.rating >= 4)]
        expected = mine.sort_values("timestamp", kind="stable").item_id.tolist()[-3:]
        assert sorted(row.history_item_ids) == sorted(expected)
        times = [mine.set_index("item_id").timestamp[i] for i in row.history_item_ids]
        assert times == sorted(times)


def test_same_second_ratings_do_not_see_each_other():
    data = build(make_log([(1, 1, 5, 10), (1, 2, 5, 10), (1, 3, 5, 11), (1, 4, 5, 12), (1, 5, 1, 12)]), num_items=5, split_fractions=(0.6, 0.2, 0.2))
    rows = all_rows(data).sort_values(["timestamp", "item_id"])
    assert rows.history_item_ids.map(list).tolist() == [[], [], [0, 1], [0, 1, 2], [0, 1, 2]]


def test_label_is_rating_at_or_above_threshold():
    data = build(random_log(), threshold=3.5)
    rows = all_rows(data)
    assert ((rows.rating >= 3.5).astype(int) == rows.label).all()


def test_min_history_keeps_rows_with_enough_earlier_positives():
    data = build(random_log(), min_history=2)
    rows = all_rows(data)
    assert (rows.history_item_ids.map(len) >= 2).all()
    assert len(rows) < 20 * 15


def test_global_time_split_is_80_10_10_and_time_ordered():
    data = build(random_log())
    sizes = [len(data.interactions[s]) for s in ("train", "valid", "test")]
    assert sizes == [240, 30, 30]
    train, valid, test = (data.interactions[s].to_pandas() for s in ("train", "valid", "test"))
    assert train.timestamp.max() <= valid.timestamp.min() <= valid.timestamp.max() <= test.timestamp.min()


def test_short_and_long_partition_test_at_the_threshold():
    data = build(random_log(), short_long_threshold=4)
    test = data.interactions["test"].to_pandas()
    short, long = (data.interactions[s].to_pandas() for s in ("test_short", "test_long"))
    assert len(short) + len(long) == len(test)
    assert data.info["protocol"]["short_long_threshold"] == 4
    assert (short.history_item_ids.map(len) <= 3).all()


def test_duplicate_ratings_keep_the_latest_with_a_counted_warning():
    log = make_log([(1, 1, 5, 1), (1, 2, 1, 2), (1, 1, 2, 3), (1, 3, 5, 4), (1, 4, 5, 5), (1, 5, 5, 6)])
    with pytest.warns(UserWarning, match="1 duplicate"):
        data = build(log, num_items=5, split_fractions=(0.6, 0.2, 0.2))
    rows = all_rows(data)
    assert rows[rows.item_id == 0].rating.tolist() == [2.0]
    assert data.info["source"]["duplicate_ratings_dropped"] == 1


def test_filters_that_leave_nothing_raise():
    with pytest.raises(ValueError, match="min_history=50"):
        build(random_log(), min_history=50)


def test_unknown_items_are_dropped_with_a_warning():
    log = make_log([(1, 99, 5, 0)] + [(1, i, 5, i) for i in range(1, 11)])
    with pytest.warns(UserWarning, match="dropped 1 ratings"):
        data = build(log, num_items=10)
    assert data.info["source"]["unknown_item_ratings_dropped"] == 1


def test_unknown_protocol_parameter_raises():
    with pytest.raises(ValueError, match="unknown protocol parameters"):
        Protocol.with_overrides({}, {"treshold": 3})


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="split_fractions"):
        Protocol(split_fractions=(0.5, 0.1, 0.1))


def test_save_load_round_trip_keeps_everything(tmp_path):
    data = build(random_log())
    path = data.save(tmp_path / "prepared")
    loaded = RecommendationData.load(path)
    assert loaded.info == data.info
    assert loaded.interactions["test"].to_list() == data.interactions["test"].to_list()
    assert loaded.items.to_list() == data.items.to_list()
    assert dataset_statistics(loaded) == data.info["statistics"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_failed_save_leaves_no_partial_folder(tmp_path):
    data = build(random_log())
    data.info["not_json"] = object()
    with pytest.raises(TypeError):
        data.save(tmp_path / "prepared")
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_an_existing_folder(tmp_path):
    first, second = build(random_log(seed=0)), build(random_log(seed=1))
    first.save(tmp_path / "prepared")
    second.save(tmp_path / "prepared")
    assert RecommendationData.load(tmp_path / "prepared").info == second.info
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]
