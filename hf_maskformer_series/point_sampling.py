"""Point sampling of mask logits (PointRend), used by the matcher and the losses.

Targets are sampled either from one-hot masks (`point_sample`) or straight from an integer segment map
(`point_sample_segment_map` / `point_sample_segment_maps`, the lean target form): the bilinear sample of a 0/1
mask is the sum of the weights of the neighbours that belong to the target, computed with the same arithmetic as
`grid_sample`, so both forms give the same values.
"""

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


_ROWS_PER_CHUNK = 16


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
    num_uncertain = int(importance_sample_ratio * num_points)
    # rows in chunks: the oversampled logits of all rows at once would be a large transient at the loss
    top = torch.cat([
        (-point_sample(mask_logits[start : start + _ROWS_PER_CHUNK], candidates[start : start + _ROWS_PER_CHUNK])
         [:, 0].abs()).topk(num_uncertain, dim=1).indices
        for start in range(0, max(count, 1), _ROWS_PER_CHUNK)
    ])
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        chosen = torch.cat((chosen, torch.rand(count, num_random, 2, device=mask_logits.device)), dim=1)
    return chosen


def _bilinear_neighbours(coordinates: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 neighbours (nw, ne, sw, se) of points, as `grid_sample(align_corners=False)` weighs them.

    Args:
        coordinates: `[..., 2]`, (x, y) in [0, 1].

    Returns:
        `flat_index [..., 4]` (`y * width + x`, `-1` outside the map) and `weights [..., 4]`.
    """
    grid = 2.0 * coordinates - 1.0
    # unnormalise as grid_sample does, `((g + 1) * size - 1) / 2`, with one rounding for the multiply-add (the
    # fused multiply-add of its kernels); float64 holds the product exactly
    scale = torch.tensor([width, height], dtype=torch.float64, device=coordinates.device)
    source = (((grid + 1).double() * scale - 1).to(coordinates.dtype)) * 0.5
    corner = source.floor()
    east_weight = source - corner  # distance to the west neighbour = weight of the east one
    west_weight = 1 - east_weight
    x0, y0 = corner[..., 0].long(), corner[..., 1].long()
    weights = torch.stack(
        (
            west_weight[..., 1] * west_weight[..., 0],  # nw: (1 - dy) (1 - dx)
            west_weight[..., 1] * east_weight[..., 0],  # ne
            east_weight[..., 1] * west_weight[..., 0],  # sw
            east_weight[..., 1] * east_weight[..., 0],  # se
        ),
        dim=-1,
    )
    xs = torch.stack((x0, x0 + 1, x0, x0 + 1), dim=-1)
    ys = torch.stack((y0, y0, y0 + 1, y0 + 1), dim=-1)
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    return torch.where(inside, ys * width + xs, -1), weights


def _blend(neighbour_ids: torch.Tensor, weights: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """`Σ_k weights[k] · [neighbour_ids[k] == target]`, summed in grid_sample's order (nw, ne, sw, se)."""
    value = weights[..., 0] * (neighbour_ids[..., 0] == target_ids)
    for corner in range(1, 4):
        value = value + weights[..., corner] * (neighbour_ids[..., corner] == target_ids)
    return value


def _neighbour_ids(segment_maps: torch.Tensor, map_index: torch.Tensor, flat_index: torch.Tensor) -> torch.Tensor:
    """Segment ids of the neighbours `flat_index [N, ..., 4]` in the maps `segment_maps[map_index] [N, H, W]`
    (`-1` outside the map), gathered without copying the maps."""
    pixels = segment_maps.shape[-2] * segment_maps.shape[-1]
    offsets = (map_index * pixels).view(-1, *([1] * (flat_index.dim() - 1)))
    gathered = segment_maps.reshape(-1).index_select(0, (flat_index.clamp(min=0) + offsets).flatten())
    gathered = gathered.view(flat_index.shape)
    return torch.where(flat_index >= 0, gathered, -1)


def point_sample_segment_map(segment_map: torch.Tensor, coordinates: torch.Tensor, num_targets: int) -> torch.Tensor:
    """Sample the one-hot masks of a segment map at shared points without materialising them.

    Equal to `point_sample(one_hot, coordinates)` where `one_hot[j] = segment_map == j`.

    Args:
        segment_map: `[C, H, W]` integer (C = frames of a video, or 1), values in `[-1, num_targets)`.
        coordinates: `[P, 2]`, (x, y) in [0, 1], shared by all targets and channels.
        num_targets: number of targets.

    Returns:
        `[num_targets, C, P]` in the dtype of `coordinates`.
    """
    flat_index, weights = _bilinear_neighbours(coordinates, *segment_map.shape[-2:])
    channels = torch.arange(segment_map.shape[0], device=segment_map.device)
    neighbour_ids = _neighbour_ids(segment_map, channels, flat_index.expand(segment_map.shape[0], -1, -1))
    target_ids = torch.arange(num_targets, device=segment_map.device).view(-1, 1, 1)
    return _blend(neighbour_ids.unsqueeze(0), weights, target_ids)


def point_sample_segment_maps(segment_maps: torch.Tensor, map_index: torch.Tensor, target_ids: torch.Tensor,
                              coordinates: torch.Tensor) -> torch.Tensor:
    """Sample one target's one-hot mask per row, each row at its own points, straight from segment maps.

    Row `r` gives `point_sample((segment_maps[map_index[r]] == target_ids[r]), coordinates[r])`.

    Args:
        segment_maps: `[S, H, W]` integer maps (e.g. the frames of a video).
        map_index: `[N]` map of each row; target_ids: `[N]` target of each row.
        coordinates: `[N, P, 2]`, (x, y) in [0, 1].

    Returns:
        `[N, P]` in the dtype of `coordinates`.
    """
    if coordinates.shape[0] > _ROWS_PER_CHUNK:
        # rows in chunks: the neighbours' int64 indices of all rows at once (4 per point, several copies) would be
        # the largest transient of a training step with many targets
        return torch.cat([
            point_sample_segment_maps(segment_maps, map_index[start : start + _ROWS_PER_CHUNK],
                                      target_ids[start : start + _ROWS_PER_CHUNK],
                                      coordinates[start : start + _ROWS_PER_CHUNK])
            for start in range(0, coordinates.shape[0], _ROWS_PER_CHUNK)
        ])
    flat_index, weights = _bilinear_neighbours(coordinates, *segment_maps.shape[-2:])
    neighbour_ids = _neighbour_ids(segment_maps, map_index, flat_index)
    return _blend(neighbour_ids, weights, target_ids.view(-1, 1))
