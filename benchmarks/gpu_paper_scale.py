"""USER-LLM at the paper's scale on one GPU: a Vicuna-7B-shaped LLM in bfloat16 with the paper's LoRA.

Builds a randomly initialised Llama with Vicuna-7B's shape (hidden 4096, 32 layers, 32 heads,
vocabulary 32,000; from a config, nothing downloaded) in bfloat16, wraps it as USER-LLM and
as "w/o UHEM" (history inline), and measures at n = 5 and 10 history items:
- step-2 training samples/s (LoRA frozen; UHEM + projectors trained in float32 under bfloat16
  autocast, as the Trainer's `bf16=True` runs them; AdamW), and its peak GPU memory;
- inference samples/s (`model(**batch)` without autocast, as `predict_proba` runs it).
Random weights change no timing: the work per token is the same as Vicuna's.

Each row also gives its model FLOPs (benchmarks/flops.py, from the LLM's shape and the real,
unpadded token counts) and `mfu` against the device's peak: on a GPU its dense bfloat16 peak
from the data sheet (`flops.GPU_BF16_PEAK_TFLOPS`, or `--peak-tflops`), on a CPU the measured
best rate of a large matmul in the run's dtype (`cpu_peak_flops`); both are stated in the JSON.
`--sweep-batch-sizes` adds a batch-size sweep (step 2, step 1 on the text prompt with the
history inline, scoring) up to the first that does not fit; `--item-tokens-spread` makes item
texts vary in length and `--length-buckets` then batches records of similar prompt length
(the padding each batch carries is reported as `padding_fraction`).

Prompts come from the real processor over synthetic items whose text is `--item-tokens`
tokens long (a title plus a ~20-word description is about 40-45 tokens for Llama-family
tokenizers; see benchmarks/item_text_budget.py). The tokenizer is word-level over a
synthetic vocabulary sized to Vicuna's 32,000 (the GPU machine has no network and no
Llama tokenizer), so one word is one token.

    python benchmarks/gpu_paper_scale.py                 # on a GPU: the paper's shape (< 8 min on one H200)
    python benchmarks/gpu_paper_scale.py --tiny          # anywhere: a scaled-down shape (the test runs this)
    python benchmarks/gpu_paper_scale.py --sweep-batch-sizes 8 16 32 64 128 --name gpu_paper_scale_sweep

Prints a table and writes benchmarks/results/<name>.json.
"""

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig

from modeling_userllm import create_model_and_processor
from modeling_userllm.toy_model import build_toy_tokenizer

RESULTS_DIR = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(RESULTS_DIR.parent))
from flops import GPU_BF16_PEAK_TFLOPS, history_encoder_flops, llm_forward_flops, mfu  # noqa: E402
from timing import inference  # noqa: E402

# Vicuna-7B v1.5 (Llama-2-7B): hidden 4096, 32 layers of 32 heads, MLP 11008, vocabulary 32,000.
VICUNA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=1200, max_position_embeddings=4096, rms_norm_eps=1e-5)
# The paper's Figure 3 ratios (w/o UHEM time / USER-LLM time), published (Vicuna-7B, A100).
PUBLISHED_SPEEDUPS = {5: {"training": 1.16, "inference": 1.15}, 10: {"training": 1.83, "inference": 2.17}}
# Items enough for the ranking benchmark (1,000 candidates + the history; gpu_uhem_ranking.py).
NUM_USERS, NUM_ITEMS, VISION_SIZE, COLLABORATIVE_SIZE = 64, 1200, 384, 256


# ----------------------------------------------------------------------------- data


