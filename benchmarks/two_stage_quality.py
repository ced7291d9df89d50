"""Two-stage ranking on a trained checkpoint (issue 19, item 4): what the MF shortlist keeps.

`benchmarks/ranking.py` times two-stage ranking on random models, where its recall says nothing.
This script measures it on a trained model and its data set. For seeded test users with at least
one liked test item, the candidates are every item the user has no train or valid interaction
with, and the prompt's history is the one of the user's first test row. Three rankings:

- `llm`: the LLM over every candidate (`rank_candidates`, shared prefix);
- `mf`: the model's own MF tables alone (`collaborative_scores`);
- `two_stage C`: MF's top C reranked by the LLM (`two_stage_rank`), for each `--num-rerank` C.

Per ranking, averaged over users: `overlap@K`, the share of the LLM's full top K that it also
puts in its top K (1 for `llm`), `recall@K` and `hit@K` of the user's liked test items (a full
ranking over the catalogue, the standard top-K protocol), and seconds per user. Prints a table
and writes `benchmarks/results/NAME.json`.

    python benchmarks/two_stage_quality.py --model outputs/demo/model --data outputs/demo/toy/data \\
        --features outputs/demo/toy/features --users 50 --num-rerank 20 50 100 --name two_stage_quality_toy
"""

import argparse
import random
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor
from uhem_efficiency import REPO_ROOT, environment, markdown_table

from modeling_userllm.features.store import atomic_write_json
from modeling_userllm.ranking import collaborative_scores, rank_candidates, two_stage_rank
from modeling_userllm.training import DataArguments, load_run_data


def users_to_rank(data, split: str, seen: dict[int, set[int]]) -> dict[int, dict]:
    """`{user_id: {"first_row": index in split, "liked": item ids}}` for users who liked a `split`
    item they had not met before it (a liked item also in `seen` cannot be recommended to them)."""
    rows = data.interactions[split]
    users: dict[int, dict] = {}
    for index, (user, item, label) in enumerate(zip(rows["user_id"], rows["item_id"], rows["label"])):
        entry = users.setdefault(int(user), {"first_row": index, "liked": set()})
        if label and int(item) not in seen.get(int(user), set()):
            entry["liked"].add(int(item))
    return {user: entry for user, entry in users.items() if entry["liked"]}


def seen_items(data, splits: tuple[str, ...]) -> dict[int, set[int]]:
    seen: dict[int, set[int]] = {}
    for split in splits:
        rows = data.interactions[split]
        for user, item in zip(rows["user_id"], rows["item_id"]):
            seen.setdefault(int(user), set()).add(int(item))
    return seen


def ranking_metrics(top: list[int], llm_top: list[int], liked: set[int], k: int) -> dict:
    hits = len(set(top[:k]) & liked)
    return {"overlap": len(set(top[:k]) & set(llm_top[:k])) / k, "recall": hits / len(liked), "hit": float(hits > 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a trained model folder (OUT/model)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--features", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--users", type=int, default=50, help="seeded sample of users with a liked item in --split")
    parser.add_argument("--num-rerank", type=int, nargs="+", default=[20, 50, 100], help="shortlist sizes C")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="two_stage_quality")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    config = model.config
    run_data = load_run_data(DataArguments(data_dir=args.data, features_dir=args.features), use_visual=config.use_visual,
                             use_collaborative=config.use_collaborative, use_descriptions=config.use_descriptions)
    data, builder = run_data.data, run_data.builder
    seen = seen_items(data, ("train", "valid"))
    ranked_users = users_to_rank(data, args.split, seen)
    users = sorted(ranked_users)
    random.Random(args.seed).shuffle(users)
    users = sorted(users[: args.users])
    methods = ["llm", "mf", *[f"two_stage {c}" for c in args.num_rerank]]
    per_method = {method: {"overlap": [], "recall": [], "hit": [], "seconds": []} for method in methods}
    catalogue_sizes = []
    rows = data.interactions[args.split]
    started = time.perf_counter()
    for position, user in enumerate(users, start=1):
        user_record = builder([rows[ranked_users[user]["first_row"]]])[0]
        item_ids = [item for item in range(data.num_items) if item not in seen.get(user, set())]
        items = [builder.item(item) for item in item_ids]
        liked = ranked_users[user]["liked"]
        catalogue_sizes.append(len(items))
        with torch.no_grad():
            begin = time.perf_counter()
            llm_order, _ = rank_candidates(model, processor, user_record, items, batch_size=args.batch_size)
            timings = {"llm": time.perf_counter() - begin}
            begin = time.perf_counter()
            mf_order = torch.argsort(collaborative_scores(model, user, item_ids), descending=True, stable=True)
            timings["mf"] = time.perf_counter() - begin
            orders = {"llm": llm_order.tolist(), "mf": mf_order.tolist()}
            for c in args.num_rerank:
                begin = time.perf_counter()
                order, _ = two_stage_rank(model, processor, user_record, items, num_rerank=c, batch_size=args.batch_size)
                timings[f"two_stage {c}"] = time.perf_counter() - begin
                orders[f"two_stage {c}"] = order.tolist()
        llm_top = [item_ids[i] for i in orders["llm"][: args.k]]
        for method in methods:
            top = [item_ids[i] for i in orders[method][: args.k]]
            for name, value in ranking_metrics(top, llm_top, liked, args.k).items():
                per_method[method][name].append(value)
            per_method[method]["seconds"].append(timings[method])
        print(f"user {position}/{len(users)} ({len(items)} candidates, {len(liked)} liked): "
              f"{time.perf_counter() - started:.0f} s", flush=True)

    k = args.k
    table = [{"method": method, "overlap": statistics.mean(values["overlap"]), "recall": statistics.mean(values["recall"]),
              "hit": statistics.mean(values["hit"]), "seconds": statistics.mean(values["seconds"])}
             for method, values in per_method.items()]
    print(f"\n{args.model}: {len(users)} users of {args.split}, {statistics.mean(catalogue_sizes):.0f} candidates each (mean)")
    print(markdown_table(table, [("method", "ranking", ""), ("overlap", f"overlap@{k} with LLM", ".3f"),
                                 ("recall", f"recall@{k} liked", ".3f"), ("hit", f"hit@{k} liked", ".3f"),
                                 ("seconds", "s/user", ".3f")]))
    path = args.output_dir / f"{args.name}.json"
    atomic_write_json(path, {
        "command": vars(args) | {"output_dir": str(args.output_dir)}, "environment": environment(),
        "users": len(users), "mean_candidates": statistics.mean(catalogue_sizes), "k": k, "results": table,
        "per_user": per_method,
    })
    print(f"written: {path}")


if __name__ == "__main__":
    main()
