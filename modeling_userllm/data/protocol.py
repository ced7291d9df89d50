"""The evaluation protocol shared by the builders (DESIGN.md, "Data protocol").

From a raw rating log to `RecommendationData`:

1. Ratings of items absent from the item table are dropped (counted, warned).
2. Duplicate (user, item) ratings keep the latest one (counted, warned); ties in time keep
   the one that comes last in the file.
3. `label = 1` when `rating >= threshold`, else 0.
4. History of a rating: the `history_length` most recent *positive* items of that user with
   a timestamp strictly earlier than the rating's, oldest first. Ratings at the same second
   never see each other. It is computed on the whole log, before any filter, so a history
   may hold items whose own rows were filtered out.
5. Minimum history: a rating is kept only when its user has at least `min_history`
   positive ratings strictly before it (the paper's "users with >= n history
   interactions", applied at the time of each interaction so that no kept row has a
   shorter history than the model was promised).
6. Global time split of the kept rows: sorted by (timestamp, user, item), the first
   `split_fractions[0]` go to train, the next `split_fractions[1]` to valid, the rest to
   test. Hence no valid/test timestamp precedes a train timestamp.
7. `test_short` / `test_long` (the paper's Table 5 compares users with short and long
   histories): a test row's *history count* is the number of positive ratings its user
   has strictly before it, before truncation to `history_length`. Rows with a count
   `<= short_long_threshold` form `test_short`, the others `test_long`. The default
   threshold is the median count over the test rows, which halves the test split; the
   resolved value is stored in `info["protocol"]`.

Users get contiguous ids over every user of the deduplicated log (in natural order of
their raw ids), items over the item table, so the id spaces do not depend on the filters.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import Dataset, DatasetDict

from .common import INTERACTION_FEATURES, ITEM_FEATURES, SPLITS, RecommendationData
from .statistics import dataset_statistics


@dataclass(frozen=True)
class Protocol:
    """Parameters of the protocol; every builder accepts them as keyword overrides.

    Attributes:
        threshold: ratings `>= threshold` are positive (label 1).
        history_length: n, the number of most recent positive items kept as history.
        min_history: rows whose user has fewer earlier positives are dropped.
        split_fractions: (train, valid, test) fractions of the global time order.
        short_long_threshold: history count at or below which a test row is "short";
            None = the median over the test rows.
    """

    threshold: float = 4.0
    history_length: int = 10
    min_history: int = 10
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    short_long_threshold: int | None = None

    def __post_init__(self) -> None:
        fractions = tuple(float(f) for f in self.split_fractions)
        object.__setattr__(self, "split_fractions", fractions)
        if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be 3 positive numbers summing to 1, got {fractions}")
        if self.history_length < 1:
            raise ValueError(f"history_length must be >= 1, got {self.history_length}")
        if self.min_history < 0:
            raise ValueError(f"min_history must be >= 0, got {self.min_history}")

    @classmethod
    def with_overrides(cls, defaults: dict[str, Any], overrides: dict[str, Any]) -> Protocol:
        """Builds a protocol from a data set's defaults and user overrides.

        Raises:
            ValueError: an override is not a protocol parameter.
        """
        known = {field.name for field in dataclasses.fields(cls)}
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


def drop_unknown_items(ratings: pd.DataFrame, known_items: set[str]) -> tuple[pd.DataFrame, int]:
    """Removes ratings whose `item` is not in `known_items`; returns (kept, dropped count)."""
    known = ratings["item"].isin(known_items)
    return ratings[known], int((~known).sum())


def keep_latest_ratings(ratings: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keeps the latest rating of each (user, item); returns (kept, dropped count)."""
    ordered = ratings.sort_values("timestamp", kind="stable")
    kept = ordered.drop_duplicates(["user", "item"], keep="last")
    return kept, len(ratings) - len(kept)


def positive_histories(
    user_ids: np.ndarray, item_ids: np.ndarray, labels: np.ndarray, timestamps: np.ndarray, n: int
) -> tuple[np.ndarray, pa.ListArray]:
    """Per row, the positives of its user strictly earlier in time (vectorised).

    Args:
        user_ids, item_ids, labels, timestamps: `(num_rows,)` int arrays sorted by
            (user, timestamp).
        n: history length.

    Returns:
        counts: `(num_rows,)` number of earlier positives (before truncation to n).
        histories: `(num_rows,)` list array, the last `min(n, count)` of them, oldest first.
    """
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


def time_split(timestamps: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray, fractions) -> list[np.ndarray]:
    """Row indices of train, valid and test under the global time order.

    Returns:
        Three index arrays, each in time order.

    Raises:
        ValueError: a split would be empty.
    """
    order = np.lexsort((item_ids, user_ids, timestamps))
    num_rows = len(order)
    train_end = int(round(num_rows * fractions[0]))
    valid_end = int(round(num_rows * (fractions[0] + fractions[1])))
    parts = [order[:train_end], order[train_end:valid_end], order[valid_end:]]
    if any(len(part) == 0 for part in parts):
        raise ValueError(
            f"{num_rows} interactions are too few for the split {tuple(fractions)}: a split is empty"
        )
    return parts


