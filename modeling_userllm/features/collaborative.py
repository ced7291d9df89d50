"""Collaborative embeddings (paper Sec. 3.2.4): the user and item tables of a pretrained MF.

MF is trained as CoLLM trains it (dot-product score, BCE-with-logits on the labels, Adam with
lr 1e-3 and weight decay 1e-4, batch 1024, early stopping on validation AUC), and its two
tables are stored as `collaborative.safetensors` in the features folder, which
`UserLLMForRecommendation` loads. The same model is the paper's MF baseline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..baselines import train_baseline
from .store import COLLABORATIVE_FILE, atomic_save_safetensors


def train_collaborative_embeddings(
    data: Any,
    *,
    dim: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 1024,
    init_std: float = 1.0,
    seed: int = 0,
    max_epochs: int = 1000,
    patience: int = 50,
    min_epochs: int = 150,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Trains MF on `data` and returns its embedding tables.

    Args:
        data: a `RecommendationData` (splits `train` and `valid` at least).
        dim: embedding size d (256 in CoLLM and USER-LLM).
        lr: Adam learning rate.
        weight_decay: Adam L2 penalty.
        batch_size: rows per step.
        init_std: standard deviation of the initial tables; CoLLM's 1.0 needs hundreds of
            epochs, a small value (0.1, with a larger lr) learns in a few on small data.
        seed: seeds the initial tables, the shuffling and thus the result.
        max_epochs: upper bound on the epochs.
        patience: epochs without a better validation AUC before stopping.
        min_epochs: epochs always trained: from CoLLM's N(0, 1) start the validation AUC
            stays at chance for about a hundred epochs (see `baselines.fit`).
        progress: show a progress bar.

    Returns:
        `user_embeddings` float32 `(num_users, dim)`, `item_embeddings` float32
        `(num_items, dim)` (the best validation epoch's), and the MF metrics (AUC/UAUC per
        evaluation split, best epoch, hyperparameters; see `train_baseline`).
    """
    model, metrics = train_baseline(
        "mf", data, seed=seed, max_epochs=max_epochs, patience=patience, min_epochs=min_epochs, progress=progress,
        lr=lr, weight_decay=weight_decay, batch_size=batch_size, embedding_size=dim, init_std=init_std,
    )
    user_embeddings = model.user_embedding.weight.detach().float().clone()
    item_embeddings = model.item_embedding.weight.detach().float().clone()
    return user_embeddings, item_embeddings, metrics


def _collaborative_file(path: str | os.PathLike) -> Path:
    """`path` itself when it names a `.safetensors` file, else `path/collaborative.safetensors`."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path / COLLABORATIVE_FILE


def save_collaborative_embeddings(
    path: str | os.PathLike, user_embeddings: torch.Tensor, item_embeddings: torch.Tensor
) -> Path:
    """Writes the tables atomically (temporary file, then rename).

    Args:
        path: a features folder (created if needed; the file is `collaborative.safetensors`
            in it) or the path of a `.safetensors` file.
        user_embeddings: `(num_users, d)`.
        item_embeddings: `(num_items, d)`.

    Returns:
        The file written.

    Raises:
        ValueError: the tables are not 2-D with the same width.
    """
    if user_embeddings.ndim != 2 or item_embeddings.ndim != 2 or user_embeddings.shape[1] != item_embeddings.shape[1]:
        raise ValueError(
            f"expected (num_users, d) and (num_items, d) tables, got {tuple(user_embeddings.shape)} "
            f"and {tuple(item_embeddings.shape)}"
        )
    file = _collaborative_file(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(
        file, {"user_embeddings": user_embeddings.float(), "item_embeddings": item_embeddings.float()}
    )
    return file


def load_collaborative_embeddings(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Reads the tables written by `save_collaborative_embeddings`.

    Args:
        path: a features folder or the `.safetensors` file itself.

    Returns:
        `user_embeddings` `(num_users, d)` and `item_embeddings` `(num_items, d)`, float32.
    """
    tensors = load_file(_collaborative_file(path))
    return tensors["user_embeddings"], tensors["item_embeddings"]
