"""Interaction rows + item table + features -> `UserLLMProcessor` records (docs/ARCHITECTURE.md, "Processor records").

`RecordBuilder` checks the item texts and features once, so converting a batch costs a few look-ups per item.
Ids pass through unchanged: the model maps ids it does not know to its "unknown" collaborative row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..processing_userllm import UserLLMProcessor
from .common import RecommendationData

DESCRIPTION_SOURCES = ("generated", "item_table", "none")


def _as_array(values, dtype) -> np.ndarray:
    return np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=dtype)


class RecordBuilder:
    """Turns interaction rows into processor records.

    Args:
        data: the data set (its item table gives titles and item-table descriptions).
        image_features: `(num_items, dim)` float array or tensor indexed by item_id.
        image_mask: `(num_items,)` bool, False where the poster is missing (default: all True).
        descriptions: generated descriptions, `{item_id (int or str): text}` or a sequence indexed by item_id.
        description_source: "generated" (from `descriptions`; an item without one gets None), "item_table" or
            "none"; default "generated" when `descriptions` is given, else "item_table".

    Raises:
        ValueError: an unknown source, "generated" without descriptions, features not `(num_items, dim)` or not
            finite, or an item text that is not a string free of placeholder tokens (naming the item and field).
    """

    def __init__(self, data: RecommendationData, *, image_features: Any = None, image_mask: Any = None,
                 descriptions: Mapping | Sequence[str | None] | None = None, description_source: str | None = None) -> None:
        num_items = self.num_items = data.num_items
        if description_source is None:
            description_source = "generated" if descriptions is not None else "item_table"
        if description_source not in DESCRIPTION_SOURCES:
            raise ValueError(f"description_source must be one of {DESCRIPTION_SOURCES}, got {description_source!r}")
        if description_source == "generated" and descriptions is None:
            raise ValueError("description_source='generated' needs `descriptions`")
        self.titles: list[str] = data.items["title"]
        if description_source == "none":
            self.descriptions = [None] * num_items
        elif description_source == "item_table":
            self.descriptions = data.items["description"]
        elif isinstance(descriptions, Mapping):
            self.descriptions = [descriptions.get(str(item), descriptions.get(item)) for item in range(num_items)]
        elif len(descriptions) != num_items:
            raise ValueError(f"{len(descriptions)} descriptions for {num_items} items")
        else:
            self.descriptions = list(descriptions)
        for item_id, (title, description) in enumerate(zip(self.titles, self.descriptions)):
            UserLLMProcessor.check_text(title, f"item {item_id} of the item table", "title", required=True)
            UserLLMProcessor.check_text(description, f"item {item_id} ({description_source} descriptions)", "description",
                                        required=False)
        self.image_features = self.image_mask = None
        if image_features is not None:
            self.image_features = _as_array(image_features, np.float32)
            if self.image_features.ndim != 2 or self.image_features.shape[0] != num_items:
                raise ValueError(f"image_features must be (num_items={num_items}, dim), got {self.image_features.shape}")
            self.image_mask = _as_array(image_mask, bool) if image_mask is not None else np.ones(num_items, dtype=bool)
            if self.image_mask.shape != (num_items,):
                raise ValueError(f"image_mask must be ({num_items},), got {self.image_mask.shape}")
            bad = np.argwhere(~np.isfinite(self.image_features) & self.image_mask[:, None])
            if len(bad):
                row, column = bad[0]
                raise ValueError(f"image_features[{row}, {column}] (item {row}) is {self.image_features[row, column]}; "
                                 "features must be finite")
        self._image_lists: list[list[float] | None] = [None] * num_items

    def image_list(self, item_id: int) -> list[float] | None:
        """The item's image features as floats (cached); None without a valid poster."""
        if self.image_features is None or not self.image_mask[item_id]:
            return None
        if self._image_lists[item_id] is None:
            self._image_lists[item_id] = self.image_features[item_id].tolist()
        return self._image_lists[item_id]

    def item(self, item_id: int) -> dict[str, Any]:
        """`{"item_id", "title", "description", "image_features"}` of one item."""
        return {"item_id": item_id, "title": self.titles[item_id], "description": self.descriptions[item_id],
                "image_features": self.image_list(item_id)}

    def __call__(self, rows: Mapping[str, Sequence] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Records of a batch of rows (columns, e.g. `Dataset[a:b]`, or row dicts with `user_id`, `item_id`,
        `history_item_ids` and optionally `label`), in order. Feature lists are shared: treat them as read-only."""
        if not isinstance(rows, Mapping):
            rows = list(rows)
            rows = {name: [row[name] for row in rows] for name in (rows[0] if rows else {})}
        records = [{"user_id": int(user_id), **self.item(int(item_id)), "history": [self.item(int(past)) for past in history]}
                   for user_id, item_id, history in zip(rows["user_id"], rows["item_id"], rows["history_item_ids"])]
        if (labels := rows.get("label")) is not None:
            for record, label in zip(records, labels):
                record["label"] = int(label)
        return records

    def dataset(self, rows, name: str = "rows") -> RecordDataset:
        """A lazily converting view of `rows` (a `datasets.Dataset` split), ids and labels checked once here so that
        batches need none (`UserLLMProcessor(..., validate=False)`); a `ValueError` names `name`, the row and the
        field of an item id outside the item table or a label that is not 0 or 1."""
        table = rows.with_format("arrow")[:] if hasattr(rows, "with_format") else pa.Table.from_pylist(list(rows))
        histories = table["history_item_ids"]
        checks = [("item_id", table["item_id"], np.arange(len(table))),
                  ("history_item_ids", pc.list_flatten(histories), np.asarray(pc.list_parent_indices(histories)))]
        for field_name, values, row_of in checks:
            values = np.asarray(values, dtype=np.int64)
            bad = np.flatnonzero((values < 0) | (values >= self.num_items))
            if len(bad):
                raise ValueError(f"{name} row {row_of[bad[0]]}: field {field_name!r} holds item {values[bad[0]]}, which is not "
                                 f"in the item table (ids 0 to {self.num_items - 1})")
        if "label" in table.column_names:
            labels = np.asarray(table["label"])
            bad = np.flatnonzero((labels != 0) & (labels != 1))
            if len(bad):
                raise ValueError(f"{name} row {bad[0]}: field 'label' must be 0 or 1, got {labels[bad[0]]}")
        return RecordDataset(rows, self)


class RecordDataset:
    """`len()` and `[i]` -> record, built on access, over a `datasets.Dataset`. Kept rather than `with_transform`:
    that costs as much per item (measured 800 vs 770 us) and hides the raw rows (`.rows`) that evaluation reads."""

    def __init__(self, rows, builder: RecordBuilder) -> None:
        self.rows, self.builder = rows, builder

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.builder([self.rows[int(index)]])[0]


def build_records(rows, data: RecommendationData, **builder_kwargs) -> list[dict[str, Any]]:
    """One-shot conversion (`RecordBuilder(data, **builder_kwargs)(rows)`); build a `RecordBuilder` once for batches."""
    return RecordBuilder(data, **builder_kwargs)(rows)