def synthetic_vocabulary(size: int) -> list[str]:
    """`size` distinct lower-case words (word-level tokens)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(letters[(i // 26**k) % 26] for k in range(4)) for i in range(size)]


def make_items(words: list[str], item_tokens: int, seed: int, spread: int = 0) -> list[dict]:
    """Items whose `"Title" (description)` text is `item_tokens` word-level tokens long (each
    drawn from `item_tokens +- spread` when `spread` > 0).

    A title of two words and a year gives `" w w ( 1995 ) "` = 7 tokens, the description's
    parentheses 2 more; the description fills the rest.
    """
    rng = random.Random(seed)
    return [
        {
            "item_id": item_id,
            "title": f"{rng.choice(words)} {rng.choice(words)} ({rng.randrange(1950, 2020)})",
            "description": " ".join(rng.choice(words)
                                    for _ in range(max(1, item_tokens - 9 + (rng.randint(-spread, spread) if spread else 0)))),
            "image_features": [rng.gauss(0, 1) for _ in range(VISION_SIZE)],
        }
        for item_id in range(NUM_ITEMS)
    ]


def make_records(items: list[dict], num_records: int, history_length: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {**rng.choice(items), "user_id": rng.randrange(NUM_USERS), "history": rng.sample(items, history_length),
         "label": rng.randrange(2)}
        for _ in range(num_records)
    ]


# ----------------------------------------------------------------------------- model


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(variant: str, shape: dict, tokenizer, history_length: int, device: torch.device, dtype: torch.dtype, seed: int):
    """The variant around a random LLM of `shape`, built directly on `device` in `dtype`."""
    torch.manual_seed(seed)
    with device, default_dtype(dtype):
        model, processor = create_model_and_processor(
            tokenizer, variant, text_config=LlamaConfig(tie_word_embeddings=False, **shape),
            num_users=NUM_USERS, num_items=NUM_ITEMS, max_item_tokens=512, max_history_items=history_length,
        )
    model.upcast_trained_modules()  # built under a bfloat16 default: what training changes goes to float32
    generator = torch.Generator().manual_seed(seed)
    model.load_collaborative_embeddings(torch.randn(NUM_USERS, COLLABORATIVE_SIZE, generator=generator),
                                        torch.randn(NUM_ITEMS, COLLABORATIVE_SIZE, generator=generator))
    return model, processor


# ----------------------------------------------------------------------------- measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_gib(fn, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def training_step(model, batch: dict, device: torch.device, autocast_dtype: torch.dtype | None, step: str = "encoders"):
    """One update of training `step` (forward, backward, AdamW) as the Trainer runs it with `bf16=True`."""
    model.train()
    model.set_training_step(step)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=1e-3)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()

    def run():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()

    return run


def batch_flops(model, batch: dict, path: str) -> int:
    """Model FLOPs of one call of `path` ("step2", "step1" or "scoring") on a processor batch (CPU tensors)."""
    training = path != "scoring"
    flops = llm_forward_flops(model.config.text_config, batch["attention_mask"].sum(1).tolist(), backward_to_inputs=training)
    if "history_attention_mask" in batch:
        flops += history_encoder_flops(model.history_encoder, batch["history_attention_mask"].sum(1).tolist(),
                                       trained=path == "step2")
    return flops


def padding_fraction(batch: dict) -> float:
    """Share of the prompt positions of a batch that are padding."""
    mask = batch["attention_mask"]
    return 1.0 - float(mask.sum()) / mask.numel()


def measure_path(model, batch: dict, path: str, args, device: torch.device, dtype: torch.dtype, peak_flops: float | None,
                 infer_model=None) -> dict:
    """samples/s, peak memory, model FLOPs and MFU of `path` on `batch` (a CPU processor batch)."""
    on_device = {k: v.to(device) for k, v in batch.items()}
    if path == "scoring":
        fn = inference(model if infer_model is None else infer_model, on_device)
    else:
        fn = training_step(model, on_device, device, dtype if dtype != torch.float32 else None,
                           "encoders" if path == "step2" else "lora")
    seconds = seconds_per_call(fn, device, args.warmup, args.repeats)
    flops = batch_flops(model, batch, path)
    batch_size = len(batch["input_ids"])
    return {
        "batch": batch_size,
        "samples_s": batch_size / seconds,
        "tokens_s": float(batch["attention_mask"].sum()) / seconds,
        "peak_gib": peak_memory_gib(fn, device),
        "flops": flops,
        "tflops_s": flops / seconds / 1e12,
        "mfu": mfu(flops, seconds, peak_flops),
        "padding_fraction": padding_fraction(batch),
    }


def length_bucketed(processor, records: list[dict], batch_size: int, text_only: bool = False) -> list[dict]:
    """The `batch_size` records of most similar prompt length (sorted by length, the middle
    run): what a length-grouped sampler gives a batch."""
    lengths = processor(records, text_only=text_only)["attention_mask"].sum(1).tolist()
    order = sorted(range(len(records)), key=lengths.__getitem__)
    start = (len(records) - batch_size) // 2
    return [records[index] for index in order[start : start + batch_size]]


def make_batch(processor, items: list[dict], batch_size: int, history_length: int, seed: int, args, text_only: bool = False):
    """A processor batch of `batch_size` random records; with `--length-buckets`, drawn from
    `--length-buckets` times as many by length."""
    if not args.length_buckets:
        return processor(make_records(items, batch_size, history_length, seed), text_only=text_only)
    pool = make_records(items, batch_size * args.length_buckets, history_length, seed)
    return processor(length_bucketed(processor, pool, batch_size, text_only), text_only=text_only)


def release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(args, shape: dict, tokenizer, items: list[dict], device: torch.device, dtype: torch.dtype,
            peak_flops: float | None) -> list[dict]:
    rows = []
    for history_length in args.history_lengths:
        for variant, encoder_type in [("userllm_no_uhem", "-"), ("userllm", "gru")]:
            start = time.perf_counter()
            model, processor = build(variant, shape, tokenizer, history_length, device, dtype, args.seed)
            build_s = time.perf_counter() - start
            train_batch = make_batch(processor, items, args.batch_size, history_length, history_length, args)
            eval_batch = make_batch(processor, items, args.eval_batch_size, history_length, 100 + history_length, args)
            train = measure_path(model, train_batch, "step2", args, device, dtype, peak_flops)
            infer_model = torch.compile(model) if args.compile else None
            infer = measure_path(model, eval_batch, "scoring", args, device, dtype, peak_flops, infer_model)
            row = {
                "n": history_length,
                "variant": variant,
                "encoder_type": encoder_type,
                "prompt_tokens": int(train_batch["attention_mask"].sum(1).float().mean()),
                "uhem_tokens": int(train_batch["history_attention_mask"].sum(1).float().mean()) if "history_attention_mask" in train_batch else 0,
                "train_batch": args.batch_size,
                "train_samples_s": train["samples_s"],
                "train_peak_gib": train["peak_gib"],
                "train_flops": train["flops"],
                "train_mfu": train["mfu"],
                "train_padding_fraction": train["padding_fraction"],
                "eval_batch": args.eval_batch_size,
                "infer_samples_s": infer["samples_s"],
                "infer_peak_gib": infer["peak_gib"],
                "infer_flops": infer["flops"],
                "infer_mfu": infer["mfu"],
                "infer_padding_fraction": infer["padding_fraction"],
                "infer_compiled": bool(args.compile),
                "trained_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad}),
                "llm_dtype": str(model.get_input_embeddings().weight.dtype).removeprefix("torch."),
                "llm_parameters": sum(p.numel() for p in model.language_model.parameters()),
                "build_s": build_s,
            }
            rows.append(row)
            print(f"  n={history_length} {variant} {encoder_type}: train {row['train_samples_s']:.2f} samples/s "
                  f"(MFU {format_share(row['train_mfu'])}), infer {row['infer_samples_s']:.2f} samples/s "
                  f"(MFU {format_share(row['infer_mfu'])})", flush=True)
            del model, processor, train_batch, eval_batch, infer_model
            release(device)
    return rows


# The sweep's paths: (path, variant, text-only prompt).
SWEEP_PATHS = (("step2", "userllm", False), ("step1", "userllm", True), ("scoring", "userllm", False))


def is_out_of_memory(error: Exception) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def sweep(args, shape: dict, tokenizer, items: list[dict], device: torch.device, dtype: torch.dtype,
          peak_flops: float | None) -> list[dict]:
    """Each path at each of `--sweep-batch-sizes` (ascending) at n = `--sweep-history-length`,
    up to the first batch size that runs out of memory (recorded as such)."""
    rows = []
    n = args.sweep_history_length
    model, processor = build("userllm", shape, tokenizer, n, device, dtype, args.seed)
    for path, variant, text_only in SWEEP_PATHS:
        for batch_size in sorted(args.sweep_batch_sizes):
            batch = make_batch(processor, items, batch_size, n, 1000 + batch_size, args, text_only)
            try:
                result = measure_path(model, batch, path, args, device, dtype, peak_flops)
            except RuntimeError as error:  # torch.OutOfMemoryError is one
                if not is_out_of_memory(error):
                    raise
                result = None
            # Outside the except block: the exception's frames (and their tensors) are gone.
            model.zero_grad(set_to_none=True)
            release(device)
            if result is None:
                rows.append({"path": path, "n": n, "batch": batch_size, "out_of_memory": True})
                print(f"  sweep {path} batch {batch_size}: out of memory", flush=True)
                break
            rows.append({"path": path, "n": n, "prompt_tokens": int(batch["attention_mask"].sum(1).float().mean()),
                         "out_of_memory": False, **result})
            print(f"  sweep {path} batch {batch_size}: {result['samples_s']:.2f} samples/s, MFU {format_share(result['mfu'])}",
                  flush=True)
    del model, processor
    release(device)
    return rows


def format_share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def cpu_peak_flops(dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    """The best rate (FLOP/s) of a `size` x `size` matmul in `dtype` over `repeats` calls, on this CPU's threads."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def device_peak(device: torch.device, dtype: torch.dtype, peak_tflops: float | None) -> tuple[float | None, str]:
    """(peak FLOP/s the MFU is taken against, how it was obtained)."""
    if peak_tflops:
        return peak_tflops * 1e12, f"given: --peak-tflops {peak_tflops}"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, tflops in GPU_BF16_PEAK_TFLOPS.items():
            if fragment in name:
                return tflops * 1e12, f"data sheet: {fragment} dense bfloat16, {tflops} TFLOP/s (no sparsity)"
        return None, f"unknown GPU {name!r}: pass --peak-tflops"
    size = 1024
    peak = cpu_peak_flops(dtype, size)
    return peak, (f"measured: best of 5 {size}x{size} @ {size}x{size} {str(dtype).removeprefix('torch.')} matmuls on this "
                  f"CPU, {torch.get_num_threads()} threads ({peak / 1e9:.1f} GFLOP/s)")


