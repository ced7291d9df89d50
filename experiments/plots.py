"""Plots of a `results.json`: a bar chart per data set, and AUC against history length.

Means over seeds with the sample std as error bars; a system without a finished run gets no bar (its axis label
says "missing"), never a zero-height bar that would read as a result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402

from .report import SYSTEM_LABELS, _ordered, _stat, aggregate  # noqa: E402

HISTORY_SPLITS = (("test_short", "short"), ("test_long", "long"))


def save_figure(figure, path: str | Path) -> Path:
    """Writes `figure` as a PNG to a temporary name beside `path`, then renames it, and closes it."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    figure.tight_layout()
    figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
    return temporary.replace(path)


def plot_systems(results: dict[str, Any], data: str, path: str | Path, stats=None) -> Path:
    """Test AUC and UAUC of every system on `data`, as grouped bars with error bars."""
    stats = stats if stats is not None else aggregate(results)
    systems = _ordered(results["grid"]["systems"])
    positions = np.arange(len(systems))
    width = 0.38
    figure, axis = plt.subplots(figsize=(max(6.0, 1.1 * len(systems) + 2), 4.2))
    lowest = 1.0
    for offset, metric in ((-width / 2, "auc"), (width / 2, "uauc")):
        cells = [_stat(stats, data, system, "test", metric) for system in systems]
        present = [i for i, cell in enumerate(cells) if cell.mean is not None]
        means = [cells[i].mean for i in present]
        errors = [cells[i].std or 0.0 for i in present]
        axis.bar(positions[present] + offset, means, width, yerr=errors, capsize=3, label=metric.upper())
        lowest = min([lowest, *means])
    present_systems = [_stat(stats, data, s, "test", "auc").mean is not None for s in systems]
    labels = [SYSTEM_LABELS.get(s, s) + ("" if present else "\n(missing)") for s, present in zip(systems, present_systems)]
    axis.set_xticks(positions, labels, rotation=30, ha="right")
    axis.set_ylim(max(0.0, min(0.5, lowest - 0.05)), 1.0)
    axis.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    axis.set_ylabel("test metric (mean ± std over seeds)")
    axis.set_title(f"{data}: test AUC / UAUC per system")
    axis.legend()
    return save_figure(figure, path)


def history_tick_labels(results: dict[str, Any], data: str) -> list[str]:
    """The history plot's x ticks: items given to the model and which rows, from the protocol in the `info.json` of
    the data set's runs (generic labels when unreadable)."""
    protocol = next((json.loads((Path(run["data_dir"]) / "info.json").read_text(encoding="utf-8")).get("protocol")
                     for run in results.get("runs", []) if run.get("data") == data and run.get("data_dir")
                     and (Path(run["data_dir"]) / "info.json").is_file()), None)
    if not protocol or protocol.get("long_history_length") is None:
        return ["short\n(n items, every test row)", "long\n(longer history, users with many)"]
    return [
        f"short\n{protocol['history_length']} items, every test row",
        f"long\n{protocol['long_history_length']} items, users with ≥ {protocol['long_min_history']}",
    ]


def plot_history_length(results: dict[str, Any], data: str, path: str | Path, stats=None) -> Path:
    """AUC on the short- and long-history test subsets, one line per system with results."""
    stats = stats if stats is not None else aggregate(results)
    figure, axis = plt.subplots(figsize=(6.0, 4.2))
    for system in _ordered(results["grid"]["systems"]):
        cells = [_stat(stats, data, system, split, "auc") for split, _ in HISTORY_SPLITS]
        if any(cell.mean is None for cell in cells):
            continue
        style = "-" if system in ("collm_va", "userllm") else "--"
        axis.errorbar([0, 1], [c.mean for c in cells], yerr=[c.std or 0.0 for c in cells], marker="o", capsize=3,
                      linestyle=style, label=SYSTEM_LABELS.get(system, system))
    axis.set_xticks([0, 1], history_tick_labels(results, data))
    axis.set_xlim(-0.3, 1.3)
    axis.set_xlabel("history given to the model (most recent positives; test_short / test_long)")
    axis.set_ylabel("test AUC (mean ± std over seeds)")
    axis.set_title(f"{data}: AUC against history length")
    if axis.lines:
        axis.legend(fontsize="small")
    return save_figure(figure, path)


def make_plots(results: dict[str, Any], output_dir: str | Path) -> list[Path]:
    """Both plots for every data set of the grid: `<output>/<data>_systems.png`, `<output>/<data>_history_length.png`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stats = aggregate(results)
    paths = []
    for data in results["grid"]["data"]:
        paths.append(plot_systems(results, data, output_dir / f"{data}_systems.png", stats))
        paths.append(plot_history_length(results, data, output_dir / f"{data}_history_length.png", stats))
    return paths
