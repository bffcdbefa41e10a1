"""Hungarian matching of predicted (class, mask) pairs to targets, for images and videos.

Mask costs are computed either on points sampled uniformly (Mask2Former: sigmoid cross-entropy + dice; for a
video one point set is shared by all frames) or on the full masks with targets resized to the prediction
(MaskFormer: sigmoid focal + dice).

Targets come one-hot (`[targets, (frames,) H, W]`) or as one integer segment map (`[(frames,) H, W]`, value `j` =
target `j`, `-1` = none); both give the same costs (see `point_sampling`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .point_sampling import point_sample, point_sample_segment_map


def pairwise_sigmoid_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE of every prediction against every target: `[N, P]`, `[M, P]` → `[N, M]`."""
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    cost = positive @ targets.T + negative @ (1 - targets).T
    return cost / logits.shape[1]


def pairwise_sigmoid_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    """Mean sigmoid focal loss of every prediction against every target: `[N, P]`, `[M, P]` → `[N, M]`."""
    probs = logits.sigmoid()
    positive = (1 - probs) ** gamma * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = probs**gamma * F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    if alpha >= 0:
        positive = positive * alpha
        negative = negative * (1 - alpha)
    return (positive @ targets.T + negative @ (1 - targets).T) / logits.shape[1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss (+1 smoothing) of every prediction against every target: `[N, P]`, `[M, P]` → `[N, M]`."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def _as_channels(masks: torch.Tensor) -> torch.Tensor:
    """`[N, H, W]` → `[N, 1, H, W]`; `[N, T, H, W]` (video) stays: frames act as channels."""
    return masks.unsqueeze(1) if masks.dim() == 3 else masks


def is_segment_map(targets: torch.Tensor, mask_logits: torch.Tensor) -> bool:
    """Whether one image's (video's) `targets` are a segment map rather than one-hot masks.

    Args:
        targets: `[targets, (frames,) H, W]` one-hot or `[(frames,) H, W]` integer segment map.
        mask_logits: the matching predictions `[queries, (frames,) h, w]`.
    """
    return targets.dim() == mask_logits.dim() - 1 and not (targets.is_floating_point() or targets.dtype == torch.bool)


def _nearest_one_hot(segment_map: torch.Tensor, num_targets: int, size: tuple[int, int]) -> torch.Tensor:
    """`F.interpolate(one_hot, size, mode="nearest")` from a segment map `[C, H, W]`: `[num_targets, C, h, w]`."""
    resized = F.interpolate(segment_map[None].double(), size=size, mode="nearest")[0]
    return (resized.unsqueeze(0) == torch.arange(num_targets, device=resized.device).view(-1, 1, 1, 1)).float()


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising `cost_class·(-p[class]) + cost_mask·mask_cost + cost_dice·dice`.

    Args:
        cost_class, cost_mask, cost_dice: weights of the three costs.
        num_points: points sampled per image (or video) for the mask costs; `None` uses full masks.
        mask_cost: "sigmoid_ce" (Mask2Former) or "focal" (MaskFormer).
    """

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 num_points: int | None = 12544, mask_cost: str = "sigmoid_ce"):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs are 0")
        if mask_cost not in ("sigmoid_ce", "focal"):
            raise ValueError(f"mask_cost must be 'sigmoid_ce' or 'focal', got {mask_cost!r}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points
        self.mask_cost = mask_cost

    def cost_matrix(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, target_masks: torch.Tensor,
                    target_classes: torch.Tensor) -> torch.Tensor:
        """Costs `[queries, targets]` for one image or video.

        Args:
            class_logits: `[queries, num_labels + 1]`.
            mask_logits: `[queries, (frames,) h, w]`.
            target_masks: `[targets, (frames,) H, W]` one-hot, or a `[(frames,) H, W]` integer segment map.
            target_classes: `[targets]`.
        """
        cost_class = -class_logits.float().softmax(-1)[:, target_classes]
        segment_map = is_segment_map(target_masks, mask_logits)
        predictions = _as_channels(mask_logits.float())
        if segment_map:  # [C, H, W], C = frames (or 1)
            targets = target_masks.to(predictions.device).view(-1, *target_masks.shape[-2:])
        else:
            targets = _as_channels(target_masks.to(predictions))
        if self.num_points is not None:
            points = torch.rand(1, self.num_points, 2, device=predictions.device)
            if segment_map:
                targets = point_sample_segment_map(targets, points[0], len(target_classes)).flatten(1)
            else:
                targets = point_sample(targets, points.expand(targets.shape[0], -1, -1)).flatten(1)
            predictions = point_sample(predictions, points.expand(predictions.shape[0], -1, -1)).flatten(1)
        else:
            if segment_map:
                targets = _nearest_one_hot(targets, len(target_classes), predictions.shape[-2:]).flatten(1)
            else:
                targets = F.interpolate(targets, size=predictions.shape[-2:], mode="nearest").flatten(1)
            predictions = predictions.flatten(1)
        if self.mask_cost == "focal":
            cost_mask = pairwise_sigmoid_focal(predictions, targets)
        else:
            cost_mask = pairwise_sigmoid_cross_entropy(predictions, targets)
        cost_dice = pairwise_dice(predictions, targets)
        cost = self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice
        return torch.nan_to_num(cost.clamp(-1e10, 1e10), 0.0)

    @torch.no_grad()
    def forward(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, mask_labels: list[torch.Tensor],
                class_labels: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            class_logits: `[batch, queries, num_labels + 1]`.
            mask_logits: `[batch, queries, (frames,) h, w]`.
            mask_labels: per image `[targets, (frames,) H, W]` one-hot, or a `[(frames,) H, W]` integer segment
                map (value `j` = target `j`, `-1` = no target).
            class_labels: per image `[targets]`.

        Returns:
            Per image, `(query_indices, target_indices)` LongTensors of equal length `min(queries, targets)`.
        """
        indices = []
        for index in range(class_logits.shape[0]):
            if class_labels[index].numel() == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty))
                continue
            with torch.autocast(device_type=class_logits.device.type, enabled=False):
                cost = self.cost_matrix(class_logits[index], mask_logits[index], mask_labels[index], class_labels[index])
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols.astype(np.int64))))
        return indices
