"""SASRec (Kang & McAuley, ICDM 2018) scoring a target item after the user's history."""

from __future__ import annotations

import torch
from torch import nn


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
        """Args: hidden `(B, L, d)`; blocked `(B * heads, L, L)` True where attention is
        forbidden; valid `(B, L, 1)` 1.0 at real history items."""
        queries = self.attention_norm(hidden)
        attended, _ = self.attention(queries, hidden, hidden, attn_mask=blocked, need_weights=False)
        hidden = self.feed_forward(self.feed_forward_norm(queries + attended))
        return hidden * valid


class SASRec(nn.Module):
    """SASRec as a pointwise scorer: score(history, i) = <F_L, M_i>.

    F_L is the last position's output of the self-attention stack over the L = `history_length`
    most recent history items (left-padded, oldest first), M_i the target's row of the input
    table (row 0: padding). An empty history gives the final layer norm's learned bias.
    CoLLM: d = 64, 2 blocks, 1 head, dropout 0.2, L = 25.
    """

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
        """Causal and key-padding mask `(B * heads, L, L)`, True = forbidden; every position sees
        itself, so padded rows are never fully masked (their outputs are zeroed afterwards)."""
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
