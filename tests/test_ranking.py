"""Top-K ranking with a shared prompt prefix gives the scores of independent scoring."""

import random

import pytest
import torch
from conftest import STORIES260K, build_tiny_model, make_item, make_records, perturb_lora, requires_shared
from transformers import AutoTokenizer

from modeling_userllm import create_model_and_processor
from modeling_userllm.ranking import (
    collaborative_scores,
    rank_candidates,
    rank_candidates_for_users,
    score_candidates,
    score_candidates_for_users,
    score_candidates_from_scratch,
    two_stage_rank,
)

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
    render_prompt = processor.render_prompt

    def render_with_the_candidate_in_the_prefix(record, text_only=False):
        rendered = render_prompt(record, text_only)
        rendered.prefix += " " + record["title"].split()[0].lower()
        return rendered

    processor.render_prompt = render_with_the_candidate_in_the_prefix
    user = make_records(1, history_length=2)[0]
    with pytest.raises(ValueError, match="candidate 1: its prompt prefix differs from candidate 0's"):
        score_candidates(model, processor, user, make_candidates(3))


@pytest.mark.parametrize("field, value", [("history", []), ("user_id", 99)])
def test_candidate_carrying_a_user_field_is_refused(tiny_tokenizer, field, value):
    # Every candidate carries the field, so the prompt prefixes still agree: without the check the
    # candidates would be scored with their own history (or, shared-prefix, as two users at once).
    model, processor = eval_model(tiny_tokenizer, "userllm")
    user = make_records(1, history_length=3)[0]
    candidates = [{**candidate, field: value} for candidate in make_candidates(4)]
    message = rf"candidate 0 \(item_id 0\): field '{field}' belongs to the user, not to a candidate item"
    for rank in (score_candidates, score_candidates_from_scratch, rank_candidates, two_stage_rank):
        with pytest.raises(ValueError, match=message):
            rank(model, processor, user, candidates)
    with pytest.raises(ValueError, match="user 1, " + message):
        score_candidates_for_users(model, processor, make_users([2, 2]), [make_candidates(2), candidates])


@pytest.mark.parametrize("top_k", [-1, 0, "3", 2.5, True])
def test_top_k_that_is_not_a_positive_integer_is_refused(tiny_tokenizer, top_k):
    model, processor = eval_model(tiny_tokenizer, "userllm")
    user = make_records(1, history_length=2)[0]
    candidates = imaged_candidates()
    message = rf"top_k must be an integer >= 1 .*or None for all of them; got {type(top_k).__name__} {top_k!r}"
    with pytest.raises(ValueError, match=message):
        rank_candidates(model, processor, user, candidates, top_k=top_k)
    with pytest.raises(ValueError, match=message):
        rank_candidates_for_users(model, processor, [user], [candidates], top_k=top_k)
    with pytest.raises(ValueError, match=message):
        two_stage_rank(model, processor, user, candidates, num_rerank=3, top_k=top_k)


def test_top_k_none_returns_every_candidate(tiny_tokenizer):
    model, processor = eval_model(tiny_tokenizer, "userllm")
    user = make_records(1, history_length=2)[0]
    indices, _ = rank_candidates(model, processor, user, make_candidates(5), top_k=None)
    assert sorted(indices.tolist()) == list(range(5))


# ----------------------------------------------------------------------------- many users


def make_users(history_lengths: list[int]) -> list[dict]:
    return [make_records(1, history_length=length, seed=10 + index)[0] for index, length in enumerate(history_lengths)]


