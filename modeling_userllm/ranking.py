"""Top-K recommendation: scoring many candidate items for one user with a shared prompt prefix.

Every USER-LLM prompt starts with the part that depends only on the user (template, history
or `<HistoryInteractions>`, `<UserID>`) and ends with the candidate's part (its text,
`<Image>`, `<ItemID>`, the answer cue). Scoring N candidates from scratch runs the LLM (and
the UHEM) over the user's part N times. Here it runs once: its key/value cache is expanded
to each batch of candidate suffixes, which are left-padded between prefix and suffix, so
every candidate keeps the positions it has in its own prompt and the scores equal
independent scoring.

This file is copied next to the weights with the recommendation pipeline
(`pipeline_userllm.py` imports it), so, like the model files, it imports only torch,
transformers, the standard library and its flat siblings.
"""

from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache

from .modeling_userllm import UserLLMForRecommendation
from .processing_userllm import UserLLMProcessor, is_raw_image, open_poster, pad_sequences


def candidate_records(user_record: dict, candidate_items: Sequence[dict]) -> list[dict]:
    """One record per candidate: the user's fields with the candidate's item fields."""
    user_fields = {key: value for key, value in user_record.items() if key != "label"}
    return [{**user_fields, **candidate} for candidate in candidate_items]


@torch.no_grad()
def with_poster_features(
    model: UserLLMForRecommendation, processor: UserLLMProcessor, items: Sequence[dict], where: str = "item", batch_size: int = 32
) -> list[dict]:
    """The items with every poster given as an image (PIL image or path) replaced by its features.

    The features come from the model's vision encoder (`get_image_features`), computed once per
    item rather than once per prompt that shows it; items with precomputed features or none
    are returned as they are.

    Args:
        model: the USER-LLM (with a vision encoder, if any poster is an image).
        processor: its processor (its image processor prepares the posters).
        items: item dicts (`item_id`, `title`, `description`, `image_features`).
        where: how errors name an item, e.g. "candidate" -> "candidate 3: ...".
        batch_size: posters per vision-encoder forward.

    Returns:
        A new list of items; `image_features` of a poster item is a list of `vision_feature_size` floats.
    """
    posters = [index for index, item in enumerate(items) if is_raw_image(item.get("image_features"))]
    resolved = list(items)
    for start in range(0, len(posters), batch_size):
        rows = posters[start : start + batch_size]
        images = [open_poster(items[row]["image_features"], f"{where} {row}") for row in rows]
        pixel_values = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        features = model.get_image_features(pixel_values).cpu().tolist()  # (len(rows), vision_feature_size)
        for row, row_features in zip(rows, features):
            resolved[row] = {**items[row], "image_features": row_features}
    return resolved


def _features(rows: list, model: UserLLMForRecommendation) -> torch.Tensor | None:
    """Feature lists -> `(len(rows), feature_size)` on the model's device, None when empty."""
    return torch.tensor(rows, dtype=torch.float32, device=model.device) if rows else None


