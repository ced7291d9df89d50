"""The non-LLM baselines of the paper, scored pointwise as CoLLM trains them for CTR-style AUC: matrix
factorisation (the collaborative model CoLLM and USER-LLM take embeddings from), LightGCN (He et al., SIGIR
2020) and SASRec (Kang & McAuley, ICDM 2018). Each maps `(user_ids, item_ids, history_item_ids)` to `(B,)`
logits; `history_length` is how many history items it reads (0: none).
"""

from __future__ import annotations

import torch
from torch import nn


class MatrixFactorization(nn.Module):
    """MF without biases: score(u, i) = <p_u, q_i>, tables of size d (256 in CoLLM and USER-LLM), from
    N(0, init_std^2). CoLLM keeps `nn.Embedding`'s N(0, 1), whose norms weight decay shrinks over hundreds of
    epochs; a small `init_std` learns in a few epochs, which suits small data sets."""

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


def normalized_adjacency(user_ids: torch.Tensor, item_ids: torch.Tensor, num_users: int, num_items: int) -> torch.Tensor:
    """LightGCN's D^-1/2 A D^-1/2, a coalesced sparse COO float32 `(num_users + num_items,) * 2` tensor: users
    first, item i is node `num_users + i`; no self-loops; repeated edges of the `(E,)` lists count once."""
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
    """LightGCN: e^(k+1) = A_hat e^(k) over the graph of the `(E,)` edges, the final embedding the mean of e^(0)
    .. e^(K) (K = `num_layers`), score(u, i) = <e_u, e_i>; e^(0) ~ N(0, init_std^2) (CoLLM: 0.1). The whole
    graph propagates on every forward (cheap at MovieLens scale)."""

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


class PointWiseFeedForward(nn.Module):
    """SASRec's position-wise two-layer ReLU network with a residual connection."""

    def __init__(self, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.Dropout(dropout), nn.ReLU(),
                                 nn.Linear(hidden_size, hidden_size), nn.Dropout(dropout))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.net(hidden)


class SASRecBlock(nn.Module):
    """One self-attention block: pre-normalised queries, causal attention, feed-forward."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_size, eps=1e-8)
        self.attention = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
        self.feed_forward_norm = nn.LayerNorm(hidden_size, eps=1e-8)
        self.feed_forward = PointWiseFeedForward(hidden_size, dropout)

    def forward(self, hidden: torch.Tensor, blocked: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """hidden `(B, L, d)`; blocked `(B * heads, L, L)`, True where forbidden; valid `(B, L, 1)`, 1.0 at items."""
        queries = self.attention_norm(hidden)
        attended, _ = self.attention(queries, hidden, hidden, attn_mask=blocked, need_weights=False)
        hidden = self.feed_forward(self.feed_forward_norm(queries + attended))
        return hidden * valid


class SASRec(nn.Module):
    """SASRec as a pointwise scorer: score(history, i) = <F_L, M_i>, F_L the last position's output of the
    self-attention stack over the L = `history_length` most recent history items (left-padded, oldest first),
    M_i the target's row of the input table (row 0: padding); an empty history gives the final layer norm's
    bias. CoLLM: d = 64, 2 blocks, 1 head, dropout 0.2, L = 25."""

    def __init__(self, num_items: int, hidden_size: int = 64, num_blocks: int = 2, num_heads: int = 1, dropout: float = 0.2,
                 history_length: int = 25) -> None:
        super().__init__()
        self.history_length = history_length
        self.num_heads = num_heads
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(history_length, hidden_size)
        # N(0, 1/d) keeps the first logits near unit scale (the final layer norm outputs unit
        # variance); `nn.Embedding`'s N(0, 1) starts them at std sqrt(d) and learns slowly.
        for embedding in (self.item_embedding, self.position_embedding):
            nn.init.normal_(embedding.weight, std=hidden_size**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(hidden_size, num_heads, dropout) for _ in range(num_blocks))
        self.final_norm = nn.LayerNorm(hidden_size, eps=1e-8)

    def _attention_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """Causal and key-padding mask `(B * heads, L, L)`, True = forbidden; every position sees itself, so padded
        rows are never fully masked (their outputs are zeroed afterwards)."""
        length = valid.shape[1]
        future = torch.ones(length, length, dtype=torch.bool, device=valid.device).triu(diagonal=1)
        blocked = future | ~valid[:, None, :]  # (B, L, L)
        blocked &= ~torch.eye(length, dtype=torch.bool, device=valid.device)
        return blocked.repeat_interleave(self.num_heads, dim=0)

    def encode_history(self, history_item_ids: torch.Tensor) -> torch.Tensor:
        """F_L `(B, d)` of `(B, L)` item ids left-padded with -1 (cut to the `history_length` most recent)."""
        history_item_ids = history_item_ids[:, -self.history_length :]
        tokens = history_item_ids + 1  # padding -1 -> row 0
        valid = tokens > 0  # (B, L)
        hidden = self.item_embedding(tokens) * self.item_embedding.embedding_dim**0.5  # (B, L, d)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        offset = self.history_length - tokens.shape[1]  # shorter inputs take the last positions
        hidden = self.embedding_dropout(hidden + self.position_embedding(positions + offset))
        valid_float = valid.unsqueeze(-1).float()  # (B, L, 1)
        hidden = hidden * valid_float
        blocked = self._attention_mask(valid)
        for block in self.blocks:
            hidden = block(hidden, blocked, valid_float)
        return self.final_norm(hidden[:, -1])

    def forward(self, user_ids: torch.Tensor, item_ids: torch.Tensor, history_item_ids: torch.Tensor) -> torch.Tensor:
        """`(B,)` logits of `(B,)` target items after `(B, L)` histories left-padded with -1 (no user embedding)."""
        return (self.encode_history(history_item_ids) * self.item_embedding(item_ids + 1)).sum(dim=-1)
