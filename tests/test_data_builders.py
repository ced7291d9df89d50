"""Every raw format on fixture files written here, including each bad-input case."""

import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from modeling_userllm.data import (
    download_movielens_100k,
    load_collm,
    load_dataset_by_name,
    load_movielens_100k,
    load_movielens_csv,
    load_netflix,
)

NUM_USERS, NUM_ITEMS = 6, 8


def fixture_ratings(seed=0):
    """(user, item, rating, timestamp) tuples: every user rates every item once."""
    rng = np.random.default_rng(seed)
    return [
        (user, item, int(rng.integers(1, 6)), 1000 + 10 * item + user)
        for user in range(1, NUM_USERS + 1)
        for item in range(1, NUM_ITEMS + 1)
    ]


def write_ml100k(folder, ratings=None, posters=(1, 2, 3)):
    folder.mkdir(exist_ok=True)
    ratings = ratings or fixture_ratings()
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    flags = "|".join(["0"] * 19)
    lines = [f"{i}|Film {i} (1995)|01-Jan-1995||http://x|{flags}" for i in range(1, NUM_ITEMS + 1)]
    lines[0] = f"1|Amélie (2001)|01-Jan-2001||http://x|{flags}"
    (folder / "u.item").write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    (folder / "posters").mkdir(exist_ok=True)
    for item in posters:
        Image.new("RGB", (4, 6)).save(folder / "posters" / f"{item}.jpg")
    (folder / "tmdb_overviews.csv").write_text(
        'movie_id,title,overview\n1,Amélie,""\n1,Amélie,"A shy waitress, in Paris."\n1,Amélie,Second copy\n2,Film 2,Plot two\n'
    )
    return folder


def protocol_free(**extra):
    """No history filter; every test row with an earlier positive is in test_long."""
    return {"min_history": 0, "long_min_history": 1, "long_history_length": 20, **extra}


class TestMovieLens100K:
    def test_reads_ratings_titles_posters_and_overviews(self, tmp_path):
        data = load_movielens_100k(write_ml100k(tmp_path / "ml"), **protocol_free())
        assert data.num_users == NUM_USERS and data.num_items == NUM_ITEMS
        assert sum(len(data.interactions[s]) for s in ("train", "valid", "test")) == NUM_USERS * NUM_ITEMS
        assert data.items[0]["title"] == "Amélie (2001)"
        assert data.items[0]["description"] == "A shy waitress, in Paris."
        assert data.items[2]["description"] is None
        assert data.items[0]["poster_path"].endswith("posters/1.jpg")
        assert data.items[5]["poster_path"] is None
        assert data.info["source"]["missing_posters"] == NUM_ITEMS - 3
        assert data.info["statistics"]["#Poster"] == 3

    def test_malformed_line_names_file_line_and_text(self, tmp_path):
        folder = write_ml100k(tmp_path / "ml")
        lines = (folder / "u.data").read_text().splitlines()
        lines[4] = "3\t4\tfive\t1234"
        (folder / "u.data").write_text("\n".join(lines) + "\n")
        with pytest.raises(ValueError, match=r"u\.data: line 5: bad rating 'five'.*3\\t4\\tfive"):
            load_movielens_100k(folder)

    def test_missing_field_is_malformed(self, tmp_path):
        folder = write_ml100k(tmp_path / "ml")
        with (folder / "u.data").open("a") as file:
            file.write("1\t2\t3\n")
        with pytest.raises(ValueError, match=rf"line {NUM_USERS * NUM_ITEMS + 1}: expected 4 fields"):
            load_movielens_100k(folder)

    def test_extra_field_on_first_line_is_malformed(self, tmp_path):
        folder = write_ml100k(tmp_path / "ml")
        text = (folder / "u.data").read_text()
        (folder / "u.data").write_text("1\t2\t3\t4\t5\n" + text)
        with pytest.raises(ValueError, match="line 1: expected 4 fields"):
            load_movielens_100k(folder)

    def test_non_utf8_ratings_are_not_read_as_latin1(self, tmp_path):
        folder = write_ml100k(tmp_path / "ml")
        with (folder / "u.data").open("ab") as file:
            file.write(b"1\t2\t\xe9\t4\n")
        with pytest.raises(ValueError, match="not valid UTF-8"):
            load_movielens_100k(folder)

    def test_bad_u_item_line_is_reported(self, tmp_path):
        folder = write_ml100k(tmp_path / "ml")
        with (folder / "u.item").open("a") as file:
            file.write("x|Broken\n")
        with pytest.raises(ValueError, match=rf"u\.item: line {NUM_ITEMS + 1}: .*'x\|Broken'"):
            load_movielens_100k(folder)

    def test_duplicates_keep_latest_with_counted_warning(self, tmp_path):
        ratings = fixture_ratings() + [(1, 1, 5, 99999), (2, 2, 1, 99999)]
        folder = write_ml100k(tmp_path / "ml", ratings=ratings)
        with pytest.warns(UserWarning, match="2 duplicate"):
            data = load_movielens_100k(folder, **protocol_free())
        test = data.interactions["test"].to_pandas()
        assert set(test[test.timestamp == 99999].rating) == {5.0, 1.0}

    def test_filter_leaving_nothing_raises(self, tmp_path):
        with pytest.raises(ValueError, match="no interaction has min_history"):
            load_movielens_100k(write_ml100k(tmp_path / "ml"), min_history=NUM_ITEMS)

    def test_download_reads_a_file_url_once(self, tmp_path):
        source = write_ml100k(tmp_path / "ml")
        archive = tmp_path / "ml-100k.zip"
        with zipfile.ZipFile(archive, "w") as zipped:
            for path in source.rglob("*"):
                zipped.write(path, "ml-100k/" + str(path.relative_to(source)))
        folder = download_movielens_100k(archive.as_uri(), cache_dir=tmp_path / "cache")
        assert (folder / "u.data").read_text() == (source / "u.data").read_text()
        archive.unlink()
        assert download_movielens_100k(archive.as_uri(), cache_dir=tmp_path / "cache") == folder
        assert load_movielens_100k(folder, **protocol_free()).num_items == NUM_ITEMS


