"""Netflix Prize training data.

Files read from `data_dir`:

- `combined_data_*.txt`: blocks of a `MovieID:` line followed by `CustomerID,Rating,Date` lines (rating 1-5, date
  `YYYY-MM-DD` as unix seconds at 00:00 UTC: ratings of one user on one day never see each other as history).
- `movie_titles.csv`: `MovieID,YearOfRelease,Title`, latin-1 as documented by Netflix; titles may contain commas,
  the year may be `NULL`. Titles become `"Title (year)"` like MovieLens'.
- optional `posters/<MovieID>.jpg`.

Whitespace around a line or a field is ignored (`1: ` is the block of movie 1). The paper keeps 803 users with
>= 10 history interactions: a seeded user sample (`selection.py`).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from .common import RecommendationData
from .parsing import check_unique_ids, first_bad_line, missing_raw_files, parse_lines, poster_paths, read_text
from .protocol import build_data_set

# The paper's protocol on Netflix (Table 5's long histories: >= 20 history interactions).
DEFAULT_PROTOCOL = {"threshold": 4.0, "history_length": 10, "min_history": 10, "long_min_history": 20}
RATINGS = ["1", "2", "3", "4", "5"]
NEEDS = "combined_data_*.txt and movie_titles.csv (optional: posters/<MovieID>.jpg)"
SOURCE = ("The Netflix Prize data is on Kaggle: https://www.kaggle.com/datasets/netflix-inc/netflix-prize-data "
          "(combined_data_1.txt to combined_data_4.txt, movie_titles.csv).")


def _rating_line_checker():
    """A `parse_lines` check of a combined file's lines: a `MovieID:` line, or a rating after one."""
    seen_movie = False

    def check(line: str) -> None:
        nonlocal seen_movie
        stripped = line.strip()
        if stripped.endswith(":") and stripped[:-1].isdigit():
            seen_movie = True
            return
        fields = [field.strip() for field in stripped.split(",")]
        if not seen_movie:
            raise ValueError("rating before any 'MovieID:' line")
        if len(fields) != 3:
            raise ValueError(f"expected 3 fields (CustomerID,Rating,Date), got {len(fields)}")
        if not fields[0].isdigit():
            raise ValueError(f"bad CustomerID {fields[0]!r}")
        if fields[1] not in RATINGS:
            raise ValueError(f"bad Rating {fields[1]!r}")
        if pd.isna(pd.to_datetime(fields[2], format="%Y-%m-%d", errors="coerce")):
            raise ValueError(f"bad Date {fields[2]!r}")

    return check


def read_combined_file(path: Path) -> pd.DataFrame:
    """One `combined_data_*.txt` -> `user`, `item` (str), `rating`, `timestamp`; a `ValueError` naming the file,
    the line and its text at the first malformed line."""
    text = read_text(path)

    def bad_line() -> ValueError:
        return first_bad_line(path, text, _rating_line_checker(), "Netflix Prize ratings")

    try:
        frame = pd.read_csv(io.StringIO(text), header=None, names=["a", "b", "c"], dtype=str, keep_default_na=False,
                            index_col=False)
    except (pd.errors.ParserError, ValueError):
        raise bad_line() from None
    frame = frame.apply(lambda column: column.str.strip())
    is_movie = frame["a"].str.endswith(":") & (frame["b"] == "") & (frame["c"] == "")
    movie = frame["a"].where(is_movie).str[:-1].ffill()[~is_movie]
    rows = frame[~is_movie]
    dates = pd.to_datetime(rows["c"], format="%Y-%m-%d", errors="coerce")
    valid = rows["a"].str.isdigit() & rows["b"].isin(RATINGS) & dates.notna() & movie.fillna("x").str.isdigit()
    if not valid.all():
        raise bad_line()
    return pd.DataFrame({"user": rows["a"].to_numpy(), "item": movie.to_numpy(),
                         "rating": rows["b"].astype(np.float64).to_numpy(),
                         "timestamp": (dates - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)})


def _title_fields(line: str) -> tuple[str, str]:
    fields = line.split(",", 2)
    if len(fields) != 3 or not fields[0].strip().isdigit():
        raise ValueError("expected MovieID,YearOfRelease,Title")
    movie_id, year, title = (field.strip() for field in fields)
    if year != "NULL" and not year.isdigit():
        raise ValueError(f"bad YearOfRelease {year!r}")
    return movie_id, title if year == "NULL" else f"{title} ({year})"


def read_movie_titles(path: Path) -> pd.DataFrame:
    """`movie_titles.csv` -> `raw_id` and `title` ("Title (year)"); a located `ValueError` for an empty file, a
    line without 3 fields, a non-integer id, a bad year or a MovieID on two lines."""
    rows = parse_lines(path, read_text(path, latin1_fallback=True), _title_fields)
    frame = pd.DataFrame(rows, columns=["raw_id", "title"])
    check_unique_ids(path, frame["raw_id"], field="MovieID")
    return frame


def load_netflix(data_dir: str | Path, **options) -> RecommendationData:
    """Builds the common form ("netflix") from a Netflix Prize folder (the module docstring's files); `options`:
    overrides of `DEFAULT_PROTOCOL` (see `Protocol`) and selection options (`Selection`; the paper:
    `sample_users=803`)."""
    data_dir = Path(data_dir)
    files = sorted(data_dir.glob("combined_data_*.txt"))
    if not files:
        raise missing_raw_files(data_dir, "combined_data_*.txt files", "netflix", NEEDS, SOURCE)
    if not (data_dir / "movie_titles.csv").is_file():
        raise missing_raw_files(data_dir, "movie_titles.csv", "netflix", NEEDS, SOURCE)
    ratings = pd.concat([read_combined_file(path) for path in files], ignore_index=True)
    items = read_movie_titles(data_dir / "movie_titles.csv")
    items["description"] = None
    items["poster_path"], missing_posters = poster_paths(data_dir / "posters", [[f"{raw}.jpg"] for raw in items["raw_id"]])
    return build_data_set("netflix", data_dir, ratings, items, DEFAULT_PROTOCOL, options,
                          files={"ratings_files": [path.name for path in files]}, missing_posters=missing_posters)
