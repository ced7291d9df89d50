"""Posters in, scores out: images through the processor and the model's frozen vision encoder.

The reference is the offline path: features computed by `features/visual.py`
(`extract_image_features`) with the same encoder. A poster given as a path or a PIL image
must score as its precomputed features do, also in a fresh process where the package is
unimportable (the hub-copied files alone).
"""

import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import (
    DESCRIPTIONS,
    NUM_ITEMS,
    SHARED_DIR,
    TITLES,
    build_tiny_model,
    requires_shared,
    score_in_fresh_process,
)
from modeling_userllm.data.parsing import is_readable_image
from modeling_userllm.features.visual import extract_image_features, load_image_encoder, toy_image_encoder
from modeling_userllm.modeling_userllm import UserLLMForRecommendation
from modeling_userllm.processing_userllm import open_poster
from modeling_userllm.ranking import score_candidates

DINOV2_SMALL = SHARED_DIR / "models" / "dinov2-small"


def write_posters(folder, count: int, seed: int = 0) -> list[str]:
    """Small random posters of different sizes and modes (RGB JPEG, RGBA and grey PNG)."""
    rng = random.Random(seed)
    paths = []
    for index in range(count):
        size = (rng.randrange(40, 90), rng.randrange(60, 120))
        pixels = bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3))
        image = Image.frombytes("RGB", size, pixels)
        if index % 3 == 1:
            image, suffix = image.convert("RGBA"), "png"
        elif index % 3 == 2:
            image, suffix = image.convert("L"), "png"
        else:
            suffix = "jpg"
        path = folder / f"poster_{index}.{suffix}"
        image.save(path)
        paths.append(str(path))
    return paths


def poster_records(paths: list[str], features: torch.Tensor | None, seed: int = 0) -> list[dict]:
    """Records whose items show poster `item_id` (a path, or its features when `features` is given);
    some history items have no poster."""
    rng = random.Random(seed)

    def item(item_id: int, with_poster: bool = True) -> dict:
        poster = None
        if with_poster:
            poster = paths[item_id] if features is None else features[item_id].tolist()
        return {"item_id": item_id, "title": TITLES[item_id], "description": DESCRIPTIONS[item_id], "image_features": poster}

    records = []
    for user_id in range(4):
        history = [item(rng.randrange(NUM_ITEMS), with_poster=rng.random() > 0.25) for _ in range(3)]
        records.append({**item(rng.randrange(NUM_ITEMS)), "user_id": user_id, "history": history})
    return records


def model_with_encoder(tiny_tokenizer, variant: str, encoder, image_processor, name=None):
    model, processor = build_tiny_model(tiny_tokenizer, variant)
    model.attach_vision_encoder(encoder, name)
    processor.image_processor = image_processor
    return model.eval(), processor


ENCODERS = [
    pytest.param("toy", id="toy-vit"),
    pytest.param("dinov2", id="dinov2-small", marks=requires_shared(DINOV2_SMALL)),
]


def load_encoder(kind: str):
    if kind == "toy":
        return (*toy_image_encoder(seed=0), None)
    return (*load_image_encoder(str(DINOV2_SMALL), dtype=torch.float32), str(DINOV2_SMALL))


def write_oversized_poster(folder) -> str:
    """A 12,000 x 12,000 PNG (144 million pixels, over MAX_POSTER_PIXELS) of 17 kB: one bit per pixel, all zeros."""
    path = folder / "oversized.png"
    Image.new("1", (12_000, 12_000)).save(path)
    return str(path)


OVERSIZED_MESSAGE = r"the poster file .*oversized\.png is 12000 x 12000 = 144,000,000 pixels, more than the limit of 36,000,000"


