"""examples/prepare_features.py on a small toy data set: files, manifest, --skip-* and --limit."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from modeling_userllm.data import make_toy_movies
from modeling_userllm.features import FeatureStore

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "prepare_features.py"


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    data = make_toy_movies(seed=0, poster_dir=root / "posters", num_users=40, num_items=60)
    data.save(root / "data")
    return data, root / "data"


def _run(monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_toy_features_from_item_table_and_toy_encoder(toy_data, tmp_path, monkeypatch):
    data, folder = toy_data
    out = tmp_path / "features"
    _run(monkeypatch, "--data", str(folder), "--output", str(out), "--description-source", "column",
         "--image-model", "toy", "--skip-collaborative")
    store = FeatureStore.load(out)
    assert store.image_features.shape == (data.num_items, 384)
    missing = sum(path is None for path in data.items["poster_path"])
    assert int((~store.image_mask).sum()) == missing
    assert store.descriptions == {i: " ".join(d.split()) for i, d in zip(data.items["item_id"], data.items["description"]) if d}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["descriptions"]["source"] == "column:description"
    assert manifest["image_features"]["missing"] == missing and manifest["num_items"] == data.num_items
    assert {"seconds", "cpu_seconds"} <= set(manifest["image_features"])
    assert "collaborative" not in manifest


def test_skipped_steps_keep_earlier_files_and_limit_masks_the_rest(toy_data, tmp_path, monkeypatch):
    data, folder = toy_data
    out = tmp_path / "features"
    base = ["--data", str(folder), "--output", str(out), "--skip-collaborative"]
    _run(monkeypatch, *base, "--description-source", "column", "--skip-images")
    _run(monkeypatch, *base, "--image-model", "toy", "--skip-descriptions", "--limit", "5")
    store = FeatureStore.load(out)
    assert len(store.descriptions) > 5
    assert store.image_features.shape[0] == data.num_items
    assert not store.image_mask[5:].any() and torch.all(store.image_features[5:] == 0)
    assert set(store.manifest) >= {"descriptions", "image_features"}
    assert store.manifest["image_features"]["items"] == 5
