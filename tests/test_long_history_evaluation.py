"""Table 5 at evaluation: test_long rows reach the model with their long history; subsets are whole users."""

from types import SimpleNamespace

import pytest

from conftest import build_tiny_model
from test_data_protocol import build, random_log

from modeling_userllm.data import RecordBuilder
from modeling_userllm.training.datasets import RunData, history_items_for_split, with_history_items
from modeling_userllm.training.pipeline import evaluate_splits

N, LONG_MIN, LONG = 3, 5, 6


@pytest.fixture(scope="module")
def data():
    return build(random_log(), history_length=N, long_min_history=LONG_MIN, long_history_length=LONG)


@pytest.mark.parametrize("variant", ["userllm", "userllm_no_uhem", "collm_va"])
def test_long_rows_give_the_model_more_than_n_history_items(tiny_tokenizer, data, variant):
    _, processor = build_tiny_model(tiny_tokenizer, variant, max_history_items=N)
    records = RecordBuilder(data)([data.interactions["test_long"][0]])
    assert len(records[0]["history"]) == LONG > N
    short = processor(records)
    long = with_history_items(processor, history_items_for_split(data, "test_long", N))(records)
    if processor.use_history_encoder:
        # USER-LLM: the same one-token prompt, a longer UHEM sequence
        assert long["input_ids"].shape == short["input_ids"].shape
        assert long["history_input_ids"].shape[1] > short["history_input_ids"].shape[1]
    else:
        # inline variants: the prompt grows with the history
        assert long["input_ids"].shape[1] > short["input_ids"].shape[1]
    assert processor.max_history_items == N  # the model's own processor keeps n


class StubTrainer:
    """Records the processor and batch the evaluation of each split was given."""

    def __init__(self, processor):
        self.processing_class = processor
        self.callback_handler = SimpleNamespace(callbacks=[])  # no progress bar to label
        self.seen = {}

    def evaluate(self, eval_dataset, metric_key_prefix):
        records = [eval_dataset[index] for index in range(len(eval_dataset))]
        self.seen[metric_key_prefix] = (self.data_collator.processor.max_history_items, records)
        values = {"auc": 0.5, "uauc": 0.5, "rows": len(eval_dataset), "loss": 0.0}
        return {f"{metric_key_prefix}_{name}": value for name, value in values.items()}


def test_evaluation_scores_test_long_with_long_histories_and_test_short_with_n(tiny_tokenizer, data):
    _, processor = build_tiny_model(tiny_tokenizer, "userllm_no_uhem", max_history_items=N)
    trainer = StubTrainer(processor)
    run_data = RunData(data=data, features=None, builder=RecordBuilder(data))
    metrics = evaluate_splits(trainer, run_data, ["test_short", "test_long"], None, 0)
    assert trainer.seen["test_short"][0] == N and trainer.seen["test_long"][0] == LONG
    assert all(len(record["history"]) >= LONG_MIN for record in trainer.seen["test_long"][1])
    assert metrics["test_long"]["history_items"] == LONG and metrics["test_short"]["history_items"] == N
    assert metrics["test_short"]["rows"] == len(data.interactions["test"])
    assert metrics["test_short"]["users"] == len(set(data.interactions["test"]["user_id"]))


def test_evaluation_subsets_are_whole_users_drawn_with_the_seed(data):
    run_data = RunData(data=data, features=None, builder=RecordBuilder(data))
    test = data.interactions["test"].to_pandas()
    subset, users = run_data.user_subset("test", max_rows=12, seed=1)
    again, _ = run_data.user_subset("test", max_rows=12, seed=1)
    picked = subset.rows.to_pandas()
    assert 0 < len(picked) <= 12 and users == picked.user_id.nunique()
    for user, rows in picked.groupby("user_id"):
        assert len(rows) == (test.user_id == user).sum()  # every row of a chosen user
    assert picked.equals(again.rows.to_pandas())
    assert run_data.user_subset("test", max_rows=None)[1] == test.user_id.nunique()


def test_evaluating_a_missing_split_names_it(tiny_tokenizer, data):
    _, processor = build_tiny_model(tiny_tokenizer, "userllm", max_history_items=N)
    run_data = RunData(data=data, features=None, builder=RecordBuilder(data))
    with pytest.raises(ValueError, match="split 'test_medium' is not in the data set"):
        evaluate_splits(StubTrainer(processor), run_data, ["test_medium"], None, 0)
