"""Prepare a data set in the common form and print its Table-2 style statistics.

    python examples/prepare_data.py --dataset ml-100k --data-dir ../shared/data/ml-100k \
        --output data/ml-100k
    python examples/prepare_data.py --dataset toy --output data/toy   # posters in data/toy-posters

The preset `configuration/datasets/<dataset>.yaml` gives the protocol parameters; flags
override it. The output folder (written atomically) holds the interactions, the item
table, `info.json` (parameters, id maps) and `statistics.json`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from modeling_userllm.data import DATASET_NAMES, format_statistics, load_dataset_by_name

PRESETS = Path(__file__).resolve().parents[1] / "configuration" / "datasets"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    parser.add_argument("--data-dir", type=Path, help="raw files (toy: posters folder, default <output>-posters)")
    parser.add_argument("--output", type=Path, required=True, help="folder to write")
    parser.add_argument("--preset", type=Path, help="YAML preset (default: configuration/datasets/<dataset>.yaml)")
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--history-length", type=int)
    parser.add_argument("--min-history", type=int)
    parser.add_argument("--split-fractions", type=float, nargs=3, metavar=("TRAIN", "VALID", "TEST"))
    parser.add_argument("--short-long-threshold", type=int)
    parser.add_argument("--seed", type=int, help="toy only")
    return parser.parse_args()


def parameters(args: argparse.Namespace) -> dict:
    """The preset's parameters with the command-line overrides applied."""
    preset = args.preset or PRESETS / f"{args.dataset}.yaml"
    values = yaml.safe_load(preset.read_text()) if preset.is_file() else {}
    flags = ("threshold", "history_length", "min_history", "split_fractions", "short_long_threshold", "seed")
    values.update({flag: getattr(args, flag) for flag in flags if getattr(args, flag) is not None})
    return values


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args()
    data_dir = args.data_dir
    if args.dataset == "toy" and data_dir is None:
        data_dir = args.output.with_name(args.output.name + "-posters")
    overrides = parameters(args)
    with tqdm(total=2, desc=f"prepare {args.dataset}") as progress:
        progress.set_postfix_str("build")
        data = load_dataset_by_name(args.dataset, data_dir, **overrides)
        progress.update()
        progress.set_postfix_str("save")
        path = data.save(args.output)
        progress.update()
    print(format_statistics({data.name: data.info["statistics"]}))
    print(f"protocol: {data.info['protocol']}")
    print(f"saved to {path} (statistics in {path / 'statistics.json'})")


if __name__ == "__main__":
    main()
