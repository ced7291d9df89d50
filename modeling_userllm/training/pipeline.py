"""One training run end to end: data, model, the two steps, evaluation, the hub-ready folder.

`run_training(run)` is what `examples/train.py` does, under `python` or `accelerate launch`:

    OUTPUT/step1-lora/       checkpoints of step 1, and final/ when it finished
    OUTPUT/step2-encoders/   the same for step 2
    OUTPUT/model/            weights, config with auto_map, code, processor, README.md card
    OUTPUT/metrics.json      {"valid": {"auc", "uauc", ...}, "test": ..., "test_short": ..., "test_long": ...}
    OUTPUT/run_config.json   every setting of the run
    OUTPUT/run.lock          while the run is going (`output_lock`: one run per folder)
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer, ProgressCallback, TrainingArguments

from ..configuration_userllm import VARIANTS
from ..factory import create_model_and_processor
from ..features.store import atomic_write_json
from ..features.visual import load_image_encoder, toy_image_encoder
from ..metrics import undefined_metrics
from ..toy_model import build_toy_tokenizer, tiny_llama_config
from .arguments import DTYPES, RUN_CONFIG_FILE, PresetError, RunArguments, check_resumed_run, check_step1_source, step_number
from .datasets import RecordCollator, RunData, history_items_for_split, load_run_data, prepare_toy_data, with_history_items
from .dtype import resolve_llm_dtype
from .output_lock import output_dir_lock
from .trainer import UserLLMTrainer, train_two_steps

logger = logging.getLogger(__name__)
# How the features' manifest names the seeded stand-in encoder of the toy data set.
TOY_IMAGE_ENCODER = "toy_image_encoder(seed=0)"


def resolve_data(run: RunArguments) -> None:
    """Prepares the embedded toy data set when no data folder is given (main process first)."""
    if run.data.data_dir is not None:
        return
    if run.data.features_dir is not None:
        raise PresetError("features_dir is set but data_dir is not: give both, or neither for the toy data set")
    with run.training.main_process_first(desc="preparing the toy data set"):
        data_dir, features_dir = prepare_toy_data(
            Path(run.training.output_dir) / "toy", run.data.toy_seed, run.data.toy_num_users, run.data.toy_num_items
        )
    run.data.data_dir, run.data.features_dir = str(data_dir), str(features_dir)


def load_data_for_run(run: RunArguments) -> RunData:
    """The run's data, checked against what its variant needs."""
    switches = VARIANTS[run.model.variant]
    return load_run_data(
        run.data,
        use_visual=switches["use_visual"],
        use_collaborative=switches["use_collaborative"],
        use_descriptions=switches["use_descriptions"],
    )


def build_model(run: RunArguments, run_data: RunData):
    """A fresh model and processor of the run's variant, with the MF tables loaded.

    Without `base_model_name_or_path` the LLM is a tiny random Llama over a word-level
    tokenizer of the data set's texts (the embedded default).
    """
    model_args = run.model
    data = run_data.data
    if model_args.base_model_name_or_path is None:
        texts = list(data.items["title"]) + [text for text in run_data.builder.descriptions if text]
        tokenizer = build_toy_tokenizer(texts, item_noun=model_args.item_noun)
        # The tokenizer's special tokens in the config: the Trainer would otherwise align (and warn about) them.
        special = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("pad", "bos", "eos")}
        source = {"text_config": tiny_llama_config(len(tokenizer) + 4, model_args.toy_hidden_size, model_args.toy_num_layers,
                                                   **special)}
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_args.base_model_name_or_path)
        source = {"base_model_name_or_path": model_args.base_model_name_or_path}
    llm_dtype = resolve_llm_dtype(model_args.dtype, run.training.device)
    torch.manual_seed(run.training.seed)
    model, processor = create_model_and_processor(
        tokenizer,
        model_args.variant,
        **source,
        num_users=data.num_users,
        num_items=data.num_items,
        max_item_tokens=model_args.max_item_tokens,
        max_history_items=model_args.max_history_items or data.info["protocol"]["history_length"],
        item_noun=model_args.item_noun,
        dtype=DTYPES[llm_dtype.dtype],
        lora_r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        lora_target_modules=list(model_args.lora_target_modules),
        history_encoder_type=model_args.history_encoder_type,
        history_hidden_size=model_args.history_hidden_size,
        history_encoder_layers=model_args.history_encoder_layers,
        history_encoder_heads=model_args.history_encoder_heads,
        projector_norm=model_args.projector_norm,
        item_ids_after_titles=model_args.item_ids_after_titles,
    )
    if llm_dtype.attn_implementation is not None:
        model.language_model.set_attn_implementation(llm_dtype.attn_implementation)
    if model.config.use_collaborative:
        features = run_data.features
        model.load_collaborative_embeddings(features.user_embeddings, features.item_embeddings)
    return model, processor


