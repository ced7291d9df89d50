"""`dtype: auto`: the frozen LLM's dtype chosen from the device, trained weights kept in float32."""

import json

import pytest
import torch
from safetensors import safe_open

from modeling_userllm.modeling_userllm import is_trained_parameter
from modeling_userllm.training import dtype as dtype_module
from modeling_userllm.training.arguments import parse_arguments
from modeling_userllm.training.dtype import resolve_llm_dtype
from modeling_userllm.training.pipeline import build_model, load_data_for_run, resolve_data, run_training

from test_training import tiny_argv, toy_dirs  # noqa: F401  (the session fixture)

CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 fma avx512f {extra}\n\nprocessor\t: 1\n"


@pytest.fixture
def fake_cpu(monkeypatch, tmp_path):
    """Makes the detection read a /proc/cpuinfo whose flags include the given extra ones."""

    def install(extra: str = ""):
        path = tmp_path / "cpuinfo"
        path.write_text(CPUINFO.format(extra=extra))
        monkeypatch.setattr(dtype_module, "CPUINFO", path)

    return install


def test_auto_falls_back_to_float32_on_a_cpu_without_bf16_instructions(fake_cpu):
    fake_cpu("avx512_vnni")
    choice = resolve_llm_dtype("auto", "cpu")
    assert (choice.dtype, choice.attn_implementation) == ("float32", None)
    assert "avx512_bf16" in choice.reason


def test_auto_falls_back_to_float32_when_the_cpu_flags_cannot_be_read(monkeypatch, tmp_path):
    monkeypatch.setattr(dtype_module, "CPUINFO", tmp_path / "missing")
    assert resolve_llm_dtype("auto", "cpu").dtype == "float32"


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_chooses_bfloat16_with_eager_attention_on_a_bf16_cpu(fake_cpu, flag):
    fake_cpu(flag)
    choice = resolve_llm_dtype("auto", "cpu")
    assert (choice.dtype, choice.attn_implementation) == ("bfloat16", "eager")
    assert flag in choice.reason


def test_auto_on_cuda_follows_the_gpu_bf16_support(monkeypatch):
    for supported, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        choice = resolve_llm_dtype("auto", "cuda")
        assert (choice.dtype, choice.attn_implementation) == (expected, None)


def test_an_explicit_dtype_is_kept_and_bfloat16_on_cpu_gets_eager_attention(fake_cpu):
    fake_cpu("")
    assert resolve_llm_dtype("bfloat16", "cpu").attn_implementation == "eager"
    assert resolve_llm_dtype("float32", "cpu").dtype == "float32"


def test_build_model_gives_a_bfloat16_cpu_llm_eager_attention(toy_dirs, tmp_path):  # noqa: F811
    run = parse_arguments(tiny_argv(tmp_path, toy_dirs, "--dtype", "bfloat16"))
    resolve_data(run)
    model, _ = build_model(run, load_data_for_run(run))
    assert model.language_model.dtype == torch.bfloat16
    assert model.config.text_config._attn_implementation == "eager"


def test_auto_bfloat16_run_trains_float32_weights_and_records_its_dtype(fake_cpu, toy_dirs, tmp_path):  # noqa: F811
    fake_cpu("avx512_bf16")
    run = parse_arguments(tiny_argv(tmp_path, toy_dirs, "--dtype", "auto", "--step1_max_steps", "2",
                                    "--step2_max_steps", "2", "--eval_splits", "test"))
    metrics = run_training(run)
    assert 0 <= metrics["test"]["auc"] <= 1
    assert json.loads((tmp_path / "run_config.json").read_text())["model"]["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "model" / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as weights:
        dtypes = {name: weights.get_slice(name).get_dtype() for name in weights.keys()}
    trained = {name: dtype for name, dtype in dtypes.items() if is_trained_parameter(name)
               and not name.endswith(("user_embeddings.weight", "item_embeddings.weight"))}
    assert any("lora_A" in name for name in trained) and any(name.startswith("model.history_encoder.") for name in trained)
    assert set(trained.values()) == {"F32"}, trained
    assert dtypes["model.language_model.model.embed_tokens.weight"] == "BF16"
