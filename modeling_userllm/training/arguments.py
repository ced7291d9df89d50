"""Training settings: YAML presets + command-line overrides, checked before anything trains.

A preset (`configuration/*.yaml`) has four sections, one per dataclass:

```yaml
data:      {data_dir: ..., features_dir: ..., ...}        # DataArguments
model:     {variant: userllm, base_model_name_or_path: ...} # ModelArguments
schedule:  {step1_learning_rate: ..., step2_...: ...}      # ScheduleArguments (the two steps)
training:  {output_dir: ..., seed: 0, ...}                 # transformers.TrainingArguments
```

Every key can be overridden on the command line with the same name (`--variant collm
--step1_max_steps 50 --output_dir out`), as with `HfArgumentParser`, which parses them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..configuration_userllm import HISTORY_ENCODER_TYPES, VARIANTS
from ..resources import package_data_dir
from ..data.common import EVALUATION_SPLITS as EVAL_SPLITS
from ..data.records import DESCRIPTION_SOURCES as RECORD_DESCRIPTION_SOURCES
from ..modeling_userllm import PAPER_TRAINING_STEPS, TRAINING_STEPS

PRESET_DIR = package_data_dir("presets")  # configuration/ in the repository
DEFAULT_PRESET = PRESET_DIR / "toy.yaml"
# Dtypes of the frozen LLM. What training changes stays float32 either way; bfloat16 runs its
# compute under autocast (`bf16: true`). float16 would need loss scaling, which is not offered.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# "auto": generated descriptions when the features folder has them, else the item table's.
DESCRIPTION_SOURCES = ("auto", *RECORD_DESCRIPTION_SOURCES)


def step_number(step: str) -> int:
    """1 for "lora" (the paper's first step), 2 for "encoders", 3 for "joint" (the option)."""
    return TRAINING_STEPS.index(step) + 1


class PresetError(ValueError):
    """A preset or command-line setting that cannot work; raised before training starts."""


@dataclass
class DataArguments:
    """Where the interactions and the offline features come from."""

    _argument_group_name = "data"

    data_dir: str | None = field(
        default=None,
        metadata={"help": "Prepared data set folder (examples/prepare_data.py). None: the embedded toy data set, "
                          "generated into OUTPUT/toy/data."},
    )
    features_dir: str | None = field(
        default=None,
        metadata={"help": "Features folder (examples/prepare_features.py). None with the toy data: computed into "
                          "OUTPUT/toy/features."},
    )
    description_source: str = field(
        default="auto",
        metadata={"help": "Item descriptions: generated (features descriptions.json), item_table, none, or auto "
                          "(generated when the features folder has them, else the item table)."},
    )
    max_train_rows: int | None = field(default=None, metadata={"help": "Random subset of the training rows (seeded)."})
    max_eval_rows: int | None = field(
        default=None,
        metadata={"help": "Cut each evaluation split to whole users (seeded) holding at most this many rows; "
                          "None: the full split (preferred)."},
    )
    eval_splits: list[str] = field(default_factory=lambda: list(EVAL_SPLITS), metadata={"help": "Splits evaluated at the end."})
    toy_seed: int = field(default=0, metadata={"help": "Seed of the embedded toy data set."})
    toy_num_users: int | None = field(default=None, metadata={"help": "Toy data: number of users (default of the generator)."})
    toy_num_items: int | None = field(default=None, metadata={"help": "Toy data: number of items (default of the generator)."})


@dataclass
class ModelArguments:
    """Which system of the paper, around which LLM."""

    _argument_group_name = "model"

    variant: str = field(default="userllm", metadata={"help": f"One of {sorted(VARIANTS)}."})
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretrained LLM (Hub id or folder). None: a tiny random Llama (toy demo)."}
    )
    toy_hidden_size: int = field(default=64, metadata={"help": "Tiny random Llama: hidden size."})
    toy_num_layers: int = field(default=2, metadata={"help": "Tiny random Llama: decoder layers."})
    max_item_tokens: int = field(default=96, metadata={"help": "Token budget of each item's text; longer texts are cut at a word boundary."})
    max_history_items: int | None = field(default=None, metadata={"help": "History items kept (default: the data set's n)."})
    item_noun: str = field(default="movie", metadata={"help": "What the prompt calls an item."})
    history_encoder_type: str = field(
        default="gru",
        metadata={"help": f"UHEM encoder, one of {list(HISTORY_ENCODER_TYPES)}: the paper's GRU, a parallel transformer encoder, or the transformer over pooled items (hierarchical)."},
    )
    history_hidden_size: int | None = field(default=None, metadata={"help": "UHEM encoder width (None: the LLM hidden size)."})
    history_encoder_layers: int = field(default=1, metadata={"help": "Transformer / hierarchical UHEM: layers."})
    history_encoder_heads: int = field(default=8, metadata={"help": "Transformer / hierarchical UHEM: attention heads."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"], metadata={"help": "LoRA targets."})
    dtype: str = field(default="float32", metadata={"help": f"Dtype of the frozen LLM, one of {list(DTYPES)}; trained weights stay float32."})
    light_checkpoints: bool = field(
        default=False,
        metadata={"help": "Save checkpoints without the frozen base LLM (needs base_model_name_or_path)."},
    )
    num_threads: int | None = field(
        default=None,
        metadata={"help": "CPU threads of torch (None: torch's default). A tiny model runs as fast on one "
                          "thread and much faster than on several when other work shares the cores."},
    )


@dataclass
class ScheduleArguments:
    """The two-step schedule of the paper (Sec. 3.3); each step has its own optimizer."""

    _argument_group_name = "the two-step schedule (paper Sec. 3.3): each step's own optimizer settings"

    steps: list[str] = field(
        default_factory=lambda: list(PAPER_TRAINING_STEPS),
        metadata={"help": "Steps to run, in order: lora (step 1, text prompt) and/or encoders (step 2, full prompt), "
                          "the paper's; or joint (step 3, not the paper's: LoRA and encoders together, full prompt)."},
    )
    step1_learning_rate: float = field(default=1e-4, metadata={"help": "Step 1 (LoRA) learning rate."})
    step1_num_train_epochs: float = field(default=1.0, metadata={"help": "Step 1 epochs."})
    step1_max_steps: int = field(default=-1, metadata={"help": "Step 1 optimizer steps (overrides epochs when > 0)."})
    step1_per_device_train_batch_size: int = field(default=8, metadata={"help": "Step 1 batch size per process."})
    step1_gradient_accumulation_steps: int = field(default=1, metadata={"help": "Step 1 gradient accumulation."})
    step1_warmup_steps: float = field(default=0.0, metadata={"help": "Step 1 warmup (steps, or a fraction < 1)."})
    step2_learning_rate: float = field(default=1e-4, metadata={"help": "Step 2 (UHEM + projectors) learning rate."})
    step2_num_train_epochs: float = field(default=1.0, metadata={"help": "Step 2 epochs."})
    step2_max_steps: int = field(default=-1, metadata={"help": "Step 2 optimizer steps (overrides epochs when > 0)."})
    step2_per_device_train_batch_size: int = field(default=8, metadata={"help": "Step 2 batch size per process."})
    step2_gradient_accumulation_steps: int = field(default=1, metadata={"help": "Step 2 gradient accumulation."})
    step2_warmup_steps: float = field(default=0.0, metadata={"help": "Step 2 warmup (steps, or a fraction < 1)."})
    step3_learning_rate: float = field(default=1e-4, metadata={"help": "Step 3 (joint: LoRA + encoders) learning rate."})
    step3_num_train_epochs: float = field(default=1.0, metadata={"help": "Step 3 epochs."})
    step3_max_steps: int = field(default=-1, metadata={"help": "Step 3 optimizer steps (overrides epochs when > 0)."})
    step3_per_device_train_batch_size: int = field(default=8, metadata={"help": "Step 3 batch size per process."})
    step3_gradient_accumulation_steps: int = field(default=1, metadata={"help": "Step 3 gradient accumulation."})
    step3_warmup_steps: float = field(default=0.0, metadata={"help": "Step 3 warmup (steps, or a fraction < 1)."})
    resume: bool = field(
        default=False, metadata={"help": "Continue an interrupted run in output_dir from its last checkpoint."}
    )
    step1_from: str | None = field(
        default=None,
        metadata={"help": "A finished step 1 (OUT/step1-lora/final of an earlier run) loaded instead of training step 1, "
                          "e.g. to sweep step 2's settings: that run's data, training rows, seed, model and step-1 "
                          "settings must be this run's (checked against its OUT/run_config.json)."},
    )
    fast_step2: bool = field(
        default=False,
        metadata={"help": "Step 2 on a cached key/value prefix with the frozen LoRA merged: same scores and gradients "
                          "as the plain path without LoRA dropout, fewer FLOPs (docs/BENCHMARKS.md)."},
    )

    def step_overrides(self, step: str) -> dict[str, Any]:
        """The `TrainingArguments` values of a step: `step1_*` for "lora", `step2_*` for "encoders", `step3_*` for "joint"."""
        number = step_number(step)
        return {name: getattr(self, f"step{number}_{name}") for name in STEP_SETTINGS}


# `TrainingArguments` fields that each step sets from its own `step1_*` / `step2_*` value: the
# generic flags of the same names are ignored.
STEP_SETTINGS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "warmup_steps")


class GenericTrainingArguments(TrainingArguments):
    """`TrainingArguments`, shown last in `--help` under their own heading."""

    _argument_group_name = ("transformers.TrainingArguments (any field; the per-step ones, "
                            + ", ".join(f"--{name}" for name in STEP_SETTINGS)
                            + ", are IGNORED: use --step1_* / --step2_*)")


# Defaults that differ from `TrainingArguments`: the paper's optimizer, and what the
# collator-built batches need.
TRAINING_DEFAULTS: dict[str, Any] = {
    "output_dir": "outputs/demo",
    "optim": "adamw_torch",
    "weight_decay": 1e-3,
    "remove_unused_columns": False,
    "label_names": ["labels", "user_ids"],
    "save_strategy": "steps",
    "save_steps": 200,
    "save_total_limit": 2,
    "logging_steps": 10,
    "dataloader_num_workers": 0,
    "per_device_eval_batch_size": 32,
    "report_to": "all",  # every installed logger: TensorBoard when installed
}

SECTIONS = {"data": DataArguments, "model": ModelArguments, "schedule": ScheduleArguments, "training": TrainingArguments}


@dataclass
class RunArguments:
    """All settings of one run."""

    data: DataArguments
    model: ModelArguments
    schedule: ScheduleArguments
    training: TrainingArguments
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able sections, as a preset would hold them."""
        training = {key: value for key, value in self.training.to_dict().items() if not key.startswith("_")}
        return {
            "preset": self.preset,
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "schedule": dataclasses.asdict(self.schedule),
            "training": json.loads(json.dumps(training, default=str)),
        }


def _field_names(section: type) -> set[str]:
    return {f.name for f in dataclasses.fields(section) if f.init}


def load_preset(path: str | Path) -> dict[str, Any]:
    """Reads a preset and flattens its sections into one `{key: value}` dict.

    Raises:
        PresetError: the file is missing, a section or a key is unknown (with the closest
            known names), or a key appears in two sections.
    """
    path = Path(path)
    if not path.is_file() and path.parts and path.parts[0] == "configuration" and (PRESET_DIR.joinpath(*path.parts[1:])).is_file():
        # "configuration/NAME.yaml" as the docs write it, run from outside the repository.
        path = PRESET_DIR.joinpath(*path.parts[1:])
    if not path.is_file():
        raise PresetError(f"preset {path} does not exist (presets live in {PRESET_DIR})")
    content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(content, dict):
        raise PresetError(f"preset {path}: expected sections {sorted(SECTIONS)}, got a {type(content).__name__}")
    flat: dict[str, Any] = {}
    for section, values in content.items():
        if section not in SECTIONS:
            raise PresetError(f"preset {path}: unknown section {section!r}{_suggest(section, SECTIONS)}; "
                              f"expected {sorted(SECTIONS)}")
        known = _field_names(SECTIONS[section])
        for key, value in (values or {}).items():
            if key not in known:
                raise PresetError(f"preset {path}: unknown key {key!r} in section {section!r}{_suggest(key, known)}")
            flat[key] = value
    return flat


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_arguments(argv: list[str] | None = None) -> RunArguments:
    """Parses `[--preset FILE] [--key value ...]`: the preset's values, then the overrides.

    Args:
        argv: command-line arguments without the program name; None reads `sys.argv`.

    Returns:
        The run's settings, validated by `check_arguments` (not yet against the data).
    """
    import argparse
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    known, rest = pre.parse_known_args(argv)
    preset = Path(known.preset) if known.preset else DEFAULT_PRESET
    values = {**TRAINING_DEFAULTS, **load_preset(preset)}

    # argparse lists ungrouped options first: --preset, then the groups in this order, the
    # hundreds of generic TrainingArguments last.
    parser = HfArgumentParser((ScheduleArguments, ModelArguments, DataArguments, GenericTrainingArguments),
                              usage="%(prog)s [--preset FILE] [--KEY VALUE ...]", description="Train and evaluate USER-LLM with the paper's two-step schedule. Any preset "
                                          "key can be overridden with --KEY VALUE.")
    parser.add_argument("--preset", default=None, help="YAML preset (default: configuration/toy.yaml, the toy demo)")
    for action in parser._actions:
        if action.dest in STEP_SETTINGS:
            action.help = f"IGNORED: each step sets it from --step1_{action.dest} / --step2_{action.dest}"
    parser.set_defaults(**values)
    try:
        # The namespace left over after the four dataclasses holds only --preset.
        schedule, model, data, training, _ = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    except ValueError as error:
        if "not used by the HfArgumentParser" not in str(error):
            raise
        unknown = [arg for arg in argv if arg.startswith("--") and arg.split("=")[0] not in parser._option_string_actions]
        hints = [f"{arg}{_suggest(arg.split('=')[0], parser._option_string_actions)}" for arg in unknown]
        parser.error(f"unrecognized arguments: {' '.join(hints) or error} (see --help)")
    for section, name in ((data, "data_dir"), (data, "features_dir"), (model, "base_model_name_or_path"),
                          (schedule, "step1_from")):
        value = getattr(section, name)
        if value is not None and value.startswith("~"):
            setattr(section, name, str(Path(value).expanduser()))
    run = RunArguments(data=data, model=model, schedule=schedule, training=training, preset=str(preset))
    check_arguments(run)
    return run


def check_arguments(run: RunArguments) -> None:
    """Checks the settings that need no data: variant, steps, dtype, checkpoint kind.

    Raises:
        PresetError: naming the bad value.
    """
    if run.model.variant not in VARIANTS:
        raise PresetError(f"unknown variant {run.model.variant!r}{_suggest(run.model.variant, VARIANTS)}; "
                          f"expected one of {sorted(VARIANTS)}")
    bad_steps = [step for step in run.schedule.steps if step not in TRAINING_STEPS]
    if bad_steps or not run.schedule.steps:
        raise PresetError(f"steps {run.schedule.steps}: each must be one of {TRAINING_STEPS}")
    if run.model.history_encoder_type not in HISTORY_ENCODER_TYPES:
        raise PresetError(f"history_encoder_type {run.model.history_encoder_type!r}"
                          f"{_suggest(run.model.history_encoder_type, HISTORY_ENCODER_TYPES)}; expected one of {list(HISTORY_ENCODER_TYPES)}")
    if run.model.dtype == "float16":
        raise PresetError("dtype 'float16' is not supported for training (it needs loss scaling and overflows Llama "
                          "activations): use 'bfloat16' (with bf16: true) on GPUs that have it, else 'float32'")
    if run.model.dtype not in DTYPES:
        raise PresetError(f"dtype {run.model.dtype!r}: expected one of {list(DTYPES)}")
    if run.data.description_source not in DESCRIPTION_SOURCES:
        raise PresetError(f"description_source {run.data.description_source!r}: expected one of {DESCRIPTION_SOURCES}")
    bad_splits = [split for split in run.data.eval_splits if split not in EVAL_SPLITS]
    if bad_splits:
        raise PresetError(f"eval_splits {bad_splits}: expected among {EVAL_SPLITS}")
    if run.schedule.step1_from is not None and "lora" not in run.schedule.steps:
        raise PresetError(f"step1_from is set but steps {run.schedule.steps} have no step 1 ('lora') for it to replace")
    if run.model.light_checkpoints and not run.model.base_model_name_or_path:
        raise PresetError("light_checkpoints needs base_model_name_or_path (a light checkpoint refetches the base LLM)")
    if run.training.remove_unused_columns:
        raise PresetError("remove_unused_columns must be False: batches are built by the collator from records")
    if list(run.training.label_names or []) != ["labels", "user_ids"]:
        raise PresetError(f"label_names must be ['labels', 'user_ids'] (UAUC needs the user ids), got {run.training.label_names}")


# What must match between a run and the run whose step 1 it reuses (`step1_from`): everything
# that decides step 1's rows, model and optimisation. Paths are compared resolved.
STEP1_SETTINGS = {
    "data": ("data_dir", "features_dir", "description_source", "max_train_rows", "toy_seed", "toy_num_users",
             "toy_num_items"),
    "model": tuple(f.name for f in dataclasses.fields(ModelArguments) if f.name not in ("light_checkpoints", "num_threads")),
    "schedule": tuple(f"step1_{name}" for name in STEP_SETTINGS),
    "training": ("seed", "data_seed", "weight_decay", "optim", "lr_scheduler_type", "adam_beta1", "adam_beta2",
                 "adam_epsilon", "max_grad_norm", "bf16", "fp16"),
}
PATH_SETTINGS = ("data_dir", "features_dir", "base_model_name_or_path")


def check_step1_source(run: RunArguments) -> Path | None:
    """Checks that `step1_from` is a finished step 1 of a run with this run's step-1 settings.

    Call it once the data folders are resolved (`resolve_data`).

    Returns:
        The folder to load step 1 from, or None when `step1_from` is not set.

    Raises:
        PresetError: the folder holds no `model.safetensors`, its run has no `run_config.json`, or
            a setting differs (each differing key named with both values).
    """
    if run.schedule.step1_from is None:
        return None
    folder = Path(run.schedule.step1_from)
    if not (folder / "model.safetensors").is_file():
        raise PresetError(f"step1_from {folder}: no model.safetensors there; expected the final/ folder of a finished "
                          "step 1 (OUT/step1-lora/final)")
    config_file = folder.parent.parent / "run_config.json"
    if not config_file.is_file():
        raise PresetError(f"step1_from {folder}: {config_file} is missing, so its settings cannot be checked; expected "
                          "OUT/step1-lora/final of a run of examples/train.py")
    source = json.loads(config_file.read_text(encoding="utf-8"))
    mine = run.to_dict()
    differences = []
    for section, keys in STEP1_SETTINGS.items():
        for key in keys:
            theirs, ours = source.get(section, {}).get(key), mine[section].get(key)
            if key in PATH_SETTINGS and theirs is not None and ours is not None:
                theirs, ours = str(Path(theirs).expanduser().resolve()), str(Path(ours).expanduser().resolve())
            if theirs != ours:
                differences.append(f"{section}.{key}: {ours!r} here, {theirs!r} in {config_file}")
    if differences:
        raise PresetError(f"step1_from {folder} was trained with other step-1 settings: " + "; ".join(differences))
    return folder
