"""Options that make the LLM read spliced tokens: step 1's prompt, the joint curriculum, the
projector norm, item ids after titles; each off by default and kept by a saved checkpoint."""

import random

import pytest
import torch
from transformers import TrainingArguments

from conftest import (
    NUM_ITEMS,
    STORIES260K,
    build_tiny_model,
    make_records,
    perturb_lora,
    requires_shared,
    score_in_fresh_process,
)
from modeling_userllm import UserLLMConfig, create_model_and_processor
from modeling_userllm.processing_userllm import UserLLMProcessor
from modeling_userllm.training import PresetError, parse_arguments, train_two_steps
from modeling_userllm.training.datasets import PromptCurriculumCollator

ENCODERS = ("model.visual_projector.", "model.collaborative_projector.", "model.history_encoder.")


def rms(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over rows of each row's root mean square."""
    return tensor.float().pow(2).mean(dim=-1).sqrt().mean()


def spliced_tokens(model, processor, records) -> dict[str, torch.Tensor]:
    """The projected image and item tokens and the history tokens of a batch."""
    batch = processor(records)
    with torch.no_grad():
        return {
            "image": model.visual_projector(batch["image_features"]),
            "item": model.collaborative_projector(model._lookup_collaborative(model.item_embeddings, batch["item_ids"])),
            "history": model.encode_history(batch["history_input_ids"], batch["history_attention_mask"],
                                            batch.get("history_image_features")),
        }


@pytest.fixture
def record_prompts(monkeypatch):
    """Records the `text_only` flag of every batch the processor builds."""
    calls = []
    original = UserLLMProcessor.__call__

    def spy(self, records, text_only=False, **kwargs):
        calls.append(text_only)
        return original(self, records, text_only=text_only, **kwargs)

    monkeypatch.setattr(UserLLMProcessor, "__call__", spy)
    return calls


def train_steps(model, processor, output_dir, steps, max_steps=4, **kwargs):
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=4, learning_rate=1e-2, max_steps=max_steps,
        remove_unused_columns=False, label_names=["labels", "user_ids"], use_cpu=True, report_to="none",
        save_strategy="no", disable_tqdm=True, logging_steps=100, seed=3,
    )
    overrides = {step: {"max_steps": max_steps, "learning_rate": 1e-2, "per_device_train_batch_size": 4} for step in steps}
    return train_two_steps(model, processor, make_records(32, history_length=3), args, steps, overrides, **kwargs)


# ----------------------------------------------------------------------------- step 1's prompt


@pytest.mark.parametrize("step1_prompt, text_only", [("text", True), ("spliced", False)])
def test_step1_prompt_sets_the_prompt_lora_trains_on(tiny_tokenizer, tmp_path, single_thread, record_prompts,
                                                     step1_prompt, text_only):
    model, processor = build_tiny_model(tiny_tokenizer)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    train_steps(model, processor, tmp_path, ["lora"], step1_prompt=step1_prompt)
    assert record_prompts and set(record_prompts) == {text_only}
    changed = {name for name, tensor in model.state_dict().items() if not torch.equal(before[name], tensor)}
    assert changed and all("lora_" in name for name in changed), changed  # the encoders stay at their initialisation


def test_unknown_step1_prompt_is_refused_naming_it():
    with pytest.raises(PresetError, match="step1_prompt.*'splice'.*'spliced'"):
        parse_arguments(["--step1_prompt", "splice"])


# ----------------------------------------------------------------------------- curriculum


def test_curriculum_probability_rises_linearly_from_text_to_full_and_draws_repeat():
    collator = PromptCurriculumCollator(processor=None, seed=5, total_steps=11)
    probabilities = []
    for step in range(11):
        collator.step = step
        probabilities.append(collator.full_prompt_probability())
    assert probabilities == pytest.approx([step / 10 for step in range(11)])

    def draws(seed):
        picked = []
        for step in range(200):
            collator.seed, collator.step, collator.total_steps = seed, step, 200
            picked.append(random.Random(f"{seed}-{step}").random() < collator.full_prompt_probability())
        return picked

    first = draws(5)
    assert first == draws(5) and first != draws(6)
    assert not first[0] and first[-1]
    assert sum(first[:100]) < sum(first[100:])  # the full prompt comes more often later


