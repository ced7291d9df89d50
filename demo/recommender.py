"""What the demo page does, without the page: load checkpoints and a catalogue, rank unseen items.

    recommenders, catalogue = load_demo(DemoSettings())   # the embedded demo's outputs/demo/
    ranking = recommend(recommenders, catalogue, ["Heat (1995)", "Casino (1995)"], top_k=5)

Every bad input (a checkpoint missing or not a USER-LLM, features or a catalogue that do not fit it, an unknown
title, an empty history) raises `DemoError` with a sentence for the page or the command line, never a stack trace.
"""

from __future__ import annotations

import difflib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

from modeling_userllm.configuration_userllm import check_userllm_checkpoint
from modeling_userllm.data import RecommendationData, RecordBuilder
from modeling_userllm.data.common import describe_path, interaction_log, seen_items
from modeling_userllm.hub import is_hub_id
from modeling_userllm.ranking import rank_candidates
from modeling_userllm.training import DataArguments, PresetError, load_run_data
from modeling_userllm.training.pipeline import run_data_paths

logger = logging.getLogger(__name__)

DEFAULT_DEMO_DIR = Path("outputs") / "demo"
HOW_TO_CREATE = (
    "create them with `python examples/train.py` run from the repository root (3-6 minutes on a CPU), "
    "or pass --model, --data and --features"
)
PLACEHOLDER_NAME = "no_poster.png"

ProgressCallback = Callable[[float, str], None]


class DemoError(ValueError):
    """A bad setting or input, with a message meant for the person using the demo."""


