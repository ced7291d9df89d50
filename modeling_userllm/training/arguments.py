"""Training settings: a YAML preset (`configuration/*.yaml`) and command-line overrides, checked before training.

A preset's sections `data`, `model`, `schedule` and `training` hold the fields of `DataArguments`, `ModelArguments`,
`ScheduleArguments` and `transformers.TrainingArguments`; `HfArgumentParser` parses overrides of any key
(`--variant collm --step1_max_steps 50`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import operator
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..configuration_userllm import PROJECTOR_NORMS, VARIANTS
from ..data.common import EVALUATION_SPLITS as EVAL_SPLITS
from ..data.records import DESCRIPTION_SOURCES as RECORD_DESCRIPTION_SOURCES
from ..modeling_userllm import PAPER_TRAINING_STEPS, TRAINING_STEPS
from ..resources import package_data_dir

PRESET_DIR = package_data_dir("presets")  # configuration/ in the repository
DEFAULT_PRESET = PRESET_DIR / "toy.yaml"
# The frozen LLM's dtypes; trained weights stay float32. float16 would need loss scaling.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Step 1's prompt: "text" (CoLLM's recipe, history titles inline) or "spliced" (the full prompt).
STEP1_PROMPTS = ("text", "spliced")
# "auto": generated descriptions when the features folder has them, else the item table's.
DESCRIPTION_SOURCES = ("auto", *RECORD_DESCRIPTION_SOURCES)
RUN_CONFIG_FILE = "run_config.json"
# Each evaluated row's score: {split: {"user_id", "item_id", "label", "score"}} (score: Yes-minus-No logit).
PREDICTIONS_FILE = "predictions.json"


def step_number(step: str) -> int:
    """1 for "lora", 2 for "encoders", 3 for "joint"."""
    return TRAINING_STEPS.index(step) + 1


class PresetError(ValueError):
    """A setting that cannot work, raised before training; `key` names the setting when there is one."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _is_number(value: Any, integer: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return False
    return integer or math.isfinite(value)


def _refuse(key: str, value: Any, allowed: str) -> PresetError:
    return PresetError(f"{key}={value!r}: expected {allowed}", key=key)


# Settings of the removed parallel UHEMs: refused with a note rather than a guess at another key.
REMOVED_SETTINGS = ("history_encoder_type", "history_encoder_layers", "history_encoder_heads")


def _suggest(name: str, known) -> str:
    if name.lstrip("-") in REMOVED_SETTINGS:
        return (" (removed with the transformer and hierarchical UHEMs: the GRU is the only history encoder; "
                "docs/RESULTS.md keeps their figures)")
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_COMPARISONS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def check_number(key: str, value: Any, bounds: str, none_means: str | None = None, integer: bool = False) -> None:
    """Raises unless `value` is a finite number within `bounds` (">= 0 and < 1"), or None when `none_means` says
    what None does."""
    if value is None and none_means is not None:
        return
    limits = [part.split() for part in bounds.split(" and ")]
    if not (_is_number(value, integer) and all(_COMPARISONS[op](value, float(limit)) for op, limit in limits)):
        null = f", or null ({none_means})" if none_means else ""
        raise _refuse(key, value, f"{'an integer' if integer else 'a number'} {bounds}{null}")


def check_integer(key: str, value: Any, minimum: int, none_means: str | None = None) -> None:
    check_number(key, value, f">= {minimum}", none_means, integer=True)


def check_choice(key: str, value: Any, choices) -> None:
    if value not in choices:
        hint = _suggest(value, choices) if isinstance(value, str) else ""
        raise PresetError(f"unknown {key} {value!r}{hint}; expected one of {list(choices)}", key=key)


