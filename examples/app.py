"""The interactive demo page: pick the movies you liked, see the posters of what the model recommends.

    pip install -e ".[demo]"
    # the embedded demo (outputs/demo/, written by `python examples/train.py`)
    python examples/app.py
    # any checkpoint (folder or Hub id) with the data set and features it was trained on
    python examples/app.py --model outputs/ml100k-smollm2/model --data data/ml-100k \
        --features data/ml-100k-features
    # two checkpoints side by side on the same history (e.g. CoLLM vs USER-LLM)
    python examples/app.py --model outputs/demo/model --compare-model outputs/demo-collm/model

Open the printed URL. The page ranks every unseen movie of the catalogue with the
shared-prefix ranking (modeling_userllm.ranking); above --max-candidates unseen movies it
scores a pool (the most popular half plus a seeded random sample) and says so.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the demo/ app at the repository root
from demo import DemoError, DemoSettings, load_demo  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder or Hub id (default: outputs/demo/model)")
    parser.add_argument("--compare-model", help="a second checkpoint, ranked side by side on the same history")
    parser.add_argument("--data", help="prepared data set folder (default: from the run_config.json next to --model)")
    parser.add_argument("--features", help="features folder (default: from the run_config.json next to --model)")
    parser.add_argument("--posters", help="where to find posters whose recorded path does not exist "
                                          "(default: posters/ next to the data folder)")
    parser.add_argument("--description-source", default="auto", choices=("auto", "generated", "item_table", "none"))
    parser.add_argument("--max-candidates", type=int, default=500, help="above this many unseen items, score a pool")
    parser.add_argument("--seed", type=int, default=0, help="seed of the candidate pool's random part")
    parser.add_argument("--batch-size", type=int, default=64, help="candidates per LLM forward")
    parser.add_argument("--num-threads", type=int, help="CPU threads of torch (default: torch's)")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, help="default: 7860, or the first free port after it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        from demo.page import build_page, launch_page
    except ImportError as error:
        sys.exit(f"error: the demo page needs gradio ({error}); install it with: pip install -e \".[demo]\"")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    settings = DemoSettings(
        model=args.model, compare_model=args.compare_model, data=args.data, features=args.features,
        posters=args.posters, description_source=args.description_source, max_candidates=args.max_candidates,
        seed=args.seed, batch_size=args.batch_size,
    )
    try:
        recommenders, catalogue = load_demo(settings)
    except DemoError as error:
        sys.exit(f"error: {error}")
    print(f"Serving {' and '.join(model.name for model in recommenders)} over the {catalogue.name} catalogue "
          f"({catalogue.num_items} items); stop with Ctrl+C")
    launch_page(build_page(recommenders, catalogue, settings), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
