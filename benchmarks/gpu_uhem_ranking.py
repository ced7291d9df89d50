"""The UHEM at long histories and shared-prefix ranking, at the paper's shape on one GPU.

Same models and synthetic data as `gpu_paper_scale.py` (a random Vicuna-7B-shaped LLM in
bfloat16, or `--tiny`). Two parts:

- `uhem`: the history encoder alone, per n in `--history-lengths` and per encoder: its step-2
  time (forward and backward under bfloat16 autocast, as the Trainer's `bf16=True` runs it) and
  its scoring time (forward), samples/s and MFU (benchmarks/flops.py). Encoders: `gru` (the
  GRU over the padded sequence, cuDNN's kernel on a GPU) and `gru-no-cudnn` (a GPU only: the
  same GRU with cuDNN switched off, ATen's own kernels).
- `ranking`: candidates/s of one user with `--candidates` candidates and of `--users` users
  sharing the same number of pairs, with the shared prompt prefix (`score_candidates`,
  `score_candidates_for_users`) against scoring each pair from scratch; the largest score
  difference between the two is reported (they must agree).

    python benchmarks/gpu_uhem_ranking.py                       # on a GPU (~2 min on one H200)
    python benchmarks/gpu_uhem_ranking.py --tiny --device cpu   # anywhere, seconds

Writes benchmarks/results/<name>.json (default gpu_paper_scale_uhem_ranking[_tiny]).
"""

import argparse
import contextlib
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_paper_scale as scale  # noqa: E402
from flops import history_encoder_flops, llm_forward_flops, mfu  # noqa: E402

from modeling_userllm.ranking import score_candidates, score_candidates_for_users, score_candidates_from_scratch  # noqa: E402

ENCODERS = ("gru", "gru-no-cudnn")