def test_curriculum_moves_the_joint_step_from_the_text_prompt_to_the_full_one(tiny_tokenizer, tmp_path, single_thread,
                                                                            record_prompts):
    model, processor = build_tiny_model(tiny_tokenizer)
    train_steps(model, processor, tmp_path, ["joint"], max_steps=8, prompt_curriculum=True)
    training_batches = record_prompts[:8]  # then the trainer's own evaluation-free end
    assert training_batches[0] is True and training_batches[-1] is False
    expected = [not (random.Random(f"3-{step}").random() < step / 7) for step in range(8)]
    assert training_batches == expected


def test_curriculum_without_a_joint_step_is_refused():
    with pytest.raises(PresetError, match="prompt_curriculum.*no joint step"):
        parse_arguments(["--prompt_curriculum", "true"])
    parse_arguments(["--prompt_curriculum", "true", "--steps", "lora", "joint"])


def test_curriculum_with_dataloader_workers_is_refused():
    with pytest.raises(PresetError, match="prompt_curriculum needs dataloader_num_workers 0 \\(got 2\\)"):
        parse_arguments(["--prompt_curriculum", "true", "--steps", "joint", "--dataloader_num_workers", "2"])


# ----------------------------------------------------------------------------- projector norm


def test_projector_norm_starts_spliced_tokens_at_the_token_embedding_rms(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer, projector_norm="rms")
    target = rms(model.get_input_embeddings().weight)
    tokens = spliced_tokens(model, processor, make_records(6))
    for name, values in tokens.items():
        torch.testing.assert_close(rms(values), target, rtol=1e-2, atol=0, msg=name)  # eps 1e-6 in the mean square


def test_projector_norm_is_off_by_default(tiny_tokenizer):
    model, _ = build_tiny_model(tiny_tokenizer)
    assert UserLLMConfig().projector_norm == "none"
    assert not [name for name in model.state_dict() if "output_norm" in name]


@requires_shared(STORIES260K)
def test_projector_norm_matches_a_pretrained_llm_token_scale():
    from transformers import AutoTokenizer

    model, processor = create_model_and_processor(
        AutoTokenizer.from_pretrained(STORIES260K), "userllm", base_model_name_or_path=str(STORIES260K),
        num_users=5, num_items=NUM_ITEMS, projector_norm="rms",
    )
    model.load_collaborative_embeddings(torch.randn(5, 256), torch.randn(NUM_ITEMS, 256))
    target = rms(model.get_input_embeddings().weight)
    for name, values in spliced_tokens(model, processor, make_records(4)).items():
        torch.testing.assert_close(rms(values), target, rtol=1e-2, atol=0, msg=name)  # eps 1e-6 in the mean square


def test_unknown_projector_norm_is_refused():
    with pytest.raises(ValueError, match="projector_norm 'layer'"):
        UserLLMConfig(projector_norm="layer")
    with pytest.raises(PresetError, match="projector_norm.*'layer'"):
        parse_arguments(["--projector_norm", "layer"])


# ----------------------------------------------------------------------------- item ids after titles


@pytest.mark.parametrize("variant", ["userllm", "collm"])
def test_item_ids_after_titles_put_each_history_item_embedding_after_its_text(tiny_tokenizer, variant):
    model, processor = build_tiny_model(tiny_tokenizer, variant, item_ids_after_titles=True)
    records = make_records(3, history_length=3)
    batch = processor(records)
    item_token = model.config.item_token_id
    if variant == "userllm":  # in the UHEM input, one per history item, in time order
        assert batch["history_item_token_ids"].tolist() == [item["item_id"] for r in records for item in r["history"]]
        assert int((batch["history_input_ids"] == item_token).sum()) == 9
        assert batch["prompt_item_ids"].tolist() == [r["item_id"] for r in records]
    else:  # inline: the history's, then the candidate's
        assert batch["prompt_item_ids"].tolist() == [i for r in records for i in [h["item_id"] for h in r["history"]] + [r["item_id"]]]
        assert int((batch["input_ids"] == item_token).sum()) == 12
        text = processor.decode_prompt(batch["input_ids"][0])
        first_title_word = records[0]["history"][0]["title"].split()[0].lower()
        second_title_word = records[0]["history"][1]["title"].split()[0].lower()
        before_first_id = text[: text.index("<ItemID>")]
        assert first_title_word in before_first_id and second_title_word not in before_first_id.split(":")[-1]
    # Each history <ItemID> holds that item's projected MF embedding: changing one item's MF row moves the score.
    with torch.no_grad():
        before = model(**batch).logits
        history_only = records[0]["history"][0]["item_id"]
        if all(history_only != r["item_id"] for r in records):
            model.item_embeddings.weight[history_only] += 1.0
            assert not torch.allclose(model(**batch).logits[0], before[0])


