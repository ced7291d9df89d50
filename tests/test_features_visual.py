"""Visual features: CLS extraction, masking of missing/corrupt posters, toy and real encoders."""


import pytest
import torch
from PIL import Image
from transformers import ViTConfig, ViTImageProcessor, ViTModel

from modeling_userllm.features import (
    encode_images,
    extract_image_features,
    load_image_encoder,
    nearest_neighbours,
    toy_image_encoder,
)

from conftest import SHARED_DIR as SHARED  # noqa: E402  (honours USERLLM_SHARED)
from test_images import OVERSIZED_MESSAGE, write_oversized_poster

DINOV2 = SHARED / "models" / "dinov2-small"
POSTERS = SHARED / "data" / "ml-100k" / "posters"


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=16, patch_size=8)
    return ViTModel(config, add_pooling_layer=False).eval(), ViTImageProcessor(size={"height": 16, "width": 16})


@pytest.fixture
def posters(tmp_path):
    """Two real images, one missing path, one corrupt file and one None, in that order."""
    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (20, 30), colour).save(path)
        paths.append(str(path))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg")
    return paths + [str(tmp_path / "missing.jpg"), str(corrupt), None]


def test_missing_and_corrupt_images_are_masked_and_counted(tiny_vit, posters):
    model, processor = tiny_vit
    with pytest.warns(UserWarning, match="3 of 5 images are missing or unreadable"):
        features, mask = extract_image_features(posters, model, processor, batch_size=2, progress=False)
    assert features.dtype == torch.float32 and features.shape == (5, 32)
    assert mask.tolist() == [True, True, False, False, False]
    assert torch.all(features[2:] == 0) and torch.all(features[:2].abs().sum(-1) > 0)


@pytest.mark.parametrize("warn_missing", [True, False])
def test_an_oversized_poster_is_masked_and_named_in_the_warning(tiny_vit, posters, tmp_path, warn_missing):
    model, processor = tiny_vit
    paths = [posters[0], write_oversized_poster(tmp_path), None]
    with pytest.warns(UserWarning, match=r"2 of 3 images are missing or unreadable.*1 files cannot be used: item 1: "
                                         + OVERSIZED_MESSAGE):
        _, mask = extract_image_features(paths, model, processor, progress=False, warn_missing=warn_missing)
    assert mask.tolist() == [True, False, False]


def test_features_do_not_depend_on_batch_size(tiny_vit, posters):
    model, processor = tiny_vit
    with pytest.warns(UserWarning):
        one, _ = extract_image_features(posters, model, processor, batch_size=1, progress=False)
        four, _ = extract_image_features(posters, model, processor, batch_size=4, progress=False)
    torch.testing.assert_close(one, four)


def test_feature_is_the_cls_token_of_the_last_hidden_state(tiny_vit, posters):
    model, processor = tiny_vit
    image = Image.open(posters[0]).convert("RGB")
    pixel_values = processor(images=[image], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).last_hidden_state[:, 0]
    torch.testing.assert_close(encode_images([image], model, processor), expected)


def test_toy_encoder_is_deterministic_with_384_features(posters):
    (first, processor), (second, _) = toy_image_encoder(seed=0), toy_image_encoder(seed=0)
    other, _ = toy_image_encoder(seed=1)
    with pytest.warns(UserWarning):
        a, mask = extract_image_features(posters, first, processor, progress=False)
        b, _ = extract_image_features(posters, second, processor, progress=False)
        c, _ = extract_image_features(posters, other, processor, progress=False)
    assert a.shape == (5, 384) and mask.sum() == 2
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_nearest_neighbours_skip_query_and_masked_items():
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([True, True, False, True])
    assert [i for i, _ in nearest_neighbours(features, mask, 0, k=5)] == [1, 3]
    with pytest.raises(ValueError, match="no image feature"):
        nearest_neighbours(features, mask, 2)


@pytest.mark.skipif(not DINOV2.is_dir() or not POSTERS.is_dir(), reason=f"real asset not found at {DINOV2} or {POSTERS} (set USERLLM_SHARED)")
def test_real_dinov2_gives_384_float32_features_and_masks_missing():
    model, processor = load_image_encoder(str(DINOV2))
    paths = [str(POSTERS / "1.jpg"), str(POSTERS / "1.jpg"), str(POSTERS / "does-not-exist.jpg")]
    with pytest.warns(UserWarning, match="1 of 3"):
        features, mask = extract_image_features(paths, model, processor, batch_size=3, progress=False)
    assert features.shape == (3, 384) and features.dtype == torch.float32
    assert mask.tolist() == [True, True, False]
    torch.testing.assert_close(features[0], features[1])
    assert torch.isfinite(features).all()
