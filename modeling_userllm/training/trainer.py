"""`UserLLMTrainer` and the paper's two-step schedule (Sec. 3.3) as one call.

Step 1 ("lora") trains LoRA only, by default on the text prompt (CoLLM's recipe); step 2 ("encoders") the UHEM
and the projectors on the full prompt; "joint" (an option) both. Each step is its own `Trainer` (its optimizer
sees only that step's parameters), with its checkpoints in `OUTPUT/step<k>-<name>/`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from transformers import EvalPrediction, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import sort_checkpoints

from ..features.store import match_weight_file_permissions
from ..metrics import UndefinedMetricError, auc_and_uauc
from .arguments import STEP1_PROMPTS, step_number
from .datasets import PromptCurriculumCallback, PromptCurriculumCollator, RecordCollator

logger = logging.getLogger(__name__)

FINAL_FOLDER = "final"


def compute_auc_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
    """AUC, UAUC and the number of rows; `label_ids` is `(labels, user_ids)`. Rows of one class give NaN metrics
    with a warning, so that the loss and the other splits are kept."""
    predictions = eval_prediction.predictions
    scores = predictions[0] if isinstance(predictions, (tuple, list)) else predictions
    labels, user_ids = eval_prediction.label_ids
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    try:
        metrics = auc_and_uauc(np.asarray(user_ids).reshape(-1), labels, np.asarray(scores).reshape(-1))
    except UndefinedMetricError as error:
        logger.warning("AUC and UAUC are undefined on these %d rows: %s", len(labels), error)
        metrics = {"auc": float("nan"), "uauc": float("nan")}
    return {**metrics, "rows": float(len(labels))}


class UserLLMTrainer(Trainer):
    """A `Trainer` for `UserLLMForRecommendation`: `compute_metrics` defaults to AUC/UAUC, and each checkpoint
    loads with `AutoModel.from_pretrained(dir, trust_remote_code=True)`.

    Args:
        light_checkpoints: save only what training changes (needs `config.base_model_name_or_path`).
        *args, **kwargs: as for `transformers.Trainer`; pass the processor as `processing_class`.
    """

    def __init__(self, *args, light_checkpoints: bool = False, **kwargs):
        kwargs.setdefault("compute_metrics", compute_auc_metrics)
        super().__init__(*args, **kwargs)
        self.light_checkpoints = light_checkpoints
        missing = {"labels", "user_ids"} - set(self.args.label_names or [])
        if missing or self.args.remove_unused_columns:
            raise ValueError("UserLLMTrainer needs label_names=['labels', 'user_ids'] and remove_unused_columns=False "
                             f"(got label_names={self.args.label_names}, remove_unused_columns={self.args.remove_unused_columns})")

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.light_checkpoints:
            super()._save(output_dir, state_dict)
        elif self.args.should_save:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            # Under FSDP / ZeRO-3 `save_model` passes the gathered `state_dict` (the module holds a shard).
            self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, light=True, state_dict=state_dict)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
            torch.save(self.args, Path(output_dir) / "training_args.bin")
        if self.args.should_save:
            match_weight_file_permissions(output_dir)


class TrainingStopped(RuntimeError):
    """A step stopped by SIGTERM after saving a checkpoint of the optimizer step it was in; `--resume` continues it."""


class StopOnSigterm(TrainerCallback):
    """Turns SIGTERM (`kill PID`, a scheduler's preemption, the end of a session) into a checkpoint at the end of the
    optimizer step under way and a stop, so that `--resume` goes on from there rather than from the last scheduled
    checkpoint (up to `save_steps` steps earlier). The handler is set while `train()` runs, in the main thread only
    (elsewhere SIGTERM keeps its default); under several processes a stop asked of any one stops all at the same
    step. `stopped_at` is the global step saved, or None."""

    def __init__(self):
        self.requested = False
        self.stopped_at: int | None = None
        self._previous_handler = None

    def _request(self, signum, frame) -> None:
        if not self.requested:
            logger.warning("SIGTERM received: saving a checkpoint at the end of this optimizer step, then stopping")
        self.requested = True

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._request)

    def _stop_requested(self, args) -> bool:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()) or args.world_size == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=args.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._stop_requested(args):
            control.should_save = control.should_training_stop = True
            self.stopped_at = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        self.restore_handler()

    def restore_handler(self) -> None:
        """Gives SIGTERM back its handler from before `train()` (also when `train()` raised)."""
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None


def _load_step_result(model, folder: Path) -> None:
    """Loads the weights saved at the end of a step (full or light) into `model`, set to that step.

    Raises:
        ValueError: the file does not read (cut short), holds unknown weights or lacks trained ones.
    """
    weights = folder / "model.safetensors"
    try:
        state = load_file(weights)
    except SafetensorError as error:
        raise ValueError(f"{weights} does not read as safetensors ({error}); a kill while it was written leaves it "
                         f"cut short: delete {folder} to train that step again from its last checkpoint") from error
    result = model.load_state_dict(state, strict=False)  # renames a step result saved before the base/head split
    if result.unexpected_keys:
        raise ValueError(f"{folder} does not match the model: unexpected weights {result.unexpected_keys[:5]}")
    prefix = f"{model.base_model_prefix}."
    saved = {name if name.startswith(prefix) else prefix + name for name in state}
    missing = [name for name, parameter in model.named_parameters() if parameter.requires_grad and name not in saved]
    if missing:
        raise ValueError(f"{weights} lacks {len(missing)} of the weights this step trains: {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}; the model would keep them untrained")


def _incomplete_checkpoint_reason(checkpoint: Path) -> str | None:
    """Why a `checkpoint-N` folder was cut short, or None. The Trainer writes `trainer_state.json` last, so a
    readable one and weights that read back mean the save finished."""
    try:
        json.loads((checkpoint / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {TRAINER_STATE_NAME}"
    except (ValueError, UnicodeDecodeError):
        return f"{TRAINER_STATE_NAME} is cut short"
    weight_files = sorted(checkpoint.glob("*.safetensors"))
    if not weight_files:
        return "no weights"
    for weight_file in weight_files:
        try:
            with safe_open(str(weight_file), framework="pt"):
                pass
        except SafetensorError as error:
            return f"{weight_file.name} does not read ({error})"
    return None


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest `checkpoint-N` in `folder` whose save finished (others skipped with a warning), or None."""
    for checkpoint in reversed(sort_checkpoints(str(folder))):
        reason = _incomplete_checkpoint_reason(Path(checkpoint))
        if reason is None:
            return checkpoint
        logger.warning("Skipping the incomplete checkpoint %s (%s): resuming from an earlier one", checkpoint, reason)
    return None


def _num_trainable(model, step: str) -> int:
    """The number of parameters `step` trains (the model is left set to `step`)."""
    model.set_training_step(step)
    return sum(param.numel() for param in model.parameters() if param.requires_grad)


def train_two_steps(
    model, processor, train_dataset, args: TrainingArguments, steps: list[str] | tuple[str, ...] = ("lora", "encoders"),
    step_overrides: dict[str, dict] | None = None, *, resume: bool = False, light_checkpoints: bool = False,
    callbacks: list | None = None, fast_step2: bool = False, finished_steps: dict[str, str | Path] | None = None,
    step1_prompt: str = "text", prompt_curriculum: bool = False,
) -> UserLLMTrainer:
    """Runs the schedule: each step with its own Trainer, optimizer and folder `args.output_dir/step<k>-<step>`.

    A step with nothing to train (step 2 of TALLRec) is skipped. With `resume`, a finished step (its `final/`
    exists) is loaded and an unfinished one continues from its last complete checkpoint, so an interrupted run
    ends where an uninterrupted one with the same seed would.

    Args:
        model, processor: a `UserLLMForRecommendation` and its `UserLLMProcessor`.
        train_dataset: records (e.g. `RunData.split("train")`).
        steps: in order, among `"lora"`, `"encoders"` (the paper's) and `"joint"`.
        step_overrides: `{step: {TrainingArguments field: value}}` (`ScheduleArguments.step_overrides`).
        light_checkpoints: checkpoints without the frozen base LLM.
        fast_step2: step 2 through `fast_step2.FastStep2Trainer` (same scores, no LoRA dropout).
        finished_steps: `{step: folder}` of steps trained elsewhere, loaded instead of trained.
        step1_prompt: `"text"` or `"spliced"` (`STEP1_PROMPTS`).
        prompt_curriculum: LLaRA's text-to-full prompt curriculum in the joint step (seeded by `args.seed`).

    Returns:
        The trainer of the last step run (its model is the trained model, set to inference).

    Raises:
        TrainingStopped: SIGTERM arrived while a step trained (`StopOnSigterm`): the optimizer step under way was
            saved as a checkpoint, for `resume`.
    """
    if step1_prompt not in STEP1_PROMPTS:
        raise ValueError(f"step1_prompt {step1_prompt!r}: expected one of {STEP1_PROMPTS}")
    if prompt_curriculum and "joint" not in steps:
        raise ValueError(f"prompt_curriculum applies to the joint step, but steps {list(steps)} have none")
    step_overrides = step_overrides or {}
    finished_steps = finished_steps or {}
    trainer = None
    # The last step with something to train builds the trainer that evaluates, finished or not (TALLRec's step 1
    # loaded by --resume or --step1_from: its step 2 has nothing to train).
    last_step = next((step for step in reversed(steps) if _num_trainable(model, step)), None)
    for step in steps:
        number = step_number(step)
        num_trainable = _num_trainable(model, step)
        if num_trainable == 0:
            logger.info("Step %d (%s): nothing to train for this variant, skipped", number, step)
            continue
        # New TrainingArguments reset the accelerate state: build them only for a step that runs.
        step_args = dataclasses.replace(args, output_dir=str(Path(args.output_dir) / f"step{number}-{step}"),
                                        run_name=f"{args.run_name or Path(args.output_dir).name}-step{number}-{step}",
                                        **step_overrides.get(step, {}))
        final_dir = Path(step_args.output_dir) / FINAL_FOLDER
        finished = Path(finished_steps[step]) if step in finished_steps else None
        if finished is None and resume and (final_dir / "model.safetensors").is_file():
            finished = final_dir
        if finished is not None:
            logger.info("Step %d (%s): already finished, loading %s", number, step, finished)
            _load_step_result(model, finished)
            if step != last_step:
                continue  # only the last step's trainer is needed (it evaluates)
        from .fast_step2 import FastStep2Trainer  # it imports this module

        trainer_class = FastStep2Trainer if fast_step2 and step == "encoders" else UserLLMTrainer
        stopper = StopOnSigterm()
        step_callbacks = [stopper, *(callbacks or [])]
        if prompt_curriculum and step == "joint":
            collator = PromptCurriculumCollator(processor, seed=step_args.seed)
            step_callbacks.append(PromptCurriculumCallback(collator))
        else:
            collator = RecordCollator(processor, text_only=step == "lora" and step1_prompt == "text")
        trainer = trainer_class(model=model, args=step_args, train_dataset=train_dataset, data_collator=collator,
                                processing_class=processor, callbacks=step_callbacks,
                                light_checkpoints=light_checkpoints)
        if finished is not None:
            continue
        checkpoint = last_complete_checkpoint(Path(step_args.output_dir)) if resume and Path(step_args.output_dir).is_dir() else None
        logger.info("Step %d (%s): training %d parameters%s", number, step, num_trainable,
                    f", resuming from {checkpoint}" if checkpoint else "")
        try:
            trainer.train(resume_from_checkpoint=checkpoint)
        finally:
            stopper.restore_handler()
        if stopper.stopped_at is not None and stopper.stopped_at < trainer.state.max_steps:
            raise TrainingStopped(f"step {number} ({step}) stopped by SIGTERM after optimizer step {stopper.stopped_at} "
                                  f"of {trainer.state.max_steps}, saved in {step_args.output_dir}/checkpoint-"
                                  f"{stopper.stopped_at}; continue the run with --resume")
        trainer.save_model(str(final_dir))
        trainer.accelerator.wait_for_everyone()
    model.set_training_step("none")
    model.eval()
    if trainer is None:
        raise ValueError(f"None of the steps {list(steps)} trains anything for this model")
    return trainer