class LabelledProgressCallback(ProgressCallback):
    """The Trainer's progress bars, the evaluation bar labelled with what it evaluates (`label`)."""

    label: str | None = None

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        new_bar = self.prediction_bar is None
        super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)
        if new_bar and self.prediction_bar is not None and self.label:
            self.prediction_bar.set_description(self.label)


def label_evaluation_progress(trainer: UserLLMTrainer, label: str) -> None:
    """Labels the trainer's evaluation progress bar (when it shows one) with `label`."""
    callbacks = trainer.callback_handler.callbacks
    progress = next((callback for callback in callbacks if isinstance(callback, ProgressCallback)), None)
    if progress is None:
        return
    if not isinstance(progress, LabelledProgressCallback):
        trainer.remove_callback(progress)
        progress = LabelledProgressCallback()
        trainer.add_callback(progress)
    progress.label = label


def evaluate_splits(trainer: UserLLMTrainer, run_data: RunData, splits, max_rows: int | None, seed: int) -> dict:
    """`{split: {"auc", "uauc", "rows", "users", "loss", "history_items"}}` on the full prompt,
    each row counted once.

    `max_rows` cuts a split to whole users (`RunData.user_subset`). `test_long` is scored
    with the data set's long histories: its processor keeps `long_history_length` items
    (Table 5), the other splits the model's own `max_history_items`. A metric the split's
    labels cannot define (one class only) is None, with the reason in `"undefined"`
    (`{"auc": why, ...}`), and the other splits are kept.

    Raises:
        ValueError: a split asked for is absent or empty.
    """
    processor = trainer.processing_class
    metrics = {}
    for split in splits:
        if split not in run_data.data.interactions:
            raise ValueError(f"split {split!r} is not in the data set (it has {list(run_data.data.interactions)}); "
                             "prepare the data again with examples/prepare_data.py")
        dataset, users = run_data.user_subset(split, max_rows, seed)
        history_items = history_items_for_split(run_data.data, split, processor.max_history_items)
        trainer.data_collator = RecordCollator(with_history_items(processor, history_items), text_only=False)
        label_evaluation_progress(trainer, f"evaluating {split} ({len(dataset)} rows)")
        result = trainer.evaluate(eval_dataset=dataset, metric_key_prefix=split)
        metrics[split] = {name: result[f"{split}_{name}"] for name in ("auc", "uauc", "rows", "loss")}
        metrics[split] |= {"rows": int(metrics[split]["rows"]), "users": users, "history_items": history_items}
        undefined = undefined_metrics(dataset.rows["user_id"], dataset.rows["label"])
        if undefined:
            logger.warning("Split %s: %s", split, "; ".join(undefined.values()))
            metrics[split] |= {name: None for name in undefined} | {"undefined": undefined}
    trainer.data_collator = RecordCollator(processor, text_only=False)
    return metrics


def attach_image_encoder(model, processor, run_data: RunData) -> str | None:
    """Gives the model the vision encoder that computed the run's image features (named in the
    features' manifest), and the processor its image processor, so the saved model scores raw posters.

    Returns:
        The encoder's name, or None when the model is not visual or the encoder cannot be loaded
        (then the model takes precomputed features only; a warning says why).
    """
    features = run_data.features
    if not model.config.use_visual or features is None:
        return None
    name = str((features.manifest.get("image_features") or {}).get("model") or "")
    if name.startswith(TOY_IMAGE_ENCODER):
        encoder, image_processor = toy_image_encoder(seed=0)
        name_or_path = None
    else:
        try:
            encoder, image_processor = load_image_encoder(name)
        except (OSError, ValueError) as error:
            logger.warning("The saved model takes precomputed image features only: the image encoder %r named in the "
                           "features' manifest could not be loaded (%s)", name, error)
            return None
        name_or_path = name
    model.attach_vision_encoder(encoder, name_or_path)
    processor.image_processor = image_processor
    return name


