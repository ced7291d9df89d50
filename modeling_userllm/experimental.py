"""Experimental UHEM encoders beyond the paper (`history_encoder_type="transformer"` or `"hierarchical"`).

Measured against the paper's GRU in docs/BENCHMARKS.md and docs/RESULTS.md; neither is the default.
Importing this module (the package does) registers them in `HISTORY_ENCODER_BUILDERS`. A checkpoint using
one saves this file too, and its `config.auto_map` loads the model through it (`UserLLMForRecommendation`
below), so that the encoders are registered before the model is built.
"""

import torch
from torch import nn

from .modeling_userllm import HISTORY_ENCODER_BUILDERS, HistoryEncoder, UserLLMForRecommendation, check_without_sync


def sinusoidal_positions(length: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """`(length, width)` fixed sine/cosine position encodings (Vaswani et al.)."""
    positions = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-9.210340371976184 / width))
    encoding = torch.zeros(length, width, device=device, dtype=torch.float32)  # 9.2103... = ln(10000)
    encoding[:, 0::2] = torch.sin(positions * frequencies)
    encoding[:, 1::2] = torch.cos(positions * frequencies[: width // 2])
    return encoding.to(dtype)


class TransformerHistoryEncoder(HistoryEncoder):
    """A parallel UHEM: pre-norm transformer encoder layers over all history positions at once (with
    sine/cosine positions, so item order matters); the output at the last valid position is the token.

    Args:
        embedding_size: the LLM hidden size.
        hidden_size: the encoder width; linear layers map in and out when it differs.
        num_layers, num_heads: encoder layers and attention heads (`num_heads` divides `hidden_size`).
    """

    def __init__(self, embedding_size: int, hidden_size: int, num_layers: int = 1, num_heads: int = 8):
        super().__init__(embedding_size, hidden_size)
        self.input_projection = nn.Linear(embedding_size, hidden_size) if hidden_size != embedding_size else None
        # The LLM's input embeddings are far below unit scale: normalised first, positions neither drown nor vanish.
        self.input_norm = nn.LayerNorm(hidden_size)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden_size, num_heads, 2 * hidden_size, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(hidden_size)

    def _normed_inputs(self, sequence_embeds: torch.Tensor) -> torch.Tensor:
        hidden_states = sequence_embeds if self.input_projection is None else self.input_projection(sequence_embeds)
        return self.input_norm(hidden_states)

    def encode_valid(self, sequence_embeds, lengths, item_index=None):
        return self.encode_sequence(self._normed_inputs(sequence_embeds), lengths)

    def encode_sequence(self, hidden_states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`(U, T, hidden_size)` normalised inputs with `lengths >= 1` -> `(U, hidden_size)` at the last valid position."""
        seq_len, width = hidden_states.shape[1:]
        hidden_states = hidden_states + sinusoidal_positions(seq_len, width, hidden_states.device, hidden_states.dtype)
        padding = torch.arange(seq_len, device=lengths.device) >= lengths.unsqueeze(1)  # (U, T)
        for layer in self.layers:
            hidden_states = layer(hidden_states, src_key_padding_mask=padding)
        hidden_states = self.final_norm(hidden_states)
        return hidden_states[torch.arange(len(lengths), device=hidden_states.device), lengths - 1]


class HierarchicalHistoryEncoder(TransformerHistoryEncoder):
    """A UHEM over items: each item's tokens are pooled by learned attention weights, then the transformer
    encoder reads the items (n instead of ~33 n positions; token order inside an item is not seen).
    Needs `item_index`, the item of each history token (`UserLLMProcessor` gives it).

    Args: as `TransformerHistoryEncoder`.
    """

    def __init__(self, embedding_size: int, hidden_size: int, num_layers: int = 1, num_heads: int = 8):
        super().__init__(embedding_size, hidden_size, num_layers, num_heads)
        self.pooling_score = nn.Linear(hidden_size, 1, bias=False)  # a bias would cancel in the softmax
        self.item_norm = nn.LayerNorm(hidden_size)

    def encode_valid(self, sequence_embeds, lengths, item_index=None):
        if item_index is None:
            raise ValueError("history_encoder_type='hierarchical' needs `history_item_index` (the history item of each "
                             "history token), which UserLLMProcessor returns with `history_input_ids`")
        hidden_states = self._normed_inputs(sequence_embeds)  # (U, T, W)
        seq_len = hidden_states.shape[1]
        valid = torch.arange(seq_len, device=lengths.device) < lengths.unsqueeze(1)
        item_index = torch.where(valid, item_index.to(lengths.device), -1)
        check_without_sync(
            ((item_index >= 0) | ~valid).all(),
            lambda: "history_item_index is negative on a valid history position: expected 0, 1, ... "
                    "(the item of each token) wherever history_attention_mask is 1",
        )
        num_items = item_index.max(dim=1).values + 1  # (U,) >= 1
        # num_items.max() is a host sync; a static bound (seq_len) would run the encoder over ~33x more positions.
        members = item_index.unsqueeze(1) == torch.arange(int(num_items.max()), device=lengths.device).view(1, -1, 1)  # (U, N, T)
        scores = self.pooling_score(hidden_states).squeeze(-1).unsqueeze(1)  # (U, 1, T)
        # The dtype's minimum, not -inf: an item slot without tokens gets finite weights (zeroed next), not NaNs.
        scores = scores.masked_fill(~members, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * members
        items = self.item_norm(weights @ hidden_states)  # (U, N, W)
        return self.encode_sequence(items, num_items)


HISTORY_ENCODER_BUILDERS.update(
    transformer=lambda config, embedding_size, hidden_size: TransformerHistoryEncoder(
        embedding_size, hidden_size, config.history_encoder_layers, config.history_encoder_heads),
    hierarchical=lambda config, embedding_size, hidden_size: HierarchicalHistoryEncoder(
        embedding_size, hidden_size, config.history_encoder_layers, config.history_encoder_heads),
)

__all__ = ["HierarchicalHistoryEncoder", "TransformerHistoryEncoder", "UserLLMForRecommendation"]