@dataclass
class DemoSettings:
    """What the demo serves: `model` (folder or Hub id; None: `outputs/demo/model`) and optionally `compare_model`
    ranked side by side; `data`, `features` (None: from the `run_config.json` next to the model); `posters` (for
    posters whose `poster_path` does not exist; None: `posters/` beside the data); `description_source` (as in
    training); above `max_candidates` unseen items, a pool of that size drawn with `seed` is scored."""

    model: str | None = None
    compare_model: str | None = None
    data: str | None = None
    features: str | None = None
    posters: str | None = None
    description_source: str = "auto"
    max_candidates: int = 500
    seed: int = 0
    batch_size: int = 64
    demo_dir: Path = DEFAULT_DEMO_DIR


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: its rank, texts, score and poster (a file, or the placeholder)."""

    rank: int
    item_id: int
    title: str
    description: str
    score: float
    probability: float
    poster: str
    has_poster: bool


@dataclass
class Ranking:
    """One query's answer: the history (oldest first), the user (-1: new), per model its recommendations (best
    first), the unseen and scored candidate counts (fewer scored when a pool was drawn), notes for the page."""

    history: list[int]
    user_id: int
    results: dict[str, list[Recommendation]]
    num_unseen: int
    num_scored: int
    notes: list[str] = field(default_factory=list)


def check_checkpoint(name: str) -> None:
    """Fails early, with a `DemoError`, on a checkpoint that cannot be a USER-LLM: a local file or folder must pass
    `check_userllm_checkpoint`; any other name must be a Hub id (checked once downloaded: `load_checkpoint`)."""
    if not Path(name).exists():
        if not is_hub_id(name):
            raise DemoError(f"checkpoint {describe_path(name)} not found: no such folder, and not a Hub id (ORG/NAME)")
        return
    try:
        check_userllm_checkpoint(name)
    except (OSError, ValueError) as error:
        raise DemoError(str(error)) from error


def load_checkpoint(name: str) -> tuple[torch.nn.Module, object]:
    """A USER-LLM and its processor in float32 (bfloat16 is slow on CPUs), in eval mode; `DemoError` when it cannot load."""
    check_checkpoint(name)
    try:
        if not Path(name).is_dir():
            check_userllm_checkpoint(name)  # a Hub id is checked once its config.json is downloaded
        model = AutoModel.from_pretrained(name, trust_remote_code=True, dtype=torch.float32).eval()
        processor = AutoProcessor.from_pretrained(name, trust_remote_code=True)
    except (OSError, ValueError, KeyError) as error:
        raise DemoError(f"cannot load checkpoint {name}: {error}") from error
    return model, processor


def resolve_demo_paths(settings: DemoSettings) -> DemoSettings:
    """Fills in the model (`outputs/demo/model`), data and features (of the run that wrote the model) not given;
    `DemoError` when they are missing (saying how to create them) or the model is no USER-LLM."""
    model = settings.model
    if model is None:
        model = str(settings.demo_dir / "model")
        if not Path(model).is_dir():
            raise DemoError(f"the embedded demo's outputs are missing ({model} not found): {HOW_TO_CREATE}")
    check_checkpoint(model)
    data, features = settings.data, settings.features
    if data is None:
        data, run_features = run_data_paths(model)
        features = features if features is not None else run_features
        if data is None:
            raise DemoError(f"no data set given: pass --data (and --features), the prepared data set {model} was "
                            "trained on; it has no run_config.json next to it to read them from")
        if not Path(data).is_dir():
            raise DemoError(f"the data set of the run that wrote {model} ({data}, from its run_config.json) is not "
                            "there; run from the folder the training ran in, or pass --data and --features")
    return replace(settings, model=model, data=data, features=features)


def resolve_poster(path: str | None, posters_dir: Path | None) -> Path | None:
    """The item's poster: the file of that name in `posters_dir` (a data set copied elsewhere, e.g. a Space, keeps
    the paths of the machine that prepared it), else its recorded path, else None."""
    if not path:
        return None
    moved = posters_dir / Path(path).name if posters_dir is not None else None
    if moved is not None and moved.is_file():
        return moved
    return Path(path) if Path(path).is_file() else None


@dataclass
class Catalogue:
    """The items a user can pick and be recommended: per item a unique `label` (the title, `[#id]` appended when
    shared), title, description, poster (or None), `popularity` (positive train interactions); the protocol's
    `history_length`; `log`: the interactions of every split, as columns."""

    name: str
    labels: list[str]
    titles: list[str]
    descriptions: list[str]
    posters: list[Path | None]
    popularity: np.ndarray
    history_length: int
    num_users: int
    log: dict[str, np.ndarray]
    _ids_by_label: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._ids_by_label = {label.casefold(): item_id for item_id, label in enumerate(self.labels)}

    @classmethod
    def from_data(cls, data: RecommendationData, descriptions: Sequence[str | None], posters_dir: Path | None) -> Catalogue:
        """The catalogue of a prepared data set; `posters_dir`: see `DemoSettings.posters`."""
        train = data.interactions["train"]
        titles = list(data.items["title"])
        counts = Counter(titles)
        return cls(
            name=data.name,
            labels=[title if counts[title] == 1 else f"{title} [#{item_id}]" for item_id, title in enumerate(titles)],
            titles=titles,
            descriptions=[text or "" for text in descriptions],
            posters=[resolve_poster(path, posters_dir) for path in data.items["poster_path"]],
            popularity=np.bincount(np.asarray(train["item_id"])[np.asarray(train["label"]) == 1], minlength=data.num_items),
            history_length=int(data.info["protocol"]["history_length"]),
            num_users=data.num_users,
            log=interaction_log(data),
        )

    @property
    def num_items(self) -> int:
        return len(self.titles)

    def search(self, query: str, limit: int = 24) -> list[int]:
        """Items whose label contains `query` (case-insensitive), most popular first."""
        query = query.strip().casefold()
        matches = [item_id for item_id, label in enumerate(self.labels) if query in label.casefold()]
        return sorted(matches, key=lambda item_id: -self.popularity[item_id])[:limit]

    def find(self, label: str) -> int | None:
        """The item of a label (case-insensitive), None when there is none."""
        return self._ids_by_label.get(label.strip().casefold())

    def item_id(self, label: str) -> int:
        """The item of a label (case-insensitive); `DemoError` with the closest labels when there is none."""
        item_id = self.find(label)
        if item_id is None:
            close = difflib.get_close_matches(label, self.labels, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(title) for title in close)}?" if close else "; search the catalogue to find one"
            raise DemoError(f"unknown movie {label!r}: not in the {self.name} catalogue{hint}")
        return item_id

    def check_user(self, user_id: int) -> None:
        if not 0 <= user_id < self.num_users:
            raise DemoError(f"user {user_id} does not exist: the {self.name} data set has users 0 to {self.num_users - 1}")

    def liked_items(self, user_id: int) -> list[int]:
        """The user's most recent positive items (the protocol's history length), oldest first."""
        self.check_user(user_id)
        mine = (self.log["user_id"] == user_id) & (self.log["label"] == 1)
        order = np.argsort(self.log["timestamp"][mine], kind="stable")
        return [int(item) for item in self.log["item_id"][mine][order][-self.history_length :]]

    def seen_items(self, user_id: int) -> set[int]:
        """Every item the user interacted with, in train, valid or test (`modeling_userllm.data.common.seen_items`)."""
        self.check_user(user_id)
        return seen_items(self.log, user_id)

    def candidate_pool(self, excluded: set[int], max_candidates: int, seed: int) -> tuple[list[int], str | None]:
        """The unseen items to score, and a note when only a pool is: above `max_candidates`, the most popular half
        plus a seeded random sample of the rest (a large catalogue answers in seconds and still shows niche items)."""
        unseen = [item_id for item_id in range(self.num_items) if item_id not in excluded]
        if len(unseen) <= max_candidates:
            return unseen, None
        by_popularity = sorted(unseen, key=lambda item_id: (-self.popularity[item_id], item_id))
        num_popular = max_candidates // 2
        rest = by_popularity[num_popular:]
        sampled = np.random.default_rng(seed).choice(len(rest), size=max_candidates - num_popular, replace=False)
        pool = sorted(by_popularity[:num_popular] + [rest[index] for index in sampled])
        note = (f"Scored a candidate pool of {max_candidates:,} of the {len(unseen):,} unseen items: the "
                f"{num_popular:,} most popular plus {max_candidates - num_popular:,} drawn at random (seed {seed}). "
                "Start the demo with a larger --max-candidates to score more.")
        return pool, note


@dataclass
class Recommender:
    """A loaded checkpoint (`name` as the page shows it) and the builder of its items' records."""

    name: str
    model: torch.nn.Module
    processor: object
    builder: RecordBuilder

    def rank(self, user_id: int, history: Sequence[int], candidates: Sequence[int], top_k: int, batch_size: int,
             progress: Callable[[int, int], None] | None = None) -> list[tuple[int, float]]:
        """The top `top_k` candidates for this history, as `(item_id, score)`, best first."""
        user_record = {"user_id": user_id, "history": [self.builder.item(item_id) for item_id in history]}
        items = [self.builder.item(item_id) for item_id in candidates]
        indices, scores = rank_candidates(self.model, self.processor, user_record, items, batch_size=batch_size,
                                          top_k=top_k, progress=progress)
        return [(int(candidates[index]), float(score)) for index, score in zip(indices.tolist(), scores.tolist())]


