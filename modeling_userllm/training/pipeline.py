"""One training run end to end: data, model, the two steps, evaluation, the hub-ready folder.

`main` is the command line (`python -m modeling_userllm.training`, `examples/train.py`, or under `accelerate
launch`); `run_training(run)` writes:

    OUTPUT/step1-lora/       checkpoints of step 1, and final/ when it finished
    OUTPUT/step2-encoders/   the same for step 2
    OUTPUT/model/            weights, config with auto_map, code, processor, README.md card
    OUTPUT/metrics.json      {"valid": {"auc", "uauc", ...}, "test": ..., "test_short": ..., "test_long": ...}
    OUTPUT/run_config.json   every setting of the run
    OUTPUT/run.lock          locked while the run goes (`output_lock`: one run per folder)
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import huggingface_hub.utils
import numpy as np
import torch
from transformers import AutoModel, AutoProcessor, AutoTokenizer, TrainingArguments
from transformers.utils import logging as transformers_logging

from ..configuration_userllm import VARIANTS
from ..factory import create_model_and_processor
from ..features.store import atomic_write_json
from ..features.visual import load_image_encoder, toy_image_encoder
from ..metrics import undefined_metrics
from ..toy_model import build_toy_tokenizer, tiny_llama_config
from .arguments import (
    DTYPES, PREDICTIONS_FILE, RUN_CONFIG_FILE, DataArguments, PresetError, RunArguments, check_resumed_run,
    check_step1_source, parse_arguments, step1_prompt_form, step_number,
)
from .datasets import RecordCollator, RunData, history_items_for_split, load_run_data, prepare_toy_data, with_history_items
from .dtype import resolve_llm_dtype
from .inputs import INPUTS_FILE, check_same_inputs, input_digests, read_by_step1, write_inputs
from .output_lock import OutputDirInUseError, output_dir_lock
from .trainer import TrainingStopped, UserLLMTrainer, train_two_steps

logger = logging.getLogger(__name__)
# How the features' manifest names the seeded stand-in encoder of the toy data set.
TOY_IMAGE_ENCODER = "toy_image_encoder(seed=0)"
# `ModelArguments` fields passed as they are to `create_model_and_processor`.
MODEL_SETTINGS = ("max_item_tokens", "item_noun", "lora_r", "lora_alpha", "lora_dropout", "history_hidden_size",
                  "projector_norm", "item_ids_after_titles")
# The variant's switches `load_run_data` checks the data against.
DATA_SWITCHES = ("use_visual", "use_collaborative", "use_descriptions")


def resolve_data(run: RunArguments) -> None:
    """Prepares the embedded toy data set when no data folder is given (main process first)."""
    if run.data.data_dir is not None:
        return
    if run.data.features_dir is not None:
        raise PresetError("features_dir is set but data_dir is not: give both, or neither for the toy data set")
    with run.training.main_process_first(desc="preparing the toy data set"):
        data_dir, features_dir = prepare_toy_data(Path(run.training.output_dir) / "toy", run.data.toy_seed,
                                                  run.data.toy_num_users, run.data.toy_num_items)
    run.data.data_dir, run.data.features_dir = str(data_dir), str(features_dir)


def load_data_for_run(run: RunArguments) -> RunData:
    """The run's data, checked against what its variant needs."""
    return load_run_data(run.data, **{name: VARIANTS[run.model.variant][name] for name in DATA_SWITCHES})


def build_model(run: RunArguments, run_data: RunData):
    """A fresh model and processor of the run's variant, with the MF tables loaded; without `base_model_name_or_path`,
    a tiny random Llama over a word-level tokenizer of the data set's texts."""
    model_args, data = run.model, run_data.data
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
        tokenizer, model_args.variant, **source, **{name: getattr(model_args, name) for name in MODEL_SETTINGS},
        num_users=data.num_users, num_items=data.num_items, dtype=DTYPES[llm_dtype.dtype],
        max_history_items=model_args.max_history_items or data.info["protocol"]["history_length"],
        lora_target_modules=list(model_args.lora_target_modules),
    )
    if llm_dtype.attn_implementation is not None:
        model.language_model.set_attn_implementation(llm_dtype.attn_implementation)
    if model.config.use_collaborative:
        model.load_collaborative_embeddings(run_data.features.user_embeddings, run_data.features.item_embeddings)
    return model, processor


