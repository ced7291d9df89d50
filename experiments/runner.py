"""The experiment grid: data sets x systems x seeds, each run cached in its own folder.

A run lives in `<output>/runs/<data>/<system>/seed<seed>-<hash>/`, the hash covering everything else that decides its
result (data and features fingerprints, hyperparameters, LLM preset and training overrides; not
`RUN_CONTROL_ARGUMENTS`). A folder with `metrics.json` is finished and read back; a failed run leaves `error.txt` and
is retried. Each invocation of a run (a stopped run resumed has several) is listed in `invocations.json`, the
run's `wall_s` is their sum, and `train.log` keeps every invocation's output. With a `summary_dir` (`docs/results/`)
each finished run also writes `<data>[-<split rule unless global_time>]-<system>[-rows<budget>]-seed<seed>-<hash>.json`
there, which outlives the output folder and spares retraining. Baselines train in this process; the LLM systems (`VARIANTS`) run the package's
training entry point in a child process each (fresh memory, own log).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import yaml

from modeling_userllm.configuration_userllm import VARIANTS
from modeling_userllm.data.common import EVALUATION_SPLITS
from modeling_userllm.data.protocol import SPLIT_RULES
from modeling_userllm.features.store import atomic_write_json

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run as `python -m` with REPO_ROOT first on the path: the checkout's package, not an installed one.
TRAIN_MODULE = "modeling_userllm.training"
# Each invocation of a run (a run stopped and resumed has several): started, wall_s, git, outcome.
INVOCATIONS_FILE = "invocations.json"
DEFAULT_LLM_PRESET = REPO_ROOT / "configuration" / "toy.yaml"

BASELINE_SYSTEMS = ("mf", "lightgcn", "sasrec")
# A variant trained with the recipe preset beside the LLM preset (toy.yaml -> toy-recipe.yaml, docs/RESULTS.md).
RECIPE_SYSTEMS = {"userllm_recipe": "userllm"}
RECIPE_SUFFIX = "-recipe"
PAPER_SYSTEMS = BASELINE_SYSTEMS + tuple(VARIANTS)
"""Every system of the paper, in the order of its Table 3."""
LLM_SYSTEMS = tuple(VARIANTS) + tuple(RECIPE_SYSTEMS)
SYSTEMS = BASELINE_SYSTEMS + LLM_SYSTEMS
"""The paper's systems, then the recipe rows."""
SCHEDULE_KEYS = ("max_epochs", "patience", "min_epochs")
PACKAGES = ("torch", "transformers", "datasets", "peft", "accelerate", "numpy")

# Training arguments that change how a run is carried out, not what it trains, with how many values each takes:
# continuing a run, its CPU threads, and loading a step 1 trained elsewhere with the same step-1 settings
# (`--step1_from` checks them), such as a TALLRec run as CoLLM's step 1. They are in neither a run's hash nor
# its learning-curve point: a run started without `--resume` continues with it, under its own name.
RUN_CONTROL_ARGUMENTS = {"--resume": 0, "--num_threads": 1, "--step1_from": 1}


def split_run_control(arguments: Iterable[str]) -> tuple[list[str], list[str]]:
    """`(training arguments, run-control arguments)` of a run's extra arguments (`RUN_CONTROL_ARGUMENTS`, each with
    its values, as `--name value` or `--name=value`)."""
    training, control, arguments = [], [], list(arguments)
    index = 0
    while index < len(arguments):
        name = arguments[index].split("=", 1)[0]
        if name not in RUN_CONTROL_ARGUMENTS:
            training.append(arguments[index])
            index += 1
            continue
        width = 1 + (RUN_CONTROL_ARGUMENTS[name] if "=" not in arguments[index] else 0)
        control += arguments[index:index + width]
        index += width
    return training, control


Trainer = Callable[["RunSpec", Path], dict[str, Any]]
"""Trains one run into its folder and returns its metrics (`{"valid": {"auc", "uauc"}, ...}`)."""


def recipe_preset(llm_preset: str | os.PathLike) -> Path:
    """The recipe preset beside an LLM preset: `configuration/toy.yaml` -> `configuration/toy-recipe.yaml`."""
    llm_preset = Path(llm_preset)
    return llm_preset.with_name(f"{llm_preset.stem}{RECIPE_SUFFIX}{llm_preset.suffix}")


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _settings_sha256(preset: Path) -> str:
    """Hash of a YAML preset's settings: its comments and layout do not change a run's identity."""
    return _sha256(json.dumps(yaml.safe_load(preset.read_text(encoding="utf-8")), sort_keys=True).encode())[:16]


