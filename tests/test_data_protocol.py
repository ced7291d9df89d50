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
    defaults = {"threshold": 4.0, "history_length": 3, "min_history": 0, "long_min_history": 1, "long_history_length": 4}
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


def earlier_positives(log, user, timestamp, threshold=4):
    """Item ids (0-based) of the user's positives strictly before `timestamp`, oldest first."""
    mine = log[(log.user == user) & (log.timestamp < timestamp) & (log.rating >= threshold)]
    return (mine.sort_values("timestamp", kind="stable").item.astype(int) - 1).tolist()


def test_test_long_gives_users_with_many_positives_their_long_history():
    log = random_log()
    data = build(log, history_length=3, long_min_history=5, long_history_length=6)
    users = data.info["id_maps"]["users"]
    test = data.interactions["test"].to_pandas()
    short, long = (data.interactions[s].to_pandas() for s in ("test_short", "test_long"))
    assert 0 < len(long) < len(test)
    # SHORT is every test row with n items; LONG the rows with >= 5 earlier positives, given 6.
    assert short.equals(test) and (short.history_item_ids.map(len) <= 3).all()
    for row in long.itertuples():
        earlier = earlier_positives(log, users[row.user_id], row.timestamp)
        assert len(earlier) >= 5
        assert sorted(row.history_item_ids) == sorted(earlier[-6:]) and len(row.history_item_ids) > 3
    left_out = test[~test.set_index(["user_id", "item_id"]).index.isin(long.set_index(["user_id", "item_id"]).index)]
    for row in left_out.itertuples():
        assert len(earlier_positives(log, users[row.user_id], row.timestamp)) < 5
    assert data.info["protocol"]["long_min_history"] == 5 and data.info["protocol"]["long_history_length"] == 6


def test_long_history_length_defaults_to_long_min_history_and_must_exceed_n():
    assert Protocol(history_length=5, long_min_history=10).long_history_length == 10
    with pytest.raises(ValueError, match="must exceed history_length"):
        Protocol(history_length=10, long_min_history=10)


def test_empty_test_long_is_refused_naming_the_option_and_counts(tmp_path):
    with pytest.raises(ValueError, match=r"test_long would be empty: no test row has long_min_history=50 .*the most is"):
        build(random_log(), long_min_history=50, long_history_length=50)


def test_the_median_short_long_threshold_is_refused_with_its_replacement():
    with pytest.raises(ValueError, match="replaced by long_min_history"):
        Protocol.with_overrides({}, {"short_long_threshold": 4})


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


# ------------------------------------------------------------------ split rules (step 6)
def rows_by_split(data):
    return {name: data.interactions[name].to_pandas() for name in ("train", "valid", "test")}


def staggered_log():
    """Users active in successive periods (user u rates at 100u + t): a global cut in time
    leaves the late users out of train, a per-user cut does not."""
    rows = []
    for user in range(10):
        for step in range(12):
            rows.append((user, (user * 7 + step) % 30 + 1, 5 if step % 3 else 2, 100 * user + step))
    return make_log(rows)


def test_split_defaults_to_global_time_and_is_recorded():
    assert Protocol().split == "global_time"
    default, explicit = build(random_log()), build(random_log(), split="global_time")
    for name in ("train", "valid", "test", "test_long"):
        assert default.interactions[name].to_pandas().equals(explicit.interactions[name].to_pandas())
    assert default.info["protocol"]["split"] == "global_time"
    assert build(random_log(), split="per_user_time").info["protocol"]["split"] == "per_user_time"


def test_unknown_split_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"split must be one of \['global_time', 'per_user_time'\], got 'random'"):
        Protocol(split="random")
    with pytest.raises(ValueError, match="split must be one of"):
        Protocol.with_overrides({}, {"split": "per_user"})


def test_per_user_time_puts_every_valid_and_test_user_in_train_in_time_order():
    log = random_log(num_users=25, per_user=20)
    data = build(log, split="per_user_time")
    parts = rows_by_split(data)
    train_users = set(parts["train"].user_id)
    assert set(parts["valid"].user_id) <= train_users and set(parts["test"].user_id) <= train_users
    for user, mine in pd.concat(parts, names=["split"]).reset_index(level=0).groupby("user_id"):
        times = {name: mine[mine.split == name].timestamp for name in ("train", "valid", "test")}
        # 20 rows each: 16 / 2 / 2, cut in time order (same-second rows may straddle a cut)
        assert [len(times[name]) for name in ("train", "valid", "test")] == [16, 2, 2]
        assert times["train"].max() <= times["valid"].min() <= times["valid"].max() <= times["test"].min()


