"""A cheaper training step 2 ("encoders"): what stays constant for the whole step is computed once.

- The constant prompt prefix (`BOS + "#Question: A user has given high ratings to the following movies: "`):
  its key/value cache is computed once (no gradient reaches it) and expanded to every batch; each row's other
  tokens are left-padded between that cache and their first token, so every token keeps its position (as
  `modeling_userllm.ranking` does for candidate suffixes).
- Each row's text between that prefix and its first placeholder (CoLLM: all the history titles, up to `<UserID>`;
  CoLLM-VA and USER-LLM w/o UHEM: the first title) is encoded without gradient, for the same reason, and appended
  to the batch's cache: the backward pass runs over the tokens from the first placeholder on.
- The frozen LoRA, merged into the base weights with peft's `merge()` for the step (`frozen_lora_merged`): one
  matmul per adapted projection, no dropout mask; checkpoints and the end of the step see the base weights
  restored bit for bit.

So the fast path runs without LoRA dropout; with dropout off it gives the plain path's scores and gradients
(tests/test_fast_step2.py, 1e-5). Batches are not grouped by length: transformers' `LengthGroupedSampler` reads a
`length` column or each item's `input_ids`, which records have not, and a batch's prompts differ by a few tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager

import torch
from peft.tuners.lora import LoraLayer
from transformers import DynamicCache

from ..processing_userllm import QUESTION, pad_sequences
from .trainer import UserLLMTrainer


@contextmanager
def frozen_lora_merged(model: torch.nn.Module):
    """Merges every LoRA adapter of `model` into its base weight (peft's `merge()`) inside the block, where backward
    passes must run. On exit peft's `unmerge()` runs and the base weights get their original values back exactly
    (unmerging rounds, in bfloat16 by a unit in the last place). Raises `ValueError` when LoRA is trainable."""
    layers = [module for module in model.modules() if isinstance(module, LoraLayer) and not module.merged]
    trainable = [name for name, param in model.named_parameters() if "lora_" in name and param.requires_grad]
    if trainable:
        raise ValueError(f"frozen_lora_merged: LoRA trains in this step ({trainable[0]} requires grad)")
    originals = [layer.get_base_layer().weight.detach().clone() for layer in layers]
    for layer in layers:
        layer.merge()
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, original in zip(layers, originals):
                layer.unmerge()
                layer.get_base_layer().weight.copy_(original)


class Step2PrefixCache:
    """Scores step-2 batches of the (unwrapped, LoRA frozen) `model` on a key/value cache of the prompts' constant
    prefix, recomputed when a weight of the LLM changes."""

    def __init__(self, model, processor, frozen_text: bool = True):
        self.model = model
        self.processor = processor
        self.frozen_text = frozen_text  # False: only the constant prefix is cached (benchmarks/step2_speed.py compares)
        # The template's text before the first placeholder. Its last piece may merge with what follows when
        # tokenized, so each batch keeps the longest prefix its rows share.
        template_ids = processor._bos_ids() + processor._tokens(QUESTION.format(noun=processor.item_noun))
        placeholders = set(model.config.placeholder_token_ids)
        cut = next((i for i, token in enumerate(template_ids) if token in placeholders), len(template_ids))
        self.template_ids = template_ids[:cut]
        self.placeholders = placeholders
        self._caches: dict[tuple[int, ...], tuple] = {}
        self._weight_versions = None

    def prefix_length(self, rows: Sequence[list[int]]) -> int:
        """Tokens every row shares with the template's constant start, one at least left after it."""
        return min(len(os.path.commonprefix([self.template_ids, *rows])), min(len(row) for row in rows) - 1)

    @torch.no_grad()
    def _prefix_cache(self, prefix: tuple[int, ...]) -> tuple:
        versions = tuple(param._version for param in self.model.language_model.parameters())
        if versions != self._weight_versions:
            self._caches.clear()
            self._weight_versions = versions
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

    def frozen_lengths(self, rows: Sequence[list[int]], prefix_len: int) -> list[int]:
        """Per row, the tokens after the shared prefix and before its first placeholder (one token at least left):
        with the LLM frozen, nothing trained reaches their keys and values."""
        if not self.frozen_text:
            return [0] * len(rows)
        return [next((i for i in range(prefix_len, len(row)) if row[i] in self.placeholders), len(row) - 1) - prefix_len
                for row in rows]

    def __call__(self, inputs: dict):
        """The model's output (loss, logits, probabilities) for a processor batch, on the prefix cache; each row's
        text up to its first placeholder (CoLLM's history titles) is encoded without gradient, so the backward pass
        runs over the tokens from there on only."""
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]
        prefix_len = self.prefix_length(rows)
        if prefix_len == 0:
            output = self.model(**inputs)
        else:
            batch_size, device, pad_id = len(rows), input_ids.device, self.processor.pad_token_id
            cache = DynamicCache([(keys.expand(batch_size, -1, -1, -1), values.expand(batch_size, -1, -1, -1))
                                  for keys, values in self._prefix_cache(tuple(rows[0][:prefix_len]))])
            mask = torch.ones(batch_size, prefix_len, dtype=torch.long, device=device)
            frozen = self.frozen_lengths(rows, prefix_len)
            if any(frozen):
                frozen_ids, frozen_mask = pad_sequences([row[prefix_len:prefix_len + n] for row, n in zip(rows, frozen)],
                                                        pad_id, left=True)
                mask = torch.cat([mask, frozen_mask.to(device)], dim=1)
                with torch.no_grad():
                    self.model.model(input_ids=frozen_ids.to(device), attention_mask=mask, cache=cache, use_cache=True)
            suffix_ids, suffix_mask = pad_sequences([row[prefix_len + n:] for row, n in zip(rows, frozen)], pad_id, left=True)
            output = self.model(**{**inputs, "input_ids": suffix_ids.to(device),
                                   "attention_mask": torch.cat([mask, suffix_mask.to(device)], dim=1)},
                                cache=cache, use_cache=True)
        output.cache = None  # the batch's keys and values: not kept
        return output


class FastStep2Trainer(UserLLMTrainer):
    """`UserLLMTrainer` whose step-2 training forward runs on `Step2PrefixCache` with the frozen LoRA merged.

    The merge starts at the first training batch (after a checkpoint is resumed) and is undone before every save
    and at the end of `train`. Evaluation, and training under several processes (a wrapped model), use the plain path.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fast = None
        self._merged: ExitStack | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        unwrapped = self.accelerator.unwrap_model(model)
        if not model.training or unwrapped is not model:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self._fast is None:
            self._fast = Step2PrefixCache(unwrapped, self.processing_class)
        if self._merged is None:
            self._merged = ExitStack()
            self._merged.enter_context(frozen_lora_merged(unwrapped))
        outputs = self._fast(inputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _unmerge(self) -> None:
        if self._merged is not None:
            self._merged.close()
            self._merged = None

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        self._unmerge()
        super()._save(output_dir, state_dict)

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            self._unmerge()

