"""Publishing: upload folders, cards, push_to_hub, and loading by repo id from a Hub cache."""

import hashlib
import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import DatasetCard, ModelCard
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from conftest import (
    DESCRIPTIONS,
    NUM_ITEMS,
    NUM_USERS,
    REPO_ROOT,
    STORIES260K,
    TITLES,
    make_records,
    perturb_lora,
    requires_shared,
    score_in_fresh_process,
)
from modeling_userllm import UserLLMConfig, UserLLMForRecommendation, UserLLMProcessor, create_model_and_processor, hub
from modeling_userllm.toy_model import build_toy_tokenizer, tiny_llama_config

MODEL_REPO = "userllm-test/userllm-stories260k"
BASE_REPO = "karpathy/stories260k"
METRICS = {
    "valid": {"auc": 0.7123, "uauc": 0.6543},
    "test": {"auc": 0.7011, "uauc": 0.6432},
    "test_short": {"auc": 0.6911, "uauc": 0.6321},
    "test_long": {"auc": 0.7222, "uauc": 0.6654},
}
HUB_CODE_FILES = ("configuration_userllm.py", "modeling_userllm.py", "processing_userllm.py", "pipeline_userllm.py", "ranking.py")


def lay_out_hub_cache(folder: Path, repo_id: str, cache_dir: Path) -> None:
    """Copies `folder` into `cache_dir` exactly as `huggingface_hub` stores a downloaded model repo:
    `models--ORG--NAME/blobs/<sha256>`, `snapshots/<commit>/<file>` -> `../../blobs/<sha256>`,
    and `refs/main` holding the commit."""
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in sorted(folder.iterdir()):
        content = path.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        (snapshot / path.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)


