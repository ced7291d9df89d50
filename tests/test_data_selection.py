"""Selection options (posters, K items, user samples), the ratings file choice, the movie preset."""

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image
from test_data_builders import NUM_ITEMS, NUM_USERS, protocol_free, write_ml100k, write_movielens_csv, write_netflix
from test_data_protocol import build, make_items, random_log

from modeling_userllm.data import load_movielens_100k, load_movielens_csv, load_netflix
from modeling_userllm.data.selection import Selection, split_options

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("USERLLM_SHARED", REPO_ROOT.parent / "shared")) / "data"
MOVIES_DATASET = SHARED_DATA / "movies-dataset"
MOVIE_PRESET = REPO_ROOT / "configuration" / "datasets" / "movies-dataset.yaml"


def users_of(data):
    return {data.info["id_maps"]["users"][user] for split in ("train", "valid", "test")
            for user in data.interactions[split]["user_id"]}


def items_of(data):
    return {data.info["id_maps"]["items"][item] for split in ("train", "valid", "test")
            for item in data.interactions[split]["item_id"]}


def test_require_poster_keeps_only_items_with_a_poster(tmp_path):
    data = load_movielens_100k(write_ml100k(tmp_path / "ml", posters=(1, 2, 3)), **protocol_free(require_poster=True))
    assert data.info["id_maps"]["items"] == ["1", "2", "3"] and items_of(data) <= {"1", "2", "3"}
    assert data.info["statistics"]["#Poster"] == data.info["statistics"]["#Item"]
    assert data.info["selection"]["counts"]["items_with_poster"] == 3


def test_require_poster_without_any_poster_names_the_option(tmp_path):
    with pytest.raises(ValueError, match="require_poster=True leaves no item: none of the 8 items"):
        load_movielens_100k(write_ml100k(tmp_path / "ml", posters=()), **protocol_free(require_poster=True))


def test_top_items_keeps_the_most_rated():
    log = random_log(num_items=30)
    counts = log.item.value_counts()
    ranked = sorted(counts.index, key=lambda item: (-counts[item], int(item)))  # ties: item-table order
    data = apply_selection(log, top_items=5)
    assert data.info["id_maps"]["items"] == sorted(ranked[:5], key=int)


def apply_selection(log, **selection):
    from modeling_userllm.data import Protocol, apply_protocol

    protocol = Protocol(threshold=4.0, history_length=3, min_history=0, long_min_history=1, long_history_length=4)
    return apply_protocol(log, make_items(30), name="fixture", protocol=protocol, selection=Selection(**selection))


def test_sample_users_draws_exactly_n_eligible_users_with_the_seed():
    log = random_log(num_users=20)
    first, again = apply_selection(log, sample_users=7, selection_seed=3), apply_selection(log, sample_users=7, selection_seed=3)
    other = apply_selection(log, sample_users=7, selection_seed=4)
    assert len(users_of(first)) == 7 and users_of(first) == users_of(again) != users_of(other)
    assert first.info["selection"]["counts"]["users_out"] == 7


def test_sample_users_counts_only_users_the_protocol_keeps():
    log = random_log(num_users=20)
    data = apply_selection(log, sample_users=20)
    assert len(users_of(data)) == 20
    with pytest.raises(ValueError, match=r"sample_users=21 but only 20 users have a rating with min_history=0"):
        apply_selection(log, sample_users=21)


def test_sample_items_is_seeded_and_exclusive_with_top_items():
    log = random_log()
    assert apply_selection(log, sample_items=10, selection_seed=1).info["id_maps"]["items"] == \
        apply_selection(log, sample_items=10, selection_seed=1).info["id_maps"]["items"]
    with pytest.raises(ValueError, match="exclude each other"):
        Selection(top_items=5, sample_items=5)


def test_min_user_ratings_leaving_no_user_names_the_option_and_counts():
    with pytest.raises(ValueError, match=r"min_user_ratings=100 leaves no user \(20 users before; the most ratings any user has is 15\)"):
        apply_selection(random_log(), min_user_ratings=100)


def test_selection_keys_are_separated_from_protocol_keys():
    protocol, selection = split_options({"threshold": 3.0, "sample_users": 5, "selection_seed": 2})
    assert protocol == {"threshold": 3.0} and selection == Selection(sample_users=5, selection_seed=2)


def test_no_selection_changes_nothing():
    log = random_log()
    assert apply_selection(log).interactions["test"].to_list() == build(log).interactions["test"].to_list()


def test_netflix_samples_users_with_the_seed(tmp_path):
    folder = write_netflix(tmp_path / "nf")
    data = load_netflix(folder, **protocol_free(sample_users=3, selection_seed=1))
    assert len(users_of(data)) == 3 and data.info["selection"]["counts"]["users_eligible"] == NUM_USERS
    assert users_of(data) == users_of(load_netflix(folder, **protocol_free(sample_users=3, selection_seed=1)))


