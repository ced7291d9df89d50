"""Published figures our runs are compared with, each with where it was read (quoted in `../shared`).

- The USER-LLM paper's Tables 2-5 (`../shared/PAPER.md`): Vicuna-7B on one A100, average of five runs, on "movie"
  (our `movielens-csv` with `configuration/datasets/movies-dataset.yaml`) and "netflix". It is also on arXiv as
  HistLLM (2504.10150), whose v2 announces revised experimental details: treat its figures as provisional.
- CoLLM's Table II on its ML-1M split (our `collm` data set).

Stored as published; none is filled in from memory.
"""

from __future__ import annotations

from dataclasses import dataclass

USERLLM_PAPER = "USER-LLM paper (published, Vicuna-7B, A100; ../shared/PAPER.md)"
COLLM_TABLE_II = "CoLLM (Zhang et al. 2023, arXiv 2310.19488v3), Table II, ML-1M, as quoted in ../shared/data/README.md"

PAPER_DATA_SETS = {"movielens-csv": "movie", "netflix": "netflix"}
"""Our data set name (`info.json` `name`) -> the paper's name for it."""


@dataclass(frozen=True)
class PublishedFigure:
    """One row of a published table: our data set name (`info.json`) and system, the split (`test`, `test_short`,
    `test_long`), AUC and UAUC (None where the table gives none: Table 5), the source (paper, table, where read) and
    how its setting differs from ours (`note`)."""

    data: str
    system: str
    split: str
    auc: float
    uauc: float | None
    source: str
    note: str = ""


def _userllm_rows(table: str, split: str, rows: dict[str, tuple]) -> tuple[PublishedFigure, ...]:
    """Figures of one USER-LLM table: system -> (movie AUC, movie UAUC, netflix AUC, netflix UAUC)."""
    return tuple(PublishedFigure(data, system, split, auc, uauc, f"{USERLLM_PAPER}, {table}")
                 for system, (movie_auc, movie_uauc, netflix_auc, netflix_uauc) in rows.items()
                 for data, auc, uauc in (("movielens-csv", movie_auc, movie_uauc), ("netflix", netflix_auc, netflix_uauc)))


USERLLM_TABLE3 = _userllm_rows("Table 3", "test", {
    "mf": (0.6781, 0.6055, 0.5730, 0.5711),
    "sasrec": (0.7464, 0.6329, 0.6499, 0.6493),
    "lightgcn": (0.7673, 0.6405, 0.6594, 0.6414),
    "tallrec": (0.7219, 0.5293, 0.6382, 0.6430),
    "collm": (0.8052, 0.6690, 0.6699, 0.6613),
    "userllm": (0.8117, 0.6852, 0.6757, 0.6629),
})
USERLLM_TABLE4 = _userllm_rows("Table 4", "test", {
    "userllm_no_uhem": (0.7970, 0.6613, 0.6678, 0.6580),
    "userllm_no_ke": (0.8087, 0.6707, 0.6715, 0.6607),
})
USERLLM_TABLE5 = (
    _userllm_rows("Table 5", "test_short", {"collm_va": (0.8070, None, 0.6725, None), "userllm": (0.8117, None, 0.6757, None)})
    + _userllm_rows("Table 5", "test_long", {"collm_va": (0.8067, None, 0.6668, None), "userllm": (0.8118, None, 0.6751, None)})
)

PUBLISHED: tuple[PublishedFigure, ...] = (
    PublishedFigure("collm", "mf", "test", 0.6482, 0.6361, COLLM_TABLE_II),
    PublishedFigure("collm", "lightgcn", "test", 0.5959, 0.6499, COLLM_TABLE_II),
    PublishedFigure("collm", "sasrec", "test", 0.7078, 0.6884, COLLM_TABLE_II),
    PublishedFigure("collm", "tallrec", "test", 0.7097, 0.6818, COLLM_TABLE_II, note="Vicuna-7B"),
    PublishedFigure("collm", "collm", "test", 0.7295, 0.6875, COLLM_TABLE_II, note="CoLLM-MF, Vicuna-7B"),
    *USERLLM_TABLE3,
    *USERLLM_TABLE4,
    *USERLLM_TABLE5,
)

PUBLISHED_TABLE2: dict[str, dict[str, int]] = {
    "movie": {"#User": 605, "#Item": 2400, "#Positive": 15107, "#Negative": 5641, "#Poster": 2381,
              "#Train": 16598, "#Valid": 2074, "#Test": 2076},
    "netflix": {"#User": 803, "#Item": 3219, "#Positive": 21931, "#Negative": 16808, "#Poster": 3135,
                "#Train": 30991, "#Valid": 3873, "#Test": 3875},
}
"""The paper's Table 2 (published); it has no short/long columns."""


def published_for(data: str, split: str = "test") -> dict[str, PublishedFigure]:
    """The published figures for one data set and split, by system."""
    return {figure.system: figure for figure in PUBLISHED if figure.data == data and figure.split == split}
