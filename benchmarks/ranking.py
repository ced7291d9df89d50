"""Top-K ranking: the shared user prefix against scoring from scratch, for one user, many users and a large catalogue.

Three parts (`--parts`, all by default):

- `single`: one user (history length n), N candidates. `score_candidates` runs the LLM over the
  user's prompt prefix once and over each candidate's suffix in batches;
  `score_candidates_from_scratch` runs every candidate's full prompt. The ideal speed-up is
  (prompt tokens per candidate) / (tokens that depend on the candidate); the achieved
  fraction is measured speed-up / ideal.
- `multi`: U users x N candidates each (different candidates per user; 100 x 100 and, where
  users have few candidates, 100 x 10). Batched multi-user
  scoring (`score_candidates_for_users`: the prefixes of `--user-batch-size` users in one
  forward, then batches of (user, candidate) pairs) against per-user shared-prefix scoring
  (`score_candidates` for each user in turn) and from-scratch scoring.
- `catalogue`: ranking a catalogue of M items for one user: the LLM over all M
  (`rank_candidates`) against two-stage ranking (`two_stage_rank`: the model's MF tables
  shortlist C items, the LLM reranks them), with recall@10 of the two-stage top 10 against
  the full ranking's top 10. The benchmark's LLMs and MF tables are random, so the two
  stages' scores are unrelated and recall@10 is about C / M by chance; with trained models it
  measures how well MF shortlists what the LLM would rank first.

All times include building the prompts. From-scratch cost per candidate does not depend on N
(or U), so it is timed on at most `scratch_cap` candidates (scores compared on those).

    python benchmarks/ranking.py                          # full run (see docs/BENCHMARKS.md for times)
    python benchmarks/ranking.py --quick                  # smoke run, all parts
    python benchmarks/ranking.py --parts multi catalogue --llms stories260k
"""

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import torch
from transformers.utils import logging
from uhem_efficiency import DTYPES, REPO_ROOT, build_model, environment, make_catalogue, make_user_records, markdown_table

from modeling_userllm.features.store import atomic_write_json
from modeling_userllm.ranking import (
    collaborative_scores,
    rank_candidates,
    score_candidates,
    score_candidates_for_users,
    score_candidates_from_scratch,
    two_stage_rank,
)

