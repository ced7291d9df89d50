"""The common data form every builder produces: `RecommendationData`.

A prepared data set is a folder (see docs/ARCHITECTURE.md, "The common data form"):

    interactions/    DatasetDict.save_to_disk: train, valid, test, test_short, test_long
    items/           Dataset.save_to_disk: the item table
    info.json        name, protocol parameters, id maps, statistics, builder notes
    statistics.json  the Table-2 style statistics alone, for quick reading

It is written to a temporary sibling folder and renamed into place, so a failed or
interrupted save never leaves a partial folder under the requested name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, List, Value
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

def describe_path(path: str | os.PathLike) -> str:
    """`path` for an error message: a relative path says which folder it starts from."""
    path = Path(path)
    return str(path) if path.is_absolute() else f"{path} (relative to the current folder {Path.cwd()})"


# The splits scored at the end of a run (and in model cards), and all splits of a data set.
EVALUATION_SPLITS = ("valid", "test", "test_short", "test_long")
SPLITS = ("train", *EVALUATION_SPLITS)

INTERACTION_FEATURES = Features(
    {
        "user_id": Value("int64"),
        "item_id": Value("int64"),
        "rating": Value("float32"),
        "label": Value("int64"),
        "timestamp": Value("int64"),
        "history_item_ids": List(Value("int64")),
    }
)

ITEM_FEATURES = Features(
    {
        "item_id": Value("int64"),
        "raw_id": Value("string"),
        "title": Value("string"),
        "description": Value("string"),
        "poster_path": Value("string"),
    }
)


@dataclass
class RecommendationData:
    """Interactions with histories, an item table and the metadata that reproduces them.

    Attributes:
        interactions: splits `SPLITS`, rows with `INTERACTION_FEATURES`.
        items: `(num_items,)` rows with `ITEM_FEATURES`; row `i` has `item_id == i`.
        info: JSON-able dict with at least `name`, `protocol` (the parameters used),
            `id_maps` (`{"users": [raw id by user_id], "items": [raw id by item_id]}`) and
            `statistics` (see `statistics.dataset_statistics`).
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
        """Writes the folder atomically; an existing folder at `path` is replaced.

        Args:
            path: destination folder.

        Returns:
            The destination as an absolute `Path`.
        """
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
        """Reads a folder written by `save`.

        Raises:
            FileNotFoundError: `path` is not such a folder.
        """
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
