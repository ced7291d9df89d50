"""The evaluation protocol shared by the builders (DESIGN.md "Data protocol", docs/DATA.md): `apply_protocol`.

1. Ratings of items absent from the item table are dropped; 2. duplicate (user, item) ratings keep the
   latest (ties: the last in the file). Both counted and warned. Then an optional `Selection` (`selection.py`).
3. `label = rating >= threshold`.
4. History: the `history_length` most recent positives of the user strictly earlier in time (ratings at
   the same second never see each other), oldest first, computed on the whole log before any filter.
5. A rating is kept only when its user has `min_history` positives strictly before it.
6. Split (`SPLIT_RULES`): `global_time`: rows sorted by (timestamp, user, item) cut by `split_fractions`;
   `per_user_time`: each user's rows cut on their own (`per_user_counts`), so every user with a valid or
   test row has a training row. Histories do not depend on the split.
7. `test_short` is the test split; `test_long` its rows whose user has `long_min_history` earlier
   positives, given their `long_history_length` most recent ones (Table 5).

Users get contiguous ids over every user of the deduplicated log (natural order of raw ids), items over
the item table, so the id spaces do not depend on the filters.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import Dataset, DatasetDict

from .common import INTERACTION_FEATURES, ITEM_FEATURES, SPLITS, RecommendationData, dataset_statistics
from .selection import Selection, select, split_options

logger = logging.getLogger(__name__)

SPLIT_RULES = ("global_time", "per_user_time")


@dataclass(frozen=True)
class Protocol:
    """Parameters of the protocol (module docstring); every builder takes them as keyword overrides.

    Attributes:
        threshold: ratings `>= threshold` are positive.
        history_length: n, the most recent positive items kept as history.
        min_history: rows whose user has fewer earlier positives are dropped.
        split_fractions: (train, valid, test) fractions of all rows or of each user's rows.
        long_min_history: earlier positives a test row needs to be in `test_long` (paper: 10 movie, 20 netflix).
        long_history_length: history items of `test_long` rows (None: `long_min_history`); > `history_length`.
        split: one of `SPLIT_RULES`.
    """

    threshold: float = 4.0
    history_length: int = 10
    min_history: int = 10
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    long_min_history: int = 20
    long_history_length: int | None = None
    split: str = "global_time"

    def __post_init__(self) -> None:
        if self.split not in SPLIT_RULES:
            raise ValueError(f"split must be one of {list(SPLIT_RULES)}, got {self.split!r}")
        fractions = tuple(float(f) for f in self.split_fractions)
        object.__setattr__(self, "split_fractions", fractions)
        if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be 3 positive numbers summing to 1, got {fractions}")
        if self.history_length < 1:
            raise ValueError(f"history_length must be >= 1, got {self.history_length}")
        if self.min_history < 0:
            raise ValueError(f"min_history must be >= 0, got {self.min_history}")
        if self.long_history_length is None:
            object.__setattr__(self, "long_history_length", self.long_min_history)
        if self.long_min_history < 1:
            raise ValueError(f"long_min_history must be >= 1, got {self.long_min_history}")
        if self.long_history_length <= self.history_length:
            raise ValueError(
                f"long_history_length ({self.long_history_length}) must exceed history_length "
                f"({self.history_length}): test_long would give the model no longer history"
            )

    @classmethod
    def with_overrides(cls, defaults: dict[str, Any], overrides: dict[str, Any]) -> Protocol:
        """A protocol from a data set's defaults and user overrides; a `ValueError` names an unknown one."""
        known = {field.name for field in dataclasses.fields(cls)}
        if "short_long_threshold" in overrides:
            raise ValueError(
                "short_long_threshold (a median split of the test rows) was replaced by "
                "long_min_history and long_history_length (the paper's Table 5; docs/DATA.md)"
            )
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown protocol parameters {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{**defaults, **overrides})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["split_fractions"] = list(self.split_fractions)
        return values


