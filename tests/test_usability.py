"""What a new user meets first: command-line errors, help, and error messages about paths."""

import json
import warnings

import pytest

from modeling_userllm import UserLLMConfig, UserLLMForRecommendation, check_userllm_checkpoint
from modeling_userllm.training import parse_arguments
from modeling_userllm.training.arguments import STEP_SETTINGS


def test_misspelt_flag_is_a_usage_error_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(["--varaint", "collm"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "unrecognized arguments: --varaint (did you mean '--variant'?)" in error
    assert "Traceback" not in error and len(error.splitlines()) <= 3


def test_help_shows_preset_and_step_flags_first_and_marks_the_ignored_generic_ones(capsys):
    with pytest.raises(SystemExit):
        parse_arguments(["--help"])
    text = capsys.readouterr().out
    assert text.index("--preset") < text.index("--step1_learning_rate") < text.index("--variant") < text.index("--output_dir")
    for name in STEP_SETTINGS:
        option = text.index(f"\n  --{name} ")
        assert "IGNORED" in text[option : option + 300], name
    assert "OUTPUT/toy/data" in text and "OUTPUT/toy/features" in text


@pytest.mark.parametrize("path", ["outputs/nowhere/model", "./model", "/no/such/folder"])
def test_missing_local_folder_says_no_such_folder(path):
    for load in (UserLLMConfig.from_pretrained, UserLLMForRecommendation.from_pretrained):
        with pytest.raises(OSError, match="no such folder"):
            load(path)


def test_a_file_or_a_folder_without_config_json_is_no_checkpoint(tmp_path, monkeypatch):
    with pytest.raises(OSError, match="is not a model checkpoint: the folder has no config.json"):
        check_userllm_checkpoint(tmp_path)
    with pytest.raises(OSError, match="is not a model checkpoint: the folder has no config.json"):
        UserLLMConfig.from_pretrained(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    monkeypatch.chdir(tmp_path)  # a bare file name, which could read as a Hub id
    with pytest.raises(OSError, match=r"^weights.bin: a file, not the checkpoint folder"):
        check_userllm_checkpoint("weights.bin")


# ----------------------------------------------------------------------------- the scripts' messages

def load_example(name: str):
    import importlib.util

    from conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluate_names_a_missing_model_folder_and_the_folder_a_relative_path_starts_from(tmp_path, monkeypatch):
    evaluate = load_example("evaluate")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--model", "outputs/demo/model", "--data", "outputs/demo/toy/data"])
    message = str(exit_info.value.code)
    assert message.startswith("error: checkpoint outputs/demo/model") and "no such folder" in message, message
    assert f"relative to the current folder {tmp_path}" in message, message
    with pytest.raises(SystemExit, match=r"^error: checkpoint /no/such/model not found: no such folder"):
        evaluate.main(["--model", "/no/such/model", "--data", "outputs/demo/toy/data"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"^error: empty is not a model checkpoint: the folder has no config.json"):
        evaluate.main(["--model", "empty", "--data", "outputs/demo/toy/data"])


@pytest.mark.parametrize("dataset, needed", [
    ("ml-100k", ["u.data", "u.item", "grouplens.org"]),
    ("movielens-csv", ["ratings_small.csv", "movies.csv", "kaggle.com/datasets/rounakbanik/the-movies-dataset"]),
    ("netflix", ["combined_data_*.txt", "movie_titles.csv", "kaggle.com/datasets/netflix-inc/netflix-prize-data"]),
    ("collm", ["train.parquet", "valid.parquet", "test.parquet", "github.com/zyang1580/CoLLM"]),
])
def test_prepare_data_on_a_folder_without_the_raw_files_names_them_and_where_the_data_comes_from(dataset, needed, tmp_path):
    prepare_data = load_example("prepare_data")
    (tmp_path / "downloads").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        prepare_data.main(["--dataset", dataset, "--data-dir", str(tmp_path / "downloads"), "--output", str(tmp_path / "out")])
    message = str(exit_info.value.code)
    assert message.startswith(f"error: {tmp_path / 'downloads'}: no "), message
    for text in needed:
        assert text in message, (text, message)
    assert not (tmp_path / "out").exists()


def test_evaluate_without_data_reads_them_from_the_run_config(demo_run, tmp_path, monkeypatch, capsys):
    """From another folder, with the model's absolute path: the run's relative data paths are found."""
    evaluate = load_example("evaluate")
    monkeypatch.chdir(tmp_path)
    model = demo_run.output_dir / "model"
    common = ["--model", str(model), "--split", "valid", "--max-rows", "24"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = evaluate.main([*common, "--output", str(tmp_path / "found.json")])
    assert f"data: {demo_run.output_dir / 'toy' / 'data'}" in capsys.readouterr().out
    assert not [w for w in caught if "pin_memory" in str(w.message)]  # no pinned memory without an accelerator
    given = evaluate.main([*common, "--output", str(tmp_path / "given.json"), "--data", str(demo_run.output_dir / "toy" / "data"),
                           "--features", str(demo_run.output_dir / "toy" / "features")])
    assert found["valid"]["rows"] > 0 and found["valid"] == given["valid"]


def test_evaluate_writes_each_rows_score_for_a_paired_comparison_with_the_mf_tables(demo_run, tmp_path):
    from modeling_userllm.metrics import auc_and_uauc

    evaluate, compare = load_example("evaluate"), load_example("paired_comparison")
    predictions = tmp_path / "predictions.json"
    metrics = evaluate.main(["--model", str(demo_run.output_dir / "model"), "--split", "valid", "--max-rows", "48",
                             "--output", str(tmp_path / "metrics.json"), "--predictions", str(predictions)])
    rows = json.loads(predictions.read_text())["valid"]
    assert len(rows["score"]) == metrics["valid"]["rows"] == len(rows["user_id"])
    assert auc_and_uauc(rows["user_id"], rows["label"], rows["score"]) == pytest.approx(
        {name: metrics["valid"][name] for name in ("auc", "uauc")})
    features = demo_run.output_dir / "toy" / "features"
    against_mf = compare.main(["--predictions", str(predictions), "--split", "valid", "--against-mf-tables", str(features),
                               "--resamples", "50"])
    assert against_mf["auc"]["a"] == pytest.approx(metrics["valid"]["auc"]) and against_mf["rows"] == len(rows["score"])
    itself = compare.main(["--predictions", str(predictions), "--split", "valid", "--against", str(predictions),
                           "--resamples", "20"])
    assert itself["auc"]["difference"] == 0 and itself["uauc"]["ci95"] == [0.0, 0.0]
    with pytest.raises(SystemExit, match="holds no split 'test'"):
        compare.main(["--predictions", str(predictions), "--split", "test", "--against", str(predictions)])


def test_train_script_and_demo_page_rank_the_same_unseen_items(demo_run):
    import re

    from demo import DemoSettings, load_demo, recommend

    match = re.search(r"Top-5 of (\d+) unseen items for user (\d+)", demo_run.stdout)
    assert match, demo_run.stdout[-2000:]
    num_unseen, user_id = int(match[1]), int(match[2])
    recommenders, catalogue = load_demo(DemoSettings(model=str(demo_run.output_dir / "model")))
    history = [catalogue.labels[item_id] for item_id in catalogue.liked_items(user_id)]
    ranking = recommend(recommenders, catalogue, history, user_id=user_id, top_k=5)
    assert (ranking.num_unseen, ranking.num_scored) == (num_unseen, num_unseen)
    assert num_unseen < catalogue.num_items - len(history)
