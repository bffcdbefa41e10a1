"""The label contract of the MaskFormer family: label maps → training targets, and the pre-processing resize rule.

Used by the image processors, the video processor and the training examples, so that the contract lives in one
place. Two target forms come out (the models' losses accept both and give the same losses):

- **one-hot** (transformers' form, the processors' default): `mask_labels` `[num_targets, (frames,) H, W]` float
  0/1, `class_labels` `[num_targets]` int64;
- **segment map** (lean form, `return_segment_map=True`): `mask_labels` one integer `[(frames,) H, W]` map whose
  value `j` in `[0, num_targets)` marks a pixel of target `j` (class `class_labels[j]`) and `-1` marks a pixel that
  carries no target. It holds the same information as the one-hot masks in one channel (targets never overlap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_transforms import get_size_with_aspect_ratio
from transformers.image_utils import SizeDict, get_image_size_for_max_height_width

__all__ = [
    "NO_TARGET",
    "encode_segmentation_targets",
    "encode_video_targets",
    "resize_label_map",
    "resized_image_size",
    "rgb_to_panoptic_id",
    "segment_map_to_one_hot",
    "shortest_edge_resize_size",
]

NO_TARGET = -1
"""Value of a segment map at a pixel that belongs to no target (void, `ignore_index`, crowd, padding)."""

SEGMENT_MAP_DTYPE = torch.int32


# ----------------------------------------------------------------------------------------------------------------
# Pre-processing geometry (images and their label maps are resized by the same rule)
# ----------------------------------------------------------------------------------------------------------------


def shortest_edge_resize_size(height: int, width: int, shortest_edge: int, longest_edge: int | None) -> tuple[int, int]:
    """detectron2's `ResizeShortestEdge` output size: scale the short side to `shortest_edge`, cap the long side.

    Returns:
        `(new_height, new_width)`, rounded half up as detectron2 (`int(x + 0.5)`).
    """
    scale = shortest_edge / min(height, width)
    new_height, new_width = (shortest_edge, scale * width) if height < width else (scale * height, shortest_edge)
    if longest_edge and max(new_height, new_width) > longest_edge:
        scale = longest_edge / max(new_height, new_width)
        new_height, new_width = new_height * scale, new_width * scale
    return int(new_height + 0.5), int(new_width + 0.5)


def resized_image_size(
    height: int, width: int, size: SizeDict, size_divisor: int = 0, snap: bool = False, detectron2: bool = False
) -> tuple[int, int]:
    """The pre-processing resize rule of the processors: the `(height, width)` an image (and its labels) get.

    Args:
        height, width: the input size.
        size: `shortest_edge` (+ optional `longest_edge`), `max_height` + `max_width`, or `height` + `width`.
        size_divisor: with `snap`, the result is rounded up to a multiple of it (transformers' Mask2Former rule).
        snap: round up to `size_divisor` (the image is stretched slightly).
        detectron2: `shortest_edge` sizes rounded as detectron2's `ResizeShortestEdge` (the video processor)
            instead of transformers' `get_size_with_aspect_ratio` (the image processors).
    """
    if size.shortest_edge and detectron2:
        new_height, new_width = shortest_edge_resize_size(height, width, size.shortest_edge, size.longest_edge)
    elif size.shortest_edge and size.longest_edge:
        new_height, new_width = get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge)
    elif size.shortest_edge:
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size.shortest_edge, int(size.shortest_edge * long / short)
        new_height, new_width = (new_long, new_short) if width <= height else (new_short, new_long)
    elif size.max_height and size.max_width and not detectron2:
        new_height, new_width = get_image_size_for_max_height_width((height, width), size.max_height, size.max_width)
    elif size.height and size.width:
        new_height, new_width = size.height, size.width
    else:
        accepted = "'shortest_edge' (+ optional 'longest_edge')" + (
            " or 'height' + 'width'" if detectron2 else ", 'max_height' + 'max_width', or 'height' + 'width'"
        )
        raise ValueError(f"`size` must hold {accepted}; got {dict(size)}.")
    if snap and size_divisor:
        new_height = -(-new_height // size_divisor) * size_divisor
        new_width = -(-new_width // size_divisor) * size_divisor
    return int(new_height), int(new_width)


@lru_cache(maxsize=64)
def _nearest_exact_source_indices(input_size: int, output_size: int) -> torch.Tensor:
    """`[output_size]` int64: the input position each output position of a `nearest-exact` resize reads.

    Taken from `F.interpolate` itself (on the positions `0 .. input_size - 1`, exact in float64), so a gather with
    these indices is the interpolation, whatever rounding PyTorch's kernel uses. Cached: never modify the result.
    """
    positions = torch.arange(input_size, dtype=torch.float64).view(1, 1, input_size)
    return F.interpolate(positions, size=output_size, mode="nearest-exact").view(output_size).long()


def resize_label_map(label_map: torch.Tensor, new_size: tuple[int, int]) -> torch.Tensor:
    """Nearest-exact resize of a map `[..., H, W]` → `[..., new_H, new_W]`, same dtype (a label map: integer ids).

    The same result as `F.interpolate(..., mode="nearest-exact")` (which reads one input pixel per output pixel),
    computed as one gather in the map's own dtype: exact for every id, no float copy of the map.
    """
    height, width = label_map.shape[-2:]
    new_height, new_width = (int(side) for side in new_size)
    if (height, width) == (new_height, new_width):
        return label_map
    rows = _nearest_exact_source_indices(height, new_height).to(label_map.device)
    columns = _nearest_exact_source_indices(width, new_width).to(label_map.device)
    if height * width < 2**31:  # int32 positions: half the memory traffic of the gather index
        rows, columns = rows.int(), columns.int()
    positions = (rows.view(-1, 1) * width + columns.view(1, -1)).view(-1)
    flat = label_map.reshape(*label_map.shape[:-2], height * width)
    return flat.index_select(-1, positions).view(*label_map.shape[:-2], new_height, new_width)


# ----------------------------------------------------------------------------------------------------------------
# Label maps
# ----------------------------------------------------------------------------------------------------------------


def rgb_to_panoptic_id(rgb: torch.Tensor) -> torch.Tensor:
    """Decode a COCO panoptic PNG: ``id = R + 256 * G + 256**2 * B``.

    Args:
        rgb: ``[height, width, 3]`` or ``[3, height, width]`` integer tensor.

    Returns:
        ``[height, width]`` int64 segment ids.
    """
    rgb = rgb.long()
    if rgb.ndim != 3 or 3 not in (rgb.shape[0], rgb.shape[-1]):
        raise ValueError(f"A panoptic RGB map must be [H, W, 3] or [3, H, W], got shape {tuple(rgb.shape)}.")
    if rgb.shape[-1] != 3:
        rgb = rgb.permute(1, 2, 0)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


_INT32_EXACT = (torch.uint8, torch.int8, torch.int16, torch.int32)


def label_map_to_tensor(label_map: Any, panoptic: bool) -> torch.Tensor:
    """A label map (PIL, numpy, torch) as an integer ``[height, width]`` tensor (COCO RGB decoded when panoptic).

    int32 for maps of integers up to 32 bits (kept without a copy when already int32), int64 otherwise.
    """
    if hasattr(label_map, "mode") and hasattr(label_map, "size") and not isinstance(label_map, np.ndarray):
        label_map = np.array(label_map)
    tensor = torch.as_tensor(np.asarray(label_map) if not isinstance(label_map, torch.Tensor) else label_map)
    if tensor.ndim == 3 and 1 in (tensor.shape[0], tensor.shape[-1]) and 3 not in (tensor.shape[0], tensor.shape[-1]):
        tensor = tensor.squeeze(0) if tensor.shape[0] == 1 else tensor.squeeze(-1)
    if tensor.ndim == 3 and panoptic:
        return rgb_to_panoptic_id(tensor)
    if tensor.ndim != 2:
        raise ValueError(
            f"A segmentation map must be [height, width] (or an RGB COCO panoptic map with `segments_info`), got "
            f"shape {tuple(tensor.shape)}."
        )
    if tensor.is_floating_point():
        if not bool((tensor == tensor.round()).all()):
            raise ValueError("A segmentation map must hold integer label ids, got non-integer values.")
    return _as_label_ids(tensor)


def _as_label_ids(label_map: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """An integer map as int32 (when its dtype and `ignore_index` fit in it exactly) or int64; no copy if it is one."""
    fits = ignore_index is None or -(2**31) <= ignore_index < 2**31
    if label_map.dtype in _INT32_EXACT and fits:
        return label_map.int()
    return label_map.long()


def reduce_labels(values: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """`do_reduce_labels`: 0 → `ignore_index`, every other value − 1."""
    return torch.where(values == 0, torch.full_like(values, ignore_index), values - 1)


def check_label_range(labels: torch.Tensor, num_labels: int | None, source: str) -> None:
    """`ValueError` naming the offending ids when a class id is negative or (with `num_labels`) too large."""
    if labels.numel() == 0:
        return
    bad = labels < 0
    if num_labels is not None:
        bad = bad | (labels >= num_labels)
    if bool(bad.any()):
        offending = sorted(set(labels[bad].tolist()))
        allowed = f"[0, {num_labels})" if num_labels is not None else "non-negative ids"
        raise ValueError(
            f"Label ids {offending} from the {source} are outside the configured labels ({allowed}). Check "
            "`num_labels`, `ignore_index` (pixels that carry no target) and `do_reduce_labels`."
        )


def _value_range(label_map: torch.Tensor) -> tuple[int, int]:
    """`(min, max)` of an integer map (`(0, 0)` when it is empty)."""
    if label_map.numel() == 0:
        return 0, 0
    low, high = torch.aminmax(label_map)
    return int(low), int(high)


def _present_values(label_map: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Sorted distinct values (int64) of an integer map whose values lie in `[low, high]`.

    A histogram over the value range when it is small (far faster than `unique`).
    """
    flat = label_map.flatten()
    if flat.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=label_map.device)
    if high - low < 65536:
        counts = torch.bincount(flat - low if low else flat)
        return counts.nonzero().flatten() + low
    return torch.unique(flat).long()


