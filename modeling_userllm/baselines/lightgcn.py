"""LightGCN (He et al., SIGIR 2020) scored pointwise, as CoLLM trains it for CTR-style AUC."""

from __future__ import annotations

import torch
from torch import nn


def normalized_adjacency(user_ids: torch.Tensor, item_ids: torch.Tensor, num_users: int, num_items: int) -> torch.Tensor:
    """LightGCN's symmetric normalised adjacency D^-1/2 A D^-1/2, a coalesced sparse COO float32
    `(num_users + num_items,) * 2` tensor: users first, item i is node `num_users + i`; no
    self-loops; repeated edges of the `(E,)` edge lists count once."""
    num_nodes = num_users + num_items
    edges = torch.unique(torch.stack([user_ids, item_ids + num_users]), dim=1)  # (2, E)
    rows = torch.cat([edges[0], edges[1]])
    cols = torch.cat([edges[1], edges[0]])
    degree = torch.bincount(rows, minlength=num_nodes).float()
    inverse_sqrt_degree = degree.pow(-0.5).masked_fill(degree == 0, 0.0)
    values = inverse_sqrt_degree[rows] * inverse_sqrt_degree[cols]
    indices = torch.stack([rows, cols])
    return torch.sparse_coo_tensor(indices, values, (num_nodes, num_nodes), check_invariants=True).coalesce()


class LightGCN(nn.Module):
    """LightGCN: e^(k+1) = A_hat e^(k) over the user-item graph of the `(E,)` edges, the final
    embedding the mean of e^(0) .. e^(K) (K = `num_layers`), score(u, i) = <e_u, e_i>. The whole
    graph propagates on every forward (cheap at MovieLens scale); e^(0) ~ N(0, init_std^2) (CoLLM: 0.1).
    """

    history_length = 0

    def __init__(self, num_users: int, num_items: int, edge_user_ids: torch.Tensor, edge_item_ids: torch.Tensor,
                 embedding_size: int = 64, num_layers: int = 2, init_std: float = 0.1) -> None:
        super().__init__()
        self.num_users = num_users
        self.num_layers = num_layers
        self.user_embedding = nn.Embedding(num_users, embedding_size)
        self.item_embedding = nn.Embedding(num_items, embedding_size)
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.item_embedding.weight, std=init_std)
        # The graph is data, not a parameter: rebuilt from the edges, never saved.
        self.register_buffer("adjacency", normalized_adjacency(edge_user_ids, edge_item_ids, num_users, num_items), persistent=False)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer-mean embeddings of all users `(num_users, d)` and items `(num_items, d)`."""
        embeddings = torch.cat([self.user_embedding.weight, self.item_embedding.weight])  # (N, d)
        layers = [embeddings]
        for _ in range(self.num_layers):
            embeddings = torch.sparse.mm(self.adjacency, embeddings)
            layers.append(embeddings)
        final = torch.stack(layers).mean(dim=0)  # (N, d)
        return final[: self.num_users], final[self.num_users :]

    def forward(self, user_ids: torch.Tensor, item_ids: torch.Tensor, history_item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """`(B,)` logits of `(B,)` user and item ids (the history is in the graph; the argument keeps one signature)."""
        users, items = self.propagate()
        return (users[user_ids] * items[item_ids]).sum(dim=-1)
