"""USER-LLM: a LoRA-tuned causal LM that answers "would this user like this item?" from a multimodal prompt.

Placeholder tokens are replaced by embeddings before the LLM runs: `<Image>` (projected image features),
`<UserID>` / `<ItemID>` (projected collaborative embeddings) and `<HistoryInteractions>` (one token from the
User History Encoding Module). The score is logit("Yes") - logit("No") at the last prompt position, in float32.

`save_pretrained` copies this file next to the weights: it imports only torch, transformers, peft, safetensors,
the standard library and `configuration_userllm`.
"""

import os
from dataclasses import dataclass

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from transformers import MODEL_MAPPING, AutoModel, AutoModelForCausalLM, Cache, PreTrainedModel, PreTrainedTokenizerFast
from transformers.activations import ACT2FN
from transformers.dynamic_module_utils import custom_object_save
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, cached_file, is_torchdynamo_compiling, logging

from .configuration_userllm import VARIANTS, UserLLMConfig, is_local_path

logger = logging.get_logger(__name__)

# The paper's two training steps, in order; "joint" (LoRA and encoders together) is an option beyond it.
PAPER_TRAINING_STEPS = ("lora", "encoders")
TRAINING_STEPS = (*PAPER_TRAINING_STEPS, "joint")
# Names in `UserLLMModel` (the head's state dict adds the `model.` prefix).
ENCODER_PREFIXES = ("visual_projector.", "collaborative_projector.", "history_encoder.")
# Modules that training changes, kept in float32 whatever the LLM's dtype (a bfloat16 weight loses
# every AdamW update smaller than half a bfloat16 step).
TRAINED_MODULES = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "visual_projector",
                   "collaborative_projector", "history_encoder")


def is_trained_parameter(name: str) -> bool:
    """Whether a state-dict name (with or without the `model.` prefix) is one training changes: not the frozen
    LLM or vision encoder."""
    name = name.removeprefix("model.")
    if name.startswith("vision_tower."):
        return False
    return not name.startswith("language_model.") or "lora_" in name


@dataclass
class UserLLMModelOutput(ModelOutput):
    """Output of [`UserLLMModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`): the decoder's output.
        cache (`Cache`, *optional*): the LLM's key/value cache, when `use_cache=True`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): the decoder's, with `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*): the decoder's, with `output_attentions=True` (eager).
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class UserLLMOutput(ModelOutput):
    """Output of [`UserLLMForRecommendation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): BCE with logits of `logits` against the labels.
        logits (`torch.FloatTensor` of shape `(batch_size,)`): the score, logit("Yes") - logit("No").
        probabilities (`torch.FloatTensor` of shape `(batch_size,)`): `sigmoid(logits)` = P(Yes | Yes or No).
        cache (`Cache`, *optional*): the LLM's key/value cache, when `use_cache=True`.
        hidden_states, attentions: as in [`UserLLMModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    probabilities: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class TokenScaleNorm(nn.RMSNorm):
    """RMS norm of a spliced token (`projector_norm="rms"`), its gain set to the LLM's token-embedding RMS."""

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size, eps=1e-6)


class FeatureProjector(nn.Module):
    """Two-layer MLP from a feature space (384 DINO, 256 MF) into the LLM hidden size, optionally RMS-normed."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, activation: str = "gelu",
                 output_norm: bool = False):
        super().__init__()
        self.linear_1 = nn.Linear(input_size, hidden_size)
        self.act = ACT2FN[activation]
        self.linear_2 = nn.Linear(hidden_size, output_size)
        self.output_norm = TokenScaleNorm(output_size) if output_norm else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`(..., input_size)` -> `(..., output_size)`, in the projector's dtype."""
        embeddings = self.linear_2(self.act(self.linear_1(features.to(self.linear_1.weight.dtype))))
        return embeddings if self.output_norm is None else self.output_norm(embeddings)


def check_without_sync(condition: torch.Tensor, message) -> None:
    """`ValueError(message())` when the boolean tensor `condition` is False: read directly on the CPU in eager
    mode, else `torch._assert_async` (no host sync, no graph break) with a generic message."""
    if condition.device.type == "cpu" and not is_torchdynamo_compiling():
        if not bool(condition):
            raise ValueError(message())
        return
    torch._assert_async(condition, "USER-LLM input check failed (rerun the batch on the CPU for the details)")