def write_movielens_csv(folder, metadata=False):
    folder.mkdir(exist_ok=True)
    rows = "".join(f"{u},{i},{r / 2 + 0.5},{t}\n" for u, i, r, t in fixture_ratings())
    (folder / "ratings_small.csv").write_text("userId,movieId,rating,timestamp\n" + rows)
    if metadata:
        (folder / "links.csv").write_text(
            "movieId,imdbId,tmdbId\n" + "".join(f"{i},{100 + i},{200 + i}\n" for i in range(1, NUM_ITEMS + 1))
        )
        body = "".join(f'{200 + i},"Movie, {i}","Plot {i}",/p{i}.jpg\n' for i in range(1, NUM_ITEMS))
        (folder / "movies_metadata.csv").write_text("id,title,overview,poster_path\n" + body + "1997-08-20,x,y,z\n")
        (folder / "posters").mkdir()
        Image.new("RGB", (4, 6)).save(folder / "posters" / "p2.jpg")
    else:
        (folder / "movies.csv").write_text(
            "movieId,title,genres\n" + "".join(f'{i},"Film {i}, The (1999)",Drama\n' for i in range(1, NUM_ITEMS + 1))
        )
    return folder


class TestMovieLensCSV:
    def test_reads_movies_csv_with_half_star_threshold(self, tmp_path):
        data = load_movielens_csv(write_movielens_csv(tmp_path / "ml"), **protocol_free())
        assert data.items[0]["title"] == "Film 1, The (1999)"
        assert data.info["protocol"]["threshold"] == 2.5
        rows = data.interactions["train"].to_pandas()
        assert ((rows.rating >= 2.5).astype(int) == rows.label).all()

    def test_reads_links_and_tmdb_metadata(self, tmp_path):
        with pytest.warns(UserWarning, match=f"dropped {NUM_USERS} ratings"):
            data = load_movielens_csv(write_movielens_csv(tmp_path / "ml", metadata=True), **protocol_free())
        assert data.num_items == NUM_ITEMS - 1  # movie 8 has no metadata: its ratings are dropped
        assert data.items[1]["title"] == "Movie, 2" and data.items[1]["description"] == "Plot 2"
        assert data.items[1]["poster_path"].endswith("p2.jpg") and data.items[0]["poster_path"] is None
        assert data.info["source"]["metadata_rows_skipped"] == 1

    def test_malformed_rating_line(self, tmp_path):
        folder = write_movielens_csv(tmp_path / "ml")
        with (folder / "ratings_small.csv").open("a") as file:
            file.write("7,1,4.0,notatime\n")
        with pytest.raises(ValueError, match=rf"ratings_small\.csv: line {NUM_USERS * NUM_ITEMS + 2}: bad timestamp"):
            load_movielens_csv(folder)


def write_netflix(folder, extra_line=None):
    folder.mkdir(exist_ok=True)
    lines = []
    for item in range(1, NUM_ITEMS + 1):
        lines.append(f"{item}:")
        for user, rated, rating, timestamp in fixture_ratings():
            if rated == item:
                day = pd.Timestamp(timestamp * 86400, unit="s").strftime("%Y-%m-%d")
                lines.append(f"{user * 1000},{rating},{day}")
    if extra_line:
        lines.insert(3, extra_line)
    (folder / "combined_data_1.txt").write_text("\n".join(lines) + "\n")
    titles = [f"{i},{1990 + i},Film {i}" for i in range(1, NUM_ITEMS + 1)]
    titles[0] = "1,NULL,Café, Society"
    (folder / "movie_titles.csv").write_bytes("\n".join(titles).encode("latin-1") + b"\n")
    return folder


