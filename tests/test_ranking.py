"""Top-K ranking with a shared prompt prefix gives the scores of independent scoring."""

import random

import pytest
import torch
from conftest import STORIES260K, build_tiny_model, make_item, make_records, perturb_lora, requires_shared
from transformers import AutoTokenizer

from modeling_userllm import create_model_and_processor
from modeling_userllm.ranking import rank_candidates, score_candidates

VARIANTS = ["userllm", "userllm_no_uhem"]


pytestmark = pytest.mark.usefixtures("single_thread")


def make_candidates(num_candidates: int, seed: int = 1) -> list[dict]:
    """Items of every title (so suffix lengths differ), every third one without an image."""
    rng = random.Random(seed)
    return [make_item(item_id, rng, with_image=item_id % 3 != 0) for item_id in range(num_candidates)]


def independent_scores(model, processor, user_record: dict, candidates: list[dict]) -> torch.Tensor:
    """Each candidate's full prompt scored alone, as `model(**processor(record))`."""
    records = [{**user_record, **candidate} for candidate in candidates]
    return torch.cat([model(**processor([record])).logits for record in records])


def eval_model(tokenizer, variant: str):
    model, processor = build_tiny_model(tokenizer, variant)
    perturb_lora(model)
    return model.eval(), processor


@pytest.mark.parametrize("variant", VARIANTS)
def test_split_prompt_concatenates_to_the_full_prompt(tiny_tokenizer, variant):
    _, processor = eval_model(tiny_tokenizer, variant)
    user = make_records(1, history_length=3)[0]
    splits = [processor.split_prompt({**user, **candidate}) for candidate in make_candidates(6)]
    for split, candidate in zip(splits, make_candidates(6)):
        full = processor([{**user, **candidate}]).input_ids[0].tolist()
        assert split["prefix_ids"] + split["suffix_ids"] == full
        assert split["prefix_ids"] == splits[0]["prefix_ids"]
        suffix_text = processor.decode_prompt(split["suffix_ids"])
        assert suffix_text.startswith('" ' + candidate["title"].split(" (")[0].lower())
        assert len(split["suffix_image_features"]) == (candidate["image_features"] is not None)
    assert len({len(split["suffix_ids"]) for split in splits}) > 1


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("history_length", [0, 4])
def test_shared_prefix_scores_equal_independent_scores(tiny_tokenizer, variant, history_length):
    model, processor = eval_model(tiny_tokenizer, variant)
    user = make_records(1, history_length=history_length, seed=3)[0]
    candidates = make_candidates(11)
    with torch.no_grad():
        expected = independent_scores(model, processor, user, candidates)
    scores = score_candidates(model, processor, user, candidates, batch_size=4)
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_text_only_shared_prefix_scores_equal_independent_scores(tiny_tokenizer, variant):
    model, processor = eval_model(tiny_tokenizer, variant)
    user = make_records(1, history_length=2)[0]
    candidates = make_candidates(5)
    with torch.no_grad():
        expected = torch.cat([model(**processor([{**user, **c}], text_only=True)).logits for c in candidates])
    scores = score_candidates(model, processor, user, candidates, batch_size=2, text_only=True)
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=0)


@requires_shared(STORIES260K)
@pytest.mark.parametrize("variant", VARIANTS)
def test_shared_prefix_scores_equal_independent_scores_with_stories260k(variant):
    tokenizer = AutoTokenizer.from_pretrained(STORIES260K)
    torch.manual_seed(0)
    model, processor = create_model_and_processor(
        tokenizer, variant, base_model_name_or_path=str(STORIES260K), num_users=5, num_items=6, max_history_items=5
    )
    perturb_lora(model)
    model.eval()
    user = make_records(1, history_length=5, seed=4)[0]
    candidates = make_candidates(7)
    with torch.no_grad():
        expected = independent_scores(model, processor, user, candidates)
    scores = score_candidates(model, processor, user, candidates, batch_size=3)
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=0)


def test_rank_candidates_returns_the_top_k_in_decreasing_order(tiny_tokenizer):
    model, processor = eval_model(tiny_tokenizer, "userllm")
    user = make_records(1, history_length=3)[0]
    candidates = make_candidates(9)
    scores = score_candidates(model, processor, user, candidates, batch_size=4)
    indices, top_scores = rank_candidates(model, processor, user, candidates, batch_size=4, top_k=3)
    assert indices.tolist() == torch.argsort(scores, descending=True)[:3].tolist()
    torch.testing.assert_close(top_scores, scores[indices])


def test_candidate_that_changes_the_prompt_prefix_raises(tiny_tokenizer):
    model, processor = eval_model(tiny_tokenizer, "userllm_no_uhem")
    user = make_records(1, history_length=2)[0]
    candidates = make_candidates(3)
    candidates[2] = {**candidates[2], "history": []}
    with pytest.raises(ValueError, match="candidate 2"):
        score_candidates(model, processor, user, candidates)
