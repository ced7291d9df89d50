"""The interactive demo app: pick the movies you liked, see the posters of what the model recommends.

An application over the `modeling_userllm` library, kept out of its wheel: it runs from the repository
(`examples/app.py`, `examples/push_space.py`) or from a Space folder, which holds a copy of both.
`recommender` loads checkpoints and a data set and ranks a catalogue for a history; `space` writes a
Hugging Face Space folder. Only `demo.page` (the Gradio page, `pip install -e ".[demo]"`) imports
gradio, and only the scripts that serve it (`examples/app.py`, a Space's `app.py`) import it.
"""

from .recommender import (Catalogue, DemoError, DemoSettings, Ranking, Recommendation, Recommender, load_demo, recommend,
                          resolve_demo_paths)

__all__ = ["Catalogue", "DemoError", "DemoSettings", "Ranking", "Recommendation", "Recommender", "load_demo", "recommend",
           "resolve_demo_paths"]
