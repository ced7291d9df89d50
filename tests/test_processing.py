"""UserLLMProcessor: prompts, padding, truncation and validation of records."""

import logging

import pytest
import torch
from transformers import AutoTokenizer

from conftest import STORIES260K, build_tiny_model, make_records, requires_shared
from modeling_userllm import UserLLMProcessor
from modeling_userllm.processing_userllm import HISTORY_TOKEN, IMAGE_TOKEN, ITEM_TOKEN, USER_TOKEN


def _count(batch, token_id):
    return int((batch["input_ids"] == token_id).sum())


def test_placeholders_follow_the_variant(tiny_tokenizer):
    records = make_records(3, history_length=4)
    images_in_history = sum(item["image_features"] is not None for r in records for item in r["history"])
    for variant, expected in {
        "tallrec": dict(image=0, user=0, item=0, history=0),
        "collm": dict(image=0, user=3, item=3, history=0),
        "collm_va": dict(image=3 + images_in_history, user=3, item=3, history=0),
        "userllm": dict(image=3, user=3, item=3, history=3),
    }.items():
        _, processor = build_tiny_model(tiny_tokenizer, variant)
        batch = processor(records)
        ids = processor.placeholder_token_ids
        counts = {name: _count(batch, ids[f"{name}_token_id"]) for name in expected}
        assert counts == expected, variant
        assert batch.get("image_features", torch.empty(0, 384)).shape[0] == expected["image"]


def test_text_only_form_has_no_placeholders(tiny_tokenizer):
    _, processor = build_tiny_model(tiny_tokenizer, "userllm")
    records = make_records(2, history_length=3)
    batch = processor(records, text_only=True)
    placeholder_ids = torch.tensor(list(processor.placeholder_token_ids.values()))
    assert not torch.isin(batch["input_ids"], placeholder_ids).any()
    assert "history_input_ids" not in batch and "image_features" not in batch
    prompt = processor.decode_prompt(batch["input_ids"][0])
    for item in records[0]["history"]:
        assert item["title"].lower().replace("(", "( ").replace(")", " )") in prompt


def test_prompts_are_left_padded(tiny_tokenizer):
    _, processor = build_tiny_model(tiny_tokenizer, "userllm_no_uhem")
    records = make_records(2, history_length=1)
    records[1]["history"] = records[1]["history"] * 4
    batch = processor(records)
    assert batch["attention_mask"][:, -1].all()
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][1].all()


def test_each_item_text_is_truncated_to_max_item_tokens(tiny_tokenizer):
    _, processor = build_tiny_model(tiny_tokenizer, "userllm", max_item_tokens=3)
    record = make_records(1, history_length=4)[0]
    for item in record["history"]:
        item["image_features"] = None
    batch = processor([record])
    assert int(batch["history_attention_mask"].sum()) == 4 * 3


def test_only_the_most_recent_history_items_are_kept(tiny_tokenizer):
    _, processor = build_tiny_model(tiny_tokenizer, "userllm", max_history_items=2)
    record = make_records(1, history_length=5)[0]
    kept_last_two = processor([{**record, "history": record["history"][-2:]}])
    all_five = processor([record])
    assert torch.equal(kept_last_two["history_input_ids"], all_five["history_input_ids"])


def test_placeholder_tokens_are_added_once(tiny_tokenizer):
    first = UserLLMProcessor(tiny_tokenizer)
    size = len(tiny_tokenizer)
    second = UserLLMProcessor(tiny_tokenizer)
    assert len(tiny_tokenizer) == size
    assert first.placeholder_token_ids == second.placeholder_token_ids
    for token in (IMAGE_TOKEN, USER_TOKEN, ITEM_TOKEN, HISTORY_TOKEN):
        assert len(tiny_tokenizer(token, add_special_tokens=False).input_ids) == 1


def test_yes_and_no_tokens_are_where_the_answers_part(tiny_tokenizer):
    processor = UserLLMProcessor(tiny_tokenizer)
    ids = processor.answer_token_ids
    assert tiny_tokenizer.convert_ids_to_tokens([ids["yes_token_id"], ids["no_token_id"]]) == ["yes", "no"]


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda r: r.pop("title"), r"record 1: missing field 'title'"),
        (lambda r: r.update(image_features=[0.0] * 10), r"record 1: image_features has 10 values, expected 384"),
        (lambda r: r["history"][2].pop("item_id"), r"record 1, history item 2: missing field 'item_id'"),
        (lambda r: r["history"][0].update(image_features=[1.0]), r"record 1, history item 0: image_features has 1 values"),
        (lambda r: r.update(history="Heat"), r"record 1: field 'history' must be a list"),
        (lambda r: r.update(label=3), r"record 1: field 'label' must be 0 or 1"),
        (lambda r: r["image_features"].__setitem__(3, float("nan")), r"record 1: image_features\[3\] is nan; features must be finite"),
        (lambda r: r["history"][1].update(image_features=[float("inf")] * 384), r"record 1, history item 1: image_features\[0\] is inf"),
        # A string is a poster path (posters may be given as images): a missing file is named.
        (lambda r: r.update(image_features="0.1 0.2"), r"record 1: image_features names the poster file 0.1 0.2, which does not exist"),
        (lambda r: r.update(image_features=b"0.1"), r"record 1: image_features must be a list of 384 numbers, a PIL image, an image path or None, got bytes"),
        (lambda r: r["image_features"].__setitem__(383, "x"), r"record 1: image_features\[383\] must be a number, got str"),
        (lambda r: r.pop("label"), r"record 1: 'label' is missing while record 0 has one"),
        (lambda r: r.update(user_id=3.7), r"record 1: field 'user_id' must be an integer, got float 3.7"),
        (lambda r: r.update(item_id="u3"), r"record 1: field 'item_id' must be an integer, got str"),
        (lambda r: r.update(user_id=None), r"record 1: field 'user_id' must be an integer, got NoneType"),
        (lambda r: r.update(user_id=2**63), r"record 1: field 'user_id' = 9223372036854775808 does not fit in a 64-bit integer"),
        (lambda r: r["history"][0].update(title=None), r"record 1, history item 0: field 'title' must be a string, got NoneType"),
    ],
)
def test_malformed_records_raise_naming_index_and_field(tiny_tokenizer, corrupt, message):
    _, processor = build_tiny_model(tiny_tokenizer)
    records = make_records(2, history_length=3)
    corrupt(records[1])
    with pytest.raises(ValueError, match=message):
        processor(records)


