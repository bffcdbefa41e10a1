"""Point sampling of mask logits (PointRend), used by the matcher and the losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(masks: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample `masks` at normalised points (align_corners=False, zero padding).

    Args:
        masks: `[N, C, H, W]`.
        coordinates: `[N, P, 2]`, (x, y) in [0, 1].

    Returns:
        `[N, C, P]`.
    """
    grid = (2.0 * coordinates - 1.0).unsqueeze(2)
    return F.grid_sample(masks, grid.to(masks.dtype), mode="bilinear", align_corners=False).squeeze(3)


def uncertain_point_coordinates(
    mask_logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> torch.Tensor:
    """Points biased towards uncertain regions (|logit| near 0), plus uniformly random ones.

    Draws `num_points * oversample_ratio` random points, keeps the `importance_sample_ratio * num_points` most
    uncertain, and adds the rest uniformly at random.

    Args:
        mask_logits: `[N, 1, H, W]`.

    Returns:
        `[N, num_points, 2]` coordinates in [0, 1].
    """
    count = mask_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(count, num_sampled, 2, device=mask_logits.device)
    uncertainty = -point_sample(mask_logits, candidates)[:, 0].abs()
    num_uncertain = int(importance_sample_ratio * num_points)
    top = uncertainty.topk(num_uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        chosen = torch.cat((chosen, torch.rand(count, num_random, 2, device=mask_logits.device)), dim=1)
    return chosen
