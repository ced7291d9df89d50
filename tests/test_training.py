"""Training: presets and their checks, the two steps, checkpoints, resume, several processes."""

import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from conftest import REPO_ROOT, score_in_fresh_process, train_script_signalling_itself
from modeling_userllm.data import RecommendationData, RecordBuilder
from modeling_userllm.features import FeatureStore
from modeling_userllm.metrics import auc_and_uauc
from modeling_userllm.training import (
    PresetError,
    load_data_folder,
    parse_arguments,
    prepare_toy_data,
    train_two_steps,
)
from modeling_userllm.training.arguments import check_resumed_run
from modeling_userllm.training.datasets import RunData
from modeling_userllm.training.output_lock import LOCK_FILE, OutputDirInUseError, output_dir_lock
from modeling_userllm.training.pipeline import build_model, check_inputs, load_data_for_run, resolve_data, run_training
from modeling_userllm.training.trainer import last_complete_checkpoint

TRAIN_SCRIPT = REPO_ROOT / "examples" / "train.py"
EVALUATE_SCRIPT = REPO_ROOT / "examples" / "evaluate.py"
EVAL_ROWS = 37  # at most this many rows, whole users; two processes pad the last batch, whose duplicate must not count


def subset_rows(data_dir, split, seed):
    """Rows of the whole-user evaluation subset that `--max_eval_rows EVAL_ROWS` scores."""
    data = RecommendationData.load(data_dir)
    subset, _ = RunData(data=data, features=None, builder=RecordBuilder(data)).user_subset(split, EVAL_ROWS, seed)
    assert len(subset) <= EVAL_ROWS
    return len(subset)


@pytest.fixture(scope="session")
def toy_dirs(tmp_path_factory):
    """A small toy data set (30 users) with posters and MF tables: (data_dir, features_dir)."""
    return prepare_toy_data(tmp_path_factory.mktemp("toy"), seed=0, num_users=30, num_items=48)


def tiny_argv(output_dir, toy_dirs, *extra):
    """A run of a few steps per training step over the small toy data set and a tiny Llama."""
    data_dir, features_dir = toy_dirs
    return [
        "--output_dir", str(output_dir), "--data_dir", str(data_dir), "--features_dir", str(features_dir),
        "--toy_hidden_size", "32", "--max_item_tokens", "8",
        "--step1_max_steps", "4", "--step2_max_steps", "4",
        "--step1_per_device_train_batch_size", "8", "--step2_per_device_train_batch_size", "8",
        "--step1_learning_rate", "1e-2", "--step2_learning_rate", "1e-2",
        "--save_steps", "2", "--save_total_limit", "3", "--logging_steps", "1",
        "--max_eval_rows", str(EVAL_ROWS), "--per_device_eval_batch_size", "4", "--eval_splits", "valid", "test",
        "--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true",
        *extra,
    ]