def cls_features(vision_model: PreTrainedModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """`(N, 3, H, W)` images -> `(N, hidden_size)` float32: the CLS token of the encoder's last hidden state
    (not `pooler_output`: a ViT checkpoint such as `facebook/dino-vits16` ships no pooler weights)."""
    weight = next(vision_model.parameters())
    hidden = vision_model(pixel_values=pixel_values.to(device=weight.device, dtype=weight.dtype)).last_hidden_state
    return hidden[:, 0].float()


class UserHistoryEncoder(nn.Module):
    """The User History Encoding Module (UHEM): a whole history compressed into one token, a GRU's state at the
    last valid position.

    A user's input is, per history item in time order, the LLM's input embeddings of its text then its projected
    image embedding; a user without history gets a learned vector.

    Args:
        embedding_size: the LLM hidden size (input and output token size).
        hidden_size: the GRU's width; a linear layer maps it back when it differs.
        output_norm: a `TokenScaleNorm` on the output tokens (`projector_norm="rms"`).
    """

    def __init__(self, embedding_size: int, hidden_size: int, output_norm: bool = False):
        super().__init__()
        self.output_projection = nn.Linear(hidden_size, embedding_size) if hidden_size != embedding_size else None
        self.no_history_embedding = nn.Parameter(torch.zeros(embedding_size))
        self.gru = nn.GRU(embedding_size, hidden_size, batch_first=True)
        self.output_norm = TokenScaleNorm(embedding_size) if output_norm else None

    def forward(self, sequence_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`(batch_size, seq_len, embedding_size)` right-padded sequences and their `(batch_size, seq_len)` mask ->
        `(batch_size, embedding_size)` tokens."""
        sequence_embeds = sequence_embeds.to(self.no_history_embedding.dtype)
        lengths = attention_mask.sum(dim=1)
        has_history = lengths > 0
        if sequence_embeds.shape[1] == 0:  # no history in the whole batch
            last_state = sequence_embeds.new_zeros(len(lengths), self.no_history_embedding.shape[0])
        else:
            # Rows without history are encoded too (as if one position were valid) and replaced
            # afterwards: no data-dependent shapes, so no host sync and no graph break.
            # The state at a row's last valid step never sees the right padding after it: the same as a
            # packed run, and faster on a CPU (one input-projection matmul for all steps).
            outputs, _ = self.gru(sequence_embeds)  # (B, T, hidden_size)
            last_state = outputs[torch.arange(len(lengths), device=outputs.device), lengths.clamp(min=1) - 1]
            if self.output_projection is not None:
                last_state = self.output_projection(last_state)
        # torch.where keeps the no-history vector in the graph even when no row uses it (DDP needs it).
        no_history = self.no_history_embedding.expand(len(lengths), -1)
        history_tokens = torch.where(has_history.unsqueeze(1), last_state.to(no_history.dtype), no_history)
        return history_tokens if self.output_norm is None else self.output_norm(history_tokens)


class UserLLMPreTrainedModel(PreTrainedModel):
    config_class = UserLLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["LlamaDecoderLayer"]
    _keep_in_fp32_modules_strict = list(TRAINED_MODULES)
    # forward computes a mean loss itself: the Trainer must not look for loss kwargs in **kwargs.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                nn.init.xavier_uniform_(param) if "weight" in name else nn.init.zeros_(param)
        elif isinstance(module, UserHistoryEncoder):
            nn.init.normal_(module.no_history_embedding, std=std)
        elif isinstance(module, (nn.LayerNorm, TokenScaleNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.zeros_(module.weight)


DECODER_KWARGS = frozenset(TransformersKwargs.__optional_keys__) | {"return_dict", "cache_position"}
"""The keyword arguments `UserLLMModel.forward` passes on to the LLM's decoder; any other one is refused."""


class UserLLMModel(UserLLMPreTrainedModel):
    """The USER-LLM modules, placeholder splicing and the decoder, without the Yes/No head.

    Modules, each present only when the config switches it on:
    - `language_model`: the causal LM with LoRA adapters on `config.lora_target_modules`;
    - `visual_projector`: image features `(N, vision_feature_size)` -> `(N, hidden_size)`;
    - `collaborative_projector`: MF embeddings `(N, collaborative_size)` -> `(N, hidden_size)`, fed from the frozen
      `user_embeddings` / `item_embeddings` tables (last row: unknown ids, cold start);
    - `history_encoder`: the UHEM;
    - `vision_tower`: the frozen vision encoder (`config.vision_config`) turning posters (`pixel_values`) into
      features (`cls_features`); precomputed `image_features` skip it.
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
        else:  # pretrained (see `from_base_model`): post_init must not draw its weights again
            for module in language_model.modules():
                module._is_hf_initialized = True
        self.language_model = language_model
        lora_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=list(config.lora_target_modules), bias="none")
        inject_adapter_in_model(lora_config, self.language_model)
        # peft initialises LoRA itself (lora_B = 0: training starts from the base LLM); post_init keeps it.
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
            self.history_encoder = UserHistoryEncoder(
                hidden_size, config.history_hidden_size or hidden_size, output_norm=config.projector_norm == "rms"
            )
        if config.use_visual and config.vision_config is not None:
            self.vision_tower = _without_pooler(AutoModel.from_config(config.vision_config))
            self.vision_tower.requires_grad_(False)
        self.post_init()
        self.match_token_embedding_scale()

    @torch.no_grad()
    def match_token_embedding_scale(self) -> None:
        """Sets every `TokenScaleNorm` gain to the mean RMS of the LLM's token embeddings (not on meta: a model
        about to be loaded keeps the checkpoint's gains)."""
        norms = [module for module in self.modules() if isinstance(module, TokenScaleNorm)]
        embeddings = self.get_input_embeddings().weight
        if not norms or embeddings.device.type == "meta":
            return
        target = embeddings.float().pow(2).mean(dim=-1).sqrt().mean()
        for norm in norms:
            norm.weight.fill_(target.to(norm.weight.device))

    def load_collaborative_embeddings(self, user_embeddings: torch.Tensor, item_embeddings: torch.Tensor) -> None:
        """Copies pretrained MF tables `(num_users, C)` and `(num_items, C)`; the "unknown" rows become zeros."""
        if not self.config.use_collaborative:
            raise ValueError("This model was built with use_collaborative=False: it has no collaborative tables")
        for name, table, values in (("user_embeddings", self.user_embeddings, user_embeddings),
                                    ("item_embeddings", self.item_embeddings, item_embeddings)):
            expected = (table.num_embeddings - 1, table.embedding_dim)
            if tuple(values.shape) != expected:
                raise ValueError(f"{name} has shape {tuple(values.shape)}, expected {expected} "
                                 "(config num_users/num_items, collaborative_size)")
            with torch.no_grad():
                table.weight[:-1].copy_(values)
                table.weight[-1].zero_()

    def attach_vision_encoder(self, vision_model: PreTrainedModel, name_or_path: str | None = None) -> None:
        """Makes the model score raw posters: `vision_model` (the `AutoModel` the training features came from,
        hidden size `config.vision_feature_size`) becomes its frozen `vision_tower`; `name_or_path` is recorded in
        `config.vision_model_name_or_path` (model card; light checkpoints fetch it from there)."""
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
        """`(num_images, 3, H, W)` posters -> `(num_images, vision_feature_size)` float32 features (`cls_features`)."""
        if getattr(self, "vision_tower", None) is None:
            raise ValueError(
                "Posters were given as images, but this checkpoint holds no vision encoder (config.vision_config is "
                "None: it was saved without one). Pass precomputed image_features instead, computed by the encoder "
                f"the model was trained with ({self.config.vision_model_name_or_path or 'see the model card'})."
            )
        return cls_features(self.vision_tower, pixel_values)

    def _with_poster_features(self, image_features, pixel_values, image_indices) -> torch.Tensor | None:
        """`image_features` `(N, D)` with rows `image_indices` `(M,)` replaced by the features of `pixel_values`."""
        if pixel_values is None:
            return image_features
        posters = self.get_image_features(pixel_values)  # (M, D)
        if image_indices is None:
            if image_features is not None:
                raise ValueError("pixel_values were given with image_features but without image_indices (the rows they fill)")
            return posters
        if image_features is None:
            image_features = posters.new_zeros(image_indices.numel(), posters.shape[1])
        return image_features.to(device=posters.device, dtype=torch.float32).index_copy(0, image_indices.to(posters.device), posters)

    def _embed_tokens(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Token embeddings, placeholder ids (possibly above the LLM vocabulary) looked up as id 0 first."""
        is_placeholder = torch.zeros_like(input_ids, dtype=torch.bool)
        for token_id in self.config.placeholder_token_ids:  # comparisons with constants: no host-to-device copy
            is_placeholder |= input_ids == token_id
        return self.get_input_embeddings()(input_ids.masked_fill(is_placeholder, 0))

    @staticmethod
    def _check_placeholder_counts(input_ids: torch.LongTensor, counts: list[tuple[int | None, int | None, str]]) -> None:
        """Checks, in one `check_without_sync`, that each placeholder occurs as often as its features fill it.

        `counts` holds `(token_id, num_features, name)`: `num_features` rows in placeholder order (`<Image>`), or
        None for one embedding per prompt row (at most once per row).
        """
        checks = []
        for token_id, num_features, name in counts:
            if token_id is not None:
                per_row = (input_ids == token_id).sum(dim=1)  # (B,)
                match = (per_row <= 1).all() if num_features is None else per_row.sum() == num_features
                checks.append((match, per_row, num_features, name))
        if not checks:
            return

        def message() -> str:
            _, per_row, num_features, name = next(check for check in checks if not bool(check[0]))
            per_prompt_row = num_features is None
            if per_prompt_row:
                num_features = int((per_row > 0).sum())
            return (f"The prompt holds {int(per_row.sum())} {name} placeholder tokens but {num_features} {name} features "
                    f"were given{' (one per prompt row holding it)' if per_prompt_row else ''}; they must match "
                    "(one feature vector per placeholder).")

        check_without_sync(torch.stack([check[0] for check in checks]).all(), message)

    @staticmethod
    def _scatter_placeholder(inputs_embeds, input_ids, token_id: int | None, features: torch.Tensor | None):
        """Writes `features` `(N, hidden)` at the N positions of `token_id`, in order."""
        if token_id is None or features is None:
            return inputs_embeds
        mask = (input_ids == token_id).unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, features.to(inputs_embeds.dtype))

    @staticmethod
    def _place_row_embeddings(inputs_embeds, input_ids, token_id: int | None, row_embeds: torch.Tensor | None):
        """Writes `row_embeds[i]` `(batch_size, hidden)` at the `token_id` position of row i, by `torch.where`
        (boolean row selection would need a host sync)."""
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
        history_item_token_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Runs the UHEM.

        Args:
            history_input_ids: `(batch_size, history_len)` item texts, each followed by `<Image>` when it has one,
                right-padded.
            history_attention_mask: `(batch_size, history_len)`, 1 on valid positions.
            history_image_features: `(num_history_images, vision_feature_size)`, one per `<Image>`.
            history_item_token_ids: `(num_history_items,)`, the item of each `<ItemID>` (`item_ids_after_titles`).

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
        return self.history_encoder(embeds, history_attention_mask)

    def get_prompt_embeddings(
        self,
        input_ids: torch.LongTensor,
        image_features: torch.FloatTensor | None = None,
        user_ids: torch.LongTensor | None = None,
        item_ids: torch.LongTensor | None = None,
        history_input_ids: torch.LongTensor | None = None,
        history_attention_mask: torch.LongTensor | None = None,
        history_image_features: torch.FloatTensor | None = None,
        prompt_item_ids: torch.LongTensor | None = None,
        history_item_token_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Embeds a prompt and splices the projected features into its placeholders.

        Args:
            input_ids: `(batch_size, seq_len)` prompt tokens with placeholders.
            image_features: `(num_images, vision_feature_size)`, one per `<Image>`.
            user_ids, item_ids: `(batch_size,)`, for the `<UserID>` / `<ItemID>` placeholders.
            history_*: see `encode_history`.
            prompt_item_ids: `(num_item_tokens,)`, the item of each `<ItemID>` in order, when prompts hold several
                (`item_ids_after_titles`); replaces `item_ids`.

        Returns:
            `(batch_size, seq_len, hidden_size)` input embeddings for the LLM.
        """
        config = self.config
        counts = []  # per placeholder: its number of feature rows, or None (one per prompt row)
        if config.use_visual:
            counts.append((config.image_token_id, 0 if image_features is None else image_features.shape[0], "<Image>"))
        if config.use_collaborative:
            counts.append((config.user_token_id, None if user_ids is not None else 0, "<UserID>"))
            item_count = prompt_item_ids.shape[0] if prompt_item_ids is not None else None if item_ids is not None else 0
            counts.append((config.item_token_id, item_count, "<ItemID>"))
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
                item_ids = None
            for token_id, table, ids in ((config.user_token_id, self.user_embeddings, user_ids),
                                         (config.item_token_id, self.item_embeddings, item_ids)):
                if ids is not None:
                    row_embeds = self.collaborative_projector(self._lookup_collaborative(table, ids))  # (B, hidden)
                    inputs_embeds = self._place_row_embeddings(inputs_embeds, input_ids, token_id, row_embeds)
        if config.use_history_encoder and history_input_ids is not None:
            history_embeds = self.encode_history(
                history_input_ids, history_attention_mask, history_image_features, history_item_token_ids
            )  # (B, hidden)
            inputs_embeds = self._place_row_embeddings(inputs_embeds, input_ids, config.history_token_id, history_embeds)
        return inputs_embeds

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
        cache: Cache | None = None,
        position_ids: torch.LongTensor | None = None,
        use_cache: bool = False,
        pixel_values: torch.FloatTensor | None = None,
        image_indices: torch.LongTensor | None = None,
        history_pixel_values: torch.FloatTensor | None = None,
        history_image_indices: torch.LongTensor | None = None,
        prompt_item_ids: torch.LongTensor | None = None,
        history_item_token_ids: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> UserLLMModelOutput:
        """Splices the features into the prompts and runs the LLM's decoder.

        Args:
            input_ids: `(batch_size, seq_len)` left-padded prompts (see `UserLLMProcessor`).
            attention_mask: `(batch_size, seq_len)`, or `(batch_size, past_len + seq_len)` with `cache`.
            image_features, user_ids, item_ids, history_*, prompt_item_ids: see `get_prompt_embeddings`.
            cache: key/value cache of a shared prompt prefix (see `ranking.py`).
            position_ids: `(batch_size, seq_len)`; by default counted over non-padding tokens, so a prompt scores the
                same whatever left padding its batch needs.
            use_cache: return the LLM's key/value cache.
            pixel_values: `(num_posters, 3, H, W)` posters as images, filling rows `image_indices` `(num_posters,)`
                of `image_features`; `history_pixel_values` / `history_image_indices` likewise.
            kwargs: passed on to the LLM's decoder (e.g. `output_attentions`).
        """
        unknown = sorted(set(kwargs) - DECODER_KWARGS)
        if unknown:  # the decoder would drop them without a word (a typo, or an input of another version)
            raise TypeError(f"UserLLMModel.forward got unexpected keyword arguments {unknown}: it takes the processor's "
                            f"outputs and, for the LLM's decoder, {sorted(DECODER_KWARGS)}")
        image_features = self._with_poster_features(image_features, pixel_values, image_indices)
        history_image_features = self._with_poster_features(history_image_features, history_pixel_values, history_image_indices)
        inputs_embeds = self.get_prompt_embeddings(
            input_ids, image_features, user_ids, item_ids, history_input_ids, history_attention_mask, history_image_features,
            prompt_item_ids, history_item_token_ids,
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
        outputs = self.language_model.get_decoder()(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            use_cache=use_cache, **kwargs,
        )
        return UserLLMModelOutput(last_hidden_state=outputs.last_hidden_state, cache=outputs.cache if use_cache else None,
                                  hidden_states=outputs.hidden_states, attentions=outputs.attentions)


def _add_base_model_prefix(module, state_dict, prefix, *args) -> None:
    """`load_state_dict` pre-hook: renames keys without the base model's prefix (`language_model...`) to
    `model.language_model...`, in the copy of the state dict `load_state_dict` works on."""
    own = f"{prefix}{module.base_model_prefix}."
    for key in [key for key in state_dict if key.startswith(prefix) and not key.startswith(own)]:
        state_dict[own + key[len(prefix):]] = state_dict.pop(key)


class UserLLMForRecommendation(UserLLMPreTrainedModel):
    """USER-LLM: [`UserLLMModel`] and the Yes/No head, scoring (user, item) pairs from a multimodal prompt.

    The modules of `self.model` (`language_model`, `history_encoder`, ...) and its public methods are reachable on
    this class too; state-dict names carry the `model.` prefix (checkpoints without it load as well).
    """

    def __init__(self, config: UserLLMConfig, language_model: PreTrainedModel | None = None):
        super().__init__(config)
        self.model = UserLLMModel(config, language_model=language_model)
        # A state dict of the layout before the split (no `model.` prefix: resumed runs, old step results) loads too.
        self.register_load_state_dict_pre_hook(_add_base_model_prefix)
        self.post_init()

    @property
    def language_model(self) -> PreTrainedModel:
        return self.model.language_model

    @property
    def history_encoder(self) -> UserHistoryEncoder:
        return self.model.history_encoder

    @property
    def visual_projector(self) -> FeatureProjector:
        return self.model.visual_projector

    @property
    def collaborative_projector(self) -> FeatureProjector:
        return self.model.collaborative_projector

    @property
    def user_embeddings(self) -> nn.Embedding:
        return self.model.user_embeddings

    @property
    def item_embeddings(self) -> nn.Embedding:
        return self.model.item_embeddings

    @property
    def vision_tower(self) -> PreTrainedModel:
        return self.model.vision_tower

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def get_prompt_embeddings(self, *args, **kwargs) -> torch.Tensor:
        return self.model.get_prompt_embeddings(*args, **kwargs)

    def encode_history(self, *args, **kwargs) -> torch.Tensor:
        return self.model.encode_history(*args, **kwargs)

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        return self.model.get_image_features(pixel_values)

    def load_collaborative_embeddings(self, user_embeddings: torch.Tensor, item_embeddings: torch.Tensor) -> None:
        self.model.load_collaborative_embeddings(user_embeddings, item_embeddings)

    def attach_vision_encoder(self, vision_model: PreTrainedModel, name_or_path: str | None = None) -> None:
        self.model.attach_vision_encoder(vision_model, name_or_path)

    def _lookup_collaborative(self, table: nn.Embedding, ids: torch.LongTensor) -> torch.Tensor:
        return self.model._lookup_collaborative(table, ids)

    def set_training_step(self, step: str) -> None:
        """Freezes all but what a training step trains: `"lora"` (step 1), `"encoders"` (step 2: UHEM and
        projectors), `"joint"` (both; not the paper's) or `"none"` (inference)."""
        if step not in (*TRAINING_STEPS, "none"):
            raise ValueError(f"Unknown training step {step!r}; expected one of {(*TRAINING_STEPS, 'none')}")
        if step != "none":
            self.upcast_trained_modules()
        for name, param in self.model.named_parameters():
            lora, encoder = "lora_" in name, name.startswith(ENCODER_PREFIXES)
            param.requires_grad_({"lora": lora, "encoders": encoder, "joint": lora or encoder}.get(step, False))

    def upcast_trained_modules(self) -> None:
        """Puts `TRAINED_MODULES` in float32 (after every load and at each training step), the frozen rest untouched."""
        for name, module in self.named_modules():
            if name.rpartition(".")[2] in TRAINED_MODULES:
                module.float()

    def _yes_minus_no_logit(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """logit("Yes") - logit("No") from `(batch_size, hidden_size)` final hidden states -> `(batch_size,)` float32.

        Only the two LM-head rows, in float32: bfloat16 logits are rounded to steps of 1/16-1/8, so their
        difference would tie many scores (and lose AUC) and differ between batchings by a whole step.
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
        labels: torch.FloatTensor | None = None,
        **kwargs,
    ) -> UserLLMOutput:
        """Scores (user, item) prompts.

        Args:
            input_ids: `(batch_size, seq_len)` left-padded prompts (see `UserLLMProcessor`).
            attention_mask: `(batch_size, seq_len)`, or `(batch_size, past_len + seq_len)` with `cache`.
            labels: `(batch_size,)`, 1 = the user liked the item.
            kwargs: the features and decoder arguments of [`UserLLMModel.forward`].

        Returns:
            [`UserLLMOutput`] with `logits` and `probabilities` of shape `(batch_size,)`.
        """
        outputs = self.model(input_ids, attention_mask=attention_mask, **kwargs)
        logits = self._yes_minus_no_logit(outputs.last_hidden_state[:, -1])
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype).view(-1))
        return UserLLMOutput(loss=loss, logits=logits, probabilities=torch.sigmoid(logits), cache=outputs.cache,
                             hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    @torch.no_grad()
    def predict_proba(self, **inputs) -> torch.Tensor:
        """P(Yes) `(batch_size,)` for a batch from `UserLLMProcessor` (labels ignored)."""
        inputs.pop("labels", None)
        return self(**{k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}).probabilities

    def trained_parameter_names(self) -> list[str]:
        """Names of the weights training changes: everything but the frozen base LLM."""
        return [name for name in self.state_dict() if is_trained_parameter(name)]

    def save_pretrained(self, save_directory, *args, light: bool = False, **kwargs):
        """Saves the model and the code of the pipelines registered for `config.custom_pipelines`; with
        `light=True` without the frozen base LLM (and vision encoder, when it has a name to be fetched by).

        A light checkpoint records a fingerprint of the base LLM's weights (`config.base_model_fingerprint`),
        checked on load. A `state_dict` passed in (gathered under FSDP / ZeRO-3) replaces the module's own.
        """
        # transformers' legacy VLM renaming (`model.language_model.model` <- `language_model.model.model`), recorded on
        # load, would be reversed on save and double our `model.language_model.model.` names.
        kwargs.setdefault("save_original_format", False)
        if light:
            if not self.config.base_model_name_or_path:
                raise ValueError("A light checkpoint needs config.base_model_name_or_path (the base LLM to fetch on load)")
            state_dict = kwargs.get("state_dict") or self.state_dict()
            keep_vision = not self.config.vision_model_name_or_path
            kwargs["state_dict"] = {name: tensor for name, tensor in state_dict.items() if is_trained_parameter(name)
                                    or keep_vision and name.removeprefix("model.").startswith("vision_tower.")}
            base_state = {name.removeprefix("model.language_model.").replace(".base_layer.", "."): tensor
                          for name, tensor in state_dict.items()
                          if name.startswith("model.language_model.") and not is_trained_parameter(name)}
            self.config.base_model_fingerprint = base_model_fingerprint(base_state)
            self.config.light_checkpoint = True
        try:
            result = super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.config.light_checkpoint = False
        if kwargs.get("is_main_process", True):
            from transformers.pipelines import PIPELINE_REGISTRY  # heavy: only when saving

            for task in self.config.custom_pipelines or {}:
                # Registered by pipeline_userllm.py when it is imported (the package); a hub copy saves the model alone.
                pipeline_class = PIPELINE_REGISTRY.supported_tasks.get(task, {}).get("impl")
                if pipeline_class is not None:
                    custom_object_save(pipeline_class, save_directory)
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Loads a full or light checkpoint (safetensors only; names with or without the `model.` prefix).

        Missing or unknown weights raise an error naming them; the answer token ids are checked against the saved
        tokenizer, `variant` against the switches and the switches against the weights. A light checkpoint's base
        LLM is loaded with this call's `dtype` (default `config.dtype`), `device_map`, `attn_implementation` and
        `quantization_config`, and must match `config.base_model_fingerprint`.

        Extra keyword arguments:
            base_model_name_or_path (`str`): load a light checkpoint's base LLM from here instead.
            ignore_base_mismatch (`bool`, defaults to `False`): load on a base LLM of another fingerprint, with a
                warning.
        """
        kwargs.setdefault("use_safetensors", True)
        config = kwargs.pop("config", None)
        base_model_override = kwargs.pop("base_model_name_or_path", None)
        ignore_base_mismatch = kwargs.pop("ignore_base_mismatch", False)
        output_loading_info = kwargs.pop("output_loading_info", False)
        hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        # Not isinstance: AutoModel's config may come from another dynamic-module copy of this class (remote code
        # puts the config and model files under different hashes), and it holds the overrides AutoConfig applied.
        if pretrained_model_name_or_path is not None and getattr(config, "model_type", None) != UserLLMConfig.model_type:
            config = UserLLMConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        if config is not None and base_model_override is not None:
            config.base_model_name_or_path = str(base_model_override)
        if config is not None and pretrained_model_name_or_path is not None:
            _check_variant_switches(config, pretrained_model_name_or_path)
            _check_answer_token_ids(config, pretrained_model_name_or_path, hub_kwargs)
        source = str(pretrained_model_name_or_path or "the given state_dict")
        light = config is not None and config.light_checkpoint and kwargs.get("state_dict") is None
        try:
            if light:
                weights_file = cached_file(pretrained_model_name_or_path, "model.safetensors",
                                           _raise_exceptions_for_missing_entries=False, **hub_kwargs)
                if weights_file is None:
                    raise OSError(f"{source} has no model.safetensors (only safetensors weights are read)")
                light_state = load_file(weights_file)
            else:
                model, loading_info = super().from_pretrained(
                    pretrained_model_name_or_path, *model_args, config=config, output_loading_info=True, **kwargs
                )
        except SafetensorError as error:  # names no file
            raise OSError(f"Could not read the weights of {source} (a truncated or corrupt model.safetensors?): "
                          f"{error}") from error
        if light:
            model = cls._from_light_checkpoint(config, light_state, source, ignore_base_mismatch, hub_kwargs, **kwargs)
            loading_info = {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
        _check_module_switches(model.config, model.state_dict().keys(), loading_info, source)
        _raise_on_key_mismatch(source, loading_info)
        model.upcast_trained_modules()
        return (model, loading_info) if output_loading_info else model

    @classmethod
    def _from_light_checkpoint(cls, config, light_state: dict, source: str, ignore_base_mismatch: bool, hub_kwargs: dict,
                               **kwargs) -> "UserLLMForRecommendation":
        """The model built around its base LLM (`AutoModelForCausalLM.from_pretrained`), then filled with the
        trained weights of the light checkpoint (`light_state`), checked by `load_trained_weights`."""
        # The base LLM lives in its own repo: this checkpoint's subfolder and revision do not apply to it.
        hub_kwargs = {key: value for key, value in hub_kwargs.items() if key not in ("subfolder", "revision")}
        base_kwargs = {key: kwargs[key] for key in BASE_LOADING_KWARGS if key in kwargs}
        if base_kwargs.get("dtype") in (None, "auto") and config.dtype is not None:
            base_kwargs["dtype"] = config.dtype  # the LLM's dtype when saved, not the one the base repo stores
        language_model = _load_light_checkpoint_base(config, source, **base_kwargs, **hub_kwargs)
        _check_base_fingerprint(config, language_model, source, ignore_base_mismatch)
        config.light_checkpoint = False
        model = cls(config, language_model=language_model)
        # A vision encoder without a name to fetch it by is stored, under its own weight names.
        vision_names = [name for name in light_state if name.removeprefix("model.").startswith("vision_tower.")]
        vision_state = {name.removeprefix("model.").removeprefix("vision_tower."): light_state.pop(name) for name in vision_names}
        model.load_trained_weights(light_state, source=source)
        if getattr(model.model, "vision_tower", None) is not None:
            if vision_state:
                encoder = load_vision_encoder(None, dtype=kwargs.get("dtype"), config=config.vision_config, state_dict=vision_state)
            else:
                encoder = load_vision_encoder(config.vision_model_name_or_path, dtype=kwargs.get("dtype"), **hub_kwargs)
            model.attach_vision_encoder(encoder, config.vision_model_name_or_path)
        return model.eval()

    @classmethod
    def from_base_model(cls, base_model_name_or_path: str, config: UserLLMConfig, **kwargs) -> "UserLLMForRecommendation":
        """A new USER-LLM around a pretrained causal LM (loaded by `AutoModelForCausalLM.from_pretrained` with
        `kwargs`: `dtype`, `device_map`, quantization, ...); LoRA from peft's init (B = 0), the rest fresh, in
        float32. `config.text_config` must be the LLM's config."""
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
            for name, child in model.model.named_children():
                if name != "language_model":
                    child.to(device)
        return model

    def load_trained_weights(self, state_dict: dict[str, torch.Tensor], source: str = "the state dict") -> None:
        """Loads exactly `trained_parameter_names()` (a light checkpoint's content, names with or without the
        `model.` prefix), else a `ValueError` naming the missing, unexpected or misshapen weights."""
        prefix = f"{self.base_model_prefix}."
        state_dict = {name if name.startswith(prefix) else prefix + name: tensor for name, tensor in state_dict.items()}
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
# The config switch that adds each module, and the prefixes of its weights' names in `UserLLMModel`.
MODULE_SWITCHES = {
    "use_history_encoder": ("history_encoder.",),
    "use_visual": ("visual_projector.",),
    "use_collaborative": ("collaborative_projector.", "user_embeddings.", "item_embeddings."),
}
# Evenly spaced elements of each base LLM weight that its fingerprint digests.
FINGERPRINT_SAMPLES = 1024


def load_base_llm(name_or_path, **kwargs) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained`, refusing missing or unexpected weights (transformers only warns)."""
    kwargs.pop("output_loading_info", None)
    language_model, loading_info = AutoModelForCausalLM.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    _raise_on_key_mismatch(f"The base LLM {name_or_path}", loading_info)
    return language_model


def load_vision_encoder(name_or_path, dtype=None, **kwargs) -> PreTrainedModel:
    """A light checkpoint's frozen vision encoder by `AutoModel.from_pretrained` (float32 unless `dtype`), every
    weight checked; `name_or_path=None` with `config=` and `state_dict=` builds it from weights already read."""
    if not name_or_path and "state_dict" not in kwargs:
        raise ValueError("This light checkpoint has a vision encoder but no config.vision_model_name_or_path to fetch it from")
    dtype = torch.float32 if dtype in (None, "auto") else dtype
    model_class = AutoModel if name_or_path else MODEL_MAPPING[type(kwargs["config"])]
    vision_model, loading_info = model_class.from_pretrained(name_or_path, dtype=dtype, output_loading_info=True, **kwargs)
    # A ViT checkpoint such as facebook/dino-vits16 ships no pooler: the CLS feature never uses it.
    loading_info["missing_keys"] = [key for key in loading_info.get("missing_keys") or [] if not key.startswith("pooler.")]
    _raise_on_key_mismatch(f"The vision encoder {name_or_path}", loading_info)
    return vision_model.eval()


def _without_pooler(vision_model: PreTrainedModel) -> PreTrainedModel:
    if getattr(vision_model, "pooler", None) is not None:
        vision_model.pooler = None  # randomly initialised when a checkpoint lacks it; the feature is the CLS token
    return vision_model


def _raise_on_key_mismatch(source, loading_info: dict) -> None:
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


def _check_module_switches(config: UserLLMConfig, model_keys, loading_info: dict, source) -> None:
    """Raises when a switched-on module has no weights in the checkpoint, or a switched-off one has some."""
    missing = set(map(str, loading_info.get("missing_keys") or []))
    unexpected = [str(key) for key in loading_info.get("unexpected_keys") or []]
    for switch, prefixes in MODULE_SWITCHES.items():
        own = [key for key in model_keys if key.removeprefix("model.").startswith(prefixes)]
        held = [key for key in unexpected if key.removeprefix("model.").startswith(prefixes)]
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
    """Raises when `yes_token_id` / `no_token_id` are not tokens beginning "Yes" / "No" in the tokenizer saved
    with the checkpoint (skipped without a `tokenizer.json`)."""
    tokenizer_file = cached_file(source, "tokenizer.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if tokenizer_file is None or config.yes_token_id is None or config.no_token_id is None:
        return
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file)
    saved = {"yes_token_id": config.yes_token_id, "no_token_id": config.no_token_id}
    spelled = {field: tokenizer.decode([token_id]).strip() if 0 <= token_id < len(tokenizer) else ""
               for field, token_id in saved.items()}

    def begins(text: str, word: str) -> bool:  # any case: word-level tokenizers (the toy one) lower-case text
        return bool(text) and word.lower().startswith(text.lower())

    for field, other, word in (("yes_token_id", "no_token_id", "Yes"), ("no_token_id", "yes_token_id", "No")):
        if begins(spelled[field], word):
            continue
        expected = (f"expected {saved[other]} (now in {other}: the two ids are swapped)" if begins(spelled[other], word)
                    else f"expected the id of the token that begins the answer {word!r}")
        raise ValueError(f"{source}: config.json has {field}={saved[field]}, a token the saved tokenizer reads as "
                         f"{spelled[field]!r}, not the start of {word!r}: {expected}")


def base_model_fingerprint(state_dict: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict | None:
    """A cheap, exact digest of a base LLM's weights: name, shape and the bit patterns of `FINGERPRINT_SAMPLES`
    evenly spaced elements of every floating-point weight, in integer arithmetic (the same on every machine).

    Args:
        state_dict: the base LLM's weights under its own names (`model.layers.0...`).
        dtype: the precision of the samples; defaults to the most common dtype.

    Returns:
        `{"digest", "dtype", "tensors"}`, or None when a weight is on the meta device.
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
    """`load_base_llm(config.base_model_name_or_path)`, saying how to point elsewhere when it is not found."""
    name = config.base_model_name_or_path
    how = (f"Pass the base LLM's folder or Hub id as from_pretrained({source!r}, base_model_name_or_path=...)"
           + (f" (it was trained on revision {config.base_model_revision})" if config.base_model_revision else ""))
    where = f"The base LLM named in the config of the light checkpoint {source} (base_model_name_or_path={name!r})"
    if is_local_path(name) and not os.path.isdir(os.path.expanduser(name)):
        raise OSError(f"{where} was not found: no such folder. {how}.")
    try:
        return load_base_llm(name, **kwargs)
    except OSError as error:
        raise OSError(f"{where} could not be loaded: {error}\n{how}.") from error


def _check_base_fingerprint(config: UserLLMConfig, language_model: PreTrainedModel, source, ignore_mismatch: bool) -> None:
    """Raises (warns with `ignore_mismatch`) when the base LLM is not the one the light checkpoint was saved on."""
    name, recorded = config.base_model_name_or_path, config.base_model_fingerprint
    if not recorded or "digest" not in recorded:
        logger.warning(f"The light checkpoint {source} records no fingerprint of its base LLM: could not check that "
                       f"{name} is the LLM it was trained on.")
        return
    state_dict = language_model.state_dict()
    loaded = [tensor.dtype for tensor in state_dict.values() if tensor.is_floating_point()]
    loaded_dtype = max(set(loaded), key=loaded.count) if loaded else None
    recorded_dtype = getattr(torch, recorded["dtype"])
    # A base loaded at a lower precision than it was fingerprinted in cannot give the same samples.
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


UserLLMForRecommendation.register_for_auto_class("AutoModel")

__all__ = ["TRAINED_MODULES", "FeatureProjector", "TokenScaleNorm", "UserHistoryEncoder",
           "UserLLMForRecommendation", "UserLLMModel", "UserLLMModelOutput", "UserLLMOutput", "UserLLMPreTrainedModel",
           "cls_features", "is_trained_parameter"]