class TestRatingsFile:
    def test_both_ratings_files_present_is_an_error_not_a_silent_choice(self, tmp_path):
        folder = write_movielens_csv(tmp_path / "ml")
        (folder / "ratings.csv").write_text((folder / "ratings_small.csv").read_text())
        with pytest.raises(ValueError, match="both ratings.csv .* and ratings_small.csv exist; name the one"):
            load_movielens_csv(folder, **protocol_free())

    def test_the_named_file_is_read(self, tmp_path):
        folder = write_movielens_csv(tmp_path / "ml")
        (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,5.0,10\n1,2,5.0,20\n1,3,5.0,30\n"
                                            "1,4,5.0,40\n1,5,5.0,50\n1,6,5.0,60\n1,7,5.0,70\n1,8,5.0,80\n2,1,5.0,90\n2,2,5.0,99\n")
        small = load_movielens_csv(folder, ratings_file="ratings_small.csv", **protocol_free())
        assert small.info["source"]["ratings_file"] == "ratings_small.csv"
        assert small.info["source"]["raw_ratings"] == NUM_USERS * NUM_ITEMS
        full = load_movielens_csv(folder, ratings_file="ratings.csv", **protocol_free())
        assert full.info["source"]["raw_ratings"] == 10

    def test_a_missing_named_file_says_so(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="ratings_file .*nope.csv does not exist"):
            load_movielens_csv(write_movielens_csv(tmp_path / "ml"), ratings_file="nope.csv")


@pytest.mark.skipif(not MOVIES_DATASET.is_dir(), reason=f"real data not found at {MOVIES_DATASET} (set USERLLM_SHARED)")
def test_movie_preset_gives_605_users_with_posters_and_long_histories():
    preset = yaml.safe_load(MOVIE_PRESET.read_text())
    with pytest.warns(UserWarning, match="absent from the item table"):
        data = load_movielens_csv(MOVIES_DATASET, **preset)
    statistics = data.info["statistics"]
    assert statistics["#User"] == 605 and statistics["#Poster"] == statistics["#Item"]
    assert data.info["source"]["ratings_file"] == "ratings_small.csv"
    assert statistics["#Test short"] == statistics["#Test"] > statistics["#Test long"] > 0
    long = pd.Series(data.interactions["test_long"]["history_item_ids"]).map(len)
    assert (long == preset["long_history_length"]).all() and preset["long_history_length"] > preset["history_length"]
    assert (pd.Series(data.interactions["test_short"]["history_item_ids"]).map(len) <= preset["history_length"]).all()


def test_presets_only_use_keys_the_builders_know():
    from modeling_userllm.data import Protocol
    from modeling_userllm.data.selection import SELECTION_KEYS

    preset = yaml.safe_load(MOVIE_PRESET.read_text())
    protocol, _ = split_options({key: value for key, value in preset.items() if key != "ratings_file"})
    Protocol.with_overrides({}, protocol)
    assert set(preset) - set(protocol) - {"ratings_file"} <= set(SELECTION_KEYS)


def test_poster_images_for_fixture_are_readable(tmp_path):
    Image.new("RGB", (4, 6)).save(tmp_path / "x.jpg")
    from modeling_userllm.data.parsing import is_readable_image

    assert is_readable_image(tmp_path / "x.jpg") and not is_readable_image(tmp_path / "missing.jpg")


@pytest.mark.skipif(not MOVIES_DATASET.is_dir(), reason=f"real data not found at {MOVIES_DATASET} (set USERLLM_SHARED)")
def test_movie_preset_splits_per_user_so_every_test_user_is_in_train():
    from modeling_userllm.data import split_coverage

    preset = yaml.safe_load(MOVIE_PRESET.read_text())
    assert preset["split"] == "per_user_time"
    with pytest.warns(UserWarning, match="absent from the item table"):
        per_user = load_movielens_csv(MOVIES_DATASET, **preset)
        global_ = load_movielens_csv(MOVIES_DATASET, **{**preset, "split": "global_time"})
    coverage = split_coverage(per_user)
    assert coverage["test_users_not_in_train"] == coverage["valid_users_not_in_train"] == 0
    assert coverage["test_users"] > 500
    # the same rows, histories and labels; only their split differs
    assert per_user.info["statistics"]["#Positive"] == global_.info["statistics"]["#Positive"]
    rows = [sum(len(data.interactions[s]) for s in ("train", "valid", "test")) for data in (per_user, global_)]
    assert rows[0] == rows[1]
    # the global cut: most test users have no training row (why the preset does not use it)
    assert split_coverage(global_)["test_users_not_in_train"] > 0.9 * split_coverage(global_)["test_users"]


def test_every_dataset_preset_names_a_known_split_rule():
    from modeling_userllm.data import SPLIT_RULES

    for preset in sorted(MOVIE_PRESET.parent.glob("*.yaml")):
        values = yaml.safe_load(preset.read_text()) or {}
        if preset.stem in ("collm", "toy"):
            assert "split" not in values, preset  # collm: the published split; toy: the default
        else:
            assert values.get("split") in SPLIT_RULES, preset
