"""The toy movies generator, records built from it, and the dataset presets."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from modeling_userllm.data import (
    DEFAULT_GENERATOR,
    Protocol,
    RecordBuilder,
    build_records,
    make_toy_movies,
    oracle_test_auc,
)
from modeling_userllm.data.selection import SELECTION_KEYS
from modeling_userllm.data.toy import DEFAULT_PROTOCOL, preference_weights, simulate

PRESETS = Path(__file__).resolve().parents[1] / "configuration" / "datasets"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_movies(seed=0, poster_dir=tmp_path_factory.mktemp("posters"))


def test_toy_has_the_documented_size(toy):
    stats = toy.info["statistics"]
    assert toy.num_users == 600 and toy.num_items == 200
    assert stats["#User"] == 600 and stats["#Item"] == 200
    assert 18000 < stats["#Train"] < 23000
    assert 0.35 < stats["#Positive"] / (stats["#Positive"] + stats["#Negative"]) < 0.6


def test_toy_is_deterministic_from_its_seed(toy, tmp_path):
    again = make_toy_movies(seed=0, poster_dir=tmp_path)
    assert again.interactions["test"].to_list() == toy.interactions["test"].to_list()
    assert again.items["title"] == toy.items["title"]
    other = make_toy_movies(seed=1)
    assert other.items["title"] != toy.items["title"]


def test_toy_posters_are_small_images_and_some_are_missing(toy):
    paths = toy.items["poster_path"]
    present = [path for path in paths if path]
    assert 0 < len(paths) - len(present) < 20
    with Image.open(present[0]) as image:
        assert image.size == (64, 64) and image.mode == "RGB"


def test_descriptions_reveal_the_genre_that_some_titles_hide(toy):
    genres = ("action", "comedy", "horror", "romance", "science fiction")
    assert all(any(genre in text for genre in genres) for text in toy.items["description"])
    assert sum(title.startswith("The ") for title in toy.items["title"]) > 40


def test_oracle_auc_is_the_documented_ceiling_and_each_signal_matters():
    full = oracle_test_auc(seed=0)
    assert full == pytest.approx(0.8727, abs=1e-3)
    for term in ("collaborative", "visual", "history"):
        assert oracle_test_auc(seed=0, without=(term,)) < full - 0.03


def test_descriptions_open_with_the_reception_that_follows_the_planted_quality():
    items, _ = simulate(seed=0)
    receptions = [description.split(".")[0] for description in items["description"]]
    assert set(receptions) == {"Critically acclaimed", "Mixed reviews", "Poorly reviewed"}
    mean_quality = items.assign(reception=receptions).groupby("reception")["quality"].mean()
    assert mean_quality["Poorly reviewed"] < 0 < mean_quality["Critically acclaimed"]
    # Terciles: each reception covers roughly a third of the items.
    assert all(40 < receptions.count(name) < 95 for name in set(receptions))


def test_popular_clusters_and_styles_give_item_level_signals():
    """Skewed user preferences make the first group and style liked more overall, a signal
    a model can read from the item alone (ids, poster), next to the per-user matches."""
    items, log = simulate(seed=0)
    liked = log.merge(items[["raw_id", "group", "style"]], left_on="item", right_on="raw_id")
    liked = liked.assign(positive=liked["rating"] >= 4)
    by_group = liked.groupby("group")["positive"].mean()
    by_style = liked.groupby("style")["positive"].mean()
    assert by_group.idxmax() == 0 and by_style.idxmax() == 0
    assert by_group[0] - by_group.min() > 0.1 and by_style[0] - by_style.min() > 0.1
    assert preference_weights(3, 0.0).tolist() == pytest.approx([1 / 3] * 3)


def test_records_follow_the_processor_format(toy):
    features = np.arange(toy.num_items * 384, dtype=np.float32).reshape(toy.num_items, 384)
    mask = np.ones(toy.num_items, dtype=bool)
    mask[3] = False
    rows = toy.interactions["test"][:4]
    records = build_records(rows, toy, image_features=features, image_mask=mask)
    record = records[0]
    assert set(record) == {"user_id", "item_id", "title", "description", "image_features", "history", "label"}
    assert record["item_id"] == rows["item_id"][0] and record["label"] == rows["label"][0]
    assert record["title"] == toy.items[record["item_id"]]["title"]
    assert record["image_features"] == features[record["item_id"]].tolist()
    assert [past["item_id"] for past in record["history"]] == rows["history_item_ids"][0]
    assert set(record["history"][0]) == {"item_id", "title", "description", "image_features"}
    assert RecordBuilder(toy, image_features=features, image_mask=mask).item(3)["image_features"] is None


def test_description_sources(toy):
    rows = [toy.interactions["train"][0]]
    item = rows[0]["item_id"]
    generated = build_records(rows, toy, descriptions={str(item): "generated text"})[0]
    assert generated["description"] == "generated text" and generated["image_features"] is None
    assert build_records(rows, toy)[0]["description"] == toy.items[item]["description"]
    assert build_records(rows, toy, description_source="none")[0]["description"] is None
    with pytest.raises(ValueError, match="needs `descriptions`"):
        build_records(rows, toy, description_source="generated")


def test_record_dataset_converts_lazily_by_index(toy):
    dataset = RecordBuilder(toy).dataset(toy.interactions["valid"])
    assert len(dataset) == len(toy.interactions["valid"])
    assert dataset[5]["item_id"] == toy.interactions["valid"][5]["item_id"]


def test_image_features_of_the_wrong_shape_raise(toy):
    with pytest.raises(ValueError, match="num_items=200"):
        RecordBuilder(toy, image_features=np.zeros((5, 384)))


@pytest.mark.parametrize("preset", sorted(PRESETS.glob("*.yaml")), ids=lambda path: path.stem)
def test_presets_use_only_known_keys(preset):
    keys = set(yaml.safe_load(preset.read_text()))
    known = {"threshold", "history_length", "min_history", "split", "split_fractions", "long_min_history",
             "long_history_length"}
    known |= set(SELECTION_KEYS) | {"ratings_file"}
    if preset.stem == "toy":
        known |= set(DEFAULT_GENERATOR) | {"seed"}
    assert keys <= known


def test_toy_preset_matches_the_code_defaults():
    preset = yaml.safe_load((PRESETS / "toy.yaml").read_text())
    assert {key: preset[key] for key in DEFAULT_PROTOCOL} == DEFAULT_PROTOCOL
    assert {key: tuple(v) if isinstance(v, list) else v for key, v in preset.items() if key in DEFAULT_GENERATOR} == DEFAULT_GENERATOR
    assert Protocol.with_overrides(DEFAULT_PROTOCOL, {}).history_length == 5


def test_record_builder_checks_item_texts_and_features_once_naming_the_item(toy):
    titles = list(toy.items["title"])
    titles[7] = "Heat <Image> (1995)"
    broken = type(toy)(toy.interactions, toy.items.remove_columns("title").add_column("title", titles), toy.info)
    with pytest.raises(ValueError, match="item 7 of the item table: field 'title' contains the placeholder <Image>"):
        RecordBuilder(broken)
    features = np.zeros((200, 384), dtype=np.float32)
    features[12, 5] = np.nan
    with pytest.raises(ValueError, match=r"image_features\[12, 5\] \(item 12\) is nan"):
        RecordBuilder(toy, image_features=features)
    mask = np.ones(200, dtype=bool)
    mask[12] = False  # a masked-out row is never used
    RecordBuilder(toy, image_features=np.nan_to_num(features) + np.where(mask[:, None], 0, np.nan), image_mask=mask)


def test_a_record_dataset_refuses_items_outside_the_item_table_and_bad_labels(toy):
    rows = toy.interactions["valid"].select(range(6)).to_list()
    builder = RecordBuilder(toy)
    assert len(builder.dataset(rows)) == 6
    bad_item = [dict(row) for row in rows]
    bad_item[4]["history_item_ids"] = [1, -1]
    with pytest.raises(ValueError, match=r"valid row 4: field 'history_item_ids' holds item -1, which is not in the item table \(ids 0 to 199\)"):
        builder.dataset(bad_item, "valid")
    bad_item[4] = dict(rows[4], item_id=200)
    with pytest.raises(ValueError, match="valid row 4: field 'item_id' holds item 200"):
        builder.dataset(bad_item, "valid")
    bad_label = [dict(row) for row in rows]
    bad_label[2]["label"] = 2
    with pytest.raises(ValueError, match="valid row 2: field 'label' must be 0 or 1, got 2"):
        builder.dataset(bad_label, "valid")