def check_list(key: str, value: Any, choices=None, ordered: bool = False) -> None:
    """Raises unless `value` is a non-empty list of distinct non-empty strings (among `choices`, in their order
    when `ordered`); a bare string is refused."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _refuse(key, value, f"a list such as [{', '.join(choices or ['...'])}] (a YAML list; on the command "
                                  f"line: --{key} A B)")
    if not value or len(set(value)) != len(value) or not all(isinstance(name, str) and name for name in value):
        raise _refuse(key, value, "a non-empty list of distinct names" + (f" among {list(choices)}" if choices else ""))
    unknown = [name for name in value if choices is not None and name not in choices]
    if unknown:
        raise PresetError(f"{key}={value!r}: {unknown[0]!r}{_suggest(unknown[0], choices)} is not one of "
                          f"{list(choices)}", key=key)
    in_order = sorted(value, key=list(choices).index) if ordered else list(value)
    if list(value) != in_order:
        raise _refuse(key, value, f"these in the order {list(choices)}, each at most once (here: {in_order})")


def _check_fields(settings: Any, rules: dict[str, tuple], prefix: str = "") -> None:
    """Applies `rules`, `{field: (check, *arguments)}`, naming each field `prefix + field`."""
    for name, (check, *arguments) in rules.items():
        check(prefix + name, getattr(settings, name), *arguments)


@dataclass
class DataArguments:
    """Where the interactions and the offline features come from."""

    _argument_group_name = "data"

    data_dir: str | None = field(default=None, metadata={"help": "Prepared data set. None: the toy data, in OUTPUT/toy/data."})
    features_dir: str | None = field(default=None, metadata={"help": "Features folder (toy data: OUTPUT/toy/features)."})
    description_source: str = field(default="auto", metadata={"help": f"One of {list(DESCRIPTION_SOURCES)}."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Random subset of the training rows (seeded)."})
    max_eval_rows: int | None = field(default=None, metadata={"help": "Evaluate whole users, at most this many rows."})
    eval_splits: list[str] = field(default_factory=lambda: list(EVAL_SPLITS), metadata={"help": "Splits evaluated."})
    toy_seed: int = field(default=0, metadata={"help": "Seed of the embedded toy data set."})
    toy_num_users: int | None = field(default=None, metadata={"help": "Toy data: number of users."})
    toy_num_items: int | None = field(default=None, metadata={"help": "Toy data: number of items."})

    def __post_init__(self) -> None:
        _check_fields(self, {
            "description_source": (check_choice, DESCRIPTION_SOURCES), "eval_splits": (check_list, EVAL_SPLITS),
            "max_train_rows": (check_integer, 1, "every training row"), "max_eval_rows": (check_integer, 1, "the full splits"),
            "toy_seed": (check_integer, 0), "toy_num_users": (check_integer, 1, "the generator's default"),
            "toy_num_items": (check_integer, 1, "the generator's default"),
        })


@dataclass
class ModelArguments:
    """Which system of the paper, around which LLM."""

    _argument_group_name = "model"

    variant: str = field(default="userllm", metadata={"help": f"One of {sorted(VARIANTS)}."})
    base_model_name_or_path: str | None = field(default=None, metadata={"help": "LLM (Hub id or folder); None: a tiny random Llama."})
    toy_hidden_size: int = field(default=64, metadata={"help": "Tiny random Llama: hidden size."})
    toy_num_layers: int = field(default=2, metadata={"help": "Tiny random Llama: decoder layers."})
    max_item_tokens: int = field(default=96, metadata={"help": "Token budget of each item's text."})
    max_history_items: int | None = field(default=None, metadata={"help": "History items kept (None: the data set's n)."})
    item_noun: str = field(default="movie", metadata={"help": "What the prompt calls an item."})
    history_hidden_size: int | None = field(default=None, metadata={"help": "UHEM width (None: the LLM's)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"], metadata={"help": "LoRA targets."})
    projector_norm: str = field(default="none", metadata={"help": f"Spliced-token norm, one of {list(PROJECTOR_NORMS)}."})
    item_ids_after_titles: bool = field(default=False, metadata={"help": "An <ItemID> after each history item (LLaRA)."})
    dtype: str = field(default="float32", metadata={"help": f"Frozen LLM dtype, one of {['auto', *DTYPES]}."})
    light_checkpoints: bool = field(default=False, metadata={"help": "Checkpoints without the frozen base LLM."})
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads of torch (None: torch's default)."})

    def __post_init__(self) -> None:
        positive = (check_integer, 1)
        _check_fields(self, {
            "variant": (check_choice, sorted(VARIANTS)), "toy_hidden_size": positive, "toy_num_layers": positive,
            "max_item_tokens": positive, "max_history_items": (check_integer, 1, "the data set's history length"),
            "history_hidden_size": (check_integer, 1, "the LLM hidden size"),
            "projector_norm": (check_choice, PROJECTOR_NORMS), "lora_r": positive,
            "lora_alpha": (check_number, "> 0"), "lora_dropout": (check_number, ">= 0 and < 1"),
            "lora_target_modules": (check_list,), "num_threads": (check_integer, 1, "torch's default"),
        })
        if not isinstance(self.item_noun, str) or not self.item_noun.strip():
            raise _refuse("item_noun", self.item_noun, "a non-empty word such as 'movie'")
        if self.base_model_name_or_path is None:
            self._check_toy_llama()
        if self.item_ids_after_titles and not VARIANTS[self.variant]["use_collaborative"]:
            raise _refuse("item_ids_after_titles", self.item_ids_after_titles,
                          f"false for variant {self.variant!r}, which has no collaborative embeddings to put there")

    def _check_toy_llama(self) -> None:
        from huggingface_hub.errors import StrictDataclassClassValidationError

        from ..toy_model import tiny_llama_config

        try:
            config = tiny_llama_config(8, self.toy_hidden_size, self.toy_num_layers)
        except (ValueError, StrictDataclassClassValidationError) as error:
            problem = str(error.__cause__ or error)
        else:
            if config.num_attention_heads % config.num_key_value_heads == 0:
                return
            problem = (f"its {config.num_attention_heads} attention heads are not a multiple of its "
                       f"{config.num_key_value_heads} key/value heads")
        raise _refuse("toy_hidden_size", self.toy_hidden_size, "a width the tiny random Llama can have, a multiple of "
                                                               f"32 such as 64 ({problem})")


@dataclass
class StepArguments:
    """The `TrainingArguments` values each step sets itself, as `--step<k>_NAME` (k: 1 lora, 2 encoders, 3 joint)."""

    learning_rate: float = field(default=1e-4, metadata={"help": "learning rate"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "epochs"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps (overrides epochs when > 0)"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "batch size per process"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "gradient accumulation"})
    warmup_steps: float = field(default=0.0, metadata={"help": "warmup (steps, or a fraction < 1)"})

    def check(self, prefix: str) -> None:
        """Raises for a value out of range, naming it `prefix + field` (`step1_learning_rate`)."""
        _check_fields(self, {"learning_rate": (check_number, "> 0"), "per_device_train_batch_size": (check_integer, 1),
                             "gradient_accumulation_steps": (check_integer, 1)}, prefix)
        if not _is_number(self.max_steps, integer=True) or not (self.max_steps == -1 or self.max_steps >= 1):
            raise _refuse(prefix + "max_steps", self.max_steps, f"an integer >= 1, or -1 ({prefix}num_train_epochs decides)")
        if self.max_steps == -1:
            check_number(prefix + "num_train_epochs", self.num_train_epochs, "> 0")
        warmup = self.warmup_steps
        if not (_is_number(warmup) and 0 <= warmup and (warmup < 1 or float(warmup).is_integer())):
            raise _refuse(prefix + "warmup_steps", warmup, "a fraction of the step's training steps in [0, 1), "
                                                           "or a whole number of steps")


STEP_SETTINGS = tuple(f.name for f in dataclasses.fields(StepArguments))


@dataclass
class _ScheduleSettings:
    _argument_group_name = "the two-step schedule (paper Sec. 3.3): each step's own optimizer settings"

    steps: list[str] = field(default_factory=lambda: list(PAPER_TRAINING_STEPS),
                             metadata={"help": "In order: lora (1) and/or encoders (2), the paper's; joint (3)."})
    step1_prompt: str = field(default="text", metadata={"help": f"Step 1's prompt, one of {list(STEP1_PROMPTS)}."})
    prompt_curriculum: bool = field(default=False, metadata={"help": "LLaRA's curriculum in the joint step."})
    resume: bool = field(default=False, metadata={"help": "Continue the run in output_dir (same settings)."})
    step1_from: str | None = field(default=None, metadata={
        "help": "OUT/step1-lora/final loaded as step 1 (of any variant with this step-1 prompt)."})
    fast_step2: bool = field(default=False, metadata={"help": "Step 2 on a cached prompt prefix, frozen LoRA merged."})

    def __post_init__(self) -> None:
        check_list("steps", self.steps, TRAINING_STEPS, ordered=True)
        check_choice("step1_prompt", self.step1_prompt, STEP1_PROMPTS)
        if self.prompt_curriculum and "joint" not in self.steps:
            raise _refuse("prompt_curriculum", self.prompt_curriculum, f"false: it moves the joint step's prompt, and "
                                                                       f"steps {list(self.steps)} have no joint step")
        for step in TRAINING_STEPS:
            self.step(step).check(f"step{step_number(step)}_")

    def step(self, step: str) -> StepArguments:
        """The settings of `step` ("lora", "encoders" or "joint"), from its `step<k>_*` fields."""
        return StepArguments(**{name: getattr(self, f"step{step_number(step)}_{name}") for name in STEP_SETTINGS})

    def step_overrides(self, step: str) -> dict[str, Any]:
        return dataclasses.asdict(self.step(step))


def _copied_fields(source: type, prefix: str, help_of) -> list[tuple]:
    hints = get_type_hints(source)
    return [(prefix + name, hints[name], field(default=source.__dataclass_fields__[name].default,
                                               metadata={"help": help_of(name)})) for name in STEP_SETTINGS]


_STEP_HELP = {f.name: f.metadata["help"] for f in dataclasses.fields(StepArguments)}
# The flat `step<k>_*` fields are the external format: presets, the command line, run_config.json.
ScheduleArguments = dataclasses.make_dataclass(
    "ScheduleArguments",
    [item for number, step in enumerate(TRAINING_STEPS, 1)
     for item in _copied_fields(StepArguments, f"step{number}_", lambda name: f"Step {number} ({step}): {_STEP_HELP[name]}.")],
    bases=(_ScheduleSettings,),
    namespace={"__module__": __name__, "__doc__": "The schedule: which steps, and each one's `StepArguments`."},
)
# `TrainingArguments` shown last in --help, the fields each step sets marked as ignored.
GenericTrainingArguments = dataclasses.make_dataclass(
    "GenericTrainingArguments",
    _copied_fields(TrainingArguments, "", lambda name: f"IGNORED: each step sets it from --step<k>_{name}."),
    bases=(TrainingArguments,),
    namespace={"__module__": __name__, "_argument_group_name": "transformers.TrainingArguments (any field)"},
)

# Defaults that differ from `TrainingArguments`: the paper's optimizer, and what the collator's batches need.
TRAINING_DEFAULTS: dict[str, Any] = {
    "output_dir": "outputs/demo", "optim": "adamw_torch", "weight_decay": 1e-3, "remove_unused_columns": False,
    "label_names": ["labels", "user_ids"], "save_strategy": "steps", "save_steps": 200, "save_total_limit": 2,
    "logging_steps": 10, "dataloader_num_workers": 0, "per_device_eval_batch_size": 32,
    "report_to": "all",  # every installed logger: TensorBoard when installed
}
TRAINING_RULES = {
    "per_device_eval_batch_size": (check_integer, 1), "seed": (check_integer, 0),
    "data_seed": (check_integer, 0, "seed"), "weight_decay": (check_number, ">= 0"),
    "max_grad_norm": (check_number, ">= 0"), "adam_beta1": (check_number, ">= 0 and < 1"),
    "adam_beta2": (check_number, ">= 0 and < 1"), "adam_epsilon": (check_number, "> 0"),
    "dataloader_num_workers": (check_integer, 0), "save_total_limit": (check_integer, 1, "keep every checkpoint"),
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
        """JSON-able sections, as a preset holds them (`OUT/run_config.json`)."""
        training = {key: value for key, value in self.training.to_dict().items() if not key.startswith("_")}
        sections = {name: dataclasses.asdict(getattr(self, name)) for name in ("data", "model", "schedule")}
        return {"preset": self.preset, **sections, "training": json.loads(json.dumps(training, default=str))}


def _field_names(section: type) -> set[str]:
    return {f.name for f in dataclasses.fields(section) if f.init}


def load_preset(path: str | Path) -> dict[str, Any]:
    """Reads a preset into one `{key: value}` dict; a `PresetError` for a missing file or an unknown section or key
    (naming the closest known one)."""
    path = Path(path)
    if not path.is_file() and path.parts and path.parts[0] == "configuration" and (PRESET_DIR.joinpath(*path.parts[1:])).is_file():
        path = PRESET_DIR.joinpath(*path.parts[1:])  # "configuration/NAME.yaml" run from outside the repository
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


def parse_arguments(argv: list[str] | None = None) -> RunArguments:
    """Parses `[--preset FILE] [--key value ...]` (None: `sys.argv[1:]`), overrides over the preset's values, and
    checks the settings (`check_arguments`), not yet against the data. A `PresetError` names where its setting came
    from: the command line, the preset, or a default."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    preset = Path(pre.parse_known_args(argv)[0].preset or DEFAULT_PRESET)
    preset_values = load_preset(preset)
    # argparse lists --preset first, then the groups in this order, the generic TrainingArguments last.
    parser = HfArgumentParser((ScheduleArguments, ModelArguments, DataArguments, GenericTrainingArguments),
                              usage="%(prog)s [--preset FILE] [--KEY VALUE ...]",
                              description="Train and evaluate USER-LLM with the paper's two-step schedule. Any preset "
                                          "key can be overridden with --KEY VALUE.")
    parser.add_argument("--preset", default=None, help="YAML preset (default: configuration/toy.yaml, the toy demo)")
    parser.set_defaults(**{**TRAINING_DEFAULTS, **preset_values})
    try:
        schedule, model, data, training, _, unknown = parser.parse_args_into_dataclasses(
            argv, return_remaining_strings=True, look_for_args_file=False)
        if unknown:
            flags = {f"--{name}" for section in SECTIONS.values() for name in _field_names(section)} | {"--preset"}
            hints = [f"{arg}{_suggest(arg.split('=')[0], flags)}" for arg in unknown if arg.startswith("--")]
            parser.error(f"unrecognized arguments: {' '.join(hints or unknown)} (see --help)")
        for section in (data, model, schedule):
            for name in PATH_SETTINGS:
                if (getattr(section, name, None) or "").startswith("~"):
                    setattr(section, name, str(Path(getattr(section, name)).expanduser()))
        run = RunArguments(data=data, model=model, schedule=schedule, training=training, preset=str(preset))
        check_arguments(run)
    except PresetError as error:
        key = error.key
        if key is None:
            raise
        if any(arg == f"--{key}" or arg.startswith(f"--{key}=") for arg in argv):
            origin = f"command line --{key}"
        else:
            origin = f"preset {preset}" if key in preset_values else "default"
        raise PresetError(f"{origin}: {error}", key=key) from None
    return run


