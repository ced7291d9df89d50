"""The forward as a GPU runs it: no host syncs or graph breaks, SDPA attention, no full-vocabulary
logits; the FLOP counts of the GPU benchmark; its tiny CPU rehearsal."""

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import build_tiny_model, make_records, perturb_lora

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mixed_records(num_records: int = 4) -> list[dict]:
    """Records with and without history (and some history items without an image)."""
    records = make_records(num_records, history_length=3, seed=3)
    records[1]["history"] = []
    return records


def reference_scores(model, batch: dict) -> torch.Tensor:
    """Scores from prompt embeddings spliced row by row in Python (each row's own features looked
    up one at a time, each history encoded alone) and the LLM's full-vocabulary logits."""
    config = model.config
    embed = model.get_input_embeddings()
    images = iter(model.visual_projector(batch["image_features"])) if "image_features" in batch else iter(())
    history_images = 0
    rows = []
    for row, ids in enumerate(batch["input_ids"]):
        tokens = []
        for token in ids.tolist():
            if token == config.image_token_id:
                tokens.append(next(images))
            elif token == config.user_token_id:
                tokens.append(model.collaborative_projector(model._lookup_collaborative(model.user_embeddings, batch["user_ids"][row : row + 1]))[0])
            elif token == config.item_token_id:
                tokens.append(model.collaborative_projector(model._lookup_collaborative(model.item_embeddings, batch["item_ids"][row : row + 1]))[0])
            elif token == config.history_token_id:
                length = int(batch["history_attention_mask"][row].sum())
                history_ids = batch["history_input_ids"][row : row + 1, :length]
                count = int((history_ids == config.image_token_id).sum())
                features = batch["history_image_features"][history_images : history_images + count] if count else None
                history_images += count
                if length:
                    tokens.append(model.encode_history(history_ids, torch.ones_like(history_ids), features)[0])
                else:
                    tokens.append(model.history_encoder.no_history_embedding)
            else:
                tokens.append(embed.weight[token])
        rows.append(torch.stack([token.to(embed.weight.dtype) for token in tokens]))
    mask = batch["attention_mask"]
    logits = model.language_model(inputs_embeds=torch.stack(rows), attention_mask=mask,
                                  position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -1]
    return (logits[:, config.yes_token_id] - logits[:, config.no_token_id]).float()


@pytest.mark.parametrize("variant", ["userllm", "collm_va"])
def test_batched_splicing_scores_equal_a_row_by_row_reference(tiny_tokenizer, single_thread, variant):
    model, processor = build_tiny_model(tiny_tokenizer, variant)
    perturb_lora(model)
    model.eval()
    batch = processor(mixed_records())
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reference_scores(model, batch), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["userllm", "collm_va"])
def test_forward_compiles_to_one_graph_with_the_eager_scores(tiny_tokenizer, single_thread, variant):
    """`fullgraph=True` fails on any graph break, which every host sync (`.item()`, `int(t)`,
    `bool(t.any())`, boolean-mask row selection) in the forward would cause."""
    model, processor = build_tiny_model(tiny_tokenizer, variant)
    perturb_lora(model)
    model.eval()
    batch = dict(processor(mixed_records()))
    torch._dynamo.reset()
    # nn.GRU is outside dynamo's default support; allow_rnn traces it (a GRU is no host sync).
    with torch._dynamo.config.patch(allow_rnn=True), torch.no_grad():
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(**batch).logits, model(**batch).logits, atol=1e-5, rtol=1e-5)


def test_compiled_forward_still_refuses_a_wrong_placeholder_count(tiny_tokenizer, single_thread):
    model, processor = build_tiny_model(tiny_tokenizer, "collm_va")
    model.eval()
    batch = dict(processor(make_records(2)))
    batch["image_features"] = torch.cat([batch["image_features"], batch["image_features"][:1]])
    torch._dynamo.reset()
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"holds \d+ <Image> placeholder tokens but \d+ <Image> features"):
            model(**batch)
        with pytest.raises(RuntimeError, match="USER-LLM input check failed"):
            torch.compile(model, backend="eager", fullgraph=True)(**batch)


