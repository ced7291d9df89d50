"""What the User History Encoding Module buys: USER-LLM with UHEM against the history inline.

For each LLM and history length n, both variants score and train on the same synthetic
records with the same batch size:
- prompt tokens per sample (and, for the UHEM, the GRU's input tokens),
- training step time (forward + backward + AdamW step) of both steps of the schedule:
  step 1 ("lora") trains on the text form of the prompt, which writes the history inline in
  both variants, so it is measured once and shared; step 2 ("encoders") on the full prompt,
- inference throughput (model forward only, the processor excluded),
- the history encoder's own time (counted inside the UHEM numbers, also reported alone),
  for each GRU width asked for (`--encoder-types gru gru:256`, each against the same inline
  variant; the transformer and hierarchical encoders measured in docs/BENCHMARKS.md were removed),
- peak memory: the largest sum of live tensor bytes seen by the torch profiler (allocation
  events, net per op) during one call.
Warm-up calls are excluded; times are medians of repeated calls; threads are fixed.

    python benchmarks/uhem_efficiency.py            # full run (~40 min on 2 heavily shared cores; split it with --llms)
    python benchmarks/uhem_efficiency.py --quick    # smoke run (~1-2 min)
    # n = 5..50 (docs/BENCHMARKS.md, "History encoders"; their GRU rows)
    python benchmarks/uhem_efficiency.py --llms stories260k smollm2 --history-lengths 5 10 20 50 --name history_encoders
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoConfig, AutoTokenizer, LlamaConfig
from transformers.utils import logging

from modeling_userllm import HISTORY_ENCODER_TYPES, create_model_and_processor
from modeling_userllm.features.store import atomic_write_json
from timing import inference

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the experiments/ harness at the repository root
from experiments.runner import environment as experiment_environment  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("USERLLM_SHARED", REPO_ROOT.parent / "shared"))
STORIES260K = SHARED_DIR / "models" / "stories260k"
DTYPES = ("float32", "bfloat16")
NUM_USERS, NUM_ITEMS, FEATURE_SIZE = 50, 200, 384

# Random Llama shapes of about 10M and 30M parameters (with the 512-token stories260k vocabulary).
RANDOM_LLAMAS = {
    "random-10m": dict(hidden_size=320, intermediate_size=864, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8),
    "random-30m": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=10, num_attention_heads=8, num_key_value_heads=8),
}
# Per LLM: history lengths, batch size, warm-up calls, timed repeats; sized for 2 shared CPU cores.
FULL_SETTINGS = {
    "stories260k": dict(history_lengths=(5, 10, 20, 50), batch_size=2, warmup=0, repeats=2),
    "random-10m": dict(history_lengths=(5, 10, 20), batch_size=2, warmup=0, repeats=1),
    "random-30m": dict(history_lengths=(5, 10), batch_size=1, warmup=0, repeats=1),
    "smollm2": dict(history_lengths=(5, 10, 20), batch_size=1, warmup=0, repeats=2),
}
QUICK_SETTINGS = {
    "stories260k": dict(history_lengths=(5, 10), batch_size=2, warmup=0, repeats=1),
}

WORDS = ("a young detective hunts a thief across the city while her family hides an old secret about war love "
         "money and a lost dog that leads them to the sea where friends fight monsters under a golden moon").split()
NOUNS = ("Story", "Heat", "Casino", "River", "Moon", "Garden", "Train", "Island", "Ghost", "Dream")
ADJECTIVES = ("Toy", "Last", "Silent", "Broken", "Golden", "Hidden", "Lost", "Wild", "Dark", "Little")


# ----------------------------------------------------------------------------- data


def make_catalogue(seed: int = 0) -> list[dict]:
    """Synthetic items: a title, a ~20-word description (like a knowledge-enhanced one), an image."""
    rng = random.Random(seed)
    return [
        {
            "item_id": item_id,
            "title": f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} ({rng.randrange(1950, 2020)})",
            "description": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(16, 24))),
            "image_features": [rng.gauss(0, 1) for _ in range(FEATURE_SIZE)],
        }
        for item_id in range(NUM_ITEMS)
    ]


def make_user_records(num_records: int, history_length: int, catalogue: list[dict], seed: int = 0) -> list[dict]:
    """Records with exactly `history_length` history items each; the same seed gives the same records."""
    rng = random.Random(seed)
    return [
        {
            **rng.choice(catalogue),
            "user_id": rng.randrange(NUM_USERS),
            "history": rng.sample(catalogue, history_length),
            "label": rng.randrange(2),
        }
        for _ in range(num_records)
    ]


# ----------------------------------------------------------------------------- models


SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def smollm2_path() -> str:
    """SmolLM2-135M-Instruct (Hub id HuggingFaceTB/SmolLM2-135M-Instruct, 270 MB).

    Looked for in `$USERLLM_ASSETS` or `~/.cache/userllm-assets` (put it there with
    `hf download HuggingFaceTB/SmolLM2-135M-Instruct --local-dir ~/.cache/userllm-assets/SmolLM2-135M-Instruct`);
    on the project's offline machines `../shared/tools/get_smollm2.py` materialises it; else
    the Hub id (downloaded on first use).
    """
    folder = Path(os.environ.get("USERLLM_ASSETS", Path.home() / ".cache" / "userllm-assets")) / "SmolLM2-135M-Instruct"
    if (folder / "config.json").is_file():
        return str(folder)
    tool = SHARED_DIR / "tools" / "get_smollm2.py"
    if tool.is_file():
        return subprocess.run([sys.executable, str(tool)], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return SMOLLM2_HUB_ID


def encoder_settings(encoder: str) -> dict:
    """`"gru"` or `"gru:256"` (a width) -> the model's history encoder settings."""
    encoder_type, _, width = encoder.partition(":")
    if encoder_type not in HISTORY_ENCODER_TYPES or (width and not width.isdigit()):
        raise SystemExit(f"encoder {encoder!r}: expected TYPE or TYPE:WIDTH with TYPE among {list(HISTORY_ENCODER_TYPES)}")
    return {"history_hidden_size": int(width) if width else None}