def save_model_folder(trainer: UserLLMTrainer, run: RunArguments, run_data: RunData, metrics: dict) -> Path:
    """Writes `OUTPUT/model`: weights (light or full) with the image encoder of the features,
    config, code, processor and model card."""
    from ..hub import render_model_card

    folder = Path(run.training.output_dir) / "model"
    image_encoder = attach_image_encoder(trainer.accelerator.unwrap_model(trainer.model), trainer.processing_class, run_data)
    trainer.save_model(str(folder))
    if trainer.args.should_save:
        # A pickle the Hub folder does not need (and loaders should never unpickle).
        (folder / "training_args.bin").unlink(missing_ok=True)
        model = trainer.accelerator.unwrap_model(trainer.model)
        schedule = run.schedule
        training = {
            f"step {step_number(step)} ({step})": {**schedule.step_overrides(step), "optimizer": "AdamW",
                                                   "weight_decay": run.training.weight_decay}
            for step in schedule.steps
        }
        card = render_model_card(
            model.config,
            f"userllm-{run.model.variant}-{run_data.data.name}",
            light=run.model.light_checkpoints,
            metrics={split: values for split, values in metrics.items()
                     if all(values[name] is not None and 0 <= values[name] <= 1 for name in ("auc", "uauc"))},
            data_info=run_data.data.info,
            training=training,
            image_encoder=image_encoder,
        )
        card.save(str(folder / "README.md"))
    trainer.accelerator.wait_for_everyone()
    return folder


def run_training(run: RunArguments, callbacks: list | None = None) -> dict:
    """Trains, evaluates and saves one run (see the module docstring for what it writes).

    Args:
        run: the settings (`parse_arguments`).
        callbacks: extra `TrainerCallback`s for both steps.

    Returns:
        The metrics written to `OUTPUT/metrics.json`.

    Raises:
        OutputDirInUseError: another run is writing `output_dir`.
    """
    if run.model.num_threads:
        torch.set_num_threads(run.model.num_threads)
    if not run.training.should_save:  # the main process holds the lock for all
        return _run_training(run, callbacks)
    with output_dir_lock(run.training.output_dir):
        return _run_training(run, callbacks)


def _run_training(run: RunArguments, callbacks: list | None) -> dict:
    # Resolved before anything compares or records the settings: run_config.json holds the dtype the run ran in.
    choice = resolve_llm_dtype(run.model.dtype, run.training.device)
    logger.info("Frozen LLM in %s on %s (%s)%s", choice.dtype, run.training.device, choice.reason,
                f"; attention: {choice.attn_implementation}" if choice.attn_implementation else "")
    run.model.dtype = choice.dtype
    resolve_data(run)
    step1_source = check_step1_source(run)
    check_resumed_run(run)
    run_data = load_data_for_run(run)
    training: TrainingArguments = run.training
    output_dir = Path(training.output_dir)
    if training.should_save:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output_dir / RUN_CONFIG_FILE, run.to_dict())

    model, processor = build_model(run, run_data)
    train_dataset = run_data.split("train", run.data.max_train_rows, training.seed)
    logger.info("Training %s on %d rows of %s", run.model.variant, len(train_dataset), run.data.data_dir)
    trainer = train_two_steps(
        model,
        processor,
        train_dataset,
        training,
        run.schedule.steps,
        {step: run.schedule.step_overrides(step) for step in run.schedule.steps},
        resume=run.schedule.resume,
        light_checkpoints=run.model.light_checkpoints,
        callbacks=callbacks,
        fast_step2=run.schedule.fast_step2,
        finished_steps={"lora": step1_source} if step1_source else None,
        step1_prompt=run.schedule.step1_prompt,
        prompt_curriculum=run.schedule.prompt_curriculum,
    )
    metrics = evaluate_splits(trainer, run_data, run.data.eval_splits, run.data.max_eval_rows, training.seed)
    metrics["num_processes"] = training.world_size
    save_model_folder(trainer, run, run_data, {k: v for k, v in metrics.items() if isinstance(v, dict)})
    if training.should_save:
        atomic_write_json(output_dir / "metrics.json", metrics)
    return metrics