VARIANTS = ("userllm", "userllm_no_uhem")
PARTS = ("single", "multi", "catalogue")
# Per LLM and part, sized for 2 heavily shared CPU cores; a part an LLM lacks is skipped for it.
# single: candidate counts, timed repeats per count (the first also for from-scratch scoring),
#   how many candidates from-scratch scoring is timed on.
# multi: (users, candidates per user) shapes, how many candidates from-scratch scoring is timed on.
# catalogue: items, users ranked (recall averaged over them), shortlist sizes C.
FULL_SETTINGS = {
    "stories260k": dict(
        single=dict(num_candidates=(100, 1000), repeats=(2, 1), scratch_cap=64),
        multi=dict(shapes=((100, 100), (100, 10)), scratch_cap=64),
        catalogue=dict(num_items=1000, num_users=3, num_rerank=(50, 100)),
    ),
    "random-10m": dict(single=dict(num_candidates=(100,), repeats=(1,), scratch_cap=32)),
    # Run alone with --batch-size 16: a 135M LLM makes the warm-up batch costly on a CPU.
    "smollm2": dict(
        single=dict(num_candidates=(100,), repeats=(1,), scratch_cap=16),
        multi=dict(shapes=((8, 16), (16, 4)), scratch_cap=16),
    ),
}
QUICK_SETTINGS = {
    "stories260k": dict(
        single=dict(num_candidates=(100,), repeats=(1,), scratch_cap=16),
        multi=dict(shapes=((6, 10), (6, 2)), scratch_cap=8),
        catalogue=dict(num_items=200, num_users=1, num_rerank=(20,)),
    ),
}
SINGLE_COLUMNS = [
    ("llm", "LLM", ""), ("variant", "variant", ""), ("num_candidates", "candidates", "d"),
    ("prompt_tokens", "prompt tok", ".0f"), ("suffix_tokens", "candidate tok", ".1f"),
    ("shared_candidates_per_second", "shared cand/s", ".1f"), ("scratch_candidates_per_second", "scratch cand/s", ".1f"),
    ("speedup", "speed-up", ".2f"), ("ideal_speedup", "ideal", ".2f"), ("fraction_of_ideal", "fraction", ".2f"),
    ("max_abs_difference", "max |diff|", ".1e"),
]
MULTI_COLUMNS = [
    ("llm", "LLM", ""), ("variant", "variant", ""), ("num_users", "users", "d"), ("num_candidates", "cand/user", "d"),
    ("prefix_tokens", "prefix tok (min-max)", ""), ("suffix_tokens", "candidate tok", ".1f"),
    ("batched_candidates_per_second", "batched cand/s", ".1f"), ("per_user_candidates_per_second", "per-user cand/s", ".1f"),
    ("scratch_candidates_per_second", "scratch cand/s", ".1f"), ("speedup_vs_per_user", "batched / per-user", ".2f"),
    ("speedup_vs_scratch", "batched / scratch", ".2f"), ("max_abs_difference_per_user", "max |diff| per-user", ".1e"),
    ("max_abs_difference_scratch", "max |diff| scratch", ".1e"),
]
CATALOGUE_COLUMNS = [
    ("llm", "LLM", ""), ("variant", "variant", ""), ("num_items", "items", "d"), ("method", "method", ""),
    ("llm_candidates", "LLM-scored", "d"), ("seconds_per_user", "s/user", ".2f"), ("speedup", "speed-up", ".1f"),
    ("recall_at_10", "recall@10", ".2f"),
]


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    """(median seconds over `repeats` calls, the last call's result)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def candidate_lists(catalogue: list[dict], num_users: int, num_candidates: int, seed: int = 0) -> list[list[dict]]:
    """Per user, `num_candidates` distinct items of the catalogue, different for each user."""
    return [random.Random(seed + user).sample(catalogue, num_candidates) for user in range(num_users)]


# ----------------------------------------------------------------------------- one user


def benchmark_single(llm: str, variant: str, settings: dict, history_length: int, batch_size: int, dtype: str, **_) -> list[dict]:
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


# ----------------------------------------------------------------------------- many users


def benchmark_multi(
    llm: str, variant: str, settings: dict, history_length: int, batch_size: int, dtype: str, user_batch_size: int
) -> list[dict]:
    """U users x N candidates: batched multi-user, per-user shared-prefix and (capped) from-scratch
    scoring; one row per (U, N) of `settings["shapes"]`."""
    model, processor = build_model(llm, variant, history_length, dtype=dtype)
    model.eval()
    catalogue = make_catalogue()
    max_users = max(num_users for num_users, _ in settings["shapes"])
    users = make_user_records(max_users, history_length, catalogue, seed=11)
    lists = candidate_lists(catalogue, max_users, max(num_candidates for _, num_candidates in settings["shapes"]), seed=100)
    score_candidates_for_users(model, processor, users[:2], [lists[0][:batch_size], lists[1][:2]], batch_size, user_batch_size)  # warm-up
    score_candidates_from_scratch(model, processor, users[0], lists[0][:batch_size], batch_size)
    # From scratch: `scratch_cap` candidates in all, whole batches of the first users' candidates.
    per_scratch_user = min(len(lists[0]), settings["scratch_cap"])
    scratch_users = -(-settings["scratch_cap"] // per_scratch_user)
    scratch_seconds, scratch_scores = timed(lambda: [
        score_candidates_from_scratch(model, processor, user, candidates[:per_scratch_user], batch_size)
        for user, candidates in zip(users[:scratch_users], lists)
    ], 1)
    num_scratch = per_scratch_user * scratch_users
    rows = []
    for num_users, num_candidates in settings["shapes"]:
        shape_users, shape_lists = users[:num_users], [candidates[:num_candidates] for candidates in lists[:num_users]]
        batched_seconds, batched_scores = timed(
            lambda: score_candidates_for_users(model, processor, shape_users, shape_lists, batch_size, user_batch_size), 1
        )
        per_user_seconds, per_user_scores = timed(lambda: [
            score_candidates(model, processor, user, candidates, batch_size) for user, candidates in zip(shape_users, shape_lists)
        ], 1)
        num_pairs = num_users * num_candidates
        prefix_lengths = [len(processor.split_prompt({**user, **candidates[0]})["prefix_ids"])
                          for user, candidates in zip(shape_users, shape_lists)]
        suffix_tokens = statistics.mean(
            len(processor.split_prompt({**users[0], **candidate})["suffix_ids"]) for candidate in shape_lists[0]
        )
        compared = min(num_candidates, per_scratch_user)
        rows.append({
            "llm": llm,
            "variant": variant,
            "dtype": dtype,
            "history_length": history_length,
            "batch_size": batch_size,
            "user_batch_size": user_batch_size,
            "num_users": num_users,
            "num_candidates": num_candidates,
            "scratch_candidates_timed": num_scratch,
            "prefix_tokens": f"{statistics.mean(prefix_lengths):.0f} ({min(prefix_lengths)}-{max(prefix_lengths)})",
            "suffix_tokens": suffix_tokens,
            "batched_seconds": batched_seconds,
            "per_user_seconds": per_user_seconds,
            "batched_candidates_per_second": num_pairs / batched_seconds,
            "per_user_candidates_per_second": num_pairs / per_user_seconds,
            "scratch_candidates_per_second": num_scratch / scratch_seconds,
            "speedup_vs_per_user": per_user_seconds / batched_seconds,
            "speedup_vs_scratch": (num_pairs / batched_seconds) / (num_scratch / scratch_seconds),
            "max_abs_difference_per_user": max((b - p).abs().max().item() for b, p in zip(batched_scores, per_user_scores)),
            "max_abs_difference_scratch": max(
                (b[:compared] - s[:compared]).abs().max().item() for b, s in zip(batched_scores, scratch_scores)
            ),
        })
        print(f"  {llm} {variant} {num_users}x{num_candidates}: batched {rows[-1]['batched_candidates_per_second']:.1f} cand/s, "
              f"per-user {rows[-1]['per_user_candidates_per_second']:.1f}, scratch {rows[-1]['scratch_candidates_per_second']:.1f}",
              flush=True)
    return rows


# ----------------------------------------------------------------------------- a large catalogue


def large_catalogue(model, num_items: int, seed: int = 0) -> list[dict]:
    """`num_items` synthetic items (`make_catalogue`'s, over several seeds, renumbered), and random MF
    rows for all of them: the model's item table is replaced by one of `num_items` rows."""
    catalogue = []
    for part in range(-(-num_items // 200)):
        catalogue += [{**item, "item_id": len(catalogue) + index} for index, item in enumerate(make_catalogue(seed=seed + part))]
    catalogue = catalogue[:num_items]
    table = model.item_embeddings.weight
    model.item_embeddings = torch.nn.Embedding(num_items + 1, table.shape[1], dtype=table.dtype, device=table.device)
    model.item_embeddings.requires_grad_(False)
    model.config.num_items = num_items
    generator = torch.Generator().manual_seed(seed)
    model.load_collaborative_embeddings(model.user_embeddings.weight[:-1].clone(), torch.randn(num_items, table.shape[1], generator=generator))
    return catalogue


def recall_at_10(indices: torch.Tensor, reference: torch.Tensor) -> float:
    """The share of `reference`'s first 10 positions that `indices`' first 10 hold."""
    return len(set(indices[:10].tolist()) & set(reference[:10].tolist())) / min(10, len(reference))


def benchmark_catalogue(llm: str, variant: str, settings: dict, history_length: int, batch_size: int, dtype: str, **_) -> list[dict]:
    """Full LLM ranking of a catalogue against MF alone and MF top-C + LLM rerank, per user; one row per method."""
    model, processor = build_model(llm, variant, history_length, dtype=dtype)
    model.eval()
    catalogue = large_catalogue(model, settings["num_items"])
    users = make_user_records(settings["num_users"], history_length, catalogue, seed=13)
    item_ids = [item["item_id"] for item in catalogue]
    rank_candidates(model, processor, users[0], catalogue[:batch_size], batch_size)  # warm-up
    results = {}  # method -> (LLM-scored candidates, seconds per user, recall@10 per user)
    for user in users:
        full_seconds, (full_indices, _) = timed(lambda: rank_candidates(model, processor, user, catalogue, batch_size), 1)
        methods = {"LLM, all items": (len(catalogue), full_seconds, 1.0)}
        mf_seconds, mf_scores = timed(lambda: collaborative_scores(model, user["user_id"], item_ids), 1)
        methods["MF alone"] = (0, mf_seconds, recall_at_10(torch.argsort(mf_scores, descending=True), full_indices))
        for num_rerank in settings["num_rerank"]:
            seconds, (indices, _) = timed(
                lambda: two_stage_rank(model, processor, user, catalogue, num_rerank=num_rerank, top_k=10, batch_size=batch_size), 1
            )
            methods[f"MF top {num_rerank} + LLM"] = (num_rerank, seconds, recall_at_10(indices, full_indices))
        for method, (scored, seconds, recall) in methods.items():
            results.setdefault(method, (scored, [], []))
            results[method][1].append(seconds)
            results[method][2].append(recall)
    full_seconds = statistics.mean(results["LLM, all items"][1])
    rows = []
    for method, (scored, seconds, recalls) in results.items():
        rows.append({
            "llm": llm,
            "variant": variant,
            "dtype": dtype,
            "history_length": history_length,
            "batch_size": batch_size,
            "num_items": len(catalogue),
            "num_users": len(users),
            "method": method,
            "llm_candidates": scored,
            "seconds_per_user": statistics.mean(seconds),
            "speedup": full_seconds / statistics.mean(seconds),
            "recall_at_10": statistics.mean(recalls),
            "recall_at_10_per_user": recalls,
        })
        print(f"  {llm} {variant} {method}: {statistics.mean(seconds):.2f} s/user, recall@10 {statistics.mean(recalls):.2f}", flush=True)
    return rows


BENCHMARKS = {"single": (benchmark_single, SINGLE_COLUMNS), "multi": (benchmark_multi, MULTI_COLUMNS),
              "catalogue": (benchmark_catalogue, CATALOGUE_COLUMNS)}
# JSON keys of each part's rows ("rows": the single-user part, as in earlier result files).
ROW_KEYS = {"single": "rows", "multi": "multi_user_rows", "catalogue": "catalogue_rows"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: stories260k, small sizes, every part")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which benchmarks to run")
    parser.add_argument("--llms", nargs="+", help="subset of: " + ", ".join(FULL_SETTINGS))
    parser.add_argument("--history-length", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="candidates, or (user, candidate) pairs, per LLM forward")
    parser.add_argument("--user-batch-size", type=int, default=16, help="multi part: user prefixes per LLM forward")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="weights dtype; scores equal from-scratch scores to 1e-4 only in float32 (bfloat16 "
                             "rounding differs between any two batchings, from-scratch ones included)")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--name", help="output file stem (default ranking[_quick][_PART...], parts named when not all)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    settings = QUICK_SETTINGS if args.quick else FULL_SETTINGS
    llms = args.llms or list(settings)
    env = environment()
    print(json.dumps(env))
    started = time.perf_counter()
    results = {}
    for part in args.parts:
        benchmark, _ = BENCHMARKS[part]
        rows = results.setdefault(part, [])
        for llm in llms:
            part_settings = settings.get(llm, FULL_SETTINGS[llm]).get(part)
            if part_settings is None:
                print(f"  {llm}: no {part} settings, skipped", flush=True)
                continue
            part_started = time.perf_counter()
            for variant in VARIANTS:
                rows += benchmark(llm, variant, part_settings, args.history_length, args.batch_size, args.dtype,
                                  user_batch_size=args.user_batch_size)
            env[f"wall_seconds_{part}_{llm}"] = time.perf_counter() - part_started
    env["load_average_end"] = os.getloadavg()
    env["wall_seconds"] = time.perf_counter() - started

    for part, rows in results.items():
        print(f"\n{part}:\n" + markdown_table(rows, BENCHMARKS[part][1]))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    default_name = "ranking" + ("_quick" if args.quick else "") + ("" if set(args.parts) == set(PARTS) else "_" + "_".join(args.parts))
    path = args.output_dir / f"{args.name or default_name}.json"
    atomic_write_json(path, {
        "environment": env,
        "arguments": {key: str(value) for key, value in vars(args).items()},
        **{ROW_KEYS[part]: rows for part, rows in results.items()},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
