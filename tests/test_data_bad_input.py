"""Bad data files get a located error or a counted warning, never a silent wrong result (issue 18)."""

import warnings

import pytest
from PIL import Image
from test_data_builders import (
    NUM_ITEMS,
    NUM_USERS,
    fixture_ratings,
    protocol_free,
    write_ml100k,
    write_movielens_csv,
    write_netflix,
)

from modeling_userllm.data import load_movielens_100k, load_movielens_csv, load_netflix

RATINGS_HEADER = "userId,movieId,rating,timestamp"


def rows_of(data):
    """Every (raw user, raw item, rating, timestamp) of train/valid/test, sorted."""
    users, items = data.info["id_maps"]["users"], data.info["id_maps"]["items"]
    rows = []
    for split in ("train", "valid", "test"):
        for row in data.interactions[split].to_list():
            rows.append((users[row["user_id"]], items[row["item_id"]], row["rating"], row["timestamp"]))
    return sorted(rows)


def csv_ratings(order, header=True):
    """The fixture ratings as CSV with the columns in `order`."""
    values = [
        {"userId": u, "movieId": i, "rating": r / 2 + 0.5, "timestamp": t} for u, i, r, t in fixture_ratings()
    ]
    lines = [",".join(order)] if header else []
    lines += [",".join(str(row[column]) for column in order) for row in values]
    return "\n".join(lines) + "\n"


class TestRatingScale:
    def test_ml100k_rating_99_is_a_located_error(self, tmp_path):
        ratings = fixture_ratings()
        ratings[4] = (ratings[4][0], ratings[4][1], 99, ratings[4][3])
        folder = write_ml100k(tmp_path / "ml", ratings=ratings)
        with pytest.raises(ValueError, match=r"u\.data: line 5: rating 99 is outside the data set's scale 1-5"):
            load_movielens_100k(folder, **protocol_free())

    def test_csv_rating_30_is_a_located_error(self, tmp_path):
        folder = write_movielens_csv(tmp_path / "ml")
        with (folder / "ratings_small.csv").open("a") as file:
            file.write("7,1,30,5000\n")
        line = NUM_USERS * NUM_ITEMS + 2
        with pytest.raises(ValueError, match=rf"ratings_small\.csv: line {line}: rating 30 is outside .* 0\.5-5 in steps of 0\.5"):
            load_movielens_csv(folder, **protocol_free())

    def test_csv_rating_off_the_half_star_grid_is_an_error(self, tmp_path):
        folder = write_movielens_csv(tmp_path / "ml")
        with (folder / "ratings_small.csv").open("a") as file:
            file.write("7,1,3.2,5000\n")
        with pytest.raises(ValueError, match="rating 3.2 is outside"):
            load_movielens_csv(folder, **protocol_free())


class TestRatingsCsvColumns:
    def test_columns_in_another_order_are_read_by_name(self, tmp_path):
        normal = load_movielens_csv(write_movielens_csv(tmp_path / "a"), **protocol_free())
        folder = write_movielens_csv(tmp_path / "b")
        (folder / "ratings_small.csv").write_text(csv_ratings(["movieId", "timestamp", "rating", "userId"]))
        assert rows_of(load_movielens_csv(folder, **protocol_free())) == rows_of(normal)

    def test_a_file_without_header_is_refused_not_shortened(self, tmp_path):
        folder = write_movielens_csv(tmp_path / "ml")
        (folder / "ratings_small.csv").write_text(csv_ratings(list(RATINGS_HEADER.split(",")), header=False))
        with pytest.raises(ValueError, match=r"ratings_small\.csv: line 1: has no header line .*userId,movieId,rating,timestamp"):
            load_movielens_csv(folder, **protocol_free())

    def test_a_header_missing_a_column_names_it(self, tmp_path):
        folder = write_movielens_csv(tmp_path / "ml")
        (folder / "ratings_small.csv").write_text("userId,itemId,rating,timestamp\n1,1,4.0,10\n")
        with pytest.raises(ValueError, match=r"header lacks the columns \['movieId'\]"):
            load_movielens_csv(folder, **protocol_free())


