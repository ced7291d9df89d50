"""How many item texts a token budget cuts: knowledge-enhanced descriptions against `max_item_tokens`.

The prompt writes each item as `"Title" (description)`, cut at a word boundary to
`max_item_tokens` tokens. This script generates descriptions with the paper's knowledge-
enhancement prompt for a seeded sample of ml-100k titles (SmolLM2-135M-Instruct here; the
paper uses FLAN-T5-XXL), then reports, per tokenizer and budget, the share of item texts
that would be cut and the tokens per item.

    python benchmarks/item_text_budget.py --data-dir ../shared/data/ml-100k --model PATH_TO_SMOLLM2 \
        --tokenizers PATH_TO_SMOLLM2 ../shared/models/stories260k --num-titles 200
"""

import argparse
import random
import statistics
from pathlib import Path

import torch
from transformers import AutoTokenizer

from modeling_userllm.features.knowledge_enhancement import generate_descriptions, load_description_model
from modeling_userllm.features.store import atomic_write_json

BUDGETS = (32, 48, 64, 96)
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def sample_titles(data_dir: Path, num_titles: int, seed: int) -> list[str]:
    """A seeded sample of ml-100k titles (`u.item`, `|`-separated, latin-1)."""
    lines = (data_dir / "u.item").read_text(encoding="latin-1").splitlines()
    titles = sorted({line.split("|")[1] for line in lines if line.strip()})
    return random.Random(seed).sample(titles, min(num_titles, len(titles)))


def item_text(title: str, description: str) -> str:
    """The uncut item text, as `UserLLMProcessor.item_text` writes it."""
    return f'"{title}" ({description})' if description else f'"{title}"'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="ml-100k folder (with u.item)")
    parser.add_argument("--model", required=True, help="knowledge-enhancement LLM (folder or Hub id)")
    parser.add_argument("--tokenizers", nargs="+", required=True, help="tokenizers to count with (folders or Hub ids)")
    parser.add_argument("--num-titles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=Path("outputs/item_text_budget_cache"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="item_text_budget")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    titles = sample_titles(args.data_dir, args.num_titles, args.seed)
    model, tokenizer = load_description_model(args.model)
    descriptions = generate_descriptions(titles, model, tokenizer, cache_dir=args.cache_dir)
    texts = [item_text(title, description) for title, description in zip(titles, descriptions)]
    words = [len(description.split()) for description in descriptions]

    rows = []
    for name in args.tokenizers:
        counter = AutoTokenizer.from_pretrained(name)
        lengths = [len(counter(text, add_special_tokens=False).input_ids) for text in texts]
        row = {
            "tokenizer": Path(name).name,
            "items": len(texts),
            "median_tokens": statistics.median(lengths),
            "p90_tokens": sorted(lengths)[int(0.9 * (len(lengths) - 1))],
            "max_tokens": max(lengths),
            **{f"cut_at_{budget}": sum(length > budget for length in lengths) / len(lengths) for budget in BUDGETS},
        }
        rows.append(row)

    header = ["tokenizer", "items", "median_tokens", "p90_tokens", "max_tokens", *[f"cut_at_{b}" for b in BUDGETS]]
    print(f"description words: median {statistics.median(words)}, max {max(words)} ({len(words)} titles of ml-100k, "
          f"model {Path(args.model).name})")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(f"{row[key]:.1%}" if key.startswith("cut_at") else str(row[key]) for key in header))
    result = {
        "model": Path(args.model).name,
        "num_titles": len(titles),
        "seed": args.seed,
        "description_words_median": statistics.median(words),
        "rows": rows,
        "examples": [{"title": t, "description": d} for t, d in list(zip(titles, descriptions))[:5]],
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    atomic_write_json(RESULTS_DIR / f"{args.name}.json", result)


if __name__ == "__main__":
    main()
