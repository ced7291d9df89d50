"""The "recommendation" pipeline saved with every checkpoint: `pipeline(model=PATH, trust_remote_code=True)`."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import NUM_ITEMS, build_tiny_model, perturb_lora
from modeling_userllm.configuration_userllm import CUSTOM_PIPELINES
from modeling_userllm.features.visual import toy_image_encoder
from test_images import poster_records, write_posters

FRESH_PROCESS_PIPELINE = """
import json, sys
sys.modules["modeling_userllm"] = None  # the package must not be importable: the pipeline comes from the checkpoint
from transformers import pipeline
folder, inputs_path = sys.argv[1], sys.argv[2]
recommend = pipeline(model=folder, trust_remote_code=True)
assert type(recommend).__module__.startswith("transformers_modules"), type(recommend).__module__
inputs = json.load(open(inputs_path))
print("ONE=" + json.dumps(recommend(inputs[0]["user"], candidates=inputs[0]["candidates"], top_k=3)))
print("BATCH=" + json.dumps(recommend(inputs)))
"""


def user_inputs(records: list[dict]) -> list[dict]:
    """One pipeline input per record's user: its history and every item of the catalogue as candidates."""
    candidates = {record["item_id"]: {key: record[key] for key in ("item_id", "title", "description", "image_features")}
                  for record in records}
    return [{"user": {"user_id": record["user_id"], "history": record["history"]}, "candidates": list(candidates.values())}
            for record in records[:3]]


def expected_ranking(model, processor, user_input: dict) -> list[tuple[int, float]]:
    """(item_id, P(Yes)) of every candidate from each full prompt scored on its own, best first."""
    records = [{**candidate, **user_input["user"]} for candidate in user_input["candidates"]]
    with torch.no_grad():
        probabilities = model(**processor(records)).probabilities.tolist()
    return sorted(zip([record["item_id"] for record in records], probabilities), key=lambda pair: -pair[1])


@pytest.fixture
def saved_model(tiny_tokenizer, tmp_path):
    """A tiny USER-LLM with the toy vision encoder, saved; its records show posters as paths."""
    model, processor = build_tiny_model(tiny_tokenizer, "userllm")
    perturb_lora(model)
    encoder, image_processor = toy_image_encoder(seed=0)
    model.attach_vision_encoder(encoder)
    processor.image_processor = image_processor
    model.eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    records = poster_records(write_posters(tmp_path, NUM_ITEMS), None)
    return model, processor, folder, records


def test_saved_config_registers_the_pipeline(saved_model):
    _, _, folder, _ = saved_model
    assert json.loads((folder / "config.json").read_text())["custom_pipelines"] == CUSTOM_PIPELINES
    assert {"pipeline_userllm.py", "ranking.py"} <= set(os.listdir(folder))


def test_pipeline_ranks_candidates_by_probability_in_fresh_process(saved_model, tmp_path):
    model, processor, folder, records = saved_model
    inputs = user_inputs(records)
    inputs_path = tmp_path / "inputs.json"
    inputs_path.write_text(json.dumps(inputs))
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS_PIPELINE, str(folder), str(inputs_path)],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    outputs = {line.split("=", 1)[0]: json.loads(line.split("=", 1)[1])
               for line in result.stdout.splitlines() if line.startswith(("ONE=", "BATCH="))}

    assert len(outputs["BATCH"]) == len(inputs)
    for user_input, ranked in zip(inputs, outputs["BATCH"]):
        expected = expected_ranking(model, processor, user_input)
        assert [entry["item_id"] for entry in ranked] == [item_id for item_id, _ in expected]
        torch.testing.assert_close(torch.tensor([entry["score"] for entry in ranked]),
                                   torch.tensor([probability for _, probability in expected]), rtol=0, atol=1e-5)
        for entry in ranked:
            assert user_input["candidates"][entry["index"]]["item_id"] == entry["item_id"]
    assert outputs["ONE"] == outputs["BATCH"][0][:3]


def test_pipeline_rejects_malformed_input(saved_model):
    from transformers import pipeline

    _, _, folder, records = saved_model
    recommend = pipeline(model=str(folder), trust_remote_code=True)
    with pytest.raises(ValueError, match='"user"'):
        recommend({"candidates": user_inputs(records)[0]["candidates"]})
    with pytest.raises(ValueError, match="no candidate items"):
        recommend({"user_id": 1, "history": []}, candidates=[])


def test_pipeline_refuses_a_candidate_carrying_a_user_field(saved_model):
    from transformers import pipeline

    _, _, folder, records = saved_model
    recommend = pipeline(model=str(folder), trust_remote_code=True)
    user_input = user_inputs(records)[0]
    user_id = user_input["user"]["user_id"]
    for field, value in (("history", []), ("user_id", user_id + 1)):
        candidates = [{**candidate, field: value} for candidate in user_input["candidates"]]
        item_id = candidates[0]["item_id"]
        with pytest.raises(ValueError, match=rf"user {user_id}, candidate 0 \(item_id {item_id}\): field '{field}' belongs to the user"):
            recommend(user_input["user"], candidates=candidates)


@pytest.mark.parametrize("top_k", [-1, -6, 0, "3", 2.5])
def test_pipeline_refuses_a_top_k_that_is_not_a_positive_integer(saved_model, top_k):
    from transformers import pipeline

    _, _, folder, records = saved_model
    recommend = pipeline(model=str(folder), trust_remote_code=True)
    with pytest.raises(ValueError, match=rf"top_k must be an integer >= 1 .*got {type(top_k).__name__} {top_k!r}"):
        recommend(user_inputs(records)[0], top_k=top_k)


RESAVE_IN_FRESH_PROCESS = """
import sys
sys.modules["modeling_userllm"] = None  # the hub copy alone
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
model.save_pretrained(sys.argv[2])
"""


def test_a_hub_copy_loads_and_saves_again_without_needing_the_pipeline_code(saved_model, tmp_path):
    # The model's code must not require the pipeline's files: a folder saved by another tool
    # has only the model's code. Re-saved from a hub copy, the model is saved alone.
    import shutil

    _, _, folder, _ = saved_model
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    for name in ("pipeline_userllm.py", "ranking.py"):
        (copy / name).unlink()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", RESAVE_IN_FRESH_PROCESS, str(copy), str(tmp_path / "again")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"modeling_userllm.py", "model.safetensors"} <= set(os.listdir(tmp_path / "again"))


def test_the_package_registers_the_recommendation_pipeline(saved_model):
    from transformers import pipeline
    from transformers.pipelines import PIPELINE_REGISTRY

    from modeling_userllm import RecommendationPipeline

    assert PIPELINE_REGISTRY.supported_tasks["recommendation"]["impl"] is RecommendationPipeline
    model, processor, _, records = saved_model
    recommend = pipeline("recommendation", model=model, processor=processor)
    candidates = [{key: record[key] for key in ("item_id", "title", "description", "image_features")} for record in records[:3]]
    ranked = recommend({"user": {"user_id": 0, "history": records[0]["history"]}, "candidates": candidates})
    assert isinstance(recommend, RecommendationPipeline) and len(ranked) == 3
