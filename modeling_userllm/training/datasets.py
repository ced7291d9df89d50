"""What the trainer reads: a prepared data set, its features, lazy records and the collators; everything the data
must satisfy for a given model is checked here, once, before training."""

from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from ..data import RecommendationData, RecordBuilder, RecordDataset, make_toy_movies
from ..data.common import describe_path
from ..features import FeatureStore, extract_image_features, toy_image_encoder
from ..features.store import COLLABORATIVE_FILE, IMAGE_FEATURES_FILE
from ..processing_userllm import UserLLMProcessor
from .arguments import DataArguments, PresetError

logger = logging.getLogger(__name__)


@dataclass
class RecordCollator:
    """Records -> a model batch (`text_only`: step 1's text prompt). `RecordBuilder.dataset` checked its records
    when it was built: `validate=True` for records from elsewhere."""

    processor: UserLLMProcessor
    text_only: bool = False
    validate: bool = False

    def __call__(self, records: list[dict]) -> dict[str, torch.Tensor]:
        return dict(self.processor(records, text_only=self.text_only, validate=self.validate))


@dataclass
class PromptCurriculumCollator(RecordCollator):
    """LLaRA's curriculum: each batch is on the text or the full (spliced) prompt, the full one with a probability
    rising linearly from 0 at the first step to 1 at the last.

    A batch's step is counted from the batches built (the data loader builds ahead of the trainer) from the start
    `PromptCurriculumCallback` sets; a draw depends only on `seed` and the step, so a resumed run sees the prompts
    an uninterrupted one would.
    """

    seed: int = 0
    step: int = 0
    total_steps: int = 1
    gradient_accumulation_steps: int = 1
    batches_built: int = 0

    def start(self, step: int, total_steps: int, gradient_accumulation_steps: int) -> None:
        """Counts the next batch as the first of optimizer step `step` (of `total_steps`)."""
        self.step, self.total_steps, self.gradient_accumulation_steps = step, total_steps, gradient_accumulation_steps
        self.batches_built = step * gradient_accumulation_steps

    def full_prompt_probability(self) -> float:
        return min(1.0, self.step / max(1, self.total_steps - 1))

    def __call__(self, records: list[dict]) -> dict[str, torch.Tensor]:
        self.step = self.batches_built // self.gradient_accumulation_steps
        self.batches_built += 1
        self.text_only = random.Random(f"{self.seed}-{self.step}").random() >= self.full_prompt_probability()
        return super().__call__(records)


class PromptCurriculumCallback(TrainerCallback):
    """Starts a `PromptCurriculumCollator` at the trainer's step (0, or a resumed checkpoint's)."""

    def __init__(self, collator: PromptCurriculumCollator):
        self.collator = collator

    def on_train_begin(self, args, state, control, **kwargs):
        self.collator.start(state.global_step, state.max_steps, args.gradient_accumulation_steps)


@dataclass
class RunData:
    """A prepared data set, its features folder's content (None: no features) and the record builder over both."""

    data: RecommendationData
    features: FeatureStore | None
    builder: RecordBuilder

    def split(self, name: str, max_rows: int | None = None, seed: int = 0) -> RecordDataset:
        """A lazily converting view of one split, optionally a seeded random subset of its rows."""
        rows = self.data.interactions[name]
        if max_rows is not None and max_rows < len(rows):
            picked = np.random.default_rng(seed).choice(len(rows), size=max_rows, replace=False)
            rows = rows.select(np.sort(picked))
        return self.builder.dataset(rows, f"split {name!r}")

    def user_subset(self, name: str, max_rows: int | None = None, seed: int = 0) -> tuple[RecordDataset, int]:
        """A split for evaluation and its number of users, optionally cut to whole users (UAUC averages per-user
        AUCs): users in a seeded random order, kept while their rows fit in `max_rows` (at least one). Raises
        `ValueError` for an empty split."""
        rows = self.data.interactions[name]
        if len(rows) == 0:
            raise ValueError(f"split {name!r} of {self.data.name} is empty: nothing to evaluate")
        user_ids = rows.with_format("arrow")[:]["user_id"].to_numpy()  # respects a select/filter view
        users, per_user = np.unique(user_ids, return_counts=True)
        if max_rows is None or max_rows >= len(rows):
            return self.builder.dataset(rows, f"split {name!r}"), len(users)
        order = np.random.default_rng(seed).permutation(len(users))
        fits = np.cumsum(per_user[order]) <= max_rows
        fits[0] = True
        chosen = users[order[: int(np.argmin(fits)) if not fits.all() else len(fits)]]
        picked = np.flatnonzero(np.isin(user_ids, chosen))
        return self.builder.dataset(rows.select(picked), f"split {name!r}"), len(chosen)


def history_items_for_split(data: RecommendationData, split: str, default: int) -> int:
    """History items given on a split: the long history on `test_long` (Table 5, docs/DATA.md), else `default`."""
    if split == "test_long":
        return int(data.info["protocol"].get("long_history_length") or default)
    return default


def with_history_items(processor: UserLLMProcessor, max_history_items: int) -> UserLLMProcessor:
    """A shallow copy of `processor` keeping `max_history_items` history items (the saved one keeps n)."""
    if max_history_items == processor.max_history_items:
        return processor
    copied = copy.copy(processor)
    copied.max_history_items = max_history_items
    return copied


