"""Print the nearest neighbours of a few films by poster feature (cosine similarity).

    python examples/nearest_posters.py --data data/ml-100k --features data/ml-100k-features \
        "Star Wars (1977)" "Toy Story" "Scream"

A title is matched case-insensitively: an exact title first, else the first title containing
the text. A quick look at whether the visual features (paper Sec. 3.2.2) group similar posters.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_userllm.data import RecommendationData
from modeling_userllm.features import FeatureStore, nearest_neighbours


def find_item(titles: list[str], query: str) -> int:
    """Item id of the title equal to `query`, else of the first one containing it."""
    lowered = [t.strip().lower() for t in titles]
    if query.lower() in lowered:
        return lowered.index(query.lower())
    for item_id, title in enumerate(lowered):
        if query.lower() in title:
            return item_id
    raise SystemExit(f"no title matches {query!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="prepared data set folder")
    parser.add_argument("--features", type=Path, required=True, help="features folder with image_features.safetensors")
    parser.add_argument("-k", type=int, default=5, help="neighbours per title")
    parser.add_argument("titles", nargs="+", help="titles (or parts of titles) to query")
    args = parser.parse_args()

    titles = list(RecommendationData.load(args.data).items["title"])
    store = FeatureStore.load(args.features)
    if store.image_features is None:
        raise SystemExit(f"{args.features} holds no image features (run examples/prepare_features.py)")
    for query in args.titles:
        item_id = find_item(titles, query)
        print(f"{titles[item_id]}:")
        for neighbour, similarity in nearest_neighbours(store.image_features, store.image_mask, item_id, args.k):
            print(f"  {similarity:.3f}  {titles[neighbour]}")


if __name__ == "__main__":
    main()
