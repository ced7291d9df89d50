"""LightGCN (He et al., SIGIR 2020) scored pointwise, as CoLLM trains it for CTR-style AUC."""

from __future__ import annotations

import torch
from torch import nn


def normalized_adjacency(
    user_ids: torch.Tensor, item_ids: torch.Tensor, num_users: int, num_items: int
) -> torch.Tensor:
    """The symmetric normalised user-item adjacency D^-1/2 A D^-1/2 of LightGCN.

    Nodes are the users `0 .. num_users - 1` followed by the items (item i is node
    `num_users + i`); A has no self-loops. Repeated edges count once.

    Args:
        user_ids: `(E,)` users of the edges (CoLLM: the positive train interactions).
        item_ids: `(E,)` items of the edges.
        num_users: number of user nodes.
        num_items: number of item nodes.

    Returns:
        A coalesced sparse COO float32 tensor of shape `(num_users + num_items,) * 2`.
    """
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
    """LightGCN: K linear propagations of ID embeddings over the user-item graph.

    e^(k+1) = A_hat e^(k); the final embedding is the mean of e^(0) .. e^(K) (layer
    combination with alpha_k = 1 / (K + 1)); score(u, i) = <e_u, e_i>. Propagation runs over
    the whole graph on every forward, which is cheap at MovieLens scale.

    Args:
        num_users: user nodes.
        num_items: item nodes.
        edge_user_ids: `(E,)` users of the graph's edges.
        edge_item_ids: `(E,)` items of the graph's edges.
        embedding_size: d.
        num_layers: K, the number of propagation layers.
        init_std: standard deviation of the normal initialisation of e^(0) (CoLLM: 0.1).
    """

    history_length = 0

    def __init__(
        self,
        num_users: int,
        num_items: int,
        edge_user_ids: torch.Tensor,
        edge_item_ids: torch.Tensor,
        embedding_size: int = 64,
        num_layers: int = 2,
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_users = num_users
        self.num_layers = num_layers
        self.user_embedding = nn.Embedding(num_users, embedding_size)
        self.item_embedding = nn.Embedding(num_items, embedding_size)
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.item_embedding.weight, std=init_std)
        # The graph is data, not a parameter: rebuilt from the edges, never saved.
        self.register_buffer(
            "adjacency",
            normalized_adjacency(edge_user_ids, edge_item_ids, num_users, num_items),
            persistent=False,
        )

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer-mean embeddings of all users `(num_users, d)` and items `(num_items, d)`."""
        embeddings = torch.cat([self.user_embedding.weight, self.item_embedding.weight])  # (N, d)
        layers = [embeddings]
        for _ in range(self.num_layers):
            embeddings = torch.sparse.mm(self.adjacency, embeddings)
            layers.append(embeddings)
        final = torch.stack(layers).mean(dim=0)  # (N, d)
        return final[: self.num_users], final[self.num_users :]

    def forward(
        self, user_ids: torch.Tensor, item_ids: torch.Tensor, history_item_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores `(user, item)` pairs; the history is already in the graph.

        Args:
            user_ids: `(B,)` int64.
            item_ids: `(B,)` int64.
            history_item_ids: unused, accepted so that all baselines share one signature.

        Returns:
            `(B,)` logits.
        """
        users, items = self.propagate()
        return (users[user_ids] * items[item_ids]).sum(dim=-1)
