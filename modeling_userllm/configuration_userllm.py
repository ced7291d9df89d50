"""USER-LLM model configuration.

This file is copied next to the weights by `save_pretrained`, so it imports only transformers
and the standard library.
"""

import math
import os

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

# Each system of the paper is the same model with some modules switched off.
VARIANTS: dict[str, dict[str, bool]] = {
    # Text only: titles of the history and of the target (TALLRec).
    "tallrec": dict(use_history_encoder=False, use_visual=False, use_collaborative=False, use_descriptions=False),
    # + a collaborative token for the user and for the target item (CoLLM).
    "collm": dict(use_history_encoder=False, use_visual=False, use_collaborative=True, use_descriptions=False),
    # + one image token per history item and for the target (CoLLM-VA).
    "collm_va": dict(use_history_encoder=False, use_visual=True, use_collaborative=True, use_descriptions=False),
    # USER-LLM with the full history written inline instead of the UHEM token.
    "userllm_no_uhem": dict(use_history_encoder=False, use_visual=True, use_collaborative=True, use_descriptions=True),
    # USER-LLM with titles instead of knowledge-enhanced descriptions.
    "userllm_no_ke": dict(use_history_encoder=True, use_visual=True, use_collaborative=True, use_descriptions=False),
    "userllm": dict(use_history_encoder=True, use_visual=True, use_collaborative=True, use_descriptions=True),
}


# The UHEM's encoder: the paper's GRU, or a parallel transformer encoder over its tokens or over its pooled items (the paper's future work).
HISTORY_ENCODER_TYPES = ("gru", "transformer", "hierarchical")

# How the spliced tokens (projector outputs, the UHEM's history token) are scaled: as the
# projectors leave them (the paper), or RMS-normalised to the LLM's token-embedding scale.
PROJECTOR_NORMS = ("none", "rms")

# The pipeline saved with every checkpoint (`pipeline_userllm.py`), so that
# `pipeline(model=PATH_OR_REPO, trust_remote_code=True)` ranks candidate items for users.
RECOMMENDATION_TASK = "recommendation"
CUSTOM_PIPELINES = {
    RECOMMENDATION_TASK: {"impl": "pipeline_userllm.RecommendationPipeline", "pt": ["AutoModel"], "tf": [], "type": "multimodal"}
}


