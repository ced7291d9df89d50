"""The training loop of the non-LLM baselines, as CoLLM trains them: Adam with L2 weight decay, shuffled
mini-batches, BCE-with-logits, valid AUC/UAUC after every epoch, early stopping on valid AUC, and the best
epoch's weights restored before any test split is scored.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.common import EVALUATION_SPLITS
from ..metrics import auc, uauc, undefined_metrics
from .models import LightGCN, MatrixFactorization, SASRec

HISTORY_PADDING_ID = -1  # fills the left of histories shorter than the model's history length


@dataclass
class InteractionTensors:
    """One split as tensors: `user_ids`, `item_ids` `(N,)` int64; `history_item_ids` `(N, L)` int64,
    the L most recent earlier positives, oldest first, left-padded with `HISTORY_PADDING_ID`;
    `labels` `(N,)` float32."""

    user_ids: torch.Tensor
    item_ids: torch.Tensor
    history_item_ids: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The model inputs `(user_ids, item_ids, history_item_ids)` of the rows `index`."""
        return self.user_ids[index], self.item_ids[index], self.history_item_ids[index]


def pad_histories(histories: list[list[int]], history_length: int) -> torch.Tensor:
    """`(N, history_length)` int64: each history's most recent items, left-padded, the latest in the last column."""
    padded = torch.full((len(histories), history_length), HISTORY_PADDING_ID, dtype=torch.long)
    for row, history in enumerate(histories):
        recent = history[-history_length:] if history_length else []
        if recent:
            padded[row, history_length - len(recent) :] = torch.as_tensor(recent, dtype=torch.long)
    return padded


def to_tensors(split: Any, history_length: int = 0) -> InteractionTensors:
    """An interaction split of the common form as tensors, with the `history_length` most recent history items
    (0: none; no wider than the longest history)."""
    table = split.with_format("arrow")[:]  # respects a `select`/`filter` view, unlike `split.data`
    histories = table.column("history_item_ids").to_pylist() if history_length > 0 else [[]] * len(table)
    history_length = min(history_length, max(map(len, histories), default=0))
    return InteractionTensors(
        user_ids=torch.as_tensor(table.column("user_id").to_numpy().copy(), dtype=torch.long),
        item_ids=torch.as_tensor(table.column("item_id").to_numpy().copy(), dtype=torch.long),
        history_item_ids=pad_histories(histories, history_length),
        labels=torch.as_tensor(table.column("label").to_numpy().copy(), dtype=torch.float32),
    )


@torch.no_grad()
def predict(model: nn.Module, tensors: InteractionTensors, batch_size: int = 8192) -> np.ndarray:
    """`(N,)` float64 logits of every row, in row order, with `model` in eval mode."""
    was_training = model.training
    model.eval()
    scores = [model(*tensors.batch(index)) for index in torch.arange(len(tensors)).split(batch_size)]
    model.train(was_training)
    return torch.cat(scores).double().numpy()


def evaluate(model: nn.Module, tensors: InteractionTensors, batch_size: int = 8192) -> dict[str, Any]:
    """`{"auc", "uauc"}` of `model` on one split; a metric its labels cannot define is None, with the reason in
    `"undefined"` (`{metric: reason}`), as the LLM runs record it."""
    scores = predict(model, tensors, batch_size)
    user_ids, labels = tensors.user_ids.numpy(), tensors.labels.numpy()
    undefined = undefined_metrics(user_ids, labels)
    metrics = {"auc": None if "auc" in undefined else auc(labels, scores),
               "uauc": None if "uauc" in undefined else uauc(user_ids, labels, scores)}
    return metrics | ({"undefined": undefined} if undefined else {})


@dataclass
class FitResult:
    """The restored epoch (from 0), its valid metrics, the epochs trained and `{"epoch", "loss", "valid_auc",
    "valid_uauc"}` per epoch."""

    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)


