"""Is one system above another on the same rows? A bootstrap over users of the AUC and UAUC differences.

    python examples/paired_comparison.py --predictions RUN/predictions.json --split test \
        --against-mf-tables FEATURES            # the MF tables the LLM reads: score = <user, item>
    python examples/paired_comparison.py --predictions A.json --against B.json --split test

A training run writes RUN/predictions.json (every split it evaluated); `examples/evaluate.py --predictions FILE`
scores a checkpoint again (another split, or a run from before predictions.json).

Prints each system's metric, the difference, its 95% interval and the share of resamples in which the first
system is not above the second; `--output` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from modeling_userllm.features.store import atomic_write_json
from modeling_userllm.metrics import paired_user_bootstrap


def load_predictions(path: Path, split: str) -> dict[str, np.ndarray]:
    try:
        predictions = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"error: could not read the predictions file {path}: {error}") from error
    if split not in predictions:
        raise SystemExit(f"error: {path} holds no split {split!r} (it has {sorted(predictions)}): pass --split")
    columns = {name: np.asarray(predictions[split].get(name, [])) for name in ("user_id", "item_id", "label", "score")}
    if len({len(values) for values in columns.values()}) != 1 or not len(columns["score"]):
        raise SystemExit(f"error: {path} split {split!r}: expected lists user_id, item_id, label, score of one length, "
                         f"got lengths {({name: len(values) for name, values in columns.items()})}")
    return columns


def mf_table_scores(features: Path, rows: dict[str, np.ndarray]) -> np.ndarray:
    """<user, item> of the features folder's MF tables for each row (MF without biases, as trained)."""
    tables = load_file(features / "collaborative.safetensors")
    users, items = tables["user_embeddings"], tables["item_embeddings"]
    for name, table in (("user_id", users), ("item_id", items)):
        if rows[name].max() >= len(table):
            raise SystemExit(f"error: a row's {name} {int(rows[name].max())} is beyond the {len(table)} rows of the MF "
                             f"tables in {features}: the predictions are of another data set")
    return (users[rows["user_id"]] * items[rows["item_id"]]).sum(-1).double().numpy()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=Path, required=True, help="system A: a file of examples/evaluate.py --predictions")
    against = parser.add_mutually_exclusive_group(required=True)
    against.add_argument("--against", type=Path, help="system B: another predictions file of the same rows")
    against.add_argument("--against-mf-tables", type=Path, help="system B: a features folder's MF tables")
    parser.add_argument("--split", default="test")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="JSON file for the result")
    args = parser.parse_args(argv)

    a = load_predictions(args.predictions, args.split)
    if args.against is not None:
        b = load_predictions(args.against, args.split)
        for name in ("user_id", "item_id", "label"):
            if not np.array_equal(a[name], b[name]):
                raise SystemExit(f"error: {args.predictions} and {args.against} differ in column {name} of split "
                                 f"{args.split!r}: a paired comparison needs the same rows in the same order")
        scores_b, name_b = b["score"], str(args.against)
    else:
        scores_b, name_b = mf_table_scores(args.against_mf_tables, a), f"MF tables of {args.against_mf_tables}"
    result = paired_user_bootstrap(a["user_id"], a["label"], a["score"], scores_b, args.resamples, args.seed)
    result |= {"a": str(args.predictions), "b": name_b, "split": args.split, "rows": len(a["score"]),
               "users": len(set(a["user_id"].tolist())), "seed": args.seed}
    for metric in ("auc", "uauc"):
        stats = result[metric]
        print(f"{metric.upper()}: A {stats['a']:.4f}  B {stats['b']:.4f}  A - B {stats['difference']:+.4f}  "
              f"95% [{stats['ci95'][0]:+.4f}, {stats['ci95'][1]:+.4f}]  A not above B in "
              f"{stats['fraction_not_above']:.1%} of {stats['resamples']} user resamples")
    if args.output:
        atomic_write_json(args.output, result)
        print(f"written: {args.output}")
    return result


if __name__ == "__main__":
    main()
