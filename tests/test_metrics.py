"""AUC / UAUC: hand-computed cases, ties, single-class users, and the offline `evaluate` module."""

import math

import evaluate
import numpy as np
import pytest

from modeling_userllm.metrics import UndefinedMetricError, auc, auc_and_uauc, paired_user_bootstrap, uauc, undefined_metrics
from modeling_userllm.training import EVALUATE_METRIC_PATH


def test_auc_equals_the_fraction_of_correctly_ordered_pairs():
    # Positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) -> 3/4.
    assert auc([1, 0, 1, 0], [0.9, 0.5, 0.4, 0.1]) == pytest.approx(0.75)


def test_auc_counts_a_tied_pair_one_half():
    # Pairs: (0.7 vs 0.7) tie = 1/2, (0.7 vs 0.2) = 1, (0.3 vs 0.7) = 0, (0.3 vs 0.2) = 1 -> 2.5/4.
    assert auc([1, 0, 1, 0], [0.7, 0.7, 0.3, 0.2]) == pytest.approx(0.625)
    assert auc([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)


def test_auc_depends_only_on_the_order_of_scores():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200)
    assert auc(labels, scores) == pytest.approx(auc(labels, 1 / (1 + np.exp(-scores))))


def test_auc_with_one_class_raises():
    with pytest.raises(UndefinedMetricError, match="both classes"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_undefined_metrics_say_why_each_one_is_undefined():
    assert undefined_metrics([0, 0, 1, 1], [1, 0, 1, 1]) == {}
    assert set(undefined_metrics([0, 1], [1, 0])) == {"uauc"}  # both classes, but no user has both
    reasons = undefined_metrics([0, 0, 1], [1, 1, 1])
    assert "3 positives and 0 negatives" in reasons["auc"] and "none of the 2 users" in reasons["uauc"]


def test_uauc_skips_users_with_a_single_class_and_weighs_users_equally():
    user_ids = [0, 0, 0, 0, 1, 1, 2, 2, 2]
    labels = [1, 0, 1, 0, 1, 0, 1, 1, 1]   # user 2 has positives only: skipped
    scores = [0.9, 0.5, 0.4, 0.1, 0.2, 0.8, 0.1, 0.2, 0.3]
    # user 0: 3/4 (see above); user 1: 0/1 -> mean 0.375, whatever their row counts.
    assert uauc(user_ids, labels, scores) == pytest.approx(0.375)
    assert auc_and_uauc(user_ids, labels, scores)["auc"] == pytest.approx(auc(labels, scores))


def test_uauc_groups_rows_of_a_user_wherever_they_are():
    # The rows of users 0 and 1 interleave; grouped, user 0 has 3/4 and user 1 has 0/1.
    user_ids = [0, 1, 0, 0, 1, 0]
    labels = [1, 1, 0, 1, 0, 0]
    scores = [0.9, 0.2, 0.5, 0.4, 0.8, 0.1]
    assert uauc(user_ids, labels, scores) == pytest.approx(0.375)
    assert uauc(np.array(user_ids)[::-1], np.array(labels)[::-1], np.array(scores)[::-1]) == pytest.approx(0.375)


def test_uauc_is_the_mean_of_each_users_auc_on_random_rows_with_ties():
    rng = np.random.default_rng(0)
    user_ids, labels, scores = rng.integers(0, 40, 600), rng.integers(0, 2, 600), rng.integers(0, 5, 600) / 4
    per_user = [auc(labels[user_ids == user], scores[user_ids == user]) for user in np.unique(user_ids)
                if 0 < labels[user_ids == user].sum() < (user_ids == user).sum()]
    assert uauc(user_ids, labels, scores) == pytest.approx(np.mean(per_user), abs=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda: uauc([0, 0], [2, 0], [0.1, 0.2]), "labels must be 0 or 1"),
    (lambda: uauc([0, 0], [-1, 1], [0.1, 0.2]), "labels must be 0 or 1"),
    (lambda: uauc([0, 0, 1], [1, 0], [0.1, 0.2]), "differ in length: user_ids 3, labels 2, scores 2"),
    (lambda: auc([1, 0], [[0.1, 0.2], [0.3, 0.4]]), r"scores must be one value per row \(1-D\), got an array of shape \(2, 2\)"),
    (lambda: uauc([0, 0], [1, 0], [float("nan"), 0.2]), "1 scores are NaN or infinite"),
])
def test_malformed_metric_inputs_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_uauc_is_nan_with_a_warning_when_no_user_has_both_classes():
    with pytest.warns(UserWarning, match="undefined"):
        assert math.isnan(uauc([0, 0, 1], [1, 1, 0], [0.1, 0.2, 0.3]))


def test_evaluate_module_loads_offline_and_matches_the_package_metrics():
    metric = evaluate.load(EVALUATE_METRIC_PATH)
    user_ids = [0, 0, 0, 0, 1, 1, 2, 2, 2]
    labels = [1, 0, 1, 0, 1, 0, 1, 1, 1]
    scores = [0.9, 0.5, 0.4, 0.1, 0.2, 0.8, 0.1, 0.2, 0.3]
    result = metric.compute(predictions=scores, references=labels, user_ids=user_ids)
    assert result == pytest.approx(auc_and_uauc(user_ids, labels, scores))


def test_evaluate_module_accumulates_batches():
    metric = evaluate.load(EVALUATE_METRIC_PATH)
    metric.add_batch(predictions=[0.9, 0.5], references=[1, 0], user_ids=[0, 0])
    metric.add_batch(predictions=[0.4, 0.1], references=[1, 0], user_ids=[0, 0])
    assert metric.compute() == pytest.approx({"auc": 0.75, "uauc": 0.75})


def test_paired_user_bootstrap_separates_a_better_system_from_a_copy():
    generator = np.random.default_rng(0)
    user_ids = generator.integers(60, size=600)
    labels = generator.integers(2, size=600)
    better, worse = labels + generator.normal(size=600), labels + 3 * generator.normal(size=600)
    result = paired_user_bootstrap(user_ids, labels, better, worse, num_resamples=200)
    assert result["auc"]["a"] == pytest.approx(auc(labels, better))
    assert result["uauc"]["b"] == pytest.approx(uauc(user_ids, labels, worse))
    assert result["auc"]["ci95"][0] > 0 and result["auc"]["fraction_not_above"] < 0.01
    same = paired_user_bootstrap(user_ids, labels, better, better + 0.0, num_resamples=50)
    assert same["auc"]["difference"] == 0 and same["auc"]["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="differ in length"):
        paired_user_bootstrap(user_ids, labels, better, worse[:-1])
