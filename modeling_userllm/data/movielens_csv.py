"""MovieLens "latest" CSV layout, also Kaggle's "The Movies Dataset" (the paper's "movie").

Files read from `data_dir`:

- ratings: `ratings_file`, else whichever of `ratings.csv` and `ratings_small.csv` exists (both is an error: the
  full Kaggle bundle's 26M-row `ratings.csv` must never be picked silently), with a header naming
  `userId,movieId,rating,timestamp` in any order; ratings on the 0.5-5 half-star scale.
- titles, one or both of `movies.csv` (`movieId,title,genres`) and `links.csv` (`movieId,imdbId,tmdbId`) +
  `movies_metadata.csv` (`id` = TMDB id, `title`, `overview`, `poster_path`): titles where movies.csv lacks them
  and the `description` (TMDB overview). Kaggle's metadata rows whose `id` is not an integer are skipped, and
  repeated TMDB ids keep their first row; both counted in `info["source"]`.
- optional `posters/`: `<movieId>.jpg`, or the file named like the TMDB `poster_path`.

Ratings of movies with no title anywhere are dropped with a counted warning; a `movieId` on two lines of
`movies.csv` is an error naming both lines.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from .common import RecommendationData
from .parsing import (
    FLOAT, INT, STR, check_scale, check_unique_ids, missing_raw_files, poster_paths, read_csv_columns, read_table, read_text,
)
from .protocol import build_data_set, natural_order

# The paper's protocol on The Movies Dataset: rating >= 2.5, >= 5 history interactions, n = 5;
# Table 5's long histories: users with >= 10 history interactions.
DEFAULT_PROTOCOL = {"threshold": 2.5, "history_length": 5, "min_history": 5, "long_min_history": 10}

RATING_COLUMNS = {"userId": INT, "movieId": INT, "rating": FLOAT, "timestamp": INT}
RATINGS_FILES = ("ratings.csv", "ratings_small.csv")
NEEDS = ("ratings.csv or ratings_small.csv (userId,movieId,rating,timestamp), and movies.csv or links.csv + "
         "movies_metadata.csv (optional: posters/)")
SOURCE = ("The paper's 'movie' data is Kaggle's 'The Movies Dataset' (https://www.kaggle.com/datasets/rounakbanik/"
          "the-movies-dataset: ratings_small.csv, links.csv, movies_metadata.csv); any MovieLens CSV release "
          "(https://grouplens.org/datasets/movielens/, e.g. ml-latest-small: ratings.csv, movies.csv) works too.")


def find_ratings_file(data_dir: Path, name: str | Path | None = None) -> Path:
    """The ratings file: `name` (relative to `data_dir`, or absolute), else the only one of `RATINGS_FILES`
    present; a `FileNotFoundError` when it is missing, a `ValueError` when both are present and none is named."""
    if name is not None:
        path = data_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"ratings_file {path} does not exist")
        return path
    present = [data_dir / candidate for candidate in RATINGS_FILES if (data_dir / candidate).is_file()]
    if not present:
        raise missing_raw_files(data_dir, "ratings.csv or ratings_small.csv (or name one with ratings_file)",
                                "movielens-csv", NEEDS, SOURCE)
    if len(present) > 1:
        raise ValueError(
            f"{data_dir}: both ratings.csv (the full Kaggle bundle, 26M ratings) and ratings_small.csv exist; "
            "name the one to use with ratings_file (the paper's 'movie' set comes from ratings_small.csv)"
        )
    return present[0]


def rating_converters(path: Path) -> dict:
    """Converters of a ratings CSV in its header's column order (columns read by name); a `ValueError` when the
    first line is not a header naming the four rating columns once each."""
    text = read_text(path, header=True)
    first = next((line for line in text.splitlines() if line.strip()), "")
    names = [name.strip() for name in first.split(",")]
    missing = [name for name in RATING_COLUMNS if name not in names]
    if missing:
        looks_like_data = all(name.replace(".", "", 1).isdigit() for name in names if name)
        problem = "has no header line" if looks_like_data else f"header lacks the columns {missing}"
        raise ValueError(
            f"{path}: line 1: {problem} (got {first!r}); the file needs a header naming "
            f"{','.join(RATING_COLUMNS)} (in any order)"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{path}: line 1: header names the columns {repeated} more than once: {first!r}")
    return {name: RATING_COLUMNS.get(name, STR) for name in names}


def read_ratings(path: Path) -> pd.DataFrame:
    """The ratings file -> `user`, `item` (str), `rating`, `timestamp`; a located `ValueError` for no header, an
    empty file, a malformed line or a rating off the 0.5-5 half-star scale."""
    frame = read_table(path, ",", rating_converters(path), header=True)
    check_scale(path, frame["rating"].to_numpy(), 0.5, 5.0, step=0.5, header=True)
    return pd.DataFrame({"user": frame["userId"].astype(str), "item": frame["movieId"].astype(str),
                         "rating": frame["rating"], "timestamp": frame["timestamp"]})


def read_metadata(data_dir: Path) -> tuple[pd.DataFrame, int, int]:
    """links.csv + movies_metadata.csv -> `title`, `overview`, `tmdb_poster` by movieId (empty without the files),
    the number of metadata rows skipped for a non-integer TMDB id and of rows repeating a TMDB id (first kept)."""
    links_file, metadata_file = data_dir / "links.csv", data_dir / "movies_metadata.csv"
    if not (links_file.is_file() and metadata_file.is_file()):
        return pd.DataFrame(columns=["title", "overview", "tmdb_poster"]), 0, 0
    links = read_csv_columns(links_file, ["movieId", "tmdbId"])
    metadata = read_csv_columns(metadata_file, ["id", "title", "overview", "poster_path"])
    valid = metadata["id"].str.strip().str.isdigit()
    metadata = metadata[valid]
    if repeated := int(metadata["id"].str.strip().duplicated().sum()):
        warnings.warn(f"{metadata_file}: {repeated} rows repeat a TMDB id; kept the first row of each", stacklevel=2)
    metadata = metadata.drop_duplicates("id", keep="first")
    merged = links.merge(metadata, left_on=links["tmdbId"].str.strip(), right_on="id", how="inner")
    merged = merged.drop_duplicates("movieId", keep="first").set_index("movieId")
    merged = merged.rename(columns={"poster_path": "tmdb_poster"})
    return merged[["title", "overview", "tmdb_poster"]], int((~valid).sum()), repeated


def read_items(data_dir: Path, rated_items: pd.Series) -> tuple[pd.DataFrame, dict]:
    """The item frame (`raw_id`, `title`, `description`, `poster_path`) of the titled movies, and notes."""
    titles = {}
    if (data_dir / "movies.csv").is_file():
        movies = read_csv_columns(data_dir / "movies.csv", ["movieId", "title"])
        check_unique_ids(data_dir / "movies.csv", movies["movieId"], header=True, quoted=True, field="movieId")
        titles = dict(zip(movies["movieId"].str.strip(), movies["title"]))
    metadata, skipped, repeated = read_metadata(data_dir)
    if not titles and metadata.empty:
        raise missing_raw_files(data_dir, "movies.csv, nor links.csv + movies_metadata.csv", "movielens-csv", NEEDS, SOURCE)
    for movie_id, title in metadata["title"].items():
        if title.strip():
            titles.setdefault(movie_id, title)
    raw_ids = natural_order(pd.concat([pd.Series(list(titles)), rated_items]))
    raw_ids = [raw for raw in raw_ids if raw in titles]
    overviews = metadata["overview"].reindex(raw_ids).tolist()
    tmdb_posters = metadata["tmdb_poster"].reindex(raw_ids).fillna("").tolist()
    candidates = [[f"{raw}.jpg", *([Path(poster).name] if poster.strip() else [])]
                  for raw, poster in zip(raw_ids, tmdb_posters)]
    posters, missing = poster_paths(data_dir / "posters", candidates)
    items = pd.DataFrame({"raw_id": raw_ids, "title": [titles[raw] for raw in raw_ids], "description": overviews,
                          "poster_path": posters})
    return items, {"missing_posters": missing, "metadata_rows_skipped": skipped, "metadata_repeated_ids": repeated}


def load_movielens_csv(data_dir: str | Path, *, ratings_file: str | Path | None = None, **options) -> RecommendationData:
    """Builds the common form ("movielens-csv") from a MovieLens-latest / The Movies Dataset folder.

    Args:
        data_dir: folder with the files of the module docstring.
        ratings_file: the ratings file (e.g. "ratings_small.csv"); see `find_ratings_file`.
        **options: overrides of `DEFAULT_PROTOCOL` (see `Protocol`) and selection options (see `Selection`).
    """
    data_dir = Path(data_dir)
    ratings_path = find_ratings_file(data_dir, ratings_file)
    ratings = read_ratings(ratings_path)
    items, notes = read_items(data_dir, ratings["item"])
    return build_data_set("movielens-csv", data_dir, ratings, items, DEFAULT_PROTOCOL, options,
                          files={"ratings_file": ratings_path.name}, **notes)
