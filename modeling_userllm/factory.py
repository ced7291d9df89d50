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
    item_noun: str = "movie",
    dtype: torch.dtype | str | None = None,
    base_model_kwargs: dict | None = None,
    **config_kwargs,
) -> tuple[UserLLMForRecommendation, UserLLMProcessor]:
    """A fresh model of one variant around a pretrained LLM (or a random one), and its processor.

    The processor takes its settings from the config (`UserLLMProcessor.from_model_config`), the config its
    placeholder and answer token ids from the processor.

    Args:
        tokenizer: the LLM's tokenizer (placeholder tokens are added to it).
        variant: a key of `VARIANTS`.
        base_model_name_or_path: a pretrained causal LM (Hub id or folder); exclusive with `text_config`.
        text_config: config of a randomly initialised LLM (tests, the toy demo).
        item_noun: the noun the prompt uses for items.
        dtype: dtype of the frozen LLM (what training changes stays float32). None: a pretrained LLM keeps its
            checkpoint's dtype, a random one is float32.
        base_model_kwargs: more arguments for `AutoModelForCausalLM.from_pretrained` (`device_map`, ...).
        **config_kwargs: `UserLLMConfig` arguments (`num_users`, `max_item_tokens`, LoRA, ...).
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    if (base_model_name_or_path is None) == (text_config is None):
        raise ValueError("Pass exactly one of base_model_name_or_path (pretrained LLM) and text_config (random LLM)")
    if base_model_name_or_path is not None:
        text_config = AutoConfig.from_pretrained(base_model_name_or_path)
    config = UserLLMConfig.from_variant(variant, text_config=text_config, **config_kwargs)
    processor = UserLLMProcessor.from_model_config(tokenizer, config, item_noun=item_noun)
    for name, value in processor.model_config_kwargs.items():
        setattr(config, name, value)
    vocab_size = config.text_config.vocab_size
    for name in ("yes_token_id", "no_token_id"):
        if getattr(config, name) >= vocab_size:
            raise ValueError(f"{name}={getattr(config, name)} lies outside the LLM vocabulary ({vocab_size})")
    if base_model_name_or_path is not None:
        return UserLLMForRecommendation.from_base_model(
            base_model_name_or_path, config, dtype=dtype, **(base_model_kwargs or {})), processor
    model = UserLLMForRecommendation(config)
    if dtype is not None:
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        model.upcast_trained_modules()
    return model, processor