def data_fingerprint(data_dir: str | os.PathLike) -> str:
    """Hash of a prepared data set's `info.json` and `statistics.json` (protocol, id maps, counts)."""
    info, stats = Path(data_dir) / "info.json", Path(data_dir) / "statistics.json"
    if not info.is_file():
        raise FileNotFoundError(f"{data_dir} is not a prepared data set (no info.json; see examples/prepare_data.py)")
    return _sha256(info.read_bytes(), stats.read_bytes() if stats.is_file() else b"")[:16]


TIMING_KEYS = ("seconds", "cpu_seconds")


def _without_timings(value: Any) -> Any:
    """`value` (parsed JSON) with the `TIMING_KEYS` of every object left out."""
    if isinstance(value, dict):
        return {key: _without_timings(item) for key, item in value.items() if key not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timings(item) for item in value]
    return value


def features_fingerprint(features_dir: str | os.PathLike | None) -> str | None:
    """Hash of a features folder's manifest (less its timings, which differ on every rebuild) and its files' names
    and sizes; None without a folder."""
    if features_dir is None:
        return None
    features_dir = Path(features_dir)
    if not features_dir.is_dir():
        raise FileNotFoundError(f"features folder {features_dir} does not exist (see examples/prepare_features.py)")
    manifest = features_dir / "manifest.json"
    files = sorted(f"{p.name}:{p.stat().st_size}" for p in features_dir.iterdir() if p.is_file() and p != manifest)
    content = json.dumps(_without_timings(_read_json(manifest)), sort_keys=True).encode() if manifest.is_file() else b""
    return _sha256(content, "\n".join(files).encode())[:16]


def data_name(data_dir: str | os.PathLike) -> str:
    """The `name` in a prepared data set's `info.json`."""
    return _read_json(Path(data_dir) / "info.json")["name"]


def data_split(data_dir: str | os.PathLike) -> str | None:
    """The split rule in a prepared data set's `info.json` (`protocol.split`); None when it records none or cannot be read."""
    try:
        split = _read_json(Path(data_dir) / "info.json").get("protocol", {}).get("split")
    except (OSError, ValueError):
        return None
    return split if isinstance(split, str) else None


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: data set (`info.json` name and folder), features folder (LLM systems), system
    (`SYSTEMS`), seed, `config` (everything else that decides the result; hashed into the folder name) and `budget`
    (LLM systems: training rows per step, `--max_train_rows`; None: what the preset and overrides say)."""

    data: str
    data_dir: str
    features_dir: str | None
    system: str
    seed: int
    config: dict[str, Any] = field(hash=False)
    budget: int | None = None

    @property
    def kind(self) -> str:
        return "baseline" if self.system in BASELINE_SYSTEMS else "llm"

    @property
    def config_hash(self) -> str:
        return _sha256(json.dumps(self.config, sort_keys=True, default=str).encode())[:10]

    def run_dir(self, output_dir: str | os.PathLike) -> Path:
        return Path(output_dir) / "runs" / self.data / self.system / f"seed{self.seed}-{self.config_hash}"


def environment() -> dict[str, Any]:
    """The machine, package versions and git commit (`+dirty` with changes) a run used."""
    import torch

    machine = {
        "hostname": platform.node(), "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "accelerator": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    packages = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    try:
        commit, dirty = (subprocess.run(["git", "-C", str(REPO_ROOT), *command], capture_output=True, text=True,
                                        check=True).stdout.strip() for command in (["rev-parse", "HEAD"], ["status", "--porcelain"]))
        git = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        git = None
    return {"machine": machine, "packages": packages, "git": git}


def _split_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The `{split: {"auc", "uauc"}}` part of a run's metrics, with `"undefined"` (`{metric: reason}`) where recorded."""
    return {split: {key: metrics[split][key] for key in ("auc", "uauc", "undefined") if key in metrics[split]}
            for split in EVALUATION_SPLITS if isinstance(metrics.get(split), dict) and "auc" in metrics[split]}


