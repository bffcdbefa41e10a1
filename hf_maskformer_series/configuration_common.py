"""Config helpers shared by the three model families: backbone sub-config resolution and validation."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig

# Swin-S as in the released Mask2Former COCO configs (transformers' Mask2Former default, too).
DEFAULT_SWIN_BACKBONE = {
    "model_type": "swin",
    "embed_dim": 96,
    "depths": [2, 2, 18, 2],
    "num_heads": [3, 6, 12, 24],
    "window_size": 7,
    "drop_path_rate": 0.3,
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}


def resolve_backbone_config(
    backbone_config: PreTrainedConfig | dict[str, Any] | None, default: dict[str, Any] | None = None
) -> PreTrainedConfig:
    """Return a backbone config object from a config, a dict (with `model_type`) or None (the default).

    Raises:
        ValueError: a dict without `model_type`, or a config that cannot give 4 feature maps.
    """
    if backbone_config is None:
        backbone_config = dict(default or DEFAULT_SWIN_BACKBONE)
    if isinstance(backbone_config, dict):
        backbone_config = dict(backbone_config)
        model_type = backbone_config.pop("model_type", None)
        if model_type is None:
            raise ValueError("backbone_config as a dict needs a 'model_type' key (e.g. 'swin', 'resnet', 'timm_backbone')")
        backbone_config = AutoConfig.for_model(model_type, **backbone_config)
    if not isinstance(backbone_config, PreTrainedConfig):
        raise ValueError(f"backbone_config must be a PreTrainedConfig or a dict, got {type(backbone_config).__name__}")
    out_features = getattr(backbone_config, "out_features", None)
    if out_features is not None and len(out_features) != 4:
        raise ValueError(
            f"the backbone must return 4 feature maps (strides 4, 8, 16, 32); its out_features are {out_features}"
        )
    return backbone_config
