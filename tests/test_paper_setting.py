"""The paper's setting end to end: sentencepiece / BPE prompts, float32 trained weights under a
bfloat16 LLM, whole item texts, safe loading, light saving of a gathered state dict."""

import json
import logging
import time

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, TrainingArguments

from conftest import NUM_ITEMS, NUM_USERS, SMOLLM2, STORIES260K, build_tiny_model, make_records, perturb_lora, requires_shared, requires_smollm2
from modeling_userllm import UserLLMConfig, UserLLMForRecommendation, UserLLMProcessor, create_model_and_processor
from modeling_userllm.configuration_userllm import VARIANTS
from modeling_userllm.training.arguments import PresetError, parse_arguments
from modeling_userllm.training.trainer import UserLLMTrainer

# The paper's prompts (Appendix) with the values of RECORD filled in, written out by hand.
HEAD = "#Question: A user has given high ratings to the following movies: "
COLLAB = "Additionally, we have information about the user's preferences encoded in the feature <UserID>. "
ASK = "Using all available information, make a prediction about whether the user would enjoy the movie titled "
END = '? Answer with "Yes" or "No". \n#Answer:'
PAPER_PROMPTS = {
    "tallrec": HEAD + '"Heat (1995)", "Up (2009)". ' + ASK + '"Toy Story (1995)"' + END,
    "collm": HEAD + '"Heat (1995)", "Up (2009)". ' + COLLAB + ASK + '"Toy Story (1995)" with the feature <ItemID>' + END,
    "collm_va": HEAD + '"Heat (1995)"<Image>, "Up (2009)". ' + COLLAB + ASK
    + '"Toy Story (1995)"<Image> with the feature <ItemID>' + END,
    "userllm_no_uhem": HEAD + '"Heat (1995)" (A detective hunts a thief in Los Angeles.)<Image>, "Up (2009)". ' + COLLAB
    + ASK + '"Toy Story (1995)" (A cowboy doll feels threatened by a new space toy.)<Image> with the feature <ItemID>' + END,
    "userllm": HEAD + "<HistoryInteractions>. " + COLLAB + ASK
    + '"Toy Story (1995)" (A cowboy doll feels threatened by a new space toy.)<Image> with the feature <ItemID>' + END,
}
RECORD = {
    "user_id": 1,
    "item_id": 2,
    "title": "Toy Story (1995)",
    "description": "A cowboy doll feels threatened by a new space toy.",
    "image_features": [0.5] * 384,
    "history": [
        {"item_id": 3, "title": "Heat (1995)", "description": "A detective hunts a thief in Los Angeles.", "image_features": [0.1] * 384},
        {"item_id": 4, "title": "Up (2009)", "description": None, "image_features": None},
    ],
}
REAL_TOKENIZERS = [
    pytest.param(STORIES260K, marks=requires_shared(STORIES260K), id="stories260k-sentencepiece"),
    pytest.param(SMOLLM2, marks=requires_smollm2(), id="smollm2-bpe"),
]


def _decode_without_bos(tokenizer, ids: list[int]) -> str:
    if ids and ids[0] == tokenizer.bos_token_id:
        ids = ids[1:]
    return tokenizer.decode(ids, skip_special_tokens=False)


@pytest.mark.parametrize("path", REAL_TOKENIZERS)
@pytest.mark.parametrize("variant", sorted(PAPER_PROMPTS))
def test_decoded_prompt_is_the_papers_text(path, variant):
    tokenizer = AutoTokenizer.from_pretrained(path)
    processor = UserLLMProcessor(tokenizer, **VARIANTS[variant], max_item_tokens=128)
    ids = processor([RECORD])["input_ids"][0].tolist()
    assert _decode_without_bos(tokenizer, ids) == PAPER_PROMPTS[variant]


