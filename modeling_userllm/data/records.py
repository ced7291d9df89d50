"""Interaction rows + item table + features -> `UserLLMProcessor` records.

A record (docs/ARCHITECTURE.md, "Processor records"):

    {"user_id": int, "item_id": int, "title": str, "description": str | None,
     "image_features": list[float] | None,            # 384 floats, None without a poster
     "history": [{"item_id", "title", "description", "image_features"}, ...],  # oldest first
     "label": int}                                    # when the rows have labels

`RecordBuilder` precomputes the per-item parts once, so converting a batch costs a few
dict look-ups per item; the trainer calls it per batch. User and item ids pass through
unchanged: the model maps ids it does not know to its "unknown" collaborative row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .common import RecommendationData

DESCRIPTION_SOURCES = ("generated", "item_table", "none")


def _as_columns(rows: Mapping[str, Sequence] | Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """A batch of rows as columns, from either a column mapping or a list of row dicts."""
    if isinstance(rows, Mapping):
        return {name: list(values) for name, values in rows.items()}
    rows = list(rows)
    return {name: [row[name] for row in rows] for name in (rows[0] if rows else {})}


class RecordBuilder:
    """Turns interaction rows into processor records.

    Args:
        data: the data set (its item table gives titles and item-table descriptions).
        image_features: `(num_items, 384)` float array or tensor indexed by item_id.
        image_mask: `(num_items,)` bool, False where the poster is missing or corrupt;
            default all True when `image_features` is given.
        descriptions: generated descriptions, `{item_id (int or str): text}` as in
            `descriptions.json`, or a sequence indexed by item_id.
        description_source: "generated" (from `descriptions`; an item without one gets
            None), "item_table" (the item table's `description`) or "none"; default
            "generated" when `descriptions` is given, else "item_table".

    Raises:
        ValueError: an unknown source, "generated" without descriptions, or features
            whose first dimension is not the number of items.
    """

    def __init__(
        self,
        data: RecommendationData,
        *,
        image_features: Any = None,
        image_mask: Any = None,
        descriptions: Mapping | Sequence[str | None] | None = None,
        description_source: str | None = None,
    ) -> None:
        num_items = data.num_items
        if description_source is None:
            description_source = "generated" if descriptions is not None else "item_table"
        if description_source not in DESCRIPTION_SOURCES:
            raise ValueError(f"description_source must be one of {DESCRIPTION_SOURCES}, got {description_source!r}")
        if description_source == "generated" and descriptions is None:
            raise ValueError("description_source='generated' needs `descriptions`")
        self.titles: list[str] = data.items["title"]
        self.descriptions = self._descriptions(data, description_source, descriptions, num_items)
        self.image_features, self.image_mask = self._image_features(image_features, image_mask, num_items)
        self._image_lists: list[list[float] | None] = [None] * num_items
        self.num_items = num_items

    @staticmethod
    def _descriptions(data, source, descriptions, num_items) -> list[str | None]:
        if source == "none":
            return [None] * num_items
        if source == "item_table":
            return data.items["description"]
        if isinstance(descriptions, Mapping):
            return [descriptions.get(str(item), descriptions.get(item)) for item in range(num_items)]
        if len(descriptions) != num_items:
            raise ValueError(f"{len(descriptions)} descriptions for {num_items} items")
        return list(descriptions)

    @staticmethod
    def _image_features(features, mask, num_items) -> tuple[np.ndarray | None, np.ndarray | None]:
        if features is None:
            return None, None
        features = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features, dtype=np.float32)
        if features.ndim != 2 or features.shape[0] != num_items:
            raise ValueError(f"image_features must be (num_items={num_items}, dim), got {features.shape}")
        if mask is None:
            mask = np.ones(num_items, dtype=bool)
        mask = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask, dtype=bool)
        if mask.shape != (num_items,):
            raise ValueError(f"image_mask must be ({num_items},), got {mask.shape}")
        return features, mask

    def image_list(self, item_id: int) -> list[float] | None:
        """The item's image features as floats (cached), None without a valid poster."""
        if self.image_features is None or not self.image_mask[item_id]:
            return None
        cached = self._image_lists[item_id]
        if cached is None:
            cached = self._image_lists[item_id] = self.image_features[item_id].tolist()
        return cached

    def item(self, item_id: int) -> dict[str, Any]:
        """`{"item_id", "title", "description", "image_features"}` of one item."""
        return {
            "item_id": item_id,
            "title": self.titles[item_id],
            "description": self.descriptions[item_id],
            "image_features": self.image_list(item_id),
        }

    def __call__(self, rows: Mapping[str, Sequence] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Records of a batch of rows.

        Args:
            rows: columns (`Dataset[a:b]`) or row dicts with `user_id`, `item_id`,
                `history_item_ids` and optionally `label`.

        Returns:
            One record per row, in order. Feature lists are shared between records:
            treat them as read-only.
        """
        columns = _as_columns(rows)
        labels = columns.get("label")
        records = []
        for index, (user_id, item_id, history) in enumerate(
            zip(columns["user_id"], columns["item_id"], columns["history_item_ids"])
        ):
            record = {"user_id": int(user_id), **self.item(int(item_id))}
            record["history"] = [self.item(int(past)) for past in history]
            if labels is not None:
                record["label"] = int(labels[index])
            records.append(record)
        return records

    def dataset(self, rows) -> RecordDataset:
        """A lazily converting, indexable view of `rows` (e.g. a `datasets.Dataset` split)."""
        return RecordDataset(rows, self)


class RecordDataset:
    """`torch.utils.data.Dataset`-like view: `len()` and `[i]` -> record, built on access.

    Args:
        rows: a `datasets.Dataset` split (or any sequence of row dicts).
        builder: the `RecordBuilder` that converts rows.
    """

    def __init__(self, rows, builder: RecordBuilder) -> None:
        self.rows = rows
        self.builder = builder

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.builder([self.rows[int(index)]])[0]


def build_records(
    rows: Mapping[str, Sequence] | Sequence[Mapping[str, Any]],
    data: RecommendationData,
    *,
    image_features: Any = None,
    image_mask: Any = None,
    descriptions: Mapping | Sequence[str | None] | None = None,
    description_source: str | None = None,
) -> list[dict[str, Any]]:
    """One-shot conversion; build a `RecordBuilder` once instead when converting batches.

    Args and returns: see `RecordBuilder` and `RecordBuilder.__call__`.
    """
    builder = RecordBuilder(
        data,
        image_features=image_features,
        image_mask=image_mask,
        descriptions=descriptions,
        description_source=description_source,
    )
    return builder(rows)
