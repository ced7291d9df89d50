"""Toy movies: a small synthetic data set with planted preferences (the embedded default, docs/DATA.md).

Each input of USER-LLM carries a signal the others lack. Item i has a genre g_i, a poster style v_i (shape
and colour on a genre-coloured 64x64 poster; `missing_poster_fraction` have none), a hidden taste group h_i
and a quality q_i ~ N(0, quality_std^2); its title names the genre except for an `ambiguous_fraction`, its
description states the reception (quality tercile) and the genre. User u has a cluster c_u and a style s_u
(popularity skewed by `cluster_skew`, `style_skew`) and a current genre z_u(t) that switches with
`switch_probability` before each interaction. Each user rates distinct random items at sorted times over a
year, with label ~ Bernoulli(sigmoid(logit)) and rating 4-5 if positive, 1-3 if not:

    logit = bias + q_i + w_collaborative [h_i = c_u] + w_visual [v_i = s_u] + w_history [g_i = z_u(t)]

[h_i = c_u] shows only in who liked what (collaborative ids), [v_i = s_u] only on the poster, [g_i = z_u(t)]
needs the target's genre and the user's recent positives (history). `oracle_test_auc` is the AUC of the
planted probabilities on the test split (about 0.87 with seed 0): the ceiling, as labels are coin flips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ..metrics import auc
from .common import RecommendationData
from .protocol import Protocol, apply_protocol, split_interactions

GENRES = ("action", "comedy", "horror", "romance", "science fiction")
GENRE_WORDS = {
    "action": ("Strike", "Bullet", "Fury", "Getaway", "Showdown", "Vendetta"),
    "comedy": ("Wedding", "Shenanigans", "Roommates", "Vacation", "Mix-Up", "Pranksters"),
    "horror": ("Haunting", "Curse", "Crypt", "Possession", "Nightmare", "Slasher"),
    "romance": ("Kiss", "Sweetheart", "Valentine", "Love Letters", "Honeymoon", "Serenade"),
    "science fiction": ("Starship", "Android", "Galaxy", "Wormhole", "Cyborg", "Quantum"),
}
GENRE_ADJECTIVES = {
    "action": ("explosive", "relentless", "high-octane"),
    "comedy": ("hilarious", "light-hearted", "goofy"),
    "horror": ("chilling", "terrifying", "blood-curdling"),
    "romance": ("tender", "heartfelt", "swooning"),
    "science fiction": ("futuristic", "mind-bending", "interstellar"),
}
GENRE_COLOURS = {"action": (200, 40, 30), "comedy": (250, 160, 30), "horror": (25, 25, 35), "romance": (235, 120, 170),
                 "science fiction": (30, 60, 190)}
STYLES = ("circle", "square", "triangle")
STYLE_COLOURS = {"circle": (250, 235, 60), "square": (60, 225, 235), "triangle": (235, 60, 220)}
THEMES = ("Midnight", "Silver", "Last", "Northern", "Hidden", "Crimson", "Broken", "Endless", "Summer", "Winter", "Lonely",
          "Golden")
NEUTRAL_NOUNS = ("River", "Stranger", "Island", "Road", "House", "Promise", "Signal", "Harbor", "Garden")

# Threshold 4 recovers the planted label; n = 5 recent positives span about one taste phase.
DEFAULT_PROTOCOL = {"threshold": 4.0, "history_length": 5, "min_history": 3, "long_min_history": 10}

DEFAULT_GENERATOR = {
    "num_users": 600, "num_items": 200, "interactions_per_user": (40, 60), "num_clusters": 4, "ambiguous_fraction": 0.4,
    "missing_poster_fraction": 0.03, "switch_probability": 0.05, "quality_std": 0.8, "cluster_skew": 0.8,
    "style_skew": 0.8, "bias": -2.2, "w_collaborative": 2.0, "w_visual": 2.0, "w_history": 3.0,
}
# Quality terciles of a normal distribution: |z| > 0.43 holds a third on each side.
RECEPTION_CUT = 0.43

POSTER_SIZE = 64
START_TIME = 1_600_000_000  # 2020-09-13, any fixed origin works
YEAR_SECONDS = 365 * 24 * 3600


def _make_titles(rng: np.random.Generator, genres: np.ndarray, ambiguous: np.ndarray) -> list[str]:
    """Unique titles; ambiguous ones use neutral nouns instead of genre words."""
    titles, seen = [], set()
    for genre, is_ambiguous in zip(genres, ambiguous):
        while True:
            theme, nouns = rng.choice(THEMES), NEUTRAL_NOUNS if is_ambiguous else GENRE_WORDS[GENRES[genre]]
            title = f"{'The ' if is_ambiguous else ''}{theme} {rng.choice(nouns)} ({rng.integers(1960, 2020)})"
            if title not in seen:
                break
        seen.add(title)
        titles.append(title)
    return titles


def reception(quality: float, quality_std: float) -> str:
    """What critics said: the quality tercile of N(0, quality_std^2), in words."""
    if quality > RECEPTION_CUT * quality_std:
        return "Critically acclaimed"
    if quality < -RECEPTION_CUT * quality_std:
        return "Poorly reviewed"
    return "Mixed reviews"


def _make_description(rng: np.random.Generator, genre: str, title: str, quality: float, quality_std: float) -> str:
    adjective = rng.choice(GENRE_ADJECTIVES[genre])
    subject = title.rsplit(" (", 1)[0].lower()
    article = "An" if adjective[0] in "aeiou" else "A"
    # The reception comes first so that per-item truncation of the prompt keeps it.
    return (f"{reception(quality, quality_std)}. {article} {adjective} {genre} film about {subject}, "
            f"packed with {rng.choice(GENRE_WORDS[genre]).lower()} moments.")


def preference_weights(count: int, skew: float) -> np.ndarray:
    """Probabilities of `count` options proportional to `exp(-skew * k)`: a popular first option."""
    weights = np.exp(-skew * np.arange(count))
    return weights / weights.sum()


def simulate_items(rng: np.random.Generator, num_items: int, num_clusters: int, ambiguous_fraction: float,
                   missing_poster_fraction: float, quality_std: float) -> pd.DataFrame:
    """`(num_items,)` frame of planted attributes and texts: raw_id, title, description, genre, style, group,
    quality, has_poster."""
    genres = rng.integers(len(GENRES), size=num_items)
    ambiguous = rng.random(num_items) < ambiguous_fraction
    titles = _make_titles(rng, genres, ambiguous)
    quality = rng.normal(0.0, quality_std, size=num_items)
    return pd.DataFrame({
        "raw_id": [f"m{index:04d}" for index in range(num_items)], "title": titles,
        "description": [_make_description(rng, GENRES[g], t, q, quality_std) for g, t, q in zip(genres, titles, quality)],
        "genre": genres, "style": rng.integers(len(STYLES), size=num_items),
        "group": rng.integers(num_clusters, size=num_items), "quality": quality,
        "has_poster": rng.random(num_items) >= missing_poster_fraction,
    })


def simulate_log(rng: np.random.Generator, items: pd.DataFrame, parameters: dict) -> pd.DataFrame:
    """The rating log: user, item (raw ids), rating, timestamp, the planted terms `base`, `collaborative`,
    `visual`, `history` (logit = their sum) and `probability`."""
    num_items = len(items)
    low, high = parameters["interactions_per_user"]
    cluster_weights = preference_weights(parameters["num_clusters"], parameters["cluster_skew"])
    style_weights = preference_weights(len(STYLES), parameters["style_skew"])
    frames = []
    for user in range(parameters["num_users"]):
        cluster = rng.choice(parameters["num_clusters"], p=cluster_weights)
        style = rng.choice(len(STYLES), p=style_weights)
        count = min(int(rng.integers(low, high + 1)), num_items)  # a small catalogue caps it
        chosen = rng.choice(num_items, size=count, replace=False)
        times = START_TIME + np.sort(rng.choice(YEAR_SECONDS, size=count, replace=False))
        switches = rng.random(count) < parameters["switch_probability"]
        shifts = rng.integers(1, len(GENRES), size=count)  # a switch always changes genre
        current = (rng.integers(len(GENRES)) + np.cumsum(np.where(switches, shifts, 0))) % len(GENRES)
        target = items.iloc[chosen]
        frames.append(pd.DataFrame({
            "user": f"u{user:04d}", "item": target["raw_id"].to_numpy(), "timestamp": times,
            "base": parameters["bias"] + target["quality"].to_numpy(),
            "collaborative": parameters["w_collaborative"] * (target["group"].to_numpy() == cluster),
            "visual": parameters["w_visual"] * (target["style"].to_numpy() == style),
            "history": parameters["w_history"] * (target["genre"].to_numpy() == current),
        }))
    log = pd.concat(frames, ignore_index=True)
    logit = log[["base", "collaborative", "visual", "history"]].sum(axis=1).to_numpy()
    log["probability"] = 1.0 / (1.0 + np.exp(-logit))
    labels = rng.random(len(log)) < log["probability"].to_numpy()
    log["rating"] = np.where(labels, rng.integers(4, 6, size=len(log)), rng.integers(1, 4, size=len(log))).astype(float)
    return log


def simulate(seed: int = 0, **generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`(items, log)` (`simulate_items`, `simulate_log`) drawn with `seed` and overrides of `DEFAULT_GENERATOR`."""
    if unknown := set(generator) - set(DEFAULT_GENERATOR):
        raise ValueError(f"unknown toy generator parameters {sorted(unknown)}; known: {sorted(DEFAULT_GENERATOR)}")
    parameters = {**DEFAULT_GENERATOR, **generator}
    rng = np.random.default_rng(seed)
    items = simulate_items(rng, *(parameters[key] for key in ("num_items", "num_clusters", "ambiguous_fraction",
                                                              "missing_poster_fraction", "quality_std")))
    return items, simulate_log(rng, items, parameters)


