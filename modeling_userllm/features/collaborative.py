"""Collaborative embeddings (paper Sec. 3.2.4): the user and item tables of a pretrained MF.

MF is trained as CoLLM trains it (dot-product score, BCE-with-logits on the labels, Adam with lr 1e-3 and weight
decay 1e-4, batch 1024, early stopping on validation AUC); `FeatureStore` stores its two tables as
`collaborative.safetensors`, which `UserLLMForRecommendation` loads. The same model is the paper's MF baseline.
"""

from __future__ import annotations

from typing import Any

import torch

from ..baselines import train_baseline


def train_collaborative_embeddings(data: Any, *, dim: int = 256, lr: float = 1e-3, weight_decay: float = 1e-4,
                                   batch_size: int = 1024, init_std: float = 1.0, seed: int = 0, max_epochs: int = 1000,
                                   patience: int = 50, min_epochs: int = 150,
                                   progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Trains MF on `data` (a `RecommendationData` with `train` and `valid` splits) and returns its tables.

    Args:
        dim: embedding size d (256 in CoLLM and USER-LLM).
        lr, weight_decay, batch_size: Adam's learning rate and L2 penalty, rows per step.
        init_std: standard deviation of the initial tables; CoLLM's 1.0 needs hundreds of epochs, a small value
            (0.1, with a larger lr) learns in a few on small data.
        seed: seeds the initial tables and the shuffling.
        max_epochs, patience: an epoch cap; epochs without a better validation AUC before stopping.
        min_epochs: epochs always trained: from CoLLM's N(0, 1) start the validation AUC stays at chance for
            about a hundred epochs (see `baselines.fit`).

    Returns:
        `user_embeddings` float32 `(num_users, dim)`, `item_embeddings` float32 `(num_items, dim)` (the best
        validation epoch's) and the MF metrics (AUC/UAUC per split, best epoch, hyperparameters: `train_baseline`).
    """
    model, metrics = train_baseline(
        "mf", data, seed=seed, max_epochs=max_epochs, patience=patience, min_epochs=min_epochs, progress=progress,
        lr=lr, weight_decay=weight_decay, batch_size=batch_size, embedding_size=dim, init_std=init_std,
    )
    return model.user_embedding.weight.detach().float().clone(), model.item_embedding.weight.detach().float().clone(), metrics
