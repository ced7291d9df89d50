"""Knowledge enhancement (paper Sec. 3.2.1): an LLM writes a short description of each title.

`generate_descriptions`: batched greedy generation with the paper's prompt by a seq2seq model (FLAN-T5, the paper's)
or an instruct causal LM, cached in JSON shards, one per batch, so an interrupted run resumes after its last batch.
A loop over `generate` rather than a pipeline over a `KeyDataset`: transformers 5 has no text2text-generation
pipeline for seq2seq models, and the cache is per batch. `descriptions_from_column`: an existing text column.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..processing_userllm import pad_sequences
from .store import atomic_write_json

TITLE_PLACEHOLDER = "<TargetItemTitle>"
PAPER_PROMPT = (
    "#Question: Generate a concise movie description for the title <TargetItemTitle> around "
    "20 words, highlighting the main theme and unique elements. \n#Answer:"
)
_SHARD_PREFIX = "shard-"


def build_prompt(title: str, prompt_template: str = PAPER_PROMPT) -> str:
    """The knowledge-enhancement prompt of one title: `prompt_template` with it in place of `<TargetItemTitle>`."""
    if TITLE_PLACEHOLDER not in prompt_template:
        raise ValueError(f"prompt_template must contain {TITLE_PLACEHOLDER}")
    return prompt_template.replace(TITLE_PLACEHOLDER, title)


def clean_answer(text: str, prompt: str = "") -> str:
    """A decoded generation on one line, single-spaced, without an echoed `prompt` or a leading `#Answer:`."""
    text = text.strip()
    if prompt and text.startswith(prompt.strip()):
        text = text[len(prompt.strip()) :]
    text = text.strip()
    if text.startswith("#Answer:"):
        text = text[len("#Answer:") :]
    return " ".join(text.split())


def _prompt_token_ids(titles: list[str], tokenizer, prompt_template: str, decoder_only: bool) -> list[list[int]]:
    """Token ids of each title's prompt, via the chat template for a chat decoder-only model."""
    prompts = [build_prompt(t, prompt_template) for t in titles]
    if decoder_only and getattr(tokenizer, "chat_template", None):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                 for p in prompts]
        # The chat template already writes the BOS/turn markers.
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    return tokenizer(prompts)["input_ids"]


@torch.no_grad()
def _generate_batch(titles: list[str], model, tokenizer, prompt_template: str, generation_kwargs: dict[str, Any]) -> list[str]:
    """One batch of descriptions; decoder-only prompts left-padded (each generation follows its own prompt),
    seq2seq ones right-padded as T5 expects."""
    decoder_only = not model.config.is_encoder_decoder
    ids = _prompt_token_ids(titles, tokenizer, prompt_template, decoder_only)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids, attention_mask = pad_sequences(ids, pad_id, left=decoder_only)
    input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, pad_token_id=pad_id, **generation_kwargs)
    # (batch, prompt_len + new) for decoder-only, (batch, new) for seq2seq
    if decoder_only:
        output = output[:, input_ids.shape[1] :]
    texts = tokenizer.batch_decode(output, skip_special_tokens=True)
    return [clean_answer(text, build_prompt(t, prompt_template)) for text, t in zip(texts, titles)]