def _index_map(label_map: torch.Tensor, kept_values: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Segment map: position of each pixel's value in the sorted `kept_values`, `NO_TARGET` where it is not kept.

    `[low, high]` holds every value of `label_map`.
    """
    if kept_values.numel() == 0 or label_map.numel() == 0:
        return torch.full(label_map.shape, NO_TARGET, dtype=SEGMENT_MAP_DTYPE, device=label_map.device)
    if high - low < 65536:  # a lookup table over the value range (index_select: far faster than indexing)
        table = torch.full((high - low + 1,), NO_TARGET, dtype=SEGMENT_MAP_DTYPE, device=label_map.device)
        inside = (kept_values >= low) & (kept_values <= high)
        positions = torch.arange(kept_values.numel(), dtype=SEGMENT_MAP_DTYPE, device=label_map.device)
        table[kept_values[inside] - low] = positions[inside]
        return table.index_select(0, (label_map - low if low else label_map).flatten()).view(label_map.shape)
    label_map = label_map.long().contiguous()
    positions = torch.searchsorted(kept_values, label_map).clamp_(max=kept_values.numel() - 1)
    found = kept_values[positions] == label_map
    return torch.where(found, positions, NO_TARGET).to(SEGMENT_MAP_DTYPE)


def _pad_segment_map(segment_map: torch.Tensor, padded_size: tuple[int, int] | None) -> torch.Tensor:
    """`[(frames,) h, w]` → `[(frames,) *padded_size]`, `NO_TARGET` in the bottom/right padding."""
    if padded_size is None or tuple(segment_map.shape[-2:]) == tuple(padded_size):
        return segment_map
    height, width = segment_map.shape[-2:]
    if padded_size[0] < height or padded_size[1] < width:
        raise ValueError(f"`padded_size` {tuple(padded_size)} is smaller than the label map {(height, width)}.")
    padded = segment_map.new_full((*segment_map.shape[:-2], *padded_size), NO_TARGET)
    padded[..., :height, :width] = segment_map
    return padded


def _one_hot_from_index_map(segment_map: torch.Tensor, num_targets: int) -> torch.Tensor:
    """`segment_map_to_one_hot(..., dtype=float32)` of a map whose values all lie in `[NO_TARGET, num_targets)`.

    One scatter of each pixel into its target's mask (a pixel without a target writes 0 into mask 0, where it is
    already 0), instead of one comparison per target.
    """
    one_hot = torch.zeros(num_targets, segment_map.numel(), device=segment_map.device)
    if num_targets:
        flat = segment_map.reshape(1, -1)
        one_hot.scatter_(0, flat.clamp(min=0).long(), (flat != NO_TARGET).float())
    return one_hot.view(num_targets, *segment_map.shape)


def segment_map_to_one_hot(segment_map: torch.Tensor, num_targets: int, dtype: torch.dtype = torch.float32):
    """The one-hot form of a segment map: `[(frames,) H, W]` → `[num_targets, (frames,) H, W]` (0/1 of `dtype`)."""
    targets = torch.arange(num_targets, device=segment_map.device).view(-1, *([1] * segment_map.dim()))
    return (segment_map.unsqueeze(0) == targets).to(dtype)


def _targets(label_map: torch.Tensor, kept_values: torch.Tensor, labels: torch.Tensor, low: int, high: int,
             return_segment_map: bool, padded_size: tuple[int, int] | None):
    segment_map = _pad_segment_map(_index_map(label_map, kept_values, low, high), padded_size)
    if return_segment_map:
        return segment_map, labels
    return _one_hot_from_index_map(segment_map, kept_values.numel()), labels


def encode_segmentation_targets(
    label_map: torch.Tensor,
    instance_id_to_semantic_id: Mapping[int, int] | None = None,
    segments_info: Sequence[Mapping[str, Any]] | None = None,
    ignore_index: int | None = None,
    do_reduce_labels: bool = False,
    num_labels: int | None = None,
    return_segment_map: bool = False,
    padded_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn one label map into training targets (the label contract of the processors and training examples).

    The map's kind is chosen by the extra argument: `segments_info` -> COCO panoptic segment-id map,
    `instance_id_to_semantic_id` -> instance-id map (also: any segment map + a segment → class mapping),
    neither -> semantic map. See :class:`SeriesSegmentationImageProcessorBase` for the contract. Targets come in
    increasing order of their id in `label_map`.

    Args:
        label_map: ``[height, width]`` integer map.
        instance_id_to_semantic_id: instance (segment) id -> class id; every id in the map except `ignore_index`
            must be in it.
        segments_info: COCO panoptic segments (dicts with ``id``, ``category_id``, optional ``iscrowd``).
        ignore_index: label that carries no target (semantic class / instance id / panoptic category).
        do_reduce_labels: 0 -> `ignore_index`, others -1.
        num_labels: when set, class ids must lie in ``[0, num_labels)``.
        return_segment_map: return the lean segment-map form instead of one-hot masks.
        padded_size: when set, the targets are padded bottom/right to this ``(height, width)`` (no target there:
            0 in the one-hot masks, -1 in the segment map).

    Returns:
        ``(masks [num_targets, height, width] float 0/1, labels [num_targets] int64)``, or with
        `return_segment_map` ``(segment_map [height, width] int32 with values in [-1, num_targets), labels)``
        (``padded_size`` instead of ``[height, width]`` when given).
    """
    if instance_id_to_semantic_id is not None and segments_info is not None:
        raise ValueError("Pass either `instance_id_to_semantic_id` (instance maps) or `segments_info` (panoptic).")
    if do_reduce_labels and ignore_index is None:
        raise ValueError("`do_reduce_labels=True` needs `ignore_index` (label 0 is mapped to it).")
    label_map = _as_label_ids(label_map, ignore_index)
    device = label_map.device
    low, high = _value_range(label_map)

    if segments_info is not None:
        segment_ids = _present_values(label_map, low, high)
        segment_ids = segment_ids[segment_ids != 0]  # 0 = void / unlabelled in COCO panoptic
        by_id = {}
        for segment in segments_info:
            if "id" not in segment or "category_id" not in segment:
                raise ValueError(f"Each panoptic segment needs 'id' and 'category_id', got {dict(segment)}.")
            by_id[int(segment["id"])] = segment
        present = segment_ids.tolist()
        missing = [segment_id for segment_id in present if segment_id not in by_id]
        if missing:
            raise ValueError(
                f"Panoptic segment ids {missing[:10]} appear in the segmentation map but not in `segments_info`."
            )
        kept_ids, classes = [], []
        for segment_id in present:
            segment = by_id[segment_id]
            if segment.get("iscrowd", 0):
                continue
            kept_ids.append(segment_id)
            classes.append(int(segment["category_id"]))
        kept = torch.tensor(kept_ids, dtype=torch.long, device=device)
        labels = torch.tensor(classes, dtype=torch.long, device=device)
        if do_reduce_labels:
            labels = reduce_labels(labels, ignore_index)
        if ignore_index is not None:
            valid = labels != ignore_index
            kept, labels = kept[valid], labels[valid]
        check_label_range(labels, num_labels, "panoptic `segments_info`")
        return _targets(label_map, kept, labels, low, high, return_segment_map, padded_size)

    if do_reduce_labels:
        label_map = reduce_labels(label_map, ignore_index)
        low, high = _value_range(label_map)
    values = _present_values(label_map, low, high)
    if ignore_index is not None:
        values = values[values != ignore_index]

    if instance_id_to_semantic_id is None:
        check_label_range(values, num_labels, "semantic segmentation map")
        return _targets(label_map, values, values, low, high, return_segment_map, padded_size)

    mapping = {int(key): int(value) for key, value in instance_id_to_semantic_id.items()}
    instance_ids = values.tolist()
    lookup_ids = [instance_id + 1 if do_reduce_labels else instance_id for instance_id in instance_ids]
    missing = [instance_id for instance_id in lookup_ids if instance_id not in mapping]
    if missing:
        raise ValueError(
            f"Instance ids {missing[:10]} appear in the instance map but not in `instance_id_to_semantic_id` "
            f"({len(lookup_ids)} instances in the map, {len(mapping)} entries in the mapping)."
        )
    labels = torch.tensor([mapping[instance_id] for instance_id in lookup_ids], dtype=torch.long, device=device)
    if do_reduce_labels:
        labels = labels - 1
    check_label_range(labels, num_labels, "`instance_id_to_semantic_id` mapping")
    return _targets(label_map, values, labels, low, high, return_segment_map, padded_size)


