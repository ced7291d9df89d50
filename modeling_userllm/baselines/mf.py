"""Matrix factorisation (MF), the collaborative model CoLLM and USER-LLM take embeddings from."""

from __future__ import annotations

import torch
from torch import nn


class MatrixFactorization(nn.Module):
    """MF without biases: score(u, i) = <p_u, q_i>, tables of size d (256 in CoLLM and USER-LLM).

    The embeddings start from N(0, init_std^2). CoLLM keeps `nn.Embedding`'s N(0, 1), whose
    norms weight decay shrinks over hundreds of epochs (the regime its MF figures were tuned
    in); a small `init_std` learns in a few epochs, which suits small data sets.
    """

    history_length = 0

    def __init__(self, num_users: int, num_items: int, embedding_size: int = 256, init_std: float = 1.0) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(num_users, embedding_size)
        self.item_embedding = nn.Embedding(num_items, embedding_size)
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.item_embedding.weight, std=init_std)

    def forward(self, user_ids: torch.Tensor, item_ids: torch.Tensor, history_item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """`(B,)` logits of `(B,)` user and item ids (the history, unused, keeps the baselines' one signature)."""
        return (self.user_embedding(user_ids) * self.item_embedding(item_ids)).sum(dim=-1)
