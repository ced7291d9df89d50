"""Run the paper's systems on prepared data sets and write the report of Tables 3, 4 and 5.

    # the toy data set, every system, the tiny toy LLM (minutes on a CPU)
    python examples/prepare_data.py --dataset toy --output data/toy
    python examples/prepare_features.py --data data/toy --output data/toy-features \
        --description-source column --image-model toy
    python examples/run_experiments.py --data data/toy --features data/toy-features \
        --seeds 0 1 2 --llm-seeds 0 --output outputs/experiments/toy

    # CoLLM's ML-1M split, the three baselines against CoLLM's Table II
    python examples/run_experiments.py --data data/collm --systems mf lightgcn sasrec \
        --seeds 0 1 2 --output outputs/experiments/collm

    # ml-100k with posters, the LLM rows on SmolLM2-135M
    python examples/run_experiments.py --data data/ml-100k --features data/ml-100k-features \
        --llm-preset configuration/smollm2.yaml --seeds 0 --output outputs/experiments/ml-100k

Every run gets its own folder under `<output>/runs/` keyed by data set, system, seed and a
hash of its configuration; a rerun skips the runs that finished, so an interrupted grid
resumes and a grown grid only trains what is new. Writes `<output>/results.json`,
`<output>/report.md` and `<output>/plots/*.png`; with `--summary-dir docs/results` also one
small JSON per finished run, which survives the output folder (a run that has one is skipped).

    # the paper's "movie" set (configuration/datasets/movies-dataset.yaml, split per_user_time): the
    # three baselines; summaries of a per_user_time data set are named
    # docs/results/movielens-csv-per_user_time-<system>-seed<seed>-<hash>.json
    python examples/run_experiments.py --data data/movies-dataset --systems mf lightgcn sasrec \
        --seeds 0 1 2 --threads 1 --max-epochs 300 --patience 30 --baseline-override mf.min_epochs=150 \
        --baseline-override sasrec.max_epochs=20 --output outputs/experiments/movies-dataset \
        --summary-dir docs/results

    # the learning curve of issue 15 on that data set: the LLM rows at growing training budgets
    # (rows per step), SmolLM2-135M on CPU, beside the baselines; writes
    # docs/results/learning_curve_movie.json and .png from every summary in docs/results
    python examples/run_experiments.py --data data/movies-dataset --features data/movies-dataset-features \
        --systems mf lightgcn sasrec tallrec collm collm_va userllm --seeds 0 --llm-budgets 512 2048 \
        --llm-preset configuration/movies-smollm2.yaml --threads 1 --max-epochs 300 --patience 30 \
        --baseline-override mf.min_epochs=150 --baseline-override sasrec.max_epochs=20 \
        --output outputs/experiments/movies-curve --summary-dir docs/results \
        --learning-curve docs/results/learning_curve_movie
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml

from modeling_userllm.features.store import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the experiments/ harness at the repository root
from experiments import (  # noqa: E402
    LLM_SYSTEMS,
    SYSTEMS,
    ExperimentRunner,
    build_report,
    make_plots,
    results_document,
)
from experiments.learning_curve import learning_curve_records, write_learning_curve  # noqa: E402
from experiments.runner import PAPER_SYSTEMS, data_name, data_split  # noqa: E402

CONFIGURATION = Path(__file__).resolve().parents[1] / "configuration"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True, help="prepared data set folders (prepare_data.py)")
    parser.add_argument("--features", nargs="+", help="one features folder per --data (prepare_features.py); "
                                                      "needed by the LLM systems")
    parser.add_argument("--systems", nargs="+", default=list(PAPER_SYSTEMS), choices=SYSTEMS, metavar="SYSTEM",
                        help=f"among {', '.join(SYSTEMS)} (default: the paper's, all but userllm_recipe, which "
                             "trains with the recipe preset beside --llm-preset)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--llm-seeds", nargs="+", type=int,
                        help="seeds of the LLM systems when they differ from --seeds (an LLM run costs far more)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--llm-preset", default="toy",
                        help="training preset of the LLM systems: a YAML file or a name in configuration/ (default toy)")
    parser.add_argument("--llm-budgets", nargs="+", type=int,
                        help="training rows per step of the LLM systems (a seeded subset, --max_train_rows): one run "
                             "per budget; default: what the preset trains on")
    parser.add_argument("--learning-curve", type=Path, metavar="STEM",
                        help="write STEM.json (records) and STEM.png (test AUC against budget) from the summaries in "
                             "--summary-dir (needs it)")
    parser.add_argument("--llm-args", default="",
                        help="extra examples/train.py arguments, quoted: '--step1_max_steps 50 --max_eval_rows 500'")
    parser.add_argument("--baseline-override", action="append", default=[], metavar="SYSTEM.KEY=VALUE",
                        help="a baseline hyperparameter or schedule key, e.g. sasrec.lr=0.001, "
                             "mf.min_epochs=150 (repeatable)")
    parser.add_argument("--max-epochs", type=int, default=1000, help="baselines: epoch limit")
    parser.add_argument("--patience", type=int, default=50, help="baselines: epochs without a better valid AUC")
    parser.add_argument("--min-epochs", type=int, default=0, help="baselines: epochs always trained")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the finished runs, the others as missing")
    parser.add_argument("--threads", type=int, help="torch CPU threads per run")
    parser.add_argument("--summary-dir", type=Path,
                        help="write one small JSON per finished run here (e.g. docs/results); runs with one are skipped")
    args = parser.parse_args()
    if args.features and len(args.features) != len(args.data):
        parser.error(f"--features needs one folder per --data ({len(args.data)}), got {len(args.features)}")
    if not args.features and any(system in LLM_SYSTEMS for system in args.systems):
        parser.error("the LLM systems need --features (or pass --systems mf lightgcn sasrec)")
    if args.learning_curve and not args.summary_dir:
        parser.error("--learning-curve reads the run summaries: pass --summary-dir too")
    if args.llm_budgets and min(args.llm_budgets) < 1:
        parser.error(f"--llm-budgets {args.llm_budgets}: each must be a number of training rows >= 1")
    return args


def preset_path(name: str) -> Path:
    """A preset file, given as a path or as a name in configuration/."""
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else CONFIGURATION / f"{name}.yaml"


def baseline_overrides(items: list[str]) -> dict[str, dict]:
    """`["sasrec.lr=0.001"]` -> `{"sasrec": {"lr": 0.001}}` (values parsed as YAML scalars)."""
    overrides: dict[str, dict] = {}
    for item in items:
        target, _, value = item.partition("=")
        system, _, key = target.partition(".")
        if not (system and key and value):
            raise SystemExit(f"--baseline-override {item!r}: expected SYSTEM.KEY=VALUE")
        overrides.setdefault(system, {})[key] = yaml.safe_load(value)
    return overrides


def main() -> None:
    args = parse_args()
    runner = ExperimentRunner(
        args.output,
        baseline_overrides=baseline_overrides(args.baseline_override),
        max_epochs=args.max_epochs,
        patience=args.patience,
        min_epochs=args.min_epochs,
        llm_preset=preset_path(args.llm_preset),
        llm_overrides=shlex.split(args.llm_args),
        threads=args.threads,
        summary_dir=args.summary_dir,
    )
    baselines = [system for system in args.systems if system not in LLM_SYSTEMS]
    llms = [system for system in args.systems if system in LLM_SYSTEMS]
    specs = runner.plan(args.data, baselines, args.seeds, args.features)
    budgets = sorted(args.llm_budgets) if args.llm_budgets else [None]
    specs += runner.plan(args.data, llms, args.llm_seeds or args.seeds, args.features, budgets=budgets)
    records = runner.run_grid(specs, train=not args.report_only)
    # Tables 3-5 compare systems at one budget: the largest.
    reported = [(spec, record) for spec, record in zip(specs, records) if spec.budget == budgets[-1] or spec.kind == "baseline"]
    results = results_document([record for _, record in reported], [spec for spec, _ in reported],
                               command=shlex.join(["python", *sys.argv]))
    args.output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.output / "results.json", results)
    (args.output / "report.md").write_text(build_report(results), encoding="utf-8")
    plots = make_plots(results, args.output / "plots")
    print(f"results: {args.output / 'results.json'}\nreport: {args.output / 'report.md'}\nplots: "
          + ", ".join(str(p) for p in plots))
    if args.learning_curve:
        for data_dir in args.data:
            name, split = data_name(data_dir), data_split(data_dir)
            curve = learning_curve_records(args.summary_dir, name, split)
            paths = write_learning_curve(curve, args.learning_curve if len(args.data) == 1 else
                                         args.learning_curve.with_name(f"{args.learning_curve.name}_{name}"), name)
            print(f"learning curve of {name} ({len(curve)} runs): " + ", ".join(str(path) for path in paths))


if __name__ == "__main__":
    main()
