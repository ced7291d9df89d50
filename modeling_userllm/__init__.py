"""userllm: USER-LLM, an LLM-based multimodal recommender, HuggingFace-native.

Importing the package registers the model with the `Auto*` classes, so that
`AutoModel.from_pretrained(folder)` works without `trust_remote_code` when it is installed;
without the package, checkpoints load through the code saved next to their weights
(`trust_remote_code=True`).
"""

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_userllm import HISTORY_ENCODER_TYPES, VARIANTS, UserLLMConfig
from .factory import create_model_and_processor
from .metrics import auc, auc_and_uauc, uauc
from .modeling_userllm import (
    FeatureProjector,
    HierarchicalHistoryEncoder,
    HistoryEncoder,
    TransformerHistoryEncoder,
    UserHistoryEncoder,
    UserLLMForRecommendation,
    UserLLMOutput,
)
from .processing_userllm import PLACEHOLDER_TOKENS, UserLLMProcessor

AutoConfig.register(UserLLMConfig.model_type, UserLLMConfig, exist_ok=True)
AutoModel.register(UserLLMConfig, UserLLMForRecommendation, exist_ok=True)
AutoProcessor.register(UserLLMConfig, UserLLMProcessor, exist_ok=True)

__all__ = [
    "HISTORY_ENCODER_TYPES",
    "VARIANTS",
    "FeatureProjector",
    "PLACEHOLDER_TOKENS",
    "HierarchicalHistoryEncoder",
    "HistoryEncoder",
    "TransformerHistoryEncoder",
    "UserHistoryEncoder",
    "UserLLMConfig",
    "UserLLMForRecommendation",
    "UserLLMOutput",
    "UserLLMProcessor",
    "auc",
    "auc_and_uauc",
    "create_model_and_processor",
    "uauc",
]
