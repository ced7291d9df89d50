"""Checkpoints saved by an earlier commit (tests/fixtures/checkpoints, written by
tests/fixtures/make_checkpoint_fixtures.py) load with today's code and score as they did then."""

import json
from pathlib import Path

import pytest
import torch

from modeling_userllm import UserLLMForRecommendation, UserLLMProcessor

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("form", ["full", "light"])
def test_checkpoint_saved_by_an_earlier_commit_scores_as_it_did(form, single_thread):
    extra = {"base_model_name_or_path": str(FIXTURES / "base-llm")} if form == "light" else {}
    model = UserLLMForRecommendation.from_pretrained(FIXTURES / form, **extra).eval()
    processor = UserLLMProcessor.from_pretrained(FIXTURES / form)
    with torch.no_grad():
        scores = model(**processor(EXPECTED["records"])).logits
    torch.testing.assert_close(scores, torch.tensor(EXPECTED["scores"]), atol=1e-5, rtol=0)
