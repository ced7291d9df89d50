"""The experiment grid: report tables from a results.json fixture, and the run cache."""

from __future__ import annotations

import json

import pytest

from experiments import (
    ExperimentRunner,
    Statistic,
    aggregate,
    build_report,
    features_fingerprint,
    make_plots,
    missing_runs,
    relative_improvement,
    results_document,
)
from experiments.report import table3, table4, table5


def _run(data, system, seed, auc, uauc, short=None, long=None, status="ok"):
    metrics = {"valid": {"auc": auc, "uauc": uauc}, "test": {"auc": auc, "uauc": uauc}}
    if short is not None:
        metrics["test_short"] = {"auc": short, "uauc": short}
        metrics["test_long"] = {"auc": long, "uauc": long}
    record = {"data": data, "system": system, "seed": seed, "status": status, "config_hash": "abc"}
    if status == "ok":
        record["metrics"] = metrics
    else:
        record["error"] = "RuntimeError: boom"
    return record


@pytest.fixture
def results():
    """MF (3 seeds), CoLLM-VA and USER-LLM (2 seeds), a failed TALLRec, SASRec never run."""
    runs = [
        _run("collm", "mf", 0, 0.60, 0.50),
        _run("collm", "mf", 1, 0.62, 0.52),
        _run("collm", "mf", 2, 0.64, 0.54),
        _run("collm", "collm_va", 0, 0.70, 0.60, short=0.70, long=0.68),
        _run("collm", "collm_va", 1, 0.70, 0.60, short=0.72, long=0.70),
        _run("collm", "userllm", 0, 0.75, 0.63, short=0.74, long=0.77),
        _run("collm", "userllm", 1, 0.77, 0.63, short=0.76, long=0.79),
        _run("collm", "tallrec", 0, None, None, status="failed"),
    ]
    return {
        "grid": {"data": ["collm"], "systems": ["mf", "sasrec", "tallrec", "collm_va", "userllm"], "seeds": [0, 1, 2]},
        "runs": runs,
    }


def _row(lines, label):
    rows = [line for line in lines if line.startswith(f"| {label} |")]
    assert len(rows) == 1, lines
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_statistic_is_mean_and_sample_std():
    assert Statistic([0.60, 0.62, 0.64]).format() == "0.6200 ± 0.0200"
    assert Statistic([0.7]).format() == "0.7000"
    assert Statistic([]).format() == "—"


def test_relative_improvement_is_signed_percentage_over_the_row():
    assert relative_improvement(0.76, 0.62) == "+22.58%"
    assert relative_improvement(0.60, 0.75) == "-20.00%"
    assert relative_improvement(None, 0.6) == "—"


def test_table3_has_mean_std_improvement_and_published_columns(results):
    lines = table3(results, "collm")
    mf = _row(lines, "MF")
    # System, Seeds, AUC, UAUC, Impr. AUC, Impr. UAUC, AUC (pub), UAUC (pub), dAUC, dUAUC
    assert mf[1:4] == ["3", "0.6200 ± 0.0200", "0.5200 ± 0.0200"]
    assert mf[4] == relative_improvement(0.76, 0.62) == "+22.58%"
    assert mf[5] == "+21.15%"  # (0.63 - 0.52) / 0.52
    assert mf[6:10] == ["0.6482", "0.6361", "-0.0282", "-0.1161"]
    userllm = _row(lines, "USER-LLM")
    assert userllm[2] == "0.7600 ± 0.0141"
    assert userllm[4:6] == ["(ref.)", "(ref.)"]
    assert any("CoLLM (Zhang et al. 2023" in line for line in lines)


def test_missing_and_failed_systems_show_as_missing_never_as_numbers(results):
    lines = table3(results, "collm")
    sasrec = _row(lines, "SASRec")
    assert sasrec[1:6] == ["0", "—", "—", "—", "—"]
    assert sasrec[6:8] == ["0.7078", "0.6884"]  # published figures stay, labelled as published
    assert sasrec[8:10] == ["—", "—"]
    tallrec = _row(lines, "TALLRec")
    assert tallrec[2:6] == ["—", "—", "—", "—"]
    assert missing_runs(results) == [("collm", "sasrec"), ("collm", "tallrec")]
    report = build_report(results)
    assert "Missing (asked for, no finished run): SASRec on collm, TALLRec on collm." in report
    assert "RuntimeError: boom" in report