def test_row_placeholders_twice_in_a_row_or_without_features_raise(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    batch = processor(make_records(2))
    history_token = model.config.history_token_id
    without_history = {key: value for key, value in batch.items() if not key.startswith("history_")}
    with pytest.raises(ValueError, match=r"holds 2 <HistoryInteractions> placeholder tokens but 0 <HistoryInteractions> features"):
        model(**without_history)
    doubled = dict(batch)
    doubled["input_ids"] = batch["input_ids"].clone()
    row_user_tokens = (batch["input_ids"][0] == model.config.user_token_id).nonzero()[0, 0]
    doubled["input_ids"][0, row_user_tokens - 1] = model.config.user_token_id
    with pytest.raises(ValueError, match=r"holds 3 <UserID> placeholder tokens but 2 <UserID> features were given \(one per prompt row"):
        model(**doubled)
    assert history_token in batch["input_ids"]


@pytest.mark.parametrize("lora_on_head", [False, True])
def test_training_and_scoring_never_compute_full_vocabulary_logits(tiny_tokenizer, single_thread, lora_on_head):
    targets = ["q_proj", "v_proj", "lm_head"] if lora_on_head else ["q_proj", "v_proj"]
    model, processor = build_tiny_model(tiny_tokenizer, lora_target_modules=targets)
    perturb_lora(model)

    def refuse(module, inputs, output):
        raise AssertionError(f"the LM head ran on inputs of shape {tuple(inputs[0].shape)}: full-vocabulary logits")

    handle = model.get_output_embeddings().register_forward_hook(refuse)
    try:
        records = mixed_records()
        model.eval()
        with torch.no_grad():
            scores = model(**processor(records)).logits
        model.train()
        for step, text_only in (("lora", True), ("encoders", False)):
            model.set_training_step(step)
            model(**processor(records, text_only=text_only)).loss.backward()
    finally:
        handle.remove()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(scores, reference_scores(model, processor(records)), atol=1e-5, rtol=1e-5)


def test_llm_attention_is_sdpa(tiny_tokenizer):
    model, _ = build_tiny_model(tiny_tokenizer)
    assert model.language_model.config._attn_implementation == "sdpa"


# ----------------------------------------------------------------------------- FLOP counts


def test_llm_forward_flops_match_a_hand_count():
    flops = load_benchmark("flops")
    config = SimpleNamespace(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                             num_key_value_heads=1, head_dim=None)
    # Per token and layer: q 8*8 + k, v 2*8*4 + o 8*8 + MLP 3*8*16 = 576 weights -> 1152 FLOPs; x 2 layers.
    # Causal attention, q = 8: rows of 3 and 2 tokens -> 6 + 3 query-key pairs, 4*8 FLOPs each per layer.
    # LM head: 2 answer rows of 8 -> 32 FLOPs per row.
    projections, attention, head = 2 * 1152 * 5, 2 * 4 * 8 * 9, 2 * 32
    assert flops.llm_forward_flops(config, [3, 2]) == projections + attention + head
    # Two tokens after a cached prefix of 4: pairs 5 + 6.
    assert flops.llm_forward_flops(config, [2], past_lengths=[4]) == 2 * 1152 * 2 + 2 * 4 * 8 * 11 + 32
    assert flops.llm_forward_flops(config, [3, 2], backward_to_inputs=True) == 2 * projections + 3 * attention + head
    assert flops.gru_flops(4, 3, steps=5) == 2 * 3 * (12 + 9) * 5
    assert flops.gru_flops(4, 3, steps=5, trained=True) == 3 * 2 * 3 * (12 + 9) * 5
    assert flops.mfu(10**12, 2.0, 10**12) == 0.5


def test_history_encoder_flops_of_the_gru_count_its_real_steps(tiny_tokenizer):
    flops = load_benchmark("flops")
    model, _ = build_tiny_model(tiny_tokenizer)  # GRU 32 -> 32
    assert flops.history_encoder_flops(model.history_encoder, [5, 0, 2]) == 2 * 3 * (32 * 32 * 2) * 7


def test_gpu_paper_scale_reports_mfu_and_sweeps_batch_sizes_on_tiny(tmp_path, single_thread):
    benchmark = load_benchmark("gpu_paper_scale")
    result = benchmark.main(["--tiny", "--device", "cpu", "--history-lengths", "2", "--batch-size", "2", "--eval-batch-size", "2",
                             "--item-tokens", "12", "--item-tokens-spread", "4", "--length-buckets", "4", "--warmup", "0",
                             "--repeats", "1", "--sweep-batch-sizes", "1", "2", "--output-dir", str(tmp_path)])
    assert result["peak_flops"] > 0 and result["peak_source"].startswith("measured: best of 5 1024x1024")
    for row in result["rows"]:
        assert 0 < row["train_mfu"] < 1 and 0 < row["infer_mfu"] < 1
        assert row["train_flops"] > row["infer_flops"]  # same batch size: step 2 adds the backward
    assert [(row["path"], row["batch"]) for row in result["sweep"]] == [
        ("step2", 1), ("step2", 2), ("step1", 1), ("step1", 2), ("scoring", 1), ("scoring", 2)]
    assert all(row["padding_fraction"] == 0 for row in result["sweep"] if row["batch"] == 1)
    assert (tmp_path / "gpu_paper_scale_tiny.json").exists()


@pytest.mark.parametrize("preset", ["movie-vicuna7b.yaml", "netflix-vicuna7b.yaml"])
def test_vicuna_presets_keep_the_gpu_fed(tmp_path, preset):
    from modeling_userllm.training.arguments import load_preset, parse_arguments

    path = Path(__file__).resolve().parents[1] / "configuration" / preset
    # TrainingArguments turns pinned memory off under use_cpu: read the preset's own value.
    assert load_preset(path).get("dataloader_pin_memory") is True
    training = parse_arguments(["--preset", str(path), "--output_dir", str(tmp_path), "--use_cpu", "true"]).training
    assert training.dataloader_num_workers >= 2 and training.dataloader_persistent_workers
    assert training.accelerator_config.non_blocking
    assert not training.logging_nan_inf_filter  # it reads the loss on the host after every step


def test_gpu_uhem_ranking_runs_tiny_and_shared_prefix_scores_equal_scratch(tmp_path, single_thread):
    benchmark = load_benchmark("gpu_uhem_ranking")
    result = benchmark.main(["--tiny", "--device", "cpu", "--dtype", "float32", "--history-lengths", "2", "--encoders", "gru",
                             "gru-no-cudnn", "--batch-size", "2", "--candidates", "6", "--users", "2",
                             "--ranking-batch-size", "4", "--item-tokens", "12", "--warmup", "0", "--repeats", "1",
                             "--output-dir", str(tmp_path)])
    assert [row["encoder"] for row in result["uhem"]] == ["gru"]  # no cuDNN switch on a CPU
    assert all(row["step2_flops"] == 3 * row["scoring_flops"] > 0 and row["step2_mfu"] > 0 for row in result["uhem"])
    assert [row["case"] for row in result["ranking"]] == ["one user", "2 users"]
    for row in result["ranking"]:
        assert row["max_score_difference"] <= 1e-5
        assert 0 < row["shared_prefix_flops"] < row["from_scratch_flops"]
    assert (tmp_path / "gpu_paper_scale_uhem_ranking_tiny.json").exists()
