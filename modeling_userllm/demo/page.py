"""The demo's Gradio page: pick liked movies, see the posters of what the model recommends.

This module imports gradio (`pip install -e ".[demo]"`); the rest of the package never
imports it. `examples/app.py` and a Space's `app.py` serve the page:

    recommenders, catalogue = load_demo(settings)
    page = build_page(recommenders, catalogue, settings)
    launch_page(page, catalogue, port=7860)

The page's query is also an API endpoint (`/recommend`: history labels, user id or None,
top K, compare) that `gradio_client` can call.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
from PIL import Image, ImageDraw

from .recommender import (
    PLACEHOLDER_NAME,
    Catalogue,
    DemoError,
    DemoSettings,
    Ranking,
    Recommendation,
    Recommender,
    parse_user_id,
    recommend,
)

logger = logging.getLogger(__name__)

RESULT_HEADERS = ["#", "item", "title", "P(Yes)", "score", "description"]
MAX_TOP_K = 50


def draw_placeholder_poster(folder: Path) -> Path:
    """Writes (once) the image shown for an item without a poster; returns its path."""
    path = folder / PLACEHOLDER_NAME
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (200, 300), (222, 222, 228))
        draw = ImageDraw.Draw(image)
        draw.rectangle((8, 8, 191, 291), outline=(160, 160, 170), width=3)
        draw.text((100, 150), "no poster", fill=(90, 90, 100), anchor="mm", font_size=24)
        image.save(path)
    return path


def _thumbnails(catalogue: Catalogue, item_ids: Sequence[int], placeholder: Path) -> list[tuple[str, str]]:
    """(poster or placeholder, label) of each item, for a gallery."""
    return [(str(catalogue.posters[item_id] or placeholder), catalogue.labels[item_id]) for item_id in item_ids]


def _result_gallery(recommendations: Sequence[Recommendation]) -> list[tuple[str, str]]:
    return [(item.poster, f"{item.probability:.3f} · {item.title}") for item in recommendations]


def _result_table(recommendations: Sequence[Recommendation]) -> list[list]:
    return [[item.rank, item.item_id, item.title, round(item.probability, 3), round(item.score, 4), item.description]
            for item in recommendations]


def _ranking_summary(ranking: Ranking, catalogue: Catalogue) -> str:
    """The status line above the results, with the notes of the query."""
    who = f"user {ranking.user_id}" if ranking.user_id >= 0 else "a new user"
    lines = [f"Ranked {ranking.num_scored:,} of the {ranking.num_unseen:,} unseen movies of the {catalogue.name} catalogue "
             f"for {who} who liked {len(ranking.history)} movie(s)."]
    return "\n\n".join(lines + [f"*{note}*" for note in ranking.notes])


class DemoPage:
    """The page's state (models, catalogue, settings) and its event handlers.

    Args:
        recommenders: one model, or two to compare side by side.
        catalogue: the items.
        settings: the demo's settings (candidate pool, batch size).
        placeholder: image of an item without a poster.
    """

    def __init__(self, recommenders: Sequence[Recommender], catalogue: Catalogue, settings: DemoSettings,
                 placeholder: Path) -> None:
        self.recommenders = list(recommenders)
        self.catalogue = catalogue
        self.settings = settings
        self.placeholder = placeholder

    # -- picking the history

    def search(self, query: str) -> tuple[list[tuple[str, str]], list[int]]:
        """Posters of the movies matching `query`, and their ids (for a click on one)."""
        matches = self.catalogue.search(query or "")
        return _thumbnails(self.catalogue, matches, self.placeholder), matches

    def add_pick(self, matches: list[int], history: list[str] | None, event: gr.SelectData) -> list[str]:
        """Appends the clicked search result to the history (once)."""
        history = list(history or [])
        label = self.catalogue.labels[matches[event.index]]
        return history if label in history else history + [label]

    def show_history(self, history: list[str] | None) -> list[tuple[str, str]]:
        """Thumbnails of the picked movies in order; unknown names are left to the query's message."""
        known = [self.catalogue.find(label) for label in history or []]
        return _thumbnails(self.catalogue, [item_id for item_id in known if item_id is not None], self.placeholder)

    def load_user(self, user_id: str | None) -> tuple[list[str], str]:
        """A real user's most recent liked movies as the history."""
        try:
            user = parse_user_id(user_id)
            if user is None:
                return gr.skip(), "**Type a user id first.**"
            liked = self.catalogue.liked_items(user)
        except DemoError as error:
            return gr.skip(), f"**{error}**"
        return ([self.catalogue.labels[item_id] for item_id in liked],
                f"Started from user {user}: their {len(liked)} most recent liked movies. Every movie they "
                "rated is left out of the recommendations; clear the user id to rank for a new user.")

    # -- the query

    def run_query(self, history: list[str] | None, user_id: str | None, top_k: float, compare: bool,
                  progress: gr.Progress = gr.Progress()) -> tuple:
        """Ranks for the history: status, then gallery and table of each of the two models."""
        models = self.recommenders if compare else self.recommenders[:1]
        try:
            ranking = recommend(
                models, self.catalogue, history, parse_user_id(user_id), int(top_k),
                self.settings.max_candidates, self.settings.seed, self.settings.batch_size, self.placeholder,
                progress=lambda fraction, description: progress(fraction, desc=description),
            )
        except DemoError as error:
            return (f"**{error}**", [], [], [], [])
        except Exception as error:  # the page shows a sentence; the log keeps the trace
            logger.exception("ranking failed")
            return (f"**The ranking failed: {type(error).__name__}: {error}** (the server log has the details)", [], [], [], [])
        outputs = [_ranking_summary(ranking, self.catalogue)]
        for recommendations in [*ranking.results.values(), [], []][:2]:
            outputs += [_result_gallery(recommendations), _result_table(recommendations)]
        return tuple(outputs)

    # -- layout

    def _results_column(self, recommender: Recommender | None, visible: bool) -> tuple[gr.Column, gr.Gallery, gr.Dataframe]:
        with gr.Column(visible=visible) as column:
            gr.Markdown(f"### {recommender.name}" if recommender else "")
            gallery = gr.Gallery(label="Recommended, best first: P(Yes) · title", columns=5, height=None,
                                 object_fit="contain", allow_preview=True)
            table = gr.Dataframe(headers=RESULT_HEADERS, label="Scores and descriptions", wrap=True,
                                 interactive=False, column_widths=["5%", "7%", "23%", "11%", "11%", "43%"])
        return column, gallery, table

    def build(self) -> gr.Blocks:
        """The page."""
        catalogue, models = self.catalogue, self.recommenders
        with gr.Blocks(title="USER-LLM demo", analytics_enabled=False) as page:
            gr.Markdown(
                "# USER-LLM: pick the movies you liked, see what it recommends\n"
                f"Model: **{models[0].name}**"
                + (f", compared with **{models[1].name}**" if len(models) > 1 else "")
                + f". Catalogue: **{catalogue.name}**, {catalogue.num_items:,} movies, {catalogue.num_users:,} users."
            )
            initial_thumbnails, initial_matches = self.search("")
            matches = gr.State(initial_matches)
            with gr.Row():
                with gr.Column(scale=2):
                    query = gr.Textbox(label="Search the catalogue", placeholder="a word of the title, e.g. 'galaxy'")
                    found = gr.Gallery(initial_thumbnails, label="Most popular matches first: click a poster to add it", columns=4,
                                       height=330, object_fit="contain", allow_preview=False)
                with gr.Column(scale=3):
                    history = gr.Dropdown(choices=catalogue.labels, multiselect=True, allow_custom_value=True,
                                          label="Movies you liked, oldest first (type to search)")
                    picked = gr.Gallery(label="Your history", columns=8, height=170, object_fit="contain",
                                        allow_preview=False, fit_columns=False)
                    with gr.Row():
                        user_id = gr.Textbox(label=f"Or start from a real user (0-{catalogue.num_users - 1})",
                                             placeholder="empty: a new user")
                        load_user = gr.Button("Load their liked movies")
                        clear = gr.Button("Clear")
                    with gr.Row():
                        top_k = gr.Slider(1, MAX_TOP_K, value=10, step=1, label="How many recommendations (top K)")
                        compare = gr.Checkbox(value=len(models) > 1, visible=len(models) > 1,
                                              label=f"Side by side with {models[-1].name}")
                    run = gr.Button("Recommend", variant="primary")
            status = gr.Markdown()
            with gr.Row():
                _, gallery_a, table_a = self._results_column(models[0], visible=True)
                column_b, gallery_b, table_b = self._results_column(models[1] if len(models) > 1 else None,
                                                                    visible=len(models) > 1)

            query.change(self.search, query, [found, matches], api_visibility="private", trigger_mode="always_last")
            found.select(self.add_pick, [matches, history], history, api_visibility="private")
            history.change(self.show_history, history, picked, api_visibility="private")
            load_user.click(self.load_user, user_id, [history, status], api_name="load_user")
            clear.click(lambda: ([], "", ""), None, [history, user_id, status], api_visibility="private")
            compare.change(lambda on: gr.Column(visible=on), compare, column_b, api_visibility="private")
            run.click(self.run_query, [history, user_id, top_k, compare],
                      [status, gallery_a, table_a, gallery_b, table_b], api_name="recommend")
        return page