def test_processor_round_trips_through_save_pretrained(tiny_tokenizer, tmp_path):
    _, processor = build_tiny_model(tiny_tokenizer, "collm_va", max_item_tokens=7)
    processor.save_pretrained(tmp_path)
    reloaded = UserLLMProcessor.from_pretrained(tmp_path)
    assert reloaded.max_item_tokens == 7 and not reloaded.use_history_encoder
    records = make_records(3)
    for key, value in processor(records).items():
        assert torch.equal(value, reloaded(records)[key]), key


# ----------------------------------------------------------------------------- titles over the budget


@requires_shared(STORIES260K)
@pytest.mark.parametrize("title", ["千と千尋の神隠し (2001)", "🎬🎬🎬🎬🎬🎬🎬🎬 (2020)"])
def test_a_title_whose_first_word_is_over_the_budget_is_cut_inside_that_word(title):
    # With the 512-piece tokenizer every CJK character or emoji is three byte tokens.
    tokenizer = AutoTokenizer.from_pretrained(STORIES260K)
    processor = UserLLMProcessor(tokenizer, max_item_tokens=16)
    text = processor.item_text({"title": title, "description": "A girl lost in a world of spirits."})
    first_word = title.split()[0]
    assert text.startswith('"') and text.endswith('"') and 1 <= len(text) - 2 < len(first_word)
    assert first_word.startswith(text[1:-1])
    assert len(tokenizer(text, add_special_tokens=False).input_ids) <= 16
    assert processor.num_truncated_item_texts == 1


@requires_shared(STORIES260K)
def test_every_item_text_cut_in_a_call_is_counted_in_one_warning(caplog):
    tokenizer = AutoTokenizer.from_pretrained(STORIES260K)
    processor = UserLLMProcessor(tokenizer, max_item_tokens=16)
    long = [{"item_id": index, "title": title, "description": "A long story told in many more words than fit."}
            for index, title in enumerate(["Toy Story (1995)", "千と千尋の神隠し (2001)", "Heat (1995)", "Casino (1995)"])]
    records = [{"user_id": 0, **long[0], "history": [long[1]]}, {"user_id": 1, **long[2], "history": [long[1]]}]

    def cut_warnings() -> list[str]:
        return [record.getMessage() for record in caplog.records if "max_item_tokens=16" in record.getMessage()]

    with caplog.at_level(logging.WARNING):
        processor(records)
        assert len(cut_warnings()) == 1
        assert cut_warnings()[0].startswith("3 item text(s) had more than max_item_tokens=16 tokens and were cut")
        assert "except 1 title(s) whose first word alone is over the budget" in cut_warnings()[0]
        caplog.clear()
        processor(records)  # the same texts, already cut and reported
        assert cut_warnings() == []
        processor.split_prompts([{**records[0], **long[3]}, {**records[1], **long[3]}])
        assert len(cut_warnings()) == 1 and cut_warnings()[0].startswith("1 item text(s)")
    assert processor.num_truncated_item_texts == 4


@requires_shared(STORIES260K)
def test_decode_prompt_strips_the_padding_of_a_tokenizer_without_pad_token():
    tokenizer = AutoTokenizer.from_pretrained(STORIES260K)
    assert tokenizer.pad_token_id is None  # batches pad with EOS
    processor = UserLLMProcessor(tokenizer, use_visual=False, use_collaborative=False)
    long, short = make_records(2, history_length=4)
    short["history"] = short["history"][:1]
    batch = processor([long, short])
    assert batch["attention_mask"][1, 0] == 0 and batch["input_ids"][1, 0] == tokenizer.eos_token_id
    alone = processor([short])["input_ids"][0]
    assert processor.decode_prompt(batch["input_ids"][1]) == tokenizer.decode(alone)
    assert tokenizer.eos_token not in processor.decode_prompt(batch["input_ids"][1])
