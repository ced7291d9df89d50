"""Knowledge enhancement: prompt, batched generation (seq2seq + causal), cache and resume."""

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from modeling_userllm.features import knowledge_enhancement as ke
from modeling_userllm.features import (
    PAPER_PROMPT,
    build_prompt,
    clean_answer,
    descriptions_from_column,
    generate_descriptions,
    generate_item_descriptions,
    load_description_model,
)

from conftest import SMOLLM2, STORIES260K as STORIES, requires_smollm2  # noqa: E402  (honours USERLLM_SHARED / USERLLM_ASSETS)

TITLES = [
    "Toy Story (1995)",
    "GoldenEye (1995)",
    "Four Rooms (1995)",
    "Copycat (1995)",
    "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)",
]
needs_stories = pytest.mark.skipif(not STORIES.is_dir(), reason=f"real asset not found at {STORIES} (set USERLLM_SHARED)")


@pytest.fixture(scope="module")
def tokenizer():
    if not STORIES.is_dir():
        pytest.skip(f"real asset not found at {STORIES} (set USERLLM_SHARED)")
    return AutoTokenizer.from_pretrained(STORIES)


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny_t5():
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=512, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2,
        num_heads=2, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0,
    )
    return T5ForConditionalGeneration(config).eval()


def test_paper_prompt_puts_title_in_place():
    prompt = build_prompt("Toy Story (1995)")
    assert prompt == (
        "#Question: Generate a concise movie description for the title Toy Story (1995) around "
        "20 words, highlighting the main theme and unique elements. \n#Answer:"
    )
    with pytest.raises(ValueError, match="TargetItemTitle"):
        build_prompt("x", "no placeholder here")


def test_clean_answer_strips_echoed_prompt_and_whitespace():
    prompt = build_prompt("Heat (1995)")
    assert clean_answer(f"{prompt}  A heist\n  thriller. ", prompt) == "A heist thriller."
    assert clean_answer("#Answer: Two rivals.\n") == "Two rivals."


@pytest.mark.parametrize("model_name", ["tiny_t5", "tiny_llama"])
def test_generates_one_clean_description_per_title(model_name, tokenizer, request):
    model = request.getfixturevalue(model_name)
    titles = TITLES[:3] + TITLES[:1]  # a duplicate gets the same description
    out = generate_descriptions(titles, model, tokenizer, batch_size=2, max_new_tokens=6, progress=False)
    assert len(out) == 4 and out[3] == out[0]
    assert all(isinstance(d, str) and d == " ".join(d.split()) for d in out)
    assert all("#Question" not in d for d in out)


@pytest.mark.parametrize("model_name", ["tiny_t5", "tiny_llama"])
def test_batched_generation_equals_one_at_a_time(model_name, tokenizer, request):
    model = request.getfixturevalue(model_name)
    batched = generate_descriptions(TITLES, model, tokenizer, batch_size=4, max_new_tokens=6, progress=False)
    single = generate_descriptions(TITLES, model, tokenizer, batch_size=1, max_new_tokens=6, progress=False)
    assert batched == single


def test_chat_template_wraps_prompt_for_causal_models(tokenizer):
    chat = AutoTokenizer.from_pretrained(STORIES)
    chat.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}{% if add_generation_prompt %}=>{% endif %}"
    ids = ke._prompt_token_ids(["Heat (1995)"], chat, PAPER_PROMPT, decoder_only=True)
    assert chat.decode(ids[0]).startswith("[#Question")
    assert chat.decode(ids[0]).endswith("=>")
    plain = ke._prompt_token_ids(["Heat (1995)"], chat, PAPER_PROMPT, decoder_only=False)
    assert "[" not in chat.decode(plain[0], skip_special_tokens=True)


