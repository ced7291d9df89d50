"""The "recommendation" pipeline: candidate items ranked for a user by P(Yes).

Every USER-LLM checkpoint registers it (`config.custom_pipelines`) and carries this file, so

    from transformers import pipeline
    recommend = pipeline(model="ORG/userllm-movie", trust_remote_code=True)
    recommend({"user": {"user_id": 3, "history": [...]}, "candidates": [...]}, top_k=5)

works without the `userllm` package. The user's part of the prompt is encoded once and its key/value
cache shared by all candidates (`ranking.py`): the scores equal scoring each full prompt alone.
Importing this file registers the task with `PIPELINE_REGISTRY`, from which the model's
`save_pretrained` copies it; it imports only torch, transformers and its flat siblings.
"""

from collections.abc import Sequence

import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_userllm import RECOMMENDATION_TASK
from .ranking import check_candidate_items, check_top_k, rank_candidates


class RecommendationPipeline(Pipeline):
    """Ranks candidate items for one user, or for each user of a list, by P(Yes).

    Input, per user: `{"user": {"user_id": int, "history": [item, ...] (oldest first)},
    "candidates": [item, ...]}`, where an item is `{"item_id": int, "title": str,
    "description": str | None, "image_features": PIL image | image path | list of floats | None}`
    (see `UserLLMProcessor`). Posters given as images are encoded by the checkpoint's vision
    encoder, once per item.

    Call parameters:
        top_k (`int`, *optional*): how many items to return per user (an integer >= 1); all by default.
        candidate_batch_size (`int`, *optional*, defaults to 64): candidates per LLM forward.

    Returns, per user, a list of `{"item_id", "title", "score", "logit", "index"}` sorted by
    `score` = P(Yes | Yes or No), best first; `logit` = logit("Yes") - logit("No") and `index`
    the candidate's position in the input. A list of users gives a list of such lists.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __call__(self, inputs: dict | Sequence[dict], candidates: Sequence[dict] | None = None, **kwargs):
        """`pipe(user_input)`, `pipe([user_input, ...])` or `pipe(user, candidates=[...])` (see the class docstring)."""
        if candidates is not None:
            inputs = {"user": inputs, "candidates": candidates}
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, top_k: int | None = None, candidate_batch_size: int | None = None, **kwargs):
        if kwargs:
            raise TypeError(f"RecommendationPipeline got unexpected parameters {sorted(kwargs)}; "
                            "it takes top_k and candidate_batch_size")
        check_top_k(top_k)
        forward_parameters = {} if candidate_batch_size is None else {"candidate_batch_size": candidate_batch_size}
        postprocess_parameters = {} if top_k is None else {"top_k": top_k}
        return {}, forward_parameters, postprocess_parameters

    def preprocess(self, inputs: dict) -> dict:
        if not isinstance(inputs, dict) or "user" not in inputs or "candidates" not in inputs:
            raise ValueError('Each input must be a dict {"user": {"user_id", "history"}, "candidates": [items]}, got '
                             f"{type(inputs).__name__}" + (f" with keys {sorted(inputs)}" if isinstance(inputs, dict) else ""))
        user, candidates = inputs["user"], list(inputs["candidates"])
        if not isinstance(user, dict) or "user_id" not in user:
            raise ValueError('"user" must be a dict with "user_id" and "history" (a list of items, oldest first)')
        if not candidates:
            raise ValueError(f"user {user['user_id']}: no candidate items to rank")
        check_candidate_items(candidates, f"user {user['user_id']}, ")
        return {"user": {"user_id": user["user_id"], "history": list(user.get("history") or [])}, "candidates": candidates}

    def _forward(self, model_inputs: dict, candidate_batch_size: int = 64) -> dict:
        indices, logits = rank_candidates(
            self.model, self.processor, model_inputs["user"], model_inputs["candidates"], batch_size=candidate_batch_size
        )
        return {"indices": indices, "logits": logits, "candidates": model_inputs["candidates"]}

    def postprocess(self, model_outputs: dict, top_k: int | None = None) -> list[dict]:
        indices, logits = model_outputs["indices"], model_outputs["logits"].float()
        if top_k is not None:
            indices, logits = indices[:top_k], logits[:top_k]
        candidates = model_outputs["candidates"]
        return [
            {
                "item_id": candidates[index]["item_id"],
                "title": candidates[index].get("title"),
                "score": torch.sigmoid(logit).item(),
                "logit": logit.item(),
                "index": index,
            }
            for index, logit in zip(indices.tolist(), logits)
        ]


if RECOMMENDATION_TASK not in PIPELINE_REGISTRY.supported_tasks:
    PIPELINE_REGISTRY.register_pipeline(RECOMMENDATION_TASK, pipeline_class=RecommendationPipeline, pt_model=AutoModel,
                                        type="multimodal")

__all__ = ["RecommendationPipeline"]
