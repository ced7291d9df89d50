"""Compute the offline features of a prepared data set: descriptions, posters, MF tables.

    # ml-100k: SmolLM2 knowledge enhancement, DINOv2 posters, MF tables
    python examples/prepare_data.py --dataset ml-100k --data-dir ../shared/data/ml-100k --output data/ml-100k
    python examples/prepare_features.py --data data/ml-100k --output data/ml-100k-features \
        --description-model ~/.cache/userllm-assets/SmolLM2-135M-Instruct \
        --image-model ../shared/models/dinov2-small

    # toy: descriptions from the item table, the seeded stand-in image encoder (seconds)
    python examples/prepare_data.py --dataset toy --output data/toy
    python examples/prepare_features.py --data data/toy --output data/toy-features \
        --description-source column --image-model toy

    # the paper's models, on a GPU
    python examples/prepare_features.py --data data/ml-100k --output data/ml-100k-features \
        --description-model google/flan-t5-xxl --image-model facebook/dino-vits16 --dtype bfloat16

Each step writes its file of the features folder as soon as it finishes (atomically), and
`manifest.json` records models, prompts, counts and timings; a step skipped with `--skip-*`
keeps its earlier file and manifest entry. Generated descriptions are cached in
`<output>/description_cache`, so a rerun generates nothing and an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from modeling_userllm.data import RecommendationData
from modeling_userllm.features import (
    PAPER_PROMPT,
    FeatureStore,
    descriptions_from_column,
    extract_image_features,
    generate_item_descriptions,
    load_description_model,
    load_image_encoder,
    toy_image_encoder,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="prepared data set folder (prepare_data.py)")
    parser.add_argument("--output", type=Path, required=True, help="features folder to write")
    parser.add_argument("--description-source", choices=("generated", "column"), default="generated",
                        help="generated: knowledge enhancement with --description-model; column: the item table's text")
    parser.add_argument("--description-column", default="description", help="item table column for --description-source column")
    parser.add_argument("--description-model", default="google/flan-t5-xxl", help="hub id or folder (seq2seq or causal LM)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--image-model", default="facebook/dino-vits16", help="hub id, folder, or 'toy' (seeded random tiny ViT)")
    parser.add_argument("--batch-size", type=int, default=8, help="titles per generate call and posters per forward pass")
    parser.add_argument("--limit", type=int, help="only the first N items (quick runs; other rows stay empty/masked)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="model dtype (bfloat16 on a GPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mf-seed", type=int, default=0)
    parser.add_argument("--mf-max-epochs", type=int, default=1000, help="MF epoch cap (early stopping on valid AUC)")
    parser.add_argument("--skip-descriptions", action="store_true")
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-collaborative", action="store_true")
    return parser.parse_args()


def _timing(wall_start: float, cpu_start: float) -> dict[str, float]:
    """Wall and CPU seconds since the two starts; CPU time is the figure that survives a busy machine."""
    return {"seconds": round(time.perf_counter() - wall_start, 1), "cpu_seconds": round(time.process_time() - cpu_start, 1)}


def prepare_descriptions(items, args: argparse.Namespace) -> tuple[dict[int, str], dict]:
    """Descriptions of `items` from the chosen source, and their manifest entry."""
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.description_source == "column":
        descriptions = descriptions_from_column(items, args.description_column)
        entry = {"source": f"column:{args.description_column}"}
    else:
        model, tokenizer = load_description_model(args.description_model, DTYPES[args.dtype])
        descriptions = generate_item_descriptions(
            items, model.to(args.device), tokenizer,
            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
            cache_dir=args.output / "description_cache", model_id=args.description_model,
        )
        entry = {
            "source": "generated",
            "model": args.description_model,
            "prompt_template": PAPER_PROMPT,
            "decoding": "greedy",
            "max_new_tokens": args.max_new_tokens,
        }
    entry |= {"count": len(descriptions), "items": len(items), **_timing(start, cpu_start)}
    return descriptions, entry


def prepare_image_features(items, num_items: int, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Poster features `(num_items, 384)` + mask of `items`, and their manifest entry."""
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.image_model == "toy":
        model, processor = toy_image_encoder(seed=0)
    else:
        model, processor = load_image_encoder(args.image_model, DTYPES[args.dtype])
    part, part_mask = extract_image_features(
        list(items["poster_path"]), model.to(args.device), processor, batch_size=args.batch_size
    )
    features = torch.zeros((num_items, part.shape[1]), dtype=torch.float32)
    mask = torch.zeros(num_items, dtype=torch.bool)
    features[: len(part)], mask[: len(part)] = part, part_mask
    entry = {
        "model": "toy_image_encoder(seed=0): random stand-in, no visual semantics" if args.image_model == "toy" else args.image_model,
        "feature": "CLS token of the last hidden state",
        "dim": part.shape[1],
        "items": len(part),
        "present": int(part_mask.sum()),
        "missing": len(part) - int(part_mask.sum()),
        **_timing(start, cpu_start),
    }
    return features, mask, entry


def prepare_collaborative(data: RecommendationData, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """MF user/item tables trained on `data`, and their manifest entry."""
    try:
        from modeling_userllm.features.collaborative import train_collaborative_embeddings
    except ImportError as error:
        raise SystemExit(
            f"collaborative embeddings need modeling_userllm.features.collaborative ({error}); "
            "rerun with --skip-collaborative"
        ) from error
    start, cpu_start = time.perf_counter(), time.process_time()
    users, items, metrics = train_collaborative_embeddings(data, seed=args.mf_seed, max_epochs=args.mf_max_epochs)
    entry = {
        "model": "matrix factorisation (CoLLM recipe)",
        "seed": args.mf_seed,
        "max_epochs": args.mf_max_epochs,
        "users": users.shape[0],
        "items": items.shape[0],
        "dim": users.shape[1],
        "metrics": metrics,
        **_timing(start, cpu_start),
    }
    return users, items, entry


def main() -> None:
    args = parse_args()
    data = RecommendationData.load(args.data)
    items = data.items.select(range(min(args.limit, len(data.items)))) if args.limit else data.items
    manifest = FeatureStore.load(args.output).manifest if args.output.is_dir() else {}
    manifest |= {"data": str(args.data.resolve()), "name": data.name, "num_items": data.num_items, "num_users": data.num_users}

    if not args.skip_descriptions:
        descriptions, manifest["descriptions"] = prepare_descriptions(items, args)
        FeatureStore(descriptions=descriptions, manifest=manifest).save(args.output)
    if not args.skip_images:
        features, mask, manifest["image_features"] = prepare_image_features(items, data.num_items, args)
        FeatureStore(image_features=features, image_mask=mask, manifest=manifest).save(args.output)
    if not args.skip_collaborative:
        users, item_table, manifest["collaborative"] = prepare_collaborative(data, args)
        FeatureStore(user_embeddings=users, item_embeddings=item_table, manifest=manifest).save(args.output)

    FeatureStore(manifest=manifest).save(args.output)
    print(f"features written to {args.output}")
    for kind in ("descriptions", "image_features", "collaborative"):
        if kind in manifest:
            print(f"  {kind}: " + ", ".join(f"{k}={v}" for k, v in manifest[kind].items() if k not in ("metrics", "prompt_template")))


if __name__ == "__main__":
    main()