# The smallest value of each size and count of the config. 0 history items is the empty history;
# a budget of 0 item tokens is refused, as the processor would read it as "no limit".
_SMALLEST_VALUES = {
    "vision_feature_size": 1, "collaborative_size": 1, "num_users": 0, "num_items": 0, "projector_hidden_size": 1,
    "history_hidden_size": 1, "history_encoder_layers": 1, "history_encoder_heads": 1, "max_item_tokens": 1,
    "max_history_items": 0, "lora_r": 1,
}
_OPTIONAL_SIZES = ("projector_hidden_size", "history_hidden_size")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_local_path(name: str) -> bool:
    """Whether `name` can only be a local path: a Hub id is `NAME` or `ORG/NAME`, never
    absolute, relative to `.`/`..`/`~`, nor with two slashes."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep in name and os.sep != "/"


class UserLLMConfig(PretrainedConfig):
    r"""Configuration of [`UserLLMForRecommendation`].

    Args:
        text_config (`dict` or `PretrainedConfig`, *optional*):
            Config of the Llama-family causal LM that answers "Yes"/"No" (Vicuna-7B in the paper).
            Defaults to a `LlamaConfig`.
        base_model_name_or_path (`str`, *optional*):
            Hub id or local folder of the pretrained LLM. A light checkpoint stores only the
            trained weights and fetches the LLM from here when it loads.
        base_model_revision (`str`, *optional*):
            Hub commit of the base LLM the model was built on, when it came from the Hub (named
            when a light checkpoint cannot load or match its base).
        base_model_fingerprint (`dict`, *optional*):
            What a light checkpoint checks its base LLM against when it loads: `{"digest", "dtype",
            "tensors"}`, a digest of evenly spaced samples of every floating-point base weight
            (set by `save_pretrained(light=True)`).
        light_checkpoint (`bool`, *optional*, defaults to `False`):
            Whether the saved weights omit the frozen base LLM (set by `save_pretrained(light=True)`).
        variant (`str`, *optional*):
            Name of the paper's system this config was built for (a key of `VARIANTS`); informative.
        use_history_encoder (`bool`, *optional*, defaults to `True`):
            Encode the history into one `<HistoryInteractions>` token with the User History
            Encoding Module (UHEM). Off: the history is written inline in the prompt.
        use_visual (`bool`, *optional*, defaults to `True`):
            Splice projected image features at `<Image>` placeholders.
        use_collaborative (`bool`, *optional*, defaults to `True`):
            Splice projected collaborative (MF) embeddings at `<UserID>` / `<ItemID>` placeholders.
        use_descriptions (`bool`, *optional*, defaults to `True`):
            Describe items with their knowledge-enhanced descriptions rather than titles only.
        vision_feature_size (`int`, *optional*, defaults to 384):
            Size of the image features (DINO ViT-S/16: 384); the vision encoder's hidden size when
            there is one.
        vision_config (`dict` or `PretrainedConfig`, *optional*):
            Config of the frozen vision encoder (e.g. `Dinov2Config` of DINOv2-small, `ViTConfig`
            of DINO ViT-S/16) that turns posters into features: the CLS token of its last hidden
            state, as the precomputed features are. None (the default): the model takes
            precomputed `image_features` only.
        vision_model_name_or_path (`str`, *optional*):
            Hub id or local folder of the vision encoder, named in the model card; a light
            checkpoint fetches the encoder from here instead of storing it.
        collaborative_size (`int`, *optional*, defaults to 256):
            Size of the pretrained user and item embeddings.
        num_users (`int`, *optional*, defaults to 0):
            Rows of the user table; ids outside `[0, num_users)` use a dedicated "unknown user" row.
        num_items (`int`, *optional*, defaults to 0):
            Rows of the item table; likewise with an "unknown item" row.
        projector_hidden_size (`int`, *optional*):
            Hidden width of the two-layer feature projectors. Defaults to the LLM hidden size.
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation between the two projector layers.
        history_encoder_type (`str`, *optional*, defaults to `"gru"`):
            The UHEM's encoder: `"gru"` (the paper: a GRU over the history sequence) or
            `"transformer"` (a small transformer encoder over the same sequence, parallel over its
            positions, with sine/cosine position encodings; its output at the last valid position
            is the token) or `"hierarchical"` (each history item's tokens pooled into one vector
            by learned attention weights, then the same transformer encoder over the items: its
            cost grows with the number of items, not of tokens).
        history_hidden_size (`int`, *optional*):
            Width of the UHEM encoder (GRU hidden size or transformer width). Defaults to the LLM
            hidden size (the paper); otherwise linear layers map to and from the LLM hidden size.
        history_encoder_layers (`int`, *optional*, defaults to 1):
            Layers of the transformer encoder (`"transformer"` and `"hierarchical"`).
        history_encoder_heads (`int`, *optional*, defaults to 8):
            Attention heads of the transformer encoder; must divide its width.
        projector_norm (`str`, *optional*, defaults to `"none"`):
            `"none"` (the paper): spliced tokens as the projectors and the UHEM give them.
            `"rms"`: every spliced token (each projector's output and the history token) is
            divided by its RMS and multiplied by a learned per-dimension gain, initialised on a
            fresh model to the mean RMS of the LLM's token embeddings, so that a pre-norm LLM
            meets them at the size of its own tokens.
        item_ids_after_titles (`bool`, *optional*, defaults to `False`):
            An `<ItemID>` token right after each history item's text (LLaRA), in the prompt or in
            the UHEM input, holding that item's projected collaborative embedding. Off (the
            paper): only the candidate has one. Needs `use_collaborative`.
        max_item_tokens (`int`, *optional*, defaults to 96):
            Token budget of each item's text (title and description); longer texts are cut at a word boundary.
        max_history_items (`int`, *optional*, defaults to 10):
            Most recent history items kept (the paper uses 5 for movies, 10 for Netflix).
        lora_r (`int`, *optional*, defaults to 8): LoRA rank.
        lora_alpha (`int`, *optional*, defaults to 16): LoRA scaling numerator.
        lora_dropout (`float`, *optional*, defaults to 0.05): dropout on the LoRA input.
        lora_target_modules (`list[str]`, *optional*, defaults to `["q_proj", "v_proj"]`):
            Modules of the LLM that receive LoRA adapters.
        image_token_id (`int`, *optional*): id of the `<Image>` placeholder.
        user_token_id (`int`, *optional*): id of the `<UserID>` placeholder.
        item_token_id (`int`, *optional*): id of the `<ItemID>` placeholder.
        history_token_id (`int`, *optional*): id of the `<HistoryInteractions>` placeholder.
        yes_token_id (`int`, *optional*): first token of the answer "Yes".
        no_token_id (`int`, *optional*): first token of the answer "No".
        custom_pipelines (`dict`, *optional*): the transformers pipelines saved with the model;
            defaults to `CUSTOM_PIPELINES` (the "recommendation" task).
    """

    model_type = "userllm"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="dinov2", optional=True),
    }

    text_config: dict | PretrainedConfig | None = None
    base_model_name_or_path: str | None = None
    base_model_revision: str | None = None
    base_model_fingerprint: dict | None = None
    light_checkpoint: bool = False
    variant: str | None = None
    use_history_encoder: bool = True
    use_visual: bool = True
    use_collaborative: bool = True
    use_descriptions: bool = True
    vision_feature_size: int = 384
    vision_config: dict | PretrainedConfig | None = None
    vision_model_name_or_path: str | None = None
    collaborative_size: int = 256
    num_users: int = 0
    num_items: int = 0
    projector_hidden_size: int | None = None
    projector_hidden_act: str = "gelu"
    history_encoder_type: str = "gru"
    history_hidden_size: int | None = None
    history_encoder_layers: int = 1
    history_encoder_heads: int = 8
    projector_norm: str = "none"
    item_ids_after_titles: bool = False
    max_item_tokens: int = 96
    max_history_items: int = 10
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    image_token_id: int | None = None
    user_token_id: int | None = None
    item_token_id: int | None = None
    history_token_id: int | None = None
    yes_token_id: int | None = None
    no_token_id: int | None = None
    custom_pipelines: dict | None = None

    def __post_init__(self, **kwargs):
        if self.lora_target_modules is None:
            self.lora_target_modules = ["q_proj", "v_proj"]
        if self.custom_pipelines is None:
            self.custom_pipelines = {task: dict(spec) for task, spec in CUSTOM_PIPELINES.items()}
        if self.variant is not None:
            if self.variant not in VARIANTS:
                raise ValueError(f"Unknown variant {self.variant!r}; expected one of {sorted(VARIANTS)}")
        if self.history_encoder_type not in HISTORY_ENCODER_TYPES:
            raise ValueError(f"Unknown history_encoder_type {self.history_encoder_type!r}; expected one of {list(HISTORY_ENCODER_TYPES)}")
        if self.projector_norm not in PROJECTOR_NORMS:
            raise ValueError(f"Unknown projector_norm {self.projector_norm!r}; expected one of {list(PROJECTOR_NORMS)}")
        if self.item_ids_after_titles and not self.use_collaborative:
            raise ValueError("item_ids_after_titles puts collaborative <ItemID> tokens in the prompt: it needs use_collaborative=True")
        self._check_ranges()
        super().__post_init__(**kwargs)
        history_width = self.history_hidden_size or self.text_config.hidden_size
        if self.history_encoder_type != "gru" and (self.history_encoder_heads < 1 or history_width % self.history_encoder_heads):
            raise ValueError(f"history_encoder_heads={self.history_encoder_heads} must divide the history encoder's width "
                             f"{history_width} (history_hidden_size, or the LLM hidden size when unset)")
        if self.vision_config is not None and self.vision_config.hidden_size != self.vision_feature_size:
            raise ValueError(f"vision_config.hidden_size is {self.vision_config.hidden_size} but vision_feature_size is "
                             f"{self.vision_feature_size}: the encoder's CLS feature must have the projector's input size")

    def _check_ranges(self) -> None:
        """Raises a ValueError naming the field, its value and its range for a size, count or
        LoRA setting the model cannot be built with (or would silently misread, as 0 tokens)."""
        for name, minimum in _SMALLEST_VALUES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL_SIZES:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                optional = " or None (the LLM hidden size)" if name in _OPTIONAL_SIZES else ""
                raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}{optional}")
        if not _is_number(self.lora_alpha) or self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha={self.lora_alpha!r}: expected a number > 0")
        if not _is_number(self.lora_dropout) or not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout={self.lora_dropout!r}: expected a number >= 0 and < 1")
        modules = self.lora_target_modules
        if isinstance(modules, str) or not modules or not all(isinstance(name, str) and name for name in modules):
            raise ValueError(f"lora_target_modules={modules!r}: expected a non-empty list of module names")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "UserLLMConfig":
        """Loads a USER-LLM config; a folder or repo of another model type raises at once.

        Without this check a plain LLM's `config.json` would load as a USER-LLM config with
        the default 7B `text_config`, and building that model would take minutes before failing.
        A local path that does not exist raises "no such folder" rather than a Hub error.
        """
        name = str(pretrained_model_name_or_path)
        if is_local_path(name) and not os.path.isdir(os.path.expanduser(name)):
            raise OSError(f"{name}: no such folder (a relative path starts from the current folder, {os.getcwd()})")
        config_dict, _ = cls.get_config_dict(pretrained_model_name_or_path, **dict(kwargs))
        model_type = config_dict.get("model_type")
        if model_type != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path} is not a USER-LLM checkpoint: its config.json has model_type "
                f"{model_type!r}, expected {cls.model_type!r}. To build a new USER-LLM around this LLM, use "
                "modeling_userllm.create_model_and_processor(tokenizer, base_model_name_or_path=...)."
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_variant(cls, variant: str, **kwargs) -> "UserLLMConfig":
        """Builds the config of one of the paper's systems (`VARIANTS`); `kwargs` override."""
        if variant not in VARIANTS:
            raise ValueError(f"Unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
        return cls(variant=variant, **{**VARIANTS[variant], **kwargs})

    @property
    def placeholder_token_ids(self) -> list[int]:
        """Ids of all placeholder tokens that the model replaces with embeddings."""
        ids = (self.image_token_id, self.user_token_id, self.item_token_id, self.history_token_id)
        return [token_id for token_id in ids if token_id is not None]


UserLLMConfig.register_for_auto_class()

__all__ = ["CUSTOM_PIPELINES", "HISTORY_ENCODER_TYPES", "PROJECTOR_NORMS", "RECOMMENDATION_TASK", "UserLLMConfig", "VARIANTS"]