def draw_poster(genre: int, style: int, rng: np.random.Generator) -> Image.Image:
    """A 64x64 RGB poster: genre colour background, style shape in the style's colour."""
    background = np.clip(np.array(GENRE_COLOURS[GENRES[genre]]) + rng.integers(-20, 21, size=3), 0, 255)
    image = Image.new("RGB", (POSTER_SIZE, POSTER_SIZE), tuple(int(c) for c in background))
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(20, 34))
    left, top = (int(v) for v in rng.integers(4, POSTER_SIZE - size - 4, size=2))
    box = (left, top, left + size, top + size)
    colour = STYLE_COLOURS[STYLES[style]]
    if STYLES[style] == "circle":
        draw.ellipse(box, fill=colour)
    elif STYLES[style] == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(left, top + size), (left + size, top + size), (left + size // 2, top)], fill=colour)
    return image


def draw_posters(items: pd.DataFrame, poster_dir: Path, seed: int) -> list[str | None]:
    """Writes `<raw_id>.png` for items with a poster; returns absolute paths or None."""
    poster_dir = Path(poster_dir).resolve()
    poster_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 1])
    paths = []
    for raw_id, genre, style, has_poster in items[["raw_id", "genre", "style", "has_poster"]].itertuples(index=False):
        paths.append(str(poster_dir / f"{raw_id}.png") if has_poster else None)
        if has_poster:
            draw_poster(genre, style, rng).save(paths[-1])
    return paths


