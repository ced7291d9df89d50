"""Table-2 style statistics of a prepared data set (the paper's data set table)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from .common import RecommendationData

STATISTICS = (
    "#User", "#Item", "#Positive", "#Negative", "#Poster",
    "#Train", "#Valid", "#Test", "#Test short", "#Test long",
)


def dataset_statistics(data: RecommendationData) -> dict[str, int]:
    """Counts over the train, valid and test rows (test_short/test_long are subsets).

    #User and #Item count the users and target items present in those rows; #Poster counts
    those items that have a poster; #Positive/#Negative count rows by label.

    Returns:
        `{name: count}` with the keys of `STATISTICS`, in that order.
    """
    splits = [data.interactions[name].data.table for name in ("train", "valid", "test")]
    rows = pa.concat_tables([table.select(["user_id", "item_id", "label"]) for table in splits])
    items = np.unique(rows["item_id"].to_numpy())
    has_poster = np.asarray(pc.is_valid(data.items.data.table["poster_path"]))
    positives = int(pc.sum(rows["label"]).as_py() or 0)
    return {
        "#User": int(len(np.unique(rows["user_id"].to_numpy()))),
        "#Item": int(len(items)),
        "#Positive": positives,
        "#Negative": rows.num_rows - positives,
        "#Poster": int(has_poster[items].sum()),
        "#Train": splits[0].num_rows,
        "#Valid": splits[1].num_rows,
        "#Test": splits[2].num_rows,
        "#Test short": len(data.interactions["test_short"]),
        "#Test long": len(data.interactions["test_long"]),
    }


def format_statistics(statistics: dict[str, dict[str, int]]) -> str:
    """A Markdown table, one row per data set, columns as in `STATISTICS`.

    Args:
        statistics: data set name -> `dataset_statistics` result (a published row may lack
            columns: they show as "—").

    Returns:
        The table as text (no trailing newline).
    """
    header = ["Dataset", *STATISTICS]
    body = [
        [name, *(f"{counts[key]:,}" if counts.get(key) is not None else "—" for key in STATISTICS)]
        for name, counts in statistics.items()
    ]
    widths = [max(len(row[column]) for row in [header, *body]) for column in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.rjust(width) for cell, width in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (width + 1) + ":" for width in widths) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in body)])


def split_coverage(data: RecommendationData) -> dict[str, int]:
    """How many valid / test users (and test rows) have no training row.

    Under the global time split a user whose ratings all come after the training period has
    none, and an ID-based model (MF, LightGCN) cannot score it; under `per_user_time` the
    counts are 0 by construction.
    """
    users = {name: data.interactions[name].data.table["user_id"].to_numpy() for name in ("train", "valid", "test")}
    seen = np.unique(users["train"])
    unseen_test = ~np.isin(users["test"], seen)
    return {
        "valid_users": int(len(np.unique(users["valid"]))),
        "valid_users_not_in_train": int(len(np.setdiff1d(np.unique(users["valid"]), seen))),
        "test_users": int(len(np.unique(users["test"]))),
        "test_users_not_in_train": int(len(np.unique(users["test"][unseen_test]))),
        "test_rows": int(len(users["test"])),
        "test_rows_of_users_not_in_train": int(unseen_test.sum()),
    }
