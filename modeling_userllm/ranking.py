"""Top-K recommendation: scoring many candidate items for one user, or many users, with a shared prompt prefix.

Every USER-LLM prompt starts with the part that depends only on the user (template, history
or `<HistoryInteractions>`, `<UserID>`) and ends with the candidate's part (its text,
`<Image>`, `<ItemID>`, the answer cue). Scoring N candidates from scratch runs the LLM (and
the UHEM) over the user's part N times. Here it runs once: its key/value cache is expanded
to each batch of candidate suffixes, which are left-padded between prefix and suffix, so
every candidate keeps the positions it has in its own prompt and the scores equal
independent scoring.

For many users (`score_candidates_for_users`), the prefixes of a batch of users are encoded
in one forward (right-padded: causal attention keeps each prefix's keys and values as if
encoded alone; the padding's keys are masked for the suffixes), and batches of (user,
candidate) pairs gather their user's cache row. For a large catalogue, `two_stage_rank` lets a cheap first stage (by
default the model's own MF tables, `collaborative_scores`) shortlist the candidates the
LLM ranks.

This file is copied next to the weights with the recommendation pipeline
(`pipeline_userllm.py` imports it), so, like the model files, it imports only torch,
transformers, the standard library and its flat siblings.
"""

import numbers
from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache

from .modeling_userllm import UserLLMForRecommendation
from .processing_userllm import UserLLMProcessor, is_raw_image, open_poster, pad_sequences


USER_FIELDS = ("user_id", "history")
"""Record fields that belong to the user: a candidate item carrying one would overwrite the user's."""


def check_candidate_items(candidate_items: Sequence[dict], where: str = "") -> None:
    """Refuses candidates that are not item dicts or that carry a user field (`USER_FIELDS`).

    A candidate's fields override the user record's in its prompt, so a candidate with a
    `history` would be scored with that history instead of the user's, and one with a `user_id`
    as another user (and not equal to shared-prefix scoring, where the prefix is the user's).

    Args:
        candidate_items: the candidate items.
        where: prefix of the messages, e.g. "user 3, ".

    Raises:
        ValueError: `{where}candidate i (item_id ...): ...` naming the candidate and the field.
    """
    for index, candidate in enumerate(candidate_items):
        if not isinstance(candidate, dict):
            raise ValueError(f"{where}candidate {index}: expected an item dict {{item_id, title, description, image_features}}, "
                             f"got {type(candidate).__name__}")
        user_fields = [name for name in USER_FIELDS if name in candidate]
        if user_fields:
            raise ValueError(
                f"{where}candidate {index} (item_id {candidate.get('item_id')!r}): field {user_fields[0]!r} belongs to the "
                "user, not to a candidate item (it would replace the user's); give it in the user record only "
                "(a candidate holds item_id, title, description, image_features)"
            )


def check_top_k(top_k: int | None) -> None:
    """Refuses a `top_k` that is not None (all) or an integer >= 1.

    Raises:
        ValueError: naming the value and what is allowed.
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (how many candidates to return), or None for all of them; "
                         f"got {type(top_k).__name__} {top_k!r}")


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


PrefixCache = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""Per LLM layer, the keys and values of encoded prompt prefixes, each `(num_users, num_kv_heads, prefix_len, head_dim)`."""


def _features(rows: list, model: UserLLMForRecommendation) -> torch.Tensor | None:
    """Feature lists -> `(len(rows), feature_size)` on the model's device, None when empty."""
    return torch.tensor(rows, dtype=torch.float32, device=model.device) if rows else None