def load_train_script():
    spec = importlib.util.spec_from_file_location("train_script", TRAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_subprocess(args, env=None, timeout=300):
    process_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(args, cwd=REPO_ROOT, env=process_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished_run(toy_dirs, tmp_path_factory):
    """One uninterrupted tiny run through `examples/train.py`'s main: (output_dir, metrics, stdout)."""
    output_dir = tmp_path_factory.mktemp("run") / "out"
    metrics = load_train_script().main(tiny_argv(output_dir, toy_dirs))
    return output_dir, metrics


# ----------------------------------------------------------------------------- presets


def test_every_shipped_preset_parses(tmp_path):
    for preset in sorted((REPO_ROOT / "configuration").glob("*.yaml")):
        # use_cpu: the GPU presets ask for bf16, which TrainingArguments rejects on a CPU-only machine.
        run = parse_arguments(["--preset", str(preset), "--output_dir", str(tmp_path), "--use_cpu", "true"])
        assert run.training.weight_decay == pytest.approx(1e-3), preset
        assert run.training.label_names == ["labels", "user_ids"]


def test_command_line_overrides_the_preset():
    run = parse_arguments(["--variant", "collm", "--step2_learning_rate", "0.5", "--seed", "7"])
    assert (run.model.variant, run.schedule.step2_learning_rate, run.training.seed) == ("collm", 0.5, 7)
    assert run.schedule.step_overrides("encoders")["learning_rate"] == 0.5


def test_bad_preset_key_fails_naming_the_key(tmp_path):
    preset = tmp_path / "bad.yaml"
    preset.write_text("training:\n  learning_rat: 0.1\n")
    with pytest.raises(PresetError, match=r"unknown key 'learning_rat' in section 'training' \(did you mean 'learning_rate'\?\)"):
        parse_arguments(["--preset", str(preset)])
    preset.write_text("modle:\n  variant: userllm\n")
    with pytest.raises(PresetError, match="unknown section 'modle'"):
        parse_arguments(["--preset", str(preset)])


def test_unknown_variant_fails_naming_it():
    with pytest.raises(PresetError, match="unknown variant 'colm'.*did you mean 'collm'"):
        parse_arguments(["--variant", "colm"])


def test_removed_history_encoder_settings_fail_saying_so(tmp_path, capsys):
    removed = r"removed with the transformer and hierarchical UHEMs: the GRU is the only history encoder"
    with pytest.raises(SystemExit):
        parse_arguments(["--history_encoder_type", "transformer"])
    assert re.search(rf"unrecognized arguments: --history_encoder_type \({removed}; docs/RESULTS.md", capsys.readouterr().err)
    preset = tmp_path / "old.yaml"
    preset.write_text("model:\n  history_encoder_heads: 4\n")
    with pytest.raises(PresetError, match=rf"unknown key 'history_encoder_heads' in section 'model' \({removed}"):
        parse_arguments(["--preset", str(preset)])


def test_data_folder_of_the_wrong_kind_fails_saying_what_it_is(toy_dirs, tmp_path):
    data_dir, features_dir = toy_dirs
    with pytest.raises(PresetError, match="is a features folder, not a prepared data set"):
        load_data_folder(features_dir)
    with pytest.raises(PresetError, match="is not a prepared data set"):
        load_data_folder(tmp_path)
    with pytest.raises(PresetError, match="does not exist"):
        load_data_folder(tmp_path / "missing")


def test_features_of_the_wrong_size_fail_before_training(toy_dirs, tmp_path):
    data_dir, features_dir = toy_dirs
    store = FeatureStore.load(features_dir)
    bad = tmp_path / "features"
    FeatureStore(image_features=store.image_features[:, :100].contiguous(), image_mask=store.image_mask,
                 user_embeddings=store.user_embeddings, item_embeddings=store.item_embeddings).save(bad)
    run = parse_arguments(tiny_argv(tmp_path / "out", (data_dir, bad)))
    with pytest.raises(PresetError, match=r"image features have shape \(48, 100\), expected \(48, 384\)"):
        run_training(run)
    assert not (tmp_path / "out" / "step1-lora").exists()

    FeatureStore(user_embeddings=store.user_embeddings[:, :64].contiguous(),
                 item_embeddings=store.item_embeddings[:, :64].contiguous()).save(tmp_path / "mf")
    run = parse_arguments(tiny_argv(tmp_path / "out", (data_dir, tmp_path / "mf"), "--variant", "collm"))
    with pytest.raises(PresetError, match=r"user_embeddings has shape \(\d+, 64\), expected \(\d+, 256\)"):
        run_training(run)
    run = parse_arguments(tiny_argv(tmp_path / "out", (data_dir, tmp_path / "mf"), "--variant", "collm_va"))
    with pytest.raises(PresetError, match="uses poster features but .* has no image_features.safetensors"):
        run_training(run)


# ----------------------------------------------------------------------------- the two steps


def test_each_step_trains_only_its_parameters_with_its_own_optimizer(toy_dirs, tmp_path):
    run = parse_arguments(tiny_argv(tmp_path, toy_dirs, "--step1_max_steps", "2", "--step2_max_steps", "2"))
    resolve_data(run)
    run_data = load_data_for_run(run)
    model, processor = build_model(run, run_data)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    optimizers = {}

    from transformers import TrainerCallback

    class RecordOptimizer(TrainerCallback):
        def on_train_end(self, args, state, control, optimizer=None, **kwargs):
            optimizers[Path(args.output_dir).name] = optimizer

    train_two_steps(model, processor, run_data.split("train"), run.training, run.schedule.steps,
                    {step: run.schedule.step_overrides(step) for step in run.schedule.steps},
                    callbacks=[RecordOptimizer()])
    after_step1 = load_file(tmp_path / "step1-lora" / "final" / "model.safetensors")
    after_step2 = model.state_dict()

    def changed(old, new):
        return {name for name in new if name in old and not torch.equal(old[name], new[name])}

    step1_changes = changed(before, after_step1)
    step2_changes = changed(after_step1, after_step2)
    assert step1_changes and all("lora_" in name for name in step1_changes), step1_changes
    encoders = ("model.visual_projector.", "model.collaborative_projector.", "model.history_encoder.")
    assert step2_changes and all(name.startswith(encoders) for name in step2_changes), step2_changes
    assert any(name.startswith("model.history_encoder.") for name in step2_changes)

    step1_params = {id(p) for n, p in model.named_parameters() if "lora_" in n}
    step2_params = {id(p) for n, p in model.named_parameters() if n.startswith(encoders)}
    for folder, expected in (("step1-lora", step1_params), ("step2-encoders", step2_params)):
        optimizer = optimizers[folder]
        assert isinstance(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer, torch.optim.AdamW)
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert in_optimizer == expected, folder
        assert max(group["weight_decay"] for group in optimizer.param_groups) == pytest.approx(1e-3)


def test_a_variant_without_encoders_skips_step_two(toy_dirs, tmp_path):
    metrics = run_training(parse_arguments(tiny_argv(tmp_path, toy_dirs, "--variant", "tallrec")))
    assert (tmp_path / "step1-lora" / "final").is_dir()
    assert not (tmp_path / "step2-encoders").exists()
    saved = load_file(tmp_path / "model" / "model.safetensors")
    assert not any(name.startswith(("model.history_encoder.", "model.visual_projector.", "model.collaborative_projector.")) for name in saved)
    lora_b = [tensor for name, tensor in saved.items() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(tensor) for tensor in lora_b)  # step 1 trained the adapters
    assert metrics["test"]["rows"] > 0 and metrics["test"]["loss"] > 0


# ----------------------------------------------------------------------------- outputs


def test_run_writes_metrics_model_and_loadable_checkpoints(finished_run, toy_dirs, tmp_path):
    output_dir, metrics = finished_run
    written = json.loads((output_dir / "metrics.json").read_text())
    seed = json.loads((output_dir / "run_config.json").read_text())["training"]["seed"]
    assert set(written) >= {"valid", "test"} and written["test"]["rows"] == subset_rows(toy_dirs[0], "test", seed)
    assert written["num_processes"] == 1
    predictions = json.loads((output_dir / "predictions.json").read_text())
    assert set(predictions) == {split for split, values in written.items() if isinstance(values, dict)}
    for split, rows in predictions.items():  # each row once, and the scores give the metrics written
        assert len(rows["score"]) == len(rows["label"]) == written[split]["rows"]
        assert auc_and_uauc(rows["user_id"], rows["label"], rows["score"]) == pytest.approx(
            {"auc": written[split]["auc"], "uauc": written[split]["uauc"]}, abs=1e-6), split
    folders = [output_dir / "model", *sorted(output_dir.glob("step*/checkpoint-*")), *sorted(output_dir.glob("step*/final"))]
    assert len(folders) >= 5
    for folder in folders:
        names = {path.name for path in folder.iterdir()}
        assert {"config.json", "model.safetensors", "modeling_userllm.py", "configuration_userllm.py",
                "processing_userllm.py", "processor_config.json", "tokenizer.json"} <= names, folder
    # The hub-ready folder holds no pickles (checkpoints keep the Trainer's optimizer/RNG state for --resume).
    assert not [path.name for path in (output_dir / "model").iterdir() if path.suffix in (".bin", ".pt", ".pth", ".pkl")]
    assert "AUC" in (output_dir / "model" / "README.md").read_text()

    from conftest import make_records

    from transformers import AutoModel, AutoProcessor

    checkpoint = sorted((output_dir / "step2-encoders").glob("checkpoint-*"))[0]
    model = AutoModel.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    records = [{**record, "user_id": record["user_id"] % 30, "item_id": record["item_id"] % 48} for record in make_records(3)]
    with torch.no_grad():
        expected = model(**processor(records)).logits.tolist()
    assert score_in_fresh_process(checkpoint, records, tmp_path) == pytest.approx(expected, abs=1e-5)


class RecordTrainedSteps(TrainerCallback):
    """Records `(step folder, global step)` of each optimizer step taken in this process."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append((Path(args.output_dir).name, state.global_step))


@pytest.fixture(scope="module")
def killed_run(toy_dirs, tmp_path_factory):
    """A tiny run killed (SIGKILL) right after saving step 2's checkpoint-2: its folder."""
    output_dir = tmp_path_factory.mktemp("killed") / "out"
    killer = train_script_signalling_itself(
        "on_save", 'args.output_dir.endswith("step2-encoders") and state.global_step == 2', "SIGKILL")
    result = run_subprocess([sys.executable, "-c", killer, *tiny_argv(output_dir, toy_dirs)])
    assert result.returncode == -9, result.stderr[-3000:]
    assert (output_dir / "step1-lora" / "final").is_dir()
    assert (output_dir / "step2-encoders" / "checkpoint-2").is_dir()
    assert not (output_dir / "metrics.json").exists()
    return output_dir


def test_sigterm_saves_the_step_under_way_and_the_resumed_run_ends_as_an_uninterrupted_one(
        finished_run, toy_dirs, tmp_path):
    """SIGTERM during step 1's third optimizer step (no checkpoint due there: save_steps=2) saves checkpoint-3 and
    exits 143 naming it, with no final/ and no metrics; `--resume` trains only what is left, to the same metrics."""
    output_dir = tmp_path / "stopped"
    stopper = train_script_signalling_itself(  # on_step_begin of step 3: the stop is asked during it
        "on_step_begin", 'args.output_dir.endswith("step1-lora") and state.global_step == 2', "SIGTERM")
    result = run_subprocess([sys.executable, "-c", stopper, *tiny_argv(output_dir, toy_dirs)])
    assert result.returncode == 143, result.stderr[-3000:]
    assert "stopped: step 1 (lora) stopped by SIGTERM after optimizer step 3 of 4" in result.stderr
    step1 = output_dir / "step1-lora"
    assert last_complete_checkpoint(step1) == str(step1 / "checkpoint-3")
    assert not (step1 / "final").exists() and not (output_dir / "step2-encoders").exists()
    assert not (output_dir / "metrics.json").exists()

    handler = signal.getsignal(signal.SIGTERM)
    metrics, steps, _ = resume_copy_of(output_dir, toy_dirs, tmp_path)
    assert signal.getsignal(signal.SIGTERM) is handler  # given back after each step's train()
    assert steps == [("step1-lora", 4), *(("step2-encoders", step) for step in range(1, 5))]
    for split in ("valid", "test"):
        for name in ("auc", "uauc", "loss"):
            assert metrics[split][name] == pytest.approx(finished_run[1][split][name], abs=1e-4), (split, name)


def resume_copy_of(run_dir, toy_dirs, tmp_path, prepare=None):
    """Resumes a copy of `run_dir` through the script's main: (metrics, steps trained, folder)."""
    output_dir = tmp_path / "resumed"
    shutil.copytree(run_dir, output_dir)
    if prepare is not None:
        prepare(output_dir)
    recorder = RecordTrainedSteps()
    metrics = load_train_script().main(tiny_argv(output_dir, toy_dirs, "--resume"), callbacks=[recorder])
    return metrics, recorder.steps, output_dir


def test_resume_after_a_kill_continues_from_the_last_checkpoint(finished_run, killed_run, toy_dirs, tmp_path, caplog):
    _, uninterrupted = finished_run
    with caplog.at_level(logging.INFO, logger="modeling_userllm"):
        resumed, trained, output_dir = resume_copy_of(killed_run, toy_dirs, tmp_path)
    # Step 1 is loaded, not retrained; step 2 continues at step 3 from checkpoint-2.
    assert trained == [("step2-encoders", 3), ("step2-encoders", 4)]
    assert f"resuming from {output_dir / 'step2-encoders' / 'checkpoint-2'}" in caplog.text
    state = json.loads((output_dir / "step2-encoders" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    for split in ("valid", "test"):
        for name in ("auc", "uauc", "loss"):
            assert resumed[split][name] == pytest.approx(uninterrupted[split][name], abs=1e-4), (split, name)


def test_resume_skips_a_checkpoint_cut_short_by_a_kill(finished_run, killed_run, toy_dirs, tmp_path, caplog):
    def cut_checkpoint_4_short(output_dir):
        # A kill while checkpoint-4 was being saved: its weights half written, no trainer_state.json yet.
        step_dir = output_dir / "step2-encoders"
        shutil.copytree(step_dir / "checkpoint-2", step_dir / "checkpoint-4")
        (step_dir / "checkpoint-4" / "trainer_state.json").unlink()
        weights = step_dir / "checkpoint-4" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    with caplog.at_level(logging.WARNING, logger="modeling_userllm"):
        resumed, trained, output_dir = resume_copy_of(killed_run, toy_dirs, tmp_path, cut_checkpoint_4_short)
    skipped = output_dir / "step2-encoders" / "checkpoint-4"
    assert f"Skipping the incomplete checkpoint {skipped} (no trainer_state.json)" in caplog.text
    assert trained == [("step2-encoders", 3), ("step2-encoders", 4)]
    assert resumed["valid"]["auc"] == pytest.approx(finished_run[1]["valid"]["auc"], abs=1e-4)


def git_output(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def test_a_killed_run_carried_in_git_resumes_elsewhere_with_the_uninterrupted_metrics(
        finished_run, killed_run, toy_dirs, tmp_path, monkeypatch, capsys):
    """`examples/carry_checkpoints.py save`, then `restore` on another machine: the run continues from its last
    complete checkpoint; finished runs, cut-short checkpoints and the repository's HEAD, index and files are left."""
    spec = importlib.util.spec_from_file_location("carry_script", REPO_ROOT / "examples" / "carry_checkpoints.py")
    carry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(carry)
    for name in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{name}_NAME", "test")
        monkeypatch.setenv(f"GIT_{name}_EMAIL", "test@example.com")
    runs = tmp_path / "runs"
    run = runs / "exp" / "collm" / "seed0-abc" / "train"  # a runner's run: run.json beside its training folder
    shutil.copytree(killed_run, run)
    (run.parent / "run.json").write_text('{"system": "collm"}')
    (run.parent / "invocations.json").write_text('[{"wall_s": 5.0, "outcome": "stopped"}]')
    shutil.copytree(finished_run[0], runs / "finished")
    cut_short = run / "step2-encoders" / "checkpoint-4"  # a save in progress while the carry ran
    shutil.copytree(run / "step2-encoders" / "checkpoint-2", cut_short)
    (cut_short / "trainer_state.json").unlink()
    repo = tmp_path / "repo"
    repo.mkdir()
    git_output(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("campaign\n")
    git_output(repo, "add", "README.md")
    git_output(repo, "commit", "-qm", "first")
    head = git_output(repo, "rev-parse", "HEAD")

    carry.main(["save", "--runs", str(runs), "--repo", str(repo)])
    assert f"Carried 1 unfinished run(s) on campaign-checkpoints\n  {run.resolve()}" in capsys.readouterr().out
    carried = git_output(repo, "ls-tree", "-r", "--name-only", "campaign-checkpoints").split()
    assert {"exp/collm/seed0-abc/run.json", "exp/collm/seed0-abc/invocations.json"} <= set(carried)
    assert "exp/collm/seed0-abc/train/step2-encoders/checkpoint-2/optimizer.pt" in carried
    assert "exp/collm/seed0-abc/train/step1-lora/final/model.safetensors" in carried
    assert not [name for name in carried if "step2-encoders/checkpoint-4" in name or "step1-lora/checkpoint" in name
                or name.startswith("finished/") or name.endswith("run.lock")]
    assert git_output(repo, "rev-parse", "HEAD") == head and git_output(repo, "status", "--porcelain") == ""
    assert git_output(repo, "rev-list", "--count", "campaign-checkpoints").strip() == "1"  # no parent

    elsewhere = tmp_path / "elsewhere"
    carry.main(["restore", "--runs", str(elsewhere), "--repo", str(repo)])
    assert f"Wrote {len(carried)} file(s) from campaign-checkpoints" in capsys.readouterr().out
    recorder = RecordTrainedSteps()
    resumed = load_train_script().main(tiny_argv(elsewhere / "exp" / "collm" / "seed0-abc" / "train", toy_dirs,
                                                 "--resume"), callbacks=[recorder])
    assert recorder.steps == [("step2-encoders", 3), ("step2-encoders", 4)]
    for split in ("valid", "test"):
        for name in ("auc", "uauc", "loss"):
            assert resumed[split][name] == pytest.approx(finished_run[1][split][name], abs=1e-4), (split, name)

    # Restoring again over a run that went on here refuses, naming the file, and writes nothing.
    (elsewhere / "exp" / "collm" / "seed0-abc" / "run.json").write_text('{"system": "collm", "went": "on"}')
    (elsewhere / "exp" / "collm" / "seed0-abc" / "train" / "run_config.json").unlink()
    with pytest.raises(SystemExit, match=r"1 file\(s\) under .* differ .*: exp/collm/seed0-abc/run\.json; move"):
        carry.main(["restore", "--runs", str(elsewhere), "--repo", str(repo)])
    assert not (elsewhere / "exp" / "collm" / "seed0-abc" / "train" / "run_config.json").exists()
    with pytest.raises(SystemExit, match=r"--runs .*nowhere is not a folder"):
        carry.main(["save", "--runs", str(tmp_path / "nowhere"), "--repo", str(repo)])
    with pytest.raises(SystemExit, match=r"error: git archive .* failed in .*repo"):
        carry.main(["restore", "--runs", str(elsewhere), "--repo", str(repo), "--branch", "no-such-branch"])


def test_resume_with_other_settings_refuses_naming_each_and_keeps_run_config(finished_run, toy_dirs, tmp_path):
    run_config = tmp_path / "run_config.json"
    shutil.copy(finished_run[0] / "run_config.json", run_config)
    before = run_config.read_bytes()
    run = parse_arguments(tiny_argv(tmp_path, toy_dirs, "--resume", "--step1_learning_rate", "0.5", "--seed", "7"))
    with pytest.raises(PresetError, match=r"resume: the run in .* was trained with other settings: "
                                          r"schedule\.step1_learning_rate: 0\.5 here, 0\.01 in .*; training\.seed: 7 here, 0 in"):
        run_training(run)
    assert run_config.read_bytes() == before
    # What does not change training may differ: evaluation, threads.
    check_resumed_run(parse_arguments(tiny_argv(tmp_path, toy_dirs, "--resume", "--max_eval_rows", "5", "--num_threads", "1")))


@pytest.mark.parametrize("damage, message", [
    ("drop encoder weights", r"step2-encoders/final/model\.safetensors lacks 5 of the weights this step trains: \['model\.history_encoder\."),
    # a step result saved before the base/head split (no `model.` prefix): only the dropped weights are missing
    ("old layout, drop encoder weights", r"model\.safetensors lacks 5 of the weights this step trains: \['model\.history_encoder\."),
    ("truncate", r"step2-encoders/final/model\.safetensors does not read as safetensors"),
])
def test_resume_refuses_a_finished_step_with_damaged_weights(finished_run, toy_dirs, tmp_path, damage, message):
    output_dir = tmp_path / "run"
    shutil.copytree(finished_run[0], output_dir, ignore=shutil.ignore_patterns("model", "metrics.json"))
    weights = output_dir / "step2-encoders" / "final" / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size - 100])
    else:
        state = load_file(weights)
        kept = {name: tensor for name, tensor in state.items() if not name.startswith("model.history_encoder.")}
        if damage.startswith("old layout"):
            kept = {name.removeprefix("model."): tensor for name, tensor in kept.items()}
        save_file(kept, weights)
    with pytest.raises(ValueError, match=message):
        run_training(parse_arguments(tiny_argv(output_dir, toy_dirs, "--resume")))
    assert not (output_dir / "model").exists() and not (output_dir / "metrics.json").exists()


def test_step1_from_a_finished_run_ends_with_its_metrics(finished_run, toy_dirs, tmp_path):
    output_dir, uninterrupted = finished_run
    step1 = output_dir / "step1-lora" / "final"
    reused = run_training(parse_arguments(tiny_argv(tmp_path / "same", toy_dirs, "--step1_from", str(step1))))
    assert not (tmp_path / "same" / "step1-lora").exists()  # step 1 was loaded, not trained
    for split in ("valid", "test"):
        for name in ("auc", "uauc", "loss"):
            assert reused[split][name] == pytest.approx(uninterrupted[split][name], abs=1e-4), (split, name)
    # Another step-2 rate on the same step 1: a different model.
    other = run_training(parse_arguments(tiny_argv(tmp_path / "other", toy_dirs, "--step1_from", str(step1),
                                                   "--step2_learning_rate", "1e-1")))
    assert other["valid"]["loss"] != pytest.approx(uninterrupted["valid"]["loss"], abs=1e-4)


def test_a_step1_exported_as_lora_alone_ends_with_the_metrics_of_the_whole_run(finished_run, toy_dirs, tmp_path):
    spec = importlib.util.spec_from_file_location("export_step1_script", REPO_ROOT / "examples" / "export_step1.py")
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    output_dir, uninterrupted = finished_run
    step1 = export.main(["--run", str(output_dir), "--output", str(tmp_path / "export")])
    saved = load_file(step1 / "model.safetensors")
    assert saved and all(".lora_" in name for name in saved)
    assert (tmp_path / "export" / "inputs.json").read_bytes() == (output_dir / "inputs.json").read_bytes()
    assert len(saved) < len(load_file(output_dir / "step1-lora" / "final" / "model.safetensors"))
    reused = run_training(parse_arguments(tiny_argv(tmp_path / "run", toy_dirs, "--step1_from", str(step1))))
    for split in ("valid", "test"):
        for name in ("auc", "uauc", "loss"):
            assert reused[split][name] == pytest.approx(uninterrupted[split][name], abs=1e-4), (split, name)
    with pytest.raises(SystemExit, match=r"step1-lora/final/model\.safetensors is missing: expected a finished step 1"):
        export.main(["--run", str(tmp_path / "run"), "--output", str(tmp_path / "again")])


def test_resume_and_step1_from_refuse_files_that_changed_in_the_same_folders(finished_run, toy_dirs, tmp_path, caplog):
    """Features rebuilt on another machine lie at the same path: a resumed run compares every file it reads with the
    SHA-256s in the run's inputs.json, a step-1 source the files its step 1 read."""
    copies = data, features = tuple(Path(shutil.copytree(folder, tmp_path / name)) for name, folder in zip(("data", "features"), toy_dirs))
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run[0], run_dir, ignore=shutil.ignore_patterns("model", "metrics.json"))
    config = json.loads((run_dir / "run_config.json").read_text())
    config["data"].update(data_dir=str(data), features_dir=str(features))
    (run_dir / "run_config.json").write_text(json.dumps(config))
    recorded = json.loads((run_dir / "inputs.json").read_text())["files"]
    assert "features/image_features.safetensors" in recorded and "data/interactions/train/data-00000-of-00001.arrow" in recorded
    resume = tiny_argv(run_dir, copies, "--resume")
    assert check_inputs(parse_arguments(resume), None) == recorded  # the same files: accepted

    images = features / "image_features.safetensors"
    tensors = load_file(images)
    save_file({name: tensor + 1e-3 for name, tensor in tensors.items()}, images)
    changed = r"features/image_features\.safetensors: [0-9a-f]{12} here, [0-9a-f]{12} in .*inputs\.json"
    with pytest.raises(PresetError, match=r"resume: the run in .* read other inputs: " + changed):
        run_training(parse_arguments(resume))
    assert not (run_dir / "metrics.json").exists()
    # Step 1 on the text prompt reads the rows and titles, not the image features: it may be shared...
    step1 = run_dir / "step1-lora" / "final"
    other = tiny_argv(tmp_path / "other", copies, "--step1_from", str(step1))
    check_inputs(parse_arguments(other), step1)
    # ...until the rows differ.
    rows = data / "interactions" / "train" / "data-00000-of-00001.arrow"
    rows.write_bytes(rows.read_bytes() + b"\0")
    with pytest.raises(PresetError, match=r"step1_from .* was trained on other inputs: data/interactions/train/data-00000"):
        check_inputs(parse_arguments(other), step1)
    # A run older than inputs.json is resumed with a warning, and no record vouches for what it read before.
    (run_dir / "inputs.json").unlink()
    with caplog.at_level(logging.WARNING, logger="modeling_userllm"):
        assert check_inputs(parse_arguments(resume), None) is None
    assert "inputs.json is missing (the run is older than inputs.json)" in caplog.text


@pytest.mark.parametrize("extra, message", [
    (("--seed", "1"), r"training\.seed: 1 here, 0 in"),
    (("--step1_learning_rate", "5e-2"), r"schedule\.step1_learning_rate: 0\.05 here, 0\.01 in"),
    (("--toy_hidden_size", "64"), r"model\.toy_hidden_size: 64 here, 32 in"),
])
def test_step1_from_refuses_a_run_with_other_step1_settings(finished_run, toy_dirs, tmp_path, extra, message):
    step1 = finished_run[0] / "step1-lora" / "final"
    with pytest.raises(PresetError, match=message):
        run_training(parse_arguments(tiny_argv(tmp_path, toy_dirs, "--step1_from", str(step1), *extra)))
    with pytest.raises(PresetError, match="no model.safetensors"):
        run_training(parse_arguments(tiny_argv(tmp_path, toy_dirs, "--step1_from", str(tmp_path))))
    with pytest.raises(PresetError, match="no step 1"):
        parse_arguments(tiny_argv(tmp_path, toy_dirs, "--step1_from", str(step1), "--steps", "encoders"))


def test_collm_reuses_a_tallrec_run_as_its_step1_and_userllm_does_not(finished_run, toy_dirs, tmp_path):
    """TALLRec trains LoRA on the text prompt with titles, which is CoLLM's step 1: CoLLM may load it (and
    keeps its LoRA, frozen in step 2); USER-LLM's step 1 reads descriptions, so it is refused."""
    tallrec = tmp_path / "tallrec"
    tallrec_metrics = run_training(parse_arguments(tiny_argv(tallrec, toy_dirs, "--variant", "tallrec")))
    step1 = tallrec / "step1-lora" / "final"
    # TALLRec's step 1 loaded (--step1_from, or --resume after a kill during evaluation) leaves only evaluation.
    loaded = run_training(parse_arguments(tiny_argv(tmp_path / "tallrec-loaded", toy_dirs, "--variant", "tallrec",
                                                    "--step1_from", str(step1))))
    (tallrec / "metrics.json").unlink()
    resumed = run_training(parse_arguments(tiny_argv(tallrec, toy_dirs, "--variant", "tallrec", "--resume")))
    for metrics in (loaded, resumed):
        for split in ("valid", "test"):
            assert metrics[split]["auc"] == pytest.approx(tallrec_metrics[split]["auc"], abs=1e-6), split
    collm = tmp_path / "collm"
    metrics = run_training(parse_arguments(tiny_argv(collm, toy_dirs, "--variant", "collm", "--step1_from", str(step1))))
    assert not (collm / "step1-lora").exists() and metrics["test"]["auc"] is not None
    lora = {name: tensor for name, tensor in load_file(step1 / "model.safetensors").items() if "lora_" in name}
    assert lora and all(".lora_" in name for name in lora)
    final = load_file(collm / "step2-encoders" / "final" / "model.safetensors")
    for name, tensor in lora.items():
        torch.testing.assert_close(final[name], tensor, msg=name)
    with pytest.raises(PresetError, match=r"model\.variant: 'userllm' here, 'tallrec' in .*step-1 prompt is the same"):
        run_training(parse_arguments(tiny_argv(tmp_path / "userllm", toy_dirs, "--step1_from", str(step1))))
    # The other way round: a USER-LLM step 1 (descriptions) is no CoLLM step 1 (titles).
    with pytest.raises(PresetError, match=r"model\.variant: 'collm' here, 'userllm' in"):
        run_training(parse_arguments(tiny_argv(tmp_path / "collm2", toy_dirs, "--variant", "collm", "--step1_from",
                                               str(finished_run[0] / "step1-lora" / "final"))))


def test_a_split_of_one_class_is_reported_undefined_and_the_other_splits_are_kept(toy_dirs, tmp_path):
    data_dir, features_dir = toy_dirs
    data = RecommendationData.load(data_dir)
    data.interactions["valid"] = data.interactions["valid"].filter(lambda row: row["label"] == 1)
    positives_only = data.save(tmp_path / "positives-only-valid")
    run = parse_arguments(tiny_argv(tmp_path / "out", (positives_only, features_dir),
                                    "--step1_max_steps", "1", "--step2_max_steps", "1"))
    metrics = run_training(run)
    valid = metrics["valid"]
    assert valid["auc"] is None and valid["uauc"] is None
    assert "0 negatives" in valid["undefined"]["auc"] and "none of the" in valid["undefined"]["uauc"]
    assert valid["rows"] > 0 and valid["loss"] > 0
    assert 0 <= metrics["test"]["auc"] <= 1 and "undefined" not in metrics["test"]
    written = json.loads((tmp_path / "out" / "metrics.json").read_text(),
                         parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}"))
    assert written["valid"]["undefined"] == valid["undefined"]
    assert (tmp_path / "out" / "model" / "README.md").is_file()


def hold_lock(output_dir):
    """A process holding `output_dir/run.lock`, started once it holds it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", f"from filelock import FileLock; lock = FileLock({str(output_dir / LOCK_FILE)!r}); "
                               "lock.acquire(); print('held', flush=True); import time; time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_on_an_output_dir_in_use_stops_naming_the_lock(tmp_path):
    argv = ["--data_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out")]
    holder = hold_lock(tmp_path / "out")
    try:
        with pytest.raises(OutputDirInUseError, match=rf"another run holds {tmp_path / 'out' / 'run.lock'}"):
            run_training(parse_arguments(argv))
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "out" / "run_config.json").exists()


def test_the_lock_of_a_killed_run_does_not_block_and_a_run_releases_its_lock(tmp_path):
    holder = hold_lock(tmp_path / "out")
    holder.kill()
    holder.wait()
    argv = ["--data_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(PresetError, match="does not exist"):
        run_training(parse_arguments(argv))  # got past the lock; fails later, on the data
    with output_dir_lock(tmp_path / "out"):  # released when the run ended, even by an error
        pass


def test_two_process_run_counts_every_evaluation_row_once(finished_run, toy_dirs, tmp_path):
    output_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(TRAIN_SCRIPT),
        *tiny_argv(output_dir, toy_dirs),
    ]
    result = run_subprocess(command, env={"ACCELERATE_USE_CPU": "true"}, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    seed = json.loads((output_dir / "run_config.json").read_text())["training"]["seed"]
    for split in ("valid", "test"):
        assert metrics[split]["rows"] == subset_rows(toy_dirs[0], split, seed)

    data_dir, features_dir = toy_dirs
    single = run_subprocess([
        sys.executable, str(EVALUATE_SCRIPT), "--model", str(output_dir / "model"), "--data", str(data_dir),
        "--features", str(features_dir), "--split", "valid", "test", "--max-rows", str(EVAL_ROWS),
        "--batch-size", "5", "--output", str(tmp_path / "single.json"),
    ])
    assert single.returncode == 0, single.stderr[-4000:]
    single_metrics = json.loads((tmp_path / "single.json").read_text())
    assert single_metrics["num_processes"] == 1
    for split in ("valid", "test"):
        assert single_metrics[split]["rows"] == metrics[split]["rows"]
        for name in ("auc", "uauc"):
            assert metrics[split][name] == pytest.approx(single_metrics[split][name], abs=1e-6), (split, name)


def test_num_threads_is_applied_before_any_work(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # so that the check below cannot pass because torch already ran one thread
    run = parse_arguments(["--num_threads", "1", "--data_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path)])
    try:
        with pytest.raises(PresetError, match="does not exist"):
            run_training(run)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_mf_tables_score_the_same_user_cut_as_a_training_run(toy_dirs):
    from safetensors.torch import load_file

    from modeling_userllm.data import RecommendationData
    from modeling_userllm.metrics import auc_and_uauc

    data_dir, features_dir = toy_dirs
    script = Path(__file__).resolve().parents[1] / "examples" / "evaluate_mf_tables.py"
    command = [sys.executable, str(script), "--data", str(data_dir), "--features", str(features_dir), "--split", "test"]
    whole = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    test = RecommendationData.load(data_dir).interactions["test"]
    tables = load_file(str(Path(features_dir) / "collaborative.safetensors"))
    users, items = torch.tensor(test["user_id"]), torch.tensor(test["item_id"])
    scores = (tables["user_embeddings"][users] * tables["item_embeddings"][items]).sum(1).numpy()
    expected = auc_and_uauc(users.numpy(), torch.tensor(test["label"]).numpy(), scores)
    assert whole["test"]["rows"] == len(test) and whole["test"]["auc"] == pytest.approx(expected["auc"])
    cut = json.loads(subprocess.run([*command, "--max-rows", str(EVAL_ROWS)], capture_output=True, text=True,
                                    check=True).stdout.strip().splitlines()[-1])
    assert 0 < cut["test"]["rows"] <= EVAL_ROWS and cut["test"]["users"] < whole["test"]["users"]
