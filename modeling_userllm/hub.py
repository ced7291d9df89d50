"""Publishing USER-LLM on the Hub: model and dataset cards, the upload folder (full or light form), push."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .configuration_userllm import UserLLMConfig
from .modeling_userllm import UserLLMForRecommendation
from .processing_userllm import UserLLMProcessor
from .features.store import match_weight_file_permissions
from .resources import package_data_dir

logger = logging.getLogger(__name__)

CARD_TEMPLATES = package_data_dir("hub_cards")  # hub_cards/ in the repository
MODEL_CARD_TEMPLATE = CARD_TEMPLATES / "model_card.md"
DATASET_CARD_TEMPLATE = CARD_TEMPLATES / "dataset_card.md"

# metrics.json split -> how the card names it.
METRIC_SPLITS = {"valid": "validation", "test": "test", "test_short": "test (short histories)", "test_long": "test (long histories)"}
METRIC_NAMES = {"auc": ("roc_auc", "AUC"), "uauc": ("uauc", "UAUC")}
PAPER_STEPS = ("lora", "encoders")
STEP_NUMBERS = {"lora": 1, "encoders": 2, "joint": 3}  # the `step<k>_*` settings of run_config.json
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
TAGS = ["recommendation", "userllm", "multimodal", "lora", "custom_code"]
# The Hub has no "recommendation" task; text-ranking (a reranker of (query, document) pairs) is closest.
PIPELINE_TAG = "text-ranking"
LOGIN_HELP = (
    "No Hugging Face token found, so nothing was prepared or uploaded. Log in once with "
    "`hf auth login` (or `huggingface-cli login`), or set the HF_TOKEN environment variable to a "
    "token with write access (https://huggingface.co/settings/tokens)."
)


class HubLoginRequiredError(RuntimeError):
    """Raised before any work when an upload is asked for without a Hugging Face token."""


@dataclass(frozen=True)
class CheckpointSizes:
    """Bytes of weights of the full and the light form (without the few-KB safetensors header), in `dtype`."""

    full: int
    light: int
    dtype: torch.dtype


def checkpoint_sizes(config: UserLLMConfig, dtype: torch.dtype | None = None) -> CheckpointSizes:
    """Checkpoint sizes from the config alone (the model is built on the meta device); `dtype` defaults to
    the config's, else the LLM config's, else float32."""
    dtype = dtype or getattr(config, "dtype", None) or getattr(config.text_config, "dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    with torch.device("meta"):
        model = UserLLMForRecommendation(config)
    trained = set(model.trained_parameter_names())
    # named_parameters lists tied weights once, as save_pretrained stores them.
    numels = {name: param.numel() for name, param in model.named_parameters()}
    light = sum(numel for name, numel in numels.items() if name in trained)
    return CheckpointSizes(full=sum(numels.values()) * dtype.itemsize, light=light * dtype.itemsize, dtype=dtype)


def format_size(num_bytes: int) -> str:
    """`num_bytes` in decimal units, e.g. `"287.1 MB"`."""
    size = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            break
        size /= 1000
    return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"


def validate_metrics(metrics: dict) -> dict[str, dict[str, float]]:
    """`{split: {"auc", "uauc"}}` (splits of `METRIC_SPLITS`) checked and in the card's split order, else a
    `ValueError` naming the unknown split, or the metric that is missing or not a number in [0, 1]."""
    unknown = sorted(set(metrics) - set(METRIC_SPLITS))
    if unknown:
        raise ValueError(f"metrics: unknown split(s) {unknown}; expected some of {list(METRIC_SPLITS)}")
    for split, metric in ((split, metric) for split in metrics for metric in METRIC_NAMES):
        value = metrics[split].get(metric)
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"metrics[{split!r}][{metric!r}] must be a number in [0, 1], got {value!r}")
    return {split: {metric: float(metrics[split][metric]) for metric in METRIC_NAMES} for split in METRIC_SPLITS if split in metrics}


def eval_results(metrics: dict, dataset_id: str, dataset_name: str) -> list[EvalResult]:
    """AUC and UAUC of every split of validated `metrics` as `EvalResult`s (the Hub's `model-index`)."""
    return [
        EvalResult(task_type="text-classification", task_name="Recommendation (will the user like the item? Yes/No)",
                   dataset_type=dataset_id, dataset_name=dataset_name, dataset_split=split, metric_type=metric_type,
                   metric_name=metric_name, metric_value=round(values[metric], 4))
        for split, values in metrics.items() for metric, (metric_type, metric_name) in METRIC_NAMES.items()
    ]


def is_hub_id(name: str | None) -> bool:
    """Whether `name` is a Hub repo id rather than a local folder."""
    if not name or os.path.isdir(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def render_model_card(config: UserLLMConfig, repo_id: str, *, light: bool, metrics: dict | None = None,
                      dataset_id: str | None = None, data_info: dict | None = None, training: dict | None = None,
                      steps: Sequence[str] | None = None, step1_prompt: str = "text", license: str | None = None,
                      citation: str | None = None, image_encoder: str | None = None,
                      template_path: str | os.PathLike = MODEL_CARD_TEMPLATE) -> ModelCard:
    """The model card of a checkpoint: YAML metadata (base model when a Hub id, data set, tags, AUC/UAUC
    results) and the body of `template_path` (Jinja), which describes the config.

    Args:
        light: whether the published weights are the light form.
        metrics: `metrics.json` content (see `validate_metrics`).
        dataset_id: Hub id of the training data set; `data_info` its `info.json` (protocol, statistics).
        training: hyperparameters per training step, `{step name: {name: value}}`.
        steps: the schedule trained (`lora`, `encoders`, `joint`; default the paper's two steps) and
            `step1_prompt` the prompt of step 1 (`text` or `spliced`), as in the run's `run_config.json`.
        citation: BibTeX to cite besides the paper.
        image_encoder: the features' image encoder (default `image_encoder_name(config)`).
    """
    metrics = validate_metrics(metrics) if metrics else None
    sizes = checkpoint_sizes(config)
    data_info = data_info or {}
    base_model_on_hub = is_hub_id(config.base_model_name_or_path)
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1], base_model=config.base_model_name_or_path if base_model_on_hub else None,
        datasets=[dataset_id] if dataset_id else None, library_name="transformers", license=license,
        tags=TAGS + ([config.variant] if config.variant and config.variant != "userllm" else []), pipeline_tag=PIPELINE_TAG,
        metrics=["roc_auc", "uauc"] if metrics else None,
        eval_results=eval_results(metrics, dataset_id or "custom", data_info.get("name") or dataset_id or "recommendation data")
        if metrics else None,
    )
    return ModelCard.from_template(
        card_data, template_path=str(template_path), repo_id=repo_id, config=config, light=light,
        base_model_on_hub=base_model_on_hub, image_encoder=image_encoder or image_encoder_name(config),
        full_size=format_size(sizes.full), light_size=format_size(sizes.light), size_dtype=str(sizes.dtype).removeprefix("torch."),
        metrics_rows=[dict(split=METRIC_SPLITS[split], **values) for split, values in (metrics or {}).items()],
        dataset_id=dataset_id, data_name=data_info.get("name"), protocol=data_info.get("protocol"),
        statistics=data_info.get("statistics"), training=training, steps=list(steps or PAPER_STEPS),
        step1_prompt=step1_prompt, citation=citation,
    )