def test_a_poster_over_the_pixel_limit_is_refused_naming_the_record_and_the_file(tiny_tokenizer, tmp_path):
    encoder, image_processor, _ = load_encoder("toy")
    model, processor = model_with_encoder(tiny_tokenizer, "collm_va", encoder, image_processor)
    records = poster_records(write_posters(tmp_path, NUM_ITEMS), None)
    oversized = write_oversized_poster(tmp_path)
    records[1]["history"][0]["image_features"] = oversized
    with pytest.raises(ValueError, match="record 1, history item 0: " + OVERSIZED_MESSAGE):
        processor(records)
    candidates = [{"item_id": 0, "title": TITLES[0], "description": None, "image_features": oversized}]
    with pytest.raises(ValueError, match="candidate 0: " + OVERSIZED_MESSAGE):
        score_candidates(model, processor, records[0], candidates)


def test_open_poster_takes_another_pixel_limit_and_checks_pil_images():
    image = Image.new("RGB", (30, 20))
    with pytest.raises(ValueError, match=r"item 4: the poster image is 30 x 20 = 600 pixels, more than the limit of 500"):
        open_poster(image, "item 4", max_pixels=500)
    assert open_poster(image, "item 4", max_pixels=600).size == (30, 20)


def test_data_builders_do_not_take_an_oversized_poster_for_a_poster(tmp_path):
    assert not is_readable_image(Path(write_oversized_poster(tmp_path)))
    assert is_readable_image(Path(write_posters(tmp_path, 1)[0]))


@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize("variant", ["userllm", "collm_va"])
def test_poster_images_score_as_their_precomputed_features_in_fresh_process(tiny_tokenizer, tmp_path, kind, variant):
    encoder, image_processor, name = load_encoder(kind)
    paths = write_posters(tmp_path, NUM_ITEMS)
    features, mask = extract_image_features(paths, encoder, image_processor, progress=False)
    assert mask.all()
    model, processor = model_with_encoder(tiny_tokenizer, variant, encoder, image_processor, name)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)

    with_features = poster_records(paths, features)
    with_paths = poster_records(paths, None)
    with torch.no_grad():
        expected = model(**processor(with_features)).logits
        # In process too, with posters given as PIL images and paths mixed in one batch.
        mixed = [dict(record) for record in with_paths]
        mixed[0]["image_features"] = Image.open(mixed[0]["image_features"])
        mixed[1]["image_features"] = with_features[1]["image_features"]
        batch = processor(mixed)
        assert batch["pixel_values"].shape[0] == len(batch["image_indices"]) > 0
        torch.testing.assert_close(model(**batch).logits, expected, rtol=0, atol=1e-5)

    fresh_paths = score_in_fresh_process(folder, with_paths, tmp_path)
    fresh_features = score_in_fresh_process(folder, with_features, tmp_path)
    torch.testing.assert_close(torch.tensor(fresh_paths), torch.tensor(fresh_features), rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.tensor(fresh_features), expected, rtol=0, atol=1e-5)


def test_posters_change_the_score(tiny_tokenizer, tmp_path):
    """The images reach the prompt: another poster gives another score."""
    encoder, image_processor, _ = load_encoder("toy")
    paths = write_posters(tmp_path, NUM_ITEMS)
    model, processor = model_with_encoder(tiny_tokenizer, "collm_va", encoder, image_processor)
    records = poster_records(paths, None)
    swapped = [dict(record, image_features=paths[(record["item_id"] + 1) % NUM_ITEMS]) for record in records]
    with torch.no_grad():
        assert not torch.allclose(model(**processor(records)).logits, model(**processor(swapped)).logits, atol=1e-6)


def test_poster_image_without_vision_encoder_raises(tiny_tokenizer, tmp_path):
    model, processor = build_tiny_model(tiny_tokenizer, "collm_va")
    records = poster_records(write_posters(tmp_path, NUM_ITEMS), None)
    with pytest.raises(ValueError, match="holds no vision encoder"):
        model(**processor(records))