@torch.no_grad()
def encode_prefixes(
    model: UserLLMForRecommendation, splits: Sequence[dict], user_ids: Sequence[int], pad_token_id: int
) -> tuple[PrefixCache, torch.Tensor]:
    """Runs the LLM (and the UHEM) over the prompt prefixes of several users in one forward.

    Shorter prefixes are right-padded and the padding is attended to as if it were prompt: under
    causal attention no prefix token sees what follows it, so every row of the cache starts with
    that user's prefix as encoded alone (same positions, same keys and values), and the forward
    keeps SDPA's causal fast path, which a padding mask would lose (twice slower on a CPU for
    ~900-token prefixes, measured). `score_suffixes` masks the padding's keys out.

    Args:
        model: the USER-LLM.
        splits: per user, `UserLLMProcessor.split_prompt` of any of the user's candidate records.
        user_ids: the users' ids (for `<UserID>`).
        pad_token_id: the id padding the shorter prefixes.

    Returns:
        `(prefix_cache, prefix_attention_mask)`: per LLM layer the keys and values, each
        `(len(splits), num_kv_heads, max_prefix_len, head_dim)`, and the `(len(splits), max_prefix_len)`
        mask, 1 on the prefixes' tokens, 0 on the padding (on the CPU).
    """
    device = model.device
    prefix_ids, prefix_mask = pad_sequences([split["prefix_ids"] for split in splits], pad_token_id, left=False)  # (U, P)
    history = {}
    if splits[0]["history_ids"] is not None:
        history_ids, history_mask = pad_sequences([split["history_ids"] for split in splits], 0, left=False)
        history = {
            "history_input_ids": history_ids.to(device),
            "history_attention_mask": history_mask.to(device),
            "history_image_features": _features([row for split in splits for row in split["history_image_features"]], model),
            "history_item_index": pad_sequences([split["history_item_index"] for split in splits], -1, left=False)[0].to(device),
        }
    output = model(
        input_ids=prefix_ids.to(device),
        attention_mask=torch.ones_like(prefix_ids, device=device),
        image_features=_features([row for split in splits for row in split["prefix_image_features"]], model),
        user_ids=torch.tensor([int(user_id) for user_id in user_ids], device=device),
        use_cache=True,
        **history,
    )
    return tuple((keys, values) for keys, values, *_ in output.cache), prefix_mask


def encode_prefix(model: UserLLMForRecommendation, split: dict, user_id: int) -> PrefixCache:
    """Runs the LLM (and the UHEM) over one user's prompt prefix: `encode_prefixes` of one user.

    Returns:
        Per LLM layer, the prefix keys and values, each `(1, num_kv_heads, prefix_len, head_dim)`.
    """
    prefix_cache, _ = encode_prefixes(model, [split], [user_id], pad_token_id=0)  # one prefix: no padding
    return prefix_cache


def _cache_for_suffixes(prefix_cache: PrefixCache, prefix_rows: torch.Tensor, prefix_len: int) -> DynamicCache:
    """The first `prefix_len` positions of the cache rows `prefix_rows` `(B,)`, as a `DynamicCache` of batch size B.

    Rows of one user are broadcast views of it (the LLM's first concatenation copies them);
    rows of several users are gathered.
    """
    batch_size = len(prefix_rows)
    first_row = int(prefix_rows[0])
    if bool((prefix_rows == first_row).all()):
        return DynamicCache([
            tuple(tensor[first_row : first_row + 1, :, :prefix_len].expand(batch_size, -1, -1, -1) for tensor in layer)
            for layer in prefix_cache
        ])
    rows = prefix_rows.to(prefix_cache[0][0].device)
    return DynamicCache([tuple(tensor[:, :, :prefix_len].index_select(0, rows) for tensor in layer) for layer in prefix_cache])