def image_encoder_name(config: UserLLMConfig) -> str:
    """How the card names the image encoder: its Hub id or folder name, else its architecture."""
    name = config.vision_model_name_or_path
    if name:
        return name.rstrip("/").split("/")[-1] if os.path.isdir(name) else name
    if config.vision_config is not None:
        return f"a {config.vision_config.model_type} encoder stored in this checkpoint"
    return "the encoder that computed the training features (not stored in this checkpoint)"


def size_category(num_rows: int) -> str:
    """The Hub's `size_categories` bucket of a data set with `num_rows` rows."""
    if num_rows < 1000:
        return "n<1K"
    bounds = ["1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T"]
    index = min(int(math.log10(num_rows)) - 3, len(bounds) - 2)
    return f"{bounds[index]}<n<{bounds[index + 1]}"


def render_dataset_card(info: dict, repo_id: str, *, license: str | None = None,
                        template_path: str | os.PathLike = DATASET_CARD_TEMPLATE) -> DatasetCard:
    """The dataset card of a prepared data set from its `info.json` (name, protocol, statistics)."""
    statistics = info.get("statistics", {})
    num_rows = sum(statistics.get(key, 0) for key in ("#Train", "#Valid", "#Test"))
    card_data = DatasetCardData(
        pretty_name=f"{info['name']} (USER-LLM protocol)", license=license, task_categories=["text-classification"],
        tags=["recommendation", "userllm", "multimodal"], size_categories=[size_category(num_rows)],
    )
    return DatasetCard.from_template(card_data, template_path=str(template_path), repo_id=repo_id, name=info["name"],
                                     protocol=info.get("protocol", {}), statistics=statistics)


