"""Data sets in the common form (docs/ARCHITECTURE.md), their protocol and processor records.

| name            | builder               | data_dir holds                                       |
| --------------- | --------------------- | ---------------------------------------------------- |
| `toy`           | `make_toy_movies`     | where posters are drawn (None: no posters)           |
| `ml-100k`       | `load_movielens_100k` | `u.data`, `u.item`, optional posters/ and overviews  |
| `movielens-csv` | `load_movielens_csv`  | `ratings*.csv` + `movies.csv` or TMDB metadata       |
| `netflix`       | `load_netflix`        | `combined_data_*.txt`, `movie_titles.csv`            |
| `collm`         | `load_collm`          | CoLLM's `train/valid/test.parquet`                   |
"""

from __future__ import annotations

from pathlib import Path

from .collm import load_collm
from .common import RecommendationData, dataset_statistics, format_statistics, split_coverage
from .movielens_100k import download_movielens_100k, load_movielens_100k
from .movielens_csv import load_movielens_csv
from .netflix import load_netflix
from .protocol import SPLIT_RULES, Protocol, apply_protocol
from .records import RecordBuilder, RecordDataset, build_records
from .toy import DEFAULT_GENERATOR, make_toy_movies, oracle_test_auc

BUILDERS = {"ml-100k": load_movielens_100k, "movielens-csv": load_movielens_csv, "netflix": load_netflix,
            "collm": load_collm}
DATASET_NAMES = ("toy", *BUILDERS)


def load_dataset_by_name(name: str, data_dir: str | Path | None, **overrides) -> RecommendationData:
    """Builds the named data set (one of `DATASET_NAMES`) from the local files in `data_dir` ("toy": the posters
    folder, or None). `overrides` are the builder's keyword arguments: protocol parameters (`Protocol`), selection
    options (`Selection`) except for "toy" and "collm", "movielens-csv"'s `ratings_file`, "toy"'s `seed` and
    `DEFAULT_GENERATOR` parameters; "collm" takes only `history_length`, `long_min_history`, `long_history_length`.

    Raises:
        ValueError: an unknown name, an unknown split rule, or `split` given to "collm".
    """
    if name == "toy":
        protocol = {key: value for key, value in overrides.items() if key not in DEFAULT_GENERATOR and key != "seed"}
        generator = {key: value for key, value in overrides.items() if key in DEFAULT_GENERATOR}
        return make_toy_movies(overrides.get("seed", 0), data_dir, protocol=protocol, **generator)
    if name not in BUILDERS:
        raise ValueError(f"unknown data set {name!r}; known: {DATASET_NAMES}")
    if data_dir is None:
        raise ValueError(f"data set {name!r} needs data_dir")
    if name == "collm" and "split" in overrides:
        raise ValueError(f"collm keeps CoLLM's published train/valid/test split; split={overrides['split']!r} cannot "
                         "apply (remove the key; split rules are for the builders that apply the protocol)")
    return BUILDERS[name](data_dir, **overrides)


__all__ = [
    "DATASET_NAMES", "DEFAULT_GENERATOR", "SPLIT_RULES", "Protocol", "RecommendationData", "RecordBuilder",
    "RecordDataset", "apply_protocol", "build_records", "dataset_statistics", "download_movielens_100k",
    "format_statistics", "load_collm", "load_dataset_by_name", "load_movielens_100k", "load_movielens_csv",
    "load_netflix", "make_toy_movies", "oracle_test_auc", "split_coverage",
]
