"""Sine position encodings (2-D for images, 3-D for videos), as in DETR and Mask2Former.

Padding is never masked (the original passes all-False masks), so an encoding depends only on the map size:
it is computed once per size, device and dtype and cached.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _interleave_sin_cos(positions: torch.Tensor) -> torch.Tensor:
    """`[..., F]` → `[..., F]` with sin on even and cos on odd channels, interleaved."""
    return torch.stack((positions[..., 0::2].sin(), positions[..., 1::2].cos()), dim=-1).flatten(-2)


def _normalized_cumsum(length: int, scale: float, device, eps: float = 1e-6) -> torch.Tensor:
    """Positions 1..length normalised as `p / (length + eps) * scale`: `[length]` in float32."""
    positions = torch.arange(1, length + 1, dtype=torch.float32, device=device)
    return positions / (length + eps) * scale


class SinePositionEmbedding(nn.Module):
    """2-D sine encoding `[1, 2 * num_pos_feats, height, width]` (y channels first, then x).

    Args:
        num_pos_feats: channels per axis (half the embedding size).
        temperature: frequency base.
        normalize: normalise positions to `[0, scale]`.
        scale: normalisation range (2π by default).
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, normalize: bool = True, scale=None):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("scale requires normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict = {}

    def _axis_positions(self, length: int, device) -> torch.Tensor:
        if self.normalize:
            return _normalized_cumsum(length, self.scale, device)
        return torch.arange(1, length + 1, dtype=torch.float32, device=device)

    def _frequencies(self, num_feats: int, device) -> torch.Tensor:
        index = torch.arange(num_feats, dtype=torch.int64, device=device)
        return self.temperature ** (2 * torch.div(index, 2, rounding_mode="floor").float() / num_feats)

    def encode(self, height: int, width: int, device, dtype) -> torch.Tensor:
        """The encoding of a `height × width` map: `[1, 2 * num_pos_feats, height, width]`."""
        # symbolic sizes (torch.export with dynamic shapes) are not hashable, and must not be cached anyway
        cacheable = not torch.compiler.is_compiling() and not isinstance(height * width, torch.SymInt)
        key = (height, width, str(device), dtype)
        cached = self._cache.get(key) if cacheable else None
        if cached is not None:
            return cached
        frequencies = self._frequencies(self.num_pos_feats, device)
        pos_y = _interleave_sin_cos(self._axis_positions(height, device)[:, None] / frequencies)  # [H, F]
        pos_x = _interleave_sin_cos(self._axis_positions(width, device)[:, None] / frequencies)  # [W, F]
        encoding = torch.cat(
            (pos_y[:, None, :].expand(height, width, -1), pos_x[None, :, :].expand(height, width, -1)), dim=-1
        )
        encoding = encoding.permute(2, 0, 1).unsqueeze(0).to(dtype)
        if cacheable:
            self._cache = {key: encoding}
        return encoding

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """`features [batch, channels, height, width]` → `[batch, 2 * num_pos_feats, height, width]`."""
        encoding = self.encode(features.shape[-2], features.shape[-1], features.device, features.dtype)
        return encoding.expand(features.shape[0], -1, -1, -1)


class SinePositionEmbedding3D(SinePositionEmbedding):
    """3-D (time, y, x) sine encoding of the video Mask2Former.

    The temporal term spans all `2 * num_pos_feats` channels and is *added* to the concatenated y/x terms
    (it is not concatenated), so with one frame it is the 2-D encoding plus a constant offset.
    """

    def encode_video(self, frames: int, height: int, width: int, device, dtype) -> torch.Tensor:
        """`[1, frames, 2 * num_pos_feats, height, width]`."""
        spatial = self.encode(height, width, device, torch.float32)  # [1, 2F, H, W]
        frequencies_t = self._frequencies(2 * self.num_pos_feats, device)
        pos_t = _interleave_sin_cos(self._axis_positions(frames, device)[:, None] / frequencies_t)  # [T, 2F]
        encoding = spatial.unsqueeze(1) + pos_t[None, :, :, None, None]
        return encoding.to(dtype)
