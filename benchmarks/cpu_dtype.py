"""float32 against the dtype `dtype: auto` chooses for the frozen LLM on this CPU.

For SmolLM2-135M (its shape and weights, benchmarks/step2_speed.py's records: batch 8, n = 5
history items, 64-token item texts), one call of:

- `step1`: a step-1 ("lora") optimizer step on the text prompt (history inline);
- `step2`: a step-2 ("encoders") optimizer step on the full prompt, on the fast path the presets
  train with (`fast_step2: true`: constant-prefix cache, frozen LoRA merged);
- `inference`: a no-grad forward of the full prompt in eval mode;

in float32 (transformers' default attention, SDPA) and in the chosen dtype as the training
pipeline builds it (`modeling_userllm/training/dtype.py`: bfloat16 with eager attention where the
CPU has bfloat16 dot products), plus `--with-sdpa`: bfloat16 with SDPA, the attention kernel's
share of the gap. The modes run interleaved (repeat r of every mode and path, then r + 1), so a
change of load on a shared machine hits them alike: read the ratios. GFLOP/s per core are model
FLOPs (benchmarks/flops.py, real token counts) over the median wall time, per thread.

Then one trained model is scored both ways on the test split: stories260k (a real pretrained
Llama, `../shared/models/stories260k`) trained in float32 on the embedded toy data set with the
toy preset's schedule, then its frozen LLM cast to the chosen dtype.

    python benchmarks/cpu_dtype.py                           # SmolLM2, 1 and 2 threads (~15 min on 2 shared cores)
    python benchmarks/cpu_dtype.py --llm toy --threads 1 --skip-auc --name cpu_dtype_toy   # the demo's tiny Llama
"""

import argparse
import contextlib
import copy
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import history_encoder_flops, llm_forward_flops  # noqa: E402
from step2_speed import RESULTS, build, make_step  # noqa: E402
from timing import inference  # noqa: E402
from uhem_efficiency import STORIES260K, environment, make_user_records  # noqa: E402

from modeling_userllm.features.store import atomic_write_json  # noqa: E402
from modeling_userllm.training.arguments import DEFAULT_PRESET, parse_arguments  # noqa: E402
from modeling_userllm.training.dtype import BF16_CPU_FLAGS, cpu_bf16_flags, cpu_flags, resolve_llm_dtype  # noqa: E402

PATHS = ("step1", "step2", "inference")
# CPU flags recorded: the vector units that decide the float32 and bfloat16 matmul rates.
VECTOR_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c")
TARGET_SPEEDUP, TARGET_AUC_DIFFERENCE = 1.5, 0.005


def to_llm_dtype(model, dtype: str, attn_implementation: str | None):
    """A copy of `model` whose frozen LLM (and collaborative tables) are in `dtype`, as the pipeline builds it."""
    model = copy.deepcopy(model)
    model.to(getattr(torch, dtype))
    model.upcast_trained_modules()
    model.language_model.set_attn_implementation(attn_implementation or "sdpa")
    return model


def path_flops(model, batch: dict, path: str, cached_prefix: int = 0) -> int:
    """Model FLOPs of one call of `path` on a processor batch (benchmarks/flops.py)."""
    lengths = batch["attention_mask"].sum(1).tolist()
    flops = llm_forward_flops(model.config.text_config, [length - cached_prefix for length in lengths],
                              [cached_prefix] * len(lengths), backward_to_inputs=path != "inference")
    if path != "step1" and "history_attention_mask" in batch:
        flops += history_encoder_flops(model.history_encoder, batch["history_attention_mask"].sum(1).tolist(),
                                       trained=path == "step2")
    return flops


def calls(model, processor, records) -> dict:
    """`{path: (closure, model FLOPs of one call)}` for one model."""
    result = {}
    for path, speed_path in (("step1", "step1"), ("step2", "step2_fast")):
        run, tokens, batch = make_step(model, processor, records, speed_path)
        result[path] = (run, path_flops(model, batch, path, tokens.get("cached_prefix_tokens", 0)))
    batch = dict(processor(records))
    result["inference"] = (inference(model, batch), path_flops(model, batch, "inference"))
    return result


def benchmark(llm: str, threads: int, modes: dict, batch_size: int, repeats: int) -> list[dict]:
    torch.set_num_threads(threads)
    model, processor, catalogue = build(llm, 5, 64)
    records = make_user_records(batch_size, 5, catalogue, seed=5)
    models = {mode: model if dtype == "float32" and attention is None else to_llm_dtype(model, dtype, attention)
              for mode, (dtype, attention) in modes.items()}
    runs = {mode: calls(models[mode], processor, records) for mode in modes}
    for mode_runs in runs.values():  # warm-up: allocations, the prefix cache
        for run, _ in mode_runs.values():
            run()
    times = {(mode, path): [] for mode in modes for path in PATHS}
    for _ in range(repeats):
        for mode in modes:
            for path in PATHS:
                start = time.perf_counter()
                runs[mode][path][0]()
                times[mode, path].append(time.perf_counter() - start)
    rows = []
    for path in PATHS:
        float32_seconds = statistics.median(times["float32", path])
        for mode, (dtype, attention) in modes.items():
            seconds = statistics.median(times[mode, path])
            flops = runs[mode][path][1]
            rows.append({
                "llm": llm, "threads": threads, "path": path, "mode": mode, "dtype": dtype,
                "attn_implementation": attention or "sdpa", "batch_size": batch_size, "repeats": repeats,
                "seconds": seconds, "all_seconds": times[mode, path], "speedup_vs_float32": float32_seconds / seconds,
                "model_flops": flops, "gflops_per_core": flops / seconds / threads / 1e9,
            })
    return rows


