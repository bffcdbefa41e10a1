"""MaskFormer's pixel decoders: the FPN (`BasePixelDecoder`) and its transformer-encoder variant
(`TransformerEncoderPixelDecoder`, used by the original COCO-panoptic ResNet models; transformers lacks it).

FPN: a 3×3 conv (+GN, ReLU) on the /32 map (`fpn.stem`), then for /16, /8, /4 a 1×1 lateral conv (+GN,
`fpn.layers.{i}.proj`) added to the nearest-upsampled coarser map and a 3×3 output conv (+GN, ReLU,
`fpn.layers.{i}.block`); a 3×3 conv on the /4 map gives the mask features (`mask_projection`). Names follow
transformers' `MaskFormerPixelDecoder`.

Transformer encoder: the /32 map is projected to `feature_size` by a 1×1 conv (`input_projection`), encoded by
post-norm DETR encoder layers (`detr_transformer.DetrEncoder`) (`transformer_encoder.layers.{i}.{self_attn.{q,k,v,out}_proj,
self_attn_layer_norm, fc1, fc2, final_layer_norm}`; queries and keys get the sine position encoding,
values do not), and the result replaces the /32 input of the FPN stem. It is also the transformer decoder's input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .detr_transformer import DetrEncoder
from .position_encoding import SinePositionEmbedding


@dataclass
class FPNPixelDecoderOutput:
    """Output of the MaskFormer pixel decoders.

    Attributes:
        mask_features: per-pixel embeddings `[batch, mask_feature_size, H/4, W/4]`.
        fpn_features: the 4 FPN maps `[batch, feature_size, H/s, W/s]`, coarse first (s = 32, 16, 8, 4).
        transformer_features: the transformer decoder's input: the backbone's /32 map (FPN decoder) or the
            transformer encoder's output `[batch, feature_size, H/32, W/32]` (transformer-encoder decoder).
    """

    mask_features: torch.Tensor
    fpn_features: list[torch.Tensor]
    transformer_features: torch.Tensor


class FPNConvLayer(nn.Sequential):
    """3×3 conv (no bias) → GroupNorm(32) → ReLU (keys `0.weight`, `1.weight`, `1.bias`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(32, out_channels),
            nn.ReLU(inplace=True),
        )


class FPNLateralLayer(nn.Module):
    """Lateral 1×1 conv + GN (`proj`) plus the upsampled coarser map, then the 3×3 output conv (`block`)."""

    def __init__(self, feature_size: int, lateral_channels: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(lateral_channels, feature_size, kernel_size=1, bias=False), nn.GroupNorm(32, feature_size)
        )
        self.block = FPNConvLayer(feature_size, feature_size)

    def forward(self, coarser: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        """`coarser [B, F, h, w]`, `lateral [B, C, 2h, 2w]` → `[B, F, 2h, 2w]`."""
        lateral = self.proj(lateral)
        return self.block(lateral + F.interpolate(coarser, size=lateral.shape[-2:], mode="nearest"))


class FPN(nn.Module):
    """Top-down feature pyramid (`stem`, `layers` ordered /16, /8, /4)."""

    def __init__(self, top_channels: int, lateral_channels: list[int], feature_size: int):
        super().__init__()
        if feature_size % 32:
            raise ValueError(f"the FPN feature size must be a multiple of 32 (GroupNorm(32)), got {feature_size}")
        self.stem = FPNConvLayer(top_channels, feature_size)
        self.layers = nn.Sequential(*(FPNLateralLayer(feature_size, channels) for channels in lateral_channels[::-1]))

    def forward(self, top: torch.Tensor, laterals: list[torch.Tensor]) -> list[torch.Tensor]:
        """`top`: the /32 input; `laterals`: the finer maps, finest first. Returns the maps coarse first."""
        # the stem's 3×3 conv reads many channels on a small map: in the default layout (a copy of a few hundred KB
        # for the channels-last maps of CPU inference) oneDNN takes its large weight as it is, where a channels-last
        # input has it re-laid out on every call (~4 ms for R50's 2048-channel stem)
        outputs = [self.stem(top.contiguous())]
        for layer, lateral in zip(self.layers, laterals[::-1]):
            outputs.append(layer(outputs[-1], lateral))
        return outputs


class FPNPixelDecoder(nn.Module):
    """The original `BasePixelDecoder`.

    Args:
        in_channels: channels of the 4 backbone maps, finest first.
        feature_size: channels of the FPN maps.
        mask_feature_size: channels of the mask features.
    """

    def __init__(self, in_channels: list[int], feature_size: int = 256, mask_feature_size: int = 256):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"the pixel decoder needs 4 backbone maps, got channels {in_channels}")
        self.fpn = FPN(self._top_channels(in_channels, feature_size), list(in_channels[:-1]), feature_size)
        self.mask_projection = nn.Conv2d(feature_size, mask_feature_size, kernel_size=3, padding=1)

    def _top_channels(self, in_channels: list[int], feature_size: int) -> int:
        return in_channels[-1]

    def encode_top(self, top: torch.Tensor) -> torch.Tensor:
        """The map fed to the FPN stem and to the transformer decoder (here: the backbone's /32 map)."""
        return top

    def forward(self, features: list[torch.Tensor]) -> FPNPixelDecoderOutput:
        """`features`: 4 backbone maps `[batch, C_i, H/s_i, W/s_i]`, finest first."""
        top = self.encode_top(features[-1])
        fpn_features = self.fpn(top, list(features[:-1]))
        return FPNPixelDecoderOutput(self.mask_projection(fpn_features[-1]), fpn_features, top)


class TransformerEncoderPixelDecoder(FPNPixelDecoder):
    """The original `TransformerEncoderPixelDecoder`: FPN whose /32 input is a transformer encoding of res5.

    Args:
        in_channels, feature_size, mask_feature_size: as `FPNPixelDecoder`.
        num_layers, num_heads, ffn_dim, dropout, activation, pre_norm: the transformer encoder.
    """

    def __init__(self, in_channels: list[int], feature_size: int = 256, mask_feature_size: int = 256,
                 num_layers: int = 6, num_heads: int = 8, ffn_dim: int = 2048, dropout: float = 0.1,
                 activation: str = "relu", pre_norm: bool = False):
        super().__init__(in_channels, feature_size, mask_feature_size)
        if feature_size % 2:
            raise ValueError(f"feature_size must be even for the sine position encoding, got {feature_size}")
        self.input_projection = nn.Conv2d(in_channels[-1], feature_size, kernel_size=1)
        self.position_embedder = SinePositionEmbedding(feature_size // 2, normalize=True)
        self.transformer_encoder = DetrEncoder(num_layers, feature_size, num_heads, ffn_dim, dropout, activation,
                                               pre_norm)

    def _top_channels(self, in_channels: list[int], feature_size: int) -> int:
        return feature_size

    def encode_top(self, top: torch.Tensor) -> torch.Tensor:
        """`[batch, C, h, w]` → the encoder's output `[batch, feature_size, h, w]`."""
        projected = self.input_projection(top)
        batch, channels, height, width = projected.shape
        position = self.position_embedder(projected).flatten(2).transpose(1, 2)
        encoded = self.transformer_encoder(projected.flatten(2).transpose(1, 2), position)
        return encoded.transpose(1, 2).reshape(batch, channels, height, width)