def build_model(llm: str, variant: str, history_length: int, seed: int = 0, dtype: str = "float32", encoder: str = "gru"):
    """A USER-LLM of one variant around one of the benchmark LLMs, in the same state for both variants.

    `encoder` is the UHEM's encoder (`encoder_settings`; ignored by variants without the UHEM).

    `dtype` is explicit: left to transformers' default ("auto"), SmolLM2 would load in its
    checkpoint's bfloat16 and the random LLMs in float32.
    """
    path = smollm2_path() if llm == "smollm2" else str(STORIES260K)
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    common = dict(num_users=NUM_USERS, num_items=NUM_ITEMS, max_history_items=history_length, dtype=getattr(torch, dtype),
                  **encoder_settings(encoder))
    if llm in RANDOM_LLAMAS:
        text_config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=False, **RANDOM_LLAMAS[llm])
        model, processor = create_model_and_processor(tokenizer, variant, text_config=text_config, **common)
    elif llm == "stories260k":
        # Its shape with random weights (timings do not depend on them): its 512 positions are
        # raised to 4096, as the inline variant's prompts pass 512 tokens from n = 10.
        text_config = AutoConfig.from_pretrained(path)
        text_config.max_position_embeddings = 4096
        model, processor = create_model_and_processor(tokenizer, variant, text_config=text_config, **common)
    else:
        model, processor = create_model_and_processor(tokenizer, variant, base_model_name_or_path=path, **common)
    generator = torch.Generator().manual_seed(seed)
    model.load_collaborative_embeddings(
        torch.randn(NUM_USERS, 256, generator=generator), torch.randn(NUM_ITEMS, 256, generator=generator)
    )
    return model, processor


def llm_parameters(model) -> int:
    return sum(param.numel() for param in model.language_model.parameters())


# ----------------------------------------------------------------------------- measuring


def peak_tensor_bytes(fn) -> int:
    """Peak of live tensor bytes allocated during `fn()`, from the torch profiler's memory events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda event: event.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


# "wall": time.perf_counter; "cpu": the process's CPU time (time.process_time), which a
# single-thread run on a shared CPU keeps nearly free of the other jobs' load.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def median_seconds(fn, warmup: int, repeats: int) -> float:
    """Median time of `fn()` (on the `--clock` chosen) over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def training_step(model, batch: dict, step: str):
    """A closure running one forward + backward + AdamW step of one training step."""
    model.train()
    model.set_training_step(step)
    optimizer = torch.optim.AdamW([param for param in model.parameters() if param.requires_grad], lr=1e-5)

    def run():
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()

    return run


def history_encoder_call(model, batch: dict, train: bool):
    """The UHEM alone (its encoder + the embedding of its input): forward, plus backward when `train`."""
    args = (batch["history_input_ids"], batch["history_attention_mask"], batch.get("history_image_features"))

    def run():
        if train:
            model.train()
            model.set_training_step("encoders")
            model.zero_grad(set_to_none=True)
            model.encode_history(*args).sum().backward()
        else:
            model.eval()
            with torch.no_grad():
                model.encode_history(*args)

    return run