class ExperimentRunner:
    """Plans and runs the grid, skipping runs that already finished.

    Args:
        output_dir: where `runs/` (one folder per run) is written.
        baseline_overrides: per baseline, overrides of `baselines.DEFAULT_HYPERPARAMETERS` and of the schedule
            (`SCHEDULE_KEYS`) for that baseline alone.
        max_epochs, patience, min_epochs: the baselines' early stopping on valid AUC (MF from CoLLM's N(0, 1)
            start needs `min_epochs` about 150).
        llm_preset, llm_overrides: the LLM systems' preset and extra training arguments.
        threads: torch CPU threads (None: torch's default).
        trainers: replaces the trainer of a kind (`"baseline"` or `"llm"`); tests use it.
        summary_dir: where each finished run writes its summary JSON (None: nowhere).
    """

    def __init__(self, output_dir: str | os.PathLike, *, baseline_overrides: dict[str, dict[str, Any]] | None = None,
                 max_epochs: int = 1000, patience: int = 50, min_epochs: int = 0,
                 llm_preset: str | os.PathLike = DEFAULT_LLM_PRESET, llm_overrides: Sequence[str] = (),
                 threads: int | None = None, trainers: dict[str, Trainer] | None = None,
                 summary_dir: str | os.PathLike | None = None):
        self.output_dir = Path(output_dir)
        self.summary_dir = Path(summary_dir) if summary_dir is not None else None
        self.baseline_overrides = baseline_overrides or {}
        self.schedule = {"max_epochs": max_epochs, "patience": patience, "min_epochs": min_epochs}
        self.llm_preset = Path(llm_preset)
        self.llm_overrides = list(llm_overrides)
        self.threads = threads
        self.trainers: dict[str, Trainer] = {"baseline": self._train_baseline, "llm": self._train_llm, **(trainers or {})}
        self._loaded_data: dict[str, Any] = {}

    def plan(self, data_dirs: Sequence[str | os.PathLike], systems: Iterable[str], seeds: Iterable[int],
             features_dirs: Sequence[str | os.PathLike | None] | None = None,
             budgets: Sequence[int | None] = (None,)) -> list[RunSpec]:
        """The runs of the grid, data set by data set, budget by budget (a learning curve fills from its cheapest
        point), seed by seed (an interrupted grid has whole Table 3 rows), in `SYSTEMS` order.

        Args:
            features_dirs: one features folder per data set (None entries allowed); LLM systems need one.
            budgets: training rows per step of the LLM systems, one run each (None: no cap);
                baselines train on the whole train split, once.

        Raises:
            ValueError: an unknown system, a budget below 1, or mismatched `data_dirs`/`features_dirs`.
        """
        if not budgets or any(budget is not None and budget < 1 for budget in budgets):
            raise ValueError(f"budgets {list(budgets)}: expected training row counts >= 1 (or None: the whole split)")
        systems = list(dict.fromkeys(systems))
        unknown = [system for system in systems if system not in SYSTEMS]
        if unknown:
            raise ValueError(f"unknown systems {unknown}; expected among {list(SYSTEMS)}")
        systems.sort(key=SYSTEMS.index)
        features_dirs = list(features_dirs) if features_dirs is not None else [None] * len(data_dirs)
        if len(features_dirs) != len(data_dirs):
            raise ValueError(f"{len(data_dirs)} data folders but {len(features_dirs)} features folders")
        specs = []
        for data_dir, features_dir in zip(data_dirs, features_dirs):
            data_dir = Path(data_dir).resolve()
            features_dir = Path(features_dir).resolve() if features_dir is not None else None
            name, data_hash, features_hash = data_name(data_dir), data_fingerprint(data_dir), features_fingerprint(features_dir)
            for budget in budgets:
                for seed in seeds:
                    for system in systems:
                        llm = system in LLM_SYSTEMS
                        if not llm and budget != budgets[0]:
                            continue
                        config = self._config(system, data_hash, features_hash)
                        if llm and budget is not None:
                            config["budget"] = budget
                        specs.append(RunSpec(name, str(data_dir), str(features_dir) if llm and features_dir else None,
                                             system, seed, config, budget if llm else None))
        return specs

    def _config(self, system: str, data_hash: str, features_hash: str | None) -> dict[str, Any]:
        """What the run hash covers besides the seed (and an LLM run's budget)."""
        if system in BASELINE_SYSTEMS:
            from modeling_userllm.baselines import DEFAULT_HYPERPARAMETERS

            hyperparameters, schedule = self._baseline_settings(system)
            config = {"data": data_hash, "hyperparameters": {**DEFAULT_HYPERPARAMETERS[system], **hyperparameters}}
            return config | {key: value for key, value in schedule.items() if key != "min_epochs" or value}
        preset = self.preset_of(system)
        return {"data": data_hash, "features": features_hash, "preset": preset.name,
                "preset_sha256": _settings_sha256(preset) if preset.is_file() else None,
                "overrides": split_run_control(self.llm_overrides)[0]}

    def preset_of(self, system: str) -> Path:
        """The training preset of an LLM system (for a recipe system, `recipe_preset`)."""
        return recipe_preset(self.llm_preset) if system in RECIPE_SYSTEMS else self.llm_preset

    def _baseline_settings(self, system: str) -> tuple[dict[str, Any], dict[str, int]]:
        """A baseline's hyperparameter overrides and its schedule (`SCHEDULE_KEYS`)."""
        overrides = dict(self.baseline_overrides.get(system, {}))
        return overrides, self.schedule | {key: int(overrides.pop(key)) for key in SCHEDULE_KEYS if key in overrides}

    def lookup(self, spec: RunSpec) -> dict[str, Any]:
        """The record of a finished run (its folder or its summary), or one with `status` `"missing"` (nothing is trained)."""
        summary = self.summary_path(spec)
        if (spec.run_dir(self.output_dir) / "metrics.json").is_file() or (summary is not None and summary.is_file()):
            return self.run(spec)
        return {"data": spec.data, "system": spec.system, "seed": spec.seed, "budget": spec.budget, "config_hash": spec.config_hash,
                "status": "missing", "error": "not run yet", "run_dir": str(spec.run_dir(self.output_dir))}

    def run(self, spec: RunSpec) -> dict[str, Any]:
        """Runs one cell unless it finished; returns its record: the spec, `status` (`"ok"` or `"failed"`, with
        `error`: a failure never stops the grid), `cached`, `metrics`, wall time, the command that reproduces it,
        machine and package versions."""
        run_dir = spec.run_dir(self.output_dir)
        metrics_path, record_path, summary = run_dir / "metrics.json", run_dir / "run.json", self.summary_path(spec)
        if metrics_path.is_file():
            record = _read_json(record_path) if record_path.is_file() else self._record(spec)
            metrics = _read_json(metrics_path)
            record.update(status="ok", cached=True)
        elif summary is not None and summary.is_file():
            summary = _read_json(summary)
            record = {key: value for key, value in self._record(spec).items() if key != "started"}
            return record | {"status": "ok", "cached": True, "wall_seconds": summary.get("wall_s"), "git": summary.get("git"),
                             "metrics": summary.get("splits") or {"test": {"auc": summary["test_auc"], "uauc": summary["test_uauc"]}}}
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "error.txt").unlink(missing_ok=True)
            record = self._record(spec)
            start, outcome = time.perf_counter(), "stopped"
            try:
                metrics = self.trainers[spec.kind](spec, run_dir)
                outcome = "finished"
            except Exception as error:  # noqa: BLE001 - recorded, and the grid goes on
                outcome = "failed"
                invocations = record_invocation(run_dir, record, outcome, time.perf_counter() - start)
                record.update(status="failed", cached=False, error=f"{type(error).__name__}: {error}",
                              wall_seconds=total_wall_seconds(invocations), invocations=invocations)
                (run_dir / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
                atomic_write_json(record_path, record)
                return record
            finally:
                if outcome == "stopped":  # SIGTERM (SystemExit) or Ctrl-C: a resumed run adds this invocation's time
                    record_invocation(run_dir, record, outcome, time.perf_counter() - start)
            invocations = record_invocation(run_dir, record, outcome, time.perf_counter() - start)
            record.update(status="ok", cached=False, wall_seconds=total_wall_seconds(invocations), invocations=invocations)
            atomic_write_json(record_path, record)
            atomic_write_json(metrics_path, metrics)  # written last: its presence marks the run finished
        record["metrics"] = _split_metrics(metrics)
        self._write_summary(spec, record, metrics)
        return record

    def summary_path(self, spec: RunSpec) -> Path | None:
        """Where the run's summary JSON goes (None without a `summary_dir`)."""
        if self.summary_dir is None:
            return None
        split = data_split(spec.data_dir)
        tag = f"-{split}" if split in SPLIT_RULES and split != "global_time" else ""
        budget = f"-rows{spec.budget}" if spec.budget is not None else ""
        return self.summary_dir / f"{spec.data}{tag}-{spec.system}{budget}-seed{spec.seed}-{spec.config_hash}.json"

    def _write_summary(self, spec: RunSpec, record: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Writes the small JSON of a finished run (kept when the output folder is not), with the torch threads and
        (LLM runs) the dtype the run's `run_config.json` records (`auto` resolved)."""
        path = self.summary_path(spec)
        if path is None or path.is_file() or not isinstance(metrics.get("test"), dict):
            return
        test, llm = metrics["test"], spec.kind == "llm"
        rows, users = test.get("rows"), test.get("users")
        if rows is None or users is None:  # a baseline scores the whole test split
            split = self._data(spec).interactions["test"]
            rows, users = len(split), len(set(split["user_id"]))
        budget = (0 if not llm else spec.budget if spec.budget is not None
                  else " ".join(self.llm_overrides) or self.llm_preset.name)
        settings: dict[str, Any] = {"threads": self.threads}
        run_config = spec.run_dir(self.output_dir) / "train" / "run_config.json"
        if llm and run_config.is_file():
            model = _read_json(run_config).get("model", {})
            settings.update(threads=model.get("num_threads") or self.threads, dtype=model.get("dtype"))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {
            "data": spec.data, "split": data_split(spec.data_dir), "system": spec.system, "seed": spec.seed,
            "config_hash": spec.config_hash, "budget": budget, "preset": self.preset_of(spec.system).name if llm else None,
            "overrides": self.llm_overrides if llm else None,
            "test_auc": test["auc"], "test_uauc": test["uauc"], "rows": rows, "users": users,
            "splits": _split_metrics(metrics), "best_epoch": metrics.get("best_epoch"),
            "wall_s": record.get("wall_seconds"), "invocations": record.get("invocations"), "git": record.get("git"),
            "command": record.get("command"), **settings,
        })

    def _data(self, spec: RunSpec):
        """The run's prepared data set, loaded once per runner."""
        from modeling_userllm.data import RecommendationData

        if spec.data_dir not in self._loaded_data:
            self._loaded_data[spec.data_dir] = RecommendationData.load(spec.data_dir)
        return self._loaded_data[spec.data_dir]

    def run_grid(self, specs: Iterable[RunSpec], log: Callable[[str], None] = print, *, train: bool = True) -> list[dict[str, Any]]:
        """Runs every spec in order (finished ones are read back) and returns their records; with `train=False`
        nothing trains and unfinished runs are recorded as missing."""
        records = []
        specs = list(specs)
        for index, spec in enumerate(specs, 1):
            record = self.run(spec) if train else self.lookup(spec)
            test = record.get("metrics", {}).get("test", {})
            outcome = "cached" if record.get("cached") else record["status"]
            detail = ("test " + " ".join(f"{name.upper()} {'undefined' if test.get(name) is None else format(test[name], '.4f')}"
                                         for name in ("auc", "uauc")) if test else record.get("error", ""))
            budget = f" {spec.budget} rows" if spec.budget is not None else ""
            log(f"[{index}/{len(specs)}] {spec.data} {spec.system}{budget} seed {spec.seed}: {outcome} "
                f"({record.get('wall_seconds', 0)} s) {detail}")
            records.append(record)
        return records

    def _record(self, spec: RunSpec) -> dict[str, Any]:
        return {
            "data": spec.data, "data_dir": spec.data_dir, "features_dir": spec.features_dir, "system": spec.system,
            "seed": spec.seed, "budget": spec.budget, "config_hash": spec.config_hash, "config": spec.config,
            "run_dir": str(spec.run_dir(self.output_dir)), "command": shlex.join(self._command(spec)),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), **environment(),
        }

    def _command(self, spec: RunSpec) -> list[str]:
        """The standalone command that trains the run."""
        run_dir = spec.run_dir(self.output_dir)
        if spec.kind == "baseline":
            hyperparameters, schedule = self._baseline_settings(spec.system)
            command = ["python", "examples/train_baseline.py", "--model", spec.system, "--data", spec.data_dir,
                       "--output", str(run_dir), "--seed", str(spec.seed)]
            return command + [item for key, value in {**schedule, **hyperparameters}.items()
                              for item in (f"--{key.replace('_', '-')}", str(value))]
        command = ["python", "-m", TRAIN_MODULE, "--preset", str(self.preset_of(spec.system)),
                   "--variant", RECIPE_SYSTEMS.get(spec.system, spec.system),
                   "--data_dir", spec.data_dir, "--seed", str(spec.seed), "--output_dir", str(run_dir / "train")]
        if spec.features_dir:
            command += ["--features_dir", spec.features_dir]
        if spec.budget is not None:
            command += ["--max_train_rows", str(spec.budget)]
        return command + self.llm_overrides

    def _train_baseline(self, spec: RunSpec, run_dir: Path) -> dict[str, Any]:
        import torch

        from modeling_userllm.baselines import train_baseline

        if self.threads:
            torch.set_num_threads(self.threads)
        hyperparameters, schedule = self._baseline_settings(spec.system)
        return train_baseline(spec.system, self._data(spec), seed=spec.seed, progress=False, **schedule, **hyperparameters)[1]

    def _train_llm(self, spec: RunSpec, run_dir: Path) -> dict[str, Any]:
        if spec.features_dir is None:
            raise ValueError(f"{spec.system} needs a features folder (--features)")
        preset = self.preset_of(spec.system)
        if not preset.is_file():
            raise FileNotFoundError(f"{spec.system} trains with the recipe preset {preset}, which does not exist "
                                    f"(a recipe preset lies beside the LLM preset {self.llm_preset}, named <stem>{RECIPE_SUFFIX}.yaml)")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        with open(run_dir / "train.log", "a", encoding="utf-8") as log:  # a resumed run's log follows the earlier ones
            log.write(f"\n=== {datetime.now(timezone.utc).isoformat(timespec='seconds')}: {shlex.join(self._command(spec))}\n")
            log.flush()
            returncode = run_child([sys.executable, *self._command(spec)[1:]], stdout=log, env=env)
        if returncode != 0:
            tail = (run_dir / "train.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"python -m {TRAIN_MODULE} exited with {returncode}: {' | '.join(tail)}")
        metrics_path = run_dir / "train" / "metrics.json"
        if not metrics_path.is_file():
            raise FileNotFoundError(f"python -m {TRAIN_MODULE} finished without writing {metrics_path}")
        return _read_json(metrics_path)


def record_invocation(run_dir: Path, record: dict[str, Any], outcome: str, wall_seconds: float) -> list[dict[str, Any]]:
    """Appends one invocation of a run (`started`, `wall_s`, `git`, `outcome`: finished / failed / stopped) to
    RUN/invocations.json and returns them all: a run resumed over several sessions sums their times."""
    path = run_dir / INVOCATIONS_FILE
    invocations = _read_json(path) if path.is_file() else []
    invocations.append({"started": record.get("started"), "wall_s": round(wall_seconds, 1), "git": record.get("git"),
                        "outcome": outcome})
    atomic_write_json(path, invocations)
    return invocations


def total_wall_seconds(invocations: Sequence[dict[str, Any]]) -> float:
    """The time of all recorded invocations of a run (one from before invocations.json was written is not in it)."""
    return round(sum(invocation["wall_s"] for invocation in invocations), 1)


def run_child(command: Sequence[str], *, stdout: IO, env: dict[str, str]) -> int:
    """Runs `command` (output to `stdout`) and returns its exit status. SIGTERM to the runner (`kill PID`, a
    scheduler stopping the campaign) is passed on to the training child, which saves a checkpoint of its optimizer
    step under way and exits (`StopOnSigterm`); the runner then exits with 143 instead of going on to the next run.
    Any other exception kills the child, so that it does not run on without its runner, holding its run's lock and
    writing no summary. Only the main thread may set a handler; in any other thread SIGTERM keeps its default."""
    process = subprocess.Popen(list(command), stdout=stdout, stderr=subprocess.STDOUT, env=env)
    stopping = False

    def forward(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        process.send_signal(signum)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, forward) if in_main_thread else None
    try:
        returncode = process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if stopping:
        raise SystemExit(128 + signal.SIGTERM)
    return returncode


def results_document(records: list[dict[str, Any]], specs: Sequence[RunSpec], *, command: str | None = None) -> dict[str, Any]:
    """`results.json`: the grid that was asked for and the record of each of its runs."""
    grid = {"data": list(dict.fromkeys(spec.data for spec in specs)), "systems": list(dict.fromkeys(spec.system for spec in specs)),
            "seeds": sorted({spec.seed for spec in specs})}
    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command, "grid": grid, "runs": records}
