"""The demo as a Hugging Face Space (no gradio import here): `write_space_folder` writes it, `push_space` uploads it."""

from __future__ import annotations

import json
import re
import shutil
import string
from importlib import metadata
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData

try:
    import tomllib
except ImportError:  # Python 3.10: the installed metadata is read instead
    tomllib = None

import modeling_userllm
from modeling_userllm.data import RecommendationData
from modeling_userllm.hub import check_empty_upload_folder, staged_folder, upload_folder
from modeling_userllm.resources import package_data_dir

from .recommender import DemoSettings, check_checkpoint, resolve_poster

SPACE_TEMPLATES = package_data_dir("hub_cards") / "space"
# The Space runs the copies of both folders that `write_space_folder` puts next to its app.py.
PACKAGE_DIR = Path(modeling_userllm.__file__).resolve().parent
DEMO_DIR = Path(__file__).resolve().parent
PYPROJECT = DEMO_DIR.parent / "pyproject.toml"
PACKAGE_NAME = "userllm"
# Used when gradio is not installed here; a Space needs some sdk_version.
DEFAULT_GRADIO_VERSION = "5.0.0"


def space_requirements() -> list[str]:
    """The userllm package's own dependencies (no extras): from the checkout's `pyproject.toml` (installed
    metadata lags behind edits until reinstalled), else the installed metadata; a RuntimeError without either."""
    if PYPROJECT.is_file() and tomllib is not None:
        return list(tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"])
    try:
        requires = metadata.requires(PACKAGE_NAME) or []
    except metadata.PackageNotFoundError as error:
        raise RuntimeError(f"the {PACKAGE_NAME} package is not installed; run `pip install -e .` first") from error
    return [requirement for requirement in requires if "extra ==" not in requirement]


def _gradio_version() -> str:
    """The gradio version installed here (the Space runs the same), else a default."""
    try:
        return metadata.version("gradio")
    except metadata.PackageNotFoundError:
        return DEFAULT_GRADIO_VERSION


def render_space_card(space_id: str, *, model_name: str, model_repo_id: str | None, data: RecommendationData,
                      max_candidates: int, license: str | None = None) -> SpaceCard:
    """The Space's README.md: Gradio front matter and what the demo shows."""
    title = space_id.split("/")[-1]
    card_data = SpaceCardData(
        title=title, sdk="gradio", sdk_version=_gradio_version(), app_file="app.py", license=license,
        models=[model_repo_id] if model_repo_id else None, emoji="🎬", colorFrom="indigo", colorTo="pink",
        pinned=False, short_description="Pick movies you liked, see what USER-LLM recommends",
    )
    model_link = (f"[{model_repo_id}](https://huggingface.co/{model_repo_id})" if model_repo_id
                  else f"`model/` (copied from `{model_name}`)")
    return SpaceCard.from_template(
        card_data, template_path=str(SPACE_TEMPLATES / "README.md"), title=title, model_link=model_link,
        model_description=model_repo_id or "a checkpoint shipped in this Space", data_name=data.name,
        num_items=data.num_items, num_users=data.num_users, max_candidates=max_candidates,
    )


def write_space_folder(out_dir: str | Path, settings: DemoSettings, *, space_id: str, model_repo_id: str | None = None,
                       license: str | None = None) -> Path:
    """Writes the Space folder atomically and returns it: from the templates in `hub_cards/space/`, `README.md`
    (the Space card), `app.py` (serves `demo.page`), `requirements.txt`; `space_config.json` (model folder or Hub
    id, data, features, posters), `modeling_userllm/` and `demo/` (copies of the library and of this app: neither
    is on PyPI), `model/` (unless loaded by Hub id), `data/`, `features/`, `posters/`.

    Args:
        out_dir: the folder to write; must not exist or be empty (else FileExistsError).
        settings: the demo's model, data, features and posters (resolved: `resolve_demo_paths`).
        space_id: ORG/NAME of the Space (its title comes from NAME).
        model_repo_id: the model's Hub id when published: the Space loads it instead of shipping `model/`.
    """
    out_dir = Path(out_dir)
    check_empty_upload_folder(out_dir)
    check_checkpoint(settings.model)
    data = RecommendationData.load(settings.data)
    posters_dir = Path(settings.posters) if settings.posters else Path(settings.data).parent / "posters"
    config = {"model": model_repo_id or "model", "data": "data", "features": "features" if settings.features else None,
              "posters": "posters", "max_candidates": settings.max_candidates}
    with staged_folder(out_dir) as staging:
        shutil.copy2(SPACE_TEMPLATES / "app.py", staging / "app.py")
        requirements = string.Template((SPACE_TEMPLATES / "requirements.txt").read_text())
        (staging / "requirements.txt").write_text(requirements.substitute(requirements="\n".join(space_requirements())))
        (staging / "space_config.json").write_text(json.dumps(config, indent=2) + "\n")
        render_space_card(space_id, model_name=settings.model, model_repo_id=model_repo_id, data=data,
                          max_candidates=settings.max_candidates, license=license).save(staging / "README.md")
        for code in (PACKAGE_DIR, DEMO_DIR):
            shutil.copytree(code, staging / code.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if model_repo_id is None:
            shutil.copytree(settings.model, staging / "model")
        shutil.copytree(settings.data, staging / "data")
        if settings.features:
            shutil.copytree(settings.features, staging / "features")
        (staging / "posters").mkdir()
        for poster in filter(None, (resolve_poster(path, posters_dir) for path in data.items["poster_path"])):
            shutil.copy2(poster, staging / "posters" / poster.name)
    return out_dir


def check_space_id(space_id: str) -> None:
    """Raises ValueError unless `space_id` reads ORG/NAME."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", space_id):
        raise ValueError(f"--space-id must read ORG/NAME, got {space_id!r}")


def push_space(folder: str | Path, space_id: str, *, token: str, private: bool = False):
    """Creates the Gradio Space if needed and uploads `folder` as one commit; returns its `CommitInfo`."""
    return upload_folder(folder, space_id, token=token, private=private, repo_type="space", space_sdk="gradio",
                         commit_message=f"USER-LLM demo from {Path(folder).name}")