def offline_hub_env(cache_dir: Path, home: Path) -> dict[str, str]:
    return {"HF_HUB_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "HF_TOKEN": ""}


def safetensors_bytes(path: Path) -> int:
    """Bytes of the tensors stored in a safetensors file (without its header)."""
    return sum(tensor.numel() * tensor.element_size() for tensor in load_file(path).values())


@pytest.fixture(scope="module")
def base_llm(tmp_path_factory):
    """The base LLM of the published checkpoints: the real stories260k when present, else a
    tiny random Llama saved as a pretrained folder (so the light path is always tested)."""
    if STORIES260K.exists():
        return {"path": STORIES260K, "tokenizer": AutoTokenizer.from_pretrained(STORIES260K), "name": "stories260k"}
    path = tmp_path_factory.mktemp("tiny-random-llama")
    tokenizer = build_toy_tokenizer(TITLES + DESCRIPTIONS)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(len(tokenizer), hidden_size=32)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return {"path": path, "tokenizer": tokenizer, "name": "tiny random Llama (stories260k absent)"}


@pytest.fixture(scope="module")
def checkpoint(base_llm, tmp_path_factory):
    """A USER-LLM on the base LLM with trained-looking LoRA, saved with its processor; its
    upload folders in both forms; the scores of the original."""
    root = tmp_path_factory.mktemp("checkpoint")
    model, processor = create_model_and_processor(
        base_llm["tokenizer"], "userllm", base_model_name_or_path=str(base_llm["path"]), num_users=NUM_USERS, num_items=NUM_ITEMS
    )
    model.load_collaborative_embeddings(torch.randn(NUM_USERS, 256), torch.randn(NUM_ITEMS, 256))
    perturb_lora(model)
    model.eval()
    records = make_records(4, history_length=3)
    with torch.no_grad():
        expected = model(**processor(records)).logits
    model.save_pretrained(root / "trained")
    processor.save_pretrained(root / "trained")
    folders = {
        form: hub.prepare_upload_folder(
            root / "trained", root / form, repo_id=MODEL_REPO, light=form == "light", base_model=BASE_REPO, metrics=METRICS
        )
        for form in ("full", "light")
    }
    return {"trained": root / "trained", "records": records, "expected": expected, "folders": folders, "config": model.config}


@pytest.mark.parametrize("form", ["full", "light"])
def test_checkpoint_loads_by_repo_id_from_the_hub_cache_in_a_fresh_process(checkpoint, base_llm, form, tmp_path):
    cache = tmp_path / "hub"
    lay_out_hub_cache(checkpoint["folders"][form], MODEL_REPO, cache)
    if form == "light":  # the full form must load alone
        lay_out_hub_cache(base_llm["path"], BASE_REPO, cache)
    scores = score_in_fresh_process(MODEL_REPO, checkpoint["records"], tmp_path, env=offline_hub_env(cache, tmp_path / "home"))
    torch.testing.assert_close(torch.tensor(scores), checkpoint["expected"], atol=1e-5, rtol=0)


def test_light_upload_folder_loads_by_auto_class_on_a_base_llm_given_where_it_is(checkpoint, base_llm, tmp_path):
    """`base_model_name_or_path=` through `AutoModel` in a fresh process: AutoConfig applies it to a config whose
    class is another dynamic-module copy of `UserLLMConfig`; the model must keep that config, not read config.json
    again (which names the base LLM's Hub id, absent offline)."""
    scores = score_in_fresh_process(checkpoint["folders"]["light"], checkpoint["records"], tmp_path,
                                    env=offline_hub_env(tmp_path / "empty-cache", tmp_path / "home"),
                                    load_kwargs={"base_model_name_or_path": str(base_llm["path"])})
    torch.testing.assert_close(torch.tensor(scores), checkpoint["expected"], atol=1e-5, rtol=0)


@requires_shared(STORIES260K)
def test_light_form_is_smaller_by_at_least_the_base_llm(checkpoint, base_llm):
    folders = checkpoint["folders"]
    full = (folders["full"] / "model.safetensors").stat().st_size
    light = (folders["light"] / "model.safetensors").stat().st_size
    base = (base_llm["path"] / "model.safetensors").stat().st_size
    print(f"\nUSER-LLM on {base_llm['name']}: full {full:,} B, light {light:,} B, base LLM {base:,} B")
    assert full - light >= base
    computed = hub.checkpoint_sizes(checkpoint["config"])
    assert computed.full == safetensors_bytes(folders["full"] / "model.safetensors")
    assert computed.light == safetensors_bytes(folders["light"] / "model.safetensors")


def test_vicuna_7b_light_checkpoint_size_from_the_config():
    vicuna_7b = LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048, dtype="float16",
    )
    config = UserLLMConfig.from_variant(
        "userllm", text_config=vicuna_7b, num_users=6040, num_items=3706,
        image_token_id=32000, user_token_id=32001, item_token_id=32002, history_token_id=32003,
        yes_token_id=3869, no_token_id=1939,
    )
    sizes = hub.checkpoint_sizes(config)
    lora_bytes = 32 * 2 * (8 * 4096 + 4096 * 8) * 2  # r=8 on q_proj and v_proj of 32 layers, float16
    gru_bytes = (2 * 3 * 4096 * 4096 + 2 * 3 * 4096) * 2
    print(f"\nVicuna-7B USER-LLM (fp16): full {hub.format_size(sizes.full)}, light {hub.format_size(sizes.light)} "
          f"(LoRA {hub.format_size(lora_bytes)}, UHEM GRU {hub.format_size(gru_bytes)})")
    assert 13.0e9 < sizes.full < 14.5e9
    assert lora_bytes + gru_bytes < sizes.light < 0.03 * sizes.full


