"""A finished step 1 as a small folder that `--step1_from` loads on another machine: LoRA's weights only.

    python examples/export_step1.py --run OUT --output STEP1      # OUT: a training run whose step 1 finished
    python examples/train.py ... --step1_from STEP1/step1-lora/final

Step 1 trains LoRA alone; the step result (OUT/step1-lora/final/model.safetensors) also holds the encoders at their
initialisation (16 MB for SmolLM2 with the UHEM), which the run that loads it builds again from the same seed and
then trains in step 2. The export keeps LoRA's tensors (about 1.8 MB for SmolLM2 at r=8 on q_proj/v_proj) and the
run's run_config.json and inputs.json, against which `--step1_from` checks the settings and the data and features
files of the run that loads it. Runs of many
hours can so be split at the step boundary across machines that keep nothing but a git repository.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from safetensors.torch import load_file

from modeling_userllm.features.store import atomic_save_safetensors
from modeling_userllm.training.arguments import RUN_CONFIG_FILE
from modeling_userllm.training.inputs import INPUTS_FILE
from modeling_userllm.training.trainer import FINAL_FOLDER

STEP1_FOLDER = "step1-lora"


def export_step1(run: Path, output: Path) -> Path:
    """Writes `output/run_config.json`, `output/inputs.json` (when the run has one) and
    `output/step1-lora/final/model.safetensors` (LoRA's tensors of the run's step-1 result) and returns the folder to
    pass as `--step1_from`.

    Raises:
        SystemExit: the run has no finished step 1 or no run_config.json, or its step result holds no LoRA weights.
    """
    weights = run / STEP1_FOLDER / FINAL_FOLDER / "model.safetensors"
    config = run / RUN_CONFIG_FILE
    for path, what in ((weights, "a finished step 1"), (config, "its settings")):
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing: expected {what} in the training run {run}")
    lora = {name: tensor for name, tensor in load_file(weights).items() if ".lora_A." in name or ".lora_B." in name}
    if not lora:
        raise SystemExit(f"error: {weights} holds no LoRA weights (names with .lora_A. / .lora_B.)")
    target = output / STEP1_FOLDER / FINAL_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(target / "model.safetensors", lora)
    shutil.copyfile(config, output / RUN_CONFIG_FILE)
    if (run / INPUTS_FILE).is_file():  # the data and features files step 1 read, checked by `--step1_from`
        shutil.copyfile(run / INPUTS_FILE, output / INPUTS_FILE)
    return target


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="the training run's output folder (OUT)")
    parser.add_argument("--output", type=Path, required=True, help="the folder to write")
    args = parser.parse_args(argv)
    target = export_step1(args.run, args.output)
    size = (target / "model.safetensors").stat().st_size
    print(f"Wrote {target} ({size / 2**20:.2f} MiB): pass --step1_from {target}")
    return target


if __name__ == "__main__":
    main()
