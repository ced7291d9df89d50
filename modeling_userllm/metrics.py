"""The paper's ranking metrics: AUC over all rows and UAUC, the unweighted mean of per-user AUCs.

Both take raw scores (only their order matters) and 0/1 labels. A tie between a positive and a negative
counts one half, as in the Mann-Whitney U statistic and `sklearn.metrics.roc_auc_score`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

ArrayLike = Sequence[float] | np.ndarray


class UndefinedMetricError(ValueError):
    """The rows cannot define the metric (e.g. AUC of rows of one class); the inputs are well formed."""


def _checked_rows(**columns: ArrayLike) -> list[np.ndarray]:
    """The columns as 1-D arrays of one length, labels 0/1 and scores finite float64; else a `ValueError`.

    A 2-D array is refused, not flattened: `(n, 2)` scores flattened would pair each label with the wrong number.
    """
    arrays = []
    for name, values in columns.items():
        is_scores = name.startswith("scores")
        array = np.asarray(values, dtype=np.float64 if is_scores else None)
        if array.ndim != 1:
            raise ValueError(f"{name} must be one value per row (1-D), got an array of shape {array.shape}")
        if name == "labels" and not np.isin(array, (0, 1)).all():
            raise ValueError(f"labels must be 0 or 1, got values {sorted(set(array.tolist()))[:5]}")
        if is_scores and not np.isfinite(array).all():
            raise ValueError(f"{int((~np.isfinite(array)).sum())} scores are NaN or infinite")
        arrays.append(array)
    lengths = {name: len(array) for name, array in zip(columns, arrays)}
    if len(set(lengths.values())) > 1:
        raise ValueError("the columns differ in length: " + ", ".join(f"{name} {n}" for name, n in lengths.items()))
    return arrays


def _auc_from_ranks(positive_rank_sum, num_pos, num_neg):
    """AUC = (sum of the positives' ranks - P(P+1)/2) / (P N), ranks from 1, tied scores sharing their mean rank."""
    return (positive_rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg)


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve of `(num_rows,)` 0/1 labels and scores (higher = more likely positive), in [0, 1].

    Raises:
        ValueError: the lengths differ, a label is not 0/1 or a score is not finite.
        UndefinedMetricError: only one class is present.
    """
    labels, scores = _checked_rows(labels=labels, scores=scores)
    num_pos = int(labels.sum())
    num_neg = len(labels) - num_pos
    if num_pos == 0 or num_neg == 0:
        raise UndefinedMetricError(f"AUC needs both classes; got {num_pos} positives and {num_neg} negatives")
    ranks = pd.Series(scores).rank().to_numpy()
    return float(_auc_from_ranks(ranks[labels == 1].sum(), num_pos, num_neg))


def uauc(user_ids: ArrayLike, labels: ArrayLike, scores: ArrayLike) -> float:
    """User-averaged AUC (CoLLM, USER-LLM): the mean of `auc` over the users that have both a positive and a
    negative row, each user weighing the same whatever their row count; the others are skipped.

    Args:
        user_ids, labels, scores: `(num_rows,)` each.

    Returns:
        The UAUC, or NaN (with a warning) when no user has both classes.

    Raises:
        ValueError: as `auc` does for malformed inputs.
    """
    user_ids, labels, scores = _checked_rows(user_ids=user_ids, labels=labels, scores=scores)
    ranks = pd.Series(scores).groupby(user_ids).rank().to_numpy()  # within each user
    by_user = pd.DataFrame({"positives": labels, "positive_ranks": ranks * labels}).groupby(user_ids)
    num_pos, rank_sum = by_user["positives"].sum(), by_user["positive_ranks"].sum()
    num_neg = by_user.size() - num_pos
    both = (num_pos > 0) & (num_neg > 0)
    if not both.any():
        warnings.warn("UAUC is undefined: no user has both a positive and a negative row", stacklevel=2)
        return float("nan")
    return float(np.mean(_auc_from_ranks(rank_sum[both], num_pos[both], num_neg[both]).to_numpy()))


def auc_and_uauc(user_ids: ArrayLike, labels: ArrayLike, scores: ArrayLike) -> dict[str, float]:
    """Both metrics at once, as `{"auc": ..., "uauc": ...}`."""
    return {"auc": auc(labels, scores), "uauc": uauc(user_ids, labels, scores)}


def undefined_metrics(user_ids: ArrayLike, labels: ArrayLike) -> dict[str, str]:
    """`{metric: reason}` for each of AUC and UAUC that these rows cannot define (empty when both are defined)."""
    user_ids, labels = _checked_rows(user_ids=user_ids, labels=labels)
    reasons = {}
    num_pos = int(labels.sum())
    if num_pos in (0, len(labels)):
        reasons["auc"] = f"AUC needs both classes; the rows hold {num_pos} positives and {len(labels) - num_pos} negatives"
    if not set(user_ids[labels == 1].tolist()) & set(user_ids[labels == 0].tolist()):
        reasons["uauc"] = (f"UAUC needs a user with both a positive and a negative row; none of the "
                           f"{len(set(user_ids.tolist()))} users has both")
    return reasons


def paired_user_bootstrap(user_ids: ArrayLike, labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike,
                          num_resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """How sure is "system A beats system B" on the same rows: a bootstrap over users (a user's rows stay together,
    as they are not independent), both systems scored on each resample.

    Args:
        user_ids, labels: `(num_rows,)` the rows both systems scored.
        scores_a, scores_b: `(num_rows,)` each system's scores of those rows.
        num_resamples: resamples of the users, drawn with replacement (a user drawn twice counts as two users).

    Returns:
        `{"auc": stats, "uauc": stats}`, each `stats` holding `a`, `b` and `difference` (a - b) on the rows given,
        `ci95` (the 2.5 and 97.5 percentiles of the resampled differences) and `fraction_not_above` (the share of
        resamples where a <= b: a one-sided bootstrap p-value of "a is better").
    """
    user_ids, labels, scores_a, scores_b = _checked_rows(user_ids=user_ids, labels=labels, scores_a=scores_a,
                                                         scores_b=scores_b)
    users, inverse = np.unique(user_ids, return_inverse=True)
    rows_of_user = [np.flatnonzero(inverse == index) for index in range(len(users))]
    observed = {name: (auc_and_uauc(user_ids, labels, scores_a)[name], auc_and_uauc(user_ids, labels, scores_b)[name])
                for name in ("auc", "uauc")}
    generator = np.random.default_rng(seed)
    differences = {"auc": [], "uauc": []}
    for _ in range(num_resamples):
        drawn = generator.integers(len(users), size=len(users))
        rows = np.concatenate([rows_of_user[user] for user in drawn])
        copies = np.repeat(np.arange(len(drawn)), [len(rows_of_user[user]) for user in drawn])
        if labels[rows].min() == labels[rows].max():
            continue  # a resample of one class defines neither metric
        differences["auc"].append(auc(labels[rows], scores_a[rows]) - auc(labels[rows], scores_b[rows]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            differences["uauc"].append(uauc(copies, labels[rows], scores_a[rows]) - uauc(copies, labels[rows], scores_b[rows]))
    result = {}
    for name, values in differences.items():
        values = np.asarray(values)
        values = values[np.isfinite(values)]
        a, b = observed[name]
        result[name] = {"a": a, "b": b, "difference": a - b,
                        "ci95": [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))],
                        "fraction_not_above": float(np.mean(values <= 0)), "resamples": int(len(values))}
    return result