def evaluate_splits(trainer: UserLLMTrainer, run_data: RunData, splits, max_rows: int | None, seed: int,
                    predictions: dict | None = None) -> dict:
    """`{split: {"auc", "uauc", "rows", "users", "loss", "history_items"}}` on the full prompt, each row once.

    `max_rows` cuts a split to whole users (`RunData.user_subset`); `test_long` keeps the data set's
    `long_history_length` items (Table 5). A metric a split's labels cannot define (one class) is None, with the
    reason in `"undefined"` (`{"auc": why, ...}`). Raises `ValueError` for a split absent or empty. A `predictions`
    dict receives `{split: {"user_id", "item_id", "label", "score"}}`, one list entry per row scored (score: the
    Yes-minus-No logit), for paired comparisons (`metrics.paired_user_bootstrap`).
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
        logger.info("Evaluating %s (%d rows)", split, len(dataset))
        if predictions is None:
            result = trainer.evaluate(eval_dataset=dataset, metric_key_prefix=split)
        else:
            output = trainer.predict(dataset, metric_key_prefix=split)
            result = output.metrics
            scores = output.predictions[0] if isinstance(output.predictions, (tuple, list)) else output.predictions
            predictions[split] = {column: [int(value) for value in dataset.rows[column]]
                                  for column in ("user_id", "item_id", "label")}
            predictions[split]["score"] = np.asarray(scores, dtype=np.float64).reshape(-1).tolist()
        metrics[split] = {name: result[f"{split}_{name}"] for name in ("auc", "uauc", "rows", "loss")}
        metrics[split] |= {"rows": int(metrics[split]["rows"]), "users": users, "history_items": history_items}
        undefined = undefined_metrics(dataset.rows["user_id"], dataset.rows["label"])
        if undefined:
            logger.warning("Split %s: %s", split, "; ".join(undefined.values()))
            metrics[split] |= {name: None for name in undefined} | {"undefined": undefined}
    trainer.data_collator = RecordCollator(processor, text_only=False)
    return metrics


def attach_image_encoder(model, processor, run_data: RunData) -> str | None:
    """Gives the model the vision encoder named in the features' manifest, and the processor its image processor, so
    the saved model scores raw posters. Returns the encoder's name, or None when the model is not visual or the
    encoder cannot be loaded (a warning says why: the model then takes precomputed features only)."""
    features = run_data.features
    if not model.config.use_visual or features is None:
        return None
    name = str((features.manifest.get("image_features") or {}).get("model") or "")
    toy = name.startswith(TOY_IMAGE_ENCODER)
    try:
        encoder, image_processor = toy_image_encoder(seed=0) if toy else load_image_encoder(name)
    except (OSError, ValueError) as error:
        logger.warning("The saved model takes precomputed image features only: the image encoder %r named in the "
                       "features' manifest could not be loaded (%s)", name, error)
        return None
    model.attach_vision_encoder(encoder, None if toy else name)
    processor.image_processor = image_processor
    return name


def save_model_folder(trainer: UserLLMTrainer, run: RunArguments, run_data: RunData, metrics: dict) -> Path:
    """Writes `OUTPUT/model`: weights (light or full) with the image encoder of the features, config, code, processor
    and model card."""
    from ..hub import render_model_card

    folder = Path(run.training.output_dir) / "model"
    model = trainer.accelerator.unwrap_model(trainer.model)
    image_encoder = attach_image_encoder(model, trainer.processing_class, run_data)
    trainer.save_model(str(folder))
    if trainer.args.should_save:
        # A pickle the Hub folder does not need (and loaders should never unpickle).
        (folder / "training_args.bin").unlink(missing_ok=True)
        training = {f"step {step_number(step)} ({step})": {**run.schedule.step_overrides(step), "optimizer": "AdamW",
                                                           "weight_decay": run.training.weight_decay}
                    for step in run.schedule.steps}
        card = render_model_card(
            model.config, f"userllm-{run.model.variant}-{run_data.data.name}",
            light=run.model.light_checkpoints, data_info=run_data.data.info, training=training, image_encoder=image_encoder,
            metrics={split: values for split, values in metrics.items()
                     if all(values[name] is not None and 0 <= values[name] <= 1 for name in ("auc", "uauc"))},
        )
        card.save(str(folder / "README.md"))
    trainer.accelerator.wait_for_everyone()
    return folder


def run_training(run: RunArguments, callbacks: list | None = None) -> dict:
    """Trains, evaluates and saves one run (`parse_arguments`), with extra `TrainerCallback`s for every step; returns
    the metrics written to `OUTPUT/metrics.json`. Raises `OutputDirInUseError` when another run holds `output_dir`."""
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
    training: TrainingArguments = run.training
    output_dir = Path(training.output_dir)
    record_inputs = check_inputs(run, step1_source)
    run_data = load_data_for_run(run)
    if training.should_save:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output_dir / RUN_CONFIG_FILE, run.to_dict())
        if record_inputs is not None:
            write_inputs(output_dir, record_inputs, run.data.data_dir, run.data.features_dir)

    model, processor = build_model(run, run_data)
    train_dataset = run_data.split("train", run.data.max_train_rows, training.seed)
    logger.info("Training %s on %d rows of %s", run.model.variant, len(train_dataset), run.data.data_dir)
    schedule = run.schedule
    trainer = train_two_steps(
        model, processor, train_dataset, training, schedule.steps,
        {step: schedule.step_overrides(step) for step in schedule.steps},
        resume=schedule.resume, light_checkpoints=run.model.light_checkpoints, callbacks=callbacks,
        fast_step2=schedule.fast_step2, finished_steps={"lora": step1_source} if step1_source else None,
        step1_prompt=schedule.step1_prompt, prompt_curriculum=schedule.prompt_curriculum,
    )
    predictions = {}
    metrics = evaluate_splits(trainer, run_data, run.data.eval_splits, run.data.max_eval_rows, training.seed, predictions)
    metrics["num_processes"] = training.world_size
    save_model_folder(trainer, run, run_data, {k: v for k, v in metrics.items() if isinstance(v, dict)})
    if training.should_save:
        # Each row's score, for paired tests between runs (examples/paired_comparison.py) without scoring again.
        atomic_write_json(output_dir / PREDICTIONS_FILE, predictions)
        atomic_write_json(output_dir / "metrics.json", metrics)
    return metrics


def check_inputs(run: RunArguments, step1_source: Path | None) -> dict[str, str] | None:
    """Compares the files the run reads with those its step-1 source read (the files that step 1 reads) and, when it
    resumes a run, with those that run read (all); returns the digests to record in OUTPUT/inputs.json, or None
    when a resumed run kept no record (recording today's files would vouch for what it read before)."""
    digests = input_digests(run.data.data_dir, run.data.features_dir)
    if step1_source is not None:
        form = step1_prompt_form(run.model.variant, run.schedule.step1_prompt)
        check_same_inputs(digests, step1_source.parent.parent / INPUTS_FILE,
                          f"step1_from {step1_source} was trained on other inputs", only=read_by_step1(form))
    output_dir = Path(run.training.output_dir)
    if run.schedule.resume and (output_dir / RUN_CONFIG_FILE).is_file():
        check_same_inputs(digests, output_dir / INPUTS_FILE, f"resume: the run in {output_dir} read other inputs")
        if not (output_dir / INPUTS_FILE).is_file():
            return None
    return digests


def run_data_paths(model: str | Path) -> tuple[str | None, str | None]:
    """`(data_dir, features_dir)` from the `run_config.json` beside a local checkpoint (`OUTPUT/model`) or above it
    (`OUTPUT/<step>/checkpoint-N`), else `(None, None)`; paths under a relative `output_dir` follow the run folder."""
    model = Path(model)
    run_config = next((folder / RUN_CONFIG_FILE for folder in (model.parent, model.parent.parent)
                       if model.is_dir() and (folder / RUN_CONFIG_FILE).is_file()), None)
    if run_config is None:
        return None, None
    settings = json.loads(run_config.read_text())
    output_dir = settings.get("training", {}).get("output_dir")

    def from_run_folder(path: str | None) -> str | None:
        if path is None or Path(path).is_absolute() or not output_dir or Path(output_dir).is_absolute():
            return path
        try:
            return str(run_config.parent / Path(path).relative_to(output_dir))
        except ValueError:
            return path

    data = settings.get("data", {})
    return from_run_folder(data.get("data_dir")), from_run_folder(data.get("features_dir"))


def show_top_items(output_dir: Path, run_config: dict, top_k: int = 5) -> None:
    """Reloads OUTPUT/model as a user would and prints the top items for one test user."""
    from ..data.common import unseen_items
    from ..ranking import score_candidates_from_scratch

    model_dir = output_dir / "model"
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    run_data = load_run_data(DataArguments(**run_config["data"]), **{name: getattr(model.config, name) for name in DATA_SWITCHES})
    data, builder = run_data.data, run_data.builder
    test = data.interactions["test"]
    user_record = builder([test[len(test) - 1]])[0]  # the user's last test row: their most recent history
    candidates = [builder.item(item_id) for item_id in unseen_items(data, user_record["user_id"])]
    with torch.no_grad():
        scores = score_candidates_from_scratch(model, processor, user_record, candidates, batch_size=64)
    top_scores, top_indices = torch.topk(scores, min(top_k, len(candidates)))
    print(f"\nTop-{top_k} of {len(candidates)} unseen items for user {user_record['user_id']} (model reloaded from {model_dir}):")
    print("  recent history: " + "; ".join(item["title"] for item in user_record["history"]))
    for rank, (score, index) in enumerate(zip(top_scores.tolist(), top_indices.tolist()), start=1):
        print(f"  {rank}. {candidates[index]['title']:<45} P(Yes) = {torch.sigmoid(torch.tensor(score)).item():.3f}")


def main(argv: list[str] | None = None, callbacks: list | None = None) -> dict:
    """The command line: parses `argv` (None: `sys.argv`), trains, prints the metrics (and, for the toy demo, a user's
    top items from the reloaded model); returns the metrics."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # The Trainer's bars and the log show each phase; a base LLM fetched from the Hub keeps its download bar.
    transformers_logging.disable_progress_bar()
    huggingface_hub.utils.enable_progress_bars()
    try:
        run = parse_arguments(argv)
        metrics = run_training(run, callbacks=callbacks)
    except (PresetError, OutputDirInUseError) as error:
        sys.exit(f"error: {error}")
    except TrainingStopped as error:
        print(f"stopped: {error}", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    if run.training.process_index == 0:
        output_dir = Path(run.training.output_dir)
        print("\nMetrics (AUC / UAUC):")
        for split, values in metrics.items():
            if isinstance(values, dict):
                auc, uauc = (f"{values[name]:.4f}" if values[name] is not None else "undefined" for name in ("auc", "uauc"))
                print(f"  {split:<10} {auc} / {uauc}  ({values['rows']} rows)"
                      + "".join(f"; {reason}" for reason in values.get("undefined", {}).values()))
        print(f"written: {output_dir / 'metrics.json'}, {output_dir / 'model'}")
        if run.model.base_model_name_or_path is None:
            show_top_items(output_dir, json.loads((output_dir / RUN_CONFIG_FILE).read_text()))
    return metrics
