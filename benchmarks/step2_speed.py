"""Where a training sample's time goes, and what the fast step 2 saves (issue 15, item 1).

For one LLM, on the same synthetic records (benchmarks/uhem_efficiency.py's catalogue: titles
plus ~20-word descriptions, a 384-d image per item, n history items), one training step
(forward + backward + AdamW) of:

- `step1`: step 1 ("lora") on the text prompt, the plain path;
- `step2_plain`: step 2 ("encoders") on the full prompt, the plain path (LoRA dropout on);
- `step2_prefix`: that, on the constant-prefix key/value cache;
- `step2_fast_prefix_only`: that, with the frozen LoRA merged too (the fast step 2 before the text up to the
  first placeholder was encoded without gradient);
- `step2_fast`: that, with each row's text up to its first placeholder encoded without gradient too (what
  `fast_step2: true` trains with; `modeling_userllm/training/fast_step2.py`). It differs from
  `step2_fast_prefix_only` where the history is inline (`--variant collm`, `collm_va`, `userllm_no_uhem`).

The paths run interleaved in one process (repeat r of every path, then repeat r + 1), so a
change of load on a shared machine hits them alike; read the ratios. A profiled call per
path splits its time into forward / backward / optimizer, the UHEM (GRU) share, and the
top operators.

    python benchmarks/step2_speed.py                          # SmolLM2-135M, float32, 1 and 2 threads
    python benchmarks/step2_speed.py --llm toy --threads 1    # the demo's tiny Llama (seconds)
    python benchmarks/step2_speed.py --variant collm --dtype bfloat16 --threads 1   # CoLLM's prompt
"""

import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from uhem_efficiency import environment, make_catalogue, make_user_records  # noqa: E402

from modeling_userllm import create_model_and_processor  # noqa: E402
from modeling_userllm.features.store import atomic_write_json  # noqa: E402
from modeling_userllm.toy_model import build_toy_tokenizer, tiny_llama_config  # noqa: E402
from modeling_userllm.training.fast_step2 import Step2PrefixCache, frozen_lora_merged  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SMOLLM2 = Path(os.environ.get("USERLLM_ASSETS", Path.home() / ".cache" / "userllm-assets")) / "SmolLM2-135M-Instruct"
NUM_USERS, NUM_ITEMS = 50, 200
PATHS = ("step1", "step2_plain", "step2_prefix", "step2_fast_prefix_only", "step2_fast")


def build(llm: str, history_length: int, max_item_tokens: int, dtype: str = "float32", variant: str = "userllm"):
    catalogue = make_catalogue(0)
    if llm == "smollm2":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
        source = {"base_model_name_or_path": str(SMOLLM2)}
    else:
        tokenizer = build_toy_tokenizer([item["title"] for item in catalogue] + [item["description"] for item in catalogue])
        source = {"text_config": tiny_llama_config(len(tokenizer) + 4, 64, 2)}
    torch.manual_seed(0)
    model, processor = create_model_and_processor(
        tokenizer, variant, num_users=NUM_USERS, num_items=NUM_ITEMS, max_history_items=history_length,
        max_item_tokens=max_item_tokens, dtype=torch.float32, **source,
    )
    generator = torch.Generator().manual_seed(0)
    model.load_collaborative_embeddings(torch.randn(NUM_USERS, 256, generator=generator),
                                        torch.randn(NUM_ITEMS, 256, generator=generator))
    if dtype == "bfloat16":  # as the training pipeline builds it on CPU (training/dtype.py)
        model.to(torch.bfloat16)
        model.upcast_trained_modules()
        model.language_model.set_attn_implementation("eager")
    return model, processor, catalogue


def make_step(model, processor, records, path: str):
    """A closure running one optimizer step of `path` (model state set inside, so paths can interleave)."""
    step = "lora" if path == "step1" else "encoders"
    batch = dict(processor(records, text_only=step == "lora"))
    model.set_training_step(step)
    optimizer = torch.optim.AdamW([param for param in model.parameters() if param.requires_grad], lr=1e-6)
    fast = (Step2PrefixCache(model, processor, frozen_text=path == "step2_fast")
            if path in ("step2_prefix", "step2_fast_prefix_only", "step2_fast") else None)

    def run():
        model.train()
        model.set_training_step(step)
        optimizer.zero_grad(set_to_none=True)
        # The trainer merges once per step 2; here once per call (merge and unmerge timed too).
        with frozen_lora_merged(model) if path.startswith("step2_fast") else nullcontext():
            with record_function("forward"):
                output = fast(batch) if fast is not None else model(**batch)
            with record_function("backward"):
                output.loss.backward()
        with record_function("optimizer"):
            optimizer.step()

    tokens = {
        "prompt_tokens": batch["attention_mask"].sum().item() / len(records),
        "padded_tokens": batch["attention_mask"].shape[1],
    }
    if fast is not None:
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
        tokens["cached_prefix_tokens"] = fast.prefix_length(rows)
        tokens["frozen_text_tokens"] = statistics.mean(fast.frozen_lengths(rows, tokens["cached_prefix_tokens"]))
    return run, tokens, batch