@pytest.mark.parametrize("path", REAL_TOKENIZERS)
@pytest.mark.parametrize("variant", ["collm_va", "userllm"])
def test_real_tokenizer_prompt_splits_into_a_shared_prefix_and_the_candidates_part(path, variant):
    tokenizer = AutoTokenizer.from_pretrained(path)
    processor = UserLLMProcessor(tokenizer, **VARIANTS[variant], max_item_tokens=128)
    other = {**RECORD, "item_id": 5, "title": "Casino (1995)", "description": "Greed in Las Vegas.", "image_features": None}
    splits = [processor.split_prompt(record) for record in (RECORD, other)]
    assert splits[0]["prefix_ids"] == splits[1]["prefix_ids"]
    for record, split in zip((RECORD, other), splits):
        assert split["prefix_ids"] + split["suffix_ids"] == processor([record])["input_ids"][0].tolist()
        # (a sentencepiece decoder drops the leading space of what it decodes)
        assert _decode_without_bos(tokenizer, split["suffix_ids"]).lstrip().startswith(f'"{record["title"]}"')


@requires_shared(STORIES260K)
def test_long_item_text_is_cut_at_a_word_boundary_and_counted(caplog):
    tokenizer = AutoTokenizer.from_pretrained(STORIES260K)
    processor = UserLLMProcessor(tokenizer, max_item_tokens=40)
    item = {"title": "Toy Story (1995)", "description": "A cowboy doll feels threatened by a new space toy in the room."}
    with caplog.at_level(logging.WARNING):
        text = processor.item_text(item)
    assert len(tokenizer(text, add_special_tokens=False).input_ids) <= 40
    assert text.startswith('"Toy Story (1995)" (') and text.endswith(")")
    kept_words = text[len('"Toy Story (1995)" ('):-1].split()
    assert kept_words and kept_words == item["description"].split()[: len(kept_words)] and len(kept_words) < 13
    assert processor.num_truncated_item_texts == 1 and "cut at a word boundary" in caplog.text
    processor.item_text(item)  # cached: counted once
    assert processor.num_truncated_item_texts == 1


def test_a_title_alone_over_the_budget_is_cut_to_whole_words(tiny_tokenizer):
    _, processor = build_tiny_model(tiny_tokenizer, max_item_tokens=3)
    text = processor.item_text({"title": "Toy Story (1995)", "description": "a cowboy doll"})
    assert text == '"Toy"'


@requires_smollm2()
def test_default_budget_keeps_a_title_and_a_knowledge_enhanced_description_whole():
    # The longest kind of SmolLM2 description seen on ml-100k (39 words; benchmarks/item_text_budget.py).
    description = ("Joy Luck Club: A story of love, loss, and the power of a single moment can be a powerful narrative "
                   "to explore. The movie is a poignant exploration of the human experience, with themes of "
                   "redemption, forgiveness, and the enduring")
    processor = UserLLMProcessor(AutoTokenizer.from_pretrained(SMOLLM2))
    text = processor.item_text({"title": "Joy Luck Club, The (1993)", "description": description})
    assert text == f'"Joy Luck Club, The (1993)" ({description})' and processor.num_truncated_item_texts == 0


@pytest.mark.parametrize("field, value, message", [
    ("title", "Heat <Image>", r"record 0: field 'title' contains the placeholder <Image>"),
    ("description", 5, r"record 0: field 'description' must be a string or None, got int"),
])
def test_item_texts_that_would_break_the_prompt_are_refused(tiny_tokenizer, field, value, message):
    _, processor = build_tiny_model(tiny_tokenizer)
    record = {**make_records(1)[0], field: value}
    with pytest.raises(ValueError, match=message):
        processor([record])


# ----------------------------------------------------------------------------- bfloat16


@requires_shared(STORIES260K)
@pytest.mark.parametrize("step", ["lora", "encoders"])
def test_bfloat16_base_trains_float32_weights_and_every_update_lands(step):
    tokenizer = AutoTokenizer.from_pretrained(STORIES260K)
    torch.manual_seed(0)
    model, processor = create_model_and_processor(
        tokenizer, "userllm", base_model_name_or_path=str(STORIES260K), num_users=NUM_USERS, num_items=NUM_ITEMS,
        dtype=torch.bfloat16,
    )
    model.load_collaborative_embeddings(torch.randn(NUM_USERS, 256), torch.randn(NUM_ITEMS, 256))
    perturb_lora(model)  # lora_B = 0 would leave lora_A without gradient in step 1
    model.train()
    model.set_training_step(step)
    trainable = {name: param for name, param in model.named_parameters() if param.requires_grad}
    assert trainable and {param.dtype for param in trainable.values()} == {torch.float32}
    frozen_llm = [param for name, param in model.language_model.named_parameters() if "lora_" not in name]
    assert {param.dtype for param in frozen_llm} == {torch.bfloat16}
    before = {name: param.detach().clone() for name, param in trainable.items()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**processor(make_records(4), text_only=step == "lora")).loss
    loss.backward()
    optimizer.step()
    checked = 0
    for name, param in trainable.items():
        has_gradient = param.grad != 0
        checked += int(has_gradient.sum())
        assert (param.detach() != before[name])[has_gradient].all(), f"{name}: an update was lost"
    assert checked > 1000
    assert {param.dtype for param in frozen_llm} == {torch.bfloat16}