def test_per_user_time_loses_and_duplicates_no_row_and_keeps_the_histories():
    log = random_log(num_users=25, per_user=20)
    columns = ["user_id", "item_id", "timestamp", "label"]
    per_user, global_ = build(log, split="per_user_time"), build(log, split="global_time")
    mine, theirs = all_rows(per_user), all_rows(global_)
    assert len(mine) == len(theirs) == len(log) and not mine.duplicated(["user_id", "item_id"]).any()
    key = ["user_id", "item_id"]
    merged = mine.merge(theirs, on=key, suffixes=("", "_global"))
    assert len(merged) == len(mine)
    assert (merged.timestamp == merged.timestamp_global).all() and (merged.label == merged.label_global).all()
    # histories cross the splits, exactly as under the global split
    assert (merged.history_item_ids.map(list) == merged.history_item_ids_global.map(list)).all()
    assert set(mine[columns].itertuples(index=False)) == set(theirs[columns].itertuples(index=False))
    # test_long is still the test rows with enough earlier positives, with long histories
    long = per_user.interactions["test_long"].to_pandas()
    assert set(long.set_index(key).index) <= set(per_user.interactions["test"].to_pandas().set_index(key).index)


def test_per_user_counts_rule_for_small_users():
    from modeling_userllm.data.protocol import per_user_counts

    train, valid, test = per_user_counts(np.array([1, 2, 3, 4, 5, 10, 14, 15, 20, 59]), (0.8, 0.1, 0.1))
    assert list(zip(train, valid, test)) == [
        (1, 0, 0), (1, 0, 1), (1, 1, 1), (2, 1, 1), (3, 1, 1), (8, 1, 1), (12, 1, 1), (11, 2, 2), (16, 2, 2), (47, 6, 6)
    ]
    # large valid/test fractions never leave a user without a training row
    train, valid, test = per_user_counts(np.array([3, 4, 10]), (0.1, 0.45, 0.45))
    assert (train >= 1).all() and (valid >= 1).all() and (test >= 1).all() and list(train + valid + test) == [3, 4, 10]


def test_per_user_time_small_users_through_the_protocol():
    # users with 1, 2 and 3 rows (min_history 0): train only; train + test; one of each
    log = make_log([(1, 1, 5, 1), (2, 2, 5, 1), (2, 3, 5, 2), (3, 4, 5, 1), (3, 5, 5, 2), (3, 6, 5, 3)])
    data = build(log, num_items=6, split="per_user_time", long_min_history=1, long_history_length=4)
    parts = rows_by_split(data)
    users = data.info["id_maps"]["users"]
    where = {name: sorted((users[r.user_id], r.item_id + 1) for r in frame.itertuples()) for name, frame in parts.items()}
    assert where == {"train": [("1", 1), ("2", 2), ("3", 4)], "valid": [("3", 5)], "test": [("2", 3), ("3", 6)]}


def test_the_two_split_rules_differ_where_users_are_active_in_different_periods():
    """Fails if the rules are swapped: the global cut leaves the late users out of train."""
    log = staggered_log()
    per_user, global_ = (rows_by_split(build(log, split=rule)) for rule in ("per_user_time", "global_time"))
    assert set(per_user["test"].user_id) == set(range(10)) and set(per_user["train"].user_id) == set(range(10))
    assert set(global_["test"].user_id) == {9} and 9 not in set(global_["train"].user_id)
    assert global_["train"].timestamp.max() <= global_["valid"].timestamp.min()
    assert global_["valid"].timestamp.max() <= global_["test"].timestamp.min()


def test_per_user_time_with_too_few_rows_names_the_rule():
    with pytest.raises(ValueError, match="too few for the per-user split .*a user needs 3 rows to reach valid"):
        build(make_log([(1, 1, 5, 1), (1, 2, 5, 2)]), num_items=2, split="per_user_time")
