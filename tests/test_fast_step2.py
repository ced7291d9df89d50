"""The fast step 2 (prefix cache + merged frozen LoRA) gives the plain path's scores and gradients."""

from contextlib import nullcontext

import pytest
import torch
from conftest import SMOLLM2, build_tiny_model, make_records, perturb_lora, requires_smollm2
from transformers import AutoTokenizer

from modeling_userllm import create_model_and_processor
from modeling_userllm.training.fast_step2 import Step2PrefixCache, frozen_lora_merged

VARIANTS = ["userllm", "userllm_no_uhem", "collm", "collm_va"]  # tallrec trains nothing in step 2


pytestmark = pytest.mark.usefixtures("single_thread")


def scores_and_gradients(model, forward, batch):
    """(logits, loss, {trained parameter: gradient}) of one step-2 forward + backward."""
    model.zero_grad(set_to_none=True)
    output = forward(batch)
    output.loss.backward()
    gradients = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    return output.logits.detach(), output.loss.detach(), gradients


def assert_same(model, processor, records, merge_lora=True, atol=1e-5):
    model.set_training_step("encoders")
    model.eval()  # LoRA dropout off: the only difference the fast path allows (module docstring)
    batch = dict(processor(records))
    plain = scores_and_gradients(model, lambda inputs: model(**inputs), batch)
    fast_step = Step2PrefixCache(model, processor)
    with frozen_lora_merged(model) if merge_lora else nullcontext():
        fast = scores_and_gradients(model, fast_step, batch)
        again = scores_and_gradients(model, fast_step, batch)  # the cached prefix is reused
    torch.testing.assert_close(fast[0], plain[0], atol=atol, rtol=1e-5)
    torch.testing.assert_close(fast[1], plain[1], atol=atol, rtol=1e-5)
    torch.testing.assert_close(again[0], fast[0])
    assert plain[2] and fast[2].keys() == plain[2].keys() or not plain[2]
    for name, gradient in plain[2].items():
        scale = max(1.0, gradient.abs().max().item())
        torch.testing.assert_close(fast[2][name], gradient, atol=atol * scale, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    return fast_step


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("merge_lora", [True, False])
def test_fast_step2_equals_plain_path(tiny_tokenizer, variant, merge_lora):
    model, processor = build_tiny_model(tiny_tokenizer, variant)
    perturb_lora(model)
    records = make_records(6, history_length=3, seed=2)
    fast_step = assert_same(model, processor, records, merge_lora=merge_lora)
    batch = processor(records)
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    prefix_len = fast_step.prefix_length(rows)
    assert prefix_len > 5
    frozen = fast_step.frozen_lengths(rows, prefix_len)
    # Where the history is inline, the text before the first placeholder (CoLLM: every title, up to <UserID>;
    # CoLLM-VA: the first title, up to its <Image>), of other lengths in each row, is encoded without gradient;
    # USER-LLM splices its history token right after the prefix.
    assert frozen == [0] * len(rows) if variant == "userllm" else (min(frozen) > 0 and len(set(frozen)) > 1)


@pytest.mark.parametrize("merge_lora", [True, False])
def test_model_weights_untouched_and_prefix_cache_follows_lora_changes(tiny_tokenizer, merge_lora):
    model, processor = build_tiny_model(tiny_tokenizer)
    perturb_lora(model)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    records = make_records(4, seed=3)
    fast_step = assert_same(model, processor, records, merge_lora=merge_lora)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # bit for bit after the merge is undone
    # A LoRA change (e.g. a later step-1 run) must invalidate the prefix cache.
    perturb_lora(model, seed=7)
    batch = dict(processor(records))
    with torch.no_grad(), frozen_lora_merged(model) if merge_lora else nullcontext():
        torch.testing.assert_close(fast_step(batch).logits, model(**batch).logits, atol=1e-5, rtol=1e-5)


def test_merging_a_trainable_lora_is_refused(tiny_tokenizer):
    model, _ = build_tiny_model(tiny_tokenizer)
    model.set_training_step("lora")
    with pytest.raises(ValueError, match="LoRA trains in this step"), frozen_lora_merged(model):
        pass


@requires_smollm2()
def test_fast_step2_equals_plain_path_smollm2():
    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
    torch.manual_seed(0)
    model, processor = create_model_and_processor(
        tokenizer, "userllm", base_model_name_or_path=str(SMOLLM2), num_users=5, num_items=6, dtype=torch.float32
    )
    model.load_collaborative_embeddings(torch.randn(5, 256), torch.randn(6, 256))
    perturb_lora(model)
    # Drop most layers: equality does not depend on depth, and the test stays fast.
    model.language_model.model.layers = model.language_model.model.layers[:4]
    model.config.text_config.num_hidden_layers = 4
    model.language_model.config.num_hidden_layers = 4
    fast_step = assert_same(model, processor, make_records(3, seed=4), atol=1e-4)
    assert fast_step.prefix_length([processor(make_records(1))["input_ids"][0].tolist()]) >= 10


def test_train_two_steps_with_fast_step2(tiny_tokenizer, tmp_path):
    """The schedule runs step 2 through `FastStep2Trainer` and changes only the step-2 modules."""
    from transformers import TrainingArguments

    from modeling_userllm.training import train_two_steps

    from safetensors.torch import load_file

    model, processor = build_tiny_model(tiny_tokenizer)
    perturb_lora(model)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
                             remove_unused_columns=False, label_names=["labels", "user_ids"], report_to="none",
                             use_cpu=True, save_strategy="steps", save_steps=1, disable_tqdm=True)
    trainer = train_two_steps(model, processor, make_records(8, seed=6), args, ["encoders"], fast_step2=True)
    assert type(trainer).__name__ == "FastStep2Trainer"
    encoders = ("model.visual_projector.", "model.collaborative_projector.", "model.history_encoder.")
    changed = {name for name, tensor in model.state_dict().items() if not torch.equal(tensor, before[name])}
    assert changed and all(name.startswith(encoders) for name in changed)
    # A checkpoint saved while the LoRA was merged holds the base weights, not the merged ones.
    saved = load_file(tmp_path / "step2-encoders" / "checkpoint-1" / "model.safetensors")
    base = [name for name in saved if name.endswith("base_layer.weight")]
    assert base and all(torch.equal(saved[name], before[name]) for name in base)