def load_recommender(model_name: str, settings: DemoSettings) -> tuple[Recommender, RecommendationData]:
    """One checkpoint with the data and features it needs; `DemoError` when they do not fit its config."""
    model, processor = load_checkpoint(model_name)
    config = model.config
    data_args = DataArguments(data_dir=settings.data, features_dir=settings.features,
                              description_source=settings.description_source)
    try:
        run_data = load_run_data(
            data_args, use_visual=config.use_visual, use_collaborative=config.use_collaborative,
            use_descriptions=config.use_descriptions, vision_feature_size=config.vision_feature_size,
            collaborative_size=config.collaborative_size,
        )
    except (PresetError, ValueError) as error:
        raise DemoError(f"{model_name}: {error}") from error
    data = run_data.data
    if config.use_collaborative and (config.num_users, config.num_items) != (data.num_users, data.num_items):
        raise DemoError(f"{model_name} was trained on {config.num_items} items and {config.num_users} users, but the "
                        f"data set {settings.data} has {data.num_items} items and {data.num_users} users: serve it with "
                        "the data set it was trained on")
    return Recommender(f"{config.variant or 'USER-LLM'} ({model_name})", model, processor, run_data.builder), data


def load_demo(settings: DemoSettings) -> tuple[list[Recommender], Catalogue]:
    """One or two recommenders and the catalogue (`DemoError`: see `resolve_demo_paths`, `load_recommender`)."""
    settings = resolve_demo_paths(settings)
    if settings.max_candidates < 1:
        raise DemoError(f"--max-candidates must be at least 1, got {settings.max_candidates}")
    recommenders = []
    for model_name in filter(None, [settings.model, settings.compare_model]):
        logger.info("Loading %s", model_name)
        recommender, data = load_recommender(model_name, settings)
        recommenders.append(recommender)
    if len(recommenders) == 2 and recommenders[0].name == recommenders[1].name:
        recommenders[1].name += " [2]"
    # Shown under each poster: the item table's description, else one a model reads (e.g. generated).
    descriptions = [data.items["description"][item_id] or next(
        (r.builder.descriptions[item_id] for r in recommenders if r.builder.descriptions[item_id]), None)
        for item_id in range(data.num_items)]
    posters_dir = Path(settings.posters) if settings.posters else Path(settings.data).parent / "posters"
    return recommenders, Catalogue.from_data(data, descriptions, posters_dir)