def measure(fn, warmup: int, repeats: int) -> tuple[float, int]:
    """(median seconds, peak tensor bytes); the profiled call is the first (untimed) warm-up."""
    peak = peak_tensor_bytes(fn)
    return median_seconds(fn, warmup, repeats), peak


def benchmark_history_length(llm: str, history_length: int, settings: dict, catalogue: list[dict], dtype: str,
                             encoder_types: tuple[str, ...] = ("gru",)) -> list[dict]:
    """The inline variant and the UHEM with each encoder type at one history length: one result row each."""
    batch_size, warmup, repeats = settings["batch_size"], settings["warmup"], settings["repeats"]
    records = make_user_records(batch_size, history_length, catalogue, seed=history_length)
    rows, step1 = [], None
    # The inline variant first: it measures the shared step 1.
    for variant, encoder_type in [("userllm_no_uhem", "-")] + [("userllm", encoder) for encoder in encoder_types]:
        model, processor = build_model(llm, variant, history_length, dtype=dtype, encoder=encoder_type if encoder_type != "-" else "gru")
        batch = dict(processor(records))
        if step1 is None:
            step1 = measure(training_step(model, dict(processor(records, text_only=True)), "lora"), warmup, repeats)
        step2 = measure(training_step(model, batch, "encoders"), warmup, repeats)
        infer = measure(inference(model, batch), warmup, repeats)
        row = {
            "llm": llm,
            "llm_parameters": llm_parameters(model),
            "dtype": dtype,
            "history_length": history_length,
            "variant": variant,
            "encoder_type": encoder_type,
            "batch_size": batch_size,
            "repeats": repeats,
            "prompt_tokens": batch["attention_mask"].sum(1).float().mean().item(),
            "history_tokens": batch["history_attention_mask"].sum(1).float().mean().item() if "history_input_ids" in batch else 0.0,
            "step1_seconds": step1[0],
            "step2_seconds": step2[0],
            "inference_seconds": infer[0],
            "inference_samples_per_second": batch_size / infer[0],
            "step1_peak_mb": step1[1] / 2**20,
            "step2_peak_mb": step2[1] / 2**20,
            "inference_peak_mb": infer[1] / 2**20,
            "encoder_inference_seconds": 0.0,
            "encoder_training_seconds": 0.0,
        }
        if "history_input_ids" in batch:
            row["encoder_inference_seconds"] = median_seconds(history_encoder_call(model, batch, train=False), warmup, repeats)
            row["encoder_training_seconds"] = median_seconds(history_encoder_call(model, batch, train=True), warmup, repeats)
        rows.append(row)
        print(f"  {llm} n={history_length} {variant} {encoder_type}: {row['prompt_tokens']:.0f} tokens, step2 {step2[0]:.3f}s, "
              f"inference {infer[0]:.3f}s", flush=True)
    return rows


# ----------------------------------------------------------------------------- reporting


def reference_gflops(size: int = 512, repeats: int = 5) -> float:
    """Median GFLOP/s of a float32 matmul: how much of the shared CPU this process got."""
    a = torch.randn(size, size)
    seconds = median_seconds(lambda: a @ a, 1, repeats)
    return 2 * size**3 / seconds / 1e9


def environment() -> dict:
    """Machine and package versions (as recorded for experiment runs) plus how loaded the CPU is."""
    return {
        **experiment_environment(),
        "load_average": os.getloadavg(),
        "reference_matmul_gflops": reference_gflops(),
    }


# Targets of issue 19: step 2 at n=10 reaches this fraction of the token-ratio
# ideal, and the encoder's share of step 2 stays under this up to n=50.
TARGET_FRACTION_OF_IDEAL_AT_10 = 0.8
TARGET_ENCODER_SHARE = 0.15