class TestNetflix:
    def test_reads_blocks_dates_and_latin1_titles(self, tmp_path):
        data = load_netflix(write_netflix(tmp_path / "nf"), **protocol_free())
        assert data.items[0]["title"] == "Café, Society"
        assert data.items[1]["title"] == "Film 2 (1992)"
        assert data.info["id_maps"]["users"][0] == "1000"
        rows = data.interactions["train"].to_pandas()
        assert (rows.timestamp % 86400 == 0).all()
        assert data.info["protocol"]["min_history"] == 0 and data.info["protocol"]["history_length"] == 10

    def test_malformed_line(self, tmp_path):
        folder = write_netflix(tmp_path / "nf", extra_line="1000,9,2005-01-01")
        with pytest.raises(ValueError, match=r"combined_data_1\.txt: line 4: bad Rating '9'"):
            load_netflix(folder)

    def test_bad_title_line(self, tmp_path):
        folder = write_netflix(tmp_path / "nf")
        with (folder / "movie_titles.csv").open("a") as file:
            file.write("9,19x9,Bad\n")
        with pytest.raises(ValueError, match=rf"line {NUM_ITEMS + 1}: bad YearOfRelease"):
            load_netflix(folder)


def write_collm(folder):
    folder.mkdir()
    for name, users in {"train": [1, 2], "valid": [2, 3], "test": [3, 5]}.items():
        pd.DataFrame(
            {
                "uid": users,
                "iid": [10, 20],
                "label": [1, 0],
                "timestamp": [100, 200],
                "his": [np.array([0, 0, 20]), np.array([0, 30, 10, 20])],
                "his_title": [np.array(["", "", "B"]), np.array(["", "C", "A", "B"])],
                "title": ["A", "B"],
                "flag": [0.0, 0.0],
                "not_cold": [1, 1],
            }
        ).to_parquet(folder / f"{name}.parquet")
    return folder


class TestCoLLM:
    def test_keeps_split_maps_ids_and_strips_padding(self, tmp_path):
        data = load_collm(write_collm(tmp_path / "collm"), history_length=2, long_min_history=3, long_history_length=3)
        assert [len(data.interactions[s]) for s in ("train", "valid", "test")] == [2, 2, 2]
        assert data.info["id_maps"] == {"users": ["1", "2", "3", "5"], "items": ["10", "20", "30"]}
        assert data.items["title"] == ["A", "B", "C"]
        row = data.interactions["test"][1]
        assert row["user_id"] == 3 and row["history_item_ids"] == [0, 1]
        assert data.interactions["train"][0]["history_item_ids"] == [1]
        # test_long: the row with 3 published history items, given all 3
        assert [row["history_item_ids"] for row in data.interactions["test_long"]] == [[2, 0, 1]]

    def test_history_length_none_keeps_published_histories(self, tmp_path):
        data = load_collm(write_collm(tmp_path / "collm"), history_length=None, long_min_history=3)
        assert data.interactions["test"][1]["history_item_ids"] == [2, 0, 1]


def test_load_dataset_by_name_dispatches_and_rejects_unknown(tmp_path):
    data = load_dataset_by_name("ml-100k", write_ml100k(tmp_path / "ml"), **protocol_free(min_history=1))
    assert data.name == "ml-100k" and data.info["protocol"]["min_history"] == 1
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset_by_name("ml-20m", tmp_path)


@pytest.mark.parametrize("name, write", [
    ("ml-100k", write_ml100k), ("movielens-csv", write_movielens_csv), ("netflix", write_netflix),
])
def test_builders_take_the_split_rule_record_it_and_refuse_unknown_ones(tmp_path, name, write):
    folder = write(tmp_path / name)
    per_user = load_dataset_by_name(name, folder, **protocol_free(split="per_user_time"))
    assert per_user.info["protocol"]["split"] == "per_user_time"
    splits = {s: set(per_user.interactions[s]["user_id"]) for s in ("train", "valid", "test")}
    assert splits["test"] and splits["valid"] | splits["test"] <= splits["train"]
    assert load_dataset_by_name(name, folder, **protocol_free()).info["protocol"]["split"] == "global_time"
    with pytest.raises(ValueError, match=r"split must be one of \['global_time', 'per_user_time'\], got 'per-user'"):
        load_dataset_by_name(name, folder, **protocol_free(split="per-user"))


def test_collm_keeps_its_published_split_and_refuses_a_split_rule(tmp_path):
    folder = write_collm(tmp_path / "collm")
    with pytest.raises(ValueError, match="collm keeps CoLLM's published .*split='per_user_time' cannot apply"):
        load_dataset_by_name("collm", folder, split="per_user_time")


def test_prepare_data_prints_the_split_in_its_table_2_and_records_it(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "prepare_data.py"
    folder, output = write_ml100k(tmp_path / "ml"), tmp_path / "out"
    command = [sys.executable, str(script), "--dataset", "ml-100k", "--data-dir", str(folder), "--output", str(output),
               "--min-history", "0", "--long-min-history", "1", "--long-history-length", "20"]
    done = subprocess.run([*command, "--split", "per_user_time"], capture_output=True, text=True, check=True)
    assert "ml-100k (ours, split per_user_time)" in done.stdout
    assert "split: per_user_time; users with no train row: 0 of" in done.stdout
    assert json.loads((output / "info.json").read_text())["protocol"]["split"] == "per_user_time"
    refused = subprocess.run([*command, "--split", "random"], capture_output=True, text=True)
    assert refused.returncode != 0 and "invalid choice: 'random'" in refused.stderr
