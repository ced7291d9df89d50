"""The demo page (examples/app.py): served on a local port and driven with gradio_client, its
bad-input messages, the candidate pool, the Space folder, and a core package free of gradio."""

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT
from demo import DemoError, DemoSettings, load_demo, recommend
from modeling_userllm import create_model_and_processor
from modeling_userllm.data import RecommendationData
from modeling_userllm.features import FeatureStore
from modeling_userllm.toy_model import build_toy_tokenizer, tiny_llama_config
from modeling_userllm.training import prepare_toy_data

gradio = pytest.importorskip("gradio", reason="the demo page needs gradio: pip install -e '.[demo]' (or '.[dev]')")
gradio_client = pytest.importorskip("gradio_client", reason="driving the page needs gradio_client (in the dev extra)")

APP_SCRIPT = REPO_ROOT / "examples" / "app.py"
SPACE_SCRIPT = REPO_ROOT / "examples" / "push_space.py"
NUM_USERS, NUM_ITEMS = 30, 48


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem + "_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def save_tiny_checkpoint(folder: Path, data: RecommendationData, features: FeatureStore, variant: str,
                         num_items: int | None = None) -> str:
    """An untrained tiny USER-LLM of `variant` over the toy data's words, saved like a training run's."""
    texts = list(data.items["title"]) + [text for text in data.items["description"] if text]
    tokenizer = build_toy_tokenizer(texts)
    torch.manual_seed(0)
    model, processor = create_model_and_processor(
        tokenizer, variant, text_config=tiny_llama_config(len(tokenizer) + 4, hidden_size=32),
        num_users=data.num_users, num_items=num_items or data.num_items, max_item_tokens=8,
        max_history_items=data.info["protocol"]["history_length"],
    )
    if model.config.use_collaborative and num_items is None:
        model.load_collaborative_embeddings(features.user_embeddings, features.item_embeddings)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """A 48-item toy data set (a third of its posters deleted) and tiny USER-LLM and CoLLM checkpoints."""
    root = tmp_path_factory.mktemp("demo")
    data_dir, features_dir = prepare_toy_data(root / "toy", seed=0, num_users=NUM_USERS, num_items=NUM_ITEMS)
    data, features = RecommendationData.load(data_dir), FeatureStore.load(features_dir)
    for path in data.items["poster_path"][::3]:
        if path:
            Path(path).unlink(missing_ok=True)
    return {
        "data": str(data_dir), "features": str(features_dir), "root": root,
        "userllm": save_tiny_checkpoint(root / "userllm", data, features, "userllm"),
        "collm": save_tiny_checkpoint(root / "collm", data, features, "collm"),
        "data_set": data, "feature_store": features,
    }


@pytest.fixture(scope="module")
def settings(demo_files):
    return DemoSettings(model=demo_files["userllm"], compare_model=demo_files["collm"], data=demo_files["data"],
                        features=demo_files["features"])


@pytest.fixture(scope="module")
def loaded(settings):
    return load_demo(settings)


