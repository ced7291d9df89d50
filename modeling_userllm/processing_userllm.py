"""USER-LLM processor: interaction records -> prompt tokens and feature tensors (copied next to the weights)."""

import functools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import BatchFeature, BitImageProcessorPil, ProcessorMixin
from transformers.image_utils import is_pil_image, load_image
from transformers.utils import logging

logger = logging.get_logger(__name__)

IMAGE_TOKEN = "<Image>"
USER_TOKEN = "<UserID>"
ITEM_TOKEN = "<ItemID>"
HISTORY_TOKEN = "<HistoryInteractions>"
PLACEHOLDER_TOKENS = (IMAGE_TOKEN, USER_TOKEN, ITEM_TOKEN, HISTORY_TOKEN)

# The paper's prompt (Appendix). A prompt is rendered as text with its placeholders and tokenized
# once: tokenizing pieces apart would give each piece its own sentencepiece "▁".
QUESTION = "#Question: A user has given high ratings to the following {noun}s: "
COLLABORATIVE_SENTENCE = "Additionally, we have information about the user's preferences encoded in the feature "
# The prompt's user-dependent prefix ends with PREDICTION; the candidate's part starts with a space.
PREDICTION = "Using all available information, make a prediction about whether the user would enjoy the {noun} titled"
ANSWER = '? Answer with "Yes" or "No". \n#Answer:'

REQUIRED_RECORD_FIELDS = ("user_id", "item_id", "title", "history")
REQUIRED_HISTORY_FIELDS = ("item_id", "title")
INT64_RANGE = (-(2**63), 2**63 - 1)
# The largest poster read (6000 x 6000): the encoder sees 224 x 224; a 12,000 x 12,000 poster took 2.2 GB and 26 s.
MAX_POSTER_PIXELS = 36_000_000


def default_image_processor() -> BitImageProcessorPil:
    """The DINO family's preprocessing: shortest edge 256, centre crop 224, ImageNet mean/std."""
    return BitImageProcessorPil(
        size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, resample=3,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )


def is_raw_image(value) -> bool:
    """Whether an item's `image_features` is a poster to encode (a PIL image, a path) rather than features."""
    return isinstance(value, (str, os.PathLike)) or is_pil_image(value)


