"""`results.json` -> a markdown report laid out like the paper's Tables 3, 4 and 5.

Our columns: the mean (± sample std, n - 1) over the seeds that finished; `—` for a system asked for without a
finished run, `undefined` where the split could not define the metric (one class), never a number. Published figures
sit in their own labelled columns, with their source below.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from .published import PublishedFigure, published_for

SYSTEM_LABELS = {"mf": "MF", "lightgcn": "LightGCN", "sasrec": "SASRec", "tallrec": "TALLRec", "collm": "CoLLM",
                 "collm_va": "CoLLM-VA", "userllm_no_uhem": "USER-LLM w/o UHEM", "userllm_no_ke": "USER-LLM w/o KE",
                 "userllm": "USER-LLM"}
SYSTEM_ORDER = tuple(SYSTEM_LABELS)
ABLATIONS = ("userllm", "userllm_no_uhem", "userllm_no_ke")
HISTORY_PAIR = ("collm_va", "userllm")
MISSING = "—"
UNDEFINED = "undefined"
REFERENCE = "(ref.)"


class Statistic:
    """Mean and sample standard deviation of one metric over seeds; `undefined` counts the finished seeds whose split
    could not define it (recorded as None or NaN)."""

    def __init__(self, values: list[float | None], undefined: int = 0):
        self.values = [value for value in values if value is not None and not math.isnan(value)]
        self.undefined = undefined + len(values) - len(self.values)
        self.n = len(self.values)
        self.mean = float(np.mean(self.values)) if self.values else None
        self.std = float(np.std(self.values, ddof=1)) if self.n >= 2 else None

    def format(self) -> str:
        """`0.7123 ± 0.0040`, `0.7123` for one seed, `—` without any, `undefined` when no seed could define it."""
        if self.mean is None:
            return UNDEFINED if self.undefined else MISSING
        text = f"{self.mean:.4f}" if self.std is None else f"{self.mean:.4f} ± {self.std:.4f}"
        return text + (f" ({self.undefined} {UNDEFINED})" if self.undefined else "")


def aggregate(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, dict[str, Statistic]]]:
    """Groups the finished runs by (data set, system): `{split: {"auc", "uauc": Statistic}}`."""
    values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run in results.get("runs", []):
        if run.get("status") != "ok":
            continue
        for split, metrics in (run.get("metrics") or {}).items():
            for name in ("auc", "uauc"):
                if name in metrics:
                    values[run["data"], run["system"]][split][name].append(
                        None if metrics[name] is None else float(metrics[name]))
    return {key: {split: {name: Statistic(v) for name, v in metrics.items()} for split, metrics in splits.items()}
            for key, splits in values.items()}


def relative_improvement(ours: float | None, other: float | None) -> str:
    """`(ours - other) / other` as a signed percentage, `—` when either is missing."""
    if ours is None or other is None or other == 0:
        return MISSING
    return f"{100.0 * (ours - other) / other:+.2f}%"


def _difference(ours: float | None, published: float | None) -> str:
    return MISSING if ours is None or published is None else f"{ours - published:+.4f}"


def _stat(stats, data: str, system: str, split: str, metric: str) -> Statistic:
    return stats.get((data, system), {}).get(split, {}).get(metric, Statistic([]))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def system_rank(system: str) -> int:
    """Position of a system in the paper's Table 3 order (unknown systems last)."""
    return SYSTEM_ORDER.index(system) if system in SYSTEM_ORDER else len(SYSTEM_ORDER)


def _ordered(systems) -> list[str]:
    return sorted(systems, key=system_rank)


def _label(system: str) -> str:
    return SYSTEM_LABELS.get(system, system)


def _seeds(stats, data: str, system: str, split: str = "test") -> str:
    cell = _stat(stats, data, system, split, "auc")
    return str(cell.n + cell.undefined)


