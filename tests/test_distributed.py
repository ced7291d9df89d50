"""Several CPU processes (gloo): an FSDP run saves the light checkpoint of a single process; SIGTERM to one process
stops all at the same step."""

import os
import subprocess
import sys

import psutil
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO_ROOT, STORIES260K, requires_shared, train_script_signalling_itself
from modeling_userllm.training import prepare_toy_data
from modeling_userllm.training.trainer import last_complete_checkpoint

TRAIN_SCRIPT = REPO_ROOT / "examples" / "train.py"
# FSDP1 as in configuration/accelerate/fsdp.yaml, except the two settings that need an accelerator:
# accelerate's sync_module_states (and so cpu_ram_efficient_loading) asks for a CUDA/XPU/... device.
FSDP_FLAGS = [
    "--use_fsdp", "--fsdp_version", "1", "--fsdp_sharding_strategy", "FULL_SHARD",
    "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer",
    "--fsdp_state_dict_type", "FULL_STATE_DICT", "--fsdp_use_orig_params", "true",
    "--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false",
]


def run_args(output_dir, data_dir, features_dir, batch_size: int) -> list[str]:
    """Two steps of each training step on stories260k with light checkpoints; no dropout, so
    that two processes of `batch_size` and one of twice that see the same global batches."""
    return [
        "--output_dir", str(output_dir), "--data_dir", str(data_dir), "--features_dir", str(features_dir),
        "--base_model_name_or_path", str(STORIES260K), "--light_checkpoints", "true", "--lora_dropout", "0",
        "--max_item_tokens", "8", "--step1_max_steps", "2", "--step2_max_steps", "2",
        "--step1_per_device_train_batch_size", str(batch_size), "--step2_per_device_train_batch_size", str(batch_size),
        "--step1_learning_rate", "1e-2", "--step2_learning_rate", "1e-2",
        "--save_steps", "100", "--max_eval_rows", "8", "--per_device_eval_batch_size", "4", "--eval_splits", "valid",
        "--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true", "--seed", "0",
    ]


@requires_shared(STORIES260K)
@pytest.mark.slow
def test_fsdp_two_cpu_processes_save_the_light_checkpoint_of_one_process(tmp_path):
    data_dir, features_dir = prepare_toy_data(tmp_path / "toy", seed=0, num_users=30, num_items=48)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    fsdp = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", *FSDP_FLAGS, str(TRAIN_SCRIPT),
         *run_args(tmp_path / "fsdp", data_dir, features_dir, batch_size=4)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert fsdp.returncode == 0, fsdp.stderr[-4000:]
    single = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), *run_args(tmp_path / "single", data_dir, features_dir, batch_size=8)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert single.returncode == 0, single.stderr[-4000:]

    sharded = load_file(tmp_path / "fsdp" / "model" / "model.safetensors")
    reference = load_file(tmp_path / "single" / "model" / "model.safetensors")
    assert set(sharded) == set(reference)
    assert not any(name.startswith("model.language_model.") and "lora_" not in name for name in sharded)  # light
    assert all(torch.count_nonzero(tensor) for name, tensor in sharded.items() if "lora_B" in name)  # step 1 trained
    for name, tensor in reference.items():
        torch.testing.assert_close(sharded[name], tensor, rtol=0, atol=5e-5, msg=name)


@requires_shared(STORIES260K)
@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step_with_one_checkpoint(tmp_path):
    """A stop asked of one process only is agreed by all at the end of that optimizer step: each saves its part of
    checkpoint-1 and exits, rather than the other going on alone into a collective that never completes."""
    data_dir, features_dir = prepare_toy_data(tmp_path / "toy", seed=0, num_users=30, num_items=48)
    script = tmp_path / "sigterm_to_rank_1.py"
    script.write_text(train_script_signalling_itself(
        "on_step_begin", 'args.process_index == 1 and args.output_dir.endswith("step1-lora") and state.global_step == 0',
        "SIGTERM"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    output_dir = tmp_path / "ddp"
    stderr_file = tmp_path / "stderr.txt"
    with open(stderr_file, "w") as stderr:
        launch = subprocess.Popen(
            [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",  # DDP on CPU (gloo)
             str(script), *run_args(output_dir, data_dir, features_dir, batch_size=4)],
            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )
        try:
            launch.wait(timeout=180)
        except subprocess.TimeoutExpired:
            for process in [*psutil.Process(launch.pid).children(recursive=True), launch]:
                process.kill()
            launch.wait()
            pytest.fail("the two processes did not stop together: one went on alone and waited in a collective")
    result = subprocess.CompletedProcess(launch.args, launch.returncode, "", stderr_file.read_text())
    assert result.returncode != 0
    assert result.stderr.count("stopped: step 1 (lora) stopped by SIGTERM after optimizer step 1 of 2") == 2, \
        result.stderr[-4000:]
    step1 = output_dir / "step1-lora"
    assert last_complete_checkpoint(step1) == str(step1 / "checkpoint-1")
    assert not (step1 / "final").exists()