def read_metrics(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """A training run's `metrics.json` (or one holding the splits alone), validated (`run_metrics`)."""
    return run_metrics(read_mapping(path), source=path)


def run_metrics(content: dict, source: str | os.PathLike = "metrics.json") -> dict[str, dict[str, float]]:
    """The card's AUC/UAUC per split from a run's `metrics.json` content, validated. Non-split entries
    (`num_processes`) are skipped; a split whose metric is undefined (one class: None, the reason under
    `"undefined"`) is left out with a warning giving the reason."""
    splits = {}
    for split, values in content.items():
        if not isinstance(values, dict):
            continue
        undefined = {metric: reason for metric, reason in (values.get("undefined") or {}).items()
                     if metric in METRIC_NAMES and values.get(metric) is None}
        if undefined:
            logger.warning("%s: split %r is left out of the card, its %s undefined: %s", source, split,
                           " and ".join(undefined), "; ".join(undefined.values()))
            continue
        splits[split] = values
    return validate_metrics(splits)


def read_mapping(path: str | os.PathLike) -> dict:
    """A JSON mapping (`info.json`, `metrics.json`), or a YAML one from a `.yaml`/`.yml` file (per-step hyperparameters)."""
    text = Path(path).read_text(encoding="utf-8")
    content = yaml.safe_load(text) if Path(path).suffix in (".yaml", ".yml") else json.loads(text)
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(content).__name__}")
    return content


