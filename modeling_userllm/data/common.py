"""The common data form every builder produces: `RecommendationData`, saved as a folder (docs/ARCHITECTURE.md,
"The common data form") of `interactions/`, `items/`, `info.json` and `statistics.json`, and its Table-2
statistics (the paper's data set table)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, Features, List, Value
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars


def describe_path(path: str | os.PathLike) -> str:
    """`path` for an error message: a relative path says which folder it starts from."""
    path = Path(path)
    return str(path) if path.is_absolute() else f"{path} (relative to the current folder {Path.cwd()})"


EVALUATION_SPLITS = ("valid", "test", "test_short", "test_long")
SPLITS = ("train", *EVALUATION_SPLITS)

INTERACTION_FEATURES = Features({
    "user_id": Value("int64"), "item_id": Value("int64"), "rating": Value("float32"), "label": Value("int64"),
    "timestamp": Value("int64"), "history_item_ids": List(Value("int64")),
})
ITEM_FEATURES = Features({
    "item_id": Value("int64"), "raw_id": Value("string"), "title": Value("string"), "description": Value("string"),
    "poster_path": Value("string"),
})


@dataclass
class RecommendationData:
    """Interactions with histories, an item table and the metadata that reproduces them.

    Attributes:
        interactions: splits `SPLITS`, rows with `INTERACTION_FEATURES`.
        items: `(num_items,)` rows with `ITEM_FEATURES`; row `i` has `item_id == i`.
        info: JSON-able, with at least `name`, `protocol` (the parameters used), `id_maps` (`{"users": [raw id
            by user_id], "items": [raw id by item_id]}`) and `statistics` (`dataset_statistics`).
    """

    interactions: DatasetDict
    items: Dataset
    info: dict[str, Any]

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def num_users(self) -> int:
        """Size of the user id space (collaborative tables need this many rows)."""
        return len(self.info["id_maps"]["users"])

    @property
    def num_items(self) -> int:
        """Size of the item id space (= rows of the item table)."""
        return len(self.items)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the folder `path` atomically (a temporary sibling, then renamed; an existing folder is replaced).
        Returns `path` as an absolute `Path`."""
        path = Path(path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        bars_were_enabled = not are_progress_bars_disabled()
        disable_progress_bars()
        try:
            self.interactions.save_to_disk(str(staging / "interactions"))
            self.items.save_to_disk(str(staging / "items"))
            _write_json(staging / "info.json", self.info)
            _write_json(staging / "statistics.json", self.info.get("statistics", {}))
            _replace_folder(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            if bars_were_enabled:
                enable_progress_bars()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> RecommendationData:
        """Reads a folder written by `save`; a `FileNotFoundError` when `path` is not one."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{describe_path(path)}: no such folder (a prepared data set was expected)")
        if not (path / "info.json").is_file():
            raise FileNotFoundError(f"{path} is not a prepared data set (no info.json)")
        return cls(
            interactions=DatasetDict.load_from_disk(str(path / "interactions")),
            items=Dataset.load_from_disk(str(path / "items")),
            info=json.loads((path / "info.json").read_text(encoding="utf-8")),
        )


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _replace_folder(new: Path, destination: Path) -> None:
    """Renames `new` to `destination`, moving an existing destination aside first."""
    if not destination.exists():
        new.rename(destination)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old.", dir=destination.parent))
    retired.rmdir()
    destination.rename(retired)
    try:
        new.rename(destination)
    except BaseException:
        retired.rename(destination)
        raise
    shutil.rmtree(retired, ignore_errors=True)


STATISTICS = ("#User", "#Item", "#Positive", "#Negative", "#Poster", "#Train", "#Valid", "#Test", "#Test short",
              "#Test long")


def dataset_statistics(data: RecommendationData) -> dict[str, int]:
    """`{name: count}` in `STATISTICS` order over the train, valid and test rows (test_short/test_long are subsets
    of test): #User and #Item the users and target items in them, #Poster those items with a poster."""
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
    """A Markdown table (no trailing newline) of data set name -> `dataset_statistics`, one row each; a column a
    (published) row lacks shows as "—"."""
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
    """How many valid / test users (and test rows) have no training row, which an ID-based model (MF, LightGCN)
    cannot score: under `global_time`, users whose ratings all come later; 0 under `per_user_time`."""
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


LOG_SPLITS = ("train", "valid", "test")  # they partition the log; test_short and test_long re-split test


def interaction_log(data: RecommendationData) -> dict[str, np.ndarray]:
    """`user_id`, `item_id`, `label` and `timestamp` of every interaction of the log (`LOG_SPLITS`), as columns."""
    splits = [data.interactions[split] for split in LOG_SPLITS if split in data.interactions]
    return {name: np.concatenate([np.asarray(split[name]) for split in splits])
            for name in ("user_id", "item_id", "label", "timestamp")}


def seen_items(log: dict[str, np.ndarray], user_id: int) -> set[int]:
    """The items `user_id` has an interaction with in `log` (`interaction_log`): never recommended to them."""
    return {int(item) for item in log["item_id"][log["user_id"] == user_id]}


def unseen_items(data: RecommendationData, user_id: int) -> list[int]:
    """The items the user has no interaction with in train, valid or test (the one definition of "unseen")."""
    seen = seen_items(interaction_log(data), user_id)
    return [item_id for item_id in range(data.num_items) if item_id not in seen]