def build_page(recommenders: Sequence[Recommender], catalogue: Catalogue, settings: DemoSettings,
               cache_dir: Path | None = None) -> gr.Blocks:
    """The Gradio page over loaded models and a catalogue (see `load_demo`)."""
    placeholder = draw_placeholder_poster(cache_dir or Path(tempfile.gettempdir()) / "userllm-demo")
    return DemoPage(recommenders, catalogue, settings, placeholder).build()


def launch_page(page: gr.Blocks, catalogue: Catalogue, host: str = "127.0.0.1", port: int | None = None,
                block: bool = True, cache_dir: Path | None = None) -> str:
    """Serves the page; returns its local URL (at once when `block` is False).

    Gradio serves only files from allowed folders: the posters' folders and the placeholder's.
    """
    poster_dirs = {str(path.parent) for path in catalogue.posters if path is not None}
    allowed = sorted(poster_dirs | {str(cache_dir or Path(tempfile.gettempdir()) / "userllm-demo")})
    _, local_url, _ = page.launch(
        server_name=host, server_port=port, allowed_paths=allowed, prevent_thread_lock=not block,
        ssr_mode=False, show_error=False, quiet=not block, footer_links=["api"],
    )
    return local_url


__all__ = ["DemoPage", "build_page", "draw_placeholder_poster", "launch_page"]
