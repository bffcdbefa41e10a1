"""Set-prediction losses of the MaskFormer family, with deep supervision.

- classification: cross-entropy over `num_labels + 1` classes, the "no object" class down-weighted;
- masks, Mask2Former: sigmoid BCE + dice on points picked by uncertainty-based importance sampling
  (for videos, points are drawn per frame);
- masks, MaskFormer: sigmoid focal + dice on the full masks, predictions upsampled to the target size.

Mask losses are normalised by `num_masks`, the number of target masks (video: instances, not × frames),
all-reduced across processes when torch.distributed is initialised and clamped at 1.

Targets come one-hot (`mask_labels[i]` `[targets, (frames,) H, W]`) or as one integer segment map per image
(`[(frames,) H, W]`, value `j` = target `j`, `-1` = none); both give the same matching and losses. From a map the
point-sampled losses read the targets at the sampled points only, and the full-resolution ones build just the
matched targets' masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .matcher import HungarianMatcher, is_segment_map
from .point_sampling import point_sample, point_sample_segment_maps, uncertain_point_coordinates


def sigmoid_cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """`[N, P]` logits and targets → mean BCE per mask, summed, / num_masks."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum() / num_masks


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """`[N, P]` logits and targets → mean focal loss per mask, summed, / num_masks."""
    return _focal_per_mask(logits, targets, alpha, gamma).sum() / num_masks


def _focal_per_mask(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                    gamma: float = 2.0) -> torch.Tensor:
    """`[N, P]` logits and targets → mean sigmoid focal loss of each mask `[N]`."""
    probs = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """`[N, P]` logits and targets → `Σ (1 - (2·I + 1) / (S + 1)) / num_masks`."""
    return _dice_per_mask(logits, targets).sum() / num_masks


