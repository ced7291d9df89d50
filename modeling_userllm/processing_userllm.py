"""USER-LLM processor: interaction records -> prompt tokens and feature tensors.

This file is copied next to the weights by `save_pretrained`, so it imports only torch,
transformers and the standard library.
"""

from collections.abc import Sequence

import torch
from transformers import BatchFeature, ProcessorMixin

IMAGE_TOKEN = "<Image>"
USER_TOKEN = "<UserID>"
ITEM_TOKEN = "<ItemID>"
HISTORY_TOKEN = "<HistoryInteractions>"
PLACEHOLDER_TOKENS = (IMAGE_TOKEN, USER_TOKEN, ITEM_TOKEN, HISTORY_TOKEN)

# The paper's prompt (Appendix), shared by every variant; the parts in braces depend on it.
QUESTION = "#Question: A user has given high ratings to the following {noun}s: "
COLLABORATIVE_SENTENCE = "Additionally, we have information about the user's preferences encoded in the feature "
PREDICTION = "Using all available information, make a prediction about whether the user would enjoy the {noun} titled "
ANSWER = '? Answer with "Yes" or "No". \n#Answer:'

REQUIRED_RECORD_FIELDS = ("user_id", "item_id", "title", "history")
REQUIRED_HISTORY_FIELDS = ("item_id", "title")


