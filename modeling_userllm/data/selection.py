"""Selecting a paper's subset of a rating log. `apply_protocol` applies a `Selection` after dropping ratings of
unknown items and duplicates, before the protocol, step by step in the order of its fields: unselected items
leave the item table with their ratings, `min_user_ratings` counts the ratings left, and `sample_users` draws
among the *eligible* users (a rating that the protocol keeps) so that exactly N users reach the data set.

Each step's counts go to `info["selection"]`; a step that leaves nothing, or a sample larger than what is
there, raises an error naming the option and the counts. The id spaces are those of the selected subset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Selection:
    """Which part of a rating log becomes the data set (all off by default).

    Attributes:
        require_poster: keep only items with a readable poster file.
        top_items: keep the K items with the most ratings (ties: natural id order).
        sample_items: keep K items drawn with `selection_seed` among the rated items (excludes `top_items`).
        min_user_ratings: drop users with fewer ratings once the items are selected.
        sample_users: keep N users drawn with `selection_seed` among the users with a rating that has
            `min_history` earlier positives.
        selection_seed: seed of the item and user samples.
    """

    require_poster: bool = False
    top_items: int | None = None
    sample_items: int | None = None
    min_user_ratings: int = 0
    sample_users: int | None = None
    selection_seed: int = 0

    def __post_init__(self) -> None:
        if self.top_items is not None and self.sample_items is not None:
            raise ValueError(f"top_items ({self.top_items}) and sample_items ({self.sample_items}) exclude each other")
        for name in ("top_items", "sample_items", "sample_users"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if self.min_user_ratings < 0:
            raise ValueError(f"min_user_ratings must be >= 0, got {self.min_user_ratings}")

    @property
    def is_identity(self) -> bool:
        return self == Selection()


SELECTION_KEYS = tuple(field.name for field in dataclasses.fields(Selection))


def split_options(overrides: dict[str, Any]) -> tuple[dict[str, Any], Selection]:
    """A builder's overrides as `(protocol overrides, Selection of the selection keys)`."""
    selection = {key: value for key, value in overrides.items() if key in SELECTION_KEYS}
    protocol = {key: value for key, value in overrides.items() if key not in SELECTION_KEYS}
    return protocol, Selection(**selection)


def eligible_users(ratings: pd.DataFrame, threshold: float, min_history: int) -> pd.Index:
    """Users with a rating that has `min_history` positives strictly before it: as the count only grows with
    time, the positives before the user's last timestamp."""
    positive = ratings["rating"].to_numpy() >= threshold
    last = ratings.groupby("user")["timestamp"].transform("max").to_numpy()
    earlier = pd.Series(positive & (ratings["timestamp"].to_numpy() < last)).groupby(ratings["user"].to_numpy()).sum()
    return earlier.index[earlier.to_numpy() >= min_history]


def select(ratings: pd.DataFrame, items: pd.DataFrame, selection: Selection, *, threshold: float,
           min_history: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Applies a selection (module docstring) to a deduplicated log (`user`, `item`, `rating`, `timestamp`) and
    its item frame; `threshold` and `min_history` are the protocol's, to find the eligible users.

    Returns:
        The selected ratings, the selected items (in their order) and the counts of each step.
    """
    counts: dict[str, int] = {"items_in": len(items), "ratings_in": len(ratings), "users_in": int(ratings["user"].nunique())}
    keep = np.ones(len(items), dtype=bool)
    if selection.require_poster:
        keep &= np.array([isinstance(path, str) and bool(path.strip()) for path in items["poster_path"]], dtype=bool)
        counts["items_with_poster"] = int(keep.sum())
        if not keep.any():
            raise ValueError(f"require_poster=True leaves no item: none of the {len(items)} items has a readable poster")
    raw_ids = items["raw_id"].astype(str).to_numpy()
    rated = ratings["item"].astype(str).value_counts()
    candidates = raw_ids[keep]
    candidates = candidates[np.isin(candidates, rated.index.to_numpy())]
    if selection.top_items is not None or selection.sample_items is not None:
        wanted = selection.top_items if selection.top_items is not None else selection.sample_items
        option = "top_items" if selection.top_items is not None else "sample_items"
        if wanted > len(candidates):
            raise ValueError(f"{option}={wanted} but only {len(candidates)} items are rated (and pass the poster filter)")
        if selection.top_items is not None:
            # Stable sort on the count keeps the item table's order among ties.
            order = np.argsort(-rated.reindex(candidates).to_numpy(), kind="stable")
            chosen = candidates[order[:wanted]]
        else:
            chosen = np.random.default_rng(selection.selection_seed).choice(candidates, size=wanted, replace=False)
        keep &= np.isin(raw_ids, chosen)
        counts[f"items_after_{option}"] = int(keep.sum())
    items = items[keep].reset_index(drop=True)
    in_items = ratings["item"].astype(str).isin(set(raw_ids[keep]))
    counts["ratings_of_unselected_items"] = int((~in_items).sum())
    ratings = ratings[in_items]
    if ratings.empty:
        raise ValueError(f"the item selection keeps {len(items)} items but none of them is rated")
    if selection.min_user_ratings:
        per_user = ratings.groupby("user")["item"].transform("size")
        enough = per_user >= selection.min_user_ratings
        counts["users_below_min_user_ratings"] = int(ratings.loc[~enough, "user"].nunique())
        ratings = ratings[enough]
        if ratings.empty:
            raise ValueError(
                f"min_user_ratings={selection.min_user_ratings} leaves no user "
                f"({counts['users_in']} users before; the most ratings any user has is {int(per_user.max())})"
            )
    if selection.sample_users is not None:
        eligible = eligible_users(ratings, threshold, min_history)
        counts["users_eligible"] = len(eligible)
        if selection.sample_users > len(eligible):
            raise ValueError(
                f"sample_users={selection.sample_users} but only {len(eligible)} users have a rating with "
                f"min_history={min_history} earlier positives (threshold={threshold}) after the item selection"
            )
        chosen = np.random.default_rng(selection.selection_seed).choice(
            np.sort(eligible.to_numpy().astype(str)), size=selection.sample_users, replace=False
        )
        ratings = ratings[ratings["user"].astype(str).isin(set(chosen))]
    counts |= {"items_out": len(items), "ratings_out": len(ratings), "users_out": int(ratings["user"].nunique())}
    return ratings.reset_index(drop=True), items, counts