def test_table4_ablations_missing_and_table5_short_long(results):
    table = table4(results, "collm")
    assert _row(table, "USER-LLM w/o UHEM")[2:6] == ["—", "—", "—", "—"]
    lines = table5(results, "collm")
    every = next(i for i, line in enumerate(lines) if line.startswith("AUC against history length"))
    lines, every = lines[:every], lines[every:]
    assert _row(every, "MF")[1:4] == ["—", "—", "—"]
    assert _row(every, "USER-LLM")[3] == "+0.0300"
    assert _row(lines, "CoLLM-VA")[2] == "0.7100 ± 0.0141"
    assert _row(lines, "USER-LLM")[4] == "0.7800 ± 0.0141"
    impr = _row(lines, "Impr. (USER-LLM over CoLLM-VA)")
    assert impr[2] == "+5.63%"  # (0.75 - 0.71) / 0.71
    assert impr[4] == "+13.04%"  # (0.78 - 0.69) / 0.69


def test_a_one_class_split_shows_undefined_never_a_number_or_missing():
    # A split of one class records its metrics as null with the reason (training/pipeline.py, baselines.evaluate).
    run = _run("collm", "mf", 0, 0.6, 0.5)
    run["metrics"]["test"] = {"auc": None, "uauc": None, "undefined": {"auc": "AUC needs both classes", "uauc": "no user"}}
    results = {"grid": {"data": ["collm"], "systems": ["mf"], "seeds": [0]}, "runs": [run]}
    assert _row(table3(results, "collm"), "MF")[1:4] == ["1", "undefined", "undefined"]
    assert _row(build_report(results).split("## Runs")[1].splitlines(), "collm")[6:8] == ["0.6000", "undefined"]
    run["metrics"]["test"] = {"auc": None, "uauc": 0.5, "undefined": {"auc": "AUC needs both classes"}}
    results["runs"].append(_run("collm", "mf", 1, 0.7, 0.6))
    assert _row(table3(results, "collm"), "MF")[1:4] == ["2", "0.7000 (1 undefined)", "0.5500 ± 0.0707"]
    from experiments.learning_curve import curve_points

    records = [{"system": "userllm", "budget": 100, "test_auc": None}, {"system": "userllm", "budget": 100, "test_auc": 0.6}]
    assert curve_points(records) == {"userllm": [(100, 0.6, 0.0, 1)]}


def test_a_run_whose_test_split_is_one_class_is_logged_and_summarised_with_its_reason(tmp_path):
    undefined = {"auc": "AUC needs both classes; the rows hold 5 positives and 0 negatives"}
    data = _prepared_data(tmp_path / "data")
    runner = ExperimentRunner(tmp_path / "out", summary_dir=tmp_path / "results", trainers={"baseline": lambda spec, run_dir: {
        "test": {"auc": None, "uauc": 0.5, "rows": 5, "users": 2, "undefined": undefined}}})
    logged = []
    [record] = runner.run_grid(runner.plan([data], ["mf"], seeds=[0]), log=logged.append)
    assert "test AUC undefined UAUC 0.5000" in logged[0]
    assert record["metrics"]["test"] == {"auc": None, "uauc": 0.5, "undefined": undefined}
    summary = json.loads(next((tmp_path / "results").iterdir()).read_text())
    assert summary["test_auc"] is None and summary["splits"]["test"]["undefined"] == undefined


def test_userllm_paper_tables_sit_beside_ours_on_the_movie_data():
    runs = [_run("movielens-csv", system, seed, 0.7, 0.6, short=0.7, long=0.7)
            for system in ("mf", "collm_va", "userllm", "userllm_no_uhem") for seed in (0, 1)]
    results = {"grid": {"data": ["movielens-csv"], "systems": ["mf", "collm_va", "userllm", "userllm_no_uhem"],
                        "seeds": [0, 1]}, "runs": runs}
    report = build_report(results)
    assert "could not be read" not in report and "unsourced" not in report.lower()
    table3 = report.split("### Table 3")[1].split("###")[0].splitlines()
    assert _row(table3, "MF")[-4:] == ["0.6781", "0.6055", "+0.0219", "-0.0055"]
    table5 = report.split("### Table 5")[1].split("AUC against history length")[0].splitlines()
    assert _row(table5, "CoLLM-VA")[-2:] == ["0.8070", "0.8067"] and _row(table5, "USER-LLM")[-2:] == ["0.8117", "0.8118"]
    assert "published, Vicuna-7B, A100" in report


