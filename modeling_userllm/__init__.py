"""userllm: USER-LLM, an LLM-based multimodal recommender, HuggingFace-native.

Importing the package registers the model with the `Auto*` classes and the "recommendation" pipeline
with `PIPELINE_REGISTRY`; without the package, checkpoints load through the code saved beside their
weights (`trust_remote_code=True`).
"""

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_userllm import HISTORY_ENCODER_TYPES, VARIANTS, UserLLMConfig, check_userllm_checkpoint
from .factory import create_model_and_processor
from .metrics import auc, auc_and_uauc, uauc
from .modeling_userllm import (
    FeatureProjector, UserHistoryEncoder, UserLLMForRecommendation, UserLLMModel, UserLLMOutput,
)
from .pipeline_userllm import RecommendationPipeline
from .processing_userllm import PLACEHOLDER_TOKENS, UserLLMProcessor

AutoConfig.register(UserLLMConfig.model_type, UserLLMConfig, exist_ok=True)
AutoModel.register(UserLLMConfig, UserLLMForRecommendation, exist_ok=True)
AutoProcessor.register(UserLLMConfig, UserLLMProcessor, exist_ok=True)

__all__ = [
    "HISTORY_ENCODER_TYPES", "PLACEHOLDER_TOKENS", "VARIANTS", "FeatureProjector", "RecommendationPipeline",
    "UserHistoryEncoder", "UserLLMConfig", "UserLLMForRecommendation", "UserLLMModel", "UserLLMOutput",
    "UserLLMProcessor", "auc", "auc_and_uauc", "check_userllm_checkpoint", "create_model_and_processor", "uauc",
]