def trained_model_auc_difference(chosen_dtype: str, attn_implementation: str | None, steps: int) -> dict:
    """Test AUC of stories260k trained in float32 on the toy data, scored in float32 and in the chosen dtype."""
    from modeling_userllm.training.pipeline import build_model, evaluate_splits, load_data_for_run, resolve_data
    from modeling_userllm.training.trainer import train_two_steps

    with tempfile.TemporaryDirectory() as output_dir:
        run = parse_arguments([
            "--preset", str(DEFAULT_PRESET), "--base_model_name_or_path", str(STORIES260K), "--dtype", "float32",
            "--output_dir", output_dir, "--step1_max_steps", str(steps), "--step2_max_steps", str(steps),
            "--save_strategy", "no", "--disable_tqdm", "true", "--report_to", "none",
        ])
        resolve_data(run)
        run_data = load_data_for_run(run)
        model, processor = build_model(run, run_data)
        trainer = train_two_steps(
            model, processor, run_data.split("train", None, run.training.seed), run.training, run.schedule.steps,
            {step: run.schedule.step_overrides(step) for step in run.schedule.steps}, fast_step2=run.schedule.fast_step2,
        )
        scores = {"float32": evaluate_splits(trainer, run_data, ["test"], None, run.training.seed)["test"]}
        trained = trainer.model
        trained.to(getattr(torch, chosen_dtype))
        trained.upcast_trained_modules()
        if attn_implementation is not None:
            trained.language_model.set_attn_implementation(attn_implementation)
        scores[chosen_dtype] = evaluate_splits(trainer, run_data, ["test"], None, run.training.seed)["test"]
    return {
        "model": f"stories260k trained in float32 on the toy data set (toy preset, {steps} steps per training step)",
        "test_rows": scores["float32"]["rows"],
        "test_auc": {dtype: values["auc"] for dtype, values in scores.items()},
        "test_uauc": {dtype: values["uauc"] for dtype, values in scores.items()},
        "auc_difference": abs(scores[chosen_dtype]["auc"] - scores["float32"]["auc"]),
    }


def print_table(rows: list[dict], auc: dict | None) -> None:
    print("\n| LLM | threads | path | mode | attention | s/call (median) | x float32 | GFLOP/s per core |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['llm']} | {row['threads']} | {row['path']} | {row['mode']} | {row['attn_implementation']} "
              f"| {row['seconds']:.3f} | {row['speedup_vs_float32']:.2f} | {row['gflops_per_core']:.1f} |")
    if auc:
        values = ", ".join(f"{dtype} {value:.4f}" for dtype, value in auc["test_auc"].items())
        print(f"\n{auc['model']}: test AUC {values} ({auc['test_rows']} rows), difference {auc['auc_difference']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", choices=("smollm2", "toy"), default="smollm2")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--with-sdpa", action="store_true", help="also bfloat16 with SDPA attention (the kernel's share)")
    parser.add_argument("--auc-steps", type=int, default=200, help="steps per training step of the AUC model")
    parser.add_argument("--skip-auc", action="store_true")
    parser.add_argument("--name", default="cpu_dtype")
    args = parser.parse_args()
    choice = resolve_llm_dtype("auto", "cpu")
    modes = {"float32": ("float32", None), choice.dtype: (choice.dtype, choice.attn_implementation)}
    if args.with_sdpa and choice.dtype == "bfloat16":
        modes["bfloat16_sdpa"] = ("bfloat16", None)
    load_before = os.getloadavg()
    rows = []
    for threads in args.threads:
        rows += benchmark(args.llm, threads, modes, args.batch_size, args.repeats)
        print_table(rows, None)
    auc = None
    if not args.skip_auc:
        torch.set_num_threads(1)
        with contextlib.redirect_stderr(io.StringIO()):  # the Trainer's progress bars and warnings
            auc = trained_model_auc_difference(choice.dtype, choice.attn_implementation, args.auc_steps)
    chosen = [row for row in rows if row["mode"] == choice.dtype and choice.dtype != "float32"]
    targets = {
        "speedup_at_least": TARGET_SPEEDUP,
        "speedups_met": all(row["speedup_vs_float32"] >= TARGET_SPEEDUP for row in chosen) if chosen else None,
        "auc_difference_at_most": TARGET_AUC_DIFFERENCE,
        "auc_difference_met": None if auc is None else auc["auc_difference"] <= TARGET_AUC_DIFFERENCE,
    }
    print_table(rows, auc)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.name}.json"
    atomic_write_json(path, {
        "command": " ".join(["python", *sys.argv]),
        "bf16_supported": bool(cpu_bf16_flags()),
        "cpu_flags": sorted(flag for flag in cpu_flags() if flag.startswith(VECTOR_FLAG_PREFIXES)),
        "bf16_flags_looked_for": list(BF16_CPU_FLAGS),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "chosen_dtype": choice.dtype,
        "chosen_attn_implementation": choice.attn_implementation,
        "reason": choice.reason,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "environment": environment(),
        "speedups": {f"{row['path']}_threads{row['threads']}": row["speedup_vs_float32"] for row in chosen},
        "rows": rows,
        "trained_model_auc": auc,
        "targets": targets,
    })
    print(f"written: {path}")


if __name__ == "__main__":
    main()