@pytest.fixture(scope="module")
def client(loaded, settings):
    """The page served on a free local port, and a gradio_client connected to it."""
    from demo.page import build_page, launch_page

    recommenders, catalogue = loaded
    page = build_page(recommenders, catalogue, settings)
    url = launch_page(page, port=free_port(), block=False)
    yield gradio_client.Client(url, verbose=False, download_files=False)
    page.close()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def table_rows(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def image_name(gallery_item: dict) -> str:
    image = gallery_item["image"]
    return Path(image["path"] if isinstance(image, dict) else image).name


# ----------------------------------------------------------------------------- the page, driven by a client


def test_page_recommends_five_distinct_unseen_items_ranked_with_posters(client, loaded):
    _, catalogue = loaded
    history = [catalogue.labels[item_id] for item_id in (3, 10, 17)]
    status, gallery, table, other_gallery, other_table = client.predict(history, "", 5, False, api_name="/recommend")

    rows = table_rows(table)
    item_ids = [row["item"] for row in rows]
    assert len(rows) == 5 and len(set(item_ids)) == 5, rows
    assert not set(item_ids) & {3, 10, 17}, "a picked movie was recommended"
    scores = [row["score"] for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert [row["#"] for row in rows] == [1, 2, 3, 4, 5]
    assert len(gallery) == 5
    for row, item in zip(rows, gallery):
        poster = catalogue.posters[row["item"]]
        assert image_name(item) == (poster.name if poster else "no_poster.png")
        assert row["title"] in item["caption"]
    assert "Ranked 45 of the 45 unseen movies" in status
    assert other_gallery == [] and other_table["data"] == []


def test_page_shows_the_placeholder_for_missing_posters(client, loaded):
    _, catalogue = loaded
    history = [catalogue.labels[1]]
    _, gallery, table, _, _ = client.predict(history, "", 47, False, api_name="/recommend")
    names = {image_name(item) for item in gallery}
    assert "no_poster.png" in names and len(names) > 1
    assert len(table_rows(table)) == 47


def test_page_serves_poster_copies_only_never_the_files_beside_them(client, loaded):
    _, catalogue = loaded
    history = [catalogue.labels[1]]
    _, gallery, table, _, _ = client.predict(history, "", 47, False, api_name="/recommend")
    item, row = next((item, row) for item, row in zip(gallery, table_rows(table)) if catalogue.posters[row["item"]])
    poster = catalogue.posters[row["item"]]
    secret = poster.parent / "token.txt"
    secret.write_text("hf_not_a_real_token")
    try:
        base = client.src.rstrip("/")
        assert http_status(item["image"]["url"]) == 200  # the copy the page returned
        assert http_status(f"{base}/gradio_api/file={secret}") == 403
        assert http_status(f"{base}/gradio_api/file={poster}") == 403  # the original: its folder is not allowed
    finally:
        secret.unlink()


def test_a_catalogue_poster_that_is_not_an_image_shows_the_placeholder(tmp_path, demo_files, caplog):
    from demo.page import PosterFolder

    real = next(Path(path) for path in demo_files["data_set"].items["poster_path"] if path and Path(path).is_file())
    text = tmp_path / "token.txt"
    text.write_text("hf_not_a_real_token")
    disguised = tmp_path / "poster.png"
    disguised.write_text("not a png")
    posters = PosterFolder([text, real, None, disguised])
    with caplog.at_level(logging.WARNING, logger="demo.page"):
        served = [Path(posters.path(item_id)) for item_id in range(4)]
    assert served[0] == served[2] == served[3] == posters.placeholder
    assert served[1].parent.parent == posters.folder and served[1].read_bytes() == real.read_bytes()
    assert served[1].name == real.name and posters.path(1) == str(served[1])  # copied once
    assert [record.getMessage().split(":")[0] for record in caplog.records] == ["Item 0", "Item 3"]
    assert sorted(path.name for path in posters.folder.rglob("*") if path.is_file()) == sorted(
        [posters.placeholder.name, real.name])


def test_compare_ranks_the_same_history_with_both_checkpoints(client, loaded):
    recommenders, catalogue = loaded
    history = [catalogue.labels[item_id] for item_id in (3, 10, 17)]
    _, gallery, table, other_gallery, other_table = client.predict(history, "", 5, True, api_name="/recommend")
    first, second = table_rows(table), table_rows(other_table)
    assert len(first) == len(second) == 5 and len(other_gallery) == 5
    assert [recommender.model.config.variant for recommender in recommenders] == ["userllm", "collm"]
    assert [row["score"] for row in first] != [row["score"] for row in second]


def test_starting_from_a_real_user_leaves_out_every_item_they_rated(client, loaded):
    _, catalogue = loaded
    history, status = client.predict("4", api_name="/load_user")
    assert history == [catalogue.labels[item_id] for item_id in catalogue.liked_items(4)] and "user 4" in status
    _, _, table, _, _ = client.predict(history, "4", 5, False, api_name="/recommend")
    recommended = {row["item"] for row in table_rows(table)}
    assert len(recommended) == 5 and not recommended & catalogue.seen_items(4)


@pytest.mark.parametrize(
    "history, user_id, message",
    [
        (["Not A Movie (2042)"], "", "unknown movie 'Not A Movie (2042)'"),
        ([], None, "Pick at least one movie"),
        (["  "], "", "Pick at least one movie"),
        (["Heat"], "x", "must be a whole number"),
    ],
)
def test_bad_queries_show_a_message_not_a_trace(client, history, user_id, message):
    status, gallery, table, _, _ = client.predict(history, user_id, 5, False, api_name="/recommend")
    assert message in status and "Traceback" not in status
    assert gallery == [] and table["data"] == []


def test_an_unknown_or_malformed_user_shows_a_message(client):
    _, status = client.predict("999", api_name="/load_user")
    assert "user 999 does not exist" in status
    _, status = client.predict("four", api_name="/load_user")
    assert "must be a whole number" in status


# ----------------------------------------------------------------------------- ranking without the page


def test_large_catalogue_scores_a_seeded_pool_and_says_so(loaded):
    recommenders, catalogue = loaded
    fractions = []
    ranking = recommend(recommenders[:1], catalogue, [catalogue.labels[0]], top_k=3, max_candidates=10, seed=1,
                        batch_size=4, progress=lambda fraction, _: fractions.append(fraction))
    again = recommend(recommenders[:1], catalogue, [catalogue.labels[0]], top_k=3, max_candidates=10, seed=1)
    assert ranking.num_scored == 10 and ranking.num_unseen == NUM_ITEMS - 1
    assert "candidate pool of 10 of the 47 unseen items" in ranking.notes[0]
    (first,), (second,) = ranking.results.values(), again.results.values()  # batches of 4 vs 64: same pool, same top
    assert [item.item_id for item in first] == [item.item_id for item in second]
    assert [item.score for item in first] == pytest.approx([item.score for item in second], abs=1e-5)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == 3  # 10 in batches of 4
    pool, _ = catalogue.candidate_pool({0}, 10, seed=1)
    most_popular = sorted(range(1, NUM_ITEMS), key=lambda item: (-catalogue.popularity[item], item))[:5]
    assert set(most_popular) <= set(pool)


def test_history_longer_than_the_model_reads_is_noted(loaded):
    recommenders, catalogue = loaded
    ranking = recommend(recommenders[:1], catalogue, catalogue.labels[:7], top_k=2)
    assert "reads the 5 most recent of your 7 picks" in ranking.notes[0]


# ----------------------------------------------------------------------------- start-up errors


def test_a_missing_checkpoint_folder_fails_at_start_up(settings, tmp_path):
    with pytest.raises(DemoError, match="not found: no such folder"):
        load_demo(DemoSettings(**{**settings.__dict__, "model": str(tmp_path / "nothing"), "compare_model": None}))


def test_a_folder_that_is_no_userllm_checkpoint_fails_at_start_up(settings, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(DemoError, match="is not a USER-LLM checkpoint.*'llama'"):
        load_demo(DemoSettings(**{**settings.__dict__, "model": str(tmp_path), "compare_model": None}))
    with pytest.raises(DemoError, match="no config.json"):
        load_demo(DemoSettings(**{**settings.__dict__, "model": str(REPO_ROOT / "docs"), "compare_model": None}))


def test_features_of_the_wrong_size_fail_at_start_up(settings, demo_files, tmp_path):
    store = demo_files["feature_store"]
    FeatureStore(image_features=torch.zeros(NUM_ITEMS, 100), image_mask=store.image_mask,
                 user_embeddings=store.user_embeddings, item_embeddings=store.item_embeddings).save(tmp_path / "f")
    with pytest.raises(DemoError, match=r"image features have shape \(48, 100\), expected \(48, 384\)"):
        load_demo(DemoSettings(**{**settings.__dict__, "features": str(tmp_path / "f"), "compare_model": None}))


def test_a_data_set_of_another_size_than_the_checkpoint_fails_at_start_up(settings, demo_files, tmp_path):
    other = save_tiny_checkpoint(tmp_path / "other", demo_files["data_set"], demo_files["feature_store"], "collm",
                                 num_items=NUM_ITEMS + 5)
    with pytest.raises(DemoError, match="trained on 53 items and 30 users, but the data set .* has 48 items"):
        load_demo(DemoSettings(**{**settings.__dict__, "model": other, "compare_model": None}))


def test_app_script_prints_an_error_not_a_trace(demo_files, tmp_path, monkeypatch, capsys):
    app = load_script(APP_SCRIPT)
    with pytest.raises(SystemExit, match=r"^error: checkpoint .*nothing not found"):
        app.main(["--model", str(tmp_path / "nothing"), "--data", demo_files["data"]])
    monkeypatch.chdir(tmp_path)  # no outputs/demo here
    with pytest.raises(SystemExit, match=r"embedded demo's outputs are missing.*python examples/train\.py"):
        app.main([])


def test_model_without_data_reads_them_from_the_run_config(demo_files, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model").symlink_to(demo_files["userllm"], target_is_directory=True)
    (run / "run_config.json").write_text(json.dumps({"data": {"data_dir": demo_files["data"],
                                                              "features_dir": demo_files["features"]}}))
    recommenders, catalogue = load_demo(DemoSettings(model=str(run / "model")))
    assert catalogue.num_items == NUM_ITEMS and len(recommenders) == 1


# ----------------------------------------------------------------------------- packaging


def test_the_library_imports_neither_gradio_nor_the_demo_app_nor_the_experiments_harness():
    """Every module of the package imports without pulling gradio, the demo app or the experiments harness in (the
    wheel ships neither); the app's modules but the page import without gradio."""
    code = """
import importlib, pkgutil, sys
import modeling_userllm
for module in pkgutil.walk_packages(modeling_userllm.__path__, "modeling_userllm."):
    # A `__main__` module is a program (`python -m`): importing it runs it.
    if not module.name.endswith(".__main__"):
        importlib.import_module(module.name)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("demo", "experiments", "gradio", "gradio_client")))
import demo.recommender, demo.space
print(sorted(name for name in sys.modules if name.split(".")[0] in ("gradio", "gradio_client")))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-2:] == ["[]", "[]"], result.stdout[-3000:]


def test_space_dry_run_writes_a_gradio_space_that_serves_the_demo(demo_files, tmp_path, monkeypatch):
    out = tmp_path / "space"
    monkeypatch.setattr(sys, "argv", [
        "push_space.py", "--model", demo_files["userllm"], "--data", demo_files["data"], "--features",
        demo_files["features"], "--space-id", "ORG/userllm-demo", "--dry-run", str(out),
    ])
    assert load_script(SPACE_SCRIPT).main() == 0
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\n") and "\nsdk: gradio\n" in readme and "app_file: app.py" in readme
    assert "gradio" in (out / "requirements.txt").read_text()
    for path in ("app.py", "demo/page.py", "modeling_userllm/modeling_userllm.py", "model/config.json", "data/info.json",
                 "features/collaborative.safetensors"):
        assert (out / path).is_file(), path
    posters = {path.name for path in (out / "posters").iterdir()}
    assert posters and all(name.endswith(".png") for name in posters)
    # The Space's app loads from its own folder: the data's recorded poster paths point elsewhere.
    recommenders, catalogue = load_demo(DemoSettings(model=str(out / "model"), data=str(out / "data"),
                                                     features=str(out / "features")))
    assert {path.parent for path in catalogue.posters if path} == {out / "posters"}
    # Run from its folder as a Space runs it, app.py builds the page from the copies of demo/ and the package.
    probe = ("import runpy, demo.page, modeling_userllm; page = runpy.run_path('app.py')['demo']; "
             "print(type(page).__name__, demo.page.__file__, modeling_userllm.__file__)")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=out, capture_output=True, text=True, timeout=300,
                            env={**env, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-3:] == ["Blocks", str(out / "demo" / "page.py"),
                                          str(out / "modeling_userllm" / "__init__.py")], result.stdout[-3000:]
