"""Training and evaluation of USER-LLM: presets, data for the trainer, the two-step schedule.

`EVALUATE_METRIC_PATH` is the `evaluate` metric folder shipped with the package
(`evaluate.load(EVALUATE_METRIC_PATH)` works offline).
"""

from pathlib import Path

from .arguments import (
    DataArguments,
    ModelArguments,
    PresetError,
    RunArguments,
    ScheduleArguments,
    check_arguments,
    load_preset,
    parse_arguments,
)
from .datasets import RecordCollator, RunData, check_features, load_data_folder, load_run_data, prepare_toy_data
from .trainer import UserLLMTrainer, compute_auc_metrics, train_two_steps

EVALUATE_METRIC_PATH = str(Path(__file__).resolve().parent / "userllm_auc")

__all__ = [
    "EVALUATE_METRIC_PATH",
    "DataArguments",
    "ModelArguments",
    "PresetError",
    "RecordCollator",
    "RunArguments",
    "RunData",
    "ScheduleArguments",
    "UserLLMTrainer",
    "check_arguments",
    "check_features",
    "compute_auc_metrics",
    "load_data_folder",
    "load_preset",
    "load_run_data",
    "parse_arguments",
    "prepare_toy_data",
    "train_two_steps",
]