def test_rendered_card_passes_metadata_validation_and_shows_the_metrics(tiny_tokenizer):
    config = UserLLMConfig.from_variant(
        "userllm", text_config=tiny_llama_config(len(tiny_tokenizer) + 4, hidden_size=32), base_model_name_or_path=BASE_REPO,
        image_token_id=1, user_token_id=2, item_token_id=3, history_token_id=4, yes_token_id=5, no_token_id=6,
    )
    card = hub.render_model_card(
        config, MODEL_REPO, light=True, metrics=METRICS, dataset_id="userllm-test/ml-100k", license="mit",
        training={"step 1 (LoRA)": {"learning_rate": 1e-4}, "step 2 (UHEM + projectors)": {"learning_rate": 1e-3}},
    )
    parsed = ModelCard(str(card), ignore_metadata_errors=False)  # raises on invalid metadata
    assert parsed.data.base_model == BASE_REPO and parsed.data.library_name == "transformers"
    assert parsed.data.datasets == ["userllm-test/ml-100k"]
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in parsed.data.eval_results}
    assert results == {(split, name.upper()): value for split, values in METRICS.items() for name, value in values.items()}
    assert "| test (long histories) | 0.7222 | 0.6654 |" in card.text
    assert f'AutoModel.from_pretrained("{MODEL_REPO}", trust_remote_code=True)' in card.text
    assert "| step 2 (UHEM + projectors) | learning_rate | 0.001 |" in card.text
    assert "{{" not in card.text and "{%" not in card.text
    assert parsed.data.pipeline_tag == hub.PIPELINE_TAG
    assert f'pipeline(model="{MODEL_REPO}", trust_remote_code=True)' in card.text
    assert "not stored in this checkpoint" in card.text  # no vision encoder: features only


def test_card_names_the_image_encoder_actually_used(tiny_tokenizer):
    from transformers import Dinov2Config

    config = UserLLMConfig.from_variant(
        "userllm", text_config=tiny_llama_config(len(tiny_tokenizer) + 4, hidden_size=32), base_model_name_or_path=BASE_REPO,
        vision_config=Dinov2Config(hidden_size=384, num_hidden_layers=1, num_attention_heads=6),
        vision_model_name_or_path="facebook/dinov2-small",
    )
    card = hub.render_model_card(config, MODEL_REPO, light=True)
    assert "| Image encoder | facebook/dinov2-small (frozen, part of the model" in card.text
    assert "DINO ViT-S" not in card.text


def test_card_names_the_history_encoder(tiny_tokenizer):
    config = UserLLMConfig.from_variant(
        "userllm", text_config=tiny_llama_config(len(tiny_tokenizer) + 4, hidden_size=32), base_model_name_or_path=BASE_REPO
    )
    assert "UHEM, a GRU over the history" in hub.render_model_card(config, MODEL_REPO, light=True).text


def write_run_folder(checkpoint, root: Path, with_metrics_json: bool) -> Path:
    """A training run's layout: OUTPUT/model (the checkpoint and its card) and OUTPUT/metrics.json."""
    import shutil

    model_dir = root / "run" / "model"
    shutil.copytree(checkpoint["trained"], model_dir)
    config = UserLLMConfig.from_pretrained(model_dir)
    hub.render_model_card(config, "userllm-toy", light=False, metrics=METRICS).save(model_dir / "README.md")
    if with_metrics_json:
        run_metrics = {split: {**values, "rows": 10, "users": 3, "loss": 0.6} for split, values in METRICS.items()}
        (root / "run" / "metrics.json").write_text(json.dumps({**run_metrics, "num_processes": 1}))
    return model_dir


@pytest.mark.parametrize("with_metrics_json", [True, False], ids=["run-metrics-json", "trained-card-only"])
def test_dry_run_without_metrics_keeps_what_training_measured(checkpoint, monkeypatch, tmp_path, with_metrics_json):
    monkeypatch.setattr(hub, "HfApi", refuse)
    model_dir = write_run_folder(checkpoint, tmp_path, with_metrics_json)
    out = tmp_path / "preview"
    monkeypatch.setattr(sys, "argv", ["push_to_hub.py", "--model", str(model_dir), "--repo-id", MODEL_REPO, "--dry-run", str(out)])
    assert load_push_script().main() == 0
    card = ModelCard.load(out / "README.md")
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results == {(split, name.upper()): value for split, values in METRICS.items() for name, value in values.items()}
    assert "| test | 0.7011 | 0.6432 |" in card.text


