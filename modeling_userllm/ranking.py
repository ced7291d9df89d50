"""Top-K recommendation with a shared prompt prefix (copied next to the weights with the pipeline).

A prompt starts with the user's part (template, history or `<HistoryInteractions>`, `<UserID>`) and ends with the
candidate's (its text, `<Image>`, `<ItemID>`, the answer cue). The user's part runs through the LLM (and the UHEM)
once; its key/value cache is expanded to each batch of candidate suffixes, left-padded between prefix and suffix,
so every candidate keeps the positions of its own prompt and the scores equal independent scoring. Prefixes of
several users are encoded in one right-padded forward (the suffixes mask the padding). `two_stage_rank` lets a
cheap first stage (the model's MF tables by default) shortlist the candidates the LLM ranks.
"""

from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache

from .modeling_userllm import UserLLMForRecommendation
from .processing_userllm import UserLLMProcessor, is_raw_image, open_poster, pad_sequences

USER_FIELDS = ("user_id", "history")
"""Record fields that belong to the user: a candidate carrying one would overwrite the user's."""

Progress = Callable[[int, int], None]
"""Called after each batch with (pairs scored so far, all pairs)."""

PrefixCache = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""Per LLM layer, keys and values of encoded prefixes, each `(num_users, num_kv_heads, prefix_len, head_dim)`."""


def check_candidate_items(candidate_items: Sequence[dict], where: str = "") -> None:
    """Refuses candidates that are not item dicts or that carry a user field (`USER_FIELDS`), naming them."""
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
    """Refuses a `top_k` that is not None (all) or an integer >= 1, naming the value."""
    if top_k is not None and (isinstance(top_k, bool) or not hasattr(top_k, "__index__") or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (how many candidates to return), or None for all of them; "
                         f"got {type(top_k).__name__} {top_k!r}")


def candidate_records(user_record: dict, candidate_items: Sequence[dict]) -> list[dict]:
    """One record per candidate: the user's fields (without `label`) with the candidate's item fields."""
    user_fields = {key: value for key, value in user_record.items() if key != "label"}
    return [{**user_fields, **candidate} for candidate in candidate_items]


@torch.no_grad()
def with_poster_features(model: UserLLMForRecommendation, processor: UserLLMProcessor, items: Sequence[dict],
                         where: str = "item", batch_size: int = 32) -> list[dict]:
    """The items with each poster given as an image (PIL image or path) replaced by its features from the
    model's vision encoder; `where` names an item in errors ("candidate" -> "candidate 3: ...")."""
    posters = [index for index, item in enumerate(items) if is_raw_image(item.get("image_features"))]
    resolved = list(items)
    for start in range(0, len(posters), batch_size):
        rows = posters[start : start + batch_size]
        images = [open_poster(items[row]["image_features"], f"{where} {row}") for row in rows]
        pixel_values = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        for row, features in zip(rows, model.get_image_features(pixel_values).cpu().tolist()):
            resolved[row] = {**items[row], "image_features": features}
    return resolved


def _features(rows: list, model: UserLLMForRecommendation) -> torch.Tensor | None:
    """Feature lists -> `(len(rows), feature_size)` on the model's device, None when empty."""
    return torch.tensor(rows, dtype=torch.float32, device=model.device) if rows else None