def encoder_call(model, batch: dict, training: bool, autocast_dtype: torch.dtype | None):
    """A closure running the UHEM on `batch` (device tensors): forward + backward when `training`."""
    args = (batch["history_input_ids"], batch["history_attention_mask"], batch.get("history_image_features"))
    autocast = torch.autocast(batch["history_input_ids"].device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()

    def run():
        if training:
            model.zero_grad(set_to_none=True)
            with autocast:
                tokens = model.encode_history(*args)
            tokens.float().pow(2).mean().backward()
        else:
            with torch.no_grad():
                model.encode_history(*args)

    return run


def measure_uhem(args, shape, tokenizer, items, device, dtype, peak_flops) -> list[dict]:
    rows = []
    for n in args.history_lengths:
        for encoder in args.encoders:
            if encoder == "gru-no-cudnn" and device.type != "cuda":
                continue
            model, processor = scale.build("userllm", shape, tokenizer, n, device, dtype, args.seed)
            model.set_training_step("encoders")
            batch = processor(scale.make_records(items, args.batch_size, n, seed=n))
            on_device = {key: value.to(device) for key, value in batch.items()}
            cudnn = torch.backends.cudnn.flags(enabled=False) if encoder == "gru-no-cudnn" else contextlib.nullcontext()
            token_lengths = batch["history_attention_mask"].sum(1).tolist()
            row = {"n": n, "encoder": encoder, "batch": args.batch_size, "uhem_tokens": sum(token_lengths) / len(token_lengths)}
            with cudnn:
                for kind, training in (("step2", True), ("scoring", False)):
                    seconds = scale.seconds_per_call(encoder_call(model, on_device, training, dtype if training and dtype != torch.float32 else None),
                                                     device, args.warmup, args.repeats)
                    flops = history_encoder_flops(model.history_encoder, token_lengths, trained=training)
                    row |= {f"{kind}_ms": 1000 * seconds, f"{kind}_samples_s": args.batch_size / seconds,
                            f"{kind}_flops": flops, f"{kind}_mfu": mfu(flops, seconds, peak_flops)}
            rows.append(row)
            print(f"  uhem n={n} {encoder}: step 2 {row['step2_ms']:.1f} ms ({row['step2_samples_s']:.0f} samples/s), "
                  f"scoring {row['scoring_ms']:.1f} ms", flush=True)
            del model, processor, on_device
            scale.release(device)
    return rows


def ranking_flops(text_config, processor, user_records: list[dict], candidate_lists: list[list[dict]], shared: bool) -> int:
    """Model FLOPs of scoring every (user, candidate) pair: each user's prefix once then the
    suffixes on it (`shared`), or every full prompt. The UHEM's few FLOPs are not counted."""
    prefix_lengths, suffix_lengths, full_lengths = [], [], []
    for user_record, candidates in zip(user_records, candidate_lists):
        for index, item in enumerate(candidates):
            split = processor.split_prompt({**user_record, **item})
            if index == 0:
                prefix_lengths.append(len(split["prefix_ids"]))
            suffix_lengths.append(len(split["suffix_ids"]))
            full_lengths.append(len(split["prefix_ids"]) + len(split["suffix_ids"]))
    if not shared:
        return llm_forward_flops(text_config, full_lengths)
    pasts = [prefix for prefix, candidates in zip(prefix_lengths, candidate_lists) for _ in candidates]
    return (llm_forward_flops(text_config, prefix_lengths, answer_rows=0)
            + llm_forward_flops(text_config, suffix_lengths, past_lengths=pasts))


def measure_ranking(args, shape, tokenizer, items, device, dtype, peak_flops) -> list[dict]:
    n = args.ranking_history_length
    model, processor = scale.build("userllm", shape, tokenizer, n, device, dtype, args.seed)
    model.eval()
    users = scale.make_records(items, max(args.users, 1), n, seed=7)
    candidates = [item for item in items if item["item_id"] not in {h["item_id"] for h in users[0]["history"]}]
    one_user = candidates[: args.candidates]
    per_user = args.candidates // args.users
    rows = []
    cases = {
        "one user": ([users[0]], [one_user]),
        f"{args.users} users": (users, [candidates[:per_user] for _ in users]),
    }
    for case, (user_records, candidate_lists) in cases.items():
        pairs = sum(len(candidates) for candidates in candidate_lists)

        def shared():
            if len(user_records) == 1:
                return [score_candidates(model, processor, user_records[0], candidate_lists[0], batch_size=args.ranking_batch_size)]
            return score_candidates_for_users(model, processor, user_records, candidate_lists, batch_size=args.ranking_batch_size,
                                              user_batch_size=args.users)

        def scratch():
            return [score_candidates_from_scratch(model, processor, user, candidates, batch_size=args.ranking_batch_size)
                    for user, candidates in zip(user_records, candidate_lists)]

        difference = max(float((a.float() - b.float()).abs().max()) for a, b in zip(shared(), scratch()))
        row = {"case": case, "users": len(user_records), "pairs": pairs, "max_score_difference": difference}
        for kind, fn in (("shared_prefix", shared), ("from_scratch", scratch)):
            seconds = scale.seconds_per_call(fn, device, args.warmup, args.repeats)
            flops = ranking_flops(model.config.text_config, processor, user_records, candidate_lists, kind == "shared_prefix")
            row |= {f"{kind}_candidates_s": pairs / seconds, f"{kind}_flops": flops, f"{kind}_mfu": mfu(flops, seconds, peak_flops)}
        row["speedup"] = row["shared_prefix_candidates_s"] / row["from_scratch_candidates_s"]
        rows.append(row)
        print(f"  ranking {case}, {pairs} pairs: shared prefix {row['shared_prefix_candidates_s']:.0f} candidates/s, from scratch "
              f"{row['from_scratch_candidates_s']:.0f} ({row['speedup']:.2f}x), scores differ by {difference:.2e}", flush=True)
    del model, processor
    scale.release(device)
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a scaled-down LLM shape (CPU smoke run, tests)")
    parser.add_argument("--parts", nargs="+", choices=["uhem", "ranking"], default=["uhem", "ranking"])
    parser.add_argument("--history-lengths", type=int, nargs="+", default=[5, 10, 20, 50], help="uhem part")
    parser.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS))
    parser.add_argument("--batch-size", type=int, default=8, help="uhem part: users per call (the step-2 batch)")
    parser.add_argument("--candidates", type=int, default=1000, help="ranking part: candidates of the one user, pairs of the users")
    parser.add_argument("--users", type=int, default=8, help="ranking part: users of the batch case")
    parser.add_argument("--ranking-history-length", type=int, default=5)
    parser.add_argument("--ranking-batch-size", type=int, default=128, help="pairs per LLM forward")
    parser.add_argument("--item-tokens", type=int, default=44)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--output-dir", type=Path, default=scale.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.users < 1 or args.candidates < args.users:
        parser.error(f"--users must be >= 1 and --candidates ({args.candidates}) at least --users ({args.users})")

    shape = scale.TINY if args.tiny else scale.VICUNA_7B
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    words = scale.synthetic_vocabulary(shape["vocab_size"] - 200)
    tokenizer = scale.build_toy_tokenizer(words + [str(year) for year in range(1950, 2020)])
    num_items = max(scale.NUM_ITEMS, args.candidates + max(args.history_lengths + [args.ranking_history_length]))
    items = scale.make_items(words, args.item_tokens, args.seed)[:num_items]
    if len(items) < num_items:
        raise ValueError(f"{len(items)} synthetic items, {num_items} needed: lower --candidates")
    peak_flops, peak_source = scale.device_peak(device, dtype, args.peak_tflops)
    print(f"LLM shape {shape}, {args.dtype} on {device}; MFU against {peak_source}", flush=True)
    start = time.perf_counter()
    result = {
        "shape": "tiny" if args.tiny else "vicuna-7b",
        "llm_config": shape,
        "dtype": args.dtype,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "settings": {k: v for k, v in vars(args).items() if k != "output_dir"},
        "peak_flops": peak_flops,
        "peak_source": peak_source,
        "uhem": measure_uhem(args, shape, tokenizer, items, device, dtype, peak_flops) if "uhem" in args.parts else [],
        "ranking": measure_ranking(args, shape, tokenizer, items, device, dtype, peak_flops) if "ranking" in args.parts else [],
    }
    result["wall_s"] = time.perf_counter() - start
    name = args.name or ("gpu_paper_scale_uhem_ranking_tiny" if args.tiny else "gpu_paper_scale_uhem_ranking")
    scale.write_json(args.output_dir / f"{name}.json", result)
    return result


if __name__ == "__main__":
    main()
