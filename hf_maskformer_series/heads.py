"""Prediction heads shared by the three models."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Sequential):
    """A `num_layers`-layer perceptron with ReLU between layers (none after the last).

    Each layer is `nn.Sequential(Linear, activation)`, so parameters are named `{i}.0.weight` (the layout of
    transformers' checkpoints). Input `[..., input_dim]`, output `[..., output_dim]`.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int = 3):
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        super().__init__(
            *(
                nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU() if index < num_layers - 1 else nn.Identity())
                for index, (d_in, d_out) in enumerate(zip(dims_in, dims_out))
            )
        )


def predict_masks(mask_embeddings: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
    """Dot product of query and pixel embeddings.

    Args:
        mask_embeddings: `[batch, queries, channels]`.
        mask_features: `[batch, channels, height, width]` or, for videos, `[batch, frames, channels, height, width]`.

    Returns:
        `[batch, queries, height, width]` or `[batch, queries, frames, height, width]`.
    """
    if mask_features.dim() == 5:
        return torch.einsum("bqc,btchw->bqthw", mask_embeddings, mask_features)
    batch, channels, height, width = mask_features.shape
    if mask_features.is_contiguous():
        pixels = mask_features.view(batch, channels, height * width)
    else:  # channels-last (CPU inference): the [batch, H·W, channels] view, transposed, is read without a copy
        pixels = mask_features.permute(0, 2, 3, 1).reshape(batch, height * width, channels).transpose(1, 2)
    return torch.bmm(mask_embeddings, pixels).view(batch, -1, height, width)
