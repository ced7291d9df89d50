"""MovieLens-100K (GroupLens) with optional TMDB posters and plot summaries.

Files read from `data_dir`:

- `u.data`: `user id \\t item id \\t rating \\t timestamp` (100,000 ratings 1-5).
- `u.item`: `|`-separated, 24 fields (id, title, release date, video date, IMDb URL,
  19 genre flags), latin-1 encoded as documented by GroupLens.
- optional `posters/<movie id>.jpg`: a missing poster is normal (poster_path None).
- optional `tmdb_overviews.csv` (`movie_id`, `overview`, ...): becomes `description`;
  duplicate movie ids keep their first non-empty overview.

`download_movielens_100k` fetches the official zip into a local cache for a user with
internet; the builder itself never touches the network.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd

from .common import RecommendationData
from .parsing import (
    FLOAT, INT, check_not_empty, check_scale, check_unique_ids, missing_raw_files, poster_paths, read_csv_columns, read_table,
    read_text,
)
from .protocol import Protocol, apply_protocol
from .selection import split_options

logger = logging.getLogger(__name__)

ML_100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"

# CoLLM's MovieLens label (rating >= 4) and TALLRec's 10-item history on this data set.
DEFAULT_PROTOCOL = {"threshold": 4.0, "history_length": 10, "min_history": 10, "long_min_history": 20}

U_ITEM_FIELDS = 24


RATING_SCALE = (1.0, 5.0, 1.0)  # low, high, step: whole stars
REQUIRED_FILES = ("u.data", "u.item")
NEEDS = "u.data and u.item (optional: tmdb_overviews.csv, posters/<movie id>.jpg)"
SOURCE = (f"MovieLens-100K is GroupLens' ml-100k.zip ({ML_100K_URL}, https://grouplens.org/datasets/movielens/100k/): "
          "unzip it and pass its ml-100k folder, or fetch it with modeling_userllm.data.download_movielens_100k().")


def read_ratings(path: Path) -> pd.DataFrame:
    """`u.data` -> frame with `user`, `item` (str), `rating` (float), `timestamp` (int).

    Raises:
        ValueError: an empty file, a malformed line or a rating off the 1-5 whole-star
            scale, naming the file and the line.
    """
    frame = read_table(path, "\t", {"user": INT, "item": INT, "rating": FLOAT, "timestamp": INT})
    low, high, step = RATING_SCALE
    check_scale(path, frame["rating"].to_numpy(), low, high, step=step)
    return frame.astype({"user": str, "item": str})


def read_titles(path: Path) -> pd.DataFrame:
    """`u.item` -> frame with `raw_id` (str) and `title`, in file order.

    Raises:
        ValueError: an empty file, a line without 24 fields or with a non-integer id, or a
            movie id on two lines.
    """
    rows = []
    text = read_text(path, latin1_fallback=True)
    check_not_empty(path, text)
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != U_ITEM_FIELDS or not fields[0].isdigit():
            raise ValueError(
                f"{path}: line {line_number}: expected {U_ITEM_FIELDS} '|'-separated fields "
                f"starting with an integer movie id: {line!r}"
            )
        rows.append((fields[0], fields[1]))
    frame = pd.DataFrame(rows, columns=["raw_id", "title"])
    check_unique_ids(path, frame["raw_id"], field="movie id")
    return frame


def read_overviews(path: Path) -> dict[str, str]:
    """`tmdb_overviews.csv` -> {movie id: first non-empty overview}."""
    frame = read_csv_columns(path, ["movie_id", "overview"])
    frame = frame[frame["overview"].str.strip() != ""]
    frame = frame.drop_duplicates("movie_id", keep="first")
    return dict(zip(frame["movie_id"].str.strip(), frame["overview"].str.strip()))


def read_items(data_dir: Path) -> tuple[pd.DataFrame, int]:
    """The item frame (raw_id, title, description, poster_path) and the missing-poster count."""
    items = read_titles(data_dir / "u.item")
    overviews_file = data_dir / "tmdb_overviews.csv"
    overviews = read_overviews(overviews_file) if overviews_file.is_file() else {}
    items["description"] = items["raw_id"].map(overviews)
    posters, missing = poster_paths(data_dir / "posters", [[f"{raw}.jpg"] for raw in items["raw_id"]])
    items["poster_path"] = posters
    return items, missing


def load_movielens_100k(data_dir: str | Path, **options) -> RecommendationData:
    """Builds the common form from a MovieLens-100K folder.

    Args:
        data_dir: folder with `u.data` and `u.item` (see the module docstring).
        **options: overrides of `DEFAULT_PROTOCOL` (see `Protocol`) and selection options
            (see `Selection`).

    Returns:
        The data set; `info["source"]` holds the raw counts and missing posters.
    """
    data_dir = Path(data_dir)
    missing = [name for name in REQUIRED_FILES if not (data_dir / name).is_file()]
    if missing:
        raise missing_raw_files(data_dir, " and ".join(missing), "ml-100k", NEEDS, SOURCE)
    protocol, selection = split_options(options)
    ratings = read_ratings(data_dir / "u.data")
    items, missing_posters = read_items(data_dir)
    if missing_posters:
        logger.info("%d of %d movies have no poster", missing_posters, len(items))
    notes = {
        "data_dir": str(data_dir.resolve()),
        "raw_ratings": len(ratings),
        "raw_users": int(ratings["user"].nunique()),
        "raw_items": len(items),
        "missing_posters": missing_posters,
        "descriptions": "tmdb_overviews.csv" if items["description"].notna().any() else None,
    }
    return apply_protocol(
        ratings,
        items,
        name="ml-100k",
        protocol=Protocol.with_overrides(DEFAULT_PROTOCOL, protocol),
        selection=selection,
        notes=notes,
    )


def download_movielens_100k(url: str = ML_100K_URL, cache_dir: str | Path | None = None) -> Path:
    """Downloads and unpacks the MovieLens-100K zip once; later calls reuse the copy.

    Args:
        url: the zip's address; `file://` addresses work too (used by the tests).
        cache_dir: where to keep it; default `<HF datasets cache>/userllm`.

    Returns:
        The folder holding `u.data` and `u.item`, ready for `load_movielens_100k`.

    Raises:
        ValueError: the archive holds no `u.data`.
    """
    if cache_dir is None:
        from datasets import config

        cache_dir = Path(config.HF_DATASETS_CACHE) / "userllm"
    destination = Path(cache_dir) / "ml-100k"
    if (destination / "u.data").is_file():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as staging:
        archive = Path(staging) / "ml-100k.zip"
        with urllib.request.urlopen(url) as response, archive.open("wb") as file:
            shutil.copyfileobj(response, file)
        unpacked = Path(staging) / "unpacked"
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(unpacked)
        found = sorted(unpacked.rglob("u.data"))
        if not found:
            raise ValueError(f"{url}: the archive has no u.data")
        found[0].parent.rename(destination)
    return destination
