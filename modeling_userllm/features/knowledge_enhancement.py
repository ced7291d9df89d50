"""Knowledge enhancement (paper Sec. 3.2.1): an LLM writes a short description of each title.

Two sources of descriptions, so that "title only", "generated description" and "real
overview" can be compared:

- `generate_descriptions` / `generate_item_descriptions`: batched greedy generation with the
  paper's prompt, for a seq2seq model (FLAN-T5, the paper's choice) or an instruct causal LM
  (chat template applied when the tokenizer has one). Results are cached per
  (model id, prompt, generation settings, title) in JSON shards written atomically, one per
  batch, so a second run generates nothing and an interrupted run resumes after its last
  finished batch.
- `descriptions_from_column`: an existing text column of the item table (e.g. TMDB overviews).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

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
    """The knowledge-enhancement prompt for one title.

    Args:
        title: Item title, e.g. "Toy Story (1995)".
        prompt_template: Text containing `<TargetItemTitle>` once.

    Returns:
        The template with the title in place of `<TargetItemTitle>`.
    """
    if TITLE_PLACEHOLDER not in prompt_template:
        raise ValueError(f"prompt_template must contain {TITLE_PLACEHOLDER}")
    return prompt_template.replace(TITLE_PLACEHOLDER, title)


def clean_answer(text: str, prompt: str = "") -> str:
    """Strips an echoed prompt, a leading `#Answer:` and surplus whitespace from a generation.

    Args:
        text: Decoded generated text (special tokens already removed).
        prompt: The prompt the text answers; removed if the model repeated it.

    Returns:
        The answer on one line, single-spaced.
    """
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
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            for p in prompts
        ]
        # The chat template already writes the BOS/turn markers.
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    return tokenizer(prompts)["input_ids"]


@torch.no_grad()
def _generate_batch(
    titles: list[str], model, tokenizer, prompt_template: str, generation_kwargs: dict[str, Any]
) -> list[str]:
    """Greedy-generates one batch of descriptions.

    Decoder-only batches are left-padded so that every row's generation starts right after
    its own prompt; seq2seq encoder inputs are right-padded as T5 expects.
    """
    decoder_only = not model.config.is_encoder_decoder
    ids = _prompt_token_ids(titles, tokenizer, prompt_template, decoder_only)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids, attention_mask = pad_sequences(ids, pad_id, left=decoder_only)
    input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
    output = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, pad_token_id=pad_id, **generation_kwargs
    )  # (batch, prompt_len + new) for decoder-only, (batch, new) for seq2seq
    if decoder_only:
        output = output[:, input_ids.shape[1] :]
    texts = tokenizer.batch_decode(output, skip_special_tokens=True)
    return [clean_answer(text, build_prompt(t, prompt_template)) for text, t in zip(texts, titles)]


class DescriptionCache:
    """Generated descriptions on disk, one JSON shard per generated batch.

    Each shard holds its namespace (model id, prompt template, generation settings) and a
    `{title: description}` map. Shards are numbered in write order and written atomically,
    so an interrupted run leaves only complete shards and a resumed run writes exactly the
    shards the uninterrupted run would have written.

    Args:
        directory: Cache folder; created on first write.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def _shards(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"{_SHARD_PREFIX}*.json"))

    def load(self, namespace: dict[str, Any]) -> dict[str, str]:
        """All cached descriptions of one namespace.

        Returns:
            title -> description.

        Raises:
            ValueError: naming the shard, when a shard is not valid JSON or not of the shard's form.
        """
        entries: dict[str, str] = {}
        for shard in self._shards():
            content = self._read_shard(shard)
            if content["namespace"] == namespace:
                entries.update(content["descriptions"])
        return entries

    @staticmethod
    def _read_shard(shard: Path) -> dict[str, Any]:
        """One shard's `{"namespace": {...}, "descriptions": {title: description}}`, checked."""
        remedy = "delete it and its descriptions are generated again"
        try:
            content = json.loads(shard.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{shard}: this description-cache shard is not valid JSON ({error}); {remedy}") from error
        if not (
            isinstance(content, dict)
            and isinstance(content.get("namespace"), dict)
            and isinstance(content.get("descriptions"), dict)
            and all(isinstance(text, str) for text in content["descriptions"].values())
        ):
            raise ValueError(f"{shard}: this description-cache shard is not of the form "
                             f'{{"namespace": {{...}}, "descriptions": {{title: description}}}}; {remedy}')
        return content

    def write_shard(self, namespace: dict[str, Any], descriptions: dict[str, str]) -> Path:
        """Writes one new shard atomically and returns its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{_SHARD_PREFIX}{len(self._shards()):06d}.json"
        atomic_write_json(path, {"namespace": namespace, "descriptions": descriptions})
        return path


def _model_id(model) -> str:
    return getattr(model.config, "_name_or_path", "") or type(model).__name__


def _unique(titles: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(titles))


def generate_descriptions(
    titles: list[str],
    model,
    tokenizer,
    *,
    prompt_template: str = PAPER_PROMPT,
    batch_size: int = 8,
    max_new_tokens: int = 48,
    generation_kwargs: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    model_id: str | None = None,
    progress: bool = True,
) -> list[str]:
    """Generates a description for every title with the knowledge-enhancement prompt.

    Args:
        titles: Item titles; duplicates are generated once.
        model: A `transformers` seq2seq (`config.is_encoder_decoder`) or causal LM.
        tokenizer: Its tokenizer. A chat template, if present, wraps the prompt (causal only).
        prompt_template: Prompt with `<TargetItemTitle>`; the paper's by default.
        batch_size: Titles per `generate` call (and per cache shard).
        max_new_tokens: Upper bound on each description's length in tokens.
        generation_kwargs: Extra `generate` arguments; greedy decoding unless overridden.
        cache_dir: Folder of cached shards; None disables caching.
        model_id: Cache key of the model; defaults to `model.config._name_or_path`.
        progress: Show a tqdm bar over the batches still to generate.

    Returns:
        One cleaned description per title, in the order of `titles`.
    """
    generation_kwargs = {
        "do_sample": False,
        "num_beams": 1,
        "max_new_tokens": max_new_tokens,
        **(generation_kwargs or {}),
    }
    namespace = {
        "model_id": model_id or _model_id(model),
        "prompt_template": prompt_template,
        "generation_kwargs": dict(sorted(generation_kwargs.items())),
    }
    cache = DescriptionCache(cache_dir) if cache_dir is not None else None
    done = cache.load(namespace) if cache is not None else {}
    todo = [t for t in _unique(titles) if t not in done]
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    model.eval()
    for batch in tqdm(batches, desc="knowledge enhancement", unit="batch", disable=not progress):
        generated = dict(zip(batch, _generate_batch(batch, model, tokenizer, prompt_template, generation_kwargs)))
        if cache is not None:
            cache.write_shard(namespace, generated)
        done.update(generated)
    return [done[t] for t in titles]


def generate_item_descriptions(items, model, tokenizer, **kwargs) -> dict[int, str]:
    """Generated descriptions of an item table, keyed by item id.

    Args:
        items: A `datasets.Dataset` (or any mapping of columns) with `item_id` and `title`.
        model: See `generate_descriptions`.
        tokenizer: See `generate_descriptions`.
        **kwargs: Passed to `generate_descriptions`.

    Returns:
        item_id -> description.
    """
    descriptions = generate_descriptions(list(items["title"]), model, tokenizer, **kwargs)
    return dict(zip((int(i) for i in items["item_id"]), descriptions))


def descriptions_from_column(items, column: str = "description") -> dict[int, str]:
    """Descriptions taken from a text column of the item table (e.g. TMDB overviews).

    Args:
        items: A `datasets.Dataset` (or mapping of columns) with `item_id` and `column`.
        column: The text column.

    Returns:
        item_id -> whitespace-normalised text, for rows whose text is present and non-empty.
    """
    return {
        int(item_id): " ".join(text.split())
        for item_id, text in zip(items["item_id"], items[column])
        if text and text.strip()
    }


def load_description_model(name_or_path: str, dtype: torch.dtype = torch.float32):
    """Loads a knowledge-enhancement LLM and its tokenizer, seq2seq or causal by its config.

    Args:
        name_or_path: Hub id (e.g. "google/flan-t5-xxl") or local folder.
        dtype: Weight dtype (float32 on CPU; bfloat16 fits the paper's models on a GPU).

    Returns:
        (model in eval mode, tokenizer).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    config = AutoConfig.from_pretrained(name_or_path)
    model_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = model_class.from_pretrained(name_or_path, dtype=dtype).eval()
    return model, AutoTokenizer.from_pretrained(name_or_path)