def natural_order(raw_ids: pd.Series | np.ndarray) -> list[str]:
    """Unique raw ids as strings, numerically sorted when all are integers."""
    unique = pd.unique(pd.Series(raw_ids).astype(str))
    if all(value.isdigit() for value in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def positive_histories(
    user_ids: np.ndarray, item_ids: np.ndarray, labels: np.ndarray, timestamps: np.ndarray, n: int
) -> tuple[np.ndarray, pa.ListArray]:
    """Per row of `(num_rows,)` arrays sorted by (user, timestamp): `counts`, the number of positives of its
    user strictly earlier in time, and `histories`, a list array of the last `min(n, count)`, oldest first."""
    num_rows = len(user_ids)
    positives_before = np.concatenate([[0], np.cumsum(labels, dtype=np.int64)])  # (num_rows + 1,)
    rows = np.arange(num_rows)
    # Rows of one user at one timestamp must not see each other: use the tie group's start.
    group_start = np.r_[True, (user_ids[1:] != user_ids[:-1]) | (timestamps[1:] != timestamps[:-1])]
    user_start = np.r_[True, user_ids[1:] != user_ids[:-1]]
    first_of_group = np.maximum.accumulate(np.where(group_start, rows, 0))
    first_of_user = np.maximum.accumulate(np.where(user_start, rows, 0))
    end = positives_before[first_of_group]  # index into the positive items, exclusive
    counts = end - positives_before[first_of_user]
    lengths = np.minimum(counts, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    positive_items = item_ids[labels.astype(bool)]
    values = positive_items[np.repeat(end - lengths, lengths) + within]
    histories = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int64()))
    return counts, histories


