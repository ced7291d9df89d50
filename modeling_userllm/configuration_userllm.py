"""USER-LLM model configuration (copied next to the weights: imports only transformers and the standard library)."""

import math
import os
from typing import Literal

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


# The UHEM's encoder: the paper's GRU. The transformer and hierarchical encoders measured in docs/RESULTS.md were removed.
HISTORY_ENCODER_TYPES = ("gru",)
PROJECTOR_NORMS = ("none", "rms")

# The pipeline saved with every checkpoint: `pipeline(model=PATH_OR_REPO, trust_remote_code=True)` ranks items.
RECOMMENDATION_TASK = "recommendation"
CUSTOM_PIPELINES = {
    RECOMMENDATION_TASK: {"impl": "pipeline_userllm.RecommendationPipeline", "pt": ["AutoModel"], "tf": [], "type": "multimodal"}
}


# The smallest value of each size and count (0 item tokens is refused: the processor would read "no limit").
_SMALLEST_VALUES = {
    "vision_feature_size": 1, "collaborative_size": 1, "num_users": 0, "num_items": 0, "projector_hidden_size": 1,
    "history_hidden_size": 1, "max_item_tokens": 1, "max_history_items": 0, "lora_r": 1,
}
_OPTIONAL_SIZES = ("projector_hidden_size", "history_hidden_size")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_local_path(name: str) -> bool:
    """Whether `name` can only be a local path: a Hub id is `NAME` or `ORG/NAME`, never
    absolute, relative to `.`/`..`/`~`, nor with two slashes."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep in name and os.sep != "/"


def check_userllm_checkpoint(name_or_path, /, **kwargs) -> dict:
    """The `config.json` content of a USER-LLM checkpoint (a folder or Hub id; `kwargs` as `from_pretrained`).

    Raises:
        OSError: a file, a local path that is no folder, or a folder without config.json.
        ValueError: a config of another `model_type`.
    """
    name = str(name_or_path)
    path = os.path.expanduser(name)
    if os.path.isfile(path) or is_local_path(name) and not os.path.isdir(path):
        what = "a file, not the checkpoint folder" if os.path.isfile(path) else "no such folder"
        raise OSError(f"{name}: {what} (a relative path starts from the current folder, {os.getcwd()})")
    config_file = os.path.join(path, kwargs.get("subfolder") or "", "config.json")
    if os.path.isdir(path) and not os.path.isfile(config_file):
        raise OSError(f"{name} is not a model checkpoint: the folder has no {os.path.relpath(config_file, path)}")
    config_dict, _ = UserLLMConfig.get_config_dict(name_or_path, **dict(kwargs))
    model_type = config_dict.get("model_type")
    if model_type != UserLLMConfig.model_type:
        raise ValueError(
            f"{name} is not a USER-LLM checkpoint: its config.json has model_type {model_type!r}, expected "
            f"{UserLLMConfig.model_type!r}. To build a new USER-LLM around this LLM, use "
            "modeling_userllm.create_model_and_processor(tokenizer, base_model_name_or_path=...)."
        )
    return config_dict


class UserLLMConfig(PretrainedConfig):
    r"""Configuration of [`UserLLMForRecommendation`].

    Args:
        text_config (`dict` or `PretrainedConfig`, *optional*): the Llama-family causal LM (Vicuna-7B in the paper).
        base_model_name_or_path (`str`, *optional*): Hub id or folder of the pretrained LLM, which a light
            checkpoint fetches on load.
        base_model_revision (`str`, *optional*): Hub commit of that LLM, when it came from the Hub.
        base_model_fingerprint (`dict`, *optional*): `{"digest", "dtype", "tensors"}` of the base LLM's weights,
            checked when a light checkpoint loads (set by `save_pretrained(light=True)`).
        light_checkpoint (`bool`, defaults to `False`): the saved weights omit the frozen base LLM.
        variant (`str`, *optional*): the paper's system this config was built for (a key of `VARIANTS`).
        use_history_encoder (`bool`, defaults to `True`): the history as one `<HistoryInteractions>` token from
            the UHEM; off: written inline in the prompt.
        use_visual (`bool`, defaults to `True`): projected image features at `<Image>` placeholders.
        use_collaborative (`bool`, defaults to `True`): projected MF embeddings at `<UserID>` / `<ItemID>`.
        use_descriptions (`bool`, defaults to `True`): items described by knowledge-enhanced descriptions.
        vision_feature_size (`int`, defaults to 384): size of the image features (DINO ViT-S/16).
        vision_config (`dict` or `PretrainedConfig`, *optional*): the frozen vision encoder that turns posters
            into features (its CLS token); None: precomputed `image_features` only.
        vision_model_name_or_path (`str`, *optional*): its Hub id or folder (a light checkpoint fetches it).
        collaborative_size (`int`, defaults to 256): size of the pretrained user and item embeddings.
        num_users, num_items (`int`, defaults to 0): rows of the user / item tables; other ids use an "unknown" row.
        projector_hidden_size (`int`, *optional*): hidden width of the projectors (default: the LLM's).
        projector_hidden_act (`str`, defaults to `"gelu"`): activation between the projector layers.
        history_encoder_type (`str`, defaults to `"gru"`): the UHEM's encoder; only the paper's GRU.
        history_hidden_size (`int`, *optional*): the UHEM width (default: the LLM hidden size, the paper).
        projector_norm (`str`, defaults to `"none"`): `"rms"` scales every spliced token to the LLM's
            token-embedding RMS with a learned gain; `"none"` (the paper) leaves them as projected.
        item_ids_after_titles (`bool`, defaults to `False`): an `<ItemID>` after each history item's text
            (LLaRA); needs `use_collaborative`.
        max_item_tokens (`int`, defaults to 96): token budget of each item's text, cut at a word boundary.
        max_history_items (`int`, defaults to 10): most recent history items kept (paper: 5 movies, 10 Netflix).
        lora_r (`int`, defaults to 8), lora_alpha (`int`, defaults to 16), lora_dropout (`float`, defaults to
            0.05), lora_target_modules (`list[str]`, defaults to `["q_proj", "v_proj"]`): the LoRA adapters.
        image_token_id, user_token_id, item_token_id, history_token_id (`int`, *optional*): placeholder ids.
        yes_token_id, no_token_id (`int`, *optional*): first tokens of the answers "Yes" and "No".
        custom_pipelines (`dict`, *optional*): the pipelines saved with the model (default `CUSTOM_PIPELINES`).
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
    history_encoder_type: Literal["gru"] = "gru"
    history_hidden_size: int | None = None
    projector_norm: Literal["none", "rms"] = "none"
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
            raise ValueError(
                f"history_encoder_type={self.history_encoder_type!r}: expected 'gru', the only UHEM encoder (the parallel "
                "'transformer' and 'hierarchical' encoders were removed; docs/RESULTS.md keeps their figures)"
            )
        if self.projector_norm not in PROJECTOR_NORMS:
            raise ValueError(f"Unknown projector_norm {self.projector_norm!r}; expected one of {list(PROJECTOR_NORMS)}")
        if self.item_ids_after_titles and not self.use_collaborative:
            raise ValueError("item_ids_after_titles puts collaborative <ItemID> tokens in the prompt: it needs use_collaborative=True")
        self._check_ranges()
        super().__post_init__(**kwargs)
        if self.vision_config is not None and self.vision_config.hidden_size != self.vision_feature_size:
            raise ValueError(f"vision_config.hidden_size is {self.vision_config.hidden_size} but vision_feature_size is "
                             f"{self.vision_feature_size}: the encoder's CLS feature must have the projector's input size")

    def _check_ranges(self) -> None:
        """Raises a ValueError naming the field, its value and its range."""
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
        """Loads a USER-LLM config; anything else raises at once (`check_userllm_checkpoint`), not after
        building a default 7B model."""
        check_userllm_checkpoint(pretrained_model_name_or_path, **kwargs)
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

__all__ = ["CUSTOM_PIPELINES", "HISTORY_ENCODER_TYPES", "PROJECTOR_NORMS", "RECOMMENDATION_TASK", "UserLLMConfig", "VARIANTS",
           "check_userllm_checkpoint"]