def _dice_per_mask(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`[N, P]` logits and targets → dice loss of each mask `[N]`, `1 - (2·I + 1) / (S + 1)`."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


@dataclass
class MatchedTargets:
    """The matched targets of one image (video) as loss rows: one row per matched target (and frame), in the
    order of the matched predictions, built on demand (never all one-hot masks of a segment map at once).

    Attributes:
        masks: one-hot `[targets, (frames,) H, W]`, or an integer segment map `[(frames,) H, W]`, on any device.
        target_index: `[matched]` target of each matched prediction.
        segment_map: whether `masks` is a segment map.
        device: where the rows are built (the predictions' device).
    """

    masks: torch.Tensor
    target_index: torch.Tensor
    segment_map: bool
    device: torch.device

    @property
    def frames(self) -> int:
        return self.masks.shape[-3] if self.masks.dim() == (3 if self.segment_map else 4) else 1

    def map_rows(self, start: int = 0, end: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Segment map form of matched targets `[start, end)`: `(maps [frames, H, W], map_index, target_ids)`;
        row `r` is `maps[map_index[r]] == target_ids[r]`."""
        maps = self.masks.to(self.device)
        maps = maps.view(-1, *maps.shape[-2:])
        target = self.target_index[start:end].to(self.device)
        frames = torch.arange(maps.shape[0], device=self.device)
        return maps, frames.repeat(len(target)), target.repeat_interleave(len(frames))

    def rows(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Float `[rows, H, W]` masks of the matched targets `[start, end)`, one row per target and frame."""
        if not self.segment_map:
            target = self.target_index[start:end].to(self.masks.device)
            return self.masks[target].to(self.device).flatten(0, -3).float()
        maps, map_index, target_ids = self.map_rows(start, end)
        return (maps[map_index] == target_ids.view(-1, 1, 1)).float()


_MASKS_PER_CHUNK = 8


class _FullResolutionMaskLosses(torch.autograd.Function):
    """Sigmoid focal and dice of the matched queries' logits upsampled to the targets' size (MaskFormer), lean on
    memory.

    Autograd would keep about eight full-resolution `[rows, H, W]` tensors (the upsampled logits, their sigmoid,
    the cross-entropy, p_t, ...) and the stacked targets. Both losses are sums of per-mask terms, so this computes
    them `_MASKS_PER_CHUNK` matched masks at a time, keeps nothing of full resolution and of the predictions only
    the matched queries' logits, and in backward recomputes each chunk with autograd (the same operations, so the
    gradients are autograd's). The targets are read from the caller's `mask_labels` (one-hot or segment maps)
    chunk by chunk.
    """

    @staticmethod
    def _chunks(matched: list[MatchedTargets]):
        """`(first matched pair, image, start, end)` over the matched pairs of every image, in order."""
        first = 0
        for image_targets in matched:
            count = len(image_targets.target_index)
            for start in range(0, count, _MASKS_PER_CHUNK):
                yield first + start, image_targets, start, min(start + _MASKS_PER_CHUNK, count)
            first += count

    @staticmethod
    def _chunk_losses(matched_logits, image_targets, start, end):
        """Per-mask focal and dice `[rows]` of matched logits `[end - start, (frames,) h, w]`."""
        predictions = matched_logits.flatten(0, -3).unsqueeze(1).float()
        targets = image_targets.rows(start, end)
        predictions = F.interpolate(predictions, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        predictions, targets = predictions.flatten(1), targets.flatten(1)
        return _focal_per_mask(predictions, targets), _dice_per_mask(predictions, targets)

    @staticmethod
    def forward(ctx, mask_logits, image_index, query_index, num_masks, matched):
        matched_logits = mask_logits[image_index, query_index]  # [pairs, (frames,) h, w]
        focal, dice = [], []
        for first, image_targets, start, end in _FullResolutionMaskLosses._chunks(matched):
            chunk_focal, chunk_dice = _FullResolutionMaskLosses._chunk_losses(
                matched_logits[first : first + end - start], image_targets, start, end
            )
            focal.append(chunk_focal)
            dice.append(chunk_dice)
        ctx.save_for_backward(matched_logits, image_index, query_index)
        ctx.logits_shape = mask_logits.shape
        ctx.num_masks = num_masks
        ctx.matched = matched
        return torch.cat(focal).sum() / num_masks, torch.cat(dice).sum() / num_masks

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_focal, grad_dice):
        matched_logits, image_index, query_index = ctx.saved_tensors
        grad_matched = torch.empty_like(matched_logits)
        for first, image_targets, start, end in _FullResolutionMaskLosses._chunks(ctx.matched):
            pairs = slice(first, first + end - start)
            with torch.enable_grad():
                logits = matched_logits[pairs].detach().requires_grad_()
                focal, dice = _FullResolutionMaskLosses._chunk_losses(logits, image_targets, start, end)
                losses = (focal.sum() / ctx.num_masks, dice.sum() / ctx.num_masks)
                (grad_matched[pairs],) = torch.autograd.grad(losses, logits, (grad_focal, grad_dice))
        grad_logits = grad_matched.new_zeros(ctx.logits_shape)
        grad_logits.index_put_((image_index, query_index), grad_matched, accumulate=True)
        return grad_logits, None, None, None, None


class _PointSampledMaskLosses(torch.autograd.Function):
    """Sigmoid BCE and dice of the matched queries' logits sampled at points, lean on memory.

    Autograd would keep, per prediction layer, all queries' logits (the indexing's input), a copy of the matched
    queries' logits, the sampled logits and their sigmoid; this keeps only the matched queries' logits, the
    sampling grid and the point targets, and recomputes the rest in backward (the same operations, so the
    gradients are autograd's).
    """

    @staticmethod
    def forward(ctx, mask_logits, image_index, query_index, grid, point_targets, num_masks):
        matched = mask_logits[image_index, query_index]  # [matched, (frames,) h, w]
        rows = matched.flatten(0, -3).unsqueeze(1).float()  # one row per mask (per frame for videos)
        point_logits = F.grid_sample(rows, grid, mode="bilinear", align_corners=False)[:, 0, :, 0]
        ctx.save_for_backward(matched, image_index, query_index, grid, point_targets)
        ctx.logits_shape = mask_logits.shape
        ctx.num_masks = num_masks
        return (sigmoid_cross_entropy_loss(point_logits, point_targets, num_masks),
                dice_loss(point_logits, point_targets, num_masks))

    @staticmethod
    def backward(ctx, grad_mask, grad_dice):
        matched, image_index, query_index, grid, point_targets = ctx.saved_tensors
        with torch.enable_grad():
            matched = matched.detach().requires_grad_()
            rows = matched.flatten(0, -3).unsqueeze(1).float()
            point_logits = F.grid_sample(rows, grid, mode="bilinear", align_corners=False)[:, 0, :, 0]
            losses = (sigmoid_cross_entropy_loss(point_logits, point_targets, ctx.num_masks),
                      dice_loss(point_logits, point_targets, ctx.num_masks))
            (grad_matched,) = torch.autograd.grad(losses, matched, (grad_mask, grad_dice))
        grad_logits = grad_matched.new_zeros(ctx.logits_shape)
        grad_logits.index_put_((image_index, query_index), grad_matched, accumulate=True)
        return grad_logits, None, None, None, None, None


def count_masks(class_labels: list[torch.Tensor], device: torch.device) -> float:
    """Number of target masks, averaged over processes when distributed, clamped at 1."""
    num_masks = torch.tensor([float(sum(len(labels) for labels in class_labels))], device=device)
    world_size = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num_masks)
        world_size = dist.get_world_size()
    return torch.clamp(num_masks / world_size, min=1).item()


class SetCriterion(nn.Module):
    """Matches predictions to targets and computes the weighted losses on the final and auxiliary predictions.

    Args:
        num_labels: number of classes (without "no object").
        matcher: the Hungarian matcher.
        class_weight, mask_weight, dice_weight: loss weights.
        no_object_weight: cross-entropy weight of the "no object" class.
        mask_loss: "point_sigmoid_ce" (Mask2Former) or "focal" (MaskFormer, full resolution).
        num_points, oversample_ratio, importance_sample_ratio: point sampling (Mask2Former).
    """

    def __init__(self, num_labels: int, matcher: HungarianMatcher, class_weight: float = 2.0, mask_weight: float = 5.0,
                 dice_weight: float = 5.0, no_object_weight: float = 0.1, mask_loss: str = "point_sigmoid_ce",
                 num_points: int = 12544, oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75):
        super().__init__()
        if mask_loss not in ("point_sigmoid_ce", "focal"):
            raise ValueError(f"mask_loss must be 'point_sigmoid_ce' or 'focal', got {mask_loss!r}")
        self.num_labels = num_labels
        self.matcher = matcher
        self.weight_dict = {"loss_cross_entropy": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.mask_loss = mask_loss
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_labels + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight)

    def loss_labels(self, class_logits: torch.Tensor, class_labels: list[torch.Tensor], indices) -> torch.Tensor:
        """Cross-entropy, `class_logits [batch, queries, num_labels + 1]`."""
        batch, queries, _ = class_logits.shape
        target_classes = torch.full((batch, queries), self.num_labels, dtype=torch.int64, device=class_logits.device)
        for image, (query_index, target_index) in enumerate(indices):
            target_classes[image, query_index.to(class_logits.device)] = class_labels[image][target_index].to(
                class_logits.device
            )
        return F.cross_entropy(class_logits.transpose(1, 2).float(), target_classes, self.empty_weight)

    @staticmethod
    def _matched_targets(mask_labels: list[torch.Tensor], mask_logits: torch.Tensor, indices) -> list[MatchedTargets]:
        """Per image, the matched targets (one-hot or segment map, on the predictions' device)."""
        return [
            MatchedTargets(mask_labels[image], target, is_segment_map(mask_labels[image], mask_logits[image]),
                           mask_logits.device)
            for image, (_, target) in enumerate(indices)
        ]

    def loss_masks(self, mask_logits: torch.Tensor, mask_labels: list[torch.Tensor], indices,
                   num_masks: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask and dice losses, `mask_logits [batch, queries, (frames,) h, w]`; `mask_labels` per image one-hot
        `[targets, (frames,) H, W]` or a `[(frames,) H, W]` integer segment map."""
        query_index = torch.cat([query for query, _ in indices]).to(mask_logits.device)
        if query_index.shape[0] == 0:
            zero = mask_logits.sum() * 0.0
            return zero, zero
        image_index = torch.cat([torch.full_like(query, image) for image, (query, _) in enumerate(indices)])
        image_index = image_index.to(mask_logits.device)
        matched = self._matched_targets(mask_labels, mask_logits, indices)
        if self.mask_loss == "focal":
            return _FullResolutionMaskLosses.apply(mask_logits, image_index, query_index, num_masks, matched)
        with torch.no_grad():
            predictions = mask_logits[image_index, query_index].flatten(0, -3).unsqueeze(1).float()
            points = uncertain_point_coordinates(
                predictions, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            del predictions
            row_points = points.split([len(targets.target_index) * targets.frames for targets in matched])
            point_targets = torch.cat([
                point_sample_segment_maps(*targets.map_rows(), image_points) if targets.segment_map
                else point_sample(targets.rows().unsqueeze(1), image_points).squeeze(1)
                for targets, image_points in zip(matched, row_points)
            ])
        grid = (2.0 * points - 1.0).unsqueeze(2)  # as point_sample
        return _PointSampledMaskLosses.apply(mask_logits, image_index, query_index, grid, point_targets, num_masks)

    def _losses(self, class_logits, mask_logits, mask_labels, class_labels, num_masks) -> dict[str, torch.Tensor]:
        indices = self.matcher(class_logits, mask_logits, mask_labels, class_labels)
        loss_mask, loss_dice = self.loss_masks(mask_logits, mask_labels, indices, num_masks)
        return {
            "loss_cross_entropy": self.loss_labels(class_logits, class_labels, indices),
            "loss_mask": loss_mask,
            "loss_dice": loss_dice,
        }

    def forward(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, mask_labels: list[torch.Tensor],
                class_labels: list[torch.Tensor],
                auxiliary_predictions: list[dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """
        Args:
            class_logits: `[batch, queries, num_labels + 1]`.
            mask_logits: `[batch, queries, (frames,) h, w]`.
            mask_labels: per image `[targets, (frames,) H, W]` binary masks, or one `[(frames,) H, W]` integer
                segment map (value `j` = target `j`, `-1` = no target).
            class_labels: per image `[targets]` class ids in `[0, num_labels)`.
            auxiliary_predictions: `{"class_queries_logits", "masks_queries_logits"}` of the earlier layers.

        Returns:
            Unweighted losses `loss_cross_entropy`, `loss_mask`, `loss_dice`, and `..._{i}` for auxiliary layer i.
        """
        num_masks = count_masks(class_labels, class_logits.device)
        losses = self._losses(class_logits, mask_logits, mask_labels, class_labels, num_masks)
        for index, auxiliary in enumerate(auxiliary_predictions or []):
            auxiliary_losses = self._losses(
                auxiliary["class_queries_logits"], auxiliary["masks_queries_logits"], mask_labels, class_labels,
                num_masks,
            )
            losses.update({f"{name}_{index}": value for name, value in auxiliary_losses.items()})
        return losses

    def weighted_sum(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Total loss: each loss times the weight of its kind."""
        total = 0.0
        for name, value in losses.items():
            kind = next(key for key in self.weight_dict if name == key or name.startswith(key + "_"))
            total = total + self.weight_dict[kind] * value
        return total
