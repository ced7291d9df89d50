"""The interactive demo: pick the movies you liked, see the posters of what the model recommends.

`recommender` loads checkpoints and a data set and ranks a catalogue for a history; `space` writes a
Hugging Face Space folder. Only `demo.page` (the Gradio page, `pip install -e ".[demo]"`) imports
gradio, and only the scripts that serve it (`examples/app.py`, a Space's `app.py`) import it.
"""

from .recommender import (Catalogue, DemoError, DemoSettings, Ranking, Recommendation, Recommender, load_demo, recommend,
                          resolve_demo_paths)

__all__ = ["Catalogue", "DemoError", "DemoSettings", "Ranking", "Recommendation", "Recommender", "load_demo", "recommend",
           "resolve_demo_paths"]
