"""Netflix Prize training data.

Files read from `data_dir`:

- `combined_data_*.txt`: blocks of a `MovieID:` line followed by `CustomerID,Rating,Date`
  lines (rating 1-5, date `YYYY-MM-DD`, turned into unix seconds at 00:00 UTC, so ratings
  of one user on one day never see each other as history).
- `movie_titles.csv`: `MovieID,YearOfRelease,Title`, latin-1 as documented by Netflix;
  titles may contain commas, the year may be `NULL`. Titles become `"Title (year)"` like
  MovieLens'.
- optional `posters/<MovieID>.jpg`.

Whitespace around a line or a field is ignored (`1: ` is the block of movie 1). An empty
ratings file, or a MovieID on two lines of `movie_titles.csv`, is an error naming the file
(and the lines). The paper keeps 803 users with >= 10 history interactions: a seeded user
sample and the other selection options are in `selection.py`.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .common import RecommendationData
from .parsing import check_not_empty, check_unique_ids, missing_raw_files, poster_paths, read_text
from .protocol import Protocol, apply_protocol
from .selection import split_options

logger = logging.getLogger(__name__)

# The paper's protocol on Netflix: rating >= 4, >= 10 history interactions, n = 10.
# Table 5's long histories: users with >= 20 history interactions.
DEFAULT_PROTOCOL = {"threshold": 4.0, "history_length": 10, "min_history": 10, "long_min_history": 20}
NEEDS = "combined_data_*.txt and movie_titles.csv (optional: posters/<MovieID>.jpg)"
SOURCE = ("The Netflix Prize data is on Kaggle: https://www.kaggle.com/datasets/netflix-inc/netflix-prize-data "
          "(combined_data_1.txt to combined_data_4.txt, movie_titles.csv).")


def _netflix_line_error(path: Path, text: str) -> ValueError:
    """The error for the first line that is neither `MovieID:` nor a valid rating."""
    seen_movie = False
    for line_number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.endswith(":") and stripped[:-1].isdigit():
            seen_movie = True
            continue
        fields = [field.strip() for field in stripped.split(",")]
        problem = None
        if not seen_movie:
            problem = "rating before any 'MovieID:' line"
        elif len(fields) != 3:
            problem = f"expected 3 fields (CustomerID,Rating,Date), got {len(fields)}"
        elif not fields[0].isdigit():
            problem = f"bad CustomerID {fields[0]!r}"
        elif fields[1] not in {"1", "2", "3", "4", "5"}:
            problem = f"bad Rating {fields[1]!r}"
        elif pd.isna(pd.to_datetime(fields[2], format="%Y-%m-%d", errors="coerce")):
            problem = f"bad Date {fields[2]!r}"
        if problem:
            return ValueError(f"{path}: line {line_number}: {problem}: {line!r}")
    return ValueError(f"{path}: could not be parsed as Netflix Prize ratings")


def read_combined_file(path: Path) -> pd.DataFrame:
    """One `combined_data_*.txt` -> frame with `user`, `item` (str), `rating`, `timestamp`.

    Raises:
        ValueError: on the first malformed line, naming file, line number and text.
    """
    text = read_text(path)
    check_not_empty(path, text)
    try:
        frame = pd.read_csv(
            io.StringIO(text), header=None, names=["a", "b", "c"], dtype=str,
            keep_default_na=False, index_col=False,
        )
    except (pd.errors.ParserError, ValueError):
        raise _netflix_line_error(path, text) from None
    frame = frame.apply(lambda column: column.str.strip())
    is_movie = frame["a"].str.endswith(":") & (frame["b"] == "") & (frame["c"] == "")
    movie = frame["a"].where(is_movie).str[:-1].ffill()
    rows = frame[~is_movie]
    dates = pd.to_datetime(rows["c"], format="%Y-%m-%d", errors="coerce")
    valid = (
        movie[~is_movie].notna()
        & rows["a"].str.isdigit()
        & rows["b"].isin(["1", "2", "3", "4", "5"])
        & dates.notna()
        & movie[~is_movie].fillna("x").str.isdigit()
    )
    if not valid.all():
        raise _netflix_line_error(path, text)
    return pd.DataFrame(
        {
            "user": rows["a"].to_numpy(),
            "item": movie[~is_movie].to_numpy(),
            "rating": rows["b"].astype(np.float64).to_numpy(),
            "timestamp": (dates - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1),
        }
    )


def read_movie_titles(path: Path) -> pd.DataFrame:
    """`movie_titles.csv` -> frame with `raw_id` and `title` ("Title (year)").

    Raises:
        ValueError: an empty file, a line without 3 fields, a non-integer id, a bad year or
            a MovieID on two lines.
    """
    rows = []
    text = read_text(path, latin1_fallback=True)
    check_not_empty(path, text)
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(",", 2)
        if len(fields) != 3 or not fields[0].strip().isdigit():
            raise ValueError(f"{path}: line {line_number}: expected MovieID,YearOfRelease,Title: {line!r}")
        movie_id, year, title = (field.strip() for field in fields)
        if year != "NULL" and not year.isdigit():
            raise ValueError(f"{path}: line {line_number}: bad YearOfRelease {year!r}: {line!r}")
        rows.append((movie_id, title if year == "NULL" else f"{title} ({year})"))
    frame = pd.DataFrame(rows, columns=["raw_id", "title"])
    check_unique_ids(path, frame["raw_id"], field="MovieID")
    return frame


def load_netflix(data_dir: str | Path, *, progress: bool = False, **options) -> RecommendationData:
    """Builds the common form from a Netflix Prize folder.

    Args:
        data_dir: folder with `combined_data_*.txt` and `movie_titles.csv`.
        progress: show a progress bar over the rating files.
        **options: overrides of `DEFAULT_PROTOCOL` (see `Protocol`) and selection options
            (see `Selection`; the paper: `sample_users=803`).

    Returns:
        The data set, named "netflix".

    Raises:
        FileNotFoundError: no `combined_data_*.txt` file, or no `movie_titles.csv`.
    """
    data_dir = Path(data_dir)
    protocol, selection = split_options(options)
    files = sorted(data_dir.glob("combined_data_*.txt"))
    if not files:
        raise missing_raw_files(data_dir, "combined_data_*.txt files", "netflix", NEEDS, SOURCE)
    if not (data_dir / "movie_titles.csv").is_file():
        raise missing_raw_files(data_dir, "movie_titles.csv", "netflix", NEEDS, SOURCE)
    ratings = pd.concat(
        [read_combined_file(path) for path in tqdm(files, desc="ratings files", disable=not progress)],
        ignore_index=True,
    )
    items = read_movie_titles(data_dir / "movie_titles.csv")
    items["description"] = None
    items["poster_path"], missing_posters = poster_paths(
        data_dir / "posters", [[f"{raw}.jpg"] for raw in items["raw_id"]]
    )
    if missing_posters:
        logger.info("%d of %d movies have no poster", missing_posters, len(items))
    notes = {
        "data_dir": str(data_dir.resolve()),
        "ratings_files": [path.name for path in files],
        "raw_ratings": len(ratings),
        "raw_users": int(ratings["user"].nunique()),
        "raw_items": len(items),
        "missing_posters": missing_posters,
    }
    return apply_protocol(
        ratings,
        items,
        name="netflix",
        protocol=Protocol.with_overrides(DEFAULT_PROTOCOL, protocol),
        selection=selection,
        notes=notes,
    )