def fit(model: nn.Module, train: InteractionTensors, valid: InteractionTensors, *, lr: float, weight_decay: float,
        batch_size: int, max_epochs: int, patience: int, min_epochs: int = 0, seed: int = 0,
        progress: bool = True) -> FitResult:
    """Trains `model` in place and restores the weights of its best valid-AUC epoch.

    Args:
        model: maps `(user_ids, item_ids, history_item_ids)` to `(B,)` logits.
        valid: the rows early stopping looks at (never a test split).
        patience: stop after this many epochs without a better valid AUC.
        min_epochs: never stop before: MF from CoLLM's N(0, 1) start stays at chance on valid for about a
            hundred epochs, a plateau patience would mistake for convergence.
        seed: seeds the shuffling and dropout (the initial weights are the caller's).

    Raises:
        ValueError: valid AUC is undefined (one class), so early stopping has nothing to compare.
    """
    undefined = undefined_metrics(valid.user_ids.numpy(), valid.labels.numpy())
    if "auc" in undefined:
        raise ValueError(f"valid split: {undefined['auc']}; early stopping needs a valid AUC")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    best_auc, best_epoch, best_valid = -math.inf, -1, {}
    best_state = copy.deepcopy(model.state_dict())
    history = []
    bar = tqdm(range(max_epochs), desc=type(model).__name__, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total_loss = 0.0
        for index in torch.randperm(len(train), generator=generator).split(batch_size):
            loss = F.binary_cross_entropy_with_logits(model(*train.batch(index)), train.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(index)
        loss = total_loss / len(train)
        metrics = evaluate(model, valid)
        history.append({"epoch": epoch, "loss": loss, "valid_auc": metrics["auc"], "valid_uauc": metrics["uauc"]})
        if metrics["auc"] > best_auc:
            best_auc, best_epoch, best_valid = metrics["auc"], epoch, metrics
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{loss:.4f}", valid_auc=f"{metrics['auc']:.4f}", best=f"{best_auc:.4f}@{best_epoch}")
        if epoch + 1 >= min_epochs and epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    return FitResult(best_epoch=best_epoch, best_valid=best_valid, epochs_run=len(history), history=history)


def _build_lightgcn(data: Any, **kwargs: Any) -> nn.Module:
    train = to_tensors(data.interactions["train"])
    positive = train.labels == 1  # the graph holds the positive train interactions only, as in CoLLM
    return LightGCN(data.num_users, data.num_items, train.user_ids[positive], train.item_ids[positive], **kwargs)


BASELINES = {
    "mf": lambda data, **kwargs: MatrixFactorization(data.num_users, data.num_items, **kwargs),
    "lightgcn": _build_lightgcn,
    "sasrec": lambda data, **kwargs: SASRec(data.num_items, **kwargs),
}

DEFAULT_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    # CoLLM's choices on ML-1M's validation split (baseline_train_*.py of zyang1580/CoLLM).
    "mf": {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 1024, "embedding_size": 256, "init_std": 1.0},
    "lightgcn": {"lr": 1e-2, "weight_decay": 1e-4, "batch_size": 1024, "embedding_size": 64, "num_layers": 2, "init_std": 0.1},
    "sasrec": {"lr": 1e-2, "weight_decay": 1e-2, "batch_size": 2048,
               "hidden_size": 64, "num_blocks": 2, "num_heads": 1, "dropout": 0.2, "history_length": 25},
}
_OPTIMIZATION_KEYS = ("lr", "weight_decay", "batch_size")


def train_baseline(name: str, data: Any, *, seed: int = 0, max_epochs: int = 1000, patience: int = 50,
                   min_epochs: int = 0, progress: bool = True, **hyperparameters: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Builds, trains (early stopping on valid AUC, see `fit`) and evaluates one baseline.

    Args:
        name: one of `BASELINES`.
        data: a `RecommendationData` with at least `train` and `valid`.
        seed: seeds the initial weights, the shuffling and dropout.
        **hyperparameters: overrides of `DEFAULT_HYPERPARAMETERS[name]`.

    Returns:
        The model and `{"model", "seed", "hyperparameters", "best_epoch", "epochs_run", "history", "<split>":
        evaluate(...) for each of EVALUATION_SPLITS present}`.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    if unknown := set(hyperparameters) - set(DEFAULT_HYPERPARAMETERS[name]):
        raise ValueError(f"{name} does not take {sorted(unknown)}; it takes {sorted(DEFAULT_HYPERPARAMETERS[name])}")
    settings = {**DEFAULT_HYPERPARAMETERS[name], **hyperparameters}
    torch.manual_seed(seed)
    model = BASELINES[name](data, **{key: value for key, value in settings.items() if key not in _OPTIMIZATION_KEYS})
    splits = {split: to_tensors(data.interactions[split], getattr(model, "history_length", 0)) for split in data.interactions}
    result = fit(model, splits["train"], splits["valid"], **{key: settings[key] for key in _OPTIMIZATION_KEYS},
                 max_epochs=max_epochs, patience=patience, min_epochs=min_epochs, seed=seed, progress=progress)
    metrics: dict[str, Any] = {"model": name, "seed": seed, "hyperparameters": settings, "best_epoch": result.best_epoch,
                               "epochs_run": result.epochs_run, "history": result.history}
    return model, metrics | {split: evaluate(model, splits[split]) for split in EVALUATION_SPLITS if split in splits}
