"""Why step 2 learns little (issue 15, item 3): gradients and attention at the placeholders.

For a saved model (a step's `final/` folder or `OUTPUT/model`) on seeded batches of a
prepared data set's training split, in step-2 mode (LoRA frozen, LoRA dropout off):
- the loss, and the gradient norm reaching each trained module (collaborative projector,
  visual projector, UHEM) and each placeholder's input embedding (`<UserID>`, `<ItemID>`,
  `<Image>`, `<HistoryInteractions>`), per batch averaged;
- the attention of the last prompt position (where the score is read) to the positions of
  each placeholder, per layer, averaged over heads and rows (eager attention).

    python benchmarks/step2_diagnostics.py --model OUT/step1-lora/final --model OUT/model \
        --data outputs/demo/toy/data --features outputs/demo/toy/features
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

from modeling_userllm.modeling_userllm import UserLLMForRecommendation
from modeling_userllm.processing_userllm import UserLLMProcessor
from modeling_userllm.training.arguments import DataArguments
from modeling_userllm.training.datasets import load_run_data

MODULES = ("collaborative_projector", "visual_projector", "history_encoder")


def diagnose(model_dir: str, data_dir: str, features_dir: str, batches: int, batch_size: int, seed: int) -> dict:
    model = UserLLMForRecommendation.from_pretrained(model_dir, attn_implementation="eager")
    processor = UserLLMProcessor.from_pretrained(model_dir)
    config = model.config
    run_data = load_run_data(DataArguments(data_dir=data_dir, features_dir=features_dir), use_visual=config.use_visual,
                             use_collaborative=config.use_collaborative, use_descriptions=config.use_descriptions)
    rows = run_data.split("train")
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    model.eval()
    model.set_training_step("encoders")
    placeholders = {"<UserID>": config.user_token_id, "<ItemID>": config.item_token_id,
                    "<Image>": config.image_token_id, "<HistoryInteractions>": config.history_token_id}
    placeholders = {name: token for name, token in placeholders.items() if token is not None}
    attentions = []
    hooks = [layer.self_attn.register_forward_hook(lambda module, args, output: attentions.append(output[1]))
             for layer in model.language_model.model.layers]
    result = {"model": model_dir, "loss": [], "module_grad_norm": {m: [] for m in MODULES if hasattr(model, m)},
              "placeholder_grad_norm": {name: [] for name in placeholders},
              "last_position_attention": {name: [] for name in placeholders}, "other_positions_attention": []}
    for index in range(batches):
        records = [rows[int(i)] for i in order[index * batch_size : (index + 1) * batch_size]]
        batch = dict(processor(records))
        attentions.clear()
        embeds = {}
        original = model.get_prompt_embeddings

        def keep_embeddings(*args, **kwargs):
            inputs_embeds = original(*args, **kwargs)
            inputs_embeds.retain_grad()
            embeds["value"] = inputs_embeds
            return inputs_embeds

        model.get_prompt_embeddings = keep_embeddings
        model.zero_grad(set_to_none=True)
        output = model(**batch)
        output.loss.backward()
        del model.get_prompt_embeddings
        result["loss"].append(output.loss.item())
        for module in result["module_grad_norm"]:
            grads = [p.grad.flatten() for p in getattr(model, module).parameters() if p.grad is not None]
            result["module_grad_norm"][module].append(torch.cat(grads).norm().item() if grads else 0.0)
        grad = embeds["value"].grad  # (B, L, D)
        input_ids = batch["input_ids"]
        for name, token in placeholders.items():
            mask = input_ids == token
            if mask.any():
                result["placeholder_grad_norm"][name].append(grad[mask].norm(dim=-1).mean().item())
                per_layer = [attention[:, :, -1, :].mean(dim=1)[mask.any(dim=1)].mul(mask[mask.any(dim=1)]).sum(-1).mean().item()
                             for attention in attentions]
                result["last_position_attention"][name].append(per_layer)
    for hook in hooks:
        hook.remove()
    summary = {"model": model_dir, "batches": batches, "batch_size": batch_size, "loss": statistics.mean(result["loss"])}
    summary["module_grad_norm"] = {k: statistics.mean(v) for k, v in result["module_grad_norm"].items()}
    summary["placeholder_grad_norm"] = {k: statistics.mean(v) for k, v in result["placeholder_grad_norm"].items() if v}
    summary["last_position_attention_per_layer"] = {
        k: [statistics.mean(layer) for layer in zip(*v)] for k, v in result["last_position_attention"].items() if v
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="a saved model folder (repeat to compare)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--features", required=True)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=None, help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [diagnose(model, args.data, args.features, args.batches, args.batch_size, args.seed) for model in args.model]
    for summary in results:
        print(f"\n{summary['model']}: loss {summary['loss']:.4f}")
        print("  gradient norm per module:      " + ", ".join(f"{k} {v:.2e}" for k, v in summary["module_grad_norm"].items()))
        print("  gradient norm per placeholder: " + ", ".join(f"{k} {v:.2e}" for k, v in summary["placeholder_grad_norm"].items()))
        for name, layers in summary["last_position_attention_per_layer"].items():
            print(f"  last position's attention to {name}, per layer: " + " ".join(f"{value:.4f}" for value in layers))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
