"""Visual features (paper Sec. 3.2.2): one 384-d vector per poster, the CLS token of a self-supervised ViT.

The paper uses DINO ViT-S/16 (`facebook/dino-vits16`); DINOv2 ViT-S/14 has the same feature size. A missing or
unreadable poster is a normal case: its row is zeros and its mask entry False. Posters are read by
`processing_userllm.open_poster`, as the processor reads them, so a poster given to the model as a path gets the
features computed here.
"""

from __future__ import annotations

import os
import warnings

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..modeling_userllm import cls_features
from ..processing_userllm import MAX_POSTER_PIXELS, open_poster

UNREADABLE_SHOWN = 5


@torch.no_grad()
def encode_images(images: list[Image.Image], model, image_processor) -> torch.Tensor:
    """float32 `(len(images), hidden_size)` CLS features of RGB images (`cls_features`), by a vision
    `AutoModel` (ViT, DINOv2) and its `AutoImageProcessor`."""
    pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
    return cls_features(model, pixel_values).cpu()


def extract_image_features(paths: list[str | os.PathLike | None], model, image_processor, *, batch_size: int = 8,
                           progress: bool = True, warn_missing: bool = True,
                           max_pixels: int | None = MAX_POSTER_PIXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Poster features for a list of image paths, masked where an image is unavailable.

    Args:
        paths: one image path per item (None = no poster), in item-id order.
        model, image_processor: the vision encoder (see `encode_images`) and its image processor.
        batch_size: images per forward pass.
        warn_missing: warn when some images are missing (None or no such file); False where missing posters are
            expected (the toy data set). Files that cannot be used (not an image, over `max_pixels`, see
            `open_poster`) are always warned about.

    Returns:
        `features` float32 `(len(paths), hidden_size)`, zero rows where `mask` bool `(len(paths),)` is False
        (a missing, corrupt or too large image).
    """
    features = torch.zeros((len(paths), model.config.hidden_size), dtype=torch.float32)
    mask = torch.zeros(len(paths), dtype=torch.bool)
    model.eval()
    unusable: list[str] = []  # the reasons, from open_poster
    starts = range(0, len(paths), batch_size)
    for start in tqdm(starts, desc="visual features", unit="batch", disable=not progress):
        present = []
        for row, path in enumerate(paths[start : start + batch_size], start):
            if path is None or not os.path.isfile(path):
                continue
            try:
                present.append((row, open_poster(path, f"item {row}", max_pixels)))
            except ValueError as error:
                unusable.append(str(error))
        if not present:
            continue
        rows = torch.tensor([row for row, _ in present])
        features[rows] = encode_images([image for _, image in present], model, image_processor)
        mask[rows] = True
    masked = len(paths) - int(mask.sum())
    if unusable or (masked and warn_missing):
        shown = "; ".join(unusable[:UNREADABLE_SHOWN]) + ("; ..." if len(unusable) > UNREADABLE_SHOWN else "")
        warnings.warn(
            f"{masked} of {len(paths)} images are missing or unreadable; their feature rows are zeros and masked out"
            + (f" ({len(unusable)} files cannot be used: {shown})" if unusable else ""),
            stacklevel=2,
        )
    return features, mask


def load_image_encoder(name_or_path: str, dtype: torch.dtype = torch.float32):
    """(vision encoder in eval mode, its image processor) of a Hub id (e.g. "facebook/dino-vits16") or folder;
    float32 by default because stored weights may be float16."""
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(name_or_path, dtype=dtype).eval()
    return model, AutoImageProcessor.from_pretrained(name_or_path)


def toy_image_encoder(seed: int = 0, hidden_size: int = 384):
    """A seeded, randomly initialised tiny ViT with the paper's feature size: the toy data set's stand-in for DINO.

    Its features are a fixed random projection of the pixels (similar posters get similar vectors) with no learned
    visual semantics: use DINO/DINOv2 for any real measurement. Returns (ViTModel in eval mode, ViT image processor
    resizing to 32x32 with the PIL backend: the same pixels whether or not torchvision is installed).
    """
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    config = ViTConfig(hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=6, intermediate_size=hidden_size,
                       image_size=32, patch_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViTModel(config, add_pooling_layer=False).eval()
    return model, ViTImageProcessorPil(size={"height": 32, "width": 32})


def nearest_neighbours(features: torch.Tensor, mask: torch.Tensor, query: int, k: int = 5) -> list[tuple[int, float]]:
    """Up to `k` (item_id, cosine similarity) pairs of the items most similar to item `query`, most similar first,
    `query` and the items masked out by `mask` bool `(num_items,)` excluded; `features` `(num_items, D)`.

    Features are centred on the mean of the present items first: DINO CLS vectors share a large common component
    that otherwise puts every pair near similarity 1.
    """
    if not bool(mask[query]):
        raise ValueError(f"item {query} has no image feature")
    features = features.float()
    centred = features - features[mask].mean(dim=0)
    normed = torch.nn.functional.normalize(centred, dim=-1)  # (N, D)
    similarity = normed @ normed[query]  # (N,)
    similarity[~mask] = float("-inf")
    similarity[query] = float("-inf")
    top = similarity.topk(min(k, int(mask.sum()) - 1))
    return [(int(i), float(s)) for s, i in zip(top.values, top.indices)]