def make_toy_movies(seed: int = 0, poster_dir: str | Path | None = None, *, protocol: dict | None = None, **generator) -> RecommendationData:
    """The toy data set ("toy"; `info["generator"]`: seed and parameters) in the common form.

    Args:
        seed: equal seeds and parameters give identical data and posters.
        poster_dir: folder the posters are drawn into; None: no posters (the visual signal is unobservable).
        protocol: overrides of `DEFAULT_PROTOCOL`.
        **generator: overrides of `DEFAULT_GENERATOR`.
    """
    items, log = simulate(seed, **generator)
    posters = draw_posters(items, poster_dir, seed) if poster_dir is not None else [None] * len(items)
    item_frame = items[["raw_id", "title", "description"]].assign(poster_path=posters)
    parameters = {**DEFAULT_GENERATOR, **generator}
    notes = {"missing_posters": posters.count(None), "poster_dir": str(Path(poster_dir).resolve()) if poster_dir else None}
    data = apply_protocol(log[["user", "item", "rating", "timestamp"]], item_frame, name="toy",
                          protocol=Protocol.with_overrides(DEFAULT_PROTOCOL, protocol or {}), notes=notes)
    data.info["generator"] = {"seed": seed, **parameters, "interactions_per_user": list(parameters["interactions_per_user"])}
    return data


ORACLE_TERMS = ("collaborative", "visual", "history")


def oracle_test_auc(seed: int = 0, *, without: tuple[str, ...] = (), protocol: dict | None = None, **generator) -> float:
    """The AUC of the planted probabilities on the toy test split (the Bayes-optimal ceiling); `without`: planted
    terms (of `ORACLE_TERMS`) the scorer does not know, showing what each signal is worth. Other arguments as
    for `make_toy_movies`."""
    if unknown := set(without) - set(ORACLE_TERMS):
        raise ValueError(f"unknown oracle terms {sorted(unknown)}; known: {ORACLE_TERMS}")
    items, log = simulate(seed, **generator)
    known_terms = ["base", *(term for term in ORACLE_TERMS if term not in without)]
    log = log.assign(score=log[known_terms].sum(axis=1))[["user", "item", "rating", "timestamp", "score"]]
    tables, _ = split_interactions(log, items["raw_id"].tolist(), Protocol.with_overrides(DEFAULT_PROTOCOL, protocol or {}))
    test = tables["test"]
    return auc(test["label"].to_numpy(), test["score"].to_numpy())