def test_malformed_metrics_are_refused():
    with pytest.raises(ValueError, match="unknown split"):
        hub.validate_metrics({"dev": {"auc": 0.7, "uauc": 0.6}})
    with pytest.raises(ValueError, match=r"metrics\['test'\]\['uauc'\]"):
        hub.validate_metrics({"test": {"auc": 0.7}})


def test_metrics_json_numbers_in_exponent_form_are_read_as_numbers(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"test": {"auc": 0.7, "uauc": 5e-05}}))  # json writes "5e-05", a string to YAML 1.1
    assert hub.read_metrics(path) == {"test": {"auc": 0.7, "uauc": 5e-05}}


def test_dataset_card_shows_the_protocol_and_statistics():
    info = {
        "name": "ml-100k",
        "protocol": {"threshold": 4, "history_length": 5},
        "statistics": {"#User": 943, "#Item": 1682, "#Train": 60000, "#Valid": 7000, "#Test": 7000},
    }
    card = hub.render_dataset_card(info, "userllm-test/ml-100k", license="other")
    parsed = DatasetCard(str(card), ignore_metadata_errors=False)
    assert parsed.data.size_categories == ["10K<n<100K"]
    assert "| #Train | 60,000 |" in card.text and "| threshold | 4 |" in card.text


def _without_login(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))


def refuse(*args, **kwargs):
    """Stands in for what a test forbids (uploading, preparing, unpickling)."""
    raise AssertionError("a forbidden function was called")


def test_push_to_hub_without_a_token_fails_before_any_work(monkeypatch, tmp_path):
    _without_login(monkeypatch, tmp_path)
    monkeypatch.setattr(hub, "HfApi", refuse)
    monkeypatch.setattr(hub, "prepare_upload_folder", refuse)
    with pytest.raises(hub.HubLoginRequiredError, match=r"hf auth login.*HF_TOKEN"):
        hub.push_to_hub(tmp_path / "no-such-model", "org/name")


