"""MovieLens "latest" CSV layout, also Kaggle's "The Movies Dataset" (the paper's "movie").

Files read from `data_dir`:

- ratings: `ratings.csv`, else `ratings_small.csv` (`userId,movieId,rating,timestamp`,
  half-star ratings, header line).
- titles, one or both of:
  - `movies.csv` (`movieId,title,genres`);
  - `links.csv` (`movieId,imdbId,tmdbId`) + `movies_metadata.csv` (`id` = TMDB id, `title`,
    `overview`, `poster_path`): gives titles where movies.csv lacks them and the
    `description` (TMDB overview). Kaggle's metadata has a few shifted rows whose `id` is
    not an integer; they are skipped and counted in `info["source"]`.
- optional `posters/`: `<movieId>.jpg`, or the file named like the TMDB `poster_path`.

Ratings of movies with no title anywhere are dropped with a counted warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from .common import RecommendationData
from .parsing import FLOAT, INT, poster_paths, read_csv_columns, read_table
from .protocol import Protocol, apply_protocol, natural_order

logger = logging.getLogger(__name__)

# The paper's protocol on The Movies Dataset: rating >= 2.5, >= 5 history interactions, n = 5.
DEFAULT_PROTOCOL = {"threshold": 2.5, "history_length": 5, "min_history": 5}

RATING_COLUMNS = {"userId": INT, "movieId": INT, "rating": FLOAT, "timestamp": INT}


def ratings_file(data_dir: Path) -> Path:
    """`ratings.csv` if present, else `ratings_small.csv`.

    Raises:
        FileNotFoundError: neither exists.
    """
    for name in ("ratings.csv", "ratings_small.csv"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(f"{data_dir}: no ratings.csv or ratings_small.csv")


def read_ratings(path: Path) -> pd.DataFrame:
    """The ratings file -> frame with `user`, `item` (str), `rating`, `timestamp`."""
    frame = read_table(path, ",", RATING_COLUMNS, header=True)
    return pd.DataFrame(
        {
            "user": frame["userId"].astype(str),
            "item": frame["movieId"].astype(str),
            "rating": frame["rating"],
            "timestamp": frame["timestamp"],
        }
    )


def read_metadata(data_dir: Path) -> tuple[pd.DataFrame, int]:
    """links.csv + movies_metadata.csv -> frame indexed by movieId (title, overview, poster).

    Returns:
        The frame (empty when the files are absent) and the number of metadata rows
        skipped for a non-integer TMDB id.
    """
    links_file, metadata_file = data_dir / "links.csv", data_dir / "movies_metadata.csv"
    if not (links_file.is_file() and metadata_file.is_file()):
        return pd.DataFrame(columns=["title", "overview", "tmdb_poster"]), 0
    links = read_csv_columns(links_file, ["movieId", "tmdbId"])
    metadata = read_csv_columns(metadata_file, ["id", "title", "overview", "poster_path"])
    valid = metadata["id"].str.strip().str.isdigit()
    metadata = metadata[valid].drop_duplicates("id", keep="first")
    merged = links.merge(metadata, left_on=links["tmdbId"].str.strip(), right_on="id", how="inner")
    merged = merged.drop_duplicates("movieId", keep="first").set_index("movieId")
    merged = merged.rename(columns={"poster_path": "tmdb_poster"})
    return merged[["title", "overview", "tmdb_poster"]], int((~valid).sum())


def read_items(data_dir: Path, rated_items: pd.Series) -> tuple[pd.DataFrame, dict]:
    """Item frame (raw_id, title, description, poster_path) over titled movies, and notes."""
    titles = {}
    if (data_dir / "movies.csv").is_file():
        movies = read_csv_columns(data_dir / "movies.csv", ["movieId", "title"])
        titles = dict(zip(movies["movieId"].str.strip(), movies["title"]))
    metadata, skipped = read_metadata(data_dir)
    if not titles and metadata.empty:
        raise FileNotFoundError(f"{data_dir}: need movies.csv or links.csv + movies_metadata.csv")
    for movie_id, title in metadata["title"].items():
        if title.strip():
            titles.setdefault(movie_id, title)
    raw_ids = natural_order(pd.concat([pd.Series(list(titles)), rated_items]))
    raw_ids = [raw for raw in raw_ids if raw in titles]
    overviews = metadata["overview"].reindex(raw_ids).tolist()
    tmdb_posters = metadata["tmdb_poster"].reindex(raw_ids).fillna("").tolist()
    candidates = [
        [f"{raw}.jpg", *([Path(poster).name] if poster.strip() else [])]
        for raw, poster in zip(raw_ids, tmdb_posters)
    ]
    posters, missing = poster_paths(data_dir / "posters", candidates)
    items = pd.DataFrame(
        {
            "raw_id": raw_ids,
            "title": [titles[raw] for raw in raw_ids],
            "description": overviews,
            "poster_path": posters,
        }
    )
    return items, {"missing_posters": missing, "metadata_rows_skipped": skipped}


def load_movielens_csv(data_dir: str | Path, **protocol) -> RecommendationData:
    """Builds the common form from a MovieLens-latest / The Movies Dataset folder.

    Args:
        data_dir: folder with the files of the module docstring.
        **protocol: overrides of `DEFAULT_PROTOCOL` (see `Protocol`).

    Returns:
        The data set, named "movielens-csv".
    """
    data_dir = Path(data_dir)
    ratings_path = ratings_file(data_dir)
    ratings = read_ratings(ratings_path)
    items, notes = read_items(data_dir, ratings["item"])
    if notes["missing_posters"]:
        logger.info("%d of %d movies have no poster", notes["missing_posters"], len(items))
    notes = {
        "data_dir": str(data_dir.resolve()),
        "ratings_file": ratings_path.name,
        "raw_ratings": len(ratings),
        "raw_users": int(ratings["user"].nunique()),
        "raw_items": len(items),
        **notes,
    }
    return apply_protocol(
        ratings,
        items,
        name="movielens-csv",
        protocol=Protocol.with_overrides(DEFAULT_PROTOCOL, protocol),
        notes=notes,
    )