def speedups(rows: list[dict]) -> list[dict]:
    """w/o UHEM time / USER-LLM time per n and encoder type, beside the paper's Figure 3 ratios."""
    result = []
    for uhem in rows:
        if uhem["variant"] != "userllm":
            continue
        n = uhem["n"]
        inline = next(row for row in rows if row["n"] == n and row["variant"] == "userllm_no_uhem")
        result.append({
            "n": n,
            "encoder_type": uhem.get("encoder_type", "gru"),
            "train_speedup": uhem["train_samples_s"] / inline["train_samples_s"],
            "infer_speedup": uhem["infer_samples_s"] / inline["infer_samples_s"],
            "train_memory_ratio": (inline["train_peak_gib"] / uhem["train_peak_gib"]) if uhem["train_peak_gib"] else None,
            "token_ratio": inline["prompt_tokens"] / uhem["prompt_tokens"],
            "published_train_speedup": PUBLISHED_SPEEDUPS.get(n, {}).get("training"),
            "published_infer_speedup": PUBLISHED_SPEEDUPS.get(n, {}).get("inference"),
        })
    return result


def print_tables(rows: list[dict], ratios: list[dict]) -> None:
    columns = ["n", "variant", "encoder_type", "prompt_tokens", "uhem_tokens", "train_samples_s", "train_mfu", "train_peak_gib",
               "infer_samples_s", "infer_mfu", "infer_peak_gib", "trained_dtypes", "llm_dtype"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [format_share(row[c]) if c.endswith("_mfu") else f"{row[c]:.2f}" if isinstance(row[c], float)
                 else ("-" if row[c] is None else str(row[c])) for c in columns]
        print("| " + " | ".join(cells) + " |")
    print()
    print("| n | encoder | token ratio | step-2 training speed-up | published (A100) | inference speed-up | published (A100) | step-2 memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in ratios:
        memory = "-" if r["train_memory_ratio"] is None else f"{r['train_memory_ratio']:.2f}x"
        print(f"| {r['n']} | {r['encoder_type']} | {r['token_ratio']:.2f} | {r['train_speedup']:.2f}x | {r['published_train_speedup']}x | "
              f"{r['infer_speedup']:.2f}x | {r['published_infer_speedup']}x | {memory} |")


def print_sweep(rows: list[dict]) -> None:
    print("| path | n | batch | samples/s | tokens/s | TFLOP/s | MFU | peak GiB | padding |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if row["out_of_memory"]:
            print(f"| {row['path']} | {row['n']} | {row['batch']} | out of memory | | | | | |")
            continue
        peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
        print(f"| {row['path']} | {row['n']} | {row['batch']} | {row['samples_s']:.2f} | {row['tokens_s']:.0f} | "
              f"{row['tflops_s']:.4g} | {format_share(row['mfu'])} | {peak} | {100 * row['padding_fraction']:.1f}% |")


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2)
    os.replace(handle.name, path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a scaled-down LLM shape (CPU smoke run, tests)")
    parser.add_argument("--history-lengths", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--batch-size", type=int, default=8, help="step-2 training batch (the preset's per-device 8)")
    parser.add_argument("--eval-batch-size", type=int, default=32, help="inference batch (the preset's 32)")
    parser.add_argument("--item-tokens", type=int, default=44, help="tokens of each item's text")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--item-tokens-spread", type=int, default=0, help="item text lengths drawn from --item-tokens +- this")
    parser.add_argument("--length-buckets", type=int, default=0,
                        help="draw each batch from this many times its size in records, by prompt length (0: at random)")
    parser.add_argument("--sweep-batch-sizes", type=int, nargs="+", default=[],
                        help="also sweep these batch sizes for step 2, step 1 (history inline) and scoring")
    parser.add_argument("--sweep-history-length", type=int, default=5)
    parser.add_argument("--skip-rows", action="store_true", help="only the sweep (no per-n rows)")
    parser.add_argument("--compile", action="store_true", help="score with torch.compile(model) (the rows' inference)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak the MFU is taken against (default: see above)")
    parser.add_argument("--name", default=None, help="results file name (default gpu_paper_scale[_tiny])")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    shape = TINY if args.tiny else VICUNA_7B
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    # The tokenizer covers the synthetic words plus the prompt's own; its size stays inside the LLM vocabulary.
    words = synthetic_vocabulary(shape["vocab_size"] - 200)
    tokenizer = build_toy_tokenizer(words + [str(year) for year in range(1950, 2020)])
    if len(tokenizer) > shape["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than the LLM vocabulary {shape['vocab_size']}")
    items = make_items(words, args.item_tokens, args.seed, args.item_tokens_spread)
    peak_flops, peak_source = device_peak(device, dtype, args.peak_tflops)
    print(f"LLM shape {shape}, {args.dtype} on {device}; tokenizer {len(tokenizer)} tokens; items of {args.item_tokens} tokens; "
          f"MFU against {peak_source}", flush=True)
    start = time.perf_counter()
    rows = [] if args.skip_rows else measure(args, shape, tokenizer, items, device, dtype, peak_flops)
    ratios = speedups(rows)
    if rows:
        print_tables(rows, ratios)
    sweep_rows = sweep(args, shape, tokenizer, items, device, dtype, peak_flops) if args.sweep_batch_sizes else []
    if sweep_rows:
        print_sweep(sweep_rows)
    result = {
        "shape": "tiny" if args.tiny else "vicuna-7b",
        "llm_config": shape,
        "dtype": args.dtype,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "settings": {k: v for k, v in vars(args).items() if k not in ("output_dir",)},
        "peak_flops": peak_flops,
        "peak_source": peak_source,
        "flops_counting": "benchmarks/flops.py: model FLOPs from the LLM shape and real (unpadded) tokens; step 2 and "
                          "step 1 = forward + backward to the input embeddings, the UHEM x3 in step 2; scoring = forward",
        "rows": rows,
        "speedups": ratios,
        "sweep": sweep_rows,
        "wall_s": time.perf_counter() - start,
    }
    name = args.name or ("gpu_paper_scale_tiny" if args.tiny else "gpu_paper_scale")
    write_json(args.output_dir / f"{name}.json", result)
    return result


if __name__ == "__main__":
    main()
