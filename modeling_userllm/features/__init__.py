"""Offline feature pipelines of USER-LLM (paper Sec. 3.2) and the features folder.

Knowledge enhancement and visual features live here; the collaborative (MF) tables are
trained by `modeling_userllm.features.collaborative` (imported on use, not here) and stored
in the same folder through `FeatureStore`.
"""

from .knowledge_enhancement import (
    PAPER_PROMPT,
    DescriptionCache,
    build_prompt,
    clean_answer,
    descriptions_from_column,
    generate_descriptions,
    generate_item_descriptions,
    load_description_model,
)
from .store import FeatureStore
from .visual import (
    encode_images,
    extract_image_features,
    load_image_encoder,
    nearest_neighbours,
    toy_image_encoder,
)

__all__ = [
    "PAPER_PROMPT",
    "DescriptionCache",
    "FeatureStore",
    "build_prompt",
    "clean_answer",
    "descriptions_from_column",
    "encode_images",
    "extract_image_features",
    "generate_descriptions",
    "generate_item_descriptions",
    "load_description_model",
    "load_image_encoder",
    "nearest_neighbours",
    "toy_image_encoder",
]
