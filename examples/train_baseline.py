"""Trains one non-LLM baseline (MF, LightGCN or SASRec) on a prepared data set.

    python examples/train_baseline.py --model mf --data outputs/data/collm --min-epochs 150 --output outputs/mf

Hyperparameters default to CoLLM's choices on ML-1M's validation split
(`modeling_userllm.baselines.DEFAULT_HYPERPARAMETERS`); any of them can be overridden. The
model is early-stopped on validation AUC, and `<output>/metrics.json` receives AUC and UAUC
on valid, test, test_short and test_long, with the seed, the hyperparameters and the
training time. MF from CoLLM's N(0, 1) start needs `--min-epochs` (about 150): its validation
AUC sits at chance while weight decay shrinks the initial noise. SASRec reads as many
history items as the data folder holds, up to `--history-length` (CoLLM: 25).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from modeling_userllm.baselines import DEFAULT_HYPERPARAMETERS, train_baseline
from modeling_userllm.baselines.trainer import EVALUATION_SPLITS
from modeling_userllm.data import RecommendationData
from modeling_userllm.features.store import atomic_write_json

HYPERPARAMETER_TYPES = {
    "lr": float, "weight_decay": float, "batch_size": int, "embedding_size": int, "num_layers": int,
    "init_std": float, "hidden_size": int, "num_blocks": int, "num_heads": int, "dropout": float,
    "history_length": int,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(DEFAULT_HYPERPARAMETERS))
    parser.add_argument("--data", required=True, help="folder written by RecommendationData.save")
    parser.add_argument("--output", required=True, help="folder for metrics.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=50, help="epochs without a better valid AUC")
    parser.add_argument("--min-epochs", type=int, default=0, help="epochs trained before early stopping may stop")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    for name, kind in HYPERPARAMETER_TYPES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {
        name: getattr(args, name)
        for name in HYPERPARAMETER_TYPES
        if getattr(args, name) is not None and name in DEFAULT_HYPERPARAMETERS[args.model]
    }
    data = RecommendationData.load(args.data)
    start = time.perf_counter()
    _, metrics = train_baseline(
        args.model, data, seed=args.seed, max_epochs=args.max_epochs, patience=args.patience,
        min_epochs=args.min_epochs, **overrides
    )
    metrics.update(
        data=str(Path(args.data).resolve()),
        max_epochs=args.max_epochs,
        patience=args.patience,
        min_epochs=args.min_epochs,
        train_seconds=round(time.perf_counter() - start, 1),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output / "metrics.json", metrics)
    print(json.dumps({split: metrics[split] for split in EVALUATION_SPLITS if split in metrics}))


if __name__ == "__main__":
    main()