def test_item_ids_after_titles_are_off_by_default_and_need_collaborative_embeddings(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    batch = processor(make_records(2))
    assert "prompt_item_ids" not in batch and "history_item_token_ids" not in batch
    with pytest.raises(ValueError, match="needs use_collaborative"):
        build_tiny_model(tiny_tokenizer, "tallrec", item_ids_after_titles=True)
    with pytest.raises(PresetError, match="item_ids_after_titles.*'tallrec'"):
        parse_arguments(["--variant", "tallrec", "--item_ids_after_titles", "true"])


def test_the_text_prompt_has_no_item_ids_after_titles(tiny_tokenizer):
    _, processor = build_tiny_model(tiny_tokenizer, "collm", item_ids_after_titles=True)
    batch = processor(make_records(2), text_only=True)
    assert "prompt_item_ids" not in batch
    assert not bool(torch.isin(batch["input_ids"], torch.tensor(list(processor.placeholder_token_ids.values()))).any())


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("variant, options", [
    ("userllm", {"projector_norm": "rms"}),
    ("userllm", {"item_ids_after_titles": True}),
    ("collm_va", {"item_ids_after_titles": True, "projector_norm": "rms"}),
])
def test_a_saved_model_with_the_options_scores_the_same_in_a_fresh_process(tiny_tokenizer, tmp_path, variant, options):
    model, processor = build_tiny_model(tiny_tokenizer, variant, **options)
    perturb_lora(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # trained gains, unlike the initial ones a reload could fall back to
        for name, param in model.named_parameters():
            if "output_norm" in name:
                param.mul_(1 + torch.rand(param.shape, generator=generator))
    model.eval()
    records = make_records(4, history_length=4)
    with torch.no_grad():
        expected = model(**processor(records)).logits.tolist()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    scores = score_in_fresh_process(tmp_path / "model", records, tmp_path)
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- the experiment grid


def test_userllm_recipe_system_trains_userllm_with_the_recipe_preset_beside_the_llm_preset(tmp_path):
    import json

    from conftest import REPO_ROOT
    from experiments.runner import PAPER_SYSTEMS, SYSTEMS, ExperimentRunner

    data = tmp_path / "data"
    data.mkdir()
    (data / "info.json").write_text(json.dumps({"name": "tiny", "protocol": {"threshold": 4}}))
    (tmp_path / "features").mkdir()
    runner = ExperimentRunner(tmp_path / "out", llm_preset=REPO_ROOT / "configuration" / "toy.yaml")
    default, recipe = runner.plan([data], ["userllm_recipe", "userllm"], [0], features_dirs=[tmp_path / "features"])
    assert (default.system, recipe.system) == ("userllm", "userllm_recipe")  # the paper's row first
    command = runner._record(recipe)["command"]
    assert "--preset " + str(REPO_ROOT / "configuration" / "toy-recipe.yaml") in command and "--variant userllm " in command
    assert "--preset " + str(REPO_ROOT / "configuration" / "toy.yaml") in runner._record(default)["command"]
    assert recipe.config["preset"] == "toy-recipe.yaml" and recipe.config_hash != default.config_hash
    assert "userllm_recipe" in SYSTEMS and "userllm_recipe" not in PAPER_SYSTEMS
    parse_arguments(["--preset", str(REPO_ROOT / "configuration" / "toy-recipe.yaml")])

    missing = ExperimentRunner(tmp_path / "out", llm_preset=tmp_path / "other.yaml")
    (tmp_path / "other.yaml").write_text("{}")
    spec = missing.plan([data], ["userllm_recipe"], [0], features_dirs=[tmp_path / "features"])[0]
    with pytest.raises(FileNotFoundError, match="other-recipe.yaml"):
        missing._train_llm(spec, tmp_path)