def check_arguments(run: RunArguments) -> None:
    """Checks what spans sections, and the `TrainingArguments` this run relies on; raises `PresetError`."""
    model, schedule, training = run.model, run.schedule, run.training
    for refused, message in (
        (model.dtype == "float16", "dtype 'float16' is not supported for training (it needs loss scaling and overflows "
                                   "Llama activations): use 'bfloat16' (with bf16: true) on GPUs that have it, else 'float32'"),
        (model.dtype not in ("auto", *DTYPES), f"dtype {model.dtype!r}: expected one of {['auto', *DTYPES]}"),
        (schedule.step1_from is not None and "lora" not in schedule.steps,
         f"step1_from is set but steps {schedule.steps} have no step 1 ('lora') for it to replace"),
        (model.light_checkpoints and not model.base_model_name_or_path,
         "light_checkpoints needs base_model_name_or_path (a light checkpoint refetches the base LLM)"),
        (training.remove_unused_columns, "remove_unused_columns must be False: batches are built by the collator from records"),
        (list(training.label_names or []) != ["labels", "user_ids"],
         f"label_names must be ['labels', 'user_ids'] (UAUC needs the user ids), got {training.label_names}"),
    ):
        if refused:
            raise PresetError(message)
    _check_fields(training, TRAINING_RULES)
    if schedule.prompt_curriculum and training.dataloader_num_workers > 0:
        # Each worker would count the batches it builds on its own copy of the collator.
        raise PresetError(f"prompt_curriculum needs dataloader_num_workers 0 (got {training.dataloader_num_workers}): "
                          "the curriculum counts the batches built in the training process")
    if training.save_strategy == "steps":
        check_number("save_steps", training.save_steps, "> 0")


