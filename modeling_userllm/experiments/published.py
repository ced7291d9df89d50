"""Published figures that our runs are compared with, each with the place it was read from.

Only figures read from a source are here. A figure that could not be sourced is absent, and
the report says so rather than showing a number (`UNSOURCED`).
"""

from __future__ import annotations

from dataclasses import dataclass

COLLM_TABLE_II = (
    "CoLLM (Zhang et al. 2023, arXiv 2310.19488v3), Table II, ML-1M, "
    "as quoted in ../shared/data/README.md"
)


@dataclass(frozen=True)
class PublishedFigure:
    """One row of a published table.

    Attributes:
        data: the name of the data set in our runs (`info.json` `name`) it compares with.
        system: our system name (a baseline or a key of `VARIANTS`).
        split: the split it was measured on (`test`, `test_short`, `test_long`).
        auc, uauc: the published figures.
        source: the paper, table and where it was read.
        note: how the published setting differs from ours (e.g. its LLM).
    """

    data: str
    system: str
    split: str
    auc: float
    uauc: float
    source: str
    note: str = ""


PUBLISHED: tuple[PublishedFigure, ...] = (
    PublishedFigure("collm", "mf", "test", 0.6482, 0.6361, COLLM_TABLE_II),
    PublishedFigure("collm", "lightgcn", "test", 0.5959, 0.6499, COLLM_TABLE_II),
    PublishedFigure("collm", "sasrec", "test", 0.7078, 0.6884, COLLM_TABLE_II),
    PublishedFigure("collm", "tallrec", "test", 0.7097, 0.6818, COLLM_TABLE_II, note="Vicuna-7B"),
    PublishedFigure("collm", "collm", "test", 0.7295, 0.6875, COLLM_TABLE_II, note="CoLLM-MF, Vicuna-7B"),
)

UNSOURCED = (
    "The USER-LLM paper's own Tables 3, 4 and 5 (its Movies and Netflix data sets; also "
    "published as HistLLM, arXiv 2504.10150) are not shown: their figures could not be read "
    "from any source available to this project offline (only the abstracts were), and no "
    "figure is ever filled in from memory."
)


def published_for(data: str, split: str = "test") -> dict[str, PublishedFigure]:
    """The published figures for one data set and split, by system."""
    return {figure.system: figure for figure in PUBLISHED if figure.data == data and figure.split == split}
