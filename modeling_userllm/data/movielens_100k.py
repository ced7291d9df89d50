"""MovieLens-100K (GroupLens) with optional TMDB posters and plot summaries.

Files read from `data_dir`:

- `u.data`: `user id \\t item id \\t rating \\t timestamp` (100,000 ratings 1-5).
- `u.item`: `|`-separated, 24 fields (id, title, release date, video date, IMDb URL, 19 genre flags),
  latin-1 encoded as documented by GroupLens.
- optional `posters/<movie id>.jpg` (a missing poster is normal: poster_path None) and `tmdb_overviews.csv`
  (`movie_id`, `overview`, ...): the `description`, the first non-empty overview of each movie id.

`download_movielens_100k` fetches the official zip for a user with internet; the builder never does.
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd

from .common import RecommendationData
from .parsing import (
    FLOAT, INT, check_scale, check_unique_ids, missing_raw_files, parse_lines, poster_paths, read_csv_columns, read_table,
    read_text,
)
from .protocol import build_data_set

ML_100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"

# CoLLM's MovieLens label (rating >= 4) and TALLRec's 10-item history on this data set.
DEFAULT_PROTOCOL = {"threshold": 4.0, "history_length": 10, "min_history": 10, "long_min_history": 20}

U_ITEM_FIELDS = 24
NEEDS = "u.data and u.item (optional: tmdb_overviews.csv, posters/<movie id>.jpg)"
SOURCE = (f"MovieLens-100K is GroupLens' ml-100k.zip ({ML_100K_URL}, https://grouplens.org/datasets/movielens/100k/): "
          "unzip it and pass its ml-100k folder, or fetch it with modeling_userllm.data.download_movielens_100k().")


def read_ratings(path: Path) -> pd.DataFrame:
    """`u.data` -> `user`, `item` (str), `rating` (float), `timestamp` (int); a located `ValueError` for an empty
    file, a malformed line or a rating off the 1-5 whole-star scale."""
    frame = read_table(path, "\t", {"user": INT, "item": INT, "rating": FLOAT, "timestamp": INT})
    check_scale(path, frame["rating"].to_numpy(), 1.0, 5.0, step=1.0)
    return frame.astype({"user": str, "item": str})


def _title_fields(line: str) -> tuple[str, str]:
    fields = line.split("|")
    if len(fields) != U_ITEM_FIELDS or not fields[0].isdigit():
        raise ValueError(f"expected {U_ITEM_FIELDS} '|'-separated fields starting with an integer movie id")
    return fields[0], fields[1]


def read_items(data_dir: Path) -> tuple[pd.DataFrame, int]:
    """The item frame (`raw_id`, `title`, `description`, `poster_path`) in `u.item` order and the number of
    movies without a poster; a located `ValueError` for a bad `u.item` line or a movie id on two lines."""
    path = data_dir / "u.item"
    rows = parse_lines(path, read_text(path, latin1_fallback=True), _title_fields)
    items = pd.DataFrame(rows, columns=["raw_id", "title"])
    check_unique_ids(path, items["raw_id"], field="movie id")
    overviews = {}
    if (data_dir / "tmdb_overviews.csv").is_file():
        frame = read_csv_columns(data_dir / "tmdb_overviews.csv", ["movie_id", "overview"])
        frame = frame[frame["overview"].str.strip() != ""].drop_duplicates("movie_id", keep="first")
        overviews = dict(zip(frame["movie_id"].str.strip(), frame["overview"].str.strip()))
    items["description"] = items["raw_id"].map(overviews)
    items["poster_path"], missing = poster_paths(data_dir / "posters", [[f"{raw}.jpg"] for raw in items["raw_id"]])
    return items, missing


def load_movielens_100k(data_dir: str | Path, **options) -> RecommendationData:
    """Builds the common form from a MovieLens-100K folder (the module docstring's files).

    Args:
        **options: overrides of `DEFAULT_PROTOCOL` (see `Protocol`) and selection options (see `Selection`).
    """
    data_dir = Path(data_dir)
    if missing := [name for name in ("u.data", "u.item") if not (data_dir / name).is_file()]:
        raise missing_raw_files(data_dir, " and ".join(missing), "ml-100k", NEEDS, SOURCE)
    ratings = read_ratings(data_dir / "u.data")
    items, missing_posters = read_items(data_dir)
    descriptions = "tmdb_overviews.csv" if items["description"].notna().any() else None
    return build_data_set("ml-100k", data_dir, ratings, items, DEFAULT_PROTOCOL, options,
                          missing_posters=missing_posters, descriptions=descriptions)


def download_movielens_100k(url: str = ML_100K_URL, cache_dir: str | Path | None = None) -> Path:
    """Downloads and unpacks the MovieLens-100K zip once (later calls reuse the copy) into `cache_dir` (default
    `<HF datasets cache>/userllm`); `file://` addresses work too. Returns the folder holding `u.data`.

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
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(Path(staging) / "unpacked")
        found = sorted((Path(staging) / "unpacked").rglob("u.data"))
        if not found:
            raise ValueError(f"{url}: the archive has no u.data")
        found[0].parent.rename(destination)
    return destination