def test_float16_training_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(PresetError, match="float16.*bfloat16"):
        parse_arguments(["--dtype", "float16", "--output_dir", str(tmp_path)])


@requires_shared(STORIES260K)
def test_full_checkpoint_reloaded_in_bfloat16_keeps_trained_weights_in_float32(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(STORIES260K)
    model, _ = create_model_and_processor(tokenizer, "userllm", base_model_name_or_path=str(STORIES260K),
                                          num_users=NUM_USERS, num_items=NUM_ITEMS)
    perturb_lora(model)
    with torch.no_grad():
        model.history_encoder.no_history_embedding.add_(1e-4)  # not representable next to 1.0 in bfloat16
    model.save_pretrained(tmp_path)
    reloaded = UserLLMForRecommendation.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert reloaded.get_input_embeddings().weight.dtype == torch.bfloat16
    for name, param in model.named_parameters():
        if name in set(reloaded.trained_parameter_names()) and "embeddings.weight" not in name:
            assert reloaded.get_parameter(name).dtype == torch.float32, name
            torch.testing.assert_close(reloaded.get_parameter(name), param, rtol=0, atol=0)


# ----------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def saved_checkpoints(tmp_path_factory):
    """A USER-LLM on stories260k saved full and light."""
    if not STORIES260K.exists():
        pytest.skip(f"real asset not found at {STORIES260K} (set USERLLM_SHARED)")
    root = tmp_path_factory.mktemp("checkpoints")
    tokenizer = AutoTokenizer.from_pretrained(STORIES260K)
    model, processor = create_model_and_processor(tokenizer, "userllm", base_model_name_or_path=str(STORIES260K),
                                                  num_users=NUM_USERS, num_items=NUM_ITEMS)
    perturb_lora(model)
    for form in ("full", "light"):
        model.save_pretrained(root / form, light=form == "light")
        processor.save_pretrained(root / form)
    return root


def _rewrite_weights(folder, edit) -> None:
    path = folder / "model.safetensors"
    state = load_file(path)
    edit(state)
    save_file(state, path, metadata={"format": "pt"})


@pytest.mark.parametrize("form, edit, message", [
    ("light", lambda s: s.pop(next(k for k in sorted(s) if "lora_A" in k)), r"1 weights missing from the checkpoint \(model\.language_model\.model\.layers\.0\.self_attn\.q_proj\.lora_A"),
    ("light", lambda s: s.update({"model.history_encoder.extra": torch.zeros(1)}), r"1 weights not in the model \(model\.history_encoder\.extra\)"),
    ("full", lambda s: s.pop("model.language_model.model.norm.weight"), r"missing from the checkpoint \(model\.language_model\.model\.norm\.weight\)"),
])
def test_a_checkpoint_with_missing_or_unexpected_weights_raises_naming_them(saved_checkpoints, tmp_path, form, edit, message):
    import shutil

    folder = tmp_path / form
    shutil.copytree(saved_checkpoints / form, folder)
    _rewrite_weights(folder, edit)
    with pytest.raises(ValueError, match=message):
        UserLLMForRecommendation.from_pretrained(folder)


@requires_shared(STORIES260K)
def test_a_base_llm_missing_a_weight_is_refused_naming_it(tmp_path):
    import shutil

    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(STORIES260K / name, tmp_path / name)
    state = load_file(STORIES260K / "model.safetensors")
    state.pop("model.norm.weight")
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"base LLM .* missing from the checkpoint \(model\.norm\.weight\)"):
        create_model_and_processor(AutoTokenizer.from_pretrained(tmp_path), "tallrec", base_model_name_or_path=str(tmp_path))