def per_user_counts(num_rows: np.ndarray, fractions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, valid and test row counts of users with `num_rows` rows each (`per_user_time`).

    With k rows: k = 1 -> (1, 0, 0); k = 2 -> (1, 0, 1); k >= 3 -> test = clip(round(k * fractions[2]), 1,
    k - 2), valid = clip(round(k * fractions[1]), 1, k - 1 - test), train = the rest; round = half up.
    """
    k = np.asarray(num_rows, dtype=np.int64)
    big = k >= 3
    safe = np.maximum(k, 3)  # bounds of the k >= 3 rule, valid for every entry
    test = np.clip(np.floor(safe * fractions[2] + 0.5).astype(np.int64), 1, safe - 2)
    valid = np.clip(np.floor(safe * fractions[1] + 0.5).astype(np.int64), 1, safe - 1 - test)
    test = np.where(big, test, (k == 2).astype(np.int64))
    valid = np.where(big, valid, 0)
    return k - valid - test, valid, test


def split_rows(rule: str, timestamps: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray,
               fractions) -> list[np.ndarray]:
    """Row indices of train, valid and test, each in global time order (timestamp, user, item), under `rule`:
    `global_time` cuts that order by `fractions`, `per_user_time` each user's rows (by time, then item) in the
    counts of `per_user_counts`. A `ValueError` if a split is empty."""
    order = np.lexsort((item_ids, user_ids, timestamps))
    if rule == "global_time":
        train_end = int(round(len(order) * fractions[0]))
        valid_end = int(round(len(order) * (fractions[0] + fractions[1])))
        parts = [order[:train_end], order[train_end:valid_end], order[valid_end:]]
    else:
        by_user = np.lexsort((item_ids, timestamps, user_ids))
        sorted_users = user_ids[by_user]
        starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
        sizes = np.diff(np.r_[starts, len(by_user)])
        train, valid, _ = per_user_counts(sizes, fractions)
        rank = np.arange(len(by_user)) - np.repeat(starts, sizes)  # position within its user
        assignment = np.empty(len(by_user), dtype=np.int64)
        train_end, valid_end = np.repeat(train, sizes), np.repeat(train + valid, sizes)
        assignment[by_user] = np.where(rank < train_end, 0, np.where(rank < valid_end, 1, 2))
        parts = [order[assignment[order] == index] for index in range(3)]
    if any(len(part) == 0 for part in parts):
        per_user = rule == "per_user_time"
        raise ValueError(f"{len(order)} interactions are too few for the {'per-user ' * per_user}split {tuple(fractions)}: "
                         f"a split is empty (sizes {[len(part) for part in parts]}"
                         f"{'; a user needs 3 rows to reach valid, 2 to reach test' * per_user})")
    return parts


def split_interactions(ratings: pd.DataFrame, item_raw_ids: list[str],
                       protocol: Protocol) -> tuple[dict[str, pa.Table], list[str]]:
    """Steps 3-7 on a rating log with one rating per (user, item).

    Args:
        ratings: `user`, `item` (raw ids of `item_raw_ids`), `rating` (float), `timestamp` (int unix seconds), extras.
        item_raw_ids: raw id of each item_id.

    Returns:
        Split name -> arrow table (interaction columns, `history_count`, the extras; `test_long` with its long
        histories), and the raw id of each user_id.

    Raises:
        ValueError: nothing is left after the filters, or `test_long` would be empty.
    """
    users = natural_order(ratings["user"])
    user_ids = pd.Index(users).get_indexer(ratings["user"].astype(str)).astype(np.int64)
    item_ids = pd.Index(item_raw_ids).get_indexer(ratings["item"].astype(str)).astype(np.int64)
    timestamps = ratings["timestamp"].to_numpy(np.int64)
    order = np.lexsort((timestamps, user_ids))
    user_ids, item_ids, timestamps = user_ids[order], item_ids[order], timestamps[order]
    ratings = ratings.iloc[order].reset_index(drop=True)
    rating_values = ratings["rating"].to_numpy(np.float32)
    labels = (rating_values >= protocol.threshold).astype(np.int64)
    counts, histories = positive_histories(user_ids, item_ids, labels, timestamps, protocol.history_length)
    _, long_histories = positive_histories(user_ids, item_ids, labels, timestamps, protocol.long_history_length)
    extras = ratings.drop(columns=["user", "item", "rating", "timestamp"])
    table = pa.table({
        "user_id": user_ids, "item_id": item_ids, "rating": rating_values, "label": labels, "timestamp": timestamps,
        "history_item_ids": histories, "history_count": counts, "long_history_item_ids": long_histories,
        **{name: extras[name].to_numpy() for name in extras.columns},
    })
    kept = np.flatnonzero(counts >= protocol.min_history)
    if len(kept) == 0:
        raise ValueError(f"no interaction has min_history={protocol.min_history} earlier positives "
                         f"(threshold={protocol.threshold}); lower min_history or threshold")
    table = table.take(kept)
    parts = split_rows(protocol.split, timestamps[kept], user_ids[kept], item_ids[kept], protocol.split_fractions)
    tables = {name: table.take(part) for name, part in zip(("train", "valid", "test"), parts)}
    test_counts = tables["test"]["history_count"].to_numpy()
    long = test_counts >= protocol.long_min_history
    if not long.any():
        raise ValueError(
            f"test_long would be empty: no test row has long_min_history={protocol.long_min_history} "
            f"earlier positives (the most is {int(test_counts.max())}, over {len(test_counts)} test rows); "
            "lower long_min_history"
        )
    tables["test_short"] = tables["test"]
    test_long = tables["test"].filter(pa.array(long))
    column = test_long.schema.get_field_index("history_item_ids")
    tables["test_long"] = test_long.set_column(column, "history_item_ids", test_long["long_history_item_ids"])
    return tables, users


def interactions_from_tables(tables: dict[str, pa.Table]) -> DatasetDict:
    """Selects and casts the common interaction columns of each split."""
    columns = list(INTERACTION_FEATURES)
    return DatasetDict({name: Dataset(tables[name].select(columns).cast(INTERACTION_FEATURES.arrow_schema)) for name in SPLITS})


def item_table(items: pd.DataFrame) -> Dataset:
    """The item table from a frame with `raw_id`, `title`, `description`, `poster_path` (blank or NaN: None)."""

    def none_if_blank(column: pd.Series) -> list[str | None]:
        return [value if isinstance(value, str) and value.strip() else None for value in column]

    frame = pd.DataFrame({
        "item_id": np.arange(len(items), dtype=np.int64), "raw_id": items["raw_id"].astype(str).to_numpy(),
        "title": items["title"].astype(str).to_numpy(), "description": none_if_blank(items["description"]),
        "poster_path": none_if_blank(items["poster_path"]),
    })
    return Dataset(pa.Table.from_pandas(frame, schema=ITEM_FEATURES.arrow_schema, preserve_index=False))


def apply_protocol(ratings: pd.DataFrame, items: pd.DataFrame, *, name: str, protocol: Protocol,
                   selection: Selection | None = None, notes: dict[str, Any] | None = None) -> RecommendationData:
    """The data set (statistics in `info["statistics"]`) from a raw rating log and an item frame.

    Args:
        ratings: `user`, `item`, `rating`, `timestamp` (see `split_interactions`).
        items: `(num_items,)` frame with `raw_id`, `title`, `description`, `poster_path`.
        protocol: stored in `info["protocol"]`.
        selection: the subset to keep; its options and counts go to `info["selection"]`.
        notes: builder facts stored in `info["source"]` (files, raw counts, missing posters).
    """
    ratings, unknown_items, duplicates = _known_and_latest_ratings(ratings, set(items["raw_id"].astype(str)))
    selection = selection or Selection()
    counts = None
    if not selection.is_identity:
        ratings, items, counts = select(ratings, items, selection, threshold=protocol.threshold, min_history=protocol.min_history)
    item_raw_ids = items["raw_id"].astype(str).tolist()
    tables, users = split_interactions(ratings, item_raw_ids, protocol)
    info = {
        "name": name,
        "protocol": protocol.to_dict(),
        "id_maps": {"users": users, "items": item_raw_ids},
        "source": {**(notes or {}), "duplicate_ratings_dropped": duplicates, "unknown_item_ratings_dropped": unknown_items},
    }
    if counts is not None:
        info["selection"] = {**dataclasses.asdict(selection), "counts": counts}
    data = RecommendationData(interactions_from_tables(tables), item_table(items), info)
    data.info["statistics"] = dataset_statistics(data)
    return data


def build_data_set(name: str, data_dir: Path, ratings: pd.DataFrame, items: pd.DataFrame, defaults: dict[str, Any],
                   options: dict[str, Any], *, files: dict[str, Any] | None = None, **notes: Any) -> RecommendationData:
    """A raw-file builder's last step: `apply_protocol` with the builder's `defaults` overridden by `options`
    (protocol and selection keys), and `info["source"]` holding `data_dir`, `files`, the raw counts and `notes`."""
    protocol, selection = split_options(options)
    if notes.get("missing_posters"):
        logger.info("%d of %d movies have no poster", notes["missing_posters"], len(items))
    source = {"data_dir": str(Path(data_dir).resolve()), **(files or {}), "raw_ratings": len(ratings),
              "raw_users": int(ratings["user"].nunique()), "raw_items": len(items), **notes}
    return apply_protocol(ratings, items, name=name, protocol=Protocol.with_overrides(defaults, protocol),
                          selection=selection, notes=source)


def _known_and_latest_ratings(ratings: pd.DataFrame, item_raw_ids: set) -> tuple[pd.DataFrame, int, int]:
    """Steps 1-2: the latest rating of each (user, item) of the item table and the counts dropped, each warned at
    the caller of `apply_protocol`; a `ValueError` when none is left."""
    known = ratings["item"].isin(item_raw_ids)
    if unknown_items := int((~known).sum()):
        warnings.warn(f"dropped {unknown_items} ratings of items absent from the item table", stacklevel=3)
    ratings = ratings[known].sort_values("timestamp", kind="stable").drop_duplicates(["user", "item"], keep="last")
    if duplicates := int(known.sum()) - len(ratings):
        warnings.warn(f"{duplicates} duplicate (user, item) ratings: kept the latest of each", stacklevel=3)
    if ratings.empty:
        raise ValueError("no ratings left once items without an item-table entry are dropped")
    return ratings, unknown_items, duplicates