def trained_schedule(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The schedule of the run that saved `model_dir` (`OUTPUT/model` beside `OUTPUT/run_config.json`) as
    `render_model_card` arguments: `steps`, `step1_prompt` and per step its main hyperparameters; {} without one."""
    path = Path(model_dir).parent / "run_config.json"
    if not path.is_file():
        return {}
    run = read_mapping(path)
    schedule, data = run.get("schedule", {}), run.get("data", {})
    steps = schedule.get("steps", list(PAPER_STEPS))
    names = ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "warmup_steps")
    training = {step: {**{name: schedule[key] for name in names if (key := f"step{STEP_NUMBERS[step]}_{name}") in schedule},
                       "max_train_rows": data.get("max_train_rows") or "the whole train split"}
                for step in steps}
    return {"steps": steps, "step1_prompt": schedule.get("step1_prompt", "text"), "training": training}


def trained_metrics(model_dir: str | os.PathLike) -> dict[str, dict[str, float]] | None:
    """What training measured for a saved model folder: the run's `metrics.json` beside it (`OUTPUT/model`,
    `OUTPUT/metrics.json`), else the folder's own card's results (rounded to 4 decimals), else None."""
    model_dir = Path(model_dir)
    if (model_dir.parent / "metrics.json").is_file() and (found := read_metrics(model_dir.parent / "metrics.json")):
        return found
    if not (model_dir / "README.md").is_file():
        return None
    metric_keys = {metric_type: metric for metric, (metric_type, _) in METRIC_NAMES.items()}
    found = {}
    for result in ModelCard.load(model_dir / "README.md").data.eval_results or []:
        split, metric = result.dataset_split, metric_keys.get(result.metric_type)
        if split in METRIC_SPLITS and metric:
            found.setdefault(split, {})[metric] = result.metric_value
    return validate_metrics(found) if found else None


def prepare_upload_folder(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, repo_id: str, light: bool = False,
                          base_model: str | None = None, vision_model: str | None = None, **card_kwargs: Any) -> Path:
    """Writes exactly the folder to upload, atomically, and returns it: safetensors weights, config with
    `auto_map`, the hub-copied code, processor and tokenizer files and `README.md` (the model card).

    Args:
        model_dir: a saved checkpoint (full or light) with its processor.
        out_dir: the folder to write; must not exist or be empty.
        repo_id: where the model will be published.
        light: write the light form (no base LLM weights).
        base_model: Hub id of the base LLM, replacing `config.base_model_name_or_path` (required for the
            light form unless it is a Hub id already). No local path is published (`keep_hub_names_only`).
        vision_model: Hub id of the vision encoder, replacing `config.vision_model_name_or_path`: the light
            form then fetches it on load instead of storing it (a local encoder is stored).
        **card_kwargs: passed to `render_model_card`; without `metrics`, those training measured (`trained_metrics`).
    """
    out_dir = Path(out_dir)
    check_empty_upload_folder(out_dir)
    model = UserLLMForRecommendation.from_pretrained(model_dir, dtype="auto")
    config = model.config
    if base_model is not None and base_model != config.base_model_name_or_path:
        config.base_model_name_or_path = base_model
        config.base_model_revision = None  # a revision of the folder it replaces
    if vision_model is not None:
        if not is_hub_id(vision_model):
            raise ValueError(f"vision_model {vision_model!r}: expected a Hub id (ORG/NAME) of the vision encoder")
        config.vision_model_name_or_path = vision_model
    if light and not is_hub_id(config.base_model_name_or_path):
        raise ValueError(f"A light checkpoint on the Hub must name its base LLM by Hub id, but the config holds "
                         f"{config.base_model_name_or_path!r}; pass base_model='ORG/NAME' (--base-model)")
    processor = UserLLMProcessor.from_pretrained(model_dir)
    if card_kwargs.get("metrics") is None:
        card_kwargs["metrics"] = trained_metrics(model_dir)
    for key, value in trained_schedule(model_dir).items():
        if card_kwargs.get(key) is None:
            card_kwargs[key] = value
    card_kwargs.setdefault("image_encoder", image_encoder_name(config))
    if light and not is_hub_id(config.vision_model_name_or_path):
        # A local or unnamed encoder cannot be fetched on the Hub: the light form stores it.
        config.vision_model_name_or_path = None
    card = render_model_card(config, repo_id, light=light, **card_kwargs)
    keep_hub_names_only(config)
    with staged_folder(out_dir) as staging:
        model.save_pretrained(staging, light=light)
        match_weight_file_permissions(staging)
        processor.save_pretrained(staging)
        card.save(staging / "README.md")
        pickled = [path.name for path in staging.rglob("*") if path.suffix in PICKLE_WEIGHT_SUFFIXES]
        if pickled:
            raise RuntimeError(f"Refusing to publish pickle-format weight files {pickled}: only safetensors are allowed")
    return out_dir


def keep_hub_names_only(config: UserLLMConfig) -> None:
    """Clears local folder names (the base LLM's, the vision encoder's, their sub-configs' `_name_or_path`)
    from a config about to be published; a light one has Hub ids there (`prepare_upload_folder` checks)."""
    if not is_hub_id(config.base_model_name_or_path):
        config.base_model_name_or_path = None
    if not is_hub_id(config.vision_model_name_or_path):
        config.vision_model_name_or_path = None
    config.text_config._name_or_path = config.base_model_name_or_path or ""
    if config.vision_config is not None:
        config.vision_config._name_or_path = config.vision_model_name_or_path or ""


def check_empty_upload_folder(out_dir: Path) -> None:
    """Raises `FileExistsError` when `out_dir` exists and holds anything (it would be uploaded)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; give an empty or new folder, so that nothing stale is uploaded")


@contextlib.contextmanager
def staged_folder(out_dir: Path):
    """A temporary folder beside `out_dir` that becomes `out_dir` (replacing an empty one) when the block
    ends without an error; on an error nothing is left behind."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        yield staging
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def require_token(token: str | None = None) -> str:
    """`token`, else `HF_TOKEN`, else the stored login; none: `HubLoginRequiredError` saying how to log in."""
    token = token or get_token()
    if not token:
        raise HubLoginRequiredError(LOGIN_HELP)
    return token


def upload_folder(folder: str | os.PathLike, repo_id: str, *, token: str, private: bool = False,
                  commit_message: str | None = None, repo_type: str = "model", **create_kwargs: Any):
    """Creates the repo if needed (`create_kwargs`: e.g. `space_sdk`) and uploads `folder` as one commit; returns its `CommitInfo`."""
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type, **create_kwargs)
    return api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type=repo_type,
                             commit_message=commit_message or f"Upload USER-LLM checkpoint from {Path(folder).name}")


def push_to_hub(model_dir: str | os.PathLike, repo_id: str, *, light: bool = False, private: bool = False,
                token: str | None = None, base_model: str | None = None, vision_model: str | None = None,
                commit_message: str | None = None, **card_kwargs: Any):
    """Checks the token (without one nothing is read or written), then prepares the upload folder
    (`prepare_upload_folder`: `light`, `base_model`, `vision_model`, `card_kwargs`) and uploads it; returns the `CommitInfo`."""
    token = require_token(token)
    with tempfile.TemporaryDirectory(prefix="userllm-upload-") as workdir:
        folder = prepare_upload_folder(model_dir, Path(workdir) / "upload", repo_id=repo_id, light=light,
                                       base_model=base_model, vision_model=vision_model, **card_kwargs)
        return upload_folder(folder, repo_id, token=token, private=private, commit_message=commit_message)
