"""Building a new USER-LLM (model + processor) for one of the paper's systems."""

from __future__ import annotations

import torch
from transformers import AutoConfig, PretrainedConfig

from .configuration_userllm import VARIANTS, UserLLMConfig
from .modeling_userllm import UserLLMForRecommendation
from .processing_userllm import UserLLMProcessor


def create_model_and_processor(
    tokenizer,
    variant: str = "userllm",
    *,
    base_model_name_or_path: str | None = None,
    text_config: PretrainedConfig | dict | None = None,
    num_users: int = 0,
    num_items: int = 0,
    max_item_tokens: int = 96,
    max_history_items: int = 10,
    item_noun: str = "movie",
    dtype: torch.dtype | str | None = None,
    base_model_kwargs: dict | None = None,
    **config_kwargs,
) -> tuple[UserLLMForRecommendation, UserLLMProcessor]:
    """A fresh model of one variant around a pretrained LLM (or a random one), and its processor.

    Args:
        tokenizer: the LLM's tokenizer (placeholder tokens are added to it).
        variant: a key of `VARIANTS` (`tallrec`, `collm`, `collm_va`, `userllm_no_uhem`,
            `userllm_no_ke`, `userllm`).
        base_model_name_or_path: pretrained causal LM (Hub id or folder). Exclusive with
            `text_config`.
        text_config: config of a randomly initialised LLM (tests, the toy demo).
        num_users, num_items: sizes of the collaborative tables.
        max_item_tokens, max_history_items, item_noun: prompt settings (see `UserLLMProcessor`).
        dtype: dtype of the frozen LLM's weights (e.g. `torch.bfloat16`); what training changes
            (LoRA, UHEM, projectors) stays float32. None: a pretrained LLM keeps its checkpoint's
            dtype (transformers' `"auto"`; bfloat16 for SmolLM2), a random one is float32.
        base_model_kwargs: more arguments for `AutoModelForCausalLM.from_pretrained` of the base LLM
            (`device_map`, `attn_implementation`, `quantization_config`, ...).
        **config_kwargs: other `UserLLMConfig` arguments (LoRA, projector sizes, ...).

    Returns:
        `(model, processor)`, with the model's placeholder and answer token ids matching the processor.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    if (base_model_name_or_path is None) == (text_config is None):
        raise ValueError("Pass exactly one of base_model_name_or_path (pretrained LLM) and text_config (random LLM)")
    processor = UserLLMProcessor(
        tokenizer,
        **VARIANTS[variant],
        max_item_tokens=max_item_tokens,
        max_history_items=max_history_items,
        item_noun=item_noun,
        item_ids_after_titles=config_kwargs.pop("item_ids_after_titles", False),
    )
    if base_model_name_or_path is not None:
        text_config = AutoConfig.from_pretrained(base_model_name_or_path)
    config = UserLLMConfig.from_variant(
        variant,
        text_config=text_config,
        num_users=num_users,
        num_items=num_items,
        **{**processor.model_config_kwargs, **config_kwargs},
    )
    vocab_size = config.text_config.vocab_size
    for name in ("yes_token_id", "no_token_id"):
        if getattr(config, name) >= vocab_size:
            raise ValueError(f"{name}={getattr(config, name)} lies outside the LLM vocabulary ({vocab_size})")
    if base_model_name_or_path is not None:
        model = UserLLMForRecommendation.from_base_model(base_model_name_or_path, config, dtype=dtype, **(base_model_kwargs or {}))
    else:
        model = UserLLMForRecommendation(config)
        if dtype is not None:
            model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
            model.upcast_trained_modules()
    return model, processor
