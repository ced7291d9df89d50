"""FeatureStore: round trip of every kind, partial folders, atomic writes, record helpers."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_userllm.features import FeatureStore
from modeling_userllm.features.store import atomic_write_json


def _store() -> FeatureStore:
    features = torch.randn(3, 384)
    features[1] = 0
    return FeatureStore(
        image_features=features,
        image_mask=torch.tensor([True, False, True]),
        descriptions={0: "A cowboy doll.", 2: "A spy."},
        user_embeddings=torch.randn(4, 256),
        item_embeddings=torch.randn(3, 256),
        manifest={"name": "toy"},
    )


def test_round_trip_keeps_every_kind(tmp_path):
    store = _store()
    store.save(tmp_path)
    loaded = FeatureStore.load(tmp_path)
    assert torch.equal(loaded.image_features, store.image_features)
    assert loaded.image_mask.dtype == torch.bool and torch.equal(loaded.image_mask, store.image_mask)
    assert loaded.descriptions == store.descriptions
    assert torch.equal(loaded.user_embeddings, store.user_embeddings)
    assert torch.equal(loaded.item_embeddings, store.item_embeddings)
    assert loaded.manifest == {"name": "toy"}
    assert set(load_file(tmp_path / "collaborative.safetensors")) == {"user_embeddings", "item_embeddings"}
    assert json.loads((tmp_path / "descriptions.json").read_text()) == {"0": "A cowboy doll.", "2": "A spy."}


def test_saving_one_kind_keeps_the_other_files(tmp_path):
    _store().save(tmp_path)
    FeatureStore(descriptions={1: "New."}).save(tmp_path)
    loaded = FeatureStore.load(tmp_path)
    assert loaded.descriptions == {1: "New."}
    assert loaded.image_features is not None and loaded.user_embeddings is not None


def test_missing_folder_raises_and_absent_kinds_are_none(tmp_path):
    with pytest.raises(FileNotFoundError):
        FeatureStore.load(tmp_path / "nope")
    empty = FeatureStore.load(tmp_path)
    assert empty.image_features is None and empty.descriptions is None and empty.user_embeddings is None


def test_record_helpers_return_none_for_missing_poster_and_cold_start():
    store = _store()
    assert len(store.image_feature(0)) == 384
    assert store.image_feature(1) is None and store.image_feature(99) is None
    assert store.description(0) == "A cowboy doll." and store.description(1) is None
    assert FeatureStore().image_feature(0) is None


def test_inconsistent_tables_raise():
    with pytest.raises(ValueError, match="together"):
        FeatureStore(image_features=torch.zeros(2, 384))
    with pytest.raises(ValueError, match="rows"):
        FeatureStore(image_features=torch.zeros(2, 384), image_mask=torch.ones(3, dtype=torch.bool))


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "manifest.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


@pytest.mark.parametrize("file_name, damage, message", [
    ("descriptions.json", lambda data: data[: len(data) // 2], "not valid JSON"),
    ("descriptions.json", lambda data: b'["a list"]', 'expected {"<item_id>": "description", ...}'),
    ("manifest.json", lambda data: b"\xff" + data, "not valid JSON"),
    ("image_features.safetensors", lambda data: data[: len(data) // 2], "not a readable safetensors file"),
    ("collaborative.safetensors", lambda data: b"garbage", "not a readable safetensors file"),
])
def test_a_damaged_file_is_named(tmp_path, file_name, damage, message):
    _store().save(tmp_path)
    path = tmp_path / file_name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        FeatureStore.load(tmp_path)


def test_a_table_without_its_tensors_is_named(tmp_path):
    _store().save(tmp_path)
    path = tmp_path / "collaborative.safetensors"
    save_file({"user_embeddings": torch.zeros(4, 256)}, path)
    with pytest.raises(ValueError, match=re.escape(f"{path}: missing tensors ['item_embeddings']")):
        FeatureStore.load(tmp_path)
