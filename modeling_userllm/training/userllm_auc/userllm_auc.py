"""AUC and UAUC of USER-LLM as an `evaluate` metric, loadable offline.

    import evaluate
    from modeling_userllm.training import EVALUATE_METRIC_PATH
    metric = evaluate.load(EVALUATE_METRIC_PATH)
    metric.compute(predictions=scores, references=labels, user_ids=user_ids)
    # {"auc": ..., "uauc": ...}

(`evaluate.load("roc_auc")` fetches its script from the Hub; this one ships in the package.)
"""

import datasets
import evaluate

from modeling_userllm.metrics import auc, uauc

_DESCRIPTION = """\
AUC: area under the ROC curve over all rows, ties counted one half.
UAUC: unweighted mean of the per-user AUC over the users that have both a positive and a
negative row; users with a single class are skipped (as in CoLLM and the USER-LLM paper);
NaN when no user has both classes.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list[float]`): scores, higher = more likely liked (logits or probabilities).
    references (`list[int]`): 0/1 labels.
    user_ids (`list[int]`): the user of each row.
Returns:
    `{"auc": float, "uauc": float}`
"""

_CITATION = """\
@article{zhang2023collm,
  title={CoLLM: Integrating Collaborative Embeddings into Large Language Models for Recommendation},
  author={Zhang, Yang and Feng, Fuli and Zhang, Jizhi and Bao, Keqin and Wang, Qifan and He, Xiangnan},
  journal={arXiv preprint arXiv:2310.19488},
  year={2023}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class UserllmAuc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("float64"),
                    "references": datasets.Value("int64"),
                    "user_ids": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, user_ids):
        return {"auc": auc(references, predictions), "uauc": uauc(user_ids, references, predictions)}