def parse_user_id(value: str | float | None) -> int | None:
    """A user id typed on the page: None when empty (a new user), else an integer (`DemoError` otherwise)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except ValueError:
        raise DemoError(f"the user id must be a whole number, got {value!r}") from None
    if not number.is_integer():
        raise DemoError(f"the user id must be a whole number, got {value!r}")
    return int(number)


def recommend(recommenders: Sequence[Recommender], catalogue: Catalogue, history_labels: Sequence[str] | None,
              user_id: int | None = None, top_k: int = 10, max_candidates: int = 500, seed: int = 0, batch_size: int = 64,
              placeholder: str | Path = PLACEHOLDER_NAME, progress: ProgressCallback | None = None) -> Ranking:
    """Ranks the catalogue's unseen items for a history, with every model.

    Args:
        history_labels: liked movies, oldest first (catalogue labels, any case).
        user_id: a real user (their collaborative embedding is used, every item they rated left out), or None.
        max_candidates, seed: the candidate pool (see `Catalogue.candidate_pool`).
        placeholder: the image shown for an item without a poster.
        progress: called with (fraction done, description) while scoring.

    Raises:
        DemoError: an empty history, an unknown title or user, a top_k below 1.
    """
    labels = [label for label in (history_labels or []) if label and label.strip()]
    if not labels:
        raise DemoError("Pick at least one movie you liked (or start from a real user) to get recommendations.")
    if top_k < 1:
        raise DemoError(f"Ask for at least one recommendation (top K = {top_k}).")
    history = [catalogue.item_id(label) for label in labels]
    excluded = set(history) | (catalogue.seen_items(user_id) if user_id is not None else set())
    candidates, pool_note = catalogue.candidate_pool(excluded, max_candidates, seed)
    if not candidates:
        raise DemoError("Every movie of the catalogue is in the history or already seen: nothing is left to recommend.")
    user_id = -1 if user_id is None else user_id
    results = {}
    for index, recommender in enumerate(recommenders):
        def report(done: int, total: int, index=index, name=recommender.name) -> None:
            progress((index + done / total) / len(recommenders), f"{name}: scored {done:,} of {total:,} candidates")

        top = recommender.rank(user_id, history, candidates, top_k, batch_size, report if progress else None)
        results[recommender.name] = [Recommendation(
            rank=rank, item_id=item_id, title=catalogue.titles[item_id], description=catalogue.descriptions[item_id],
            score=score, probability=float(torch.sigmoid(torch.tensor(score))),
            poster=str(catalogue.posters[item_id] or placeholder), has_poster=catalogue.posters[item_id] is not None,
        ) for rank, (item_id, score) in enumerate(top, start=1)]
    notes = [pool_note] if pool_note else []
    longest = max(int(recommender.model.config.max_history_items) for recommender in recommenders)
    if len(history) > longest:
        notes.insert(0, f"The model reads the {longest} most recent of your {len(history)} picks; the earlier ones only "
                        "keep those movies out of the recommendations.")
    return Ranking(history=history, user_id=user_id, results=results, num_unseen=catalogue.num_items - len(excluded),
                   num_scored=len(candidates), notes=notes)

