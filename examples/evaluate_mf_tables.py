"""Score an evaluation split with the MF tables of a features folder alone: the collaborative
embeddings the LLM systems are fed, as a recommender of their own (user . item dot product).

Rows are cut to whole users exactly as `examples/train.py` cuts them (`max_eval_rows`, same
seed), so the figure sits beside LLM runs scored on the same rows:

    python examples/evaluate_mf_tables.py --data data/movies-dataset --features data/movies-dataset-features \
        --split test --max-rows 1100 --seed 0
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from modeling_userllm.metrics import auc_and_uauc
from modeling_userllm.training.arguments import DataArguments
from modeling_userllm.training.datasets import load_run_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared data set folder")
    parser.add_argument("--features", required=True, help="features folder holding collaborative.safetensors")
    parser.add_argument("--split", nargs="+", default=["test"])
    parser.add_argument("--max-rows", type=int, help="cut each split to whole users holding at most this many rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of the user cut (the training run's seed)")
    args = parser.parse_args()

    run_data = load_run_data(DataArguments(data_dir=args.data, features_dir=args.features),
                             use_visual=False, use_collaborative=True, use_descriptions=False)
    users_table, items_table = run_data.features.user_embeddings, run_data.features.item_embeddings
    results = {}
    for split in args.split:
        dataset, num_users = run_data.user_subset(split, args.max_rows, args.seed)
        rows = [dataset[index] for index in range(len(dataset))]
        user_ids = np.array([row["user_id"] for row in rows])
        item_ids = np.array([row["item_id"] for row in rows])
        labels = np.array([row["label"] for row in rows])
        scores = (users_table[user_ids] * items_table[item_ids]).sum(dim=1).numpy()  # (rows,)
        results[split] = {**auc_and_uauc(user_ids, labels, scores), "rows": len(rows), "users": num_users}
        print(f"{split}: AUC {results[split]['auc']:.4f}  UAUC {results[split]['uauc']:.4f}  "
              f"({len(rows)} rows, {num_users} users)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
