r"""Publish the demo page (examples/app.py) as a Hugging Face Space, next to a published model.

    # write the Space folder and upload nothing (the embedded demo: outputs/demo/)
    python examples/push_space.py --space-id ORG/userllm-demo --dry-run space-preview
    # a model already on the Hub (examples/push_to_hub.py): the Space loads it by id
    python examples/push_space.py --model outputs/ml100k-smollm2/model --model-repo-id ORG/userllm-ml100k \
        --data data/ml-100k --features data/ml-100k-features --space-id ORG/userllm-ml100k-demo

The folder (hub_cards/space/ rendered) holds README.md with `sdk: gradio`, app.py,
space_config.json, requirements.txt, copies of the package and of demo/, the catalogue (data, features,
posters) and, without --model-repo-id, the checkpoint. The token comes from HF_TOKEN or
`hf auth login`; without one the script stops before uploading.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the demo/ app at the repository root
from demo import DemoError, DemoSettings, resolve_demo_paths  # noqa: E402
from demo.space import check_space_id, push_space, write_space_folder  # noqa: E402
from modeling_userllm.hub import HubLoginRequiredError, is_hub_id, require_token  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder or Hub id (default: outputs/demo/model)")
    parser.add_argument("--model-repo-id", help="Hub id the model is published under: the Space loads it from there")
    parser.add_argument("--data", help="prepared data set folder (default: from the run_config.json next to --model)")
    parser.add_argument("--features", help="features folder (default: from the run_config.json next to --model)")
    parser.add_argument("--posters", help="where to find posters whose recorded path does not exist")
    parser.add_argument("--max-candidates", type=int, default=500, help="above this many unseen items, score a pool")
    parser.add_argument("--space-id", required=True, help="ORG/NAME of the Space")
    parser.add_argument("--license", help="license id of the Space")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--dry-run", type=Path, metavar="OUT", help="write the Space folder to OUT and stop")
    return parser.parse_args()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args()
    try:
        check_space_id(args.space_id)
        settings = resolve_demo_paths(DemoSettings(model=args.model, data=args.data, features=args.features,
                                                   posters=args.posters, max_candidates=args.max_candidates))
        model_repo_id = args.model_repo_id or (settings.model if is_hub_id(settings.model) else None)
        token = None if args.dry_run else require_token()
        out = args.dry_run or Path(tempfile.mkdtemp(prefix="userllm-space-")) / "space"
        folder = write_space_folder(out, settings, space_id=args.space_id, model_repo_id=model_repo_id,
                                    license=args.license)
    except (DemoError, HubLoginRequiredError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.dry_run:
        logging.info("Dry run: wrote %s (%s); nothing uploaded", folder, ", ".join(sorted(p.name for p in folder.iterdir())))
        return 0
    commit = push_space(folder, args.space_id, token=token, private=args.private)
    logging.info("Uploaded: %s", commit.commit_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
