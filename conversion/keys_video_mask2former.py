"""Original (detectron2) video Mask2Former checkpoint names → `SeriesVideoMask2FormerForVideoInstanceSegmentation`.

The video model's names equal the image model's (the original video decoder is a copy of the image decoder and
the 3-D position encoding has no weights), so this is the image mapping (`keys_backbones`, `keys_mask2former`):

- `backbone.*` (D2SwinTransformer, or a detectron2 ResNet when `cfg` says so) → `model.pixel_level_module.encoder.*`,
- `sem_seg_head.pixel_decoder.*` → `model.pixel_level_module.decoder.*`,
- `sem_seg_head.predictor.*` → `model.transformer_module.*` (`class_embed` → `class_predictor`; the queries may be
  called `query_feat` or `static_query`),
- `criterion.empty_weight` is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .keys_backbones import convert_backbone, convert_swin_backbone
from .keys_mask2former import (
    PIXEL_DECODER_IN,
    PREDICTOR_IN,
    convert_masked_attention_decoder,
    convert_msdeformattn_pixel_decoder,
)

KNOWN_PREFIXES = ("backbone.", PIXEL_DECODER_IN, PREDICTOR_IN, "criterion.empty_weight")


def convert_video_mask2former_state_dict(
    original: Mapping[str, Any], cfg: Mapping[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """Rename an original video Mask2Former state dict to our names.

    Args:
        original: `{name: tensor or numpy array}` as in the released `model_final_*.pkl` files (their `"model"`
            entry) or the original modules' `state_dict()`.
        cfg: the original (detectron2) config as a dict; picks the backbone mapping from `MODEL.BACKBONE.NAME`.
            Without it the backbone is taken to be a `D2SwinTransformer` (the released YouTube-VIS Swin models).

    Returns:
        The state dict of `SeriesVideoMask2FormerForVideoInstanceSegmentation`. `swin.layernorm` is not produced
        (the original has no such layer and the backbone does not use it).

    Raises:
        ValueError: a key that has no counterpart, or both `query_feat` and `static_query`.
    """
    original = {name: torch.as_tensor(value) for name, value in original.items()}
    unknown = sorted(name for name in original if not name.startswith(KNOWN_PREFIXES))
    if unknown:
        raise ValueError(f"unexpected keys in the video Mask2Former checkpoint: {unknown[:10]}")
    converted = convert_backbone(original, cfg) if cfg is not None else convert_swin_backbone(original)
    converted.update(convert_msdeformattn_pixel_decoder(original))
    converted.update(convert_masked_attention_decoder(original))
    if "criterion.empty_weight" in original:
        converted["criterion.empty_weight"] = original["criterion.empty_weight"]
    return converted