def _published_cell(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else MISSING


def _systems_table(stats, data: str, systems: list[str], improvements: bool, deltas: bool) -> tuple[list[str], list[str]]:
    """Test AUC/UAUC rows of `systems` with USER-LLM's relative improvement over each row (when `improvements`) and
    the published figures beside ours (and our differences, when `deltas`); returns the lines and the sources' notes."""
    all_published = published_for(data, "test")
    published = {system: figure for system, figure in all_published.items() if system in systems}
    reference = {m: _stat(stats, data, "userllm", "test", m).mean for m in ("auc", "uauc")}
    header = ["System", "Seeds", "AUC", "UAUC"] + (["Impr. AUC", "Impr. UAUC"] if improvements else [])
    if all_published:
        header += ["AUC (published)", "UAUC (published)"] + (["ΔAUC vs published", "ΔUAUC vs published"] if deltas else [])
    rows = []
    for system in systems:
        cells = [_stat(stats, data, system, "test", metric) for metric in ("auc", "uauc")]
        row = [_label(system), _seeds(stats, data, system), *(cell.format() for cell in cells)]
        if improvements:
            row += ([REFERENCE] * 2 if system == "userllm" else
                    [relative_improvement(reference[m], cell.mean) for m, cell in zip(("auc", "uauc"), cells)])
        if all_published:
            figure = published.get(system)
            row += [_published_cell(figure and figure.auc), _published_cell(figure and figure.uauc)]
            if deltas:
                row += [_difference(cell.mean, figure and getattr(figure, m)) for m, cell in zip(("auc", "uauc"), cells)]
        rows.append(row)
    return _table(header, rows), _published_notes(published.values())


def table3(results: dict[str, Any], data: str, stats=None) -> list[str]:
    """Table 3 for one data set: every system's test AUC/UAUC, USER-LLM's relative improvement over each row, and
    the published figures beside ours."""
    stats = stats if stats is not None else aggregate(results)
    systems = _ordered(results["grid"]["systems"])
    table, notes = _systems_table(stats, data, systems, improvements="userllm" in systems, deltas=True)
    note = ["Impr.: relative improvement of USER-LLM over the row, `(USER-LLM − row) / row`, on the means."]
    return [f"### Table 3 — {data}: test AUC / UAUC", ""] + table + [""] + (note if "userllm" in systems else []) + notes + [""]


def table4(results: dict[str, Any], data: str, stats=None) -> list[str]:
    """Table 4 for one data set: USER-LLM against its ablations (w/o UHEM, w/o KE)."""
    stats = stats if stats is not None else aggregate(results)
    table, notes = _systems_table(stats, data, list(ABLATIONS), improvements=True, deltas=False)
    note = ("Impr.: relative improvement of the full USER-LLM over the ablation. "
            "w/o UHEM: history written inline; w/o KE: titles instead of generated descriptions.")
    return [f"### Table 4 — {data}: ablations (test)", ""] + table + ["", note] + notes + [""]


def table5(results: dict[str, Any], data: str, stats=None) -> list[str]:
    """Table 5 for one data set: short vs long histories, CoLLM-VA against USER-LLM, then every system."""
    stats = stats if stats is not None else aggregate(results)
    header = ["System", "Seeds", "Short AUC", "Short UAUC", "Long AUC", "Long UAUC"]
    cells = {system: [_stat(stats, data, system, split, metric) for split in ("test_short", "test_long")
                      for metric in ("auc", "uauc")] for system in HISTORY_PAIR}
    published = {split: published_for(data, split) for split in ("test_short", "test_long")}
    with_published = any(published.values())
    if with_published:
        header += ["Short AUC (published)", "Long AUC (published)"]
    rows = []
    for system in HISTORY_PAIR:
        row = [SYSTEM_LABELS[system], _seeds(stats, data, system, "test_short"), *(cell.format() for cell in cells[system])]
        if with_published:
            row += [_published_cell(figures[system].auc if system in figures else None) for figures in published.values()]
        rows.append(row)
    rows.append(["Impr. (USER-LLM over CoLLM-VA)", "", *(
        relative_improvement(ours.mean, other.mean) for ours, other in zip(cells["userllm"], cells["collm_va"])
    )] + ([MISSING, MISSING] if with_published else []))
    lines = []
    if any(system in results["grid"]["systems"] for system in HISTORY_PAIR):
        lines += [f"### Table 5 — {data}: short vs long history (test_short / test_long)", ""] + _table(header, rows) + [""]
        lines += ["Short: every test row, n history items. Long: test rows whose user has at least the "
                  "preset's long_min_history earlier positives, given long_history_length items "
                  "(docs/DATA.md, protocol step 7).", ""]
        if with_published:
            lines += _published_notes(published["test_long"].values()) + [""]
    every = []
    for system in _ordered(results["grid"]["systems"]):
        short, long = _stat(stats, data, system, "test_short", "auc"), _stat(stats, data, system, "test_long", "auc")
        gap = MISSING if short.mean is None or long.mean is None else f"{long.mean - short.mean:+.4f}"
        every.append([_label(system), short.format(), long.format(), gap])
    lines += [f"AUC against history length, every system ({data}; test_short / test_long):", ""]
    return lines + _table(["System", "Short AUC", "Long AUC", "Long − short"], every) + [""]


def _published_notes(figures) -> list[str]:
    sources: dict[str, list[PublishedFigure]] = defaultdict(list)
    for figure in figures:
        sources[figure.source].append(figure)
    notes = []
    for source, rows in sources.items():
        details = "; ".join(f"{_label(f.system)}: {f.note}" for f in rows if f.note)
        notes.append(f"Published columns: {source}" + (f" ({details})." if details else "."))
    return notes


def _auc_cell(split_metrics: dict | None) -> str:
    """A run's AUC on one split: the number, `undefined` (one-class split), or `—` (not scored)."""
    if not split_metrics or "auc" not in split_metrics:
        return MISSING
    value = split_metrics["auc"]
    return UNDEFINED if value is None or math.isnan(value) else f"{value:.4f}"


def runs_table(results: dict[str, Any]) -> list[str]:
    """One line per run: status, wall time, valid/test AUC, machine."""
    rows = []
    for run in results.get("runs", []):
        metrics = run.get("metrics") or {}
        status = run.get("status", "?") + (" (cached)" if run.get("cached") else "")
        if run.get("status") != "ok":
            status += f": {run.get('error', '')}"
        rows.append([
            run["data"], _label(run["system"]), str(run["seed"]), run.get("config_hash", ""),
            status.replace("|", "/"),
            f"{run['wall_seconds']:.0f}" if run.get("wall_seconds") is not None else MISSING,
            _auc_cell(metrics.get("valid")), _auc_cell(metrics.get("test")),
            (run.get("machine") or {}).get("accelerator", MISSING),
        ])
    header = ["Data", "System", "Seed", "Config", "Status", "Wall s", "Valid AUC", "Test AUC", "Device"]
    return ["## Runs", ""] + _table(header, rows) + [""]


def missing_runs(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(data set, system) pairs of the grid with no finished run."""
    finished = {(run["data"], run["system"]) for run in results.get("runs", []) if run.get("status") == "ok"}
    return [(data, system) for data in results["grid"]["data"] for system in results["grid"]["systems"]
            if (data, system) not in finished]


def build_report(results: dict[str, Any], title: str = "USER-LLM experiments") -> str:
    """The markdown report of a `results.json` document."""
    stats = aggregate(results)
    grid = results["grid"]
    lines = [f"# {title}", ""]
    if results.get("command"):
        lines += ["Command:", "", "```", results["command"], "```", ""]
    lines += [
        f"Data sets: {', '.join(grid['data'])}. Systems: "
        f"{', '.join(_label(s) for s in _ordered(grid['systems']))}. Seeds: {grid['seeds']}.",
        "",
        "Our columns: mean ± sample std over the seeds that finished (a single seed shows its value alone); "
        f"`{MISSING}` = no finished run; `{UNDEFINED}` = the split cannot define the metric (one class). "
        "Published columns are the papers' figures, not ours.",
        "",
    ]
    environments: dict[str, list[dict]] = defaultdict(list)
    for run in results.get("runs", []):
        if run.get("machine"):
            machine = {key: value for key, value in run["machine"].items() if key != "torch_threads"}
            environments[str((machine, run.get("packages"), run.get("git")))].append(run)
    for runs in environments.values():
        machine, packages = runs[0]["machine"], runs[0]["packages"]
        threads = sorted({run["machine"].get("torch_threads") for run in runs}, key=str)
        lines.append(f"Machine ({len(runs)} runs): {machine.get('hostname')} ({machine.get('platform')}, "
                     f"{machine.get('cpu_count')} CPUs, torch threads {threads}, {machine.get('accelerator')}); "
                     + ", ".join(f"{k} {v}" for k, v in packages.items()) + f"; git {runs[0].get('git')}.")
    lines.append("")
    missing = missing_runs(results)
    if missing:
        lines += ["Missing (asked for, no finished run): "
                  + ", ".join(f"{_label(s)} on {d}" for d, s in missing) + ".", ""]
    for data in grid["data"]:
        lines += [f"## {data}", ""] + table3(results, data, stats)
        if any(system in grid["systems"] for system in ABLATIONS):
            lines += table4(results, data, stats)
        lines += table5(results, data, stats)
    return "\n".join(lines + runs_table(results))