@pytest.mark.parametrize(
    "variant, text_only", [("userllm", False), ("userllm", True), ("userllm_no_uhem", False), ("tallrec", False)]
)
def test_scores_for_many_users_equal_per_user_scores(tiny_tokenizer, variant, text_only):
    model, processor = eval_model(tiny_tokenizer, variant)
    users = make_users([0, 4, 2, 1, 3])
    candidate_lists = [make_candidates(count, seed=index) for index, count in enumerate([3, 1, 7, 2, 1])]
    prefix_lengths = {len(processor.split_prompt({**user, **candidates[0]}, text_only)["prefix_ids"])
                      for user, candidates in zip(users, candidate_lists)}
    assert len(prefix_lengths) > 1 or variant == "userllm" and not text_only  # the UHEM's prefix has one length
    progress = []
    scores = score_candidates_for_users(
        model, processor, users, candidate_lists, batch_size=4, user_batch_size=3, text_only=text_only,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert [len(user_scores) for user_scores in scores] == [3, 1, 7, 2, 1]
    for user, candidates, user_scores in zip(users, candidate_lists, scores):
        expected = score_candidates(model, processor, user, candidates, batch_size=2, text_only=text_only)
        torch.testing.assert_close(user_scores, expected, atol=1e-5, rtol=0)
    assert progress[-1] == (14, 14) and [done for done, _ in progress] == sorted(done for done, _ in progress)


def test_rank_candidates_for_users_equals_per_user_ranking(tiny_tokenizer):
    model, processor = eval_model(tiny_tokenizer, "userllm_no_uhem")
    users = make_users([1, 5, 3])
    candidate_lists = [make_candidates(count, seed=index) for index, count in enumerate([6, 4, 1])]
    rankings = rank_candidates_for_users(model, processor, users, candidate_lists, batch_size=5, top_k=3)
    for user, candidates, (indices, top_scores) in zip(users, candidate_lists, rankings):
        expected_indices, expected_scores = rank_candidates(model, processor, user, candidates, top_k=3)
        assert indices.tolist() == expected_indices.tolist()
        torch.testing.assert_close(top_scores, expected_scores, atol=1e-5, rtol=0)


@requires_shared(STORIES260K)
def test_scores_for_many_users_equal_per_user_scores_with_stories260k():
    tokenizer = AutoTokenizer.from_pretrained(STORIES260K)
    torch.manual_seed(0)
    model, processor = create_model_and_processor(
        tokenizer, "userllm_no_uhem", base_model_name_or_path=str(STORIES260K), num_users=5, num_items=6, max_history_items=5
    )
    perturb_lora(model)
    model.eval()
    users = make_users([5, 1, 3])
    candidate_lists = [make_candidates(count, seed=index) for index, count in enumerate([2, 1, 4])]
    scores = score_candidates_for_users(model, processor, users, candidate_lists, batch_size=3)
    for user, candidates, user_scores in zip(users, candidate_lists, scores):
        torch.testing.assert_close(user_scores, score_candidates(model, processor, user, candidates), atol=1e-5, rtol=0)


def test_bad_users_or_candidate_lists_raise(tiny_tokenizer):
    model, processor = eval_model(tiny_tokenizer, "userllm_no_uhem")
    users = make_users([2, 2])
    with pytest.raises(ValueError, match="2 users but 1 candidate lists"):
        score_candidates_for_users(model, processor, users, [make_candidates(2)])
    with pytest.raises(ValueError, match="No candidate items given for user 1"):
        score_candidates_for_users(model, processor, users, [make_candidates(2), []])
    with pytest.raises(ValueError, match="batch_size and user_batch_size must be >= 1, got 4 and 0"):
        score_candidates_for_users(model, processor, users, [make_candidates(2)] * 2, batch_size=4, user_batch_size=0)
    candidates = make_candidates(3)
    candidates[2] = {**candidates[2], "history": []}
    with pytest.raises(ValueError, match=r"user 1, candidate 2 \(item_id 2\): field 'history' belongs to the user"):
        score_candidates_for_users(model, processor, users, [make_candidates(3), candidates])


# ----------------------------------------------------------------------------- two-stage ranking


def imaged_candidates(num_candidates: int = 6) -> list[dict]:
    """Candidates with known item ids (MF rows of their own) and an image each, so no two score alike."""
    rng = random.Random(5)
    return [make_item(item_id, rng) for item_id in range(num_candidates)]


def test_collaborative_scores_are_the_dot_products_of_the_mf_tables(tiny_tokenizer):
    model, _ = eval_model(tiny_tokenizer, "userllm")
    users, items = model.user_embeddings.weight, model.item_embeddings.weight
    torch.testing.assert_close(collaborative_scores(model, 2, [4, 0, 3]), items[[4, 0, 3]] @ users[2])
    # Unknown ids take the zero "unknown" row, as in the prompt.
    assert collaborative_scores(model, 2, [99, -1]).tolist() == [0.0, 0.0]
    assert collaborative_scores(model, 99, [0, 1]).tolist() == [0.0, 0.0]


def test_two_stage_rank_reranks_the_mf_top_c_with_the_llm(tiny_tokenizer):
    model, processor = eval_model(tiny_tokenizer, "userllm")
    user = make_records(1, history_length=3)[0]
    candidates = imaged_candidates()
    llm_scores = score_candidates(model, processor, user, candidates)
    mf_scores = collaborative_scores(model, user["user_id"], [item["item_id"] for item in candidates])
    mf_top = torch.argsort(mf_scores, descending=True)[:3].tolist()
    assert set(mf_top) != set(torch.argsort(llm_scores, descending=True)[:3].tolist())  # the first stage matters here
    expected = sorted(mf_top, key=lambda index: -llm_scores[index])
    indices, scores = two_stage_rank(model, processor, user, candidates, num_rerank=3)
    assert indices.tolist() == expected
    torch.testing.assert_close(scores, llm_scores[expected], atol=1e-5, rtol=0)
    indices, _ = two_stage_rank(model, processor, user, candidates, num_rerank=3, top_k=2)
    assert indices.tolist() == expected[:2]


def test_two_stage_rank_takes_given_first_stage_scores_or_a_callable(tiny_tokenizer):
    model, processor = eval_model(tiny_tokenizer, "tallrec")  # no MF tables: the first stage must be given
    user = make_records(1, history_length=2)[0]
    candidates = make_candidates(6)
    llm_scores = score_candidates(model, processor, user, candidates)
    first_stage = [0.5, 3.0, -1.0, 2.0, 0.0, 1.0]  # top 3: candidates 1, 3, 5
    expected = sorted([1, 3, 5], key=lambda index: -llm_scores[index])
    indices, _ = two_stage_rank(model, processor, user, candidates, first_stage, num_rerank=3)
    assert indices.tolist() == expected
    seen = []

    def first_stage_callable(user_record, items):
        seen.append((user_record["user_id"], len(items)))
        return torch.tensor(first_stage)

    indices, _ = two_stage_rank(model, processor, user, candidates, first_stage_callable, num_rerank=3)
    assert indices.tolist() == expected and seen == [(user["user_id"], 6)]
    with pytest.raises(ValueError, match="no collaborative tables"):
        two_stage_rank(model, processor, user, candidates, num_rerank=3)


@pytest.mark.parametrize("num_rerank", [9, 50])
def test_two_stage_rank_of_all_candidates_equals_full_ranking(tiny_tokenizer, num_rerank):
    model, processor = eval_model(tiny_tokenizer, "userllm")
    user = make_records(1, history_length=4, seed=2)[0]
    candidates = make_candidates(9)
    expected_indices, expected_scores = rank_candidates(model, processor, user, candidates, batch_size=4)
    indices, scores = two_stage_rank(model, processor, user, candidates, num_rerank=num_rerank, batch_size=4)
    assert indices.tolist() == expected_indices.tolist()
    torch.testing.assert_close(scores, expected_scores, atol=1e-5, rtol=0)


def test_two_stage_rank_bad_arguments_raise(tiny_tokenizer):
    model, processor = eval_model(tiny_tokenizer, "userllm")
    user = make_records(1, history_length=2)[0]
    candidates = imaged_candidates()
    with pytest.raises(ValueError, match="num_rerank must be an integer >= 1.*got 0"):
        two_stage_rank(model, processor, user, candidates, num_rerank=0)
    with pytest.raises(ValueError, match="No candidate items given"):
        two_stage_rank(model, processor, user, [], num_rerank=3)
    with pytest.raises(ValueError, match=r"shape \(5,\); expected one score per candidate, shape \(6,\)"):
        two_stage_rank(model, processor, user, candidates, [1.0] * 5, num_rerank=3)
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        two_stage_rank(model, processor, user, candidates, num_rerank=3, top_k=0)
