"""The embedded default LLM, built offline: a word-level tokenizer over a corpus (the toy data's texts and
the prompt template) and a tiny random Llama config, so that the demo and the tests run without weights."""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers.processors import TemplateProcessing
from transformers import LlamaConfig, PreTrainedTokenizerFast

from .processing_userllm import ANSWER, COLLABORATIVE_SENTENCE, PREDICTION, QUESTION

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


def build_toy_tokenizer(corpus: Iterable[str], item_noun: str = "movie") -> PreTrainedTokenizerFast:
    """A deterministic word-level tokenizer (lower-cased, punctuation kept as tokens, unseen words `<unk>`)
    over `corpus` and the paper's prompt for `item_noun`; a BOS begins every encoding."""
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
    """A tiny random Llama config (CPU-trainable in seconds); `vocab_size` includes the placeholders, heads are 16 wide."""
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
