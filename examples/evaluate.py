"""Evaluate a saved USER-LLM (OUTPUT/model or any checkpoint folder) on a prepared data set.

    python examples/evaluate.py --model outputs/demo/model --data outputs/demo/toy/data \
        --features outputs/demo/toy/features --split test
    accelerate launch --config_file configuration/accelerate/multi_gpu.yaml examples/evaluate.py ...

Prints AUC / UAUC with the rows and users scored and writes them to --output (default
eval_<split>.json next to the MODEL folder, which stays as it is: hub-ready). `test_long` is scored with the data set's long histories (Table 5).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from transformers import AutoModel, AutoProcessor, TrainingArguments

from modeling_userllm.features.store import atomic_write_json
from modeling_userllm.training import DataArguments, PresetError, UserLLMTrainer, load_run_data
from modeling_userllm.training.arguments import EVAL_SPLITS
from modeling_userllm.training.pipeline import evaluate_splits


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a saved model or checkpoint folder")
    parser.add_argument("--data", required=True, help="prepared data set folder")
    parser.add_argument("--features", help="features folder (needed by variants with posters or MF tables)")
    parser.add_argument("--split", nargs="+", default=["test"], choices=EVAL_SPLITS)
    parser.add_argument("--description-source", default="auto", choices=("auto", "generated", "item_table", "none"))
    parser.add_argument("--max-rows", type=int, help="cut each split to whole users (seeded) holding at most this many rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", type=Path, help="JSON file for the metrics")
    parser.add_argument("--cpu", action="store_true", help="evaluate on CPU even when a GPU is present")
    return parser.parse_args()


def main() -> dict:
    args = parse_args()
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True)
    model.set_training_step("none")
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    config = model.config
    try:
        run_data = load_run_data(
            DataArguments(data_dir=args.data, features_dir=args.features, description_source=args.description_source),
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
        ),
        processing_class=processor,
    )
    metrics = evaluate_splits(trainer, run_data, args.split, args.max_rows, args.seed)
    metrics["num_processes"] = trainer.args.world_size
    if trainer.args.process_index == 0:
        for split in args.split:
            values = metrics[split]
            print(f"{split}: AUC {values['auc']:.4f}  UAUC {values['uauc']:.4f}  ({values['rows']} rows, "
                  f"{values['users']} users, {values['history_items']} history items)")
        output = args.output or args.model.resolve().parent / f"eval_{'_'.join(args.split)}.json"
        atomic_write_json(output, metrics)
        print(f"written: {output}")
    return metrics


if __name__ == "__main__":
    main()
