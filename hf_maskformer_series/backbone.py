"""Backbone adapter: any transformers AutoBackbone (Swin, ResNet, ConvNeXt, ...) or a timm model through
`TimmBackbone`, returning 4 feature maps at strides 4, 8, 16, 32."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoBackbone, PreTrainedConfig


def build_backbone(backbone_config: PreTrainedConfig) -> nn.Module:
    """Instantiate the backbone (random weights; `from_pretrained` of the whole model loads them)."""
    backbone = AutoBackbone.from_config(backbone_config)
    for module in backbone.modules():  # the backbone keeps its own initialisation scheme
        module._in_backbone = True
    return backbone


def backbone_channels(backbone: nn.Module) -> list[int]:
    """Channels of the 4 feature maps, finest first."""
    channels = list(backbone.channels)
    if len(channels) != 4:
        raise ValueError(f"the backbone must return 4 feature maps, it returns {len(channels)}")
    return channels


def backbone_feature_maps(backbone: nn.Module, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """`pixel_values [batch, 3, H, W]` → 4 maps `[batch, C_i, H / s_i, W / s_i]` for s = 4, 8, 16, 32."""
    return list(backbone(pixel_values).feature_maps)


def freeze_batch_norm(module: nn.Module) -> None:
    """Put every BatchNorm of `module` in eval mode with fixed affine parameters (detectron2's FrozenBN)."""
    for submodule in module.modules():
        if isinstance(submodule, nn.modules.batchnorm._BatchNorm):
            submodule.eval()
            for parameter in submodule.parameters(recurse=False):
                parameter.requires_grad_(False)
