"""Prepare a data set in the common form and print its Table-2 style statistics.

    python examples/prepare_data.py --dataset ml-100k --data-dir ../shared/data/ml-100k \
        --output data/ml-100k
    python examples/prepare_data.py --dataset toy --output data/toy   # posters in data/toy-posters
    # the paper's "movie" set, its Table 2 printed beside ours
    python examples/prepare_data.py --dataset movielens-csv --data-dir ../shared/data/movies-dataset \
        --preset configuration/datasets/movies-dataset.yaml --output data/movies-dataset

The preset `configuration/datasets/<dataset>.yaml` gives the protocol (including the split
rule, `split: global_time | per_user_time`) and selection parameters; flags override it.
The output folder (written atomically) holds the interactions, the item table, `info.json`
(parameters, selection counts, id maps) and `statistics.json`. Where the data set is one of
the paper's (movie, netflix), the paper's Table 2 row is printed under ours; the split rule
is named in our row, with the count of valid / test users that have no training row.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from modeling_userllm.data import DATASET_NAMES, SPLIT_RULES, format_statistics, load_dataset_by_name, split_coverage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the experiments/ harness at the repository root
from experiments.published import PAPER_DATA_SETS, PUBLISHED_TABLE2, USERLLM_PAPER  # noqa: E402

PRESETS = Path(__file__).resolve().parents[1] / "configuration" / "datasets"
FLAGS = (
    "threshold", "history_length", "min_history", "split", "split_fractions", "long_min_history", "long_history_length",
    "ratings_file", "require_poster", "top_items", "sample_items", "min_user_ratings", "sample_users",
    "selection_seed", "seed",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    parser.add_argument("--data-dir", type=Path, help="raw files (toy: posters folder, default <output>-posters)")
    parser.add_argument("--output", type=Path, required=True, help="folder to write")
    parser.add_argument("--preset", type=Path, help="YAML preset (default: configuration/datasets/<dataset>.yaml)")
    protocol = parser.add_argument_group("protocol (docs/DATA.md)")
    protocol.add_argument("--threshold", type=float)
    protocol.add_argument("--history-length", type=int)
    protocol.add_argument("--min-history", type=int)
    protocol.add_argument("--split", choices=SPLIT_RULES,
                          help="global_time: one cut of all rows in time order; per_user_time: each user's rows "
                               "cut in time order (docs/DATA.md, step 6)")
    protocol.add_argument("--split-fractions", type=float, nargs=3, metavar=("TRAIN", "VALID", "TEST"))
    protocol.add_argument("--long-min-history", type=int, help="earlier positives of a test_long row")
    protocol.add_argument("--long-history-length", type=int, help="history items given to test_long rows")
    selection = parser.add_argument_group("selection (modeling_userllm/data/selection.py)")
    selection.add_argument("--ratings-file", help="movielens-csv: the ratings file (e.g. ratings_small.csv)")
    selection.add_argument("--require-poster", action=argparse.BooleanOptionalAction, default=None)
    selection.add_argument("--top-items", type=int, help="keep the K most-rated items")
    selection.add_argument("--sample-items", type=int, help="keep K items drawn with --selection-seed")
    selection.add_argument("--min-user-ratings", type=int)
    selection.add_argument("--sample-users", type=int, help="keep N users drawn with --selection-seed")
    selection.add_argument("--selection-seed", type=int)
    parser.add_argument("--seed", type=int, help="toy only: the generator's seed")
    return parser.parse_args(argv)


def parameters(args: argparse.Namespace) -> dict:
    """The preset's parameters with the command-line overrides applied."""
    preset = args.preset or PRESETS / f"{args.dataset}.yaml"
    if args.preset is not None and not preset.is_file():
        raise SystemExit(f"error: preset {preset} does not exist")
    values = (yaml.safe_load(preset.read_text()) or {}) if preset.is_file() else {}
    values.update({flag: getattr(args, flag) for flag in FLAGS if getattr(args, flag) is not None})
    return values


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    data_dir = args.data_dir
    if args.dataset == "toy" and data_dir is None:
        data_dir = args.output.with_name(args.output.name + "-posters")
    overrides = parameters(args)
    with tqdm(total=2, desc=f"prepare {args.dataset}") as progress:
        progress.set_postfix_str("build")
        try:
            data = load_dataset_by_name(args.dataset, data_dir, **overrides)
        except FileNotFoundError as error:  # the raw files are not there: the builder says which and where from
            raise SystemExit(f"error: {error}") from error
        progress.update()
        progress.set_postfix_str("save")
        path = data.save(args.output)
        progress.update()
    split = data.info["protocol"].get("split", "global_time")
    rows = {f"{data.name} (ours, split {split})": data.info["statistics"]}
    paper_name = PAPER_DATA_SETS.get(data.name)
    if paper_name:
        rows[f"{paper_name} (published)"] = PUBLISHED_TABLE2[paper_name]
    print(format_statistics(rows))
    if paper_name:
        print(f"published: {USERLLM_PAPER}, Table 2 (the paper's '{paper_name}' data set; "
              "its test split is not divided into short/long there)")
    coverage = split_coverage(data)
    print(f"split: {split}; users with no train row: {coverage['valid_users_not_in_train']} of "
          f"{coverage['valid_users']} valid users, {coverage['test_users_not_in_train']} of "
          f"{coverage['test_users']} test users ({coverage['test_rows_of_users_not_in_train']:,} of "
          f"{coverage['test_rows']:,} test rows)")
    print(f"protocol: {data.info['protocol']}")
    if "selection" in data.info:
        print(f"selection: {data.info['selection']}")
    print(f"saved to {path} (statistics in {path / 'statistics.json'})")


if __name__ == "__main__":
    main()