@torch.no_grad()
def score_suffixes(
    model: UserLLMForRecommendation,
    prefix_cache: PrefixCache,
    splits: Sequence[dict],
    item_ids: Sequence[int],
    pad_token_id: int,
    prefix_rows: torch.Tensor | None = None,
    prefix_attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scores one batch of candidate suffixes, each on top of its user's row of a prefix cache.

    Suffixes are left-padded between prefix and suffix (after the prefix padding, if any, which
    is masked), so each candidate keeps the positions it has in its own prompt.

    Args:
        model: the USER-LLM.
        prefix_cache: from `encode_prefix` (one user) or `encode_prefixes` (several).
        splits: `split_prompt` of each candidate record.
        item_ids: the candidates' ids (for `<ItemID>`).
        pad_token_id: the id padding the shorter suffixes.
        prefix_rows: `(len(splits),)`, the row of `prefix_cache` (the user) each suffix continues;
            None: row 0 for all.
        prefix_attention_mask: `(num_users, prefix_len)` from `encode_prefixes`; None: unpadded prefixes.

    Returns:
        `(len(splits),)` scores, logit("Yes") - logit("No").
    """
    device = model.device
    batch_size = len(splits)
    num_prefixes, _, prefix_len, _ = prefix_cache[0][0].shape
    if prefix_rows is None:
        prefix_rows = torch.zeros(batch_size, dtype=torch.long)
    if prefix_attention_mask is None:
        prefix_attention_mask = torch.ones(num_prefixes, prefix_len, dtype=torch.long)
    prefix_rows = prefix_rows.cpu()
    prefix_mask = prefix_attention_mask.cpu()[prefix_rows]  # (B, P)
    # Padding after the batch's longest prefix (the other users' rows) is cut rather than masked.
    prefix_len = int(prefix_mask.any(dim=0).nonzero().max()) + 1
    suffix_ids, suffix_mask = pad_sequences([split["suffix_ids"] for split in splits], pad_token_id, left=True)  # (B, S)
    images = [features for split in splits for features in split["suffix_image_features"]]
    attention_mask = torch.cat([prefix_mask[:, :prefix_len], suffix_mask], dim=1)  # (B, prefix_len + S)
    output = model(
        input_ids=suffix_ids.to(device),
        attention_mask=attention_mask.to(device),
        image_features=_features(images, model),
        item_ids=torch.tensor(list(item_ids), device=device),
        cache=_cache_for_suffixes(prefix_cache, prefix_rows, prefix_len),
        use_cache=True,
    )
    return output.logits


def _candidate_splits(
    processor: UserLLMProcessor, user_record: dict, candidate_items: Sequence[dict], text_only: bool, where: str
) -> list[dict]:
    """`split_prompt` of each of one user's candidate records, checked to share one prefix.

    Raises:
        ValueError: `{where}candidate i: ...` when candidate i's prompt prefix differs from candidate 0's.
    """
    splits = processor.split_prompts(candidate_records(user_record, candidate_items), text_only=text_only)
    for index, split in enumerate(splits):
        if split["prefix_ids"] != splits[0]["prefix_ids"]:
            raise ValueError(f"{where}candidate {index}: its prompt prefix differs from candidate 0's; the prefix cannot be shared")
    return splits


def _score_users_chunk(
    model: UserLLMForRecommendation,
    user_splits: Sequence[list[dict]],
    user_ids: Sequence[int],
    item_ids: Sequence[list[int]],
    batch_size: int,
    pad_token_id: int,
    after_batch: Callable[[int], None],
) -> list[torch.Tensor]:
    """Scores the candidates of a few users: their prefixes in one forward, then (user, candidate)
    pairs in batches of `batch_size`; `after_batch(pairs in the batch)` follows each batch.

    Returns:
        Per user, `(len(user_splits[u]),)` scores.
    """
    prefix_cache, prefix_mask = encode_prefixes(model, [splits[0] for splits in user_splits], user_ids, pad_token_id)
    pairs = [(row, split, item_id) for row, (splits, ids) in enumerate(zip(user_splits, item_ids)) for split, item_id in zip(splits, ids)]
    scores = []
    for start in range(0, len(pairs), batch_size):
        rows, splits, ids = zip(*pairs[start : start + batch_size])
        scores.append(score_suffixes(model, prefix_cache, splits, ids, pad_token_id, torch.tensor(rows), prefix_mask))
        after_batch(len(rows))
    return list(torch.cat(scores).split([len(splits) for splits in user_splits]))


@torch.no_grad()
def score_candidates_for_users(
    model: UserLLMForRecommendation,
    processor: UserLLMProcessor,
    user_records: Sequence[dict],
    candidate_lists: Sequence[Sequence[dict]],
    batch_size: int = 64,
    user_batch_size: int = 16,
    text_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[torch.Tensor]:
    """Scores candidate items for many users, computing each user's prompt prefix only once.

    The prefixes of `user_batch_size` users are encoded in one LLM forward (users sorted by
    prefix length first, so that little of it is padding); then their (user, candidate) pairs
    are scored in batches of `batch_size`, each pair's suffix on its user's cached prefix. The
    model should be in eval mode. Posters given as images are encoded once per user and list.

    Args:
        model: the USER-LLM.
        processor: its processor.
        user_records: per user, a record: `user_id` and `history` are used (see `score_candidates`).
        candidate_lists: per user, the candidate items to score (lists may differ in length).
        batch_size: (user, candidate) pairs per LLM forward.
        user_batch_size: user prefixes per LLM forward.
        text_only: score the text form of the prompt (see `UserLLMProcessor.__call__`).
        progress: called after each batch with (pairs scored so far, all pairs).

    Returns:
        Per user, `(len(candidate_lists[u]),)` scores, equal to `score_candidates` of that user alone.

    Raises:
        ValueError: not one candidate list per user, no users, a user without candidates, a
            candidate carrying a user field (`check_candidate_items`), or a candidate whose
            prompt prefix differs from the user's other candidates'.
    """
    if len(user_records) != len(candidate_lists):
        raise ValueError(f"{len(user_records)} users but {len(candidate_lists)} candidate lists; expected one list per user")
    if not user_records:
        raise ValueError("No users given")
    if batch_size < 1 or user_batch_size < 1:
        raise ValueError(f"batch_size and user_batch_size must be >= 1, got {batch_size} and {user_batch_size}")
    user_splits, item_ids = [], []
    for user_index, (user_record, candidate_items) in enumerate(zip(user_records, candidate_lists)):
        where = f"user {user_index}, " if len(user_records) > 1 else ""
        if not candidate_items:
            raise ValueError("No candidate items given" + (f" for user {user_index}" if len(user_records) > 1 else ""))
        check_candidate_items(candidate_items, where)
        if not text_only:
            user_record = {**user_record, "history": with_poster_features(model, processor, user_record["history"], f"{where}history item")}
            candidate_items = with_poster_features(model, processor, candidate_items, f"{where}candidate")
        user_splits.append(_candidate_splits(processor, user_record, candidate_items, text_only, where))
        item_ids.append([int(item["item_id"]) for item in candidate_items])

    num_pairs, num_scored = sum(len(splits) for splits in user_splits), 0

    def after_batch(batch_pairs: int) -> None:
        nonlocal num_scored
        num_scored += batch_pairs
        if progress is not None:
            progress(num_scored, num_pairs)

    order = sorted(range(len(user_records)), key=lambda user: len(user_splits[user][0]["prefix_ids"]))
    scores = [None] * len(user_records)
    for start in range(0, len(order), user_batch_size):
        users = order[start : start + user_batch_size]
        chunk_scores = _score_users_chunk(
            model,
            [user_splits[user] for user in users],
            [int(user_records[user]["user_id"]) for user in users],
            [item_ids[user] for user in users],
            batch_size,
            processor.pad_token_id,
            after_batch,
        )
        for user, user_scores in zip(users, chunk_scores):
            scores[user] = user_scores
    return scores


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
        ValueError: no candidates, a candidate carrying a user field (`check_candidate_items`),
            or a candidate whose prompt prefix differs from the others' (the template would
            then not separate the user's part from the candidate's).
    """
    return score_candidates_for_users(
        model, processor, [user_record], [candidate_items], batch_size, text_only=text_only, progress=progress
    )[0]


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
    check_candidate_items(candidate_items)
    records = candidate_records(user_record, candidate_items)
    scores = []
    for start in range(0, len(records), batch_size):
        batch = processor(records[start : start + batch_size], text_only=text_only)
        scores.append(model(**{key: value.to(model.device) for key, value in batch.items()}).logits)
    return torch.cat(scores)


def _top(scores: torch.Tensor, top_k: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(indices, scores)` of the `top_k` best scores (all when None), best first."""
    k = len(scores) if top_k is None else min(top_k, len(scores))
    top_scores, indices = torch.topk(scores, k)
    return indices, top_scores


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

    Raises:
        ValueError: a `top_k` that is not None or an integer >= 1, and see `score_candidates`.
    """
    check_top_k(top_k)
    return _top(score_candidates(model, processor, user_record, candidate_items, batch_size, text_only, progress), top_k)


def rank_candidates_for_users(
    model: UserLLMForRecommendation,
    processor: UserLLMProcessor,
    user_records: Sequence[dict],
    candidate_lists: Sequence[Sequence[dict]],
    batch_size: int = 64,
    user_batch_size: int = 16,
    top_k: int | None = None,
    text_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Top-K recommendation for many users (see `score_candidates_for_users`).

    Returns:
        Per user, `rank_candidates` of that user alone: `(indices, scores)`, each `(k,)`,
        positions in `candidate_lists[u]` and their scores, best first.
    """
    check_top_k(top_k)
    scores = score_candidates_for_users(
        model, processor, user_records, candidate_lists, batch_size, user_batch_size, text_only, progress
    )
    return [_top(user_scores, top_k) for user_scores in scores]


@torch.no_grad()
def collaborative_scores(model: UserLLMForRecommendation, user_id: int, item_ids: Sequence[int]) -> torch.Tensor:
    """Matrix-factorisation scores: the dot product of the user's and each item's rows of the model's
    collaborative tables (the raw embeddings `<UserID>` / `<ItemID>` are projected from).

    Ids the tables do not know take the tables' last ("unknown") row, as in the prompt; after
    `load_collaborative_embeddings` that row is zeros, so such ids score 0.

    Returns:
        `(len(item_ids),)` float32 scores on the model's device.

    Raises:
        ValueError: the model has no collaborative tables.
    """
    if not model.config.use_collaborative:
        raise ValueError("This model was built with use_collaborative=False: it has no collaborative tables to score with; "
                         "give two_stage_rank first-stage scores or a first-stage callable instead")
    device = model.user_embeddings.weight.device
    user = model._lookup_collaborative(model.user_embeddings, torch.tensor([int(user_id)], device=device))  # (1, C)
    items = model._lookup_collaborative(model.item_embeddings, torch.tensor([int(i) for i in item_ids], device=device))  # (N, C)
    return items.float() @ user[0].float()


FirstStage = Sequence[float] | torch.Tensor | Callable[[dict, Sequence[dict]], Sequence[float] | torch.Tensor]


def _first_stage_scores(
    model: UserLLMForRecommendation, user_record: dict, candidate_items: Sequence[dict], first_stage: FirstStage | None
) -> torch.Tensor:
    """The first stage's `(len(candidate_items),)` float32 scores on the CPU, checked."""
    if first_stage is None:
        scores = collaborative_scores(model, user_record["user_id"], [item["item_id"] for item in candidate_items])
    elif callable(first_stage):
        scores = first_stage(user_record, candidate_items)
    else:
        scores = first_stage
    scores = torch.as_tensor(scores).detach().float().cpu()
    if tuple(scores.shape) != (len(candidate_items),):
        raise ValueError(f"The first stage gave scores of shape {tuple(scores.shape)}; expected one score per candidate, "
                         f"shape ({len(candidate_items)},)")
    if scores.isnan().any():
        raise ValueError(f"The first stage gave NaN scores (candidates {scores.isnan().nonzero().flatten().tolist()[:5]} ...)")
    return scores


def two_stage_rank(
    model: UserLLMForRecommendation,
    processor: UserLLMProcessor,
    user_record: dict,
    candidate_items: Sequence[dict],
    first_stage: FirstStage | None = None,
    num_rerank: int = 100,
    top_k: int | None = None,
    batch_size: int = 64,
    text_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K recommendation from a large catalogue: a cheap first stage keeps the `num_rerank`
    best candidates and the LLM ranks only those.

    Args:
        model, processor, user_record, candidate_items, batch_size, text_only, progress: see
            `score_candidates` (`progress` counts the reranked candidates).
        first_stage: the first stage's scores of `candidate_items` (higher is better), as a
            `(len(candidate_items),)` tensor or sequence, or a callable
            `(user_record, candidate_items) -> scores`; None: `collaborative_scores` (MF).
        num_rerank: C, how many of the first stage's best candidates the LLM scores (all when
            there are fewer); first-stage ties go to the earlier candidate.
        top_k: how many to return; all C when None.

    Returns:
        `(indices, scores)`, each `(min(top_k, C),)`: positions in `candidate_items` and their
        LLM scores, best first. With C >= len(candidate_items) it is `rank_candidates`.

    Raises:
        ValueError: no candidates, a candidate carrying a user field, `num_rerank` < 1, a `top_k`
            that is not None or an integer >= 1, or first-stage scores that are not one number
            per candidate.
    """
    if not candidate_items:
        raise ValueError("No candidate items given: two_stage_rank needs at least one candidate")
    if isinstance(num_rerank, bool) or not isinstance(num_rerank, int) or num_rerank < 1:
        raise ValueError(f"num_rerank must be an integer >= 1 (how many first-stage candidates the LLM reranks), got {num_rerank!r}")
    check_top_k(top_k)
    check_candidate_items(candidate_items)
    first_scores = _first_stage_scores(model, user_record, candidate_items, first_stage)
    shortlist = torch.sort(first_scores, descending=True, stable=True).indices[:num_rerank]  # (C,)
    shortlist_items = [candidate_items[index] for index in shortlist.tolist()]
    indices, scores = rank_candidates(model, processor, user_record, shortlist_items, batch_size, top_k, text_only, progress)
    return shortlist.to(indices.device)[indices], scores


__all__ = [
    "USER_FIELDS",
    "candidate_records",
    "check_candidate_items",
    "check_top_k",
    "collaborative_scores",
    "encode_prefix",
    "encode_prefixes",
    "rank_candidates",
    "rank_candidates_for_users",
    "score_candidates",
    "score_candidates_for_users",
    "score_candidates_from_scratch",
    "score_suffixes",
    "two_stage_rank",
    "with_poster_features",
]