def _check_poster_size(size: tuple[int, int], what: str, max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(f"{what} is {width} x {height} = {width * height:,} pixels, more than the limit of {max_pixels:,} "
                         "(processing_userllm.MAX_POSTER_PIXELS by default); give a smaller copy of it")


def _open_poster_file(path: str, where: str, max_pixels: int | None):
    """The poster file opened lazily (PIL reads the header only), its size checked."""
    from transformers.image_utils import PIL  # PIL as transformers imports it

    if not os.path.isfile(path):
        raise ValueError(f"{where}: the poster file {path} does not exist")
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # checked below, with a message naming the file
                warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(path)
    except Exception as error:  # PIL's errors do not name the file
        raise ValueError(f"{where}: the poster file {path} is not a readable image ({error})") from error
    try:
        _check_poster_size(image.size, f"{where}: the poster file {path}", max_pixels)
    except ValueError:
        image.close()
        raise
    return image


def open_poster(value, where: str, max_pixels: int | None = MAX_POSTER_PIXELS):
    """A poster (PIL image or path) as an upright RGB PIL image: the one reader of posters.

    `where` names the poster's owner in errors ("record 3"); `max_pixels` (width x height, checked from the header;
    None: no limit). A ValueError names the owner and the file: missing, not an image, or over `max_pixels`.
    """
    if not isinstance(value, (str, os.PathLike)):
        _check_poster_size(value.size, f"{where}: the poster image", max_pixels)
        return load_image(value)
    path = os.fspath(value)
    with _open_poster_file(path, where, max_pixels) as image:
        try:
            return load_image(image)
        except Exception as error:  # a truncated file fails only when decoded
            raise ValueError(f"{where}: the poster file {path} is not a readable image ({error})") from error


def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists padded to `(len(sequences), max(1, max_len))` ids and a 0/1 mask, on the left or the right."""
    side = "left" if left else "right"
    rows = [torch.tensor(list(sequence), dtype=torch.long) for sequence in sequences] + [torch.zeros(1, dtype=torch.long)]
    masks = [torch.ones(len(row), dtype=torch.long) for row in rows[:-1]] + [torch.zeros(1, dtype=torch.long)]
    # The extra one-token row makes max_len >= 1; it is dropped.
    ids = pad_sequence(rows, batch_first=True, padding_value=pad_id, padding_side=side)[:-1]
    return ids, pad_sequence(masks, batch_first=True, padding_value=0, padding_side=side)[:-1]


def _reports_item_text_cuts(method):
    """One call reports every item text cut during it in one warning (nested calls leave it to the outer one)."""

    @functools.wraps(method)
    def reporting(self, *args, **kwargs):
        if self._item_text_cuts is not None:
            return method(self, *args, **kwargs)
        self._item_text_cuts = []
        try:
            result = method(self, *args, **kwargs)
            cuts = self._item_text_cuts
        finally:
            self._item_text_cuts = None
        if cuts:
            inside_word = sum(cut_inside_word for _, cut_inside_word in cuts)
            logger.warning(
                f"{len(cuts)} item text(s) had more than max_item_tokens={self.max_item_tokens} tokens and were cut at a "
                "word boundary" + (f", except {inside_word} title(s) whose first word alone is over the budget, cut inside "
                                   "that word" if inside_word else "")
                + f" (first: {cuts[0][0][:60]!r}); processor.num_truncated_item_texts: {self.num_truncated_item_texts} "
                "texts cut so far"
            )
        return result

    return reporting


@dataclass
class RenderedPrompt:
    """One record's prompt as text: `prefix` (the user's part) and `suffix` (the candidate's, starting with a space),
    the features of their `<Image>`s in order; for the UHEM, (text, has image) per history item and their images.
    With `item_ids_after_titles`, the item of each prompt `<ItemID>` and of each history item's in the UHEM input."""

    prefix: str
    suffix: str
    prefix_images: list = field(default_factory=list)
    suffix_images: list = field(default_factory=list)
    history_texts: list[tuple[str, bool]] | None = None
    history_images: list = field(default_factory=list)
    item_ids: list[int] = field(default_factory=list)
    history_item_ids: list[int] | None = None


class UserLLMProcessor(ProcessorMixin):
    r"""Builds USER-LLM prompts and feature tensors from interaction records.

    A record is one (user, candidate) interaction: `{"user_id": int, "item_id": int, "title": str, "description":
    str | None, "image_features": list[float] | PIL image | path | None, "history": [{"item_id", "title",
    "description", "image_features"}, ...] (oldest first), "label": 0 | 1 (optional)}`. `image_features` are
    precomputed (`vision_feature_size` floats) or the poster itself (-> `pixel_values`); both may be mixed.

    Args:
        tokenizer: the LLM's tokenizer; the placeholder tokens are added to it.
        image_processor: the vision encoder's image processor (default: `default_image_processor()`).
        use_history_encoder (`bool`): one `<HistoryInteractions>` token (UHEM) instead of the history inline.
        use_visual (`bool`): an `<Image>` token after every item that has image features.
        use_collaborative (`bool`): `<UserID>` and `<ItemID>` tokens.
        use_descriptions (`bool`): items written as title and description, not title only.
        max_item_tokens (`int`): token budget of each item's text; a longer one is cut at a word boundary.
        max_history_items (`int`): most recent history items kept.
        vision_feature_size (`int`): expected length of precomputed `image_features`.
        item_noun (`str`): what the items are called in the prompt.
        item_ids_after_titles (`bool`): an `<ItemID>` after each history item's text (LLaRA), inline or in the UHEM
            input (needs `use_collaborative`). Off: only the candidate has one (the paper).
    """

    def __init__(
        self,
        tokenizer=None,
        image_processor=None,
        use_history_encoder: bool = True,
        use_visual: bool = True,
        use_collaborative: bool = True,
        use_descriptions: bool = True,
        max_item_tokens: int = 96,
        max_history_items: int = 10,
        vision_feature_size: int = 384,
        item_noun: str = "movie",
        item_ids_after_titles: bool = False,
        **kwargs,
    ):
        if item_ids_after_titles and not use_collaborative:
            raise ValueError("item_ids_after_titles puts collaborative <ItemID> tokens in the prompt: it needs "
                             "use_collaborative=True")
        self.item_ids_after_titles = item_ids_after_titles
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
        super().__init__(tokenizer, image_processor if image_processor is not None else default_image_processor(), **kwargs)
        self._token_cache: dict[str, list[int]] = {}
        self._item_text_cache: dict[tuple, str] = {}
        self.num_truncated_item_texts = 0
        self._item_text_cuts: list[tuple[str, bool]] | None = None  # (text, cut inside a word) during a call

    @property
    def placeholder_token_ids(self) -> dict[str, int]:
        """`{"image_token_id", "user_token_id", "item_token_id", "history_token_id"}` -> id."""
        names = ("image_token_id", "user_token_id", "item_token_id", "history_token_id")
        return dict(zip(names, self.tokenizer.convert_tokens_to_ids(list(PLACEHOLDER_TOKENS))))

    @property
    def answer_token_ids(self) -> dict[str, int]:
        """`{"yes_token_id", "no_token_id"}`: the first tokens where " Yes" and " No" differ after the prompt's end."""
        yes_ids = self.tokenizer(ANSWER + " Yes", add_special_tokens=False).input_ids
        no_ids = self.tokenizer(ANSWER + " No", add_special_tokens=False).input_ids
        common = 0
        while common < min(len(yes_ids), len(no_ids)) and yes_ids[common] == no_ids[common]:
            common += 1
        if common == min(len(yes_ids), len(no_ids)):
            raise ValueError("'Yes' and 'No' tokenize to the same tokens; the score needs them distinct")
        return {"yes_token_id": yes_ids[common], "no_token_id": no_ids[common]}

    CONFIG_FIELDS = ("use_history_encoder", "use_visual", "use_collaborative", "use_descriptions", "max_item_tokens",
                     "max_history_items", "vision_feature_size", "item_ids_after_titles")
    """The processor settings a `UserLLMConfig` mirrors."""

    @property
    def model_config_kwargs(self) -> dict:
        """The token ids and switches a `UserLLMConfig` needs to match this processor."""
        return {**self.placeholder_token_ids, **self.answer_token_ids, **{name: getattr(self, name) for name in self.CONFIG_FIELDS}}

    @classmethod
    def from_model_config(cls, tokenizer, config, **kwargs) -> "UserLLMProcessor":
        """A processor with the switches of a `UserLLMConfig`."""
        return cls(tokenizer, **{name: getattr(config, name) for name in cls.CONFIG_FIELDS}, **kwargs)

    def preprocess_images(self, images: list, where: str = "images") -> torch.Tensor:
        """Posters (PIL images or paths) -> `pixel_values` `(len(images), 3, height, width)` float32."""
        opened = [open_poster(image, where) for image in images]
        return self.image_processor(images=opened, return_tensors="pt")["pixel_values"].float()

    def _image_inputs(self, images: list, prefix: str) -> dict[str, torch.Tensor]:
        """`{prefix}image_features`, one row per `<Image>`; posters add `{prefix}pixel_values` and `{prefix}image_indices`
        (the rows they fill, zeros until the model encodes them)."""
        if not images:
            return {}
        raw = [row for row, image in enumerate(images) if is_raw_image(image)]
        features = torch.zeros((len(images), self.vision_feature_size), dtype=torch.float32)
        given = [row for row in range(len(images)) if row not in set(raw)]
        if given:
            features[given] = torch.tensor([list(map(float, images[row])) for row in given], dtype=torch.float32)
        inputs = {f"{prefix}image_features": features}
        if raw:
            inputs[f"{prefix}pixel_values"] = self.preprocess_images([images[row] for row in raw], f"{prefix}images")
            inputs[f"{prefix}image_indices"] = torch.tensor(raw, dtype=torch.long)
        return inputs

    def _tokens(self, text: str) -> list[int]:
        ids = self._token_cache.get(text)
        if ids is None:
            ids = self._token_cache[text] = self.tokenizer(text, add_special_tokens=False).input_ids
        return ids

    @staticmethod
    def check_text(value, where: str, field_name: str, required: bool) -> None:
        """Raises unless `value` is a string (or None when not `required`) free of placeholder tokens."""
        if value is None and not required:
            return
        if not isinstance(value, str):
            expected = "a string" if required else "a string or None"
            raise ValueError(f"{where}: field {field_name!r} must be {expected}, got {type(value).__name__} {value!r:.40}")
        for token in PLACEHOLDER_TOKENS:
            if token in value:
                raise ValueError(f"{where}: field {field_name!r} contains the placeholder {token}, which only the processor may place")

    @staticmethod
    def _check_id(value, where: str, field_name: str) -> None:
        if isinstance(value, bool) or not hasattr(type(value), "__index__"):  # any integer type, numpy's included
            raise ValueError(f"{where}: field {field_name!r} must be an integer, got {type(value).__name__} {value!r:.40}")
        if not INT64_RANGE[0] <= int(value) <= INT64_RANGE[1]:
            raise ValueError(f"{where}: field {field_name!r} = {value} does not fit in a 64-bit integer")

    def _check_image_features(self, features, where: str) -> None:
        if features is None:
            return
        if isinstance(features, (str, os.PathLike)):
            if not os.path.isfile(features):
                raise ValueError(f"{where}: image_features names the poster file {os.fspath(features)}, which does not exist "
                                 "(give a PIL image, an existing image file, precomputed features or None)")
            _open_poster_file(os.fspath(features), where, MAX_POSTER_PIXELS).close()
            return
        if is_pil_image(features):
            return _check_poster_size(features.size, f"{where}: the poster image", MAX_POSTER_PIXELS)
        if isinstance(features, bytes) or not hasattr(features, "__len__"):
            raise ValueError(f"{where}: image_features must be a list of {self.vision_feature_size} numbers, a PIL image, "
                             f"an image path or None, got {type(features).__name__}")
        if len(features) != self.vision_feature_size:
            raise ValueError(f"{where}: image_features has {len(features)} values, expected {self.vision_feature_size} (or None)")
        try:  # one conversion instead of a Python loop
            values = torch.as_tensor(features, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as error:
            position, value = next(((i, v) for i, v in enumerate(features) if not hasattr(type(v), "__float__")), (0, features[0]))
            raise ValueError(f"{where}: image_features[{position}] must be a number, got {type(value).__name__}") from error
        if values.ndim != 1:
            raise ValueError(f"{where}: image_features must be one flat list of numbers, got shape {tuple(values.shape)}")
        not_finite = (~torch.isfinite(values)).nonzero()
        if len(not_finite):
            position = int(not_finite[0])
            raise ValueError(f"{where}: image_features[{position}] is {values[position].item()}; features must be finite")

    def validate_record(self, record: dict, index: int) -> None:
        """Raises a `ValueError` naming the record index and field when a record is malformed."""
        where = f"record {index}"
        self._check_item(record, where, REQUIRED_RECORD_FIELDS)
        label = record.get("label")
        if label is not None and (isinstance(label, bool) or label not in (0, 1)):
            raise ValueError(f"{where}: field 'label' must be 0 or 1, got {label!r}")
        if not isinstance(record["history"], (list, tuple)):
            raise ValueError(f"{where}: field 'history' must be a list of items")
        for position, item in enumerate(record["history"]):
            self._check_item(item, f"{where}, history item {position}", REQUIRED_HISTORY_FIELDS)

    def _check_item(self, item, where: str, required: tuple[str, ...]) -> None:
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a dict, got {type(item).__name__}")
        for field_name in required:
            if field_name not in item:
                raise ValueError(f"{where}: missing field {field_name!r}")
        for field_name in ("user_id", "item_id") if "user_id" in required else ("item_id",):
            self._check_id(item[field_name], where, field_name)
        self.check_text(item["title"], where, "title", required=True)
        self.check_text(item.get("description"), where, "description", required=False)
        self._check_image_features(item.get("image_features"), where)

    @_reports_item_text_cuts
    def item_text(self, item: dict, use_descriptions: bool | None = None) -> str:
        """An item as the prompt writes it: `"Title" (description)`, within `max_item_tokens`: over the budget the
        description loses its last words first, then the title; when not even the title's first word fits, that word
        is cut (to one character at least). Cuts are counted in `num_truncated_item_texts`, reported once per call."""
        use_descriptions = self.use_descriptions if use_descriptions is None else use_descriptions
        key = (item["title"], (item.get("description") if use_descriptions else None) or None)
        text = self._item_text_cache.get(key)
        if text is None:
            text = self._item_text_cache[key] = self._fit_item_text(*key)
        return text

    def _fit_item_text(self, title: str, description: str | None) -> str:
        def render(title_words: list[str], description_words: list[str] | None) -> str:
            text = '"' + " ".join(title_words) + '"'
            return text + f" ({' '.join(description_words)})" if description_words else text

        def fits(text: str) -> bool:
            return len(self._tokens(text)) <= self.max_item_tokens

        def longest_fitting(count: int, make) -> int:
            """The largest k in [0, count] with `make(k)` within the budget (binary search; k = 0 is not checked)."""
            low, high = 0, count
            while low < high:
                middle = (low + high + 1) // 2
                if fits(make(middle)):
                    low = middle
                else:
                    high = middle - 1
            return low

        title_words, description_words = title.split(), (description or "").split()
        full = render(title_words, description_words)
        if not self.max_item_tokens or fits(full):
            return full
        words, make = description_words, (lambda k: render(title_words, description_words[:k]))
        if not fits(make(0)):
            words, make = title_words, (lambda k: render(title_words[:k], None))
        kept = longest_fitting(len(words), make)
        cut_inside_word = words is title_words and kept == 0 and bool(title_words)
        if cut_inside_word:
            first_word = title_words[0]

            def make(k: int) -> str:
                return render([first_word[: max(k, 1)]], None)

            kept = longest_fitting(len(first_word) - 1, make)
        self.num_truncated_item_texts += 1
        self._item_text_cuts.append((full, cut_inside_word))
        return make(kept)

    def render_prompt(self, record: dict, text_only: bool = False) -> RenderedPrompt:
        """The prompt of one record as text with placeholders (see `RenderedPrompt`)."""
        visual = self.use_visual and not text_only
        collaborative = self.use_collaborative and not text_only
        history_ids = collaborative and self.item_ids_after_titles
        history = record["history"][-self.max_history_items :] if self.max_history_items else []
        rendered = RenderedPrompt(prefix="", suffix="")

        prefix = QUESTION.format(noun=self.item_noun)
        if self.use_history_encoder and not text_only:
            prefix += HISTORY_TOKEN
            rendered.history_texts = []
            if history_ids:
                rendered.history_item_ids = [int(item["item_id"]) for item in history]
            for item in history:
                has_image = visual and item.get("image_features") is not None
                rendered.history_texts.append((self.item_text(item), has_image))
                if has_image:
                    rendered.history_images.append(item["image_features"])
        else:
            parts = []
            for item in history:
                part = self.item_text(item)
                if history_ids:
                    part += ITEM_TOKEN
                    rendered.item_ids.append(int(item["item_id"]))
                if visual and item.get("image_features") is not None:
                    part += IMAGE_TOKEN
                    rendered.prefix_images.append(item["image_features"])
                parts.append(part)
            prefix += ", ".join(parts)
        prefix += ". "
        if collaborative:
            prefix += COLLABORATIVE_SENTENCE + USER_TOKEN + ". "
        rendered.prefix = prefix + PREDICTION.format(noun=self.item_noun)

        suffix = " " + self.item_text(record)
        if visual and record.get("image_features") is not None:
            suffix += IMAGE_TOKEN
            rendered.suffix_images.append(record["image_features"])
        if collaborative:
            suffix += " with the feature " + ITEM_TOKEN
            if history_ids:
                rendered.item_ids.append(int(record["item_id"]))
        rendered.suffix = suffix + ANSWER
        return rendered

    def _history_ids(self, rendered: RenderedPrompt) -> list[int]:
        """The UHEM input of one prompt: per history item, its text tokens, `<ItemID>` with `item_ids_after_titles`,
        `<Image>` if any."""
        ids_of = self.placeholder_token_ids
        id_token = [ids_of["item_token_id"]] if rendered.history_item_ids is not None else []
        ids = []
        for text, has_image in rendered.history_texts:
            ids += self._tokens(text) + id_token + ([ids_of["image_token_id"]] if has_image else [])
        return ids

    def _bos_ids(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None and bos in self.tokenizer("", add_special_tokens=True).input_ids else []

    @_reports_item_text_cuts
    def __call__(self, records: Sequence[dict], text_only: bool = False, return_tensors: str = "pt",
                 validate: bool = True) -> BatchFeature:
        """Turns records into a batch for `UserLLMForRecommendation`.

        Args:
            records: interaction records (see the class docstring).
            text_only: the text form of the prompt (history inline, no image or collaborative tokens): step 1's input.
            return_tensors: only `"pt"`.
            validate: check every record (`validate_record`); False for records checked when built
                (`RecordBuilder.dataset`).

        Returns:
            A `BatchFeature`: `input_ids`, `attention_mask` `(batch_size, seq_len)` (left-padded); `user_ids`, `item_ids`
            and `labels` (when the records have labels) `(batch_size,)`; `image_features` `(num_images,
            vision_feature_size)`; for the UHEM `history_input_ids` / `history_attention_mask` `(batch_size,
            history_len)` (right-padded) and `history_image_features`. With
            `item_ids_after_titles`: `prompt_item_ids` (per `<ItemID>` of `input_ids`) and `history_item_token_ids`.
            Posters add `pixel_values` / `image_indices` (and `history_` ones, see `_image_inputs`).
        """
        if return_tensors != "pt":
            raise ValueError(f"Only return_tensors='pt' is supported, got {return_tensors!r}")
        if isinstance(records, dict):
            records = [records]
        if not records:
            raise ValueError("No records given")
        if validate:
            for index, record in enumerate(records):
                self.validate_record(record, index)
        has_label = [record.get("label") is not None for record in records]
        if any(has_label) and not all(has_label):
            raise ValueError(f"record {has_label.index(not has_label[0])}: 'label' is missing while record 0 has one "
                             "(or the reverse); give a label to every record of a batch or to none")

        rendered = [self.render_prompt(record, text_only) for record in records]
        bos = self._bos_ids()
        prompts = [bos + ids for ids in self.tokenizer([p.prefix + p.suffix for p in rendered], add_special_tokens=False).input_ids]
        input_ids, attention_mask = pad_sequences(prompts, self.pad_token_id, left=True)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "user_ids": torch.tensor([int(r["user_id"]) for r in records], dtype=torch.long),
            "item_ids": torch.tensor([int(r["item_id"]) for r in records], dtype=torch.long),
        }
        if all(has_label):
            batch["labels"] = torch.tensor([float(r["label"]) for r in records], dtype=torch.float32)
        batch |= self._image_inputs([image for p in rendered for image in p.prefix_images + p.suffix_images], "")
        if self.item_ids_after_titles and not text_only:
            batch["prompt_item_ids"] = torch.tensor([i for p in rendered for i in p.item_ids], dtype=torch.long)
        if rendered[0].history_texts is not None:
            history_ids = [self._history_ids(p) for p in rendered]
            batch["history_input_ids"], batch["history_attention_mask"] = pad_sequences(history_ids, self.pad_token_id, left=False)
            batch |= self._image_inputs([image for p in rendered for image in p.history_images], "history_")
            if rendered[0].history_item_ids is not None:
                batch["history_item_token_ids"] = torch.tensor([i for p in rendered for i in p.history_item_ids], dtype=torch.long)
        return BatchFeature(batch)

    @property
    def pad_token_id(self) -> int:
        """The id padding prompts: the tokenizer's pad token, else its EOS, else 0 (always masked out)."""
        pad_id = self.tokenizer.pad_token_id
        return pad_id if pad_id is not None else self.tokenizer.eos_token_id or 0

    @_reports_item_text_cuts
    def split_prompts(self, records: Sequence[dict], text_only: bool = False) -> list[dict]:
        """`split_prompt` of each record, the item texts it cuts reported in one warning."""
        return [self.split_prompt(record, text_only) for record in records]

    @_reports_item_text_cuts
    def split_prompt(self, record: dict, text_only: bool = False) -> dict:
        """One record's prompt split into the user's part (shared by all candidates) and the candidate's (after
        "... titled"); tokenized whole, the cut checked to fall between tokens.

        Returns:
            `prefix_ids` + `suffix_ids` (together the prompt), `prefix_image_features` / `suffix_image_features` (one per
            `<Image>`), the UHEM input `history_ids` / `history_image_features` (None / [] without the UHEM).
        """
        self.validate_record(record, 0)
        if self.item_ids_after_titles and not text_only:
            raise ValueError("A prompt with item_ids_after_titles has an <ItemID> per history item, which the shared-"
                             "prefix split does not carry; score its candidates from scratch (the processor's batches)")
        rendered = self.render_prompt(record, text_only)
        bos = self._bos_ids()
        prefix_ids = bos + self._tokens(rendered.prefix)
        ids = bos + self.tokenizer(rendered.prefix + rendered.suffix, add_special_tokens=False).input_ids
        if ids[: len(prefix_ids)] != prefix_ids:
            raise ValueError("This tokenizer merges the prompt's user part with the candidate's part into one token, "
                             "so the user part cannot be shared between candidates; score the candidates from "
                             "scratch instead")
        history_ids = self._history_ids(rendered) if rendered.history_texts is not None else None
        return {
            "prefix_ids": prefix_ids,
            "suffix_ids": ids[len(prefix_ids) :],
            "prefix_image_features": rendered.prefix_images,
            "suffix_image_features": rendered.suffix_images,
            "history_ids": history_ids,
            "history_image_features": rendered.history_images,
        }

    def decode_prompt(self, input_ids: Sequence[int]) -> str:
        """The prompt text of one (left-padded) row of `input_ids`, placeholders shown by name."""
        ids = [int(i) for i in input_ids]
        start = 0
        while start < len(ids) and ids[start] == self.pad_token_id:  # the padding the batch put there
            start += 1
        return self.tokenizer.decode(ids[start:], skip_special_tokens=False)


UserLLMProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["PLACEHOLDER_TOKENS", "RenderedPrompt", "UserLLMProcessor", "default_image_processor", "is_raw_image", "pad_sequences"]
