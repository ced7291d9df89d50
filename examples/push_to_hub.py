r"""Publish a trained USER-LLM checkpoint on the Hugging Face Hub, with its model card.

    python examples/push_to_hub.py --model outputs/demo/model --repo-id ORG/userllm-demo \
        --metrics outputs/demo/metrics.json
    python examples/push_to_hub.py --model outputs/ml100k-smollm2/model --repo-id ORG/userllm-ml100k \
        --light --base-model HuggingFaceTB/SmolLM2-135M-Instruct
    python examples/push_to_hub.py --model outputs/demo/model --repo-id ORG/userllm-demo \
        --dry-run upload-preview   # writes the folder that would be uploaded, uploads nothing

`--metrics` takes the run's metrics.json as training wrote it (without it, that file beside
the model folder is read). `--light` publishes only the trained weights (LoRA, UHEM,
projectors, collaborative tables); loading then fetches the base LLM named by `--base-model`
(the Hub id of the LLM it was trained on: its weights are checked against a fingerprint).
No local path is published. The token comes from HF_TOKEN or `hf auth login`; without one
the script stops before doing anything.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from modeling_userllm.hub import (
    HubLoginRequiredError,
    prepare_upload_folder,
    push_to_hub,
    read_mapping,
    read_metrics,
    require_token,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="saved checkpoint folder (model + processor)")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    parser.add_argument("--light", action="store_true", help="publish only the trained weights")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--metrics", type=Path, help="metrics.json from training (AUC/UAUC per split)")
    parser.add_argument("--base-model", help="Hub id of the base LLM, if the config holds a local path (needed by --light)")
    parser.add_argument("--vision-model", help="Hub id of the vision encoder, if the config holds a local path "
                                               "(with --light: fetched on load instead of stored)")
    parser.add_argument("--dataset-id", help="Hub id of the training data set")
    parser.add_argument("--data", type=Path, help="prepared data set folder (its info.json fills the card)")
    parser.add_argument("--training", type=Path, help="JSON/YAML of hyperparameters per step: {step: {name: value}}")
    parser.add_argument("--license", help="license id of the published model")
    parser.add_argument("--dry-run", type=Path, metavar="OUT", help="write the upload folder to OUT and stop")
    return parser.parse_args()


def card_kwargs(args: argparse.Namespace) -> dict:
    """What the model card is rendered from, read from the files the flags name."""
    return {
        "metrics": read_metrics(args.metrics) if args.metrics else None,
        "dataset_id": args.dataset_id,
        "data_info": read_mapping(args.data / "info.json") if args.data else None,
        "training": read_mapping(args.training) if args.training else None,
        "license": args.license,
    }


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args()
    if args.dry_run:
        folder = prepare_upload_folder(
            args.model, args.dry_run, repo_id=args.repo_id, light=args.light, base_model=args.base_model,
            vision_model=args.vision_model, **card_kwargs(args)
        )
        logging.info("Dry run: wrote %s (%s); nothing uploaded", folder, ", ".join(sorted(p.name for p in folder.iterdir())))
        return 0
    try:
        token = require_token()
    except HubLoginRequiredError as error:
        print(error, file=sys.stderr)
        return 1
    commit = push_to_hub(
        args.model,
        args.repo_id,
        light=args.light,
        private=args.private,
        token=token,
        base_model=args.base_model,
        vision_model=args.vision_model,
        **card_kwargs(args),
    )
    logging.info("Uploaded: %s", commit.commit_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