def prepare_toy_data(folder: str | Path, seed: int = 0, num_users: int | None = None, num_items: int | None = None) -> tuple[Path, Path]:
    """`(data_dir, features_dir)` of the toy data set, computed once into `folder` (`data`, `posters`, and `features`:
    posters through the seeded stand-in encoder, MF tables); the same settings reuse them."""
    folder = Path(folder)
    data_dir, features_dir = folder / "data", folder / "features"
    generator = {key: value for key, value in (("num_users", num_users), ("num_items", num_items)) if value is not None}
    wanted = {"seed": seed, **generator}
    if (data_dir / "info.json").is_file() and (features_dir / COLLABORATIVE_FILE).is_file():
        info = RecommendationData.load(data_dir).info["generator"]
        if all(info.get(key) == value for key, value in wanted.items()):
            return data_dir, features_dir
    logger.info("Preparing the toy data set in %s", folder)
    data = make_toy_movies(seed, folder / "posters", **generator)
    data.save(data_dir)
    from ..features.collaborative import train_collaborative_embeddings

    encoder, image_processor = toy_image_encoder(seed=0)
    images, mask = extract_image_features(list(data.items["poster_path"]), encoder, image_processor, batch_size=64,
                                          warn_missing=False)
    # Items without a poster are part of the toy set's design: their prompts show no <Image>.
    logger.info("Toy posters: %d of %d items have one (the others have none by design)", int(mask.sum()), len(mask))
    # CoLLM's N(0, 1) start needs hundreds of epochs; the toy set learns in a few dozen from a small one.
    users, items, mf_metrics = train_collaborative_embeddings(
        data, seed=seed, init_std=0.1, lr=1e-2, max_epochs=60, patience=10, min_epochs=0, progress=False
    )
    manifest = {
        "name": "toy",
        "image_features": {"model": "toy_image_encoder(seed=0)", "present": int(mask.sum())},
        "collaborative": {"model": "matrix factorisation", "metrics": mf_metrics},
    }
    FeatureStore(image_features=images, image_mask=mask, user_embeddings=users, item_embeddings=items,
                 manifest=manifest).save(features_dir)
    return data_dir, features_dir


def load_data_folder(data_dir: str | Path) -> RecommendationData:
    """Loads a prepared data set, or raises a `PresetError` saying what the folder is instead."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise PresetError(f"data_dir {describe_path(data_dir)} does not exist")
    if not (data_dir / "info.json").is_file():
        if any((data_dir / name).is_file() for name in (IMAGE_FEATURES_FILE, COLLABORATIVE_FILE, "descriptions.json")):
            raise PresetError(f"data_dir {data_dir} is a features folder, not a prepared data set "
                              "(pass it as features_dir; prepare the data with examples/prepare_data.py)")
        raise PresetError(f"data_dir {data_dir} is not a prepared data set (no info.json); "
                          "prepare one with examples/prepare_data.py")
    data = RecommendationData.load(data_dir)
    missing = [split for split in ("train", "valid", "test") if split not in data.interactions]
    if missing:
        raise PresetError(f"data_dir {data_dir} lacks the splits {missing}")
    return data


def check_features(features: FeatureStore | None, data: RecommendationData, *, use_visual: bool,
                   use_collaborative: bool, vision_feature_size: int, collaborative_size: int,
                   features_dir: str | Path | None) -> None:
    """Raises a `PresetError` naming the missing file or the tensor of the wrong size for the model's features."""
    where = f"features_dir {features_dir}"
    if use_visual:
        if features is None or features.image_features is None:
            raise PresetError(f"this variant uses poster features but {where} has no {IMAGE_FEATURES_FILE}")
        expected = (data.num_items, vision_feature_size)
        if tuple(features.image_features.shape) != expected:
            raise PresetError(f"{where}: image features have shape {tuple(features.image_features.shape)}, expected "
                              f"{expected} (num_items, vision_feature_size)")
    if use_collaborative:
        if features is None or features.user_embeddings is None:
            raise PresetError(f"this variant uses collaborative embeddings but {where} has no {COLLABORATIVE_FILE}")
        for name, table, rows in (("user_embeddings", features.user_embeddings, data.num_users),
                                  ("item_embeddings", features.item_embeddings, data.num_items)):
            if tuple(table.shape) != (rows, collaborative_size):
                raise PresetError(f"{where}: {name} has shape {tuple(table.shape)}, expected {(rows, collaborative_size)} "
                                  "(rows of the data set, collaborative_size)")


def load_run_data(data_args: DataArguments, *, use_visual: bool, use_collaborative: bool, use_descriptions: bool,
                  vision_feature_size: int = 384, collaborative_size: int = 256) -> RunData:
    """The data, features and record builder of a run (`data_args.data_dir` set), checked against the model's switches
    and feature sizes; a `PresetError` when they do not fit."""
    data = load_data_folder(data_args.data_dir)
    features = None
    if data_args.features_dir is not None:
        if not Path(data_args.features_dir).is_dir():
            raise PresetError(f"features_dir {describe_path(data_args.features_dir)} does not exist")
        features = FeatureStore.load(data_args.features_dir)
    check_features(features, data, use_visual=use_visual, use_collaborative=use_collaborative,
                   vision_feature_size=vision_feature_size, collaborative_size=collaborative_size,
                   features_dir=data_args.features_dir)
    has_generated = features is not None and features.descriptions is not None
    source = data_args.description_source if use_descriptions else "none"
    if source == "auto":
        source = "generated" if has_generated else "item_table"
    if source == "generated" and not has_generated:
        raise PresetError(f"description_source 'generated' but features_dir {data_args.features_dir} has no descriptions.json")
    builder = RecordBuilder(
        data,
        image_features=features.image_features if use_visual else None,
        image_mask=features.image_mask if use_visual else None,
        descriptions=features.descriptions if source == "generated" else None,
        description_source=source,
    )
    return RunData(data=data, features=features, builder=builder)