@torch.no_grad()
def encode_prefixes(model: UserLLMForRecommendation, splits: Sequence[dict], user_ids: Sequence[int],
                    pad_token_id: int) -> tuple[PrefixCache, torch.Tensor]:
    """Runs the LLM (and the UHEM) over the prompt prefixes (`splits`: per user, `split_prompt` of any of its
    candidate records) of several users in one forward.

    Shorter prefixes are right-padded and the padding is attended to as if it were prompt: no prefix token sees
    what follows it, and SDPA keeps its causal fast path (a padding mask is twice slower on a CPU for ~900-token
    prefixes, measured). `score_suffixes` masks the padding.

    Returns:
        `(prefix_cache, prefix_attention_mask)`: per layer keys and values, each `(U, num_kv_heads, max_prefix_len,
        head_dim)`, and the `(U, max_prefix_len)` mask (CPU).
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


def _cache_for_suffixes(prefix_cache: PrefixCache, prefix_rows: torch.Tensor, prefix_len: int) -> DynamicCache:
    """The first `prefix_len` positions of the cache rows `prefix_rows` `(B,)`, as a `DynamicCache`:
    broadcast views for one user (the LLM's first concatenation copies them), gathered for several."""
    first_row = int(prefix_rows[0])
    if bool((prefix_rows == first_row).all()):
        return DynamicCache([
            tuple(tensor[first_row : first_row + 1, :, :prefix_len].expand(len(prefix_rows), -1, -1, -1) for tensor in layer)
            for layer in prefix_cache
        ])
    rows = prefix_rows.to(prefix_cache[0][0].device)
    return DynamicCache([tuple(tensor[:, :, :prefix_len].index_select(0, rows) for tensor in layer) for layer in prefix_cache])


@torch.no_grad()
def score_suffixes(model: UserLLMForRecommendation, prefix_cache: PrefixCache, splits: Sequence[dict],
                   item_ids: Sequence[int], pad_token_id: int, prefix_rows: torch.Tensor | None = None,
                   prefix_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scores one batch of candidate suffixes, each on its user's row of `encode_prefixes`' cache.

    Args:
        splits: `split_prompt` of each candidate record; item_ids: their ids (for `<ItemID>`).
        prefix_rows: `(B,)`, the cache row (user) each suffix continues; None: row 0 for all.
        prefix_attention_mask: `(U, prefix_len)` from `encode_prefixes`; None: unpadded prefixes.

    Returns:
        `(B,)` scores, logit("Yes") - logit("No").
    """
    num_prefixes, _, prefix_len, _ = prefix_cache[0][0].shape
    if prefix_rows is None:
        prefix_rows = torch.zeros(len(splits), dtype=torch.long)
    if prefix_attention_mask is None:
        prefix_attention_mask = torch.ones(num_prefixes, prefix_len, dtype=torch.long)
    prefix_rows = prefix_rows.cpu()
    prefix_mask = prefix_attention_mask.cpu()[prefix_rows]  # (B, P)
    # Padding after the batch's longest prefix (the other users' rows) is cut rather than masked.
    prefix_len = int(prefix_mask.any(dim=0).nonzero().max()) + 1
    suffix_ids, suffix_mask = pad_sequences([split["suffix_ids"] for split in splits], pad_token_id, left=True)  # (B, S)
    output = model(
        input_ids=suffix_ids.to(model.device),
        attention_mask=torch.cat([prefix_mask[:, :prefix_len], suffix_mask], dim=1).to(model.device),  # (B, P' + S)
        image_features=_features([features for split in splits for features in split["suffix_image_features"]], model),
        item_ids=torch.tensor(list(item_ids), device=model.device),
        cache=_cache_for_suffixes(prefix_cache, prefix_rows, prefix_len),
        use_cache=True,
    )
    return output.logits


def _candidate_splits(processor: UserLLMProcessor, user_record: dict, candidate_items: Sequence[dict], text_only: bool,
                      where: str) -> list[dict]:
    """`split_prompt` of each of one user's candidate records; a ValueError naming the first
    candidate whose prefix differs from candidate 0's."""
    splits = processor.split_prompts(candidate_records(user_record, candidate_items), text_only=text_only)
    for index, split in enumerate(splits):
        if split["prefix_ids"] != splits[0]["prefix_ids"]:
            raise ValueError(f"{where}candidate {index}: its prompt prefix differs from candidate 0's; the prefix cannot be shared")
    return splits


@torch.no_grad()
def score_candidates_for_users(model: UserLLMForRecommendation, processor: UserLLMProcessor, user_records: Sequence[dict],
                               candidate_lists: Sequence[Sequence[dict]], batch_size: int = 64, user_batch_size: int = 16,
                               text_only: bool = False, progress: Progress | None = None) -> list[torch.Tensor]:
    """Scores candidate items for many users, computing each user's prompt prefix once (the model in eval mode).

    Users are sorted by prefix length; the prefixes of `user_batch_size` of them are encoded in one forward, then
    their (user, candidate) pairs are scored in batches of `batch_size`.

    Args:
        user_records: per user, a record: `user_id` and `history` are used (see `score_candidates`).
        candidate_lists: per user, the candidate items (lists may differ in length).
        text_only: score the text form of the prompt (see `UserLLMProcessor.__call__`).

    Returns:
        Per user, `(len(candidate_lists[u]),)` scores, equal to `score_candidates` of that user alone.

    Raises:
        ValueError: not one candidate list per user, no users, a user without candidates, a candidate carrying a
            user field, or a candidate whose prompt prefix differs from the others'.
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

    num_pairs, num_scored = sum(map(len, user_splits)), 0
    order = sorted(range(len(user_records)), key=lambda user: len(user_splits[user][0]["prefix_ids"]))
    scores = [None] * len(user_records)
    for start in range(0, len(order), user_batch_size):
        users = order[start : start + user_batch_size]
        prefix_cache, prefix_mask = encode_prefixes(model, [user_splits[user][0] for user in users],
                                                    [int(user_records[user]["user_id"]) for user in users], processor.pad_token_id)
        pairs = [(row, split, item_id) for row, user in enumerate(users) for split, item_id in zip(user_splits[user], item_ids[user])]
        chunk = []
        for pair_start in range(0, len(pairs), batch_size):
            rows, splits, ids = zip(*pairs[pair_start : pair_start + batch_size])
            chunk.append(score_suffixes(model, prefix_cache, splits, ids, processor.pad_token_id, torch.tensor(rows), prefix_mask))
            num_scored += len(rows)
            if progress is not None:
                progress(num_scored, num_pairs)
        for user, user_scores in zip(users, torch.cat(chunk).split([len(user_splits[user]) for user in users])):
            scores[user] = user_scores
    return scores


def score_candidates(model: UserLLMForRecommendation, processor: UserLLMProcessor, user_record: dict,
                     candidate_items: Sequence[dict], batch_size: int = 64, text_only: bool = False,
                     progress: Progress | None = None) -> torch.Tensor:
    """Scores candidate items for one user, computing the user's prompt prefix once.

    Args:
        user_record: `user_id` and `history` are used; its item fields are overridden by each candidate's.
        candidate_items: items `{"item_id", "title", "description", "image_features"}`; a poster given as an
            image (PIL image or path) is encoded by the model's vision encoder.
        batch_size: candidates per LLM forward.

    Returns:
        `(len(candidate_items),)` scores, equal to `model(**processor(records)).logits` of the candidates' records
        (the model in eval mode); errors as `score_candidates_for_users`.
    """
    return score_candidates_for_users(model, processor, [user_record], [candidate_items], batch_size,
                                      text_only=text_only, progress=progress)[0]


@torch.no_grad()
def score_candidates_from_scratch(model: UserLLMForRecommendation, processor: UserLLMProcessor, user_record: dict,
                                  candidate_items: Sequence[dict], batch_size: int = 64, text_only: bool = False) -> torch.Tensor:
    """The reference for `score_candidates` (same arguments and result): every candidate's full prompt scored on its own."""
    check_candidate_items(candidate_items)
    records = candidate_records(user_record, candidate_items)
    scores = []
    for start in range(0, len(records), batch_size):
        batch = processor(records[start : start + batch_size], text_only=text_only)
        scores.append(model(**{key: value.to(model.device) for key, value in batch.items()}).logits)
    return torch.cat(scores)


def _top(scores: torch.Tensor, top_k: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(indices, scores)` of the `top_k` best scores (all when None), best first."""
    top_scores, indices = torch.topk(scores, len(scores) if top_k is None else min(top_k, len(scores)))
    return indices, top_scores


def rank_candidates(model: UserLLMForRecommendation, processor: UserLLMProcessor, user_record: dict,
                    candidate_items: Sequence[dict], batch_size: int = 64, top_k: int | None = None,
                    text_only: bool = False, progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K for one user (arguments as `score_candidates`; `top_k` None: all).

    Returns:
        `(indices, scores)`, each `(k,)`: positions in `candidate_items` and their scores, best first.
    """
    check_top_k(top_k)
    return _top(score_candidates(model, processor, user_record, candidate_items, batch_size, text_only, progress), top_k)


def rank_candidates_for_users(model: UserLLMForRecommendation, processor: UserLLMProcessor, user_records: Sequence[dict],
                              candidate_lists: Sequence[Sequence[dict]], batch_size: int = 64, user_batch_size: int = 16,
                              top_k: int | None = None, text_only: bool = False,
                              progress: Progress | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Top-K for many users (see `score_candidates_for_users`): per user, `rank_candidates` of that user alone."""
    check_top_k(top_k)
    scores = score_candidates_for_users(model, processor, user_records, candidate_lists, batch_size, user_batch_size,
                                        text_only, progress)
    return [_top(user_scores, top_k) for user_scores in scores]


@torch.no_grad()
def collaborative_scores(model: UserLLMForRecommendation, user_id: int, item_ids: Sequence[int]) -> torch.Tensor:
    """`(len(item_ids),)` float32 MF scores: dot products of the user's and each item's rows of the model's
    collaborative tables (a ValueError without them). Unknown ids take the "unknown" row, as in the prompt."""
    if not model.config.use_collaborative:
        raise ValueError("This model was built with use_collaborative=False: it has no collaborative tables to score with; "
                         "give two_stage_rank first-stage scores or a first-stage callable instead")
    device = model.user_embeddings.weight.device
    user = model._lookup_collaborative(model.user_embeddings, torch.tensor([int(user_id)], device=device))  # (1, C)
    items = model._lookup_collaborative(model.item_embeddings, torch.tensor([int(i) for i in item_ids], device=device))  # (N, C)
    return items.float() @ user[0].float()


FirstStage = Sequence[float] | torch.Tensor | Callable[[dict, Sequence[dict]], Sequence[float] | torch.Tensor]


def two_stage_rank(model: UserLLMForRecommendation, processor: UserLLMProcessor, user_record: dict,
                   candidate_items: Sequence[dict], first_stage: FirstStage | None = None, num_rerank: int = 100,
                   top_k: int | None = None, batch_size: int = 64, text_only: bool = False,
                   progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K from a large catalogue: a cheap first stage keeps the `num_rerank` best candidates (ties to the
    earlier one) and the LLM ranks only those (other arguments as `rank_candidates`).

    Args:
        first_stage: first-stage scores of `candidate_items` (higher is better), a `(N,)` tensor or sequence, or a
            callable `(user_record, candidate_items) -> scores`; None: `collaborative_scores`.

    Returns:
        `(indices, scores)`, each `(min(top_k, num_rerank),)`: positions in `candidate_items` and their LLM scores,
        best first. A ValueError for no candidates, a bad candidate, `num_rerank` or `top_k`, or first-stage scores
        that are not one number per candidate.
    """
    if not candidate_items:
        raise ValueError("No candidate items given: two_stage_rank needs at least one candidate")
    if isinstance(num_rerank, bool) or not isinstance(num_rerank, int) or num_rerank < 1:
        raise ValueError(f"num_rerank must be an integer >= 1 (how many first-stage candidates the LLM reranks), got {num_rerank!r}")
    check_top_k(top_k)
    check_candidate_items(candidate_items)
    if first_stage is None:
        first_stage = collaborative_scores(model, user_record["user_id"], [item["item_id"] for item in candidate_items])
    elif callable(first_stage):
        first_stage = first_stage(user_record, candidate_items)
    first_scores = torch.as_tensor(first_stage).detach().float().cpu()
    if tuple(first_scores.shape) != (len(candidate_items),):
        raise ValueError(f"The first stage gave scores of shape {tuple(first_scores.shape)}; expected one score per candidate, "
                         f"shape ({len(candidate_items)},)")
    if first_scores.isnan().any():
        raise ValueError(f"The first stage gave NaN scores (candidates {first_scores.isnan().nonzero().flatten().tolist()[:5]} ...)")
    shortlist = torch.sort(first_scores, descending=True, stable=True).indices[:num_rerank]  # (C,)
    shortlist_items = [candidate_items[index] for index in shortlist.tolist()]
    indices, scores = rank_candidates(model, processor, user_record, shortlist_items, batch_size, top_k, text_only, progress)
    return shortlist.to(indices.device)[indices], scores