# What must match the run whose step 1 is reused (`step1_from`): all that decides step 1. The variant is
# compared by the prompt step 1 reads (`step1_prompt_form`), so that the text-prompt step 1 of CoLLM and
# CoLLM-VA can be a TALLRec run.
STEP1_SETTINGS = {
    "data": ("data_dir", "features_dir", "description_source", "max_train_rows", "toy_seed", "toy_num_users",
             "toy_num_items"),
    "model": tuple(f.name for f in dataclasses.fields(ModelArguments)
                   if f.name not in ("variant", "light_checkpoints", "num_threads")),
    "schedule": ("step1_prompt", *(f"step1_{name}" for name in STEP_SETTINGS)),
    "training": ("seed", "data_seed", "weight_decay", "optim", "lr_scheduler_type", "adam_beta1", "adam_beta2",
                 "adam_epsilon", "max_grad_norm", "bf16", "fp16"),
}
# What must match the run continued (`resume`): all that decides what any step trains.
RESUME_SETTINGS = {
    "data": STEP1_SETTINGS["data"],
    "model": tuple(f.name for f in dataclasses.fields(ModelArguments) if f.name != "num_threads"),
    "schedule": tuple(f.name for f in dataclasses.fields(ScheduleArguments) if f.name != "resume"),
    "training": (*STEP1_SETTINGS["training"], "lr_scheduler_kwargs", "optim_args", "dataloader_drop_last",
                 "train_sampling_strategy", "neftune_noise_alpha"),
}
PATH_SETTINGS = ("data_dir", "features_dir", "base_model_name_or_path", "step1_from")
# Settings newer than some saved run_config.json files: a file without one ran at this value.
ADDED_SETTINGS = {("model", "projector_norm"): "none", ("model", "item_ids_after_titles"): False,
                  ("schedule", "step1_prompt"): "text", ("schedule", "prompt_curriculum"): False}


