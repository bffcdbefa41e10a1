"""Tensor-level post-processing shared by the image processors and the video processor.

Everything here is a pure function of tensors. The functions reproduce the inference of the original
MaskFormer / Mask2Former code (detectron2 projects) and are vectorised: no per-query Python loop and no
``.item()`` per query. Shapes use ``Q`` = queries, ``K`` = classes (without the no-object class), and
``...`` for the spatial dimensions, which are ``(height, width)`` for images and ``(frames, height, width)``
for videos.

Resizing (the original's order, used by the processors when the model reports its input geometry):

1. :func:`upsample_masks` bilinearly upsamples the stride-4 mask logits to the padded input size,
2. :func:`crop_and_resize_masks` crops the padding away (the un-padded image sits at the top left) and
   bilinearly resizes to the requested output size.

Inference, per image:

- :func:`semantic_inference` -- ``[K, ...]`` class scores (softmax without no-object x sigmoid masks).
- :func:`panoptic_inference` -- segment-id map + segment list; ``intersect_with_mask=False`` gives the
  MaskFormer v1 rule (a segment is every pixel whose arg-max query is its query).
- :func:`instance_inference` -- top-k over (query, class) pairs, score = class probability x mean mask
  probability inside the binary mask.

:func:`binary_mask_to_coco_rle` encodes a binary mask as a pycocotools-compatible compressed RLE.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "binary_mask_to_coco_rle",
    "coco_rle_counts_to_string",
    "crop_and_resize_masks",
    "instance_inference",
    "instance_scores_from_selection",
    "mask_logit_threshold",
    "panoptic_from_selection",
    "panoptic_inference",
    "select_panoptic_queries",
    "select_top_k_query_classes",
    "semantic_inference",
    "upsample_crop_resize",
    "upsample_masks",
]


# ----------------------------------------------------------------------------------------------------------------
# Resizing
# ----------------------------------------------------------------------------------------------------------------


def _as_size(size: Sequence[int] | torch.Tensor) -> tuple[int, int]:
    if isinstance(size, torch.Tensor):
        size = size.tolist()
    if len(size) != 2:
        raise ValueError(f"A size must be (height, width), got {size}.")
    return int(size[0]), int(size[1])


def upsample_masks(masks: torch.Tensor, size: Sequence[int] | torch.Tensor, pixel_major: bool = False) -> torch.Tensor:
    """Bilinearly resize the last two dimensions (``align_corners=False``).

    With ``pixel_major=True`` the result may keep a channels-last memory layout (the leading dimensions innermost),
    which suits per-pixel reductions over the leading dimensions; otherwise it is contiguous.

    Args:
        masks: ``[..., height, width]`` float tensor (any number of leading dimensions, e.g.
            ``[queries, height, width]`` or ``[queries, frames, height, width]``).
        size: target ``(height, width)``.

    Returns:
        ``[..., size[0], size[1]]``. The input is returned unchanged when it already has that size.
    """
    size = _as_size(size)
    if tuple(masks.shape[-2:]) == size:
        return masks
    leading = masks.shape[:-2]
    if masks.numel() == 0:
        dtype = masks.dtype if masks.is_floating_point() else torch.float32
        return masks.new_zeros((*leading, *size), dtype=dtype)
    flat = masks.reshape(1, -1, *masks.shape[-2:])
    if not flat.is_floating_point():
        flat = flat.float()
    if flat.shape[1] >= 8:
        # many maps: the channels-last kernel is ~2x faster on CPU
        flat = flat.contiguous(memory_format=torch.channels_last)
        channels, height, width = flat.shape[1:]
        # a view of a `[..., h, w, C]` tensor can carry an odd stride on its size-1 batch dimension, which sends
        # interpolate down the slow generic path: give it the canonical channels-last strides (same memory)
        flat = flat.as_strided(flat.shape, (channels * height * width, 1, width * channels, channels))
    resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*leading, *size)
    return resized if pixel_major else resized.contiguous()


def crop_and_resize_masks(
    masks: torch.Tensor,
    crop_size: Sequence[int] | torch.Tensor,
    output_size: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop the bottom/right padding, then bilinearly resize (the original's ``sem_seg_postprocess``).

    Args:
        masks: ``[..., padded_height, padded_width]``.
        crop_size: ``(height, width)`` of the un-padded image inside the padded input (top-left corner).
        output_size: requested ``(height, width)``; ``None`` keeps the cropped size.

    Returns:
        ``[..., output_height, output_width]``.
    """
    crop_height, crop_width = _as_size(crop_size)
    if crop_height > masks.shape[-2] or crop_width > masks.shape[-1]:
        raise ValueError(
            f"Crop size {(crop_height, crop_width)} is larger than the padded mask size {tuple(masks.shape[-2:])}."
        )
    cropped = masks[..., :crop_height, :crop_width]
    if output_size is None:
        return cropped
    return upsample_masks(cropped, output_size)


