"""Training and evaluation of USER-LLM: settings, data for the trainer, the two-step schedule.

`EVALUATE_METRIC_PATH` is the `evaluate` metric folder shipped with the package
(`evaluate.load(EVALUATE_METRIC_PATH)` works offline).
"""

from pathlib import Path

from .arguments import (  # noqa: F401
    DataArguments, ModelArguments, PresetError, RunArguments, ScheduleArguments, StepArguments, check_arguments,
    load_preset, parse_arguments,
)
from .datasets import RecordCollator, RunData, check_features, load_data_folder, load_run_data, prepare_toy_data  # noqa: F401
from .trainer import TrainingStopped, UserLLMTrainer, compute_auc_metrics, train_two_steps  # noqa: F401

EVALUATE_METRIC_PATH = str(Path(__file__).resolve().parent / "userllm_auc")
