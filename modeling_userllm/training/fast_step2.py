"""A cheaper training step 2 ("encoders") with the same scores and gradients as the plain path.

In step 2 the LLM and its LoRA adapters are frozen; only the UHEM and the projectors train.
Two things then stay constant for the whole step, and are computed once instead of per batch:

- **The constant prompt prefix.** Every prompt starts with the same template text
  (`BOS + "#Question: A user has given high ratings to the following movies: "`) before its
  first user-specific token. Its key/value cache is computed once (no gradient can reach
  it: it holds no placeholder) and expanded to every batch; each row's remaining tokens are
  left-padded between that cache and their first token, so every token keeps the position
  it has in its own prompt (as `modeling_userllm.ranking` does for candidate suffixes). The
  prefix is neither run forward nor backward again (15 of ~105 tokens of a SmolLM2 prompt).
- **The frozen LoRA update.** `W + scale * B @ A` is merged into a copy of each adapted
  weight, so each adapted projection is one matmul instead of three (and no dropout mask
  is drawn). The copies are swapped in only for the fast forward (the model's own weights,
  and so its checkpoints, are never changed) and recomputed when LoRA or the base weights
  change (tensor version counters).

What it does not keep: the plain path in training mode applies LoRA's dropout to the
frozen adapter's input in step 2 too (noise on frozen activations, p = `lora_dropout`); the
fast path runs the frozen LLM without it. With dropout off (eval mode, or `lora_dropout=0`)
the two paths give equal scores and gradients (tests/test_fast_step2.py, 1e-5).

Not done: batching by length. transformers 5 has no `group_by_length`; on the benchmark's
records (and the toy set) the prompts of a batch differ by a few tokens (padding ~4%), as the
UHEM holds the history in one token and the candidate's text is capped by `max_item_tokens`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import nn
from transformers import DynamicCache

from ..processing_userllm import QUESTION, pad_sequences
from .trainer import UserLLMTrainer

logger = logging.getLogger(__name__)


class FrozenLoraMerge:
    """Merged copies `W + scale * B @ A` of every LoRA-adapted weight, swapped in on demand.

    Use `with merger.merged():` around a forward: inside, each adapted `peft` LoRA layer runs
    its base layer alone on the merged weight (peft's own `merged` branch); outside, the
    model is exactly as before. The autograd graph keeps the merged tensors it used, so the
    backward may run after the block has exited.
    """

    def __init__(self, model: nn.Module):
        self.layers = [
            (name, module) for name, module in model.named_modules()
            if isinstance(module, LoraLinear) and not module.merged and not module.disable_adapters
        ]
        self._weights: dict[str, torch.Tensor] = {}
        self._versions: tuple | None = None

    def _current_versions(self) -> tuple:
        return tuple(
            param._version for _, layer in self.layers
            for param in (layer.base_layer.weight, *layer.lora_A.parameters(), *layer.lora_B.parameters())
        )

    def refresh(self) -> bool:
        """Recomputes the merged weights if any adapted weight changed; True when it did."""
        versions = self._current_versions()
        if versions == self._versions:
            return False
        with torch.no_grad():
            for name, layer in self.layers:
                weight = layer.base_layer.weight
                delta = torch.zeros_like(weight, dtype=torch.float32)
                for adapter in layer.active_adapters:
                    if adapter not in layer.lora_A:
                        continue
                    if adapter in layer.lora_variant:
                        raise ValueError(f"{name}: LoRA variant {type(layer.lora_variant[adapter]).__name__} is not supported by the fast step 2")
                    delta += layer.get_delta_weight(adapter).float()
                self._weights[name] = (weight.float() + delta).to(weight.dtype)
        self._versions = versions
        return True

    class _Swap:
        def __init__(self, merger: "FrozenLoraMerge"):
            self.merger = merger
            self.saved = []

        def __enter__(self):
            for name, layer in self.merger.layers:
                base = layer.base_layer
                self.saved.append((layer, base, base.weight, list(layer.merged_adapters)))
                base.weight = nn.Parameter(self.merger._weights[name], requires_grad=False)
                layer.merged_adapters = list(layer.active_adapters)  # peft then runs the base layer alone
            return self

        def __exit__(self, *exc):
            for layer, base, weight, merged_adapters in reversed(self.saved):
                base.weight = weight
                layer.merged_adapters = merged_adapters
            self.saved.clear()
            return False

    def merged(self) -> "FrozenLoraMerge._Swap":
        self.refresh()
        return self._Swap(self)


class Step2PrefixCache:
    """Scores step-2 batches on a key/value cache of the prompts' constant prefix.

    Args:
        model: the (unwrapped) `UserLLMForRecommendation`, LoRA frozen.
        processor: its `UserLLMProcessor`.
        merge_lora: run the frozen LoRA merged into the weights (see `FrozenLoraMerge`).
    """

    def __init__(self, model, processor, merge_lora: bool = True):
        self.model = model
        self.processor = processor
        self.merger = FrozenLoraMerge(model) if merge_lora else None
        # The template's text before the first user-specific token. Its tokenization may merge
        # its last piece with what follows, so each batch keeps the longest common prefix.
        self.template_ids = processor._bos_ids() + processor._tokens(QUESTION.format(noun=processor.item_noun))
        placeholders = set(model.config.placeholder_token_ids)
        cut = next((i for i, token in enumerate(self.template_ids) if token in placeholders), len(self.template_ids))
        self.template_ids = self.template_ids[:cut]
        self._caches: dict[tuple[int, ...], tuple] = {}
        self._cache_versions = None

    def prefix_length(self, rows: Sequence[list[int]]) -> int:
        """Tokens every row shares with the template's constant start."""
        length = len(self.template_ids)
        for row in rows:
            common = 0
            while common < min(length, len(row)) and row[common] == self.template_ids[common]:
                common += 1
            length = common
        # Keep one token at least after the prefix: the score is read at the last position.
        return min(length, min(len(row) for row in rows) - 1)

    @torch.no_grad()
    def _prefix_cache(self, prefix: tuple[int, ...]) -> tuple:
        versions = self.merger._versions if self.merger is not None else None
        if versions != self._cache_versions:
            self._caches.clear()
            self._cache_versions = versions
        if prefix not in self._caches:
            model = self.model
            input_ids = torch.tensor([prefix], device=model.device)
            was_training = model.training
            model.eval()  # no LoRA dropout in a cache used for the whole step
            try:
                output = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=True)
            finally:
                model.train(was_training)
            self._caches[prefix] = tuple((keys, values) for keys, values, *_ in output.cache)
        return self._caches[prefix]

    def __call__(self, inputs: dict):
        """The model's output (loss, logits, probabilities) for a processor batch, on the prefix cache."""
        if self.merger is not None:
            self.merger.refresh()
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]
        prefix_len = self.prefix_length(rows)
        if prefix_len <= 0:
            return self._forward(inputs, None)
        if self.merger is not None:
            with self.merger.merged():
                prefix_cache = self._prefix_cache(tuple(rows[0][:prefix_len]))
        else:
            prefix_cache = self._prefix_cache(tuple(rows[0][:prefix_len]))
        batch_size = len(rows)
        suffix_ids, suffix_mask = pad_sequences([row[prefix_len:] for row in rows], self.processor.pad_token_id, left=True)
        device = input_ids.device
        cache = DynamicCache(
            [(keys.expand(batch_size, -1, -1, -1), values.expand(batch_size, -1, -1, -1)) for keys, values in prefix_cache]
        )
        suffix_inputs = {
            **inputs,
            "input_ids": suffix_ids.to(device),
            "attention_mask": torch.cat([torch.ones(batch_size, prefix_len, dtype=torch.long), suffix_mask], dim=1).to(device),
        }
        return self._forward(suffix_inputs, cache)

    def _forward(self, inputs: dict, cache):
        extra = {"cache": cache, "use_cache": True} if cache is not None else {}
        if self.merger is not None:
            with self.merger.merged():
                output = self.model(**inputs, **extra)
        else:
            output = self.model(**inputs, **extra)
        output.cache = None  # the cache holds the batch's keys and values: do not keep them
        return output


class FastStep2Trainer(UserLLMTrainer):
    """`UserLLMTrainer` whose training forward of step 2 runs on `Step2PrefixCache`.

    Evaluation and prediction use the plain path. Under several processes (a wrapped model)
    the plain path is used throughout, as the fast one would bypass the wrapper's hooks.

    Args:
        merge_lora: see `Step2PrefixCache`.
        *args, **kwargs: as for `UserLLMTrainer`.
    """

    def __init__(self, *args, merge_lora: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.merge_lora = merge_lora
        self._fast = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        unwrapped = self.accelerator.unwrap_model(model)
        if not model.training or unwrapped is not model:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self._fast is None:
            self._fast = Step2PrefixCache(unwrapped, self.processing_class, merge_lora=self.merge_lora)
        outputs = self._fast(inputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss


__all__ = ["FastStep2Trainer", "FrozenLoraMerge", "Step2PrefixCache"]