def test_missing_poster_file_names_the_record_and_the_file(tiny_tokenizer, tmp_path):
    _, processor = build_tiny_model(tiny_tokenizer, "collm_va")
    records = poster_records(write_posters(tmp_path, NUM_ITEMS), None)
    records[1]["history"][0]["image_features"] = str(tmp_path / "no_such_poster.jpg")
    with pytest.raises(ValueError, match=r"record 1, history item 0: .*no_such_poster\.jpg.*does not exist"):
        processor(records)
    (tmp_path / "not_an_image.jpg").write_text("text")
    records[1]["history"][0]["image_features"] = str(tmp_path / "not_an_image.jpg")
    with pytest.raises(ValueError, match=r"not_an_image\.jpg is not a readable image"):
        processor(records)


@requires_shared(DINOV2_SMALL)
def test_light_checkpoint_fetches_a_named_vision_encoder(tiny_tokenizer, tmp_path):
    """A light checkpoint leaves out a vision encoder it can name and loads it from there; an
    encoder without a name (the toy one) is stored."""
    from conftest import STORIES260K
    from transformers import AutoTokenizer

    from modeling_userllm import create_model_and_processor

    if not (STORIES260K / "config.json").exists():
        pytest.skip(f"real asset not found at {STORIES260K}")
    paths = write_posters(tmp_path, NUM_ITEMS)
    for kind in ("dinov2", "toy"):
        encoder, image_processor, name = load_encoder(kind)
        torch.manual_seed(0)
        model, processor = create_model_and_processor(
            AutoTokenizer.from_pretrained(STORIES260K), "collm_va", base_model_name_or_path=str(STORIES260K),
            num_users=4, num_items=NUM_ITEMS,
        )
        model.attach_vision_encoder(encoder, name)
        processor.image_processor = image_processor
        model.eval()
        folder = tmp_path / f"light-{kind}"
        model.save_pretrained(folder, light=True)
        processor.save_pretrained(folder)
        from safetensors import safe_open

        with safe_open(folder / "model.safetensors", "pt") as weights:
            stored = [key for key in weights.keys() if key.startswith("model.vision_tower.")]
        assert bool(stored) == (name is None)
        reloaded = UserLLMForRecommendation.from_pretrained(folder)
        records = poster_records(paths, None)
        with torch.no_grad():
            torch.testing.assert_close(reloaded.eval()(**processor(records)).logits, model(**processor(records)).logits)


@requires_shared(DINOV2_SMALL)
@pytest.mark.parametrize("vision_model", [None, "facebook/dinov2-small"], ids=["local-encoder-stored", "hub-id-fetched"])
def test_light_upload_folder_stores_a_local_vision_encoder_unless_given_its_hub_id(tiny_tokenizer, tmp_path, vision_model):
    """A local encoder cannot be fetched by a Hub user, so the light upload stores it; named by
    `vision_model`, it is left out and the config names it."""
    import json

    from conftest import STORIES260K
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from modeling_userllm import create_model_and_processor, hub

    if not (STORIES260K / "config.json").exists():
        pytest.skip(f"real asset not found at {STORIES260K}")
    encoder, image_processor, name = load_encoder("dinov2")
    model, processor = create_model_and_processor(
        AutoTokenizer.from_pretrained(STORIES260K), "collm_va", base_model_name_or_path=str(STORIES260K),
        num_users=4, num_items=NUM_ITEMS,
    )
    model.attach_vision_encoder(encoder, name)
    processor.image_processor = image_processor
    model.save_pretrained(tmp_path / "trained", light=True)
    processor.save_pretrained(tmp_path / "trained")
    folder = hub.prepare_upload_folder(tmp_path / "trained", tmp_path / "upload", repo_id="org/userllm", light=True,
                                       base_model="org/base-llm", vision_model=vision_model, metrics={})
    with safe_open(folder / "model.safetensors", "pt") as weights:
        stored = any(key.startswith("model.vision_tower.") for key in weights.keys())
    assert stored == (vision_model is None)
    assert json.loads((folder / "config.json").read_text())["vision_model_name_or_path"] == vision_model