def gru_seconds(model, batch) -> float:
    """The UHEM alone (history embedding, image projection, GRU), forward + backward."""
    if "history_input_ids" not in batch:
        return 0.0
    model.set_training_step("encoders")
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    model.encode_history(batch["history_input_ids"], batch["history_attention_mask"],
                         batch.get("history_image_features")).sum().backward()
    return time.perf_counter() - start


def profiled(run) -> dict:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    averages = prof.key_averages()
    phases = {event.key: event.cpu_time_total / 1e6 for event in averages if event.key in ("forward", "backward", "optimizer")}
    top = sorted(averages, key=lambda event: event.self_cpu_time_total, reverse=True)[:8]
    return {**{f"{key}_s": value for key, value in phases.items()},
            "top_ops": [{"op": event.key, "self_s": event.self_cpu_time_total / 1e6, "calls": event.count} for event in top]}


def benchmark(llm: str, threads: int, batch_size: int, history_length: int, repeats: int, max_item_tokens: int,
              warmup: int = 1, dtype: str = "float32", variant: str = "userllm") -> list[dict]:
    torch.set_num_threads(threads)
    model, processor, catalogue = build(llm, history_length, max_item_tokens, dtype, variant)
    records = make_user_records(batch_size, history_length, catalogue, seed=history_length)
    steps = {path: make_step(model, processor, records, path) for path in PATHS}
    for run, _, _ in steps.values():  # warm-up (one-off costs: allocations, the prefix cache)
        for _ in range(warmup):
            run()
    profiles = {path: profiled(run) for path, (run, _, _) in steps.items()}
    times = {path: [] for path in PATHS}
    for _ in range(repeats):
        for path, (run, _, _) in steps.items():
            start = time.perf_counter()
            run()
            times[path].append(time.perf_counter() - start)
    gru = statistics.median(gru_seconds(model, steps["step2_plain"][2]) for _ in range(max(1, repeats // 2)))
    rows = []
    for path in PATHS:
        seconds = statistics.median(times[path])
        rows.append({
            "llm": llm, "variant": variant, "dtype": dtype, "threads": threads, "batch_size": batch_size, "history_length": history_length, "path": path,
            "repeats": repeats, "seconds": seconds, "all_seconds": times[path], "samples_per_second": batch_size / seconds,
            **steps[path][1], "gru_train_seconds": 0.0 if path == "step1" else gru, **profiles[path],
        })
    plain = rows[PATHS.index("step2_plain")]["seconds"]
    for row in rows:
        row["speedup_vs_step2_plain"] = plain / row["seconds"] if row["path"] != "step1" else None
    return rows


def print_table(rows: list[dict]) -> None:
    print("\n| LLM | variant | threads | path | batch | prompt tok | cached prefix | no-grad text | s/step (median) | samples/s | x step2_plain "
          "| forward s | backward s | GRU fwd+bwd s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        speedup = f"{row['speedup_vs_step2_plain']:.2f}" if row["speedup_vs_step2_plain"] else ""
        print(f"| {row['llm']} | {row['variant']} | {row['threads']} | {row['path']} | {row['batch_size']} | {row['prompt_tokens']:.0f} "
              f"| {row.get('cached_prefix_tokens', '')} | {row.get('frozen_text_tokens', '')} | {row['seconds']:.3f} | {row['samples_per_second']:.2f} | {speedup} "
              f"| {row.get('forward_s', 0):.3f} | {row.get('backward_s', 0):.3f} | {row['gru_train_seconds']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", choices=("smollm2", "toy"), default="smollm2")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--history-length", type=int, default=5)
    parser.add_argument("--max-item-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per path before the profiled one")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="the frozen LLM's dtype")
    parser.add_argument("--variant", choices=("userllm", "userllm_no_uhem", "collm", "collm_va"), default="userllm")
    parser.add_argument("--name", default="step2_speed")
    args = parser.parse_args()
    rows = []
    for threads in args.threads:
        rows += benchmark(args.llm, threads, args.batch_size, args.history_length, args.repeats, args.max_item_tokens,
                          args.warmup, args.dtype, args.variant)
        print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.name}.json"
    atomic_write_json(path, {"command": " ".join(["python", *sys.argv]), "environment": environment(), "rows": rows})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
