"""Ranking metrics of the paper: AUC over all rows and UAUC (per-user AUC, averaged).

Both take raw scores (logits or probabilities: AUC only depends on their order) and binary
labels. Ties between a positive and a negative count one half, as in the Mann-Whitney U
statistic and `sklearn.metrics.roc_auc_score`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


class UndefinedMetricError(ValueError):
    """The rows cannot define the metric (e.g. AUC of rows of one class); the inputs are well formed."""


def _checked_rows(**columns: ArrayLike) -> list[np.ndarray]:
    """The columns as 1-D arrays of one length, labels 0/1 and scores finite; else a `ValueError`.

    A 2-D array is refused rather than flattened: `(n, 2)` scores (e.g. both answer logits)
    flattened would silently pair each label with the wrong number.
    """
    arrays = []
    for name, values in columns.items():
        array = np.asarray(values, dtype=np.float64 if name == "scores" else None)
        if array.ndim != 1:
            raise ValueError(f"{name} must be one value per row (1-D), got an array of shape {array.shape}")
        if name == "labels" and not np.isin(array, (0, 1)).all():
            raise ValueError(f"labels must be 0 or 1, got values {sorted(set(array.tolist()))[:5]}")
        if name == "scores" and not np.isfinite(array).all():
            raise ValueError(f"{int((~np.isfinite(array)).sum())} scores are NaN or infinite")
        arrays.append(array)
    lengths = {name: len(array) for name, array in zip(columns, arrays)}
    if len(set(lengths.values())) > 1:
        raise ValueError("the columns differ in length: " + ", ".join(f"{name} {n}" for name, n in lengths.items()))
    return arrays


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, then the mean rank of that run.
    run_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_ends = np.r_[run_starts[1:], len(values)]
    mean_rank_per_run = (run_starts + run_ends + 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank_per_run, run_ends - run_starts)
    return ranks


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve.

    AUC = (sum of the ranks of the positives - P(P+1)/2) / (P * N), with P positives, N
    negatives and tied scores given their average rank.

    Args:
        labels: `(num_rows,)` 0/1 labels.
        scores: `(num_rows,)` scores, higher meaning "more likely positive".

    Returns:
        The AUC in [0, 1].

    Raises:
        ValueError: if the lengths differ, a label is not 0/1 or a score is not finite.
        UndefinedMetricError: only one class is present (AUC is undefined then).
    """
    labels, scores = _checked_rows(labels=labels, scores=scores)
    num_pos = int(labels.sum())
    num_neg = len(labels) - num_pos
    if num_pos == 0 or num_neg == 0:
        raise UndefinedMetricError(f"AUC needs both classes; got {num_pos} positives and {num_neg} negatives")
    ranks = _average_ranks(scores)
    return float((ranks[labels == 1].sum() - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg))


def uauc(user_ids: ArrayLike, labels: ArrayLike, scores: ArrayLike) -> float:
    """User-averaged AUC, as defined by CoLLM and the USER-LLM paper.

    UAUC = (1 / |U'|) * sum over u in U' of AUC(rows of u), where U' is the set of users that
    have at least one positive and one negative row. Users with a single class are skipped
    (their AUC is undefined); each kept user weighs the same, whatever their row count.

    Args:
        user_ids: `(num_rows,)` user of each row.
        labels: `(num_rows,)` 0/1 labels.
        scores: `(num_rows,)` scores.

    Returns:
        The UAUC, or NaN (with a warning) when no user has both classes.

    Raises:
        ValueError: as `auc` does for malformed inputs (lengths, labels, scores, shapes).
    """
    user_ids, labels, scores = _checked_rows(user_ids=user_ids, labels=labels, scores=scores)
    order = np.argsort(user_ids, kind="mergesort")
    user_ids, labels, scores = user_ids[order], labels[order], scores[order]
    boundaries = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1], True])
    per_user = []
    for start, end in zip(boundaries[:-1], boundaries[1:]):
        user_labels = labels[start:end]
        if 0 < user_labels.sum() < len(user_labels):
            per_user.append(auc(user_labels, scores[start:end]))
    if not per_user:
        warnings.warn("UAUC is undefined: no user has both a positive and a negative row", stacklevel=2)
        return float("nan")
    return float(np.mean(per_user))


def auc_and_uauc(user_ids: ArrayLike, labels: ArrayLike, scores: ArrayLike) -> dict[str, float]:
    """Both metrics at once, as `{"auc": ..., "uauc": ...}`."""
    return {"auc": auc(labels, scores), "uauc": uauc(user_ids, labels, scores)}


def undefined_metrics(user_ids: ArrayLike, labels: ArrayLike) -> dict[str, str]:
    """Why AUC or UAUC cannot be computed on these rows: `{metric: reason}` for each undefined one
    (empty when both are defined)."""
    user_ids, labels = _checked_rows(user_ids=user_ids, labels=labels)
    reasons = {}
    num_pos = int(labels.sum())
    if num_pos in (0, len(labels)):
        reasons["auc"] = f"AUC needs both classes; the rows hold {num_pos} positives and {len(labels) - num_pos} negatives"
    positive_users, negative_users = set(user_ids[labels == 1].tolist()), set(user_ids[labels == 0].tolist())
    if not positive_users & negative_users:
        reasons["uauc"] = (f"UAUC needs a user with both a positive and a negative row; none of the "
                           f"{len(set(user_ids.tolist()))} users has both")
    return reasons
