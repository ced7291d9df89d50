"""Carries a campaign's unfinished runs to the next machine in git (`experiments/carry.py`).

    python examples/carry_checkpoints.py save --runs /work/runs --repo .      # before the session ends, then push
    python examples/carry_checkpoints.py restore --runs /work/runs --repo .   # on the next machine, after setup

`save` replaces the branch `campaign-checkpoints` with one parentless commit of every unfinished training run's
run_config.json, inputs.json, finished step results and last complete checkpoints; `restore` writes them back, and
each run then continues with `--resume` (which checks its data and features files against inputs.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the experiments/ harness at the repository root
from experiments.carry import CARRY_BRANCH, restore_checkpoints, save_checkpoints  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("save", "restore"))
    parser.add_argument("--runs", type=Path, required=True, help="the folder holding the campaign's runs")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the git repository that carries them")
    parser.add_argument("--branch", default=CARRY_BRANCH, help="the side branch (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.runs.is_dir() and args.action == "save":
        raise SystemExit(f"error: --runs {args.runs} is not a folder: expected the folder holding the campaign's runs")
    try:
        run_action(args)
    except (FileExistsError, RuntimeError) as error:  # a run that went on here; git's own message (no such branch)
        raise SystemExit(f"error: {error}") from None


def run_action(args: argparse.Namespace) -> None:
    if args.action == "save":
        carried = save_checkpoints(args.runs, args.repo, args.branch)
        print(f"Carried {len(carried)} unfinished run(s) on {args.branch}" if carried
              else f"No unfinished run under {args.runs}: {args.branch} left as it was")
        for run in carried:
            print(f"  {run}")
    else:
        written = restore_checkpoints(args.runs, args.repo, args.branch)
        print(f"Wrote {written} file(s) from {args.branch} under {args.runs}: continue each run with --resume")


if __name__ == "__main__":
    main()
