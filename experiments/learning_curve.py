"""Learning curves: test AUC of the LLM systems against their training budget, baselines beside them.

Built from the run summaries `ExperimentRunner` writes (`docs/results/*.json`, runs of several sessions and machines):

    records = learning_curve_records("docs/results", data="movielens-csv", split="per_user_time")
    write_learning_curve(records, "docs/results/learning_curve_movie", "movielens-csv")   # .json and .png

A record is one finished run: `RECORD_FIELDS` (`budget`: training rows per step, 0 for a baseline).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modeling_userllm.features.store import atomic_write_json
from .published import published_for
from .report import SYSTEM_LABELS, system_rank
from .runner import BASELINE_SYSTEMS, split_run_control

RECORD_FIELDS = ("system", "budget", "seed", "test_auc", "test_uauc", "rows", "users", "wall_s", "git")
def learning_curve_records(summary_dir: str | Path, data: str, split: str | None = None) -> list[dict[str, Any]]:
    """The learning-curve records of one data set (and split rule) from a folder of run summaries.

    Kept: runs whose budget is a row count (an LLM run capped otherwise has no point on the curve). Extra training
    arguments other than the runner's `RUN_CONTROL_ARGUMENTS` make another curve: the record's `overrides` (a string,
    "" for the preset as it is) names it; its `run_control` lists the others.

    Raises:
        ValueError: a summary that cannot be read, naming the file; two summaries of one system, budget, seed and
            overrides (runs of other data or features, or of an older preset), which a point would count as two seeds.
    """
    records, files = [], {}
    for path in sorted(Path(summary_dir).glob("*.json")):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"{path}: not a JSON run summary ({error})") from error
        if (not isinstance(summary, dict) or summary.get("data") != data or "test_auc" not in summary
                or split is not None and summary.get("split") != split or not isinstance(summary.get("budget"), int)):
            continue
        overrides, run_control = split_run_control(summary.get("overrides") or ())
        key = (summary.get("system"), summary["budget"], summary.get("seed"), " ".join(overrides))
        if key in files:
            raise ValueError(
                f"{files[key]} and {path.name} in {summary_dir}: two runs of {key[0]} at {key[1]} rows, seed {key[2]}, "
                f"{'overrides ' + repr(key[3]) if key[3] else 'the preset as it is'}; a point counts each seed once, so "
                "keep one (the hash in the names differs by data, features or preset settings)")
        files[key] = path.name
        records.append({**{field: summary.get(field) for field in RECORD_FIELDS}, "overrides": " ".join(overrides),
                        "run_control": " ".join(run_control)})
    return sorted(records, key=lambda record: (system_rank(record["system"]), record["budget"], record["seed"]))


def curve_points(records: Iterable[dict[str, Any]], metric: str = "test_auc") -> dict[str, list[tuple[int, float, float, int]]]:
    """Per curve (`curve_name`): `(budget, mean, sample std or 0, seeds)` in increasing budget; a run whose test split
    could not define the metric (null) is no point."""
    values: dict[str, dict[int, list[float]]] = {}
    for record in records:
        if record[metric] is not None:
            values.setdefault(curve_name(record), {}).setdefault(record["budget"], []).append(record[metric])
    return {
        system: [(budget, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
                 for budget, v in sorted(by_budget.items())]
        for system, by_budget in values.items()
    }


def curve_name(record: dict[str, Any]) -> str:
    """The system, followed by its extra training arguments when it has any: `userllm_recipe [--step3_learning_rate 3e-3]`."""
    return f"{record['system']} [{record['overrides']}]" if record.get("overrides") else record["system"]


def _system_of(curve: str) -> str:
    return curve.split(" [", 1)[0]


def plot_learning_curve(records: list[dict[str, Any]], path: str | Path, data: str, title: str = "") -> Path:
    """Test AUC against training rows per step: a line per LLM system (mean ± std over seeds), a horizontal line per
    baseline, the published Table 3 AUCs (Vicuna-7B, full data) as labelled markers."""
    import matplotlib.pyplot as plt

    from .plots import save_figure

    points = curve_points(records)
    figure, axis = plt.subplots(figsize=(11, 4.8))
    budgets = sorted({budget for curve, rows in points.items() if _system_of(curve) not in BASELINE_SYSTEMS
                      for budget, *_ in rows})
    right = max(budgets) * 1.6 if budgets else 1.0
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    published = published_for(data)
    test_rows = {}
    for record in records:
        test_rows.setdefault(curve_name(record), set()).add(record["rows"])
    for index, curve in enumerate(sorted(points, key=lambda name: (system_rank(_system_of(name)), name))):
        system = _system_of(curve)
        color = colors[index % len(colors)]
        label = SYSTEM_LABELS.get(system, system) + curve[len(system):]
        rows = points[curve]
        scored = "/".join(str(count) for count in sorted(test_rows[curve], key=str))
        if system in BASELINE_SYSTEMS:
            _, mean, std, seeds = rows[0]
            axis.axhline(mean, color=color, linestyle="--", linewidth=1.0,
                         label=f"{label} (whole train split; {scored} test rows; {seeds} seeds)")
        else:
            axis.errorbar([r[0] for r in rows], [r[1] for r in rows], yerr=[r[2] for r in rows], marker="o", capsize=3,
                          color=color, label=f"{label} ({scored} test rows; seeds: {', '.join(str(r[3]) for r in rows)})")
        if system in published and curve == system:
            axis.plot([right], [published[system].auc], marker="*", markersize=10, color=color, linestyle="none")
    if published:
        axis.plot([], [], marker="*", color="grey", linestyle="none", label="published Table 3 (Vicuna-7B, full data)")
    axis.set_xscale("log")
    axis.set_xlabel("training rows per step (log)")
    axis.set_ylabel("test AUC")
    axis.axhline(0.5, color="grey", linewidth=0.6, linestyle=":")
    axis.set_title(title or f"{data}: test AUC against training budget")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: no point hidden
    return save_figure(figure, path)


def write_learning_curve(records: list[dict[str, Any]], stem: str | Path, data: str, title: str = "") -> tuple[Path, Path]:
    """Writes `stem`.json (the list of records) and `stem`.png (the plot), atomically."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stem.with_suffix(".json"), records)
    return stem.with_suffix(".json"), plot_learning_curve(records, stem.with_suffix(".png"), data, title)

