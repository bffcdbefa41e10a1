"""Backbone adapter: any transformers AutoBackbone (Swin, ResNet, ConvNeXt, ...) or a timm model through
`TimmBackbone`, returning 4 feature maps at strides 4, 8, 16, 32."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hub_constants
from torch import nn
from transformers import AutoBackbone, PreTrainedConfig, TimmBackbone

from .ms_deform_attn import is_tracing
from .window_attention import make_swin_memory_lean


def _require_hub(name: str) -> None:
    """Fail at once, in one line, where pretrained weights cannot be downloaded (instead of minutes of retries).

    Raises:
        OSError: `HF_HUB_OFFLINE=1`, or the Hub endpoint does not answer within 5 s.
    """
    hint = "build with use_pretrained_backbone=False, or load a saved model with from_pretrained"
    if hub_constants.is_offline_mode():
        raise OSError(f"use_pretrained_backbone=True: cannot download the weights of backbone {name!r} in offline "
                      f"mode (HF_HUB_OFFLINE=1); {hint}")
    endpoint = urlparse(hub_constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=5).close()
    except OSError as error:
        raise OSError(f"use_pretrained_backbone=True: cannot download the weights of backbone {name!r}: "
                      f"{endpoint.hostname} is unreachable ({error}); {hint}") from None


def _pretrained_backbone(backbone_config: PreTrainedConfig, name: str | None) -> nn.Module:
    """The backbone with pretrained weights: timm's for a `TimmBackboneConfig`, else transformers' `name`."""
    timm = backbone_config.model_type == "timm_backbone"
    name = backbone_config.backbone if timm else name
    _require_hub(name)
    if timm:
        return TimmBackbone._from_config(backbone_config, pretrained=True)
    return AutoBackbone.from_pretrained(name, config=backbone_config)


def build_backbone(
    backbone_config: PreTrainedConfig, use_pretrained_backbone: bool = False, backbone: str | None = None
) -> nn.Module:
    """Instantiate the backbone.

    Args:
        backbone_config: any AutoBackbone config (`TimmBackboneConfig` for timm models).
        use_pretrained_backbone: download the backbone's pretrained weights (timm's for a timm backbone, else those
            of the transformers model `backbone`); otherwise random weights (`from_pretrained` of the whole model
            loads them).
        backbone: the transformers model whose weights `use_pretrained_backbone` loads.

    Raises:
        OSError: pretrained weights requested but the Hub cannot be reached (one line, at once).
    """
    if use_pretrained_backbone:
        module = _pretrained_backbone(backbone_config, backbone)
        for submodule in module.modules():  # the model's weight initialisation must not overwrite them
            submodule._is_hf_initialized = True
    else:
        module = AutoBackbone.from_config(backbone_config)
    for submodule in module.modules():  # the backbone keeps its own initialisation scheme
        submodule._in_backbone = True
    make_swin_memory_lean(module)  # Swin keeps less for backward (window_attention.py, norm_linear.py, gelu_linear.py)
    return module


def backbone_channels(backbone: nn.Module) -> list[int]:
    """Channels of the 4 feature maps, finest first."""
    channels = list(backbone.channels)
    if len(channels) != 4:
        raise ValueError(f"the backbone must return 4 feature maps, it returns {len(channels)}")
    return channels


def backbone_feature_maps(backbone: nn.Module, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """`pixel_values [batch, 3, H, W]` → 4 maps `[batch, C_i, H / s_i, W / s_i]` for s = 4, 8, 16, 32.

    At inference on CPU the input and the maps are channels-last (`[batch, H, W, C]` in memory): oneDNN's
    convolutions run on that layout without reordering (the backbone's and the pixel decoder's), and flattening a
    map into `[batch, H·W, C]` tokens is a view. Training keeps the default layout.
    """
    if pixel_values.device.type != "cpu" or torch.is_grad_enabled() or is_tracing():
        return list(backbone(pixel_values).feature_maps)
    maps = backbone(pixel_values.contiguous(memory_format=torch.channels_last)).feature_maps
    return [feature_map.contiguous(memory_format=torch.channels_last) for feature_map in maps]


def freeze_batch_norm(module: nn.Module) -> None:
    """Put every BatchNorm of `module` in eval mode with fixed affine parameters (detectron2's FrozenBN)."""
    for submodule in module.modules():
        if isinstance(submodule, nn.modules.batchnorm._BatchNorm):
            submodule.eval()
            for parameter in submodule.parameters(recurse=False):
                parameter.requires_grad_(False)
