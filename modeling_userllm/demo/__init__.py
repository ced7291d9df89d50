"""The interactive demo: pick the movies you liked, see the posters of what the model recommends.

`recommender` loads checkpoints and a data set with every check the page needs, and ranks a
catalogue for a chosen history; `space` writes a Hugging Face Space folder around them. Neither
imports gradio: only `modeling_userllm.demo.page` (the Gradio page) does, and it is imported by
the scripts that serve it (`examples/app.py`, a Space's `app.py`), never by the package.
Install the page's dependencies with `pip install -e ".[demo]"`.
"""

from .recommender import (
    Catalogue,
    DemoError,
    DemoSettings,
    Ranking,
    Recommendation,
    Recommender,
    load_demo,
    recommend,
    resolve_demo_paths,
)

__all__ = [
    "Catalogue",
    "DemoError",
    "DemoSettings",
    "Ranking",
    "Recommendation",
    "Recommender",
    "load_demo",
    "recommend",
    "resolve_demo_paths",
]
