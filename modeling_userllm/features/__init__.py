"""Offline feature pipelines of USER-LLM (paper Sec. 3.2) and the features folder (`FeatureStore`).

The collaborative (MF) tables are trained by `features.collaborative`, imported on use (it needs the baselines).
"""

from .knowledge_enhancement import (PAPER_PROMPT, DescriptionCache, build_prompt, clean_answer, descriptions_from_column,
                                    generate_descriptions, generate_item_descriptions, load_description_model)
from .store import FeatureStore
from .visual import encode_images, extract_image_features, load_image_encoder, nearest_neighbours, toy_image_encoder
