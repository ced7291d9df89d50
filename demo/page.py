"""The demo's Gradio page (`pip install -e ".[demo]"`; neither the rest of the app nor the library imports gradio):
`launch_page(build_page(*load_demo(settings), settings))`. The query is also an API endpoint (`/recommend`)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
from PIL import Image, ImageDraw

from .recommender import PLACEHOLDER_NAME, Catalogue, DemoError, DemoSettings, Recommender, parse_user_id, recommend

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


def is_image_file(path: Path) -> bool:
    """Whether `path` is a file with an image's extension that PIL reads as an image (header only)."""
    if path.suffix.lower() not in Image.registered_extensions():
        return False
    try:
        with Image.open(path) as image:
            return image.format is not None
    except (OSError, ValueError):
        return False


class PosterFolder:
    """The only files the page gives Gradio: a copy of each poster it shows (`posters`: per item, its file or None)
    and the placeholder, in a private temp folder. Allowing the posters' own folders (`allowed_paths`) would serve any
    file lying next to a poster; a poster that is not an image file shows the placeholder, with a warning naming it."""

    def __init__(self, posters: Sequence[Path | None]) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="userllm-demo-posters-")
        self.folder = Path(self._directory.name)
        self.placeholder = draw_placeholder_poster(self.folder)
        self._posters = posters
        self._served: dict[int, Path] = {}
        self._lock = threading.Lock()  # Gradio runs handlers in threads

    def path(self, item_id: int) -> str:
        """The served copy of the item's poster (made on first use), or the placeholder."""
        with self._lock:
            if item_id not in self._served:
                self._served[item_id] = self._copy(item_id)
            return str(self._served[item_id])

    def _copy(self, item_id: int) -> Path:
        source = self._posters[item_id]
        if source is None:
            return self.placeholder
        if not is_image_file(source):
            logger.warning("Item %d: poster %s is not an image file; the page shows the placeholder", item_id, source)
            return self.placeholder
        # One subfolder per item: two catalogue posters may share a file name.
        destination = self.folder / str(item_id) / source.name
        destination.parent.mkdir(exist_ok=True)
        partial = destination.with_name(destination.name + ".partial")
        shutil.copyfile(source, partial)
        partial.replace(destination)
        return destination


def _thumbnails(catalogue: Catalogue, item_ids: Sequence[int], posters: PosterFolder) -> list[tuple[str, str]]:
    """(served poster or placeholder, label) of each item, for a gallery."""
    return [(posters.path(item_id), catalogue.labels[item_id]) for item_id in item_ids]


class DemoPage:
    """The page's state (one or two models, the catalogue, settings, served posters) and its event handlers."""

    def __init__(self, recommenders: Sequence[Recommender], catalogue: Catalogue, settings: DemoSettings,
                 posters: PosterFolder) -> None:
        self.recommenders = list(recommenders)
        self.catalogue = catalogue
        self.settings = settings
        self.posters = posters

    def search(self, query: str) -> tuple[list[tuple[str, str]], list[int]]:
        """Posters of the movies matching `query`, and their ids (for a click on one)."""
        matches = self.catalogue.search(query or "")
        return _thumbnails(self.catalogue, matches, self.posters), matches

    def add_pick(self, matches: list[int], history: list[str] | None, event: gr.SelectData) -> list[str]:
        """Appends the clicked search result to the history (once)."""
        history = list(history or [])
        label = self.catalogue.labels[matches[event.index]]
        return history if label in history else history + [label]

    def show_history(self, history: list[str] | None) -> list[tuple[str, str]]:
        """Thumbnails of the picked movies in order; unknown names are left to the query's message."""
        known = [self.catalogue.find(label) for label in history or []]
        return _thumbnails(self.catalogue, [item_id for item_id in known if item_id is not None], self.posters)

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

    def run_query(self, history: list[str] | None, user_id: str | None, top_k: float, compare: bool,
                  progress: gr.Progress = gr.Progress()) -> tuple:
        """Ranks for the history: status, then gallery and table of each of the two models."""
        models = self.recommenders if compare else self.recommenders[:1]
        try:
            ranking = recommend(
                models, self.catalogue, history, parse_user_id(user_id), int(top_k),
                self.settings.max_candidates, self.settings.seed, self.settings.batch_size, self.posters.placeholder,
                progress=lambda fraction, description: progress(fraction, desc=description),
            )
        except DemoError as error:
            return (f"**{error}**", [], [], [], [])
        except Exception as error:  # the page shows a sentence; the log keeps the trace
            logger.exception("ranking failed")
            return (f"**The ranking failed: {type(error).__name__}: {error}** (the server log has the details)", [], [], [], [])
        who = f"user {ranking.user_id}" if ranking.user_id >= 0 else "a new user"
        summary = [f"Ranked {ranking.num_scored:,} of the {ranking.num_unseen:,} unseen movies of the "
                   f"{self.catalogue.name} catalogue for {who} who liked {len(ranking.history)} movie(s)."]
        outputs = ["\n\n".join(summary + [f"*{note}*" for note in ranking.notes])]
        for items in [*ranking.results.values(), [], []][:2]:
            outputs.append([(self.posters.path(item.item_id), f"{item.probability:.3f} · {item.title}") for item in items])
            outputs.append([[item.rank, item.item_id, item.title, round(item.probability, 3), round(item.score, 4),
                             item.description] for item in items])
        return tuple(outputs)

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


def build_page(recommenders: Sequence[Recommender], catalogue: Catalogue, settings: DemoSettings) -> gr.Blocks:
    """The Gradio page over loaded models and a catalogue (see `load_demo`)."""
    return DemoPage(recommenders, catalogue, settings, PosterFolder(catalogue.posters)).build()


def launch_page(page: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True) -> str:
    """Serves the page (no `allowed_paths`: only `PosterFolder`'s copies); returns its local URL (at once when not `block`)."""
    _, local_url, _ = page.launch(server_name=host, server_port=port, prevent_thread_lock=not block, ssr_mode=False,
                                  show_error=False, quiet=not block, footer_links=["api"])
    return local_url