def upsample_crop_resize(
    mask_logits: torch.Tensor,
    padded_size: Sequence[int] | torch.Tensor,
    crop_size: Sequence[int] | torch.Tensor,
    output_size: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """The original's full resize chain: upsample to the padded input size, crop the padding, resize.

    Args:
        mask_logits: ``[..., h, w]`` mask logits at the model's output stride.
        padded_size: ``(H, W)`` of the padded model input.
        crop_size: ``(height, width)`` of the real image inside the padded input.
        output_size: requested ``(height, width)``; ``None`` keeps the cropped size.

    Returns:
        ``[..., output_height, output_width]`` mask logits.
    """
    return crop_and_resize_masks(upsample_masks(mask_logits, padded_size), crop_size, output_size)


# ----------------------------------------------------------------------------------------------------------------
# Semantic
# ----------------------------------------------------------------------------------------------------------------


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """Per-class scores: ``sum_q softmax(mask_cls)[q, :K] * sigmoid(mask_pred[q])``.

    Args:
        mask_cls: ``[Q, K + 1]`` class logits (last = no-object).
        mask_pred: ``[Q, ...]`` mask logits.

    Returns:
        ``[K, ...]`` float scores (not normalised over classes).
    """
    class_probs = mask_cls.float().softmax(-1)[:, :-1]
    mask_probs = mask_pred.float().sigmoid()
    return torch.einsum("qc,q...->c...", class_probs, mask_probs)


def semantic_scores_per_pixel(class_probs: torch.Tensor, mask_probs: torch.Tensor) -> torch.Tensor:
    """`sum_q class_probs[q, c] * mask_probs[q, y, x]` laid out pixel-major, for a fast per-pixel argmax.

    Args:
        class_probs: `[Q, K]`.
        mask_probs: `[Q, H, W]`.

    Returns:
        `[H, W, K]` (`.permute(2, 0, 1)` gives the `[K, H, W]` scores of `semantic_inference`).
    """
    queries, height, width = mask_probs.shape
    pixels = mask_probs.permute(1, 2, 0).reshape(height * width, queries)
    return (pixels @ class_probs).view(height, width, -1)


# ----------------------------------------------------------------------------------------------------------------
# Panoptic
# ----------------------------------------------------------------------------------------------------------------


def select_panoptic_queries(
    mask_cls: torch.Tensor, object_mask_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries whose best class is not no-object and whose probability is ``> object_mask_threshold``.

    Args:
        mask_cls: ``[Q, K + 1]`` class logits.
        object_mask_threshold: minimum class probability (strictly greater keeps the query).

    Returns:
        ``(query_indices [n], scores [n], labels [n])`` for the kept queries, in query order.
    """
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = mask_cls.float().softmax(-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    query_indices = keep.nonzero().flatten()
    return query_indices, scores[query_indices], labels[query_indices]


def _label_set_tensor(label_ids: Iterable[int] | None, device: torch.device) -> torch.Tensor:
    values = sorted({int(label) for label in label_ids}) if label_ids is not None else []
    return torch.tensor(values, dtype=torch.long, device=device)


def panoptic_from_selection(
    scores: torch.Tensor,
    labels: torch.Tensor,
    mask_probs: torch.Tensor,
    overlap_threshold: float = 0.8,
    mask_threshold: float = 0.5,
    label_ids_to_fuse: Iterable[int] | None = None,
    intersect_with_mask: bool = True,
) -> tuple[torch.Tensor, list[dict]]:
    """Panoptic segmentation from already selected queries (see :func:`select_panoptic_queries`).

    Each pixel goes to the query with the largest ``score * mask_prob``. A query keeps a segment when its
    arg-max area ``A``, its own area ``B = #(mask_prob >= mask_threshold)`` and its final area are all > 0
    and ``A / B >= overlap_threshold``. The segment is the arg-max area intersected with
    ``mask_prob >= mask_threshold`` (Mask2Former) or the arg-max area alone (``intersect_with_mask=False``,
    MaskFormer v1). Queries whose label is in ``label_ids_to_fuse`` (stuff) share the segment id of the first
    kept query of that label. Segment ids start at 1 in query order; 0 means no segment.

    Args:
        scores: ``[n]`` class probabilities of the selected queries.
        labels: ``[n]`` class ids of the selected queries.
        mask_probs: ``[n, ...]`` mask probabilities (sigmoid of the logits) at the output resolution.
        overlap_threshold: minimum ``A / B`` (the original's ``OVERLAP_THRESHOLD``).
        mask_threshold: probability threshold for ``B`` and the intersection.
        label_ids_to_fuse: labels whose segments are merged (stuff classes).
        intersect_with_mask: Mask2Former rule (True) or MaskFormer v1 rule (False).

    Returns:
        ``segmentation`` ``[...]`` int32 segment ids, and ``segments_info``: one dict per segment id with
        ``id``, ``label_id``, ``was_fused`` (label in ``label_ids_to_fuse``) and ``score`` (the class
        probability of the segment's first query).
    """
    spatial = mask_probs.shape[1:]
    device = mask_probs.device
    num_selected = mask_probs.shape[0]
    if num_selected == 0:
        return torch.zeros(spatial, dtype=torch.int32, device=device), []

    weighted = scores.view(-1, *([1] * len(spatial))) * mask_probs
    winner = weighted.argmax(0)  # [...]
    flat_winner = winner.flatten()
    arg_max_area = torch.bincount(flat_winner, minlength=num_selected)
    above = mask_probs >= mask_threshold
    own_area = above.flatten(1).sum(1)
    if intersect_with_mask:
        winner_above = above.gather(0, winner.unsqueeze(0)).squeeze(0)  # [...] bool
        final_area = torch.bincount(flat_winner[winner_above.flatten()], minlength=num_selected)
    else:
        winner_above = None
        final_area = arg_max_area
    exists = (arg_max_area > 0) & (own_area > 0) & (final_area > 0)
    ratio = arg_max_area.double() / own_area.clamp(min=1).double()
    kept = exists & (ratio >= overlap_threshold)

    fuse_ids = _label_set_tensor(label_ids_to_fuse, device)
    fused = torch.isin(labels, fuse_ids)
    kept_indices = kept.nonzero().flatten()
    if kept_indices.numel() == 0:
        return torch.zeros(spatial, dtype=torch.int32, device=device), []

    # Group key: the label for fused (stuff) queries, a unique value per query otherwise.
    label_span = int(labels.max().item()) + 1
    keys = torch.where(fused, labels, label_span + torch.arange(num_selected, device=device))[kept_indices]
    _, group = torch.unique(keys, return_inverse=True)
    positions = torch.arange(kept_indices.numel(), device=device)
    first_position = torch.full((int(group.max().item()) + 1,), kept_indices.numel(), device=device)
    first_position = first_position.scatter_reduce(0, group, positions, reduce="amin")
    is_first = first_position[group] == positions
    segment_number = torch.cumsum(is_first.long(), 0)  # 1-based id at each first position
    kept_segment_ids = segment_number[first_position[group]]

    segment_id_per_query = torch.zeros(num_selected, dtype=torch.int32, device=device)
    segment_id_per_query[kept_indices] = kept_segment_ids.to(torch.int32)
    segmentation = segment_id_per_query[winner]
    if winner_above is not None:
        segmentation = segmentation * winner_above.to(torch.int32)

    first_queries = kept_indices[is_first]
    ids = segment_number[is_first].tolist()
    label_list = labels[first_queries].tolist()
    fused_list = fused[first_queries].tolist()
    score_list = scores[first_queries].tolist()
    segments_info = [
        {"id": int(i), "label_id": int(lab), "was_fused": bool(fu), "score": float(sc)}
        for i, lab, fu, sc in zip(ids, label_list, fused_list, score_list)
    ]
    return segmentation, segments_info


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
    mask_threshold: float = 0.5,
    label_ids_to_fuse: Iterable[int] | None = None,
    intersect_with_mask: bool = True,
) -> tuple[torch.Tensor, list[dict]]:
    """The original's ``panoptic_inference`` on one image.

    Args:
        mask_cls: ``[Q, K + 1]`` class logits.
        mask_pred: ``[Q, ...]`` mask logits at the output resolution.
        object_mask_threshold: class probability a query must exceed (``OBJECT_MASK_THRESHOLD``).
        overlap_threshold: see :func:`panoptic_from_selection`.
        mask_threshold: see :func:`panoptic_from_selection`.
        label_ids_to_fuse: stuff labels (the original fuses every non-thing class).
        intersect_with_mask: False for MaskFormer v1.

    Returns:
        ``(segmentation [...] int32, segments_info)`` as in :func:`panoptic_from_selection`.
    """
    query_indices, scores, labels = select_panoptic_queries(mask_cls, object_mask_threshold)
    mask_probs = mask_pred[query_indices].float().sigmoid()
    return panoptic_from_selection(
        scores, labels, mask_probs, overlap_threshold, mask_threshold, label_ids_to_fuse, intersect_with_mask
    )


# ----------------------------------------------------------------------------------------------------------------
# Instance
# ----------------------------------------------------------------------------------------------------------------


def mask_logit_threshold(mask_threshold: float) -> float:
    """The logit equivalent of a probability threshold: ``sigmoid(x) > t  <=>  x > log(t / (1 - t))``.

    ``0.5`` maps to exactly ``0.0``, so the default reproduces the original's ``mask_pred > 0``.
    """
    if mask_threshold <= 0.0:
        return -math.inf
    if mask_threshold >= 1.0:
        return math.inf
    return math.log(mask_threshold / (1.0 - mask_threshold))


def select_top_k_query_classes(
    mask_cls: torch.Tensor,
    top_k: int,
    excluded_label_ids: Iterable[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k (query, class) pairs by class probability (no-object excluded).

    As in the original, the top-k runs over all ``Q * K`` pairs first; pairs whose class is in
    ``excluded_label_ids`` (the original drops non-thing classes when panoptic output is on) are removed
    afterwards.

    Args:
        mask_cls: ``[Q, K + 1]`` class logits.
        top_k: number of pairs (clamped to ``Q * K``).
        excluded_label_ids: classes removed after the top-k.

    Returns:
        ``(class_scores [n], labels [n], query_indices [n])``, by decreasing class probability.
    """
    num_classes = mask_cls.shape[-1] - 1
    class_probs = mask_cls.float().softmax(-1)[:, :-1].flatten()
    top_k = min(int(top_k), class_probs.numel())
    class_scores, flat_indices = class_probs.topk(top_k, sorted=True)
    labels = flat_indices % num_classes
    query_indices = torch.div(flat_indices, num_classes, rounding_mode="floor")
    if excluded_label_ids is not None:
        excluded = _label_set_tensor(excluded_label_ids, mask_cls.device)
        keep = ~torch.isin(labels, excluded)
        class_scores, labels, query_indices = class_scores[keep], labels[keep], query_indices[keep]
    return class_scores, labels, query_indices


def instance_scores_from_selection(
    class_scores: torch.Tensor, mask_logits: torch.Tensor, mask_threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks and final scores for selected (query, class) pairs.

    Args:
        class_scores: ``[n]`` class probabilities.
        mask_logits: ``[n, ...]`` mask logits of the pairs' queries at the output resolution.
        mask_threshold: probability threshold (strict), applied in logit space.

    Returns:
        ``binary_masks [n, ...]`` bool and ``scores [n]`` = class prob x mean sigmoid inside the mask
        (``eps = 1e-6`` in the denominator, as in the original).
    """
    mask_logits = mask_logits.float()
    binary_masks = mask_logits > mask_logit_threshold(mask_threshold)
    flat_binary = binary_masks.flatten(1)
    inside = torch.where(flat_binary, mask_logits.flatten(1).sigmoid(), 0.0)
    mask_scores = inside.sum(1) / (flat_binary.sum(1).to(inside.dtype) + 1e-6)
    return binary_masks, class_scores * mask_scores


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    top_k: int = 100,
    mask_threshold: float = 0.5,
    excluded_label_ids: Iterable[int] | None = None,
) -> dict[str, torch.Tensor]:
    """The original's ``instance_inference`` on one image.

    Args:
        mask_cls: ``[Q, K + 1]`` class logits.
        mask_pred: ``[Q, ...]`` mask logits at the output resolution.
        top_k: ``TEST.DETECTIONS_PER_IMAGE``.
        mask_threshold: binarisation threshold on probabilities (0.5 = logit > 0, the original).
        excluded_label_ids: classes dropped after the top-k (the original's thing-only filter when
            panoptic output is on: pass the stuff classes).

    Returns:
        dict with ``masks [n, ...]`` bool, ``scores [n]``, ``labels [n]`` and ``query_indices [n]``, sorted by
        decreasing score (the original leaves the order of ``topk(sorted=False)``).
    """
    class_scores, labels, query_indices = select_top_k_query_classes(mask_cls, top_k, excluded_label_ids)
    unique_queries, inverse = torch.unique(query_indices, return_inverse=True)
    unique_binary, unique_mask_scores = instance_scores_from_selection(
        torch.ones(unique_queries.numel(), device=mask_cls.device), mask_pred[unique_queries], mask_threshold
    )
    scores = class_scores * unique_mask_scores[inverse]
    order = torch.argsort(scores, descending=True, stable=True)
    return {
        "masks": unique_binary[inverse[order]],
        "scores": scores[order],
        "labels": labels[order],
        "query_indices": query_indices[order],
    }


# ----------------------------------------------------------------------------------------------------------------
# COCO run-length encoding
# ----------------------------------------------------------------------------------------------------------------


def coco_rle_counts_to_string(counts: Sequence[int]) -> str:
    """Compress run lengths into the COCO string format (pycocotools' ``rleToString``).

    Each count (after the first two, as a difference to the count two places earlier) is written in 5-bit
    groups, least significant first, with a continuation bit, offset by 48 into printable ASCII.
    """
    characters = []
    for index, count in enumerate(counts):
        value = int(count)
        if index > 2:
            value -= int(counts[index - 2])
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5
            more = value != -1 if chunk & 0x10 else value != 0
            if more:
                chunk |= 0x20
            characters.append(chr(chunk + 48))
    return "".join(characters)


def binary_mask_to_coco_rle(mask: torch.Tensor) -> dict:
    """Encode a binary mask as pycocotools' compressed RLE: ``{"size": [h, w], "counts": str}``.

    Runs are taken in column-major (Fortran) order, starting with a (possibly empty) run of zeros; the
    result decodes with ``pycocotools.mask.decode``.

    Args:
        mask: ``[height, width]`` bool / 0-1 tensor (or array).

    Returns:
        dict with ``size`` ``[height, width]`` and ``counts`` (str).
    """
    mask = torch.as_tensor(mask)
    if mask.ndim != 2:
        raise ValueError(f"RLE encoding expects a [height, width] mask, got shape {tuple(mask.shape)}.")
    height, width = mask.shape
    pixels = mask.detach().to("cpu", torch.bool).t().reshape(-1)
    if pixels.numel() == 0:
        return {"size": [int(height), int(width)], "counts": coco_rle_counts_to_string([0])}
    change = torch.nonzero(pixels[1:] != pixels[:-1]).flatten() + 1
    boundaries = torch.cat([torch.tensor([0]), change, torch.tensor([pixels.numel()])])
    counts = (boundaries[1:] - boundaries[:-1]).tolist()
    if bool(pixels[0]):
        counts = [0, *counts]
    return {"size": [int(height), int(width)], "counts": coco_rle_counts_to_string(counts)}