def speedups(rows: list[dict]) -> list[dict]:
    """Inline / UHEM ratios per (LLM, n, encoder type), and the UHEM's LLM-only cost per sample (encoder removed).

    The token-ratio ideal is the step-2 speed-up the UHEM would give if its encoder cost
    nothing and the LLM's time were proportional to its prompt tokens.
    """
    inline = {(row["llm"], row["history_length"]): row for row in rows if row["variant"] == "userllm_no_uhem"}
    table = []
    for uhem in rows:
        key = (uhem["llm"], uhem["history_length"])
        if uhem["variant"] != "userllm" or key not in inline:
            continue
        reference = inline[key]
        token_ratio = reference["prompt_tokens"] / uhem["prompt_tokens"]
        step2_speedup = reference["step2_seconds"] / uhem["step2_seconds"]
        table.append({
            "llm": uhem["llm"],
            "history_length": uhem["history_length"],
            "encoder_type": uhem.get("encoder_type", "gru"),
            "prompt_tokens_ratio": token_ratio,
            "inference_speedup": reference["inference_seconds"] / uhem["inference_seconds"],
            "step2_speedup": step2_speedup,
            "step2_fraction_of_ideal": step2_speedup / token_ratio,
            "two_step_speedup": (reference["step1_seconds"] + reference["step2_seconds"]) / (uhem["step1_seconds"] + uhem["step2_seconds"]),
            "uhem_llm_ms_per_sample": 1e3 * (uhem["inference_seconds"] - uhem["encoder_inference_seconds"]) / uhem["batch_size"],
            "uhem_encoder_ms_per_sample": 1e3 * uhem["encoder_inference_seconds"] / uhem["batch_size"],
            "encoder_share_of_inference": uhem["encoder_inference_seconds"] / uhem["inference_seconds"],
            "encoder_share_of_step2": uhem["encoder_training_seconds"] / uhem["step2_seconds"],
        })
    return table


def targets(table: list[dict]) -> list[dict]:
    """Per (LLM, encoder type): the issue's two targets, met or missed, from the speed-up table."""
    verdicts = []
    for llm, encoder in dict.fromkeys((row["llm"], row["encoder_type"]) for row in table):
        selected = [row for row in table if row["llm"] == llm and row["encoder_type"] == encoder]
        at_10 = [row["step2_fraction_of_ideal"] for row in selected if row["history_length"] == 10]
        share = max(row["encoder_share_of_step2"] for row in selected)
        verdicts.append({
            "llm": llm,
            "encoder_type": encoder,
            "fraction_of_ideal_at_10": at_10[0] if at_10 else float("nan"),
            "fraction_target": "met" if at_10 and at_10[0] >= TARGET_FRACTION_OF_IDEAL_AT_10 else ("missed" if at_10 else "not run"),
            "max_n": max(row["history_length"] for row in selected),
            "max_encoder_share": share,
            "share_target": "met" if share < TARGET_ENCODER_SHARE else "missed",
        })
    return verdicts


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """`columns`: (key, header, format spec)."""
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format(row[key], spec) for key, _, spec in columns) + " |")
    return "\n".join(lines)


MEASUREMENT_COLUMNS = [
    ("llm", "LLM", ""), ("history_length", "n", "d"), ("variant", "variant", ""), ("encoder_type", "encoder", ""),
    ("batch_size", "batch", "d"), ("prompt_tokens", "prompt tok", ".0f"), ("history_tokens", "encoder tok", ".0f"),
    ("step1_seconds", "step 1 s", ".3f"), ("step2_seconds", "step 2 s", ".3f"),
    ("inference_samples_per_second", "infer samples/s", ".1f"), ("encoder_inference_seconds", "encoder fwd s", ".4f"),
    ("encoder_training_seconds", "encoder fwd+bwd s", ".4f"), ("inference_peak_mb", "infer peak MB", ".1f"),
    ("step2_peak_mb", "step 2 peak MB", ".1f"),
]
SPEEDUP_COLUMNS = [
    ("llm", "LLM", ""), ("history_length", "n", "d"), ("encoder_type", "encoder", ""), ("prompt_tokens_ratio", "token ratio (ideal)", ".2f"),
    ("inference_speedup", "inference x", ".2f"), ("step2_speedup", "step 2 x", ".2f"),
    ("step2_fraction_of_ideal", "step 2 / ideal", ".2f"), ("two_step_speedup", "steps 1+2 x", ".2f"),
    ("uhem_llm_ms_per_sample", "UHEM LLM ms/sample", ".2f"), ("uhem_encoder_ms_per_sample", "encoder ms/sample", ".2f"),
    ("encoder_share_of_inference", "encoder share infer", ".2f"), ("encoder_share_of_step2", "encoder share step 2", ".2f"),
]
TARGET_COLUMNS = [
    ("llm", "LLM", ""), ("encoder_type", "encoder", ""), ("fraction_of_ideal_at_10", "step 2 / ideal at n=10", ".2f"),
    ("fraction_target", f"target >= {TARGET_FRACTION_OF_IDEAL_AT_10}", ""), ("max_n", "up to n", "d"),
    ("max_encoder_share", "max encoder share of step 2", ".2f"), ("share_target", f"target < {TARGET_ENCODER_SHARE}", ""),
]


