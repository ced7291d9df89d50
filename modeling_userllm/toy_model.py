"""The embedded default LLM: a tiny random Llama and a word-level tokenizer built offline.

A fresh machine has no LLM weights and no network, yet the demo and the tests must run
end to end. This module builds, from a text corpus (the toy data's titles and descriptions
plus the prompt template), a tokenizer that loads with `AutoTokenizer` and a tiny Llama
config of matching vocabulary size. Real runs pass a pretrained LLM instead.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers.processors import TemplateProcessing
from transformers import LlamaConfig, PreTrainedTokenizerFast

from .processing_userllm import ANSWER, COLLABORATIVE_SENTENCE, PREDICTION, QUESTION

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


def build_toy_tokenizer(corpus: Iterable[str], item_noun: str = "movie") -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the words of `corpus` and of the paper's prompt.

    Words are split on whitespace and punctuation (kept as tokens), lower-cased; anything
    unseen maps to `<unk>`. Deterministic: the vocabulary is sorted.

    Args:
        corpus: texts the tokenizer must cover (titles, descriptions).
        item_noun: the noun the prompt uses for items.

    Returns:
        A `PreTrainedTokenizerFast` with `<unk>`, `<s>`, `</s>`, `<pad>` and a BOS added to
        every encoding.
    """
    pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    normalizer = normalizers.Lowercase()
    template = [QUESTION.format(noun=item_noun), COLLABORATIVE_SENTENCE, PREDICTION.format(noun=item_noun), ANSWER]
    words = set()
    for text in [*template, " with the feature ", "Yes No , .", *corpus]:
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS.values())}
    for word in sorted(words):
        vocab.setdefault(word, len(vocab))

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    backend.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def tiny_llama_config(vocab_size: int, hidden_size: int = 64, num_layers: int = 2, **kwargs) -> LlamaConfig:
    """A tiny random Llama config (CPU-trainable in seconds), room left for the placeholders.

    Args:
        vocab_size: the tokenizer's size including added placeholder tokens.
        hidden_size: model width; heads of 16 dimensions.
        num_layers: decoder layers.
    """
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 16),
        num_key_value_heads=max(1, hidden_size // 32),
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        **kwargs,
    )
