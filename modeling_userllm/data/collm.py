"""CoLLM's processed MovieLens-1M split (Zhang et al. 2023), kept as published.

Files read from `data_dir`: `train.parquet`, `valid.parquet`, `test.parquet` with columns `uid`, `iid` (raw ids
from 1), `label` (1 = rating >= 4), `timestamp`, `his` (earlier positive item ids, left-padded with 0), `his_title`,
`title`. The split, labels and histories are CoLLM's; ids become contiguous from 0, the padding goes, and `rating`
holds the label (CoLLM publishes no ratings). `test_long` as in `protocol.py`, on the published histories.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .common import RecommendationData, dataset_statistics
from .parsing import missing_raw_files
from .protocol import interactions_from_tables, item_table

SPLIT_FILES = {"train": "train.parquet", "valid": "valid.parquet", "test": "test.parquet"}
COLUMNS = ["uid", "iid", "label", "timestamp", "his", "his_title", "title"]
PADDING = 0
NEEDS = "train.parquet, valid.parquet and test.parquet (columns " + ", ".join(COLUMNS) + ")"
SOURCE = ("They are CoLLM's published ML-1M split (Zhang et al. 2023, https://github.com/zyang1580/CoLLM), distributed "
          "as pickled pandas frames: convert each split you trust with pandas.read_pickle and DataFrame.to_parquet.")


def read_splits(data_dir: Path) -> dict[str, pa.Table]:
    """The three published splits; a `FileNotFoundError` for a missing file, a `ValueError` for a missing column."""
    splits = {}
    for name, file_name in SPLIT_FILES.items():
        path = data_dir / file_name
        if not path.is_file():
            raise missing_raw_files(data_dir, file_name, "collm", NEEDS, SOURCE)
        table = pq.read_table(path)
        if missing := [column for column in COLUMNS if column not in table.column_names]:
            raise ValueError(f"{path}: missing columns {missing}")
        splits[name] = table.select(COLUMNS)
    return splits


def item_titles(splits: dict[str, pa.Table]) -> dict[int, str]:
    """Raw item id -> title, from target titles and the history titles aligned with `his`."""
    ids, titles = [], []
    for table in splits.values():
        ids += [table["iid"].combine_chunks(), table["his"].combine_chunks().flatten()]
        titles += [table["title"].combine_chunks(), table["his_title"].combine_chunks().flatten()]
    ids = np.concatenate([np.asarray(chunk, dtype=np.int64) for chunk in ids])
    titles = pa.concat_arrays([chunk.cast(pa.string()) for chunk in titles])
    unique, first = np.unique(ids, return_index=True)
    real = unique != PADDING
    return dict(zip(unique[real].tolist(), titles.take(pa.array(first[real])).to_pylist()))


def contiguous_lookup(raw_ids: np.ndarray) -> np.ndarray:
    """`(max raw id + 1,)` array mapping a raw integer id to its position in `raw_ids`."""
    lookup = np.full(int(raw_ids.max()) + 1, -1, dtype=np.int64)
    lookup[raw_ids] = np.arange(len(raw_ids))
    return lookup


def split_table(table: pa.Table, user_lookup: np.ndarray, item_lookup: np.ndarray, history_length: int | None) -> pa.Table:
    """One published split in the common columns plus `history_count`."""
    padded = table["his"].combine_chunks()
    flat = np.asarray(padded.flatten(), dtype=np.int64)
    row_of_flat = np.repeat(np.arange(len(padded)), np.asarray(pc.list_value_length(padded)))
    real = flat != PADDING
    flat, row_of_flat = flat[real], row_of_flat[real]
    counts = np.bincount(row_of_flat, minlength=len(padded)).astype(np.int64)
    ends = np.cumsum(counts)
    lengths = counts if history_length is None else np.minimum(counts, history_length)
    # Histories are oldest first: keep the last `lengths` entries of each row.
    keep = np.arange(len(flat)) >= np.repeat(ends - lengths, counts)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    histories = pa.ListArray.from_arrays(pa.array(offsets), pa.array(item_lookup[flat[keep]]))
    labels = np.asarray(table["label"], dtype=np.int64)
    return pa.table({
        "user_id": user_lookup[np.asarray(table["uid"], dtype=np.int64)],
        "item_id": item_lookup[np.asarray(table["iid"], dtype=np.int64)],
        "rating": labels.astype(np.float32), "label": labels, "timestamp": np.asarray(table["timestamp"], dtype=np.int64),
        "history_item_ids": histories, "history_count": counts,
    })


def load_collm(data_dir: str | Path, *, history_length: int | None = 10, long_min_history: int = 20,
               long_history_length: int | None = None) -> RecommendationData:
    """Builds the common form ("collm") from CoLLM's published ML-1M split.

    Args:
        history_length: most recent history items kept per row (CoLLM's prompts use 10); None: whole histories.
        long_min_history: published history items a test row needs to be in `test_long`.
        long_history_length: history items given to `test_long` rows; None: `long_min_history` (whole histories
            when `history_length` is None).

    Raises:
        ValueError: `test_long` would be empty or would not hold longer histories.
    """
    data_dir = Path(data_dir)
    splits = read_splits(data_dir)
    titles = item_titles(splits)
    users = np.unique(np.concatenate([np.asarray(table["uid"], dtype=np.int64) for table in splits.values()]))
    items = np.array(sorted(titles), dtype=np.int64)
    user_lookup, item_lookup = contiguous_lookup(users), contiguous_lookup(items)
    if long_history_length is None and history_length is not None:
        long_history_length = long_min_history
    if history_length is not None and long_history_length <= history_length:
        raise ValueError(f"long_history_length ({long_history_length}) must exceed history_length ({history_length})")
    tables = {name: split_table(table, user_lookup, item_lookup, history_length) for name, table in splits.items()}
    long = tables["test"]["history_count"].to_numpy() >= long_min_history
    if not long.any():
        raise ValueError(f"test_long would be empty: no CoLLM test row has long_min_history={long_min_history} history items")
    tables["test_short"] = tables["test"]
    tables["test_long"] = split_table(splits["test"].filter(pa.array(long)), user_lookup, item_lookup, long_history_length)
    item_frame = pd.DataFrame(
        {"raw_id": items.astype(str), "title": [titles[raw] for raw in items], "description": None, "poster_path": None}
    )
    info = {
        "name": "collm",
        "protocol": {"split": "published (CoLLM)", "threshold": 4.0, "history_length": history_length,
                     "long_min_history": long_min_history, "long_history_length": long_history_length},
        "id_maps": {"users": users.astype(str).tolist(), "items": items.astype(str).tolist()},
        "source": {"data_dir": str(data_dir.resolve()), "rows": {name: table.num_rows for name, table in splits.items()}},
    }
    data = RecommendationData(interactions_from_tables(tables), item_table(item_frame), info)
    data.info["statistics"] = dataset_statistics(data)
    return data
