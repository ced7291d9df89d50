"""Top-K ranking: candidates/s with the shared user prefix against scoring each candidate from scratch.

For one user (history length n) and N candidates, `score_candidates` runs the LLM over the
user's prompt prefix once and over each candidate's suffix in batches;
`score_candidates_from_scratch` runs every candidate's full prompt. Both times include
building the prompts. The ideal speed-up is (prompt tokens per candidate) / (tokens that
depend on the candidate); the achieved fraction is measured speed-up / ideal. From-scratch
cost per candidate does not depend on N, so it is timed on at most `--scratch-cap`
candidates (scores compared on those).

    python benchmarks/ranking.py            # full run (~18 min on 2 heavily shared cores)
    python benchmarks/ranking.py --quick    # smoke run
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from transformers.utils import logging
from uhem_efficiency import DTYPES, REPO_ROOT, build_model, environment, make_catalogue, make_user_records, markdown_table

from modeling_userllm.features.store import atomic_write_json
from modeling_userllm.ranking import score_candidates, score_candidates_from_scratch

VARIANTS = ("userllm", "userllm_no_uhem")
# Per LLM: candidate counts, timed repeats per count (the first also for from-scratch scoring), and
# how many candidates from-scratch scoring is timed on; sized for 2 heavily shared CPU cores.
FULL_SETTINGS = {
    "stories260k": dict(num_candidates=(100, 1000), repeats=(2, 1), scratch_cap=64),
    "random-10m": dict(num_candidates=(100,), repeats=(1,), scratch_cap=32),
    # Run alone with --batch-size 16: a 135M LLM makes the warm-up batch costly on a CPU.
    "smollm2": dict(num_candidates=(100,), repeats=(1,), scratch_cap=16),
}
QUICK_SETTINGS = {"stories260k": dict(num_candidates=(100,), repeats=(1,), scratch_cap=16)}
COLUMNS = [
    ("llm", "LLM", ""), ("variant", "variant", ""), ("num_candidates", "candidates", "d"),
    ("prompt_tokens", "prompt tok", ".0f"), ("suffix_tokens", "candidate tok", ".1f"),
    ("shared_candidates_per_second", "shared cand/s", ".1f"), ("scratch_candidates_per_second", "scratch cand/s", ".1f"),
    ("speedup", "speed-up", ".2f"), ("ideal_speedup", "ideal", ".2f"), ("fraction_of_ideal", "fraction", ".2f"),
    ("max_abs_difference", "max |diff|", ".1e"),
]


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    """(median seconds over `repeats` calls, the last call's result)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def benchmark_variant(llm: str, variant: str, settings: dict, history_length: int, batch_size: int, dtype: str) -> list[dict]:
    """Shared-prefix and from-scratch ranking of one user's candidates, one row per candidate count."""
    model, processor = build_model(llm, variant, history_length, dtype=dtype)
    model.eval()
    catalogue = make_catalogue()
    user = make_user_records(1, history_length, catalogue, seed=7)[0]
    candidates = [catalogue[index % len(catalogue)] for index in range(max(settings["num_candidates"]))]
    scratch = candidates[: settings["scratch_cap"]]
    score_candidates(model, processor, user, candidates[:batch_size], batch_size)  # warm-up
    score_candidates_from_scratch(model, processor, user, candidates[:batch_size], batch_size)
    scratch_seconds, scratch_scores = timed(
        lambda: score_candidates_from_scratch(model, processor, user, scratch, batch_size), settings["repeats"][0]
    )
    rows = []
    for num_candidates, repeats in zip(settings["num_candidates"], settings["repeats"]):
        splits = [processor.split_prompt({**user, **candidate}) for candidate in candidates[:num_candidates]]
        suffix_tokens = sum(len(split["suffix_ids"]) for split in splits) / num_candidates
        prompt_tokens = len(splits[0]["prefix_ids"]) + suffix_tokens
        shared_seconds, shared_scores = timed(
            lambda: score_candidates(model, processor, user, candidates[:num_candidates], batch_size), repeats
        )
        speedup = (num_candidates / shared_seconds) / (len(scratch) / scratch_seconds)
        ideal = prompt_tokens / suffix_tokens
        rows.append({
            "llm": llm,
            "variant": variant,
            "dtype": dtype,
            "history_length": history_length,
            "batch_size": batch_size,
            "num_candidates": num_candidates,
            "repeats": repeats,
            "scratch_candidates_timed": len(scratch),
            "scratch_repeats": settings["repeats"][0],
            "prompt_tokens": prompt_tokens,
            "prefix_tokens": len(splits[0]["prefix_ids"]),
            "suffix_tokens": suffix_tokens,
            "shared_candidates_per_second": num_candidates / shared_seconds,
            "scratch_candidates_per_second": len(scratch) / scratch_seconds,
            "speedup": speedup,
            "ideal_speedup": ideal,
            "fraction_of_ideal": speedup / ideal,
            "max_abs_difference": (shared_scores[: len(scratch)] - scratch_scores).abs().max().item(),
        })
        print(f"  {llm} {variant} N={num_candidates}: speed-up {speedup:.2f} of ideal {ideal:.2f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: stories260k, 100 candidates")
    parser.add_argument("--llms", nargs="+", help="subset of: " + ", ".join(FULL_SETTINGS))
    parser.add_argument("--history-length", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="weights dtype; scores equal from-scratch scores to 1e-4 only in float32 (bfloat16 "
                             "rounding differs between any two batchings, from-scratch ones included)")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--name", help="output file stem (default ranking[_quick])")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    settings = QUICK_SETTINGS if args.quick else FULL_SETTINGS
    llms = args.llms or list(settings)
    env = environment()
    print(json.dumps(env))
    started = time.perf_counter()
    rows = []
    for llm in llms:
        for variant in VARIANTS:
            rows += benchmark_variant(llm, variant, settings.get(llm, FULL_SETTINGS[llm]), args.history_length, args.batch_size, args.dtype)
    env["load_average_end"] = os.getloadavg()
    env["wall_seconds"] = time.perf_counter() - started

    print(markdown_table(rows, COLUMNS))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"{args.name or ('ranking_quick' if args.quick else 'ranking')}.json"
    atomic_write_json(path, {"environment": env, "arguments": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