def short_long_split(counts: np.ndarray, threshold: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Boolean masks (short, long) over test rows and the threshold used."""
    if threshold is None:
        threshold = int(np.median(counts))
    short = counts <= threshold
    return short, ~short, int(threshold)


def split_interactions(
    ratings: pd.DataFrame, item_raw_ids: list[str], protocol: Protocol
) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """Applies the protocol to a rating log; extra columns of `ratings` are carried along.

    Args:
        ratings: columns `user`, `item` (raw ids), `rating` (float), `timestamp` (int unix
            seconds), optionally more.
        item_raw_ids: raw id of each item_id (the item table's order).
        protocol: the parameters.

    Returns:
        tables: split name -> arrow table with the interaction columns, `history_count`
            and the extra columns.
        report: `users` (raw id by user_id), `duplicates`, `unknown_items`,
            `short_long_threshold`.

    Raises:
        ValueError: nothing is left after the filters.
    """
    ratings, unknown_items = drop_unknown_items(ratings, set(item_raw_ids))
    if unknown_items:
        warnings.warn(f"dropped {unknown_items} ratings of items absent from the item table", stacklevel=3)
    ratings, duplicates = keep_latest_ratings(ratings)
    if duplicates:
        warnings.warn(f"{duplicates} duplicate (user, item) ratings: kept the latest of each", stacklevel=3)
    if ratings.empty:
        raise ValueError("no ratings left once items without an item-table entry are dropped")
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

    extras = ratings.drop(columns=["user", "item", "rating", "timestamp"])
    table = pa.table(
        {
            "user_id": user_ids,
            "item_id": item_ids,
            "rating": rating_values,
            "label": labels,
            "timestamp": timestamps,
            "history_item_ids": histories,
            "history_count": counts,
            **{name: extras[name].to_numpy() for name in extras.columns},
        }
    )
    kept = np.flatnonzero(counts >= protocol.min_history)
    if len(kept) == 0:
        raise ValueError(
            f"no interaction has min_history={protocol.min_history} earlier positives "
            f"(threshold={protocol.threshold}); lower min_history or threshold"
        )
    table = table.take(kept)
    parts = time_split(timestamps[kept], user_ids[kept], item_ids[kept], protocol.split_fractions)
    tables = {name: table.take(part) for name, part in zip(("train", "valid", "test"), parts)}
    short, long, threshold = short_long_split(
        tables["test"]["history_count"].to_numpy(), protocol.short_long_threshold
    )
    tables["test_short"] = tables["test"].filter(pa.array(short))
    tables["test_long"] = tables["test"].filter(pa.array(long))
    report = {
        "users": users,
        "duplicates": duplicates,
        "unknown_items": unknown_items,
        "short_long_threshold": threshold,
    }
    return tables, report


def interactions_from_tables(tables: dict[str, pa.Table]) -> DatasetDict:
    """Selects and casts the common interaction columns of each split."""
    columns = list(INTERACTION_FEATURES)
    return DatasetDict(
        {
            name: Dataset(tables[name].select(columns).cast(INTERACTION_FEATURES.arrow_schema))
            for name in SPLITS
        }
    )


def item_table(items: pd.DataFrame) -> Dataset:
    """The item table from a frame with `raw_id`, `title`, `description`, `poster_path`.

    Missing descriptions and posters (NaN or empty) become None.
    """
    frame = pd.DataFrame(
        {
            "item_id": np.arange(len(items), dtype=np.int64),
            "raw_id": items["raw_id"].astype(str).to_numpy(),
            "title": items["title"].astype(str).to_numpy(),
            "description": _none_if_blank(items["description"]),
            "poster_path": _none_if_blank(items["poster_path"]),
        }
    )
    return Dataset(pa.Table.from_pandas(frame, schema=ITEM_FEATURES.arrow_schema, preserve_index=False))


def _none_if_blank(column: pd.Series) -> list[str | None]:
    return [value if isinstance(value, str) and value.strip() else None for value in column]


def apply_protocol(
    ratings: pd.DataFrame,
    items: pd.DataFrame,
    *,
    name: str,
    protocol: Protocol,
    notes: dict[str, Any] | None = None,
) -> RecommendationData:
    """Builds `RecommendationData` from a raw rating log and an item frame.

    Args:
        ratings: see `split_interactions`.
        items: `(num_items,)` frame with `raw_id`, `title`, `description`, `poster_path`.
        name: the data set's name, stored in `info`.
        protocol: the parameters, stored in `info["protocol"]`.
        notes: builder facts stored in `info["source"]` (files, raw counts, missing posters).

    Returns:
        The data set, its statistics already in `info["statistics"]`.
    """
    item_raw_ids = items["raw_id"].astype(str).tolist()
    tables, report = split_interactions(ratings, item_raw_ids, protocol)
    parameters = protocol.to_dict()
    parameters["short_long_threshold"] = report["short_long_threshold"]
    info = {
        "name": name,
        "protocol": parameters,
        "id_maps": {"users": report["users"], "items": item_raw_ids},
        "source": {
            **(notes or {}),
            "duplicate_ratings_dropped": report["duplicates"],
            "unknown_item_ratings_dropped": report["unknown_items"],
        },
    }
    data = RecommendationData(interactions_from_tables(tables), item_table(items), info)
    data.info["statistics"] = dataset_statistics(data)
    return data