@pytest.mark.parametrize("form", ["full", "light"])
def test_a_truncated_weights_file_is_named_in_the_error(saved_checkpoints, tmp_path, form):
    import shutil

    folder = tmp_path / form
    shutil.copytree(saved_checkpoints / form, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match=rf"{form}.*(truncated or corrupt|model.safetensors)"):
        UserLLMForRecommendation.from_pretrained(folder)


def test_light_checkpoint_reloads_its_llm_in_the_dtype_it_ran_in(tmp_path):
    """A base stored in bfloat16 (as SmolLM2 and Vicuna are) and run in float32 comes back in float32
    (transformers 5 alone would load the base's stored bfloat16), scoring as before the save."""
    from transformers import LlamaForCausalLM

    from conftest import DESCRIPTIONS, TITLES
    from modeling_userllm.toy_model import build_toy_tokenizer, tiny_llama_config

    tokenizer = build_toy_tokenizer(TITLES + DESCRIPTIONS)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(len(tokenizer), hidden_size=32)).to(torch.bfloat16).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    model, processor = create_model_and_processor(tokenizer, "userllm", base_model_name_or_path=str(tmp_path / "base"),
                                                  num_users=NUM_USERS, num_items=NUM_ITEMS, dtype=torch.float32)
    perturb_lora(model)
    model.eval()
    records = make_records(4, history_length=3)
    with torch.no_grad():
        expected = model(**processor(records)).logits
    model.save_pretrained(tmp_path / "light", light=True)
    reloaded = UserLLMForRecommendation.from_pretrained(tmp_path / "light")
    assert reloaded.get_input_embeddings().weight.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**processor(records)).logits, expected, rtol=0, atol=1e-5)
    asked = UserLLMForRecommendation.from_pretrained(tmp_path / "light", dtype=torch.bfloat16)
    assert asked.get_input_embeddings().weight.dtype == torch.bfloat16