@torch.no_grad()
def encode_prefix(model: UserLLMForRecommendation, split: dict, user_id: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Runs the LLM (and the UHEM) over the user-dependent prompt prefix once.

    Args:
        model: the USER-LLM.
        split: `UserLLMProcessor.split_prompt` of any of the user's candidate records.
        user_id: the user's id (for `<UserID>`).

    Returns:
        Per LLM layer, the prefix keys and values, each `(1, num_kv_heads, prefix_len, head_dim)`.
    """
    device = model.device
    input_ids = torch.tensor([split["prefix_ids"]], device=device)  # (1, P)
    history = {}
    if split["history_ids"] is not None:
        history_ids, history_mask = pad_sequences([split["history_ids"]], 0, left=False)
        history = {
            "history_input_ids": history_ids.to(device),
            "history_attention_mask": history_mask.to(device),
            "history_image_features": _features(split["history_image_features"], model),
        }
    output = model(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        image_features=_features(split["prefix_image_features"], model),
        user_ids=torch.tensor([user_id], device=device),
        use_cache=True,
        **history,
    )
    return tuple((keys, values) for keys, values, *_ in output.cache)


@torch.no_grad()
def score_suffixes(
    model: UserLLMForRecommendation,
    prefix_cache: tuple[tuple[torch.Tensor, torch.Tensor], ...],
    splits: Sequence[dict],
    item_ids: Sequence[int],
    pad_token_id: int,
) -> torch.Tensor:
    """Scores one batch of candidate suffixes on top of a prefix cache.

    Args:
        model: the USER-LLM.
        prefix_cache: from `encode_prefix`.
        splits: `split_prompt` of each candidate record.
        item_ids: the candidates' ids (for `<ItemID>`).
        pad_token_id: the id padding the shorter suffixes.

    Returns:
        `(len(splits),)` scores, logit("Yes") - logit("No").
    """
    device = model.device
    batch_size = len(splits)
    suffix_ids, suffix_mask = pad_sequences([split["suffix_ids"] for split in splits], pad_token_id, left=True)  # (B, S)
    prefix_len = prefix_cache[0][0].shape[-2]
    # The cache rows are broadcast views of the single prefix; the LLM's first concatenation copies them.
    cache = DynamicCache(
        [(keys.expand(batch_size, -1, -1, -1), values.expand(batch_size, -1, -1, -1)) for keys, values in prefix_cache]
    )
    images = [features for split in splits for features in split["suffix_image_features"]]
    attention_mask = torch.cat([torch.ones(batch_size, prefix_len, dtype=torch.long), suffix_mask], dim=1)  # (B, P + S)
    output = model(
        input_ids=suffix_ids.to(device),
        attention_mask=attention_mask.to(device),
        image_features=_features(images, model),
        item_ids=torch.tensor(list(item_ids), device=device),
        cache=cache,
        use_cache=True,
    )
    return output.logits


@torch.no_grad()
def score_candidates(
    model: UserLLMForRecommendation,
    processor: UserLLMProcessor,
    user_record: dict,
    candidate_items: Sequence[dict],
    batch_size: int = 64,
    text_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Scores candidate items for one user, computing the user's prompt prefix only once.

    The model should be in eval mode (LoRA dropout would make the scores random). Posters
    given as images (PIL images or paths) are encoded once each by the model's vision encoder.

    Args:
        model: the USER-LLM.
        processor: its processor.
        user_record: a record of the user: `user_id` and `history` are used; item fields, if
            any, are overridden by each candidate's.
        candidate_items: items `{"item_id", "title", "description", "image_features"}`.
        batch_size: candidates per LLM forward.
        text_only: score the text form of the prompt (see `UserLLMProcessor.__call__`).
        progress: called after each batch with (candidates scored so far, all candidates),
            e.g. to show a progress bar for a long ranking.

    Returns:
        `(len(candidate_items),)` scores, equal to `model(**processor(records)).logits` of the
        candidates' records.

    Raises:
        ValueError: no candidates, or a candidate whose prompt prefix differs from the others'
            (the template would then not separate the user's part from the candidate's).
    """
    if not candidate_items:
        raise ValueError("No candidate items given")
    if not text_only:
        user_record = {**user_record, "history": with_poster_features(model, processor, user_record["history"], "history item")}
        candidate_items = with_poster_features(model, processor, candidate_items, "candidate")
    records = candidate_records(user_record, candidate_items)
    splits = [processor.split_prompt(record, text_only=text_only) for record in records]
    for index, split in enumerate(splits):
        if split["prefix_ids"] != splits[0]["prefix_ids"]:
            raise ValueError(f"candidate {index}: its prompt prefix differs from candidate 0's; the prefix cannot be shared")
    prefix_cache = encode_prefix(model, splits[0], int(user_record["user_id"]))
    pad_token_id = processor.pad_token_id
    scores = []
    for start in range(0, len(splits), batch_size):
        scores.append(score_suffixes(
            model,
            prefix_cache,
            splits[start : start + batch_size],
            [int(item["item_id"]) for item in candidate_items[start : start + batch_size]],
            pad_token_id,
        ))
        if progress is not None:
            progress(min(start + batch_size, len(splits)), len(splits))
    return torch.cat(scores)


@torch.no_grad()
def score_candidates_from_scratch(
    model: UserLLMForRecommendation,
    processor: UserLLMProcessor,
    user_record: dict,
    candidate_items: Sequence[dict],
    batch_size: int = 64,
    text_only: bool = False,
) -> torch.Tensor:
    """The reference for `score_candidates`: every candidate's full prompt scored on its own.

    Same arguments and result as `score_candidates`, without sharing anything between candidates.
    """
    records = candidate_records(user_record, candidate_items)
    scores = []
    for start in range(0, len(records), batch_size):
        batch = processor(records[start : start + batch_size], text_only=text_only)
        scores.append(model(**{key: value.to(model.device) for key, value in batch.items()}).logits)
    return torch.cat(scores)


def rank_candidates(
    model: UserLLMForRecommendation,
    processor: UserLLMProcessor,
    user_record: dict,
    candidate_items: Sequence[dict],
    batch_size: int = 64,
    top_k: int | None = None,
    text_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K recommendation for one user: candidates sorted by score, best first.

    Args:
        model, processor, user_record, candidate_items, batch_size, text_only, progress: see
            `score_candidates`.
        top_k: how many to return; all candidates when None.

    Returns:
        `(indices, scores)`, each `(k,)`: positions in `candidate_items` and their scores,
        in decreasing score order.
    """
    scores = score_candidates(model, processor, user_record, candidate_items, batch_size, text_only, progress)
    k = len(scores) if top_k is None else min(top_k, len(scores))
    top_scores, indices = torch.topk(scores, k)
    return indices, top_scores


__all__ = [
    "candidate_records",
    "encode_prefix",
    "rank_candidates",
    "score_candidates",
    "score_candidates_from_scratch",
    "score_suffixes",
    "with_poster_features",
]