def load_push_script():
    spec = importlib.util.spec_from_file_location("push_to_hub_script", REPO_ROOT / "examples" / "push_to_hub.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_push_script_without_a_token_prints_how_to_log_in(monkeypatch, tmp_path, capsys):
    _without_login(monkeypatch, tmp_path)
    monkeypatch.setattr(hub, "HfApi", refuse)
    script = load_push_script()
    monkeypatch.setattr(script, "prepare_upload_folder", refuse)
    monkeypatch.setattr(sys, "argv", ["push_to_hub.py", "--model", str(tmp_path / "no-such-model"), "--repo-id", "org/name"])
    assert script.main() == 1
    assert "hf auth login" in capsys.readouterr().err


def test_dry_run_writes_the_upload_folder_and_uploads_nothing(checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_a_token_that_must_not_be_used")
    monkeypatch.setattr(hub, "HfApi", refuse)
    metrics_path = tmp_path / "metrics.json"
    metrics_path.write_text(json.dumps(METRICS))
    out = tmp_path / "preview"
    script = load_push_script()
    monkeypatch.setattr(sys, "argv", [
        "push_to_hub.py", "--model", str(checkpoint["trained"]), "--repo-id", MODEL_REPO,
        "--light", "--base-model", BASE_REPO, "--metrics", str(metrics_path), "--dry-run", str(out),
    ])
    assert script.main() == 0
    assert sorted(path.name for path in out.iterdir()) == sorted([
        "README.md", "config.json", "model.safetensors", *HUB_CODE_FILES, "processor_config.json",
        "tokenizer.json", "tokenizer_config.json",
    ])
    config = json.loads((out / "config.json").read_text())
    assert config["light_checkpoint"] and config["base_model_name_or_path"] == BASE_REPO
    assert config["auto_map"]["AutoModel"] == "modeling_userllm.UserLLMForRecommendation"
    assert "| test | 0.7011 | 0.6432 |" in (out / "README.md").read_text()
    mode = lambda name: (out / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("model.safetensors") == mode("config.json")  # not transformers' 0600


def test_light_form_needs_the_base_llm_hub_id(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="--base-model"):
        hub.prepare_upload_folder(checkpoint["trained"], tmp_path / "out", repo_id=MODEL_REPO, light=True)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A tiny model trained by the toy recipe (`run_training`, a few steps): `OUTPUT/model` and
    `OUTPUT/metrics.json` exactly as training writes them, and the prepared data it used."""
    from modeling_userllm.training.arguments import parse_arguments
    from modeling_userllm.training.datasets import prepare_toy_data
    from modeling_userllm.training.pipeline import run_training

    root = tmp_path_factory.mktemp("toy-run")
    data_dir, features_dir = prepare_toy_data(root / "toy", seed=0, num_users=16, num_items=24)
    run_training(parse_arguments([
        "--output_dir", str(root / "out"), "--data_dir", str(data_dir), "--features_dir", str(features_dir),
        "--toy_hidden_size", "32", "--max_item_tokens", "8", "--step1_max_steps", "2", "--step2_max_steps", "2",
        "--max_eval_rows", "16", "--per_device_eval_batch_size", "8", "--eval_splits", "valid", "test",
        "--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true",
    ]))
    return {"output_dir": root / "out", "data_dir": data_dir, "root": root}


def documented_push_commands() -> list[str]:
    """The `push_to_hub.py` command lines that its `--help` (the script's docstring) and the README show."""
    texts = [(REPO_ROOT / "examples" / "push_to_hub.py").read_text().split('"""')[1], (REPO_ROOT / "README.md").read_text()]
    commands = []
    for text in texts:
        for line in re.sub(r"\\\n\s*", " ", text).splitlines():
            if line.strip().startswith("python examples/push_to_hub.py"):
                commands.append(line.split("#")[0].strip())
    return commands


class RecordingHfApi:
    """Stands in for `HfApi`: keeps a copy of each uploaded folder instead of uploading it."""

    def __init__(self, uploads: list, copies: Path):
        self.uploads, self.copies = uploads, copies

    def create_repo(self, repo_id, **kwargs):
        return repo_id

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        import shutil

        copy = shutil.copytree(folder_path, self.copies / f"upload-{len(self.uploads)}")
        self.uploads.append((repo_id, copy))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/0"})()


def card_results(folder: Path) -> dict:
    return {(r.dataset_split, r.metric_type): r.metric_value for r in ModelCard.load(folder / "README.md").data.eval_results or []}


def test_help_and_readme_show_push_commands():
    commands = documented_push_commands()
    assert len(commands) >= 4 and any("--metrics" in command for command in commands) and any("--light" in command for command in commands)


@pytest.mark.parametrize("command", documented_push_commands(), ids=lambda command: command.split("push_to_hub.py ")[1][:70])
def test_documented_push_command_runs_on_a_trained_model(command, toy_run, checkpoint, monkeypatch, tmp_path):
    """Each command as documented, on a tiny trained model in place of its `outputs/...` run folder (the upload recorded)."""
    import shlex

    runs = {"outputs/demo": toy_run["output_dir"], "outputs/ml100k-smollm2": write_run_folder(checkpoint, tmp_path, True).parent}
    for documented, run in runs.items():
        command = command.replace(documented, str(run))
    uploads = []
    monkeypatch.setattr(hub, "HfApi", lambda token=None: RecordingHfApi(uploads, tmp_path))
    monkeypatch.setenv("HF_TOKEN", "hf_a_token_for_the_recording_api")
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(command)[1:]
    monkeypatch.setattr(sys, "argv", argv)
    assert load_push_script().main() == 0
    if "--dry-run" in argv:
        assert not uploads
        folder = tmp_path / argv[argv.index("--dry-run") + 1]
    else:
        [(repo_id, folder)] = uploads
        assert repo_id == argv[argv.index("--repo-id") + 1]
    run_dir = Path(argv[argv.index("--model") + 1]).parent
    trained = {split: values for split, values in json.loads((run_dir / "metrics.json").read_text()).items() if isinstance(values, dict)}
    assert trained and card_results(folder) == {(split, metric_type): round(trained[split][metric], 4)
                                                for split in trained for metric, (metric_type, _) in hub.METRIC_NAMES.items()}
    config = json.loads((folder / "config.json").read_text())
    if "--base-model" in argv:
        assert config["base_model_name_or_path"] == argv[argv.index("--base-model") + 1]
    assert config["light_checkpoint"] == ("--light" in argv)


def test_a_split_whose_auc_is_undefined_is_left_out_of_the_card_with_its_reason(tmp_path, caplog):
    path = tmp_path / "metrics.json"
    reason = "AUC is undefined: every one of the 5 rows has label 1"
    path.write_text(json.dumps({"valid": METRICS["valid"], "test": {"auc": None, "uauc": None, "rows": 5, "undefined": {
        "auc": reason, "uauc": reason}}, "num_processes": 2}))
    with caplog.at_level("WARNING", logger="modeling_userllm"):
        assert hub.read_metrics(path) == {"valid": METRICS["valid"]}
    assert "'test' is left out of the card" in caplog.text and reason in caplog.text
    with pytest.raises(ValueError, match="unknown split"):
        hub.run_metrics({"dev": {"auc": 0.7, "uauc": 0.6}})


@pytest.mark.parametrize("form, base_model", [("full", None), ("full", BASE_REPO), ("light", BASE_REPO)])
def test_upload_folder_holds_no_local_path(checkpoint, base_llm, toy_run, monkeypatch, tmp_path, form, base_model):
    out = tmp_path / "preview"
    monkeypatch.setattr(hub, "HfApi", refuse)
    monkeypatch.setattr(sys, "argv", [
        "push_to_hub.py", "--model", str(checkpoint["trained"]), "--repo-id", MODEL_REPO, "--dry-run", str(out),
        "--data", str(toy_run["data_dir"]), *(["--light"] if form == "light" else []),
        *(["--base-model", base_model] if base_model else []),
    ])
    assert load_push_script().main() == 0
    base = Path(base_llm["path"])
    local_paths = {str(base), str(base.resolve()), str(checkpoint["trained"].parent), str(toy_run["root"]), str(REPO_ROOT)}
    leaks = sorted((path.name, local) for path in out.rglob("*") if path.is_file()
                   for local in local_paths if local.encode() in path.read_bytes())
    assert not leaks
    card = (out / "README.md").read_text()
    assert f"| Base LLM | `{base_model}` |" in card if base_model else f"| Base LLM | `{base.name}` (a local folder, not on the Hub) |" in card
    config = json.loads((out / "config.json").read_text())
    assert config["base_model_name_or_path"] == base_model and config["text_config"].get("_name_or_path", "") == (base_model or "")


def test_published_config_names_no_local_vision_encoder(tmp_path):
    from transformers import Dinov2Config

    local = str(tmp_path / "dinov2-small")
    config = UserLLMConfig.from_variant(
        "userllm", text_config=tiny_llama_config(64, hidden_size=32), base_model_name_or_path=str(tmp_path / "llm"),
        vision_config=Dinov2Config(hidden_size=384, num_hidden_layers=1, num_attention_heads=6, name_or_path=local),
        vision_model_name_or_path=local,
    )
    hub.keep_hub_names_only(config)
    assert str(tmp_path) not in config.to_json_string()
    config.vision_model_name_or_path = "facebook/dinov2-small"
    hub.keep_hub_names_only(config)
    assert config.vision_config._name_or_path == "facebook/dinov2-small"


def test_only_safetensors_are_written_and_loading_never_unpickles(checkpoint, base_llm, monkeypatch, tmp_path):
    for folder in checkpoint["folders"].values():
        assert not [p.name for p in folder.rglob("*") if p.suffix in hub.PICKLE_WEIGHT_SUFFIXES]
    cache = tmp_path / "hub"
    lay_out_hub_cache(base_llm["path"], BASE_REPO, cache)

    for target in ("torch.load", "pickle.load", "pickle.loads", "pickle.Unpickler"):
        monkeypatch.setattr(target, refuse)
    batch = checkpoint["records"]
    processor = UserLLMProcessor.from_pretrained(checkpoint["folders"]["full"])
    for folder in checkpoint["folders"].values():
        model = UserLLMForRecommendation.from_pretrained(folder, cache_dir=cache, local_files_only=True).eval()
        with torch.no_grad():
            scores = model(**processor(batch)).logits
        torch.testing.assert_close(scores, checkpoint["expected"], atol=1e-5, rtol=0)
    monkeypatch.undo()
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((checkpoint["folders"]["full"] / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps({}))
    with pytest.raises(OSError, match="model.safetensors"):
        UserLLMForRecommendation.from_pretrained(pickled)


AUDITED_IMPORT = r"""
import ast, importlib, json, sys, types
from pathlib import Path
sys.modules["modeling_userllm"] = None
folder = Path(sys.argv[1])
files = [folder / name for name in sys.argv[2:]]
# Import the files' own dependencies first: only what the files themselves do is audited.
for path in files:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and not node.level):
            exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), {})
AUDITED = ("open", "os.listdir", "os.scandir", "os.mkdir", "os.remove", "os.rename", "subprocess.Popen", "os.system",
           "urllib.Request", "socket.")
events = []
def audit(event, args):
    if not event.startswith(AUDITED):
        return
    frame = sys._getframe(0).f_back
    # Reading module sources and listing folders to import them is the import system's work.
    if frame is None or frame.f_code.co_filename.startswith("<frozen importlib"):
        return
    while frame is not None and Path(frame.f_code.co_filename).parent != folder:
        frame = frame.f_back
    events.append((event, Path(frame.f_code.co_filename).name if frame else "elsewhere"))
package = types.ModuleType("hubcopy")
package.__path__ = [str(folder)]
sys.modules["hubcopy"] = package
sys.addaudithook(audit)
for path in files:
    importlib.import_module("hubcopy." + path.stem)
print("EVENTS=" + json.dumps(events))
"""
DECOY = "import socket\nopen(__file__).close()\nsocket.socket().close()\n"


def test_importing_the_hub_copied_code_has_no_side_effect(checkpoint, tmp_path):
    folder = tmp_path / "code"
    folder.mkdir()
    for name in HUB_CODE_FILES:
        (folder / name).write_text((checkpoint["folders"]["light"] / name).read_text())
    # A module with side effects shows that the audit sees them.
    (folder / "decoy.py").write_text(DECOY)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", AUDITED_IMPORT, str(folder), *HUB_CODE_FILES, "decoy.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = json.loads(result.stdout.split("EVENTS=")[1])
    assert sorted(map(tuple, events)) == [("open", "decoy.py"), ("socket.__new__", "decoy.py")], events


@pytest.mark.parametrize("steps, expected", [(None, "Two steps (paper, Sec. 3.3)"),
                                             (["joint"], "**LoRA, the UHEM and the projectors together**")])
def test_card_describes_the_schedule_the_run_trained(checkpoint, tmp_path, steps, expected):
    model_dir = write_run_folder(checkpoint, tmp_path, with_metrics_json=True)
    if steps is not None:
        run_config = {"schedule": {"steps": steps, "step3_learning_rate": 0.003}, "data": {"max_train_rows": 4096}}
        (model_dir.parent / "run_config.json").write_text(json.dumps(run_config))
    folder = hub.prepare_upload_folder(model_dir, tmp_path / "upload", repo_id=MODEL_REPO, light=True, base_model=BASE_REPO)
    card = (folder / "README.md").read_text()
    assert expected in card
    assert ("| joint | learning_rate | 0.003 |" in card) == (steps is not None)
    assert ("Two steps" in card) == (steps is None)