def test_light_checkpoint_loads_its_base_through_the_causal_lm_loader(saved_checkpoints, monkeypatch):
    from transformers import AutoModelForCausalLM

    calls = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, name, *args, **kwargs):
        calls.append((str(name), kwargs.get("dtype")))
        return original(cls, name, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    model = UserLLMForRecommendation.from_pretrained(saved_checkpoints / "light", dtype=torch.bfloat16)
    assert calls == [(str(STORIES260K), torch.bfloat16)]
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.history_encoder.gru.weight_hh_l0.dtype == torch.float32


@requires_shared(STORIES260K)
def test_a_plain_llm_folder_is_refused_within_seconds():
    start = time.perf_counter()
    with pytest.raises(ValueError, match="is not a USER-LLM checkpoint: its config.json has model_type 'llama'"):
        UserLLMForRecommendation.from_pretrained(STORIES260K)
    with pytest.raises(ValueError, match="is not a USER-LLM checkpoint"):
        UserLLMConfig.from_pretrained(STORIES260K)
    assert time.perf_counter() - start < 10


def _copy_base_llm(folder, edit=None):
    """stories260k copied to `folder`, its weights passed through `edit` (another LLM of the same shape)."""
    import shutil

    shutil.copytree(STORIES260K, folder)
    if edit is not None:
        _rewrite_weights(folder, edit)
    return folder


def _edit_config(folder, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _scores(model, records, processor_folder):
    processor = UserLLMProcessor.from_pretrained(processor_folder)
    with torch.no_grad():
        return model.eval()(**processor(records)).logits


def _fine_tuned(state):
    """Every weight moved a little, as a fine-tune of the same LLM would move them."""
    generator = torch.Generator().manual_seed(0)
    for name, tensor in state.items():
        state[name] = tensor + 0.01 * tensor.std() * torch.randn(tensor.shape, generator=generator)


def test_light_checkpoint_on_another_base_of_the_same_shape_is_refused_naming_both_fingerprints(saved_checkpoints, tmp_path, caplog):
    other = _copy_base_llm(tmp_path / "other-base", _fine_tuned)
    recorded = json.loads((saved_checkpoints / "light" / "config.json").read_text())["base_model_fingerprint"]
    assert recorded["dtype"] == "float32" and recorded["tensors"] > 0
    with pytest.raises(ValueError, match=rf"not the one the light checkpoint .* fingerprint is [0-9a-f]{{16}}, "
                                         rf"config.base_model_fingerprint records {recorded['digest']}.*ignore_base_mismatch=True"):
        UserLLMForRecommendation.from_pretrained(saved_checkpoints / "light", base_model_name_or_path=str(other))
    with caplog.at_level(logging.WARNING):
        model = UserLLMForRecommendation.from_pretrained(saved_checkpoints / "light", base_model_name_or_path=str(other),
                                                         ignore_base_mismatch=True)
    assert "Loading anyway (ignore_base_mismatch=True)" in caplog.text
    assert model.config.base_model_name_or_path == str(other)


def test_light_checkpoint_on_its_own_base_in_another_dtype_loads(saved_checkpoints, caplog):
    """Recorded in float32, the fingerprint cannot be compared on a base loaded in bfloat16: a warning, not an error."""
    with caplog.at_level(logging.WARNING):
        UserLLMForRecommendation.from_pretrained(saved_checkpoints / "light", dtype=torch.bfloat16)
    assert "Could not check the base LLM" in caplog.text and "dtype='float32'" in caplog.text


def test_light_checkpoint_saved_without_a_fingerprint_loads_with_a_warning(saved_checkpoints, tmp_path, caplog):
    import shutil

    folder = tmp_path / "old-light"
    shutil.copytree(saved_checkpoints / "light", folder)
    _edit_config(folder, base_model_fingerprint=None)
    records = make_records(2)
    with caplog.at_level(logging.WARNING):
        model = UserLLMForRecommendation.from_pretrained(folder)
    assert "records no fingerprint of its base LLM" in caplog.text
    reference = UserLLMForRecommendation.from_pretrained(saved_checkpoints / "light")
    torch.testing.assert_close(_scores(model, records, folder), _scores(reference, records, folder), rtol=0, atol=0)


def test_light_checkpoint_whose_base_moved_names_it_and_loads_from_where_it_is_now(tmp_path):
    from transformers import AutoModel

    base = _copy_base_llm(tmp_path / "base")
    model, processor = create_model_and_processor(AutoTokenizer.from_pretrained(base), "userllm", base_model_name_or_path=str(base),
                                                  num_users=NUM_USERS, num_items=NUM_ITEMS)
    perturb_lora(model)
    model.save_pretrained(tmp_path / "light", light=True)
    processor.save_pretrained(tmp_path / "light")
    records = make_records(2)
    expected = _scores(model, records, tmp_path / "light")
    moved = base.rename(tmp_path / "moved-base")
    with pytest.raises(OSError, match=rf"base LLM named in the config .* \(base_model_name_or_path='{base}'\) was not found: "
                                      r"no such folder\. Pass .*base_model_name_or_path=\.\.\."):
        UserLLMForRecommendation.from_pretrained(tmp_path / "light")
    reloaded = UserLLMForRecommendation.from_pretrained(tmp_path / "light", base_model_name_or_path=str(moved))
    torch.testing.assert_close(_scores(reloaded, records, tmp_path / "light"), expected, rtol=0, atol=1e-5)
    by_auto_class = AutoModel.from_pretrained(tmp_path / "light", trust_remote_code=True, base_model_name_or_path=str(moved))
    torch.testing.assert_close(_scores(by_auto_class, records, tmp_path / "light"), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("form", ["full", "light"])
@pytest.mark.parametrize("edit, message", [
    (lambda c: {"yes_token_id": c["no_token_id"], "no_token_id": c["yes_token_id"]},
     r"config.json has yes_token_id=\d+, a token the saved tokenizer reads as 'N', not the start of 'Yes': expected \d+ "
     r"\(now in no_token_id: the two ids are swapped\)"),
    (lambda c: {"no_token_id": 5}, r"config.json has no_token_id=5, a token the saved tokenizer reads as .*, not the start of 'No'"),
    (lambda c: {"variant": "collm"}, r"config.json has variant='collm', which means use_history_encoder=False, .* but the config "
                                     r"has use_history_encoder=True, .*: expected variant 'userllm'"),
    (lambda c: {"variant": "userllm_no_uhem", "use_history_encoder": False},
     r"config.json has use_history_encoder=False, but the checkpoint holds \d+ weights of that module .*: expected use_history_encoder=True"),
], ids=["yes-no-swapped", "no-id-changed", "variant-changed", "switch-changed"])
def test_an_edited_config_that_contradicts_the_tokenizer_or_the_weights_is_refused(saved_checkpoints, tmp_path, form, edit, message):
    import shutil

    folder = tmp_path / form
    shutil.copytree(saved_checkpoints / form, folder)
    _edit_config(folder, **edit(json.loads((folder / "config.json").read_text())))
    with pytest.raises(ValueError, match=message):
        UserLLMForRecommendation.from_pretrained(folder)


def _tiny_trainer(model, processor, output_dir, light: bool) -> UserLLMTrainer:
    model.config.base_model_name_or_path = "some/base-llm"
    args = TrainingArguments(output_dir=str(output_dir), label_names=["labels", "user_ids"], remove_unused_columns=False,
                             report_to=[], use_cpu=True)
    return UserLLMTrainer(model=model, args=args, processing_class=processor, light_checkpoints=light)


def test_light_save_writes_the_state_dict_it_is_given(tiny_tokenizer, tmp_path):
    """Under FSDP / ZeRO-3 the Trainer hands `_save` the gathered weights: those must be written."""
    model, processor = build_tiny_model(tiny_tokenizer)
    trainer = _tiny_trainer(model, processor, tmp_path, light=True)
    gathered = {name: torch.full_like(tensor, 0.25) for name, tensor in model.state_dict().items()}
    trainer._save(str(tmp_path / "out"), state_dict=gathered)
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert set(saved) == set(model.trained_parameter_names())
    assert all(torch.all(tensor == 0.25) for tensor in saved.values())


def test_prompt_longer_than_the_llm_positions_is_refused(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer, "userllm_no_uhem", max_history_items=100)
    model.config.text_config.max_position_embeddings = 64
    record = make_records(1, history_length=30)[0]
    with pytest.raises(ValueError, match=r"tokens long .* more than the LLM's 64 positions"):
        model(**processor([record]))


def test_gpu_paper_scale_benchmark_runs_tiny(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_paper_scale.py"
    spec = importlib.util.spec_from_file_location("gpu_paper_scale", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    result = benchmark.main(["--tiny", "--device", "cpu", "--history-lengths", "2", "--batch-size", "2", "--eval-batch-size", "2",
                             "--item-tokens", "12", "--warmup", "0", "--repeats", "1", "--output-dir", str(tmp_path)])
    assert (tmp_path / "gpu_paper_scale_tiny.json").exists()
    assert [(row["variant"], row["encoder_type"]) for row in result["rows"]] == [("userllm_no_uhem", "-"), ("userllm", "gru")]
    assert [ratio["encoder_type"] for ratio in result["speedups"]] == ["gru"]
    rows = {row["variant"]: row for row in result["rows"]}
    assert rows["userllm"]["trained_dtypes"] == ["float32"] and rows["userllm"]["llm_dtype"] == "bfloat16"
    assert rows["userllm_no_uhem"]["prompt_tokens"] > rows["userllm"]["prompt_tokens"]
    assert rows["userllm"]["uhem_tokens"] == 2 * (12 + 1)  # two items of 12 tokens, each with its <Image>


@pytest.mark.parametrize("light", [False, True])
def test_saved_weights_have_the_permissions_of_the_other_files(tiny_tokenizer, tmp_path, light):
    """transformers writes model.safetensors 0600; a run's folders (checkpoints, model/) must not."""
    model, processor = build_tiny_model(tiny_tokenizer)
    _tiny_trainer(model, processor, tmp_path, light=light).save_model(str(tmp_path / "out"))
    mode = lambda name: (tmp_path / "out" / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("model.safetensors") == mode("config.json") and mode("config.json") & 0o044  # readable by others