def plot(rows: list[dict], path: Path) -> None:
    """Inference and step-2 time per sample against n, one column per LLM, log-log: the inline
    variant, the UHEM with each encoder type, and each encoder alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    llms = list(dict.fromkeys(row["llm"] for row in rows))
    figure, axes = plt.subplots(2, len(llms), figsize=(4 * len(llms), 7), squeeze=False)
    for column, llm in enumerate(llms):
        systems = dict.fromkeys((row["variant"], row.get("encoder_type", "gru")) for row in rows if row["llm"] == llm)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for index, ((variant, encoder), marker) in enumerate(zip(systems, "so^vD")):
            color = colors[index % len(colors)]
            selected = sorted((row for row in rows if row["llm"] == llm and row["variant"] == variant
                               and row.get("encoder_type", "gru") == encoder), key=lambda row: row["history_length"])
            lengths = [row["history_length"] for row in selected]
            label = variant if variant == "userllm_no_uhem" else f"{variant} ({encoder})"
            for axis, key in ((axes[0, column], "inference_seconds"), (axes[1, column], "step2_seconds")):
                axis.plot(lengths, [1e3 * row[key] / row["batch_size"] for row in selected], f"{marker}-", color=color, label=label)
            if variant == "userllm":
                for axis, key in ((axes[0, column], "encoder_inference_seconds"), (axes[1, column], "encoder_training_seconds")):
                    axis.plot(lengths, [1e3 * row[key] / row["batch_size"] for row in selected], f"{marker}--", color=color,
                              label=f"{encoder} alone")
        axes[0, column].set_title(llm)
        for axis, label in ((axes[0, column], "inference ms/sample"), (axes[1, column], "step 2 ms/sample")):
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xticks(lengths, [str(length) for length in lengths], minor=False)
            axis.set_xticks([], minor=True)
            axis.set_xlabel("history length n")
            axis.set_ylabel(label)
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def save(stem: Path, env: dict, settings: dict, rows: list[dict]) -> None:
    """Writes `stem`.json (environment, settings, measurements, speed-ups) and `stem`.png."""
    table = speedups(rows)
    atomic_write_json(stem.with_suffix(".json"), {"environment": env, "settings": settings, "rows": rows, "speedups": table,
                                                  "targets": targets(table)})
    plot(rows, stem.with_suffix(".png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: stories260k, n = 5 and 10")
    parser.add_argument("--llms", nargs="+", help="subset of: " + ", ".join(FULL_SETTINGS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="weights dtype of every model")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--name", help="output file stem (default uhem_efficiency[_quick])")
    parser.add_argument("--encoder-types", nargs="+", default=["gru"], metavar="TYPE[:WIDTH]",
                        help=f"UHEM encoders to measure, each against the same inline variant: among {list(HISTORY_ENCODER_TYPES)}, "
                             "optionally with a width (gru:256; default: the LLM hidden size); default: the paper's gru")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="what a time is: wall time, or the process's CPU time (steadier for 1-thread runs on a busy machine; "
                             "it leaves out time spent waiting, so use wall time on a GPU)")
    parser.add_argument("--history-lengths", type=int, nargs="+",
                        help="history lengths n to run instead of the settings' (e.g. 5 10)")
    args = parser.parse_args()

    for encoder in args.encoder_types:
        encoder_settings(encoder)  # a bad spec fails now, not after minutes of measuring
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    settings = QUICK_SETTINGS if args.quick else FULL_SETTINGS
    llms = args.llms or list(settings)
    env = environment() | {"clock": args.clock}
    print(json.dumps(env))
    catalogue = make_catalogue()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or ("uhem_efficiency_quick" if args.quick else "uhem_efficiency")
    run_settings = {llm: settings.get(llm, FULL_SETTINGS[llm]) for llm in llms}
    if args.history_lengths:
        run_settings = {llm: {**values, "history_lengths": tuple(args.history_lengths)} for llm, values in run_settings.items()}
    rows = []
    started = time.perf_counter()
    for llm in llms:
        for history_length in run_settings[llm]["history_lengths"]:
            rows += benchmark_history_length(llm, history_length, run_settings[llm], catalogue, args.dtype, tuple(args.encoder_types))
            save(args.output_dir / name, env, run_settings, rows)  # partial results survive an interrupted run
    env["reference_matmul_gflops_end"] = reference_gflops()
    env["load_average_end"] = os.getloadavg()
    env["wall_seconds"] = time.perf_counter() - started
    save(args.output_dir / name, env, run_settings, rows)
    print(markdown_table(rows, MEASUREMENT_COLUMNS))
    print()
    print(markdown_table(speedups(rows), SPEEDUP_COLUMNS))
    print()
    print(markdown_table(targets(speedups(rows)), TARGET_COLUMNS))
    print(f"wrote {args.output_dir / name}.json and .png")


if __name__ == "__main__":
    main()