def test_published_tables_match_the_paper():
    from experiments import PUBLISHED_TABLE2, published_for

    assert published_for("movielens-csv")["lightgcn"].auc == 0.7673 and published_for("netflix")["mf"].uauc == 0.5711
    assert published_for("movielens-csv")["userllm_no_ke"].auc == 0.8087
    assert published_for("netflix", "test_long")["collm_va"].auc == 0.6668
    assert published_for("collm")["sasrec"].auc == 0.7078  # CoLLM's Table II is kept
    assert PUBLISHED_TABLE2["movie"]["#User"] == 605 and PUBLISHED_TABLE2["netflix"]["#Test"] == 3875


def test_plots_are_written(results, tmp_path):
    paths = make_plots(results, tmp_path)
    assert [p.name for p in paths] == ["collm_systems.png", "collm_history_length.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def _prepared_data(folder, name="tiny"):
    folder.mkdir()
    (folder / "info.json").write_text(json.dumps({"name": name, "protocol": {"threshold": 4}}))
    return folder


def test_cache_skips_finished_runs_and_retries_failed_ones(tmp_path):
    calls = []

    def fake_baseline(spec, run_dir):
        calls.append((spec.system, spec.seed))
        if spec.system == "lightgcn" and len([c for c in calls if c[0] == "lightgcn"]) == 1:
            raise RuntimeError("first try fails")
        return {"valid": {"auc": 0.6, "uauc": 0.55}, "test": {"auc": 0.61 + spec.seed / 100, "uauc": 0.5}}

    data = _prepared_data(tmp_path / "data")
    runner = ExperimentRunner(tmp_path / "out", trainers={"baseline": fake_baseline}, max_epochs=3)
    specs = runner.plan([data], ["mf", "lightgcn"], seeds=[0, 1])
    first = runner.run_grid(specs, log=lambda _: None)
    assert [(r["system"], r["seed"], r["status"]) for r in first] == [
        ("mf", 0, "ok"), ("lightgcn", 0, "failed"), ("mf", 1, "ok"), ("lightgcn", 1, "ok")]
    assert all((specs[i].run_dir(tmp_path / "out") / "metrics.json").is_file() for i in (0, 2, 3))
    assert len(calls) == 4

    second = runner.run_grid(runner.plan([data], ["mf", "lightgcn"], seeds=[0, 1]), log=lambda _: None)
    assert calls[4:] == [("lightgcn", 0)]  # only the failed run trains again
    assert [r["cached"] for r in second] == [True, False, True, True]
    assert second[2]["metrics"]["test"]["auc"] == pytest.approx(0.62)  # mf, seed 1
    assert {"machine", "packages", "command", "wall_seconds"} <= set(second[0])

    lookup = ExperimentRunner(tmp_path / "out", max_epochs=3).run_grid(
        runner.plan([data], ["mf", "sasrec"], seeds=[0]), log=lambda _: None, train=False
    )
    assert [r["status"] for r in lookup] == ["ok", "missing"]
    assert len(calls) == 5  # reading back trains nothing

    results = results_document(second, specs)
    assert aggregate(results)["tiny", "mf"]["test"]["auc"].format() == "0.6150 ± 0.0071"


def test_summary_json_is_written_per_finished_run_and_skips_it_later(tmp_path):
    calls = []

    def fake_baseline(spec, run_dir):
        calls.append(spec.seed)
        return {"test": {"auc": 0.6, "uauc": 0.55, "rows": 10, "users": 3}}

    data = _prepared_data(tmp_path / "data")
    runner = ExperimentRunner(tmp_path / "out", trainers={"baseline": fake_baseline}, summary_dir=tmp_path / "results")
    specs = runner.plan([data], ["mf"], seeds=[0, 1])
    runner.run_grid(specs, log=lambda _: None)
    summary = json.loads(runner.summary_path(specs[0]).read_text())
    assert {key: summary[key] for key in ("system", "budget", "seed", "test_auc", "test_uauc", "rows", "users")} == {
        "system": "mf", "budget": 0, "seed": 0, "test_auc": 0.6, "test_uauc": 0.55, "rows": 10, "users": 3}
    assert {"wall_s", "git"} <= set(summary)
    # the output folder is gone, the summaries survive: nothing trains again
    fresh = ExperimentRunner(tmp_path / "elsewhere", trainers={"baseline": fake_baseline}, summary_dir=tmp_path / "results")
    records = fresh.run_grid(specs, log=lambda _: None)
    assert calls == [0, 1] and [r["metrics"]["test"]["auc"] for r in records] == [0.6, 0.6]
    # --report-only reads them back too (as a run would skip them), and trains nothing
    reported = fresh.run_grid(specs, log=lambda _: None, train=False)
    assert [r["status"] for r in reported] == ["ok", "ok"] and calls == [0, 1]


def test_a_changed_configuration_is_a_new_run(tmp_path):
    data = _prepared_data(tmp_path / "data")
    short = ExperimentRunner(tmp_path / "out", max_epochs=3).plan([data], ["mf"], [0])[0]
    long = ExperimentRunner(tmp_path / "out", max_epochs=30).plan([data], ["mf"], [0])[0]
    assert short.config_hash != long.config_hash
    runner = ExperimentRunner(tmp_path / "out", max_epochs=3, baseline_overrides={"mf": {"min_epochs": 150}})
    mf, lightgcn = runner.plan([data], ["mf", "lightgcn"], [0])
    assert mf.config["min_epochs"] == 150 and "min_epochs" not in lightgcn.config
    assert "--min-epochs 150" in runner._record(mf)["command"]
    assert short.run_dir(tmp_path).parent == long.run_dir(tmp_path).parent  # same data/system folder
    with pytest.raises(ValueError, match="unknown systems"):
        ExperimentRunner(tmp_path / "out").plan([data], ["din"], [0])


def test_features_rebuilt_on_another_machine_keep_their_fingerprint_unless_their_content_changes(tmp_path):
    """The manifest records how long each part took; a rebuild of the same features must find the runs (and the
    `--resume` folders) of the first build, or a campaign could never continue on a new machine."""
    features = tmp_path / "features"
    features.mkdir()
    (features / "image_features.npy").write_bytes(b"0" * 16)
    manifest = {"descriptions": {"count": 3, "seconds": 300.4, "cpu_seconds": 588.6},
                "collaborative": {"seed": 0, "metrics": {"history": [{"epoch": 0, "seconds": 1.0}]}}}
    (features / "manifest.json").write_text(json.dumps(manifest))
    first = features_fingerprint(features)
    manifest["descriptions"].update(seconds=1.0, cpu_seconds=2.0)
    manifest["collaborative"]["metrics"]["history"][0]["seconds"] = 9.0
    (features / "manifest.json").write_text(json.dumps(manifest, indent=2))
    assert features_fingerprint(features) == first
    manifest["descriptions"]["count"] = 2
    (features / "manifest.json").write_text(json.dumps(manifest))
    assert features_fingerprint(features) != first
    (features / "manifest.json").write_text(json.dumps({**manifest, "descriptions": {"count": 3}}))
    (features / "image_features.npy").write_bytes(b"0" * 8)
    assert features_fingerprint(features) != first


def test_a_preset_comment_leaves_the_llm_runs_as_they_were_and_a_setting_makes_new_ones(tmp_path):
    data, preset = _prepared_data(tmp_path / "data"), tmp_path / "llm.yaml"

    def llm_hash(text):
        preset.write_text(text)
        return ExperimentRunner(tmp_path / "out", llm_preset=preset).plan([data], ["tallrec"], [0])[0].config_hash

    first = llm_hash("model:\n  lora_r: 8\n")
    assert llm_hash("# chosen on valid (docs/RESULTS.md)\nmodel:\n    lora_r: 8   # the paper's rank\n") == first
    assert llm_hash("model:\n  lora_r: 16\n") != first


def test_run_control_arguments_keep_a_runs_hash_and_training_arguments_change_it(tmp_path):
    """`--resume`, `--num_threads` and `--step1_from` say how a run is carried out: a run started without
    `--resume` must be found again with it (on another machine, with other threads)."""
    data = _prepared_data(tmp_path / "data")

    def llm_hash(*overrides):
        return ExperimentRunner(tmp_path / "out", llm_overrides=overrides).plan([data], ["collm"], [0])[0].config_hash

    first = llm_hash()
    assert llm_hash("--resume", "--num_threads", "2", "--step1_from=OUT/step1-lora/final") == first
    assert llm_hash("--step1_from", "OUT/step1-lora/final", "--resume") == first
    assert llm_hash("--resume", "--step2_learning_rate", "3e-2") == llm_hash("--step2_learning_rate", "3e-2") != first


def test_summaries_of_the_two_split_rules_are_named_apart_and_both_skip_later(tmp_path):
    calls = []

    def fake_baseline(spec, run_dir):
        calls.append(spec.data_dir)
        return {"test": {"auc": 0.6, "uauc": 0.55, "rows": 10, "users": 3}}

    folders = {}
    for split in ("global_time", "per_user_time"):
        folder = tmp_path / split
        folder.mkdir()
        (folder / "info.json").write_text(json.dumps({"name": "movielens-csv", "protocol": {"split": split}}))
        folders[split] = folder
    runner = ExperimentRunner(tmp_path / "out", trainers={"baseline": fake_baseline}, summary_dir=tmp_path / "results")
    specs = runner.plan([folders["global_time"], folders["per_user_time"]], ["mf"], seeds=[0])
    runner.run_grid(specs, log=lambda _: None)
    names = sorted(path.name for path in (tmp_path / "results").iterdir())
    assert len(names) == 2 and names[0].startswith("movielens-csv-mf-seed0-")
    assert names[1].startswith("movielens-csv-per_user_time-mf-seed0-")
    splits = {json.loads((tmp_path / "results" / name).read_text())["split"] for name in names}
    assert splits == {"global_time", "per_user_time"}
    fresh = ExperimentRunner(tmp_path / "elsewhere", trainers={"baseline": fake_baseline}, summary_dir=tmp_path / "results")
    fresh.run_grid(specs, log=lambda _: None)
    assert len(calls) == 2  # both read back from their own summary


def test_llm_budgets_make_one_run_each_named_and_summarised_by_rows(tmp_path):
    trained = []

    def fake(spec, run_dir):
        trained.append((spec.system, spec.budget))
        auc = 0.6 if spec.kind == "baseline" else 0.5 + spec.budget / 10_000
        if spec.kind == "llm":  # what training writes: the dtype `auto` chose, the threads
            (run_dir / "train").mkdir()
            (run_dir / "train" / "run_config.json").write_text(json.dumps({"model": {"dtype": "bfloat16", "num_threads": 1}}))
        return {"test": {"auc": auc, "uauc": auc - 0.05, "rows": 10, "users": 3}}

    data = _prepared_data(tmp_path / "data")
    (tmp_path / "features").mkdir()
    runner = ExperimentRunner(tmp_path / "out", trainers={"baseline": fake, "llm": fake}, summary_dir=tmp_path / "results",
                              threads=2)
    specs = runner.plan([data], ["mf", "userllm"], seeds=[0], features_dirs=[tmp_path / "features"], budgets=[100, 400])
    assert [(spec.system, spec.budget) for spec in specs] == [("mf", None), ("userllm", 100), ("userllm", 400)]
    assert specs[1].config_hash != specs[2].config_hash
    assert "--max_train_rows 400" in runner._record(specs[2])["command"]
    runner.run_grid(specs, log=lambda _: None)
    summaries = {path.name: json.loads(path.read_text()) for path in (tmp_path / "results").iterdir()}
    assert sorted(summary["budget"] for summary in summaries.values()) == [0, 100, 400]
    assert sorted((summary["threads"], summary.get("dtype")) for summary in summaries.values()) == [
        (1, "bfloat16"), (1, "bfloat16"), (2, None)]
    assert any("-userllm-rows400-seed0-" in name for name in summaries)
    with pytest.raises(ValueError, match="budgets"):
        runner.plan([data], ["userllm"], seeds=[0], features_dirs=[tmp_path / "features"], budgets=[0])

    from experiments.learning_curve import curve_points, learning_curve_records, write_learning_curve

    # A summary of another data set and an LLM run without a row budget are not points of the curve.
    (tmp_path / "results" / "other.json").write_text(json.dumps({"data": "other", "test_auc": 0.9, "budget": 5}))
    (tmp_path / "results" / "capped.json").write_text(json.dumps({"data": "tiny", "test_auc": 0.9, "budget": "--step1_max_steps 5"}))
    # Extra training arguments make their own curve; run-control ones (--resume, --num_threads N, --step1_from F) do not.
    (tmp_path / "results" / "other-encoder.json").write_text(json.dumps(
        {"data": "tiny", "system": "userllm", "seed": 0, "test_auc": 0.9, "budget": 100,
         "overrides": ["--resume", "--history_encoder_type", "transformer"]}))
    (tmp_path / "results" / "resumed.json").write_text(json.dumps(
        {"data": "tiny", "system": "userllm", "seed": 1, "test_auc": 0.61, "budget": 100,
         "overrides": ["--resume", "--num_threads", "2", "--step1_from=OUT/step1-lora/final"]}))
    records = learning_curve_records(tmp_path / "results", "tiny")
    assert sorted((r["system"], r["budget"], r["seed"], r["overrides"]) for r in records) == [
        ("mf", 0, 0, ""), ("userllm", 100, 0, ""), ("userllm", 100, 0, "--history_encoder_type transformer"),
        ("userllm", 100, 1, ""), ("userllm", 400, 0, "")]
    assert set(records[0]) == {"system", "budget", "seed", "test_auc", "test_uauc", "rows", "users", "wall_s", "git",
                               "overrides", "run_control"}
    assert [r["run_control"] for r in records if r["seed"] == 1] == ["--resume --num_threads 2 --step1_from=OUT/step1-lora/final"]
    points = curve_points(records)
    assert points["userllm"] == [(100, 0.56, pytest.approx(0.0707, abs=1e-4), 2), (400, 0.54, 0.0, 1)]
    assert points["userllm [--history_encoder_type transformer]"] == [(100, 0.9, 0.0, 1)]
    json_path, png_path = write_learning_curve(records, tmp_path / "curve" / "learning_curve_tiny", "tiny")
    assert json.loads(json_path.read_text()) == records and png_path.stat().st_size > 1000
    (tmp_path / "results" / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: not a JSON run summary"):
        learning_curve_records(tmp_path / "results", "tiny")
    # The same seed again under another hash (other features, say) would count as a second seed: refused.
    (tmp_path / "results" / "broken.json").unlink()
    (tmp_path / "results" / "resumed-elsewhere.json").write_text(json.dumps(
        {"data": "tiny", "system": "userllm", "seed": 1, "test_auc": 0.7, "budget": 100, "overrides": ["--resume"]}))
    with pytest.raises(ValueError, match=r"resumed-elsewhere.json and resumed.json in .*two runs of userllm at 100 rows, "
                                         r"seed 1, the preset as it is; a point counts each seed once"):
        learning_curve_records(tmp_path / "results", "tiny")


def test_llm_runs_call_the_package_training_entry_point_not_a_repository_script(tmp_path, monkeypatch):
    import subprocess
    import sys

    from experiments import runner as runner_module

    calls = []

    def fake_run_child(command, **kwargs):
        calls.append((command, kwargs))
        metrics = run_dir / "train" / "metrics.json"
        metrics.parent.mkdir(parents=True)
        metrics.write_text(json.dumps({"test": {"auc": 0.5, "uauc": 0.5}}))
        return 0

    data = _prepared_data(tmp_path / "data")
    (tmp_path / "features").mkdir()
    runner = ExperimentRunner(tmp_path / "out")
    spec = runner.plan([data], ["userllm"], [0], features_dirs=[tmp_path / "features"])[0]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setattr(runner_module, "run_child", fake_run_child)
    assert runner._train_llm(spec, run_dir) == {"test": {"auc": 0.5, "uauc": 0.5}}
    (command, kwargs), = calls
    assert command[:3] == [sys.executable, "-m", "modeling_userllm.training"] and "cwd" not in kwargs
    monkeypatch.undo()
    # The entry point runs from any folder (as in a wheel install, without the repository's examples/).
    result = subprocess.run([*command, "--help"], cwd=tmp_path, env=kwargs["env"], capture_output=True, text=True)
    assert result.returncode == 0 and "--step1_learning_rate" in result.stdout, result.stderr[-2000:]


def test_a_run_stopped_and_resumed_sums_its_invocations_and_keeps_both_logs(tmp_path, monkeypatch):
    from pathlib import Path

    from experiments import runner as runner_module

    def fake_run_child(command, *, stdout, env):
        stdout.write(f"invocation {len(outcomes)}\n")
        if not outcomes:
            outcomes.append("stopped")
            raise SystemExit(143)  # what run_child raises when SIGTERM stopped the child
        metrics = Path(command[command.index("--output_dir") + 1]) / "metrics.json"
        metrics.write_text(json.dumps({"test": {"auc": 0.5, "uauc": 0.5, "rows": 4, "users": 2}}))
        return 0

    outcomes = []
    monkeypatch.setattr(runner_module, "run_child", fake_run_child)
    data = _prepared_data(tmp_path / "data")
    (tmp_path / "features").mkdir()
    runner = ExperimentRunner(tmp_path / "out", summary_dir=tmp_path / "results")
    spec = runner.plan([data], ["userllm"], [0], features_dirs=[tmp_path / "features"])[0]
    (spec.run_dir(tmp_path / "out") / "train").mkdir(parents=True)
    with pytest.raises(SystemExit):
        runner.run(spec)
    record = runner.run(spec)
    assert [invocation["outcome"] for invocation in record["invocations"]] == ["stopped", "finished"]
    summary = json.loads(runner.summary_path(spec).read_text())
    assert summary["wall_s"] == pytest.approx(sum(invocation["wall_s"] for invocation in summary["invocations"]), abs=0.2)
    assert len(summary["invocations"]) == 2
    log = (spec.run_dir(tmp_path / "out") / "train.log").read_text()
    assert "invocation 0" in log and "invocation 1" in log and log.count("=== ") == 2


def test_sigterm_to_the_runner_lets_its_training_child_save_then_stops_both(tmp_path):
    """`kill RUNNER` passes SIGTERM on to the training child and waits while it saves (`StopOnSigterm`), then exits
    143; a child left to its default for SIGTERM ends too, rather than running on alone holding its run's lock."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    for saves in (True, False):
        pid_file, saved_file = tmp_path / f"child-{saves}.pid", tmp_path / f"saved-{saves}"
        on_sigterm = (f"def save(signum, frame):\n    time.sleep(0.5); open({str(saved_file)!r}, 'w').write('saved'); "
                      "sys.exit(143)\nsignal.signal(signal.SIGTERM, save)\n") if saves else ""
        child = (f"import os, signal, sys, time\n{on_sigterm}open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                 "time.sleep(120)\n")
        runner = (f"import os, sys\nfrom experiments.runner import run_child\n"
                  f"run_child([sys.executable, '-c', {child!r}], stdout=sys.stdout, env=dict(os.environ))\n")
        parent = subprocess.Popen([sys.executable, "-c", runner], cwd=Path(__file__).resolve().parents[1])
        child_pid = None
        try:
            deadline = time.monotonic() + 60
            while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
                time.sleep(0.05)
            child_pid = int(pid_file.read_text())
            parent.send_signal(signal.SIGTERM)
            assert parent.wait(timeout=30) == 128 + signal.SIGTERM
            assert saved_file.is_file() == saves  # the runner waited for the child's save
            with pytest.raises(ProcessLookupError):
                os.kill(child_pid, 0)
        finally:
            parent.kill()
            if child_pid is not None:
                try:
                    os.kill(child_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
