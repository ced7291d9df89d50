"""UserLLMForRecommendation: splicing, UHEM, scores, training steps, checkpoints."""

import pytest
import torch

from conftest import (
    NUM_ITEMS,
    NUM_USERS,
    STORIES260K,
    build_tiny_model,
    make_records,
    perturb_lora,
    requires_shared,
    score_in_fresh_process,
)
from modeling_userllm import VARIANTS, UserLLMConfig, create_model_and_processor
from modeling_userllm.modeling_userllm import UserLLMForRecommendation, UserLLMModel
from modeling_userllm.toy_model import tiny_llama_config


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_scores_a_batch(tiny_tokenizer, variant):
    model, processor = build_tiny_model(tiny_tokenizer, variant)
    output = model(**processor(make_records(4)))
    assert output.logits.shape == (4,) and output.probabilities.shape == (4,)
    assert torch.isfinite(output.loss)
    torch.testing.assert_close(output.probabilities, torch.sigmoid(output.logits))


def test_the_head_wraps_the_base_model_under_its_prefix(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    assert UserLLMForRecommendation.base_model_prefix == "model" and model.base_model is model.model
    assert isinstance(model.model, UserLLMModel) and model.language_model is model.model.language_model
    assert model.history_encoder is model.model.history_encoder and model.visual_projector is model.model.visual_projector
    assert not hasattr(model, "vision_tower")  # built without a vision_config
    assert all(name.startswith("model.") for name in model.state_dict())
    batch = processor(make_records(3))
    batch.pop("labels")
    hidden = model.model(**batch).last_hidden_state
    assert hidden.shape == (*batch["input_ids"].shape, model.config.text_config.hidden_size)
    torch.testing.assert_close(model(**batch).logits, model._yes_minus_no_logit(hidden[:, -1]))


def test_a_state_dict_of_the_layout_before_the_split_loads_with_load_state_dict(tiny_tokenizer):
    """Trainer resumes and step results call `load_state_dict`: unprefixed (old) names must fill the model,
    not be skipped as unexpected with a warning."""
    source, processor = build_tiny_model(tiny_tokenizer)
    target = UserLLMForRecommendation(source.config)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(0.01)
    old_layout = {name.removeprefix("model."): tensor for name, tensor in source.state_dict().items()}
    assert not any(name.startswith("model.") for name in old_layout)
    target.load_state_dict(old_layout, strict=True)
    target.load_state_dict(source.state_dict(), strict=True)  # the new layout as well
    batch = processor(make_records(3))
    batch.pop("labels")
    torch.testing.assert_close(target.eval()(**batch).logits, source.eval()(**batch).logits)


def run_on_prompt_embeddings(model, module, batch: dict):
    """`module` (the LLM or its decoder) over the batch's spliced prompt embeddings, positioned as `forward` does."""
    inputs = {key: value for key, value in batch.items() if key not in ("labels", "attention_mask")}
    embeds = model.get_prompt_embeddings(**inputs)
    position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return module(inputs_embeds=embeds, attention_mask=batch["attention_mask"], position_ids=position_ids)


def full_vocabulary_score(model, batch: dict) -> torch.Tensor:
    """logit("Yes") - logit("No") at the last position, from the LLM's full output."""
    logits = run_on_prompt_embeddings(model, model.language_model, batch).logits[:, -1]
    return logits[:, model.config.yes_token_id] - logits[:, model.config.no_token_id]


def test_score_is_yes_minus_no_logit_at_last_position(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    batch = processor(make_records(3))
    torch.testing.assert_close(model(**batch).logits, full_vocabulary_score(model, batch))


def test_lora_on_the_lm_head_is_applied_to_the_score(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer, lora_target_modules=["q_proj", "v_proj", "lm_head"])
    perturb_lora(model)
    model.eval()
    batch = processor(make_records(3))
    torch.testing.assert_close(model(**batch).logits, full_vocabulary_score(model, batch))


def test_llm_with_logit_softcapping_is_refused(tiny_tokenizer):
    text_config = tiny_llama_config(len(tiny_tokenizer) + 4, hidden_size=32)
    text_config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        create_model_and_processor(tiny_tokenizer, "tallrec", text_config=text_config)


def test_bfloat16_scores_are_taken_in_float32_from_the_last_hidden_state(tiny_tokenizer):
    # bf16 logits are rounded to a coarse grid: their difference would tie scores and differ by
    # a whole grid step between two batchings of the same prompt.
    model, processor = build_tiny_model(tiny_tokenizer, dtype=torch.bfloat16)
    perturb_lora(model)
    model.eval()
    batch = processor(make_records(8))
    with torch.no_grad():
        hidden = run_on_prompt_embeddings(model, model.language_model.get_decoder(), batch).last_hidden_state[:, -1]
        head = model.get_output_embeddings().weight
        expected = hidden.float() @ (head[model.config.yes_token_id].float() - head[model.config.no_token_id].float())
        scores = model(**batch).logits
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_a_prompt_scores_the_same_alone_and_in_a_padded_batch(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    perturb_lora(model)
    records = make_records(4, history_length=2) + make_records(1, history_length=7, seed=3)
    model.eval()
    batched = model(**processor(records)).logits
    alone = torch.cat([model(**processor([record])).logits for record in records])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_loss_drops_when_training_a_few_steps(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    batch = processor(make_records(16))
    model.set_training_step("lora")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-2)
    losses = []
    for _ in range(20):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_uhem_prompt_is_shorter_by_the_history_tokens(tiny_tokenizer):
    record = make_records(1, history_length=10)[0]
    _, with_uhem = build_tiny_model(tiny_tokenizer, "userllm")
    _, without_uhem = build_tiny_model(tiny_tokenizer, "userllm_no_uhem")
    uhem_batch = with_uhem([record])
    inline_length = without_uhem([record])["input_ids"].shape[1]
    history_tokens = int(uhem_batch["history_attention_mask"].sum())
    assert history_tokens > 10
    assert inline_length - uhem_batch["input_ids"].shape[1] >= history_tokens - 1


def test_history_order_changes_the_history_token(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    record = make_records(1, history_length=5)[0]
    history = record["history"]
    # Swapping two middle items keeps the last position's token: only position information tells them apart.
    reordered = [history[::-1], [history[0], history[2], history[1], *history[3:]]]
    tokens = []
    for rec in [record] + [{**record, "history": items} for items in reordered]:
        batch = processor([rec])
        tokens.append(model.encode_history(batch["history_input_ids"], batch["history_attention_mask"], batch.get("history_image_features")))
    assert not torch.allclose(tokens[0], tokens[1]) and not torch.allclose(tokens[0], tokens[2])


def test_empty_history_uses_the_learned_no_history_vector(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    records = make_records(2)
    records[0]["history"] = []
    batch = processor(records)
    token = model.encode_history(batch["history_input_ids"], batch["history_attention_mask"], batch.get("history_image_features"))
    torch.testing.assert_close(token[0], model.history_encoder.no_history_embedding)
    assert torch.isfinite(model(**batch).logits).all()


def test_history_encoder_batches_rows_of_different_lengths_as_alone():
    # The encoder itself, on random sequences: padding must not leak into a shorter row.
    torch.manual_seed(0)
    config = UserLLMConfig(text_config=tiny_llama_config(64, hidden_size=32))
    model = UserLLMForRecommendation(config)  # initialises the encoder's weights as loading would
    encoder = model.history_encoder.eval()
    embeds, lengths = torch.randn(3, 9, 32), torch.tensor([9, 4, 1])
    mask = (torch.arange(9) < lengths.unsqueeze(1)).long()
    batched = encoder(embeds, mask)
    alone = torch.cat([encoder(embeds[i : i + 1, :length], mask[i : i + 1, :length]) for i, length in enumerate(lengths.tolist())])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_history_encoder_is_a_gru_sized_by_the_config(tiny_tokenizer):
    model, _ = build_tiny_model(tiny_tokenizer, history_hidden_size=16)
    encoder = model.history_encoder
    assert encoder.gru.input_size == 32 and encoder.gru.hidden_size == 16
    assert encoder.output_projection.in_features == 16 and encoder.output_projection.out_features == 32


def test_processor_gives_the_history_tokens_of_each_item_in_order(tiny_tokenizer):
    _, processor = build_tiny_model(tiny_tokenizer)
    records = make_records(2, history_length=3)
    records[1]["history"] = records[1]["history"][:1]
    batch = processor(records)
    assert "history_item_index" not in batch
    image_id = processor.placeholder_token_ids["image_token_id"]
    for row, record in enumerate(records):
        valid = batch["history_attention_mask"][row].bool()
        expected = [token for item in record["history"]
                    for token in processor._tokens(processor.item_text(item)) + [image_id] * (item["image_features"] is not None)]
        assert batch["history_input_ids"][row][valid].tolist() == expected
    split = processor.split_prompt(records[0])
    assert "history_item_index" not in split
    assert split["history_ids"] == batch["history_input_ids"][0][batch["history_attention_mask"][0].bool()].tolist()


def test_forward_refuses_keyword_arguments_the_decoder_would_drop_and_passes_on_its_own(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    batch = processor(make_records(2))
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['history_item_index'\]"):
        model(**batch, history_item_index=torch.zeros_like(batch["history_input_ids"]))
    with pytest.raises(TypeError, match=r"\['output_attention'\].*'output_attentions'"):
        model(**batch, output_attention=True)
    model.model.language_model.config._attn_implementation = "eager"  # SDPA returns no attention weights
    inputs = {key: value for key, value in batch.items() if key != "labels"}  # the base model has no head to score them
    base = model.model(**inputs, output_hidden_states=True, output_attentions=True, return_dict=True)
    layers = model.config.text_config.num_hidden_layers
    assert len(base.hidden_states) == layers + 1 and len(base.attentions) == layers
    assert torch.equal(base.hidden_states[-1], base.last_hidden_state)
    assert base.attentions[0].shape[-2:] == (batch["input_ids"].shape[1],) * 2
    scored = model(**batch, output_hidden_states=True)
    assert len(scored.hidden_states) == layers + 1 and scored.attentions is None


@pytest.mark.parametrize("encoder_type", ["lstm", "transformer", "hierarchical"])
def test_history_encoders_other_than_the_gru_are_refused(encoder_type):
    with pytest.raises(ValueError, match=rf"history_encoder_type='{encoder_type}': expected 'gru', the only UHEM encoder "
                                         r"\(the parallel 'transformer' and 'hierarchical' encoders were removed; "
                                         r"docs/RESULTS.md keeps their figures\)"):
        UserLLMConfig(text_config=tiny_llama_config(64, hidden_size=32), history_encoder_type=encoder_type)


def test_placeholder_count_mismatch_raises(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer, "collm_va")
    batch = processor(make_records(2))
    batch["image_features"] = batch["image_features"][:-1]
    with pytest.raises(ValueError, match=r"holds \d+ <Image> placeholder tokens but \d+ <Image> features"):
        model(**batch)
    batch = processor(make_records(2))
    batch["image_features"] = torch.cat([batch["image_features"], batch["image_features"][:1]])
    with pytest.raises(ValueError, match="must match"):
        model(**batch)


def test_unknown_user_and_item_ids_use_the_dedicated_unknown_row(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    model.eval()
    records = make_records(3)
    # (unknown user, item 2), (user 1, unknown item), (unknown user, item 3)
    for record, (user_id, item_id) in zip(records, [(NUM_USERS + 100, 2), (1, -1), (NUM_USERS, 3)]):
        record["user_id"], record["item_id"] = user_id, item_id
    batch = processor(records)
    assert torch.equal(model.user_embeddings.weight[-1], torch.zeros(256))

    def scores():
        with torch.no_grad():
            return model(**batch).logits

    reference = scores()
    assert torch.isfinite(reference).all()
    with torch.no_grad():  # the nearest real rows, which an unknown id clamped into range would use
        model.user_embeddings.weight[NUM_USERS - 1].add_(3.0)
        model.item_embeddings.weight[0].add_(3.0)
        model.item_embeddings.weight[NUM_ITEMS - 1].add_(3.0)
    assert torch.equal(scores(), reference)
    with torch.no_grad():  # the unknown rows: each record uses one
        model.user_embeddings.weight[-1].add_(3.0)
        model.item_embeddings.weight[-1].add_(3.0)
    assert (scores() != reference).all()


def _changed_parameters(model, processor, step: str) -> set[str]:
    model.set_training_step(step)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    records = make_records(8)
    records[0]["history"] = []  # so that the learned no-history vector takes part
    model(**processor(records)).loss.backward()
    optimizer.step()
    return {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}


def test_step_one_trains_only_lora(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    perturb_lora(model)  # with B = 0, A receives no gradient in the first step
    changed = _changed_parameters(model, processor, "lora")
    lora_names = {name for name, _ in model.named_parameters() if "lora_" in name}
    assert changed == lora_names


def test_step_two_trains_only_uhem_and_projectors(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    changed = _changed_parameters(model, processor, "encoders")
    prefixes = ("model.visual_projector.", "model.collaborative_projector.", "model.history_encoder.")
    expected = {name for name, _ in model.named_parameters() if name.startswith(prefixes)}
    assert changed == expected
    assert not any("lora_" in name or "embeddings.weight" in name for name in changed)


def test_joint_step_trains_lora_and_encoders_together(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer)
    perturb_lora(model)
    changed = _changed_parameters(model, processor, "joint")
    prefixes = ("model.visual_projector.", "model.collaborative_projector.", "model.history_encoder.")
    expected = {name for name, _ in model.named_parameters() if name.startswith(prefixes) or "lora_" in name}
    assert changed == expected and any(name.startswith("model.history_encoder.") for name in changed)


def test_lora_b_starts_at_zero(tiny_tokenizer):
    model, _ = build_tiny_model(tiny_tokenizer)
    lora_b = [param for name, param in model.named_parameters() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(param) == 0 for param in lora_b)


def test_save_and_load_in_a_fresh_process_gives_the_same_scores(tiny_tokenizer, tmp_path):
    model, processor = build_tiny_model(tiny_tokenizer)
    perturb_lora(model)
    model.eval()
    records = make_records(4, history_length=4)
    with torch.no_grad():
        expected = model(**processor(records)).logits.tolist()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    scores = score_in_fresh_process(tmp_path / "model", records, tmp_path)
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected), atol=1e-5, rtol=0)


def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradients(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer, lora_dropout=0.0)
    batch = processor(make_records(4))
    model.train()
    model.set_training_step("encoders")
    layer_calls = []
    # The layer's first module (transformers checkpoints the layer's forward, so the layer's own hooks stay
    # outside; a pre-hook, because torch's recompute stops as soon as it has the tensors backward needs).
    model.language_model.model.layers[0].input_layernorm.register_forward_pre_hook(lambda *args: layer_calls.append(1))

    def loss_and_gradients():
        layer_calls.clear()
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        return loss, {name: param.grad.clone() for name, param in model.named_parameters() if param.requires_grad}, len(layer_calls)

    reference_loss, reference_grads, plain_calls = loss_and_gradients()
    model.activation_checkpointing_enable()
    loss, grads, checkpointed_calls = loss_and_gradients()
    assert (plain_calls, checkpointed_calls) == (1, 2)  # the layer runs again in backward: checkpointing is on
    torch.testing.assert_close(loss, reference_loss)
    for name, grad in reference_grads.items():
        torch.testing.assert_close(grads[name], grad, msg=name)


def test_bfloat16_model_scores(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer, dtype=torch.bfloat16)
    assert model.language_model.get_input_embeddings().weight.dtype == torch.bfloat16
    output = model(**processor(make_records(2)))
    assert output.logits.dtype == torch.float32 and torch.isfinite(output.logits).all()


@requires_shared(STORIES260K)
def test_real_base_llm_round_trips_full_and_light(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(STORIES260K)
    model, processor = create_model_and_processor(
        tokenizer, "userllm", base_model_name_or_path=str(STORIES260K), num_users=NUM_USERS, num_items=NUM_ITEMS
    )
    from safetensors.torch import load_file

    base_weights = load_file(STORIES260K / "model.safetensors")
    embed = model.language_model.get_input_embeddings().weight
    torch.testing.assert_close(embed, base_weights["model.embed_tokens.weight"].to(embed.dtype))
    assert all(torch.count_nonzero(p) == 0 for n, p in model.named_parameters() if "lora_B" in n)
    perturb_lora(model)
    model.eval()
    records = make_records(3, history_length=3)
    with torch.no_grad():
        expected = torch.tensor(model(**processor(records)).logits.tolist())
    for form, light in (("full", False), ("light", True)):
        folder = tmp_path / form
        model.save_pretrained(folder, light=light)
        processor.save_pretrained(folder)
        scores = score_in_fresh_process(folder, records, tmp_path)
        torch.testing.assert_close(torch.tensor(scores), expected, atol=1e-5, rtol=0)
    full_size = (tmp_path / "full" / "model.safetensors").stat().st_size
    light_size = (tmp_path / "light" / "model.safetensors").stat().st_size
    assert full_size - light_size >= (STORIES260K / "model.safetensors").stat().st_size * 0.9


@requires_shared(STORIES260K)
def test_a_loaded_checkpoint_saves_under_the_names_it_was_loaded_from(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    model, _ = create_model_and_processor(AutoTokenizer.from_pretrained(STORIES260K), "tallrec",
                                          base_model_name_or_path=str(STORIES260K))
    model.save_pretrained(tmp_path / "full")
    reloaded = UserLLMForRecommendation.from_pretrained(tmp_path / "full")
    reloaded.save_pretrained(tmp_path / "again")
    reloaded.save_pretrained(tmp_path / "light", light=True)
    assert set(load_file(tmp_path / "again" / "model.safetensors")) == set(model.state_dict())
    assert set(load_file(tmp_path / "light" / "model.safetensors")) == set(model.trained_parameter_names())
    UserLLMForRecommendation.from_pretrained(tmp_path / "light")


@requires_shared(STORIES260K)
def test_base_llm_from_a_sharded_checkpoint_keeps_its_weights(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(STORIES260K)
    base.save_pretrained(tmp_path, max_shard_size="300KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model, _ = create_model_and_processor(AutoTokenizer.from_pretrained(STORIES260K), "tallrec", base_model_name_or_path=str(tmp_path))
    for name, param in base.named_parameters():
        wrapped = model.language_model.get_parameter(name.replace("q_proj.", "q_proj.base_layer.").replace("v_proj.", "v_proj.base_layer."))
        torch.testing.assert_close(wrapped, param.to(wrapped.dtype), rtol=0, atol=0)


def test_forward_passes_extra_keyword_arguments_to_the_decoder(tiny_tokenizer, monkeypatch):
    model, processor = build_tiny_model(tiny_tokenizer, "tallrec")
    decoder = model.language_model.get_decoder()
    received = {}
    original = decoder.forward

    def recording_forward(*args, **kwargs):
        received.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", recording_forward)
    model(**processor(make_records(2)), output_attentions=True)
    assert received.get("output_attentions") is True


def test_init_weights_keeps_the_intended_gru_projector_and_lora_initialisation(tiny_tokenizer):
    model, _ = build_tiny_model(tiny_tokenizer, "userllm")
    gru = model.history_encoder.gru
    for name, param in gru.named_parameters():
        if "bias" in name:
            assert (param == 0).all(), name
        else:  # xavier_uniform_: bounded by sqrt(6 / (fan_in + fan_out)), about uniform within it
            bound = (6 / (param.shape[0] + param.shape[1])) ** 0.5
            assert param.abs().max() <= bound and param.std() > 0.4 * bound, name
    std = model.config.text_config.initializer_range
    for projector in (model.visual_projector, model.collaborative_projector):
        for linear in (projector.linear_1, projector.linear_2):
            assert (linear.bias == 0).all()
            assert abs(linear.weight.std().item() - std) < 0.3 * std
    lora_b = [param for name, param in model.named_parameters() if "lora_B" in name]
    assert lora_b and all((param == 0).all() for param in lora_b)
    assert model.history_encoder.no_history_embedding.std() > 0


def test_processor_settings_come_from_the_config(tiny_tokenizer):
    model, processor = build_tiny_model(tiny_tokenizer, "userllm", use_descriptions=False, max_item_tokens=12,
                                        max_history_items=3)
    for name in ("use_descriptions", "max_item_tokens", "max_history_items"):
        assert getattr(processor, name) == getattr(model.config, name), name
    assert (processor.use_descriptions, processor.max_item_tokens, processor.max_history_items) == (False, 12, 3)


def test_a_file_given_as_checkpoint_is_named_as_a_file(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(OSError, match="model.safetensors: a file, not the checkpoint folder"):
        UserLLMForRecommendation.from_pretrained(weights)