def _check_same_settings(run: RunArguments, config_file: Path, settings: dict[str, tuple[str, ...]], problem: str,
                         remedy: str = "") -> None:
    """Raises `problem` listing each key of `settings` (`{section: keys}`) whose value in `run` differs from the
    run_config.json `config_file`'s, as "section.key: VALUE here, VALUE in FILE"; paths are compared resolved."""
    source, mine = json.loads(config_file.read_text(encoding="utf-8")), run.to_dict()
    differences = []
    for section, keys in settings.items():
        for key in keys:
            theirs, ours = source.get(section, {}).get(key, ADDED_SETTINGS.get((section, key))), mine[section].get(key)
            if key in PATH_SETTINGS and theirs is not None and ours is not None:
                theirs, ours = (str(Path(path).expanduser().resolve()) for path in (theirs, ours))
            if theirs != ours:
                differences.append(f"{section}.{key}: {ours!r} here, {theirs!r} in {config_file}")
    if differences:
        raise PresetError(f"{problem}: " + "; ".join(differences) + remedy)


def check_step1_source(run: RunArguments) -> Path | None:
    """The folder `step1_from` names (None when unset), checked to be a finished step 1 of a run with this run's
    `STEP1_SETTINGS` (call it after `resolve_data`)."""
    if run.schedule.step1_from is None:
        return None
    folder = Path(run.schedule.step1_from)
    config_file = folder.parent.parent / RUN_CONFIG_FILE
    if not (folder / "model.safetensors").is_file():
        raise PresetError(f"step1_from {folder}: no model.safetensors there; expected the final/ folder of a finished "
                          "step 1 (OUT/step1-lora/final)")
    if not config_file.is_file():
        raise PresetError(f"step1_from {folder}: {config_file} is missing, so its settings cannot be checked; expected "
                          "OUT/step1-lora/final of a training run")
    problem = f"step1_from {folder} was trained with other step-1 settings"
    theirs = json.loads(config_file.read_text(encoding="utf-8"))
    their_variant = theirs.get("model", {}).get("variant")
    their_prompt = theirs.get("schedule", {}).get("step1_prompt", ADDED_SETTINGS[("schedule", "step1_prompt")])
    if their_variant not in VARIANTS or (step1_prompt_form(their_variant, their_prompt)
                                         != step1_prompt_form(run.model.variant, run.schedule.step1_prompt)):
        raise PresetError(f"{problem}: model.variant: {run.model.variant!r} here, {their_variant!r} in {config_file}; a "
                          "step 1 is shared only between variants whose step-1 prompt is the same (the text prompt "
                          "with titles: tallrec, collm, collm_va, userllm_no_ke; with descriptions: userllm, userllm_no_uhem)")
    _check_same_settings(run, config_file, STEP1_SETTINGS, problem)
    return folder


def step1_prompt_form(variant: str, step1_prompt: str) -> str:
    """What decides the prompt step 1 trains LoRA on: the text prompt writes only the items' text, titles or
    descriptions, whatever else the variant splices in later; the spliced prompt is the variant's own."""
    if step1_prompt == "text":
        return "text with descriptions" if VARIANTS[variant]["use_descriptions"] else "text with titles"
    return variant


def check_resumed_run(run: RunArguments) -> None:
    """With `resume`, checks that `output_dir` holds no run or one with this run's `RESUME_SETTINGS` (call it after
    `resolve_data`, before run_config.json is written)."""
    if not run.schedule.resume:
        return
    output_dir = Path(run.training.output_dir)
    config_file = output_dir / RUN_CONFIG_FILE
    if config_file.is_file():
        _check_same_settings(run, config_file, RESUME_SETTINGS, f"resume: the run in {output_dir} was trained with other "
                             "settings", "; resume it with its own settings, or train into another output_dir")
    elif any(path.is_dir() for path in output_dir.glob("step*-*")):
        raise PresetError(f"resume: {output_dir} holds step folders but no {RUN_CONFIG_FILE}, so the settings they "
                          "were trained with cannot be checked; train into another output_dir")
