"""Evaluate a saved USER-LLM (OUTPUT/model or any checkpoint folder) on a prepared data set.

    python examples/evaluate.py --model outputs/demo/model --data outputs/demo/toy/data \
        --features outputs/demo/toy/features --split test
    # without --data: the data and features named by the run_config.json of the run that wrote MODEL
    python examples/evaluate.py --model outputs/demo/model --split test test_long
    accelerate launch --config_file configuration/accelerate/multi_gpu.yaml examples/evaluate.py ...

Prints AUC / UAUC with the rows and users scored and writes them to --output (default
eval_<split>.json next to the MODEL folder, which stays as it is: hub-ready). `test_long` is scored with the data set's long histories (Table 5).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor, TrainingArguments

from modeling_userllm.configuration_userllm import check_userllm_checkpoint
from modeling_userllm.data.common import describe_path
from modeling_userllm.features.store import atomic_write_json
from modeling_userllm.training import DataArguments, PresetError, UserLLMTrainer, load_run_data
from modeling_userllm.training.arguments import EVAL_SPLITS
from modeling_userllm.training.pipeline import evaluate_splits, run_data_paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a saved model or checkpoint folder")
    parser.add_argument("--data", help="prepared data set folder (default: the one named by the run_config.json of the "
                                       "run that wrote --model, with its features)")
    parser.add_argument("--features", help="features folder (needed by variants with posters or MF tables)")
    parser.add_argument("--split", nargs="+", default=["test"], choices=EVAL_SPLITS)
    parser.add_argument("--description-source", default="auto", choices=("auto", "generated", "item_table", "none"))
    parser.add_argument("--max-rows", type=int, help="cut each split to whole users (seeded) holding at most this many rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", type=Path, help="JSON file for the metrics")
    parser.add_argument("--predictions", type=Path, help="JSON file for each row's score ({split: {user_id, item_id, "
                        "label, score}}), for examples/paired_comparison.py")
    parser.add_argument("--cpu", action="store_true", help="evaluate on CPU even when a GPU is present")
    return parser.parse_args(argv)


def data_paths(args: argparse.Namespace) -> tuple[str, str | None]:
    """`--data` and `--features`, or those of the run that wrote the model when `--data` is not given."""
    if args.data is not None:
        return args.data, args.features
    data, features = run_data_paths(args.model)
    if data is None:
        raise SystemExit(f"error: no --data given, and {describe_path(args.model)} has no run_config.json next to it "
                         "(or above a step's checkpoint) naming the data it was trained on: pass --data (and --features)")
    print(f"data: {data}, features: {features} (from the run_config.json of the run that wrote {args.model})")
    return data, features if args.features is None else args.features


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not args.model.exists():
        raise SystemExit(f"error: checkpoint {describe_path(args.model)} not found: no such folder")
    try:
        check_userllm_checkpoint(args.model)
        data_dir, features_dir = data_paths(args)
        model = AutoModel.from_pretrained(args.model, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from error
    model.set_training_step("none")
    config = model.config
    try:
        run_data = load_run_data(
            DataArguments(data_dir=data_dir, features_dir=features_dir, description_source=args.description_source),
            use_visual=config.use_visual, use_collaborative=config.use_collaborative,
            use_descriptions=config.use_descriptions, vision_feature_size=config.vision_feature_size,
            collaborative_size=config.collaborative_size,
        )
    except PresetError as error:
        raise SystemExit(f"error: {error}") from error
    # The Trainer needs an output folder but evaluation writes nothing there: a temporary one
    # keeps the model folder hub-ready.
    scratch = tempfile.TemporaryDirectory(prefix="userllm-eval-")
    trainer = UserLLMTrainer(
        model=model,
        args=TrainingArguments(
            output_dir=scratch.name, per_device_eval_batch_size=args.batch_size, report_to=[],
            remove_unused_columns=False, label_names=["labels", "user_ids"], use_cpu=args.cpu,
            dataloader_pin_memory=torch.accelerator.is_available() and not args.cpu,  # pinning needs an accelerator
        ),
        processing_class=processor,
    )
    predictions = {} if args.predictions else None
    metrics = evaluate_splits(trainer, run_data, args.split, args.max_rows, args.seed, predictions)
    metrics["num_processes"] = trainer.args.world_size
    if trainer.args.process_index == 0:
        for split in args.split:
            values = metrics[split]
            auc, uauc = (f"{values[name]:.4f}" if values[name] is not None else "undefined" for name in ("auc", "uauc"))
            print(f"{split}: AUC {auc}  UAUC {uauc}  ({values['rows']} rows, "
                  f"{values['users']} users, {values['history_items']} history items)"
                  + "".join(f"; {reason}" for reason in values.get("undefined", {}).values()))
        output = args.output or args.model.resolve().parent / f"eval_{'_'.join(args.split)}.json"
        atomic_write_json(output, metrics)
        print(f"written: {output}")
        if predictions is not None:
            atomic_write_json(args.predictions, predictions)
            print(f"written: {args.predictions}")
    return metrics


if __name__ == "__main__":
    main()
