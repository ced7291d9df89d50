"""The features folder of one data set (docs/ARCHITECTURE.md, "Features"): `image_features.safetensors`,
`descriptions.json`, `collaborative.safetensors`, `manifest.json`, each optional and written atomically
(temporary file in the same folder, then `os.replace`), so each kind can be saved as soon as it is computed.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

IMAGE_FEATURES_FILE = "image_features.safetensors"
DESCRIPTIONS_FILE = "descriptions.json"
COLLABORATIVE_FILE = "collaborative.safetensors"
MANIFEST_FILE = "manifest.json"


def match_weight_file_permissions(folder: str | os.PathLike) -> None:
    """Gives a `save_pretrained` folder's weight files the permissions of its `config.json`: transformers writes
    them through a 0600 temporary file, so a shared folder would hold weights only their owner can read."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if config_file.is_file():
        mode = config_file.stat().st_mode & 0o777
        for weights in folder.glob("model*.safetensors*"):
            weights.chmod(mode)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` (its folder must exist) so that `path` holds either the old or the new content."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; a features folder is meant to be shared
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as indented UTF-8 JSON, atomically (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    """Saves contiguous CPU copies of `tensors` as safetensors, atomically."""
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def _read_json(path: Path) -> Any:
    """The content of a JSON file of a features folder; a damaged file is named."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error}); prepare the features again (examples/prepare_features.py)") from error


def _read_safetensors(path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors `keys` of a safetensors file of a features folder; a damaged file or a missing key is named."""
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as error:  # safetensors' errors (e.g. a truncated header) do not name the file
        raise ValueError(f"{path}: not a readable safetensors file ({error}); prepare the features again (examples/prepare_features.py)") from error
    missing = [key for key in keys if key not in tensors]
    if missing:
        raise ValueError(f"{path}: missing tensors {missing} (has {sorted(tensors)}); prepare the features again (examples/prepare_features.py)")
    return tensors


@dataclass
class FeatureStore:
    """The offline features of one data set, indexed by contiguous item/user id: `image_features` float32
    `(num_items, 384)` (zero rows where `image_mask`, bool `(num_items,)`, is False), `descriptions` (item_id ->
    text), the MF tables `user_embeddings` `(num_users, 256)` and `item_embeddings` `(num_items, 256)`, and a
    free-form `manifest` (models, prompts, counts, timings)."""

    image_features: torch.Tensor | None = None
    image_mask: torch.Tensor | None = None
    descriptions: dict[int, str] | None = None
    user_embeddings: torch.Tensor | None = None
    item_embeddings: torch.Tensor | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.image_features is None) != (self.image_mask is None):
            raise ValueError("image_features and image_mask must be given together")
        if self.image_features is not None and len(self.image_features) != len(self.image_mask):
            raise ValueError(f"image_features has {len(self.image_features)} rows but image_mask has {len(self.image_mask)}")
        if (self.user_embeddings is None) != (self.item_embeddings is None):
            raise ValueError("user_embeddings and item_embeddings must be given together")
        users, items = self.user_embeddings, self.item_embeddings
        if users is not None and (users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]):
            raise ValueError(f"expected (num_users, d) user_embeddings and (num_items, d) item_embeddings, got "
                             f"{tuple(users.shape)} and {tuple(items.shape)}")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> FeatureStore:
        """Reads whatever kinds a features folder holds (absent files stay None); FileNotFoundError without the folder."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"no features folder at {directory}")
        store: dict[str, Any] = {}
        if (directory / IMAGE_FEATURES_FILE).exists():
            tensors = _read_safetensors(directory / IMAGE_FEATURES_FILE, ("features", "mask"))
            store["image_features"], store["image_mask"] = tensors["features"], tensors["mask"]
        if (directory / DESCRIPTIONS_FILE).exists():
            raw = _read_json(directory / DESCRIPTIONS_FILE)
            if not isinstance(raw, dict) or not all(key.isdigit() and isinstance(text, str) for key, text in raw.items()):
                raise ValueError(f"{directory / DESCRIPTIONS_FILE}: expected {{\"<item_id>\": \"description\", ...}}")
            store["descriptions"] = {int(k): v for k, v in raw.items()}
        if (directory / COLLABORATIVE_FILE).exists():
            tensors = _read_safetensors(directory / COLLABORATIVE_FILE, ("user_embeddings", "item_embeddings"))
            store["user_embeddings"] = tensors["user_embeddings"]
            store["item_embeddings"] = tensors["item_embeddings"]
        if (directory / MANIFEST_FILE).exists():
            store["manifest"] = _read_json(directory / MANIFEST_FILE)
        return cls(**store)

    def save(self, directory: str | os.PathLike) -> None:
        """Writes every kind this store holds, each file atomically, keeping the others (pipeline steps share a folder)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.image_features is not None:
            atomic_save_safetensors(directory / IMAGE_FEATURES_FILE,
                                    {"features": self.image_features.float(), "mask": self.image_mask.bool()})
        if self.descriptions is not None:
            atomic_write_json(directory / DESCRIPTIONS_FILE, {str(k): v for k, v in sorted(self.descriptions.items())})
        if self.user_embeddings is not None:
            atomic_save_safetensors(directory / COLLABORATIVE_FILE, {"user_embeddings": self.user_embeddings.float(),
                                                                     "item_embeddings": self.item_embeddings.float()})
        if self.manifest:
            atomic_write_json(directory / MANIFEST_FILE, self.manifest)

    def image_feature(self, item_id: int) -> list[float] | None:
        """The 384 poster floats of `item_id`, or None (no image features, unknown id, missing poster)."""
        if self.image_features is None or not 0 <= item_id < len(self.image_mask) or not self.image_mask[item_id]:
            return None
        return self.image_features[item_id].tolist()

    def description(self, item_id: int) -> str | None:
        """The description of `item_id`, or None (records then fall back to the title)."""
        return None if self.descriptions is None else self.descriptions.get(item_id)
