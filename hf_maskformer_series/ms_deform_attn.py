"""Multi-scale deformable attention: the op shared by the Mask2Former image and video pixel decoders.

`MultiScaleDeformableAttention` has the signature of the Hub layer in `kernels-community/deformable-detr`;
its own forward is the exact pure-PyTorch fallback (bilinear `grid_sample`, zero padding, align_corners=False).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes_list: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Pure-PyTorch multi-scale deformable attention.

    Args:
        value: `[batch, sum(H_l * W_l), heads, head_dim]`.
        spatial_shapes_list: `(H_l, W_l)` of each level, as Python ints.
        sampling_locations: `[batch, queries, heads, levels, points, 2]`, (x, y) in [0, 1].
        attention_weights: `[batch, queries, heads, levels, points]`, softmaxed over levels × points.

    Returns:
        `[batch, queries, heads * head_dim]`.
    """
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    compute_dtype = torch.float32 if value.dtype in (torch.float16, torch.bfloat16) else value.dtype
    sizes = [h * w for h, w in spatial_shapes_list]
    value_per_level = value.to(compute_dtype).split(sizes, dim=1)
    grids = 2 * sampling_locations.to(compute_dtype) - 1
    sampled = []
    for level, (height, width) in enumerate(spatial_shapes_list):
        # [batch * heads, head_dim, H, W]
        level_value = value_per_level[level].flatten(2).transpose(1, 2).reshape(batch * heads, head_dim, height, width)
        # [batch * heads, queries, points, 2]
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    # [batch * heads, head_dim, queries, levels * points]
    sampled = torch.stack(sampled, dim=-2).flatten(-2)
    weights = attention_weights.to(compute_dtype).transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    output = (sampled * weights).sum(-1).view(batch, heads * head_dim, queries)
    return output.transpose(1, 2).to(value.dtype).contiguous()


class MultiScaleDeformableAttention(nn.Module):
    """The deformable-attention op (no parameters), with the Hub kernel layer's forward signature."""

    def forward(
        self,
        value: torch.Tensor,
        value_spatial_shapes: torch.Tensor,
        value_spatial_shapes_list: list[tuple[int, int]],
        level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
        im2col_step: int,
    ) -> torch.Tensor:
        return multi_scale_deformable_attention(value, value_spatial_shapes_list, sampling_locations, attention_weights)