class UserLLMProcessor(ProcessorMixin):
    r"""Builds USER-LLM prompts and feature tensors from interaction records.

    A record is one (user, candidate item) interaction:
    `{"user_id": int, "item_id": int, "title": str, "description": str | None,
    "image_features": list[float] | None, "history": [{"item_id", "title", "description",
    "image_features"}, ...] (oldest first), "label": 0 | 1 (optional)}`.

    Args:
        tokenizer: the LLM's tokenizer; the placeholder tokens are added to it.
        use_history_encoder (`bool`): one `<HistoryInteractions>` token (UHEM) instead of the
            history written inline.
        use_visual (`bool`): an `<Image>` token after every item that has image features.
        use_collaborative (`bool`): `<UserID>` and `<ItemID>` tokens.
        use_descriptions (`bool`): items described by title and description, not title only.
        max_item_tokens (`int`): tokens kept of each item's text.
        max_history_items (`int`): most recent history items kept.
        vision_feature_size (`int`): expected length of `image_features`.
        item_noun (`str`): what the items are called in the prompt ("movie").
    """

    def __init__(
        self,
        tokenizer=None,
        use_history_encoder: bool = True,
        use_visual: bool = True,
        use_collaborative: bool = True,
        use_descriptions: bool = True,
        max_item_tokens: int = 32,
        max_history_items: int = 10,
        vision_feature_size: int = 384,
        item_noun: str = "movie",
        **kwargs,
    ):
        self.use_history_encoder = use_history_encoder
        self.use_visual = use_visual
        self.use_collaborative = use_collaborative
        self.use_descriptions = use_descriptions
        self.max_item_tokens = max_item_tokens
        self.max_history_items = max_history_items
        self.vision_feature_size = vision_feature_size
        self.item_noun = item_noun
        missing = [token for token in PLACEHOLDER_TOKENS if token not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_tokens(missing, special_tokens=True)
        super().__init__(tokenizer, **kwargs)
        self._token_cache: dict[str, list[int]] = {}

    # ----------------------------------------------------------------------------- token ids

    @property
    def placeholder_token_ids(self) -> dict[str, int]:
        """`{"image_token_id", "user_token_id", "item_token_id", "history_token_id"}` -> id."""
        convert = self.tokenizer.convert_tokens_to_ids
        return {
            "image_token_id": convert(IMAGE_TOKEN),
            "user_token_id": convert(USER_TOKEN),
            "item_token_id": convert(ITEM_TOKEN),
            "history_token_id": convert(HISTORY_TOKEN),
        }

    @property
    def answer_token_ids(self) -> dict[str, int]:
        """`{"yes_token_id", "no_token_id"}`: the tokens where the answers "Yes" and "No" part.

        Both answers are tokenized after the prompt's end, as the model would continue it,
        because "Yes" after a space tokenizes differently from "Yes" alone in most tokenizers
        (and some tokenizers emit a shared space token first).
        """
        yes_ids = self.tokenizer(ANSWER + " Yes", add_special_tokens=False).input_ids
        no_ids = self.tokenizer(ANSWER + " No", add_special_tokens=False).input_ids
        common = 0
        while common < min(len(yes_ids), len(no_ids)) and yes_ids[common] == no_ids[common]:
            common += 1
        if common == min(len(yes_ids), len(no_ids)):
            raise ValueError("'Yes' and 'No' tokenize to the same tokens; the score needs them distinct")
        return {"yes_token_id": yes_ids[common], "no_token_id": no_ids[common]}

    @property
    def model_config_kwargs(self) -> dict:
        """The token ids and switches a `UserLLMConfig` needs to match this processor."""
        return {
            **self.placeholder_token_ids,
            **self.answer_token_ids,
            "use_history_encoder": self.use_history_encoder,
            "use_visual": self.use_visual,
            "use_collaborative": self.use_collaborative,
            "use_descriptions": self.use_descriptions,
            "max_item_tokens": self.max_item_tokens,
            "max_history_items": self.max_history_items,
            "vision_feature_size": self.vision_feature_size,
        }

    @classmethod
    def from_model_config(cls, tokenizer, config, **kwargs) -> "UserLLMProcessor":
        """A processor with the switches of a `UserLLMConfig`."""
        return cls(
            tokenizer,
            use_history_encoder=config.use_history_encoder,
            use_visual=config.use_visual,
            use_collaborative=config.use_collaborative,
            use_descriptions=config.use_descriptions,
            max_item_tokens=config.max_item_tokens,
            max_history_items=config.max_history_items,
            vision_feature_size=config.vision_feature_size,
            **kwargs,
        )

    def _tokens(self, text: str) -> list[int]:
        ids = self._token_cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            self._token_cache[text] = ids
        return ids

    # ----------------------------------------------------------------------------- validation

    def _check_image_features(self, features, where: str) -> None:
        if features is None:
            return
        if len(features) != self.vision_feature_size:
            raise ValueError(f"{where}: image_features has {len(features)} values, expected {self.vision_feature_size} (or None)")

    def validate_record(self, record: dict, index: int) -> None:
        """Raises a `ValueError` naming the record index and field when a record is malformed."""
        if not isinstance(record, dict):
            raise ValueError(f"record {index}: expected a dict, got {type(record).__name__}")
        for field in REQUIRED_RECORD_FIELDS:
            if field not in record:
                raise ValueError(f"record {index}: missing field {field!r}")
        if not isinstance(record["title"], str):
            raise ValueError(f"record {index}: field 'title' must be a string")
        self._check_image_features(record.get("image_features"), f"record {index}")
        label = record.get("label")
        if label is not None and label not in (0, 1):
            raise ValueError(f"record {index}: field 'label' must be 0 or 1, got {label!r}")
        if not isinstance(record["history"], (list, tuple)):
            raise ValueError(f"record {index}: field 'history' must be a list of items")
        for position, item in enumerate(record["history"]):
            where = f"record {index}, history item {position}"
            if not isinstance(item, dict):
                raise ValueError(f"{where}: expected a dict, got {type(item).__name__}")
            for field in REQUIRED_HISTORY_FIELDS:
                if field not in item:
                    raise ValueError(f"{where}: missing field {field!r}")
            self._check_image_features(item.get("image_features"), where)

    # ----------------------------------------------------------------------------- prompts

    def _item_text_ids(self, item: dict, use_descriptions: bool) -> list[int]:
        text = f'"{item["title"]}"'
        if use_descriptions and item.get("description"):
            text += f" ({item['description']})"
        return self._tokens(text)[: self.max_item_tokens]

    def _prompt_ids(self, record: dict, text_only: bool, image_features: list, history_sequence: dict) -> list[int]:
        """Token ids of one prompt.

        Appends the image features of its `<Image>` tokens to `image_features`, and for the UHEM
        the item-token sequence to `history_sequence["ids"]` and its images to
        `history_sequence["images"]`.
        """
        ids = self.placeholder_token_ids
        visual = self.use_visual and not text_only
        collaborative = self.use_collaborative and not text_only
        history = record["history"][-self.max_history_items :] if self.max_history_items else []

        prompt = list(self._tokens(QUESTION.format(noun=self.item_noun)))
        if self.use_history_encoder and not text_only:
            prompt.append(ids["history_token_id"])
            sequence = []
            for item in history:
                sequence += self._item_text_ids(item, self.use_descriptions)
                if visual and item.get("image_features") is not None:
                    sequence.append(ids["image_token_id"])
                    history_sequence.setdefault("images", []).append(item["image_features"])
            history_sequence.setdefault("ids", []).append(sequence)
        else:
            for position, item in enumerate(history):
                if position:
                    prompt += self._tokens(", ")
                prompt += self._item_text_ids(item, self.use_descriptions)
                if visual and item.get("image_features") is not None:
                    prompt.append(ids["image_token_id"])
                    image_features.append(item["image_features"])
        prompt += self._tokens(". ")
        if collaborative:
            prompt += self._tokens(COLLABORATIVE_SENTENCE)
            prompt += [ids["user_token_id"]]
            prompt += self._tokens(". ")
        prompt += self._tokens(PREDICTION.format(noun=self.item_noun))
        prompt += self._item_text_ids(record, self.use_descriptions)
        if visual and record.get("image_features") is not None:
            prompt.append(ids["image_token_id"])
            image_features.append(record["image_features"])
        if collaborative:
            prompt += self._tokens(" with the feature ")
            prompt.append(ids["item_token_id"])
        prompt += self._tokens(ANSWER)
        return self._bos_ids() + prompt

    def _bos_ids(self) -> list[int]:
        ids = self.tokenizer("", add_special_tokens=True).input_ids
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None and bos in ids else []

    def __call__(self, records: Sequence[dict], text_only: bool = False, return_tensors: str = "pt") -> BatchFeature:
        """Turns records into a batch for `UserLLMForRecommendation`.

        Args:
            records: interaction records (see the class docstring).
            text_only: build the text form of the prompt (history inline as text, no image or
                collaborative tokens): the input of training step 1.
            return_tensors: only `"pt"` is supported.

        Returns:
            A `BatchFeature` with `input_ids` and `attention_mask` `(batch_size, seq_len)`
            (left-padded), `user_ids` and `item_ids` `(batch_size,)`, `labels` `(batch_size,)`
            when every record has one, `image_features` `(num_images, vision_feature_size)` when
            the prompts hold `<Image>` tokens, and for the UHEM `history_input_ids` /
            `history_attention_mask` `(batch_size, history_len)` (right-padded) with
            `history_image_features` `(num_history_images, vision_feature_size)`.
        """
        if return_tensors != "pt":
            raise ValueError(f"Only return_tensors='pt' is supported, got {return_tensors!r}")
        if isinstance(records, dict):
            records = [records]
        if not records:
            raise ValueError("No records given")
        for index, record in enumerate(records):
            self.validate_record(record, index)

        image_features: list = []
        history_sequence: dict = {}
        prompts = [self._prompt_ids(record, text_only, image_features, history_sequence) for record in records]
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id or 0
        input_ids, attention_mask = _pad(prompts, pad_id, left=True)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "user_ids": torch.tensor([int(r["user_id"]) for r in records], dtype=torch.long),
            "item_ids": torch.tensor([int(r["item_id"]) for r in records], dtype=torch.long),
        }
        if all(record.get("label") is not None for record in records):
            batch["labels"] = torch.tensor([float(r["label"]) for r in records], dtype=torch.float32)
        if image_features:
            batch["image_features"] = torch.tensor(image_features, dtype=torch.float32)
        if "ids" in history_sequence:
            batch["history_input_ids"], batch["history_attention_mask"] = _pad(history_sequence["ids"], pad_id, left=False)
            if history_sequence.get("images"):
                batch["history_image_features"] = torch.tensor(history_sequence["images"], dtype=torch.float32)
        return BatchFeature(batch)

    def split_prompt(self, record: dict, text_only: bool = False) -> dict:
        """One record's prompt split into the part that depends only on the user and the candidate's part.

        The prompt is built by `_prompt_ids` and cut right after "... enjoy the movie titled ",
        where the candidate's text begins; every token before it (template, history or
        `<HistoryInteractions>`, `<UserID>`) is the same for every candidate of one user.

        Args:
            record: an interaction record (see the class docstring).
            text_only: the text form of the prompt (see `__call__`).

        Returns:
            A dict with `prefix_ids` and `suffix_ids` (lists of token ids, concatenated they are
            the prompt), `prefix_image_features` and `suffix_image_features` (lists of feature
            lists, one per `<Image>` in that part, in order), and `history_ids` /
            `history_image_features` (the UHEM input; None / [] without the UHEM).
        """
        self.validate_record(record, 0)
        image_features: list = []
        history_sequence: dict = {}
        ids = self._prompt_ids(record, text_only, image_features, history_sequence)
        marker = self._tokens(PREDICTION.format(noun=self.item_noun))
        split = next(end for end in range(len(ids), len(marker) - 1, -1) if ids[end - len(marker) : end] == marker)
        num_prefix_images = ids[:split].count(self.placeholder_token_ids["image_token_id"])
        return {
            "prefix_ids": ids[:split],
            "suffix_ids": ids[split:],
            "prefix_image_features": image_features[:num_prefix_images],
            "suffix_image_features": image_features[num_prefix_images:],
            "history_ids": history_sequence["ids"][0] if "ids" in history_sequence else None,
            "history_image_features": history_sequence.get("images", []),
        }

    def decode_prompt(self, input_ids: Sequence[int]) -> str:
        """The prompt text of one row of `input_ids`, placeholders shown by name."""
        return self.tokenizer.decode([i for i in input_ids if i != self.tokenizer.pad_token_id], skip_special_tokens=False)


def _pad(sequences: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pads token lists to `(len(sequences), max_len)` ids and a 0/1 mask; max_len >= 1."""
    max_len = max(1, max(len(sequence) for sequence in sequences))
    ids = torch.full((len(sequences), max_len), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), max_len), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if not sequence:
            continue
        span = slice(max_len - len(sequence), max_len) if left else slice(0, len(sequence))
        ids[row, span] = torch.tensor(sequence, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


UserLLMProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["UserLLMProcessor", "PLACEHOLDER_TOKENS"]
