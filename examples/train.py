"""Train and evaluate USER-LLM (or any LLM-based system of the paper) with the two-step schedule.

    # the embedded demo: toy data, tiny random Llama, both steps, evaluation, top-5 for a user
    python examples/train.py
    # a preset, with command-line overrides of any of its keys
    python examples/train.py --preset configuration/ml100k-smollm2.yaml --variant collm --step1_max_steps 100
    # several processes (same script): see configuration/accelerate/
    accelerate launch --config_file configuration/accelerate/multi_gpu.yaml examples/train.py --preset ...
    # continue an interrupted run from its last checkpoint
    python examples/train.py --preset ... --output_dir OUT --resume

Writes OUTPUT/metrics.json, OUTPUT/model/ (loads with AutoModel/AutoProcessor and
trust_remote_code=True), per-step checkpoints and TensorBoard logs.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import huggingface_hub.utils
import torch
from transformers import AutoModel, AutoProcessor
from transformers.utils import logging as transformers_logging

from modeling_userllm.demo.recommender import unseen_items
from modeling_userllm.ranking import score_candidates_from_scratch
from modeling_userllm.training import DataArguments, PresetError, load_run_data, parse_arguments
from modeling_userllm.training.output_lock import OutputDirInUseError
from modeling_userllm.training.pipeline import run_training


def show_top_items(output_dir: Path, run_config: dict, top_k: int = 5) -> None:
    """Reloads OUTPUT/model as a user would and prints the top items for one test user."""
    model_dir = output_dir / "model"
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    config = model.config
    run_data = load_run_data(
        DataArguments(**run_config["data"]), use_visual=config.use_visual, use_collaborative=config.use_collaborative,
        use_descriptions=config.use_descriptions,
    )
    data, builder = run_data.data, run_data.builder
    # The user's last test interaction gives their most recent history.
    test = data.interactions["test"]
    user_record = builder([test[len(test) - 1]])[0]
    candidates = [builder.item(item_id) for item_id in unseen_items(data, user_record["user_id"])]
    with torch.no_grad():
        scores = score_candidates_from_scratch(model, processor, user_record, candidates, batch_size=64)
    top_scores, top_indices = torch.topk(scores, min(top_k, len(candidates)))
    print(f"\nTop-{top_k} of {len(candidates)} unseen items for user {user_record['user_id']} "
          f"(model reloaded from {model_dir}):")
    print("  recent history: " + "; ".join(item["title"] for item in user_record["history"]))
    for rank, (score, index) in enumerate(zip(top_scores.tolist(), top_indices.tolist()), start=1):
        print(f"  {rank}. {candidates[index]['title']:<45} P(Yes) = {torch.sigmoid(torch.tensor(score)).item():.3f}")


def main(argv: list[str] | None = None, callbacks: list | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # The Trainer's bars and the log show each phase; transformers' bars for every checkpoint
    # save and load would interleave with them. A base LLM fetched from the Hub keeps its download bar.
    transformers_logging.disable_progress_bar()
    huggingface_hub.utils.enable_progress_bars()
    try:
        run = parse_arguments(argv)
        metrics = run_training(run, callbacks=callbacks)
    except (PresetError, OutputDirInUseError) as error:
        sys.exit(f"error: {error}")
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
            show_top_items(output_dir, json.loads((output_dir / "run_config.json").read_text()))
    return metrics


if __name__ == "__main__":
    main()
