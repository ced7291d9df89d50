"""USER-LLM: an LLM that answers "would this user like this item?" from a multimodal prompt.

The prompt holds placeholder tokens that are replaced by embeddings before the LLM runs:
`<Image>` (projected image features), `<UserID>` / `<ItemID>` (projected collaborative
embeddings) and `<HistoryInteractions>` (one token from the User History Encoding Module).
The score is logit("Yes") - logit("No") at the last prompt position, computed in float32.

This file is copied next to the weights by `save_pretrained`, so it imports only torch,
transformers, peft, the standard library (`dataclasses`, `os`), and its sibling
`configuration_userllm`; the pipeline's files are copied when they are beside it (looked up by
name, never required).
"""

import os
from dataclasses import dataclass

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from transformers import MODEL_MAPPING, AutoModel, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast
from transformers.activations import ACT2FN
from transformers.modeling_utils import load_state_dict
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import ModelOutput, cached_file, is_torchdynamo_compiling, logging
from transformers.utils.hub import get_checkpoint_shard_files

from .configuration_userllm import VARIANTS, UserLLMConfig, is_local_path

logger = logging.get_logger(__name__)

# The paper's two training steps, in order.
PAPER_TRAINING_STEPS = ("lora", "encoders")
# Every step `set_training_step` takes besides "none" (inference): the paper's two, and "joint"
# (a deviation offered as an option: LoRA and the encoders trained together on the full prompt).
TRAINING_STEPS = (*PAPER_TRAINING_STEPS, "joint")
ENCODER_PREFIXES = ("visual_projector.", "collaborative_projector.", "history_encoder.")
# Modules that training changes. They are kept in float32 whatever the LLM's dtype (bfloat16
# weights would lose every AdamW update smaller than half a bfloat16 step); the frozen LLM and
# collaborative tables stay in the dtype they were loaded in.
TRAINED_MODULES = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "visual_projector",
                   "collaborative_projector", "history_encoder")


def is_trained_parameter(name: str) -> bool:
    """Whether a parameter (by state-dict name) is one that training changes, i.e. neither the
    frozen base LLM nor the frozen vision encoder."""
    if name.startswith("vision_tower."):
        return False
    return not name.startswith("language_model.") or "lora_" in name


@dataclass
class UserLLMOutput(ModelOutput):
    """Output of [`UserLLMForRecommendation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Binary cross-entropy with logits of `logits` against the labels, when labels are given.
        logits (`torch.FloatTensor` of shape `(batch_size,)`):
            logit("Yes") - logit("No") at the last prompt position; `sigmoid(logits)` is P(Yes | Yes or No).
        probabilities (`torch.FloatTensor` of shape `(batch_size,)`):
            `sigmoid(logits)`.
        cache (`Cache`, *optional*):
            The LLM's key/value cache, when `use_cache=True`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    probabilities: torch.FloatTensor | None = None
    cache: object | None = None


class TokenScaleNorm(nn.RMSNorm):
    """RMS normalisation of a spliced token to the LLM's token-embedding scale (`projector_norm="rms"`).

    A pre-norm LLM adds each input embedding to its residual stream as it is: a projected token
    many times the size of a word's embedding drowns the words in every layer's norm, a much
    smaller one is ignored. Each token is divided by its RMS and multiplied by a learned
    per-dimension gain, which `UserLLMForRecommendation` initialises on a fresh model to the
    mean RMS of the LLM's token embeddings (`match_token_embedding_scale`).

    Args:
        hidden_size: the LLM hidden size.
    """

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size, eps=1e-6)


class FeatureProjector(nn.Module):
    """Two-layer MLP from a precomputed feature space into the LLM hidden size.

    Args:
        input_size: size of the input features (384 for DINO ViT-S/16, 256 for MF embeddings).
        hidden_size: width of the hidden layer.
        output_size: the LLM hidden size.
        activation: name of the activation in `transformers.activations.ACT2FN`.
        output_norm: end with a `TokenScaleNorm` (`projector_norm="rms"`).
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, activation: str = "gelu",
                 output_norm: bool = False):
        super().__init__()
        self.linear_1 = nn.Linear(input_size, hidden_size)
        self.act = ACT2FN[activation]
        self.linear_2 = nn.Linear(hidden_size, output_size)
        self.output_norm = TokenScaleNorm(output_size) if output_norm else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Maps `(..., input_size)` features to `(..., output_size)` embeddings, in the projector's dtype."""
        embeddings = self.linear_2(self.act(self.linear_1(features.to(self.linear_1.weight.dtype))))
        return embeddings if self.output_norm is None else self.output_norm(embeddings)


def check_without_sync(condition: torch.Tensor, message) -> None:
    """Fails when the boolean tensor `condition` is False, without making the host wait for the device.

    On the CPU in eager mode reading the condition costs nothing: a `ValueError(message())`.
    On an accelerator, or while `torch.compile` traces, it is `torch._assert_async`: no host
    sync and no graph break (CUDA graphs and a compiled forward stay whole); a failure stops
    the run (on CUDA a device-side assertion) with a generic message, as building `message()`
    would read device values: the same batch on the CPU names them.
    """
    if condition.device.type == "cpu" and not is_torchdynamo_compiling():
        if not bool(condition):
            raise ValueError(message())
        return
    torch._assert_async(condition, "USER-LLM input check failed (rerun the batch on the CPU for the details)")


