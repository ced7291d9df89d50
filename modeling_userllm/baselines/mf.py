"""Matrix factorisation (MF), the collaborative model CoLLM and USER-LLM take embeddings from."""

from __future__ import annotations

import torch
from torch import nn


class MatrixFactorization(nn.Module):
    """MF without biases: score(u, i) = <p_u, q_i>.

    The embeddings start from N(0, init_std^2). CoLLM keeps `nn.Embedding`'s N(0, 1): with
    Adam's weight decay the large initial norms shrink slowly over hundreds of epochs, the
    regime its published MF figures were tuned in. A small `init_std` learns in a few
    epochs, which suits small data sets.

    Args:
        num_users: rows of the user table (user ids are `0 .. num_users - 1`).
        num_items: rows of the item table.
        embedding_size: d, the size of both tables (256 in CoLLM and USER-LLM).
        init_std: standard deviation of the initial embeddings.
    """

    history_length = 0

    def __init__(self, num_users: int, num_items: int, embedding_size: int = 256, init_std: float = 1.0) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(num_users, embedding_size)
        self.item_embedding = nn.Embedding(num_items, embedding_size)
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.item_embedding.weight, std=init_std)

    def forward(
        self, user_ids: torch.Tensor, item_ids: torch.Tensor, history_item_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores `(user, item)` pairs; MF ignores the history.

        Args:
            user_ids: `(B,)` int64.
            item_ids: `(B,)` int64.
            history_item_ids: unused, accepted so that all baselines share one signature.

        Returns:
            `(B,)` logits.
        """
        return (self.user_embedding(user_ids) * self.item_embedding(item_ids)).sum(dim=-1)
