"""The multi-scale deformable-attention pixel decoder of Mask2Former (image and video models).

Parameter names follow transformers' `Mask2FormerPixelDecoder`, so its checkpoints load unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .gelu_linear import activated_fc2, lean_feed_forward
from .ms_deform_attn import MultiScaleDeformableAttention, attention_weights_softmax
from .norm_linear import is_plain_layer_norm, layer_norm_linear, records_lean
from .position_encoding import SinePositionEmbedding
from .positioned_linear import is_plain_linear, positioned_linear


@dataclass
class MultiScaleLayout:
    """Geometry of the flattened multi-scale sequence, computed once per forward and shared by every layer.

    Attributes:
        spatial_shapes_list: `(H_l, W_l)` per level, as Python ints.
        spatial_shapes: the same as a LongTensor `[levels, 2]`.
        level_start_index: LongTensor `[levels]`, offset of each level in the sequence.
        reference_points: `[1, sequence, levels, 2]` pixel centres (x, y) normalised to [0, 1].
    """

    spatial_shapes_list: list[tuple[int, int]]
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    reference_points: torch.Tensor

    @classmethod
    def build(cls, spatial_shapes_list: list[tuple[int, int]], device, dtype) -> MultiScaleLayout:
        spatial_shapes = torch.tensor(spatial_shapes_list, dtype=torch.long, device=device)
        sizes = [h * w for h, w in spatial_shapes_list]
        starts = [0]
        for size in sizes[:-1]:
            starts.append(starts[-1] + size)
        level_start_index = torch.tensor(starts, dtype=torch.long, device=device)
        points = []
        for height, width in spatial_shapes_list:
            ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
            xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=-1))
        # padding is never masked (valid ratios are 1), so every level sees the same normalised point
        reference = torch.cat(points, dim=0)[None, :, None, :].expand(1, -1, len(spatial_shapes_list), 2)
        # sampling coordinates stay at least float32 (bfloat16 would move points by up to ~0.1 pixel)
        reference = reference.to(torch.promote_types(dtype, torch.float32))
        return cls(spatial_shapes_list, spatial_shapes, level_start_index, reference)


class DeformableAttentionLayer(nn.Module):
    """Multi-scale deformable attention with its projections (the MSDeformAttn module of Deformable DETR).

    Args:
        embed_dim: channels.
        num_heads: attention heads.
        num_levels: feature levels.
        num_points: sampling points per head and level.
    """

    def __init__(self, embed_dim: int, num_heads: int, num_levels: int, num_points: int):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.n_heads = num_heads
        self.n_levels = num_levels
        self.n_points = num_points
        self.im2col_step = 128
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.attn = MultiScaleDeformableAttention()

    def forward(
        self, hidden_states: torch.Tensor, position_embeddings: torch.Tensor, layout: MultiScaleLayout
    ) -> torch.Tensor:
        """
        Args:
            hidden_states: `[batch, sequence, embed_dim]`, the flattened levels (also the values).
            position_embeddings: `[batch or 1, sequence, embed_dim]`.
            layout: the sequence geometry.

        Returns:
            `[batch, sequence, embed_dim]`.
        """
        batch, length, _ = hidden_states.shape
        value = self.value_proj(hidden_states).view(batch, length, self.n_heads, self.embed_dim // self.n_heads)
        # both read the query `hidden_states + position_embeddings`; backward adds it again instead of keeping it
        offsets, weights = positioned_linear(
            hidden_states, position_embeddings, (self.sampling_offsets, self.attention_weights)
        )
        offsets = offsets.view(batch, length, self.n_heads, self.n_levels, self.n_points, 2)
        weights = weights.view(batch, length, self.n_heads, self.n_levels * self.n_points)
        # softmax and sampling locations in (at least) float32: the op computes half-precision inputs in float32
        reference_points = layout.reference_points
        weights = attention_weights_softmax(weights).view(batch, length, self.n_heads, self.n_levels, self.n_points)
        # offsets are in pixels of each level: normalise by (W_l, H_l)
        normalizer = layout.spatial_shapes.flip(-1).to(reference_points.dtype)
        offsets = offsets.to(reference_points.dtype) / normalizer[None, None, None, :, None, :]
        locations = reference_points[:, :, None, :, None, :] + offsets
        output = self.attn(
            value,
            layout.spatial_shapes,
            layout.spatial_shapes_list,
            layout.level_start_index,
            locations,
            weights,
            self.im2col_step,
        )
        return self.output_proj(output)


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention → add & norm → FFN → add & norm."""

    def __init__(self, embed_dim: int, num_heads: int, num_levels: int, num_points: int, ffn_dim: int,
                 dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        self.self_attn = DeformableAttentionLayer(embed_dim, num_heads, num_levels, num_points)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.activation = ACT2FN[activation]
        self.dropout = dropout

    def forward(self, hidden_states: torch.Tensor, position_embeddings: torch.Tensor, layout: MultiScaleLayout):
        """`[batch, sequence, embed_dim]` → same shape."""
        attended = self.self_attn(hidden_states, position_embeddings, layout)
        hidden_states = hidden_states + F.dropout(attended, self.dropout, self.training)
        if records_lean() and is_plain_layer_norm(self.self_attn_layer_norm) and is_plain_linear(self.fc1):
            # the LayerNorm's output feeds fc1 and the residual: keep only its input (norm_linear.py)
            hidden_states, hidden = layer_norm_linear(hidden_states, self.self_attn_layer_norm, self.fc1, True)
            feed_forward = activated_fc2(self, hidden, in_place=True)
        else:
            hidden_states = self.self_attn_layer_norm(hidden_states)
            feed_forward = lean_feed_forward(self, hidden_states)
        return self.final_layer_norm(hidden_states + F.dropout(feed_forward, self.dropout, self.training))


class DeformableEncoder(nn.Module):
    """A stack of `DeformableEncoderLayer`s over the flattened multi-scale sequence."""

    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList([DeformableEncoderLayer(**layer_kwargs) for _ in range(num_layers)])
        self.gradient_checkpointing = False  # set by `model.gradient_checkpointing_enable()`

    def forward(self, hidden_states, position_embeddings, layout, output_hidden_states: bool = False):
        all_states = [] if output_hidden_states else None
        for layer in self.layers:
            if all_states is not None:
                all_states.append(hidden_states)
            if self.gradient_checkpointing and self.training:
                hidden_states = self._gradient_checkpointing_func(layer.__call__, hidden_states, position_embeddings,
                                                                  layout)
            else:
                hidden_states = layer(hidden_states, position_embeddings, layout)
        if all_states is not None:
            all_states.append(hidden_states)
        return hidden_states, all_states


@dataclass
class PixelDecoderOutput:
    """
    Attributes:
        mask_features: per-pixel embeddings `[batch, mask_feature_size, H/4, W/4]`.
        multi_scale_features: 3 maps `[batch, feature_size, H/s, W/s]`, s = 32, 16, 8 (coarse to fine).
        encoder_hidden_states: per-layer sequences `[batch, sequence, feature_size]` when requested.
    """

    mask_features: torch.Tensor
    multi_scale_features: list[torch.Tensor]
    encoder_hidden_states: list[torch.Tensor] | None = None


class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder.

    The 3 coarsest backbone maps (/8, /16, /32) are projected (1×1 conv + GroupNorm), flattened with level
    embeddings and sine positions, refined by the deformable encoder, and the finer maps (/4) are fused
    top-down FPN-style into the mask features.

    Args:
        in_channels: channels of the 4 backbone maps, finest first.
        feature_size, mask_feature_size, num_layers, num_heads, num_points, ffn_dim, dropout, activation:
            see `SeriesMask2FormerConfig`.
        feature_strides: strides of the 4 backbone maps.
        common_stride: stride of the mask features.
    """

    num_levels = 3

    def __init__(self, in_channels: list[int], feature_size: int, mask_feature_size: int, num_layers: int,
                 num_heads: int, num_points: int, ffn_dim: int, dropout: float = 0.0, activation: str = "relu",
                 feature_strides: list[int] | tuple[int, ...] = (4, 8, 16, 32), common_stride: int = 4):
        super().__init__()
        if feature_size % 32 != 0:
            raise ValueError(f"feature_size must be a multiple of 32 (GroupNorm(32)), got {feature_size}")
        transformer_channels = in_channels[-self.num_levels:]
        self.input_projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, feature_size, kernel_size=1), nn.GroupNorm(32, feature_size))
            for channels in reversed(transformer_channels)
        )
        self.level_embed = nn.Parameter(torch.empty(self.num_levels, feature_size))
        self.position_embedding = SinePositionEmbedding(feature_size // 2, normalize=True)
        self.encoder = DeformableEncoder(
            num_layers, embed_dim=feature_size, num_heads=num_heads, num_levels=self.num_levels,
            num_points=num_points, ffn_dim=ffn_dim, dropout=dropout, activation=activation,
        )
        self.mask_projection = nn.Conv2d(feature_size, mask_feature_size, kernel_size=1)
        min_transformer_stride = min(feature_strides[-self.num_levels:])
        self.num_fpn_levels = int(math.log2(min_transformer_stride) - math.log2(common_stride))
        for index in range(self.num_fpn_levels):
            lateral = nn.Sequential(
                nn.Conv2d(in_channels[index], feature_size, kernel_size=1, bias=False), nn.GroupNorm(32, feature_size)
            )
            output = nn.Sequential(
                nn.Conv2d(feature_size, feature_size, kernel_size=3, padding=1, bias=False),
                nn.GroupNorm(32, feature_size),
                nn.ReLU(),
            )
            self.add_module(f"adapter_{index + 1}", lateral)
            self.add_module(f"layer_{index + 1}", output)

    def forward(self, features: list[torch.Tensor], output_hidden_states: bool = False) -> PixelDecoderOutput:
        """`features`: the 4 backbone maps, finest first, `[batch, C_i, H_i, W_i]`."""
        coarse_first = features[-self.num_levels:][::-1]  # /32, /16, /8
        sources, positions, shapes = [], [], []
        for level, feature in enumerate(coarse_first):
            projected = self.input_projections[level](feature)
            height, width = projected.shape[-2:]
            shapes.append((height, width))
            sources.append(projected.flatten(2).transpose(1, 2))
            position = self.position_embedding.encode(height, width, projected.device, projected.dtype)
            positions.append(position.flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1))
        layout = MultiScaleLayout.build(shapes, sources[0].device, sources[0].dtype)
        hidden_states, encoder_states = self.encoder(
            torch.cat(sources, dim=1), torch.cat(positions, dim=1), layout, output_hidden_states
        )
        batch, _, channels = hidden_states.shape
        outputs = [
            level_states.transpose(1, 2).reshape(batch, channels, height, width)
            for level_states, (height, width) in zip(hidden_states.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        for index in range(self.num_fpn_levels - 1, -1, -1):
            lateral = getattr(self, f"adapter_{index + 1}")(features[index])
            upsampled = F.interpolate(outputs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            outputs.append(getattr(self, f"layer_{index + 1}")(lateral + upsampled))
        return PixelDecoderOutput(
            mask_features=self.mask_projection(outputs[-1]),
            multi_scale_features=outputs[: self.num_levels],
            encoder_hidden_states=encoder_states,
        )