def _shards(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("model_name", ["tiny_t5", "tiny_llama"])
def test_resumed_run_gives_same_cache_as_uninterrupted(model_name, tokenizer, request, tmp_path, monkeypatch):
    model = request.getfixturevalue(model_name)
    kwargs = dict(batch_size=2, max_new_tokens=4, progress=False, model_id="tiny")
    full = generate_descriptions(TITLES, model, tokenizer, cache_dir=tmp_path / "full", **kwargs)

    real_batch, calls = ke._generate_batch, []

    def interrupted_after_two(*args, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real_batch(*args, **kw)

    monkeypatch.setattr(ke, "_generate_batch", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate_descriptions(TITLES, model, tokenizer, cache_dir=tmp_path / "resumed", **kwargs)
    assert len(list((tmp_path / "resumed").iterdir())) == 2
    monkeypatch.setattr(ke, "_generate_batch", real_batch)
    resumed = generate_descriptions(TITLES, model, tokenizer, cache_dir=tmp_path / "resumed", **kwargs)

    assert resumed == full
    assert _shards(tmp_path / "resumed") == _shards(tmp_path / "full")


def test_second_run_generates_nothing(tiny_llama, tokenizer, tmp_path, monkeypatch):
    kwargs = dict(batch_size=3, max_new_tokens=5, progress=False, cache_dir=tmp_path)
    first = generate_descriptions(TITLES, tiny_llama, tokenizer, **kwargs)

    def fail(*args, **kw):
        raise AssertionError("generation ran although everything was cached")

    monkeypatch.setattr(ke, "_generate_batch", fail)
    assert generate_descriptions(TITLES, tiny_llama, tokenizer, **kwargs) == first


def test_cache_is_keyed_by_prompt_and_model(tiny_llama, tokenizer, tmp_path):
    kwargs = dict(batch_size=4, max_new_tokens=4, progress=False, cache_dir=tmp_path)
    generate_descriptions(TITLES[:2], tiny_llama, tokenizer, model_id="a", **kwargs)
    generate_descriptions(TITLES[:2], tiny_llama, tokenizer, model_id="b", **kwargs)
    other_prompt = "Describe <TargetItemTitle>:"
    generate_descriptions(TITLES[:2], tiny_llama, tokenizer, model_id="a", prompt_template=other_prompt, **kwargs)
    namespaces = [json.loads(p.read_text())["namespace"] for p in sorted(tmp_path.iterdir())]
    assert [(n["model_id"], n["prompt_template"]) for n in namespaces] == [
        ("a", PAPER_PROMPT), ("b", PAPER_PROMPT), ("a", other_prompt)
    ]


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "is not valid JSON"),
    (lambda data: b"\xff" + data, "is not valid JSON"),
    (lambda data: json.dumps({"descriptions": json.loads(data)["descriptions"]}).encode(), "is not of the form"),
    (lambda data: json.dumps({**json.loads(data), "descriptions": ["a list"]}).encode(), "is not of the form"),
])
def test_a_corrupt_cache_shard_is_named(tiny_llama, tokenizer, tmp_path, damage, message):
    kwargs = dict(batch_size=2, max_new_tokens=4, progress=False, cache_dir=tmp_path)
    generate_descriptions(TITLES, tiny_llama, tokenizer, **kwargs)
    shard = sorted(tmp_path.iterdir())[1]
    shard.write_bytes(damage(shard.read_bytes()))
    with pytest.raises(ValueError, match=rf"{re.escape(str(shard))}: this description-cache shard {message}.*delete it"):
        generate_descriptions(TITLES, tiny_llama, tokenizer, **kwargs)


def test_descriptions_from_column_skips_empty_text():
    items = {"item_id": [0, 1, 2], "description": ["A  toy\ncowboy.", None, "  "]}
    assert descriptions_from_column(items) == {0: "A toy cowboy."}


def test_item_descriptions_are_keyed_by_item_id(tiny_llama, tokenizer):
    items = {"item_id": [5, 7], "title": TITLES[:2]}
    out = generate_item_descriptions(items, tiny_llama, tokenizer, max_new_tokens=3, progress=False)
    assert sorted(out) == [5, 7]


@needs_stories
def test_real_stories260k_generates_text():
    model, tokenizer = load_description_model(str(STORIES))
    (out,) = generate_descriptions(["Toy Story (1995)"], model, tokenizer, max_new_tokens=12, progress=False)
    assert len(out.split()) >= 2


@requires_smollm2()
def test_real_smollm2_describes_toy_story():
    model, tokenizer = load_description_model(str(SMOLLM2))
    (out,) = generate_descriptions(["Toy Story (1995)"], model, tokenizer, max_new_tokens=16, progress=False)
    assert "Toy Story" in out or "toy" in out.lower()
    assert not out.startswith("#")