def encode_video_targets(
    instance_masks: Any,
    class_labels: Any,
    new_size: tuple[int, int],
    padded_size: tuple[int, int],
    num_frames: int,
    original_size: tuple[int, int],
    return_segment_map: bool = False,
    name: str = "video",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One video's training targets from per-instance masks: resized (nearest-exact), padded, empty ones dropped.

    Args:
        instance_masks: `[instances, frames, height, width]` binary masks at the original frame size (an
            instance absent from a frame has an empty mask there).
        class_labels: `[instances]` class ids.
        new_size: the resized frame size; padded_size: the padded batch size (bottom/right padding).
        num_frames, original_size: the video's frame count and original `(height, width)` (checked).
        return_segment_map: return one `[frames, H, W]` int32 segment map instead of one-hot masks (instances
            must not overlap).
        name: how errors name the video.

    Returns:
        `(mask_labels [kept, frames, H, W] float 0/1 or [frames, H, W] int32 segment map, class_labels [kept])`;
        an instance is kept when its resized masks are not empty in every frame.
    """
    masks = torch.as_tensor(np.asarray(instance_masks) if not isinstance(instance_masks, torch.Tensor) else instance_masks)
    labels = torch.as_tensor(np.asarray(class_labels) if not isinstance(class_labels, torch.Tensor) else class_labels)
    labels = labels.long()
    height, width = original_size
    if masks.dim() != 4 or masks.shape[1] != num_frames or tuple(masks.shape[-2:]) != (height, width):
        raise ValueError(
            f"{name}: instance_masks must be [instances, {num_frames}, {height}, {width}] (the original "
            f"frame size), got {tuple(masks.shape)}"
        )
    if labels.dim() != 1 or labels.shape[0] != masks.shape[0]:
        raise ValueError(f"{name}: {masks.shape[0]} instance masks but labels of shape {tuple(labels.shape)}")
    masks = masks.bool()
    if return_segment_map:
        if masks.shape[0] and bool((masks.sum(0, dtype=torch.int32) > 1).any()):
            raise ValueError(
                f"{name}: instance masks overlap; a segment map holds one target per pixel (use the one-hot form, "
                "return_segment_maps=False)"
            )
        ids = torch.full((num_frames, height, width), NO_TARGET, dtype=SEGMENT_MAP_DTYPE)
        if masks.shape[0]:
            ids = torch.where(masks.any(0), masks.to(torch.uint8).argmax(0).to(SEGMENT_MAP_DTYPE), ids)
        ids = resize_label_map(ids, new_size)
        low, high = _value_range(ids)
        present = _present_values(ids, low, high)
        present = present[present != NO_TARGET]
        return _pad_segment_map(_index_map(ids, present, low, high), padded_size), labels[present]
    masks = masks.float()
    if masks.shape[0] and tuple(masks.shape[-2:]) != tuple(new_size):
        masks = F.interpolate(masks, size=tuple(new_size), mode="nearest-exact")
    keep = masks.flatten(1).any(dim=1) if masks.shape[0] else torch.zeros(0, dtype=torch.bool)
    padded = masks.new_zeros(masks.shape[0], num_frames, *padded_size)
    padded[..., : new_size[0], : new_size[1]] = masks
    return padded[keep], labels[keep]