class DescriptionCache:
    """Generated descriptions in `directory`, one JSON shard `{"namespace": {model id, prompt template, generation
    settings}, "descriptions": {title: description}}` per batch, numbered in write order and written atomically:
    a resumed run writes exactly the shards an uninterrupted one would."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def _shards(self) -> list[Path]:
        return sorted(self.directory.glob(f"{_SHARD_PREFIX}*.json")) if self.directory.is_dir() else []

    def load(self, namespace: dict[str, Any]) -> dict[str, str]:
        """title -> description of one namespace; a `ValueError` names a shard that is not valid JSON or not of the form."""
        entries: dict[str, str] = {}
        for content in map(self._read_shard, self._shards()):
            if content["namespace"] == namespace:
                entries.update(content["descriptions"])
        return entries

    @staticmethod
    def _read_shard(shard: Path) -> dict[str, Any]:
        remedy = "delete it and its descriptions are generated again"
        try:
            content = json.loads(shard.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{shard}: this description-cache shard is not valid JSON ({error}); {remedy}") from error
        if not (isinstance(content, dict) and isinstance(content.get("namespace"), dict)
                and isinstance(content.get("descriptions"), dict)
                and all(isinstance(text, str) for text in content["descriptions"].values())):
            raise ValueError(f"{shard}: this description-cache shard is not of the form "
                             f'{{"namespace": {{...}}, "descriptions": {{title: description}}}}; {remedy}')
        return content

    def write_shard(self, namespace: dict[str, Any], descriptions: dict[str, str]) -> Path:
        """Writes one new shard atomically and returns its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{_SHARD_PREFIX}{len(self._shards()):06d}.json"
        atomic_write_json(path, {"namespace": namespace, "descriptions": descriptions})
        return path


def generate_descriptions(titles: list[str], model, tokenizer, *, prompt_template: str = PAPER_PROMPT, batch_size: int = 8,
                          max_new_tokens: int = 48, generation_kwargs: dict[str, Any] | None = None,
                          cache_dir: str | os.PathLike | None = None, model_id: str | None = None,
                          progress: bool = True) -> list[str]:
    """One cleaned description per title (duplicates generated once), in order.

    Args:
        titles: item titles.
        model: a seq2seq (`config.is_encoder_decoder`) or causal LM, with its `tokenizer` (a chat template
            wraps the prompt of a causal LM).
        prompt_template: a prompt with `<TargetItemTitle>`; the paper's by default.
        batch_size: titles per `generate` call and per cache shard.
        max_new_tokens: most tokens of a description.
        generation_kwargs: extra `generate` arguments (greedy decoding unless overridden).
        cache_dir: folder of cached shards; None: no cache.
        model_id: the model's cache key (default `model.config._name_or_path`).
        progress: a tqdm bar over the batches still to generate.
    """
    generation_kwargs = {"do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens, **(generation_kwargs or {})}
    namespace = {"model_id": model_id or getattr(model.config, "_name_or_path", "") or type(model).__name__,
                 "prompt_template": prompt_template, "generation_kwargs": dict(sorted(generation_kwargs.items()))}
    cache = DescriptionCache(cache_dir) if cache_dir is not None else None
    done = cache.load(namespace) if cache is not None else {}
    todo = [t for t in dict.fromkeys(titles) if t not in done]
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    model.eval()
    for batch in tqdm(batches, desc="knowledge enhancement", unit="batch", disable=not progress):
        generated = dict(zip(batch, _generate_batch(batch, model, tokenizer, prompt_template, generation_kwargs)))
        if cache is not None:
            cache.write_shard(namespace, generated)
        done.update(generated)
    return [done[t] for t in titles]


def generate_item_descriptions(items, model, tokenizer, **kwargs) -> dict[int, str]:
    """item_id -> generated description of an item table (columns `item_id`, `title`); see `generate_descriptions`."""
    descriptions = generate_descriptions(list(items["title"]), model, tokenizer, **kwargs)
    return dict(zip((int(i) for i in items["item_id"]), descriptions))


def descriptions_from_column(items, column: str = "description") -> dict[int, str]:
    """item_id -> whitespace-normalised text of an item table's text `column`, where present and non-empty."""
    return {int(item_id): " ".join(text.split()) for item_id, text in zip(items["item_id"], items[column]) if text and text.strip()}


def load_description_model(name_or_path: str, dtype: torch.dtype = torch.float32):
    """(model in eval mode, tokenizer) of a knowledge-enhancement LLM (hub id or folder), seq2seq or causal by its config."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    config = AutoConfig.from_pretrained(name_or_path)
    model_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = model_class.from_pretrained(name_or_path, dtype=dtype).eval()
    return model, AutoTokenizer.from_pretrained(name_or_path)
