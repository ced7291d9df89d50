"""AUC and UAUC of USER-LLM as an `evaluate` metric, loadable offline (`evaluate.load("roc_auc")` needs the Hub).

    metric = evaluate.load(modeling_userllm.training.EVALUATE_METRIC_PATH)
    metric.compute(predictions=scores, references=labels, user_ids=user_ids)  # {"auc": ..., "uauc": ...}
"""

import datasets
import evaluate

from modeling_userllm.metrics import auc, uauc

_DESCRIPTION = """\
AUC: area under the ROC curve over all rows, ties counted one half. UAUC: unweighted mean of the
per-user AUC over the users that have both a positive and a negative row (as in CoLLM and the
USER-LLM paper); NaN when no user has both classes.
"""
_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list[float]`): scores, higher = more likely liked.
    references (`list[int]`): 0/1 labels.
    user_ids (`list[int]`): the user of each row.
Returns:
    `{"auc": float, "uauc": float}`
"""
_CITATION = "Zhang et al., CoLLM: Integrating Collaborative Embeddings into Large Language Models for Recommendation, arXiv:2310.19488 (2023)"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class UserllmAuc(evaluate.Metric):
    def _info(self):
        features = {"predictions": datasets.Value("float64"), "references": datasets.Value("int64"),
                    "user_ids": datasets.Value("int64")}
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
                                   features=datasets.Features(features))

    def _compute(self, predictions, references, user_ids):
        return {"auc": auc(references, predictions), "uauc": uauc(user_ids, references, predictions)}
