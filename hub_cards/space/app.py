"""A Hugging Face Space serving the USER-LLM demo page (written by examples/push_space.py).

`space_config.json`, next to this file, names the checkpoint (a folder here or a Hub id) and
the data, features and posters folders; `modeling_userllm/` and `demo/` are copies of the
library and of the demo app.
"""

import json
import sys
from pathlib import Path

from demo import DemoError, DemoSettings, load_demo
from demo.page import build_page, launch_page

HERE = Path(__file__).resolve().parent


def local_or_hub(name: str | None) -> str | None:
    """A folder of this Space (as an absolute path), or the name as given (a Hub id)."""
    return str(HERE / name) if name and (HERE / name).exists() else name


config = json.loads((HERE / "space_config.json").read_text())
settings = DemoSettings(
    model=local_or_hub(config["model"]),
    compare_model=local_or_hub(config.get("compare_model")),
    data=local_or_hub(config["data"]),
    features=local_or_hub(config.get("features")),
    posters=local_or_hub(config.get("posters")),
    max_candidates=config.get("max_candidates", 500),
)
try:
    recommenders, catalogue = load_demo(settings)
except DemoError as error:
    sys.exit(f"error: {error}")
demo = build_page(recommenders, catalogue, settings)

if __name__ == "__main__":
    launch_page(demo, host="0.0.0.0", port=7860)