class TestEmptyFiles:
    def test_empty_u_data_names_the_file(self, tmp_path):
        folder = write_ml100k(tmp_path / "ml")
        (folder / "u.data").write_text("")
        with pytest.raises(ValueError, match=r"u\.data: the file is empty"):
            load_movielens_100k(folder)

    def test_empty_ratings_csv_names_the_file(self, tmp_path):
        folder = write_movielens_csv(tmp_path / "ml")
        (folder / "ratings_small.csv").write_text("")
        with pytest.raises(ValueError, match=r"ratings_small\.csv: the file is empty"):
            load_movielens_csv(folder)

    def test_header_only_ratings_csv_says_so(self, tmp_path):
        folder = write_movielens_csv(tmp_path / "ml")
        (folder / "ratings_small.csv").write_text(RATINGS_HEADER + "\n")
        with pytest.raises(ValueError, match=r"ratings_small\.csv: the file holds only its header line"):
            load_movielens_csv(folder)

    def test_empty_netflix_file_names_the_file(self, tmp_path):
        folder = write_netflix(tmp_path / "nf")
        (folder / "combined_data_1.txt").write_text("\n")
        with pytest.raises(ValueError, match=r"combined_data_1\.txt: the file is empty"):
            load_netflix(folder)


def test_netflix_movie_line_with_trailing_space_is_accepted(tmp_path):
    folder = write_netflix(tmp_path / "nf")
    expected = rows_of(load_netflix(folder, **protocol_free()))
    path = folder / "combined_data_1.txt"
    path.write_text(path.read_text().replace("1:\n", "1: \n", 1))
    assert rows_of(load_netflix(folder, **protocol_free())) == expected


class TestDuplicateItemIds:
    def test_u_item_duplicate_names_both_lines(self, tmp_path):
        folder = write_ml100k(tmp_path / "ml")
        lines = (folder / "u.item").read_bytes().splitlines()
        (folder / "u.item").write_bytes(b"\n".join(lines + [lines[2].replace(b"Film 3", b"Other")]) + b"\n")
        with pytest.raises(ValueError, match=rf"u\.item: movie id 3 appears on lines 3 and {NUM_ITEMS + 1}"):
            load_movielens_100k(folder, **protocol_free())

    def test_movie_titles_duplicate_names_both_lines(self, tmp_path):
        folder = write_netflix(tmp_path / "nf")
        with (folder / "movie_titles.csv").open("a") as file:
            file.write("2,2001,Another\n")
        with pytest.raises(ValueError, match=rf"movie_titles\.csv: MovieID 2 appears on lines 2 and {NUM_ITEMS + 1}"):
            load_netflix(folder, **protocol_free())

    def test_movies_csv_duplicate_names_both_lines(self, tmp_path):
        folder = write_movielens_csv(tmp_path / "ml")
        with (folder / "movies.csv").open("a") as file:
            file.write('4,"Film 4, Again (2000)",Drama\n')
        with pytest.raises(ValueError, match=rf"movies\.csv: movieId 4 appears on lines 5 and {NUM_ITEMS + 2}"):
            load_movielens_csv(folder, **protocol_free())


def test_corrupt_posters_are_named_and_not_counted(tmp_path):
    folder = write_ml100k(tmp_path / "ml", posters=(1, 2, 3))
    (folder / "posters" / "2.jpg").write_bytes(b"not an image at all")
    Image.new("RGB", (40, 60)).save(folder / "posters" / "3.jpg")
    (folder / "posters" / "3.jpg").write_bytes((folder / "posters" / "3.jpg").read_bytes()[:200])  # truncated
    with pytest.warns(UserWarning, match=r"2 poster files cannot be read as images .*: 2\.jpg, 3\.jpg"):
        data = load_movielens_100k(folder, **protocol_free())
    assert data.items[0]["poster_path"].endswith("1.jpg")
    assert data.items[1]["poster_path"] is None and data.items[2]["poster_path"] is None
    assert data.info["statistics"]["#Poster"] == 1


def test_good_files_raise_no_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_movielens_100k(write_ml100k(tmp_path / "ml"), **protocol_free())