class HistoryEncoder(nn.Module):
    """Base of the User History Encoding Module (UHEM): a whole history compressed into one token.

    The input sequence of a user is, for each history item in time order, the LLM's input
    embeddings of the item's text followed by its projected image embedding. A subclass reads
    the valid part of each sequence (`encode_valid`); its state at the last valid position
    becomes the `<HistoryInteractions>` embedding. A user without history gets a learned vector.

    Args:
        embedding_size: the LLM hidden size (size of the input and of the output token).
        hidden_size: the encoder's width; a linear layer maps it back when it differs.
    """

    def __init__(self, embedding_size: int, hidden_size: int):
        super().__init__()
        self.output_projection = nn.Linear(hidden_size, embedding_size) if hidden_size != embedding_size else None
        self.no_history_embedding = nn.Parameter(torch.zeros(embedding_size))
        # A `TokenScaleNorm` on the history token (`projector_norm="rms"`; set by `build_history_encoder`).
        self.output_norm: nn.Module | None = None

    def encode_valid(
        self, sequence_embeds: torch.Tensor, lengths: torch.Tensor, item_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`(num_users, seq_len, embedding_size)` right-padded sequences, each with `lengths >= 1`
        valid positions (and `(num_users, seq_len)` item indices, see `forward`) ->
        `(num_users, hidden_size)`: the encoder's summary of each sequence."""
        raise NotImplementedError

    def forward(
        self, sequence_embeds: torch.Tensor, attention_mask: torch.Tensor, item_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encodes padded history sequences.

        Args:
            sequence_embeds: `(batch_size, seq_len, embedding_size)`, valid positions first
                (right padding).
            attention_mask: `(batch_size, seq_len)`, 1 on valid positions.
            item_index: `(batch_size, seq_len)`, the history item of each position (0, 1, ...
                in time order, consecutive; -1 on padding), as `UserLLMProcessor` gives it; read
                by the encoders that pool items (`"hierarchical"`), ignored by the others.

        Returns:
            `(batch_size, embedding_size)`: one history token per user, in the encoder's dtype
            (float32 even under a bfloat16 LLM: it is trained).
        """
        sequence_embeds = sequence_embeds.to(self.no_history_embedding.dtype)
        lengths = attention_mask.sum(dim=1)
        has_history = lengths > 0
        # No history at all in the batch (zero-width input): every row takes the no-history vector.
        if sequence_embeds.shape[1] == 0:
            last_state = sequence_embeds.new_zeros(len(lengths), self.no_history_embedding.shape[0])
        else:
            # Every row is encoded, one without history as if its first (padding) position were
            # valid, and the no-history vector is chosen afterwards: no data-dependent shapes or
            # branches, so no host sync and no graph break under torch.compile.
            if item_index is not None:
                item_index = torch.where(has_history.unsqueeze(1), item_index.to(lengths.device), 0)
            last_state = self.encode_valid(sequence_embeds, lengths.clamp(min=1), item_index)
            if self.output_projection is not None:
                last_state = self.output_projection(last_state)
        # torch.where keeps the no-history vector in the graph even when no row uses it, as DDP requires.
        no_history = self.no_history_embedding.expand(len(lengths), -1)
        history_tokens = torch.where(has_history.unsqueeze(1), last_state.to(no_history.dtype), no_history)
        return history_tokens if self.output_norm is None else self.output_norm(history_tokens)


class UserHistoryEncoder(HistoryEncoder):
    """The paper's UHEM (`history_encoder_type="gru"`): a GRU reads the history sequence one
    position at a time; its state at the last valid position is the history token.

    Args:
        embedding_size: the LLM hidden size (size of the GRU input and of the output token).
        hidden_size: the GRU hidden size; a linear layer maps it back when it differs.
    """

    # Run the GRU on packed sequences (the former path; same result, slower on a CPU).
    packed_sequences = False

    def __init__(self, embedding_size: int, hidden_size: int):
        super().__init__(embedding_size, hidden_size)
        self.gru = nn.GRU(embedding_size, hidden_size, batch_first=True)

    def encode_valid(
        self, sequence_embeds: torch.Tensor, lengths: torch.Tensor, item_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.packed_sequences:
            packed = pack_padded_sequence(sequence_embeds, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, last_state = self.gru(packed)  # (1, num_users, hidden_size)
            return last_state[-1]
        # Unpacked: the GRU's state at a row's last valid step does not see the right padding
        # after it, so this equals the packed run; on a CPU it is faster, as the input
        # projection of all steps is then one matmul (docs/BENCHMARKS.md).
        outputs, _ = self.gru(sequence_embeds)
        return outputs[torch.arange(len(lengths), device=outputs.device), lengths - 1]


def sinusoidal_positions(length: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """`(length, width)` fixed sine/cosine position encodings (Vaswani et al.): no length limit,
    nothing to learn."""
    positions = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-9.210340371976184 / width))
    encoding = torch.zeros(length, width, device=device, dtype=torch.float32)  # 9.2103... = ln(10000)
    encoding[:, 0::2] = torch.sin(positions * frequencies)
    encoding[:, 1::2] = torch.cos(positions * frequencies[: width // 2])
    return encoding.to(dtype)


class HistoryTransformerLayer(nn.Module):
    """A pre-norm transformer encoder layer: bidirectional self-attention over the valid
    positions, then a two-layer MLP (twice the width), each with a residual connection.

    Args:
        width: model width.
        num_heads: attention heads (`width` must be a multiple).
    """

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.attention_norm = nn.LayerNorm(width)
        self.qkv_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = FeatureProjector(width, 2 * width, width)

    def forward(self, hidden_states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """`(batch_size, seq_len, width)` states and a `(batch_size, seq_len)` boolean mask of
        valid positions (at least one per row) -> `(batch_size, seq_len, width)`."""
        batch_size, seq_len, width = hidden_states.shape
        qkv = self.qkv_proj(self.attention_norm(hidden_states)).view(batch_size, seq_len, 3, self.num_heads, -1)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, head_dim)
        attended = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=valid[:, None, None, :])
        hidden_states = hidden_states + self.out_proj(attended.transpose(1, 2).reshape(batch_size, seq_len, width))
        return hidden_states + self.mlp(self.mlp_norm(hidden_states))


class TransformerHistoryEncoder(HistoryEncoder):
    """A parallel UHEM (`history_encoder_type="transformer"`, the paper's future work): a small
    transformer encoder reads all positions of the history sequence at once, with sine/cosine
    position encodings so that the order of the items still matters; its output at the last
    valid position is the history token.

    Args:
        embedding_size: the LLM hidden size (size of the input and of the output token).
        hidden_size: the encoder width; linear layers map in and out when it differs.
        num_layers: encoder layers.
        num_heads: attention heads per layer.
    """

    def __init__(self, embedding_size: int, hidden_size: int, num_layers: int = 1, num_heads: int = 8):
        super().__init__(embedding_size, hidden_size)
        self.input_projection = nn.Linear(embedding_size, hidden_size) if hidden_size != embedding_size else None
        # The LLM's input embeddings are far smaller than unit scale; normalised first, the
        # position encodings neither drown them nor vanish next to them.
        self.input_norm = nn.LayerNorm(hidden_size)
        self.layers = nn.ModuleList(HistoryTransformerLayer(hidden_size, num_heads) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(hidden_size)

    def encode_valid(
        self, sequence_embeds: torch.Tensor, lengths: torch.Tensor, item_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden_states = sequence_embeds if self.input_projection is None else self.input_projection(sequence_embeds)
        return self.encode_sequence(self.input_norm(hidden_states), lengths)

    def encode_sequence(self, hidden_states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`(num_users, seq_len, hidden_size)` normalised inputs with `lengths >= 1` valid positions
        -> `(num_users, hidden_size)`: positions added, the layers, the output at the last valid position."""
        seq_len, width = hidden_states.shape[1:]
        hidden_states = hidden_states + sinusoidal_positions(seq_len, width, hidden_states.device, hidden_states.dtype)
        valid = torch.arange(seq_len, device=lengths.device) < lengths.unsqueeze(1)  # (num_users, seq_len)
        for layer in self.layers:
            hidden_states = layer(hidden_states, valid)
        hidden_states = self.final_norm(hidden_states)
        return hidden_states[torch.arange(len(lengths), device=hidden_states.device), lengths - 1]


class HierarchicalHistoryEncoder(TransformerHistoryEncoder):
    """A UHEM over items (`history_encoder_type="hierarchical"`): each history item's tokens (its
    text and its projected image) are pooled into one vector by learned attention weights, then
    the transformer encoder of `TransformerHistoryEncoder` reads the sequence of items (position
    encodings over items, so their order matters); its output at the last item is the history
    token. The encoder's sequence is n items instead of ~33 n tokens; the order of the tokens
    inside one item is not seen (a weighted bag of its tokens).

    Needs the item of each history token (`item_index`, from `UserLLMProcessor`).

    Args: as `TransformerHistoryEncoder`.
    """

    def __init__(self, embedding_size: int, hidden_size: int, num_layers: int = 1, num_heads: int = 8):
        super().__init__(embedding_size, hidden_size, num_layers, num_heads)
        self.pooling_score = nn.Linear(hidden_size, 1)
        self.item_norm = nn.LayerNorm(hidden_size)

    def encode_valid(
        self, sequence_embeds: torch.Tensor, lengths: torch.Tensor, item_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        if item_index is None:
            raise ValueError("history_encoder_type='hierarchical' needs `history_item_index` (the history item of each "
                             "history token), which UserLLMProcessor returns with `history_input_ids`")
        hidden_states = sequence_embeds if self.input_projection is None else self.input_projection(sequence_embeds)
        hidden_states = self.input_norm(hidden_states)  # (U, T, W)
        seq_len = hidden_states.shape[1]
        valid = torch.arange(seq_len, device=lengths.device) < lengths.unsqueeze(1)
        item_index = torch.where(valid, item_index.to(lengths.device), -1)
        num_items = item_index.max(dim=1).values + 1  # (U,): >= 1, as each row has a valid position
        check_without_sync(
            ((item_index >= 0) | ~valid).all(),
            lambda: "history_item_index is negative on a valid history position: expected 0, 1, ... "
                    "(the item of each token) wherever history_attention_mask is 1",
        )
        members = item_index.unsqueeze(1) == torch.arange(int(num_items.max()), device=lengths.device).view(1, -1, 1)  # (U, N, T)
        scores = self.pooling_score(hidden_states).squeeze(-1).unsqueeze(1)  # (U, 1, T)
        # The dtype's minimum, not -inf: an item slot without tokens (padding) gets finite
        # uniform weights, zeroed next, instead of NaNs that would reach the gradients.
        scores = scores.masked_fill(~members, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * members
        items = self.item_norm(weights @ hidden_states)  # (U, N, W)
        return self.encode_sequence(items, num_items)


def build_history_encoder(config: UserLLMConfig, embedding_size: int) -> HistoryEncoder:
    """The UHEM that `config.history_encoder_type` names, at `config.history_hidden_size` (default: the LLM's)."""
    hidden_size = config.history_hidden_size or embedding_size
    if config.history_encoder_type == "transformer":
        encoder = TransformerHistoryEncoder(embedding_size, hidden_size, config.history_encoder_layers, config.history_encoder_heads)
    elif config.history_encoder_type == "hierarchical":
        encoder = HierarchicalHistoryEncoder(embedding_size, hidden_size, config.history_encoder_layers, config.history_encoder_heads)
    else:
        encoder = UserHistoryEncoder(embedding_size, hidden_size)
    if config.projector_norm == "rms":
        encoder.output_norm = TokenScaleNorm(embedding_size)
    return encoder


class UserLLMPreTrainedModel(PreTrainedModel):
    config_class = UserLLMConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["LlamaDecoderLayer"]
    # Loading in bfloat16/float16 keeps these in float32 (see TRAINED_MODULES).
    _keep_in_fp32_modules_strict = list(TRAINED_MODULES)
    # The Trainer must not look for loss kwargs in **kwargs: forward computes a mean loss itself.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if "weight" in name:
                    nn.init.xavier_uniform_(param)
                else:
                    nn.init.zeros_(param)
        elif isinstance(module, HistoryEncoder):
            nn.init.normal_(module.no_history_embedding, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, TokenScaleNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.zeros_(module.weight)


class UserLLMForRecommendation(UserLLMPreTrainedModel):
    """USER-LLM: a LoRA-tuned causal LM scoring (user, item) pairs from a multimodal prompt.

    Modules, each present only when the config switches it on:
    - `language_model`: the causal LM with LoRA adapters on `config.lora_target_modules`;
    - `visual_projector`: image features `(N, vision_feature_size)` -> `(N, hidden_size)`;
    - `collaborative_projector`: MF embeddings `(N, collaborative_size)` -> `(N, hidden_size)`,
      fed from the frozen `user_embeddings` / `item_embeddings` tables, whose last row serves
      ids the tables do not know (cold start);
    - `history_encoder`: the UHEM;
    - `vision_tower`: the frozen vision encoder (`config.vision_config`, optional) that turns
      posters (`pixel_values`) into the features `visual_projector` takes, the CLS token of
      its last hidden state. Precomputed `image_features` skip it (the fast path).
    """

    def __init__(self, config: UserLLMConfig, language_model: PreTrainedModel | None = None):
        super().__init__(config)
        text_config = config.text_config
        hidden_size = text_config.hidden_size
        for name in ("final_logit_softcapping", "logit_scale"):
            if getattr(text_config, name, None) is not None:
                raise ValueError(f"The LLM's config sets {name}; scores assume a plain linear LM head (Llama family)")
        if language_model is None:
            language_model = AutoModelForCausalLM.from_config(text_config)
        else:
            # A pretrained LLM (see `from_base_model`): post_init must not draw its weights again.
            for module in language_model.modules():
                module._is_hf_initialized = True
        self.language_model = language_model
        lora_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules),
            bias="none",
        )
        inject_adapter_in_model(lora_config, self.language_model)
        # peft initialises LoRA itself (lora_B = 0, so training starts from the base LLM);
        # keep post_init from drawing them again with the LLM's normal init.
        for module in self.language_model.modules():
            if isinstance(module, LoraLayer):
                for submodule in module.modules():
                    submodule._is_hf_initialized = True

        projector_hidden = config.projector_hidden_size or hidden_size
        output_norm = config.projector_norm == "rms"
        if config.use_visual:
            self.visual_projector = FeatureProjector(
                config.vision_feature_size, projector_hidden, hidden_size, config.projector_hidden_act, output_norm
            )
        if config.use_collaborative:
            # One extra row per table: the embedding of unknown (cold-start) users or items.
            self.user_embeddings = nn.Embedding(config.num_users + 1, config.collaborative_size)
            self.item_embeddings = nn.Embedding(config.num_items + 1, config.collaborative_size)
            self.user_embeddings.weight.requires_grad_(False)
            self.item_embeddings.weight.requires_grad_(False)
            self.collaborative_projector = FeatureProjector(
                config.collaborative_size, projector_hidden, hidden_size, config.projector_hidden_act, output_norm
            )
        if config.use_history_encoder:
            self.history_encoder = build_history_encoder(config, hidden_size)
        if config.use_visual and config.vision_config is not None:
            self.vision_tower = _without_pooler(AutoModel.from_config(config.vision_config))
            self.vision_tower.requires_grad_(False)
        self.post_init()
        self.match_token_embedding_scale()

    @torch.no_grad()
    def match_token_embedding_scale(self) -> None:
        """Sets the gain of every `TokenScaleNorm` to the mean RMS of the LLM's token embeddings.

        Done when a model is built with its LLM's weights in place (a random LLM after
        `post_init`, or `from_base_model`); a model built on the meta device to be loaded
        keeps the checkpoint's trained gains.
        """
        norms = [module for module in self.modules() if isinstance(module, TokenScaleNorm)]
        embeddings = self.get_input_embeddings().weight
        if not norms or embeddings.device.type == "meta":
            return
        target = embeddings.float().pow(2).mean(dim=-1).sqrt().mean()
        for norm in norms:
            norm.weight.fill_(target.to(norm.weight.device))

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    # ----------------------------------------------------------------------------- training

    def set_training_step(self, step: str) -> None:
        """Freezes everything but what the given step of the paper's schedule trains.

        Args:
            step: `"lora"` (step 1: LoRA adapters only), `"encoders"` (step 2: UHEM and the
                visual and collaborative projectors; LoRA frozen), `"joint"` (not the paper's:
                LoRA and the encoders together) or `"none"` (inference).
        """
        if step not in (*TRAINING_STEPS, "none"):
            raise ValueError(f"Unknown training step {step!r}; expected one of {(*TRAINING_STEPS, 'none')}")
        if step != "none":
            self.upcast_trained_modules()
        for name, param in self.named_parameters():
            if step == "lora":
                param.requires_grad_("lora_" in name)
            elif step == "encoders":
                param.requires_grad_(name.startswith(ENCODER_PREFIXES))
            elif step == "joint":
                param.requires_grad_("lora_" in name or name.startswith(ENCODER_PREFIXES))
            else:
                param.requires_grad_(False)

    def upcast_trained_modules(self) -> None:
        """Puts the modules that training changes (`TRAINED_MODULES`) in float32, the frozen rest untouched.

        Called after every load and at the start of each training step: an optimizer then
        updates float32 weights (mixed-precision compute comes from autocast, e.g. the
        Trainer's `bf16=True`), whatever dtype the base LLM was loaded in.
        """
        for name, module in self.named_modules():
            if name.rpartition(".")[2] in TRAINED_MODULES:
                module.float()

    def load_collaborative_embeddings(self, user_embeddings: torch.Tensor, item_embeddings: torch.Tensor) -> None:
        """Copies pretrained MF tables into the model; the "unknown" rows become zeros.

        Args:
            user_embeddings: `(num_users, collaborative_size)`.
            item_embeddings: `(num_items, collaborative_size)`.
        """
        if not self.config.use_collaborative:
            raise ValueError("This model was built with use_collaborative=False: it has no collaborative tables")
        for name, table, values in (
            ("user_embeddings", self.user_embeddings, user_embeddings),
            ("item_embeddings", self.item_embeddings, item_embeddings),
        ):
            expected = (table.num_embeddings - 1, table.embedding_dim)
            if tuple(values.shape) != expected:
                raise ValueError(f"{name} has shape {tuple(values.shape)}, expected {expected} (config num_users/num_items, collaborative_size)")
            with torch.no_grad():
                table.weight[:-1].copy_(values)
                table.weight[-1].zero_()

    # ----------------------------------------------------------------------------- posters

    def attach_vision_encoder(self, vision_model: PreTrainedModel, name_or_path: str | None = None) -> None:
        """Makes the model score raw posters: `vision_model` becomes its frozen `vision_tower`.

        It must be the encoder the training features came from (same weights, and the
        processor's image processor must be its preprocessing), else posters would not score
        as their precomputed features do.

        Args:
            vision_model: a vision `AutoModel` whose `last_hidden_state[:, 0]` is the feature
                (ViT / DINO ViT-S/16, DINOv2), hidden size `config.vision_feature_size`.
            name_or_path: its Hub id or folder, recorded in `config.vision_model_name_or_path`
                (model card; light checkpoints fetch the encoder from there).
        """
        if not self.config.use_visual:
            raise ValueError("This model was built with use_visual=False: it takes no images")
        hidden_size = vision_model.config.hidden_size
        if hidden_size != self.config.vision_feature_size:
            raise ValueError(f"The vision encoder's hidden size is {hidden_size}, the model's vision_feature_size is "
                             f"{self.config.vision_feature_size}")
        self.config.vision_config = vision_model.config
        self.config.vision_model_name_or_path = None if name_or_path is None else str(name_or_path)
        self.vision_tower = _without_pooler(vision_model).to(self.get_input_embeddings().weight.device)
        self.vision_tower.requires_grad_(False)
        self.vision_tower.eval()

    @torch.no_grad()
    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """Poster features from the frozen vision encoder, as `features/visual.py` computes them offline.

        Args:
            pixel_values: `(num_images, 3, height, width)` from the processor's image processor.

        Returns:
            `(num_images, vision_feature_size)` float32: the CLS token of the last hidden state.
        """
        if getattr(self, "vision_tower", None) is None:
            raise ValueError(
                "Posters were given as images, but this checkpoint holds no vision encoder (config.vision_config is "
                "None: it was saved without one). Pass precomputed image_features instead, computed by the encoder "
                f"the model was trained with ({self.config.vision_model_name_or_path or 'see the model card'})."
            )
        weight = next(self.vision_tower.parameters())
        hidden = self.vision_tower(pixel_values=pixel_values.to(device=weight.device, dtype=weight.dtype)).last_hidden_state
        return hidden[:, 0].float()  # (num_images, vision_feature_size)

    def _with_poster_features(
        self, image_features: torch.Tensor | None, pixel_values: torch.Tensor | None, image_indices: torch.Tensor | None
    ) -> torch.Tensor | None:
        """`image_features` `(N, D)` with the rows `image_indices` `(M,)` replaced by the features of
        `pixel_values` `(M, 3, H, W)`; unchanged when no poster was given as an image."""
        if pixel_values is None:
            return image_features
        posters = self.get_image_features(pixel_values)  # (M, D)
        if image_indices is None:
            if image_features is not None:
                raise ValueError("pixel_values were given with image_features but without image_indices (the rows they fill)")
            return posters
        if image_features is None:
            image_features = posters.new_zeros(int(image_indices.max()) + 1, posters.shape[1])
        return image_features.to(device=posters.device, dtype=torch.float32).index_copy(0, image_indices.to(posters.device), posters)

    # ----------------------------------------------------------------------------- embeddings

    def _embed_tokens(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Token embeddings with every placeholder id mapped to a valid id first.

        Placeholders may lie above the LLM vocabulary (they were added to the tokenizer only);
        their rows are overwritten afterwards, so which valid id stands in does not matter.
        """
        is_placeholder = torch.zeros_like(input_ids, dtype=torch.bool)
        for token_id in self.config.placeholder_token_ids:  # comparisons with constants: no host-to-device copy
            is_placeholder |= input_ids == token_id
        return self.get_input_embeddings()(input_ids.masked_fill(is_placeholder, 0))

    @staticmethod
    def _check_placeholder_counts(input_ids: torch.LongTensor, counts: list[tuple[int, int | None, str]]) -> None:
        """Checks that each placeholder of `counts` occurs as often as its features can fill it.

        `counts` holds `(token_id, num_features, name)`: `num_features` feature rows in the order of
        the placeholders (`<Image>`), or `None` for a placeholder that takes one embedding per
        prompt row (`<UserID>`, `<ItemID>`, `<HistoryInteractions>`): each row then holds it at
        most once, and not at all when its features are not given (`num_features=0`).

        One combined check by `check_without_sync`: on an accelerator or under `torch.compile`
        an asynchronous assertion (no host sync, no graph break).

        Raises:
            ValueError: "The prompt holds N <X> placeholder tokens but M <X> features were given ...".
        """
        masks = [(input_ids == token_id, num_features, name) for token_id, num_features, name in counts if token_id is not None]
        if not masks:
            return
        matches = []
        for mask, num_features, name in masks:
            if num_features is None:
                matches.append((mask.sum(dim=1) <= 1).all())
            else:
                matches.append(mask.sum() == num_features)

        def message() -> str:
            for mask, num_features, name in masks:
                num_tokens = int(mask.sum())
                if num_features is None:
                    if bool((mask.sum(dim=1) <= 1).all()):
                        continue
                    rows = int((mask.sum(dim=1) > 0).sum())
                    return (f"The prompt holds {num_tokens} {name} placeholder tokens but {rows} {name} features were "
                            "given (one per prompt row holding it); they must match (one feature vector per placeholder).")
                if num_tokens != num_features:
                    return (f"The prompt holds {num_tokens} {name} placeholder tokens but {num_features} {name} features "
                            "were given; they must match (one feature vector per placeholder).")
            return "placeholder counts do not match their features"

        check_without_sync(torch.stack(matches).all(), message)

    @staticmethod
    def _scatter_placeholder(
        inputs_embeds: torch.Tensor, input_ids: torch.LongTensor, token_id: int | None, features: torch.Tensor | None
    ) -> torch.Tensor:
        """Writes `features` `(N, hidden)` at the N positions of `token_id`, in order (counts checked
        by `_check_placeholder_counts`)."""
        if token_id is None or features is None:
            return inputs_embeds
        mask = (input_ids == token_id).unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, features.to(inputs_embeds.dtype))

    @staticmethod
    def _place_row_embeddings(
        inputs_embeds: torch.Tensor, input_ids: torch.LongTensor, token_id: int | None, row_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        """Writes row i's embedding `row_embeds[i]` `(batch_size, hidden)` at the `token_id` position of
        prompt row i (rows without the token are left as they are).

        Every row's embedding is computed and selected by `torch.where`: no data-dependent
        shapes (boolean row selection would need a host sync and break a compiled graph).
        """
        if token_id is None or row_embeds is None:
            return inputs_embeds
        mask = (input_ids == token_id).unsqueeze(-1)  # (B, T, 1)
        return torch.where(mask, row_embeds.unsqueeze(1).to(inputs_embeds.dtype), inputs_embeds)

    def _lookup_collaborative(self, table: nn.Embedding, ids: torch.LongTensor) -> torch.Tensor:
        unknown_row = table.num_embeddings - 1
        known = (ids >= 0) & (ids < unknown_row)
        return table(torch.where(known, ids, torch.full_like(ids, unknown_row)))

    def encode_history(
        self,
        history_input_ids: torch.LongTensor,
        history_attention_mask: torch.LongTensor,
        history_image_features: torch.FloatTensor | None = None,
        history_item_index: torch.LongTensor | None = None,
        history_item_token_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Runs the UHEM.

        Args:
            history_input_ids: `(batch_size, history_len)` item text tokens with an `<Image>`
                placeholder after each item that has an image, right-padded.
            history_attention_mask: `(batch_size, history_len)`, 1 on valid positions.
            history_image_features: `(num_history_images, vision_feature_size)`, one per `<Image>`.
            history_item_index: `(batch_size, history_len)`, the history item of each token (-1 on
                padding); needed by the `"hierarchical"` encoder only.
            history_item_token_ids: `(num_history_items,)`, the item of each `<ItemID>` in
                `history_input_ids` (`item_ids_after_titles`).

        Returns:
            `(batch_size, hidden_size)`: the `<HistoryInteractions>` embeddings.
        """
        embeds = self._embed_tokens(history_input_ids)  # (B, T, D)
        if self.config.use_visual:
            num_images = 0 if history_image_features is None else history_image_features.shape[0]
            self._check_placeholder_counts(history_input_ids, [(self.config.image_token_id, num_images, "history <Image>")])
            image_embeds = None if history_image_features is None else self.visual_projector(history_image_features)
            embeds = self._scatter_placeholder(embeds, history_input_ids, self.config.image_token_id, image_embeds)
        if self.config.item_ids_after_titles:
            num_ids = 0 if history_item_token_ids is None else history_item_token_ids.shape[0]
            self._check_placeholder_counts(history_input_ids, [(self.config.item_token_id, num_ids, "history <ItemID>")])
            if history_item_token_ids is not None:
                id_embeds = self.collaborative_projector(self._lookup_collaborative(self.item_embeddings, history_item_token_ids))
                embeds = self._scatter_placeholder(embeds, history_input_ids, self.config.item_token_id, id_embeds)
        return self.history_encoder(embeds, history_attention_mask, history_item_index)

    def get_prompt_embeddings(
        self,
        input_ids: torch.LongTensor,
        image_features: torch.FloatTensor | None = None,
        user_ids: torch.LongTensor | None = None,
        item_ids: torch.LongTensor | None = None,
        history_input_ids: torch.LongTensor | None = None,
        history_attention_mask: torch.LongTensor | None = None,
        history_image_features: torch.FloatTensor | None = None,
        history_item_index: torch.LongTensor | None = None,
        prompt_item_ids: torch.LongTensor | None = None,
        history_item_token_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Embeds a prompt and splices the projected features into its placeholders.

        Args:
            input_ids: `(batch_size, seq_len)` prompt tokens with placeholders.
            image_features: `(num_images, vision_feature_size)`, one per `<Image>` in `input_ids`.
            user_ids: `(batch_size,)`, used at `<UserID>` placeholders.
            item_ids: `(batch_size,)`, used at `<ItemID>` placeholders.
            history_input_ids, history_attention_mask, history_image_features, history_item_index,
                history_item_token_ids: see `encode_history`.
            prompt_item_ids: `(num_item_tokens,)`, the item of each `<ItemID>` in `input_ids` (row by
                row, in order) when prompts hold several (`item_ids_after_titles`); replaces `item_ids`.

        Returns:
            `(batch_size, seq_len, hidden_size)` input embeddings for the LLM.
        """
        config = self.config
        # Features of each placeholder: a number of rows in placeholder order, or None (one per prompt row).
        counts = []
        if config.use_visual:
            counts.append((config.image_token_id, 0 if image_features is None else image_features.shape[0], "<Image>"))
        if config.use_collaborative:
            counts.append((config.user_token_id, None if user_ids is not None else 0, "<UserID>"))
            if prompt_item_ids is not None:
                counts.append((config.item_token_id, prompt_item_ids.shape[0], "<ItemID>"))
            else:
                counts.append((config.item_token_id, None if item_ids is not None else 0, "<ItemID>"))
        if config.use_history_encoder:
            counts.append((config.history_token_id, None if history_input_ids is not None else 0, "<HistoryInteractions>"))
        self._check_placeholder_counts(input_ids, counts)

        inputs_embeds = self._embed_tokens(input_ids)
        if config.use_visual:
            image_embeds = None if image_features is None else self.visual_projector(image_features)
            inputs_embeds = self._scatter_placeholder(inputs_embeds, input_ids, config.image_token_id, image_embeds)
        if config.use_collaborative:
            if prompt_item_ids is not None:
                id_embeds = self.collaborative_projector(self._lookup_collaborative(self.item_embeddings, prompt_item_ids))
                inputs_embeds = self._scatter_placeholder(inputs_embeds, input_ids, config.item_token_id, id_embeds)
            for token_id, table, ids in (
                (config.user_token_id, self.user_embeddings, user_ids),
                (config.item_token_id, self.item_embeddings, None if prompt_item_ids is not None else item_ids),
            ):
                if ids is not None:
                    row_embeds = self.collaborative_projector(self._lookup_collaborative(table, ids))  # (B, hidden)
                    inputs_embeds = self._place_row_embeddings(inputs_embeds, input_ids, token_id, row_embeds)
        if config.use_history_encoder and history_input_ids is not None:
            history_embeds = self.encode_history(
                history_input_ids, history_attention_mask, history_image_features, history_item_index, history_item_token_ids
            )  # (B, hidden)
            inputs_embeds = self._place_row_embeddings(inputs_embeds, input_ids, config.history_token_id, history_embeds)
        return inputs_embeds

    # ----------------------------------------------------------------------------- scoring

    def _yes_minus_no_logit(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """logit("Yes") - logit("No") from the LLM's final hidden states, in float32.

        Only the two rows of the LM head are used, and in float32: in bfloat16 the full logits
        are rounded to steps of 1/16-1/8 at their usual size, so their difference would tie
        many scores (and lose AUC) and differ between batchings by a whole step.

        Args:
            last_hidden: `(batch_size, hidden_size)`, the final (normed) hidden state at the
                last prompt position.

        Returns:
            `(batch_size,)` float32 scores.
        """
        head = self.get_output_embeddings()
        answer_ids = [self.config.yes_token_id, self.config.no_token_id]
        lora_head = isinstance(head, LoraLayer)
        if lora_head and any(name in head.lora_variant for name in head.active_adapters):
            # A LoRA variant (DoRA, ...) on the head: peft's own forward, on the last position only.
            answer_logits = head(last_hidden)[:, answer_ids].float()
            return answer_logits[:, 0] - answer_logits[:, 1]
        base = head.get_base_layer() if lora_head else head
        hidden = last_hidden.float()
        answer_logits = hidden @ base.weight[answer_ids].float().T  # (B, 2)
        if base.bias is not None:
            answer_logits = answer_logits + base.bias[answer_ids].float()
        if lora_head and not head.disable_adapters and not head.merged:
            # LoRA on the head: the answer rows of its update, as peft's Linear.forward adds it.
            for name in head.active_adapters:
                if name in head.lora_A:
                    lora_A, lora_B = head.lora_A[name], head.lora_B[name]
                    down = lora_A(head.lora_dropout[name](hidden.to(lora_A.weight.dtype)))  # (B, r)
                    update = down @ lora_B.weight[answer_ids].T
                    if lora_B.bias is not None:
                        update = update + lora_B.bias[answer_ids]
                    answer_logits = answer_logits + update.float() * head.scaling[name]
        return answer_logits[:, 0] - answer_logits[:, 1]

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        user_ids: torch.LongTensor | None = None,
        item_ids: torch.LongTensor | None = None,
        history_input_ids: torch.LongTensor | None = None,
        history_attention_mask: torch.LongTensor | None = None,
        history_image_features: torch.FloatTensor | None = None,
        history_item_index: torch.LongTensor | None = None,
        labels: torch.FloatTensor | None = None,
        cache=None,
        position_ids: torch.LongTensor | None = None,
        use_cache: bool = False,
        pixel_values: torch.FloatTensor | None = None,
        image_indices: torch.LongTensor | None = None,
        history_pixel_values: torch.FloatTensor | None = None,
        history_image_indices: torch.LongTensor | None = None,
        prompt_item_ids: torch.LongTensor | None = None,
        history_item_token_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> UserLLMOutput:
        """Scores (user, item) prompts.

        Args:
            input_ids: `(batch_size, seq_len)` left-padded prompts (see `UserLLMProcessor`).
            attention_mask: `(batch_size, seq_len)`; with `cache`, it covers the cached
                positions too: `(batch_size, past_len + seq_len)`.
            image_features, user_ids, item_ids, history_*, prompt_item_ids: features for the
                placeholders, see `get_prompt_embeddings`.
            labels: `(batch_size,)` 1 = the user liked the item, 0 = not.
            cache: key/value cache of a shared prompt prefix (see `modeling_userllm.ranking`).
            position_ids: `(batch_size, seq_len)`; by default counted over non-padding tokens, so
                a prompt scores the same however much left padding its batch needs.
            use_cache: return the LLM's key/value cache.
            pixel_values: `(num_posters, 3, height, width)` posters given as images, encoded by
                `vision_tower`; `image_indices` `(num_posters,)` are the rows of `image_features`
                they fill. `history_pixel_values` / `history_image_indices`: the same for the UHEM.

        Returns:
            [`UserLLMOutput`] with `logits` and `probabilities` of shape `(batch_size,)`.
        """
        image_features = self._with_poster_features(image_features, pixel_values, image_indices)
        history_image_features = self._with_poster_features(history_image_features, history_pixel_values, history_image_indices)
        inputs_embeds = self.get_prompt_embeddings(
            input_ids, image_features, user_ids, item_ids, history_input_ids, history_attention_mask, history_image_features,
            history_item_index, prompt_item_ids, history_item_token_ids,
        )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        max_positions = getattr(self.config.text_config, "max_position_embeddings", None)
        if max_positions and attention_mask.shape[1] > max_positions:
            raise ValueError(
                f"The prompts are {attention_mask.shape[1]} tokens long (cached prefix included), more than the LLM's "
                f"{max_positions} positions (text_config.max_position_embeddings): lower max_history_items or "
                "max_item_tokens, or use the UHEM (one token for the whole history)"
            )
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
        llm_output = self.language_model.get_decoder()(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
        )
        logits = self._yes_minus_no_logit(llm_output.last_hidden_state[:, -1])
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype).view(-1))
        return UserLLMOutput(
            loss=loss,
            logits=logits,
            probabilities=torch.sigmoid(logits),
            cache=llm_output.cache if use_cache else None,
        )

    @torch.no_grad()
    def predict_proba(self, **inputs) -> torch.Tensor:
        """P(Yes) for a batch from `UserLLMProcessor`, shape `(batch_size,)`; labels are ignored."""
        inputs.pop("labels", None)
        device = self.device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        return self(**inputs).probabilities

    # ----------------------------------------------------------------------------- checkpoints

    def trained_parameter_names(self) -> list[str]:
        """Names of the weights training changes: everything but the frozen base LLM."""
        return [name for name in self.state_dict() if is_trained_parameter(name)]

    def save_pretrained(self, save_directory, *args, light: bool = False, **kwargs):
        """Saves the model, with the code of its recommendation pipeline (`pipeline_userllm.py`);
        with `light=True`, without the frozen base LLM and vision encoder.

        A light checkpoint holds the LoRA adapters, the UHEM, the projectors and the
        collaborative tables; it loads by fetching `config.base_model_name_or_path`, and the
        vision encoder (if any) from `config.vision_model_name_or_path` (an encoder without
        that name, e.g. the toy one, is stored). It records a fingerprint of the base LLM's
        weights (`config.base_model_fingerprint`), which loading checks. A `state_dict` passed in
        (the gathered one under FSDP or DeepSpeed ZeRO-3) is used instead of this module's own.
        """
        if light:
            if not self.config.base_model_name_or_path:
                raise ValueError("A light checkpoint needs config.base_model_name_or_path (the base LLM to fetch on load)")
            state_dict = kwargs.get("state_dict")
            if state_dict is None:
                state_dict = self.state_dict()
            keep_vision = not self.config.vision_model_name_or_path
            kwargs["state_dict"] = {name: tensor for name, tensor in state_dict.items()
                                    if is_trained_parameter(name) or keep_vision and name.startswith("vision_tower.")}
            base_state = {name.removeprefix("language_model.").replace(".base_layer.", "."): tensor
                          for name, tensor in state_dict.items()
                          if name.startswith("language_model.") and not is_trained_parameter(name)}
            self.config.base_model_fingerprint = base_model_fingerprint(base_state)
            self.config.light_checkpoint = True
        try:
            result = super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.config.light_checkpoint = False
        if kwargs.get("is_main_process", True):
            pipeline_module = _sibling_module("pipeline_userllm")
            if pipeline_module is not None:  # the folder exists now
                custom_object_save(pipeline_module.RecommendationPipeline, save_directory)
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Loads a full or light checkpoint (a light one also loads its base LLM).

        A light checkpoint's base LLM is loaded by `AutoModelForCausalLM.from_pretrained` with
        this call's `dtype`, `device_map`, `attn_implementation` and `quantization_config`;
        without a `dtype` (or with `"auto"`) in the dtype it ran in when saved (`config.dtype`),
        as a full checkpoint is, not in the dtype the base repo stores (SmolLM2 and Vicuna store
        bfloat16: a model trained in float32 would otherwise come back in bfloat16).
        Weights the checkpoint should hold but does not, or holds but the model lacks, raise
        an error naming them (never a model with uninitialised weights). Only safetensors
        weights are read: a folder holding only pickle-format weights raises.

        The config is checked against what can contradict it: its `yes_token_id` / `no_token_id`
        against the tokenizer saved beside it (their tokens must begin "Yes" and "No"), its
        `variant` against its module switches, the switches against the weights present. A light
        checkpoint's base LLM must have the fingerprint recorded when it was saved
        (`config.base_model_fingerprint`), else a `ValueError` names both fingerprints.

        Extra keyword arguments (besides those of `PreTrainedModel.from_pretrained`):
            base_model_name_or_path (`str`): load a light checkpoint's base LLM from here (a
                folder or Hub id) instead of the one its config names, e.g. after the folder moved.
            ignore_base_mismatch (`bool`, defaults to `False`): load a light checkpoint on a base
                LLM whose fingerprint differs from the recorded one, with a warning (its scores
                will not be the trained model's).
        """
        kwargs.setdefault("use_safetensors", True)
        config = kwargs.pop("config", None)
        base_model_override = kwargs.pop("base_model_name_or_path", None)
        ignore_base_mismatch = kwargs.pop("ignore_base_mismatch", False)
        hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        if pretrained_model_name_or_path is not None and not isinstance(config, UserLLMConfig):
            config = UserLLMConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        if config is not None and base_model_override is not None:
            config.base_model_name_or_path = str(base_model_override)
        if config is not None and pretrained_model_name_or_path is not None:
            _check_variant_switches(config, pretrained_model_name_or_path)
            _check_answer_token_ids(config, pretrained_model_name_or_path, hub_kwargs)
        if config is None or not config.light_checkpoint or kwargs.get("state_dict") is not None:
            output_loading_info = kwargs.pop("output_loading_info", False)
            try:
                model, loading_info = super().from_pretrained(
                    pretrained_model_name_or_path, *model_args, config=config, output_loading_info=True, **kwargs
                )
            except Exception as error:
                # safetensors' error names no file (its class is matched by name: hub-copy import rules)
                if type(error).__name__ != "SafetensorError":
                    raise
                raise OSError(f"Could not read the weights of {pretrained_model_name_or_path} (a truncated or corrupt "
                              f"model.safetensors?): {error}") from error
            source = pretrained_model_name_or_path or "the given state_dict"
            _check_module_switches(model.config, model.state_dict().keys(), loading_info, source)
            _raise_on_key_mismatch(source, loading_info)
            model.upcast_trained_modules()
            return (model, loading_info) if output_loading_info else model
        light_state = _read_safetensors_checkpoint(pretrained_model_name_or_path, **hub_kwargs)
        # The base LLM lives in its own repo: this checkpoint's subfolder and revision (AutoModel
        # resolves `revision` to this repo's commit hash) do not apply to it.
        hub_kwargs.pop("subfolder", None)
        hub_kwargs.pop("revision", None)
        base_kwargs = {key: kwargs[key] for key in BASE_LOADING_KWARGS if key in kwargs}
        if base_kwargs.get("dtype") in (None, "auto") and config.dtype is not None:
            # save_pretrained records the first parameter's dtype, the LLM's embeddings.
            base_kwargs["dtype"] = config.dtype
        language_model = _load_light_checkpoint_base(config, pretrained_model_name_or_path, **base_kwargs, **hub_kwargs)
        _check_base_fingerprint(config, language_model, pretrained_model_name_or_path, ignore_base_mismatch)
        config.light_checkpoint = False
        model = cls(config, language_model=language_model)
        # A vision encoder without a name to fetch it by is stored, under its own (legacy) weight names.
        vision_state = {name.removeprefix("vision_tower."): tensor for name, tensor in light_state.items()
                        if name.startswith("vision_tower.")}
        light_state = {name: tensor for name, tensor in light_state.items() if not name.startswith("vision_tower.")}
        model.load_trained_weights(light_state, source=str(pretrained_model_name_or_path))
        if getattr(model, "vision_tower", None) is not None:
            if vision_state:
                encoder = load_vision_encoder(None, dtype=kwargs.get("dtype"), config=config.vision_config, state_dict=vision_state)
            else:
                encoder = load_vision_encoder(config.vision_model_name_or_path, dtype=kwargs.get("dtype"), **hub_kwargs)
            model.attach_vision_encoder(encoder, config.vision_model_name_or_path)
        model.eval()
        return model

    @classmethod
    def from_base_model(cls, base_model_name_or_path: str, config: UserLLMConfig, **kwargs) -> "UserLLMForRecommendation":
        """Builds a new USER-LLM around a pretrained causal LM.

        The LLM is loaded by `AutoModelForCausalLM.from_pretrained` (sharded checkpoints,
        `device_map`, quantized bases and FSDP's low-memory loading work as they do there);
        LoRA starts from peft's initialisation (B = 0); projectors, UHEM and collaborative
        tables are freshly initialised, in float32.

        Args:
            base_model_name_or_path: the pretrained LLM (Hub id or local folder).
            config: the USER-LLM config; its `text_config` must be the LLM's config.
            **kwargs: passed to `AutoModelForCausalLM.from_pretrained` (e.g. `dtype`, `device_map`).
        """
        config.base_model_name_or_path = str(base_model_name_or_path)
        language_model = load_base_llm(base_model_name_or_path, **kwargs)
        config.base_model_revision = getattr(language_model.config, "_commit_hash", None)
        model = cls(config, language_model=language_model)
        for module in model.language_model.modules():
            if isinstance(module, LoraLayer):
                module.reset_lora_parameters("default", True)
        model.upcast_trained_modules()
        device = model.get_input_embeddings().weight.device
        if device.type != "meta":  # meta: FSDP's low-memory loading on a non-main process
            for name, child in model.named_children():
                if name != "language_model":
                    child.to(device)
        return model

    def load_trained_weights(self, state_dict: dict[str, torch.Tensor], source: str = "the state dict") -> None:
        """Loads the weights training changes (a light checkpoint's content); every one must be present.

        Raises:
            ValueError: naming the missing and unexpected weights, when `state_dict` does not
                hold exactly `trained_parameter_names()`.
        """
        expected = set(self.trained_parameter_names())
        loading_info = {"missing_keys": sorted(expected - set(state_dict)), "unexpected_keys": sorted(set(state_dict) - expected)}
        _check_module_switches(self.config, expected, loading_info, source)
        _raise_on_key_mismatch(source, loading_info)
        own = self.state_dict()
        with torch.no_grad():
            for name, tensor in state_dict.items():
                if tuple(tensor.shape) != tuple(own[name].shape):
                    raise ValueError(f"{source}: weight {name} has shape {tuple(tensor.shape)}, the model expects "
                                     f"{tuple(own[name].shape)}")
                own[name].copy_(tensor)
        self.upcast_trained_modules()


# Hub arguments of `from_pretrained` that also apply to the base LLM of a light checkpoint.
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
# Loading arguments passed on to `AutoModelForCausalLM.from_pretrained` for a light checkpoint's base LLM.
BASE_LOADING_KWARGS = ("dtype", "device_map", "max_memory", "attn_implementation", "quantization_config", "offload_folder")


def _sibling_module(name: str):
    """The module `name` beside this file, or None when it is not there.

    The package has the recommendation pipeline's code beside this file; a hub copy (the
    model's code only, as transformers copies it) does not, and then saves the model alone.
    Looked up by name (the builtin `__import__`), not by an import statement, so that loading
    this file never requires the pipeline's files.
    """
    try:
        return getattr(__import__(__package__, fromlist=[name]), name)
    except (ModuleNotFoundError, AttributeError):
        return None


def load_base_llm(name_or_path, **kwargs) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained`, refusing a checkpoint whose weights do not all match.

    transformers only warns about missing weights (left randomly initialised) and unexpected
    ones (ignored); a base LLM loaded that way would silently be partly random.
    """
    kwargs.pop("output_loading_info", None)
    language_model, loading_info = AutoModelForCausalLM.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    _raise_on_key_mismatch(f"The base LLM {name_or_path}", loading_info)
    return language_model


def load_vision_encoder(name_or_path, dtype=None, **kwargs) -> PreTrainedModel:
    """The frozen vision encoder of a light checkpoint, by `AutoModel.from_pretrained`, every weight checked.

    float32 unless `dtype` says otherwise: encoders are often stored in float16 to save space.
    `name_or_path=None` with `config=` and `state_dict=` builds it from weights already read.
    """
    if not name_or_path and "state_dict" not in kwargs:
        raise ValueError("This light checkpoint has a vision encoder but no config.vision_model_name_or_path to fetch it from")
    dtype = torch.float32 if dtype in (None, "auto") else dtype
    # The auto class needs a name; weights already read go to the config's own class.
    model_class = AutoModel if name_or_path else MODEL_MAPPING[type(kwargs["config"])]
    vision_model, loading_info = model_class.from_pretrained(name_or_path, dtype=dtype, output_loading_info=True, **kwargs)
    # A ViT checkpoint such as facebook/dino-vits16 ships no pooler: the CLS feature never uses it.
    loading_info["missing_keys"] = [key for key in loading_info.get("missing_keys") or [] if not key.startswith("pooler.")]
    _raise_on_key_mismatch(f"The vision encoder {name_or_path}", loading_info)
    return vision_model.eval()


def _without_pooler(vision_model: PreTrainedModel) -> PreTrainedModel:
    """The encoder without its pooler (ViT's is randomly initialised when a checkpoint lacks it); the feature is the CLS token."""
    if getattr(vision_model, "pooler", None) is not None:
        vision_model.pooler = None
    return vision_model


def _raise_on_key_mismatch(source, loading_info: dict) -> None:
    """Raises when a checkpoint lacks weights the model has, or holds weights it does not have."""
    problems = []
    for kind, label in (("missing_keys", "missing from the checkpoint"), ("unexpected_keys", "not in the model"),
                        ("mismatched_keys", "of the wrong shape")):
        keys = sorted(str(key[0] if isinstance(key, tuple) else key) for key in loading_info.get(kind) or [])
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            problems.append(f"{len(keys)} weights {label} ({shown})")
    if problems:
        raise ValueError(f"{source} does not match the model it should fill: " + "; ".join(problems)
                         + ". It was saved by another model or version, or is incomplete.")


# The config switch that adds each module, and the state-dict prefixes of that module's weights.
MODULE_SWITCHES = {
    "use_history_encoder": ("history_encoder.",),
    "use_visual": ("visual_projector.",),
    "use_collaborative": ("collaborative_projector.", "user_embeddings.", "item_embeddings."),
}
# Evenly spaced elements of each base LLM weight that its fingerprint digests.
FINGERPRINT_SAMPLES = 1024


def _check_module_switches(config: UserLLMConfig, model_keys, loading_info: dict, source) -> None:
    """Raises when a module switch of the config contradicts the weights: the checkpoint holds none
    of a switched-on module's weights, or holds weights of a switched-off one (an edited config)."""
    missing = set(map(str, loading_info.get("missing_keys") or []))
    unexpected = [str(key) for key in loading_info.get("unexpected_keys") or []]
    for switch, prefixes in MODULE_SWITCHES.items():
        own = [key for key in model_keys if key.startswith(prefixes)]
        held = [key for key in unexpected if key.startswith(prefixes)]
        if getattr(config, switch) and own and missing.issuperset(own):
            raise ValueError(f"{source}: config.json has {switch}=True, but the checkpoint holds none of that module's "
                             f"weights ({prefixes[0]}*): expected {switch}=False")
        if not getattr(config, switch) and held:
            raise ValueError(f"{source}: config.json has {switch}=False, but the checkpoint holds {len(held)} weights of "
                             f"that module ({held[0]}, ...): expected {switch}=True")


def _check_variant_switches(config: UserLLMConfig, source) -> None:
    """Raises when `config.variant` names a system whose module switches are not the config's."""
    if config.variant is None:
        return
    differing = {switch: value for switch, value in VARIANTS[config.variant].items() if getattr(config, switch) != value}
    if differing:
        fitting = [name for name, switches in VARIANTS.items()
                   if all(getattr(config, switch) == value for switch, value in switches.items())]
        expected = f"expected variant {fitting[0]!r}, the one with these switches" if fitting else "no variant has these switches"
        raise ValueError(
            f"{source}: config.json has variant={config.variant!r}, which means "
            + ", ".join(f"{switch}={value}" for switch, value in differing.items()) + ", but the config has "
            + ", ".join(f"{switch}={getattr(config, switch)}" for switch in differing) + f": {expected}"
        )


def _check_answer_token_ids(config: UserLLMConfig, source, hub_kwargs: dict) -> None:
    """Raises when `yes_token_id` / `no_token_id` are not tokens that begin "Yes" / "No" in the
    tokenizer saved with the checkpoint (skipped when there is no `tokenizer.json` beside it)."""
    tokenizer_file = cached_file(source, "tokenizer.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if tokenizer_file is None or config.yes_token_id is None or config.no_token_id is None:
        return
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file)

    def spelled(token_id: int) -> str:
        return tokenizer.decode([token_id]).strip() if 0 <= token_id < len(tokenizer) else ""

    def begins(text: str, word: str) -> bool:  # in any case: word-level tokenizers (the toy one) lower-case text
        return bool(text) and word.lower().startswith(text.lower())

    saved = {"yes_token_id": config.yes_token_id, "no_token_id": config.no_token_id}
    words = {"yes_token_id": "Yes", "no_token_id": "No"}
    for field, word in words.items():
        text = spelled(saved[field])
        if begins(text, word):
            continue
        other = "no_token_id" if field == "yes_token_id" else "yes_token_id"
        other_text = spelled(saved[other])
        if begins(other_text, word):
            expected = f"expected {saved[other]} (now in {other}: the two ids are swapped)"
        else:
            expected = f"expected the id of the token that begins the answer {word!r}"
        raise ValueError(f"{source}: config.json has {field}={saved[field]}, a token the saved tokenizer reads as "
                         f"{text!r}, not the start of {word!r}: {expected}")


def base_model_fingerprint(state_dict: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict | None:
    """What identifies a base LLM's weights, cheaply: a digest of the name, shape and the bit patterns
    of `FINGERPRINT_SAMPLES` evenly spaced elements of every floating-point weight.

    The digest is integer arithmetic only (each tensor's samples weighted by their position and summed
    in int64, far from overflow; the sums folded modulo a prime), so it is exact on every machine.

    Args:
        state_dict: the base LLM's weights under its own names (`model.layers.0...`).
        dtype: the precision the samples are taken in; defaults to the dtype most weights
            have. A base stored in float32 and loaded in bfloat16 can only be compared in bfloat16.

    Returns:
        `{"digest", "dtype", "tensors"}`, or None when a weight is not materialised (meta device).
    """
    tensors = {name: tensor for name, tensor in sorted(state_dict.items()) if tensor.is_floating_point()}
    if not tensors or any(tensor.device.type == "meta" for tensor in tensors.values()):
        return None
    if dtype is None:
        dtypes = [tensor.dtype for tensor in tensors.values()]
        dtype = max(set(dtypes), key=dtypes.count)
    modulus = 2**61 - 1
    digest = 0
    for name, tensor in tensors.items():
        flat = tensor.detach().reshape(-1)
        step = max(flat.numel() // FINGERPRINT_SAMPLES, 1)
        index = torch.arange(0, min(flat.numel(), FINGERPRINT_SAMPLES * step), step, device=flat.device)
        sample = flat[index].to(dtype).float().cpu()  # float32 holds every bfloat16/float16 value exactly
        bits = sample.view(torch.int32).to(torch.int64) & 0xFFFFFFFF  # < 2**32
        positions = torch.arange(1, bits.numel() + 1, dtype=torch.int64)  # <= 2**10: the sum stays < 2**53
        for value in (*f"{name}{tuple(tensor.shape)}".encode(), int((bits * positions).sum())):
            digest = (digest * 1_000_003 + value) % modulus
    return {"digest": f"{digest:016x}", "dtype": str(dtype).removeprefix("torch."), "tensors": len(tensors)}


def _load_light_checkpoint_base(config: UserLLMConfig, source, **kwargs) -> PreTrainedModel:
    """`load_base_llm` of `config.base_model_name_or_path`, saying how to point elsewhere when it is not found."""
    name = config.base_model_name_or_path
    how = (f"Pass the base LLM's folder or Hub id as from_pretrained({str(source)!r}, base_model_name_or_path=...)"
           + (f" (it was trained on revision {config.base_model_revision})" if config.base_model_revision else ""))
    if is_local_path(name) and not os.path.isdir(os.path.expanduser(name)):
        raise OSError(f"The base LLM named in the config of the light checkpoint {source} (base_model_name_or_path="
                      f"{name!r}) was not found: no such folder. {how}.")
    try:
        return load_base_llm(name, **kwargs)
    except OSError as error:
        raise OSError(f"The base LLM named in the config of the light checkpoint {source} (base_model_name_or_path="
                      f"{name!r}) could not be loaded: {error}\n{how}.") from error


def _check_base_fingerprint(config: UserLLMConfig, language_model: PreTrainedModel, source, ignore_mismatch: bool) -> None:
    """Raises (a warning with `ignore_mismatch`) when the base LLM is not the one the light checkpoint was saved on."""
    name = config.base_model_name_or_path
    recorded = config.base_model_fingerprint
    if not recorded or "digest" not in recorded:
        logger.warning(f"The light checkpoint {source} records no fingerprint of its base LLM (saved before fingerprints "
                       f"were recorded): could not check that {name} is the LLM it was trained on.")
        return
    state_dict = language_model.state_dict()
    loaded = [tensor.dtype for tensor in state_dict.values() if tensor.is_floating_point()]
    loaded_dtype = max(set(loaded), key=loaded.count) if loaded else None
    recorded_dtype = getattr(torch, recorded["dtype"])
    # A base loaded at a lower precision than the one it was fingerprinted in cannot give the same samples.
    comparable = loaded_dtype in (recorded_dtype, torch.float32, torch.float64)
    actual = base_model_fingerprint(state_dict, dtype=recorded_dtype) if comparable else None
    if actual is None or actual["tensors"] != recorded["tensors"]:
        logger.warning(
            f"Could not check the base LLM {name} of {source} against its recorded fingerprint ({recorded['tensors']} "
            f"floating-point weights in {recorded['dtype']}): it was loaded "
            + (f"in {str(loaded_dtype).removeprefix('torch.')}" if not comparable else
               "with weights not in memory" if actual is None else f"with {actual['tensors']} floating-point weights (quantized?)")
            + f". Load it with dtype={recorded['dtype']!r} and without quantization to check it."
        )
        return
    if actual["digest"] == recorded["digest"]:
        return
    message = (f"The base LLM {name} is not the one the light checkpoint {source} was saved on: its weights' fingerprint "
               f"is {actual['digest']}, config.base_model_fingerprint records {recorded['digest']} ({recorded['dtype']}, "
               f"{recorded['tensors']} weights). Its scores would not be the trained model's.")
    if ignore_mismatch:
        logger.warning(message + " Loading anyway (ignore_base_mismatch=True).")
        return
    raise ValueError(message + " Pass base_model_name_or_path= the LLM it was trained on, or ignore_base_mismatch=True "
                               "to load it anyway (a warning instead of this error).")


def _read_safetensors_checkpoint(name_or_path, **hub_kwargs) -> dict[str, torch.Tensor]:
    """Reads all weights of a (possibly sharded) safetensors checkpoint from a folder or the Hub."""
    index_file = cached_file(
        name_or_path, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    if index_file is not None:
        paths, _ = get_checkpoint_shard_files(name_or_path, index_file, **hub_kwargs)
    else:
        path = cached_file(name_or_path, "model.safetensors", _raise_exceptions_for_missing_entries=False, **hub_kwargs)
        if path is None:
            raise OSError(f"{name_or_path} has no model.safetensors (only safetensors weights are read)")
        paths = [path]
    state_dict = {}
    for path in paths:
        try:
            state_dict.update(load_state_dict(path))
        except Exception as error:  # safetensors' errors do not name the file
            raise OSError(f"Could not read the weights file {path}: {error}") from error
    return state_dict


UserLLMForRecommendation.register_for_auto_class("AutoModel")

__all__ = [
    "TRAINED_MODULES",
    "FeatureProjector",
    "TokenScaleNorm",
    "HierarchicalHistoryEncoder",
    "HistoryEncoder",
    "TransformerHistoryEncoder",
    "UserHistoryEncoder",
    "UserLLMForRecommendation",
    "UserLLMOutput",
    "UserLLMPreTrainedModel",
    "is_trained_parameter",
]
