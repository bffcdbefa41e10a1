"""Post-processing shared by the image processors and the video processor: the one processing core.

- **Output access**: :func:`outputs_field` / :func:`query_logits` read a ModelOutput or a plain dict whose values
  are torch tensors or numpy arrays (e.g. ONNX Runtime outputs).
- **Geometry**: :func:`image_geometry` gives per image the padded input size, the un-padded size inside it and
  the output size (:class:`MaskGeometry`); `padded_image_size` may be `[batch, 2]` or the legacy `[2]`.
- **Resizing**: :func:`resize_mask_logits` (the original's upsample → crop → resize chain).
- **Inference**: :func:`semantic_segmentation` / :func:`semantic_inference`, :func:`panoptic_inference`,
  :func:`instance_inference` and :func:`video_instance_inference`; given a :class:`MaskGeometry` they take the
  model-resolution mask logits and resize only what they need.
- **Processor methods**: :class:`SegmentationPostProcessingMixin` holds the image processors' `post_process_*`
  methods, thin argument handling around the functions above.

The tensor functions are pure. The functions reproduce the inference of the original
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

import functools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput

__all__ = [
    "MaskGeometry",
    "SegmentationPostProcessingMixin",
    "binary_mask_to_coco_rle",
    "coco_rle_counts_to_string",
    "crop_and_resize_masks",
    "image_geometry",
    "instance_id_map",
    "instance_inference",
    "instance_scores_from_selection",
    "instance_selection",
    "mask_logit_threshold",
    "outputs_field",
    "panoptic_from_selection",
    "panoptic_inference",
    "query_logits",
    "resize_mask_logits",
    "resized_mask_logit_blocks",
    "select_panoptic_queries",
    "select_top_k_query_classes",
    "semantic_inference",
    "semantic_segmentation",
    "upsample_crop_resize",
    "upsample_masks",
    "video_instance_inference",
]


# ----------------------------------------------------------------------------------------------------------------
# Output access and geometry
# ----------------------------------------------------------------------------------------------------------------


def outputs_field(outputs: Any, name: str) -> Any:
    """Field `name` of a ModelOutput, a plain dict or any object with attributes (None when absent).

    numpy arrays (e.g. ONNX Runtime outputs) come back as torch tensors (sharing memory).
    """
    value = outputs.get(name) if isinstance(outputs, Mapping) else getattr(outputs, name, None)
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    return value


def query_logits(outputs: Any, spatial_dims: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """`class_queries_logits [B, Q, K + 1]` and `masks_queries_logits [B, Q, *spatial]`, checked.

    Args:
        outputs: a ModelOutput or a dict (torch tensors or numpy arrays).
        spatial_dims: 2 for images (`[h, w]`), 3 for videos (`[frames, h, w]`).
    """
    class_logits = outputs_field(outputs, "class_queries_logits")
    mask_logits = outputs_field(outputs, "masks_queries_logits")
    if class_logits is None or mask_logits is None:
        raise ValueError("`outputs` must carry `class_queries_logits` and `masks_queries_logits`.")
    expected = "[batch, queries, frames, h, w]" if spatial_dims == 3 else "[batch, queries, h, w]"
    if class_logits.ndim != 3 or mask_logits.ndim != 2 + spatial_dims:
        raise ValueError(
            f"`class_queries_logits` must be [batch, queries, K + 1] and `masks_queries_logits` {expected}; got "
            f"shapes {tuple(class_logits.shape)} and {tuple(mask_logits.shape)}."
        )
    if class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError(
            f"`class_queries_logits` {tuple(class_logits.shape)} and `masks_queries_logits` "
            f"{tuple(mask_logits.shape)} disagree on batch size / number of queries."
        )
    return class_logits, mask_logits


class MaskGeometry(NamedTuple):
    """Where one image's mask logits go: upsampled to `padded`, cropped to `crop` (top left), resized to `output`.

    Each field is a `(height, width)` pair.
    """

    padded: tuple[int, int]
    crop: tuple[int, int]
    output: tuple[int, int]


def _size_rows(value: Any, batch_size: int, name: str) -> list[tuple[int, int]] | None:
    """`[batch, 2]` (one row per image) or `[2]` (the same for every image) → one `(height, width)` per image."""
    if value is None:
        return None
    sizes = torch.as_tensor(value)
    if sizes.ndim == 1 and sizes.shape[0] == 2:
        sizes = sizes.expand(batch_size, 2)
    if sizes.ndim != 2 or sizes.shape[1] != 2 or sizes.shape[0] != batch_size:
        raise ValueError(
            f"`{name}` must be [batch, 2] (one (height, width) per image, batch {batch_size}) or [2]; got shape "
            f"{tuple(sizes.shape)}."
        )
    return [(int(height), int(width)) for height, width in sizes.tolist()]


def image_geometry(
    outputs: Any,
    batch_size: int,
    mask_size: Sequence[int],
    target_sizes: Any = None,
    image_sizes: Any = None,
    padded_image_size: Any = None,
    mask_stride: int = 4,
) -> list[MaskGeometry]:
    """Per image: the padded input size, the un-padded size inside it and the output size.

    Args:
        outputs: model outputs; `image_sizes [B, 2]` and `padded_image_size` (`[B, 2]` or the legacy `[2]`) are
            read from them unless given.
        batch_size: number of images.
        mask_size: `(h, w)` of the mask logits.
        target_sizes: one `(height, width)` per image (list or `[B, 2]` tensor); `None` keeps the un-padded size.
        image_sizes, padded_image_size: override what the outputs report.
        mask_stride: without a padded size, the padded input is `mask_stride x mask_size` (4: the models' mask
            stride).

    Raises:
        ValueError: wrong number of sizes, an empty un-padded image (e.g. an all-zero `pixel_mask` row) or one
            larger than the padded input.
    """
    if image_sizes is None:
        image_sizes = outputs_field(outputs, "image_sizes")
    if padded_image_size is None:
        padded_image_size = outputs_field(outputs, "padded_image_size")
    padded_rows = _size_rows(padded_image_size, batch_size, "padded_image_size")
    if padded_rows is None:
        padded_rows = [(mask_stride * int(mask_size[0]), mask_stride * int(mask_size[1]))] * batch_size
    crop_rows = _size_rows(image_sizes, batch_size, "image_sizes") or padded_rows
    if target_sizes is not None:
        if isinstance(target_sizes, torch.Tensor | np.ndarray):
            target_sizes = target_sizes.tolist()
        target_sizes = list(target_sizes)
        if len(target_sizes) != batch_size:
            raise ValueError(
                f"Got {len(target_sizes)} target sizes for a batch of {batch_size}; pass one (height, width) per "
                "image."
            )
    geometry = []
    for index, (padded, crop) in enumerate(zip(padded_rows, crop_rows)):
        if min(crop) < 1:
            raise ValueError(
                f"Image {index} has an empty un-padded area (image_sizes {crop}): is its `pixel_mask` all zeros?"
            )
        if crop[0] > padded[0] or crop[1] > padded[1]:
            raise ValueError(f"Image {index}: un-padded size {crop} is larger than the padded input size {padded}.")
        output = crop if target_sizes is None else _as_size(target_sizes[index])
        if min(output) < 1:
            raise ValueError(f"Image {index}: target size {output} is empty.")
        geometry.append(MaskGeometry(padded, crop, output))
    return geometry


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
    pixel_major: bool = False,
) -> torch.Tensor:
    """Crop the bottom/right padding, then bilinearly resize (the original's ``sem_seg_postprocess``).

    Args:
        masks: ``[..., padded_height, padded_width]``.
        crop_size: ``(height, width)`` of the un-padded image inside the padded input (top-left corner).
        output_size: requested ``(height, width)``; ``None`` keeps the cropped size.
        pixel_major: see :func:`upsample_masks`.

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
    return upsample_masks(cropped, output_size, pixel_major=pixel_major)


def upsample_crop_resize(
    mask_logits: torch.Tensor,
    padded_size: Sequence[int] | torch.Tensor,
    crop_size: Sequence[int] | torch.Tensor,
    output_size: Sequence[int] | torch.Tensor | None = None,
    pixel_major: bool = False,
) -> torch.Tensor:
    """The original's full resize chain: upsample to the padded input size, crop the padding, resize.

    Args:
        mask_logits: ``[..., h, w]`` mask logits at the model's output stride.
        padded_size: ``(H, W)`` of the padded model input.
        crop_size: ``(height, width)`` of the real image inside the padded input.
        output_size: requested ``(height, width)``; ``None`` keeps the cropped size.
        pixel_major: see :func:`upsample_masks` (the padded-size intermediate is pixel-major in any case).

    Returns:
        ``[..., output_height, output_width]`` mask logits.
    """
    upsampled = upsample_masks(mask_logits, padded_size, pixel_major=True)
    resized = crop_and_resize_masks(upsampled, crop_size, output_size, pixel_major=True)
    return resized if pixel_major else resized.contiguous()


def _linear_taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D linear resizing as ``F.interpolate(mode="bilinear", align_corners=False)`` does it along one axis.

    Returns ``low [out]``, ``high [out]`` source indices and the float32 weight ``[out]`` of `high` (source
    ``(dst + 0.5) * in / out - 0.5``, clamped at 0; computed in float32 as PyTorch's CPU kernel does).
    """
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    source = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    low = source.long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    return low, high, source - low


def _linear_interpolation_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """``[out_size, in_size]`` float64 matrix of :func:`_linear_taps` (the identity at equal sizes)."""
    if in_size == out_size:
        return torch.eye(out_size, dtype=torch.float64)
    low, high, high_weight = _linear_taps(in_size, out_size)
    high_weight = high_weight.double()
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    matrix.index_put_((rows, low), 1.0 - high_weight, accumulate=True)
    matrix.index_put_((rows, high), high_weight, accumulate=True)
    return matrix


_BAND_ROWS = 32  # output rows per block of the banded row product
_BAND_COLUMNS = 64  # output columns per block of the banded column product


def _operator_bands(operator: torch.Tensor, band: int) -> tuple[tuple[int, int, int, int], ...]:
    """Blocks ``(start, stop, first, last)`` of a banded ``[out, in]`` operator: outputs ``start:stop`` read only
    inputs ``first:last`` (each output reads 2-4 inputs when upsampling)."""
    blocks = []
    for start in range(0, operator.shape[0], band):
        used = operator[start : start + band].ne(0).any(0).nonzero().flatten()
        first, last = (int(used[0]), int(used[-1]) + 1) if used.numel() else (0, 1)
        blocks.append((start, min(start + band, operator.shape[0]), first, last))
    return tuple(blocks)


def _operator_taps(operator: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-zero entries of each row of an ``[out, in]`` operator: ``index [out, k]`` and ``weight [out, k]``
    (``k`` = the most any row has; shorter rows are padded with weight 0 on input 0)."""
    nonzero = operator.ne(0)
    taps = max(int(nonzero.sum(1).max()), 1)
    # the non-zero columns first, in column order (a stable sort of "is zero")
    index = torch.sort((~nonzero).to(torch.uint8), dim=1, stable=True).indices[:, :taps]
    weight = operator.gather(1, index)
    return index.masked_fill(weight == 0, 0), weight


class ResizeOperators(NamedTuple):
    """The upsample → crop → resize chain of one geometry as one linear map per axis, with its band structure."""

    rows: torch.Tensor  # [H, h] float32
    columns: torch.Tensor  # [W, w] float32
    row_blocks: tuple[tuple[int, int, int, int], ...]  # _BAND_ROWS output rows each
    column_blocks: tuple[tuple[int, int, int, int], ...]  # _BAND_COLUMNS output columns each
    row_taps: tuple[torch.Tensor, torch.Tensor]  # _operator_taps(rows): index [H, k], weight [H, k]
    column_taps: tuple[torch.Tensor, torch.Tensor]  # _operator_taps(columns)


@functools.lru_cache(maxsize=64)
def _resize_operators(mask_size: tuple[int, int], geometry: MaskGeometry) -> ResizeOperators:
    """The upsample → crop → resize chain as one linear map per axis (see :class:`ResizeOperators`)."""
    axes = []
    for axis in range(2):
        upsample = _linear_interpolation_matrix(mask_size[axis], geometry.padded[axis])[: geometry.crop[axis]]
        axes.append(_linear_interpolation_matrix(geometry.crop[axis], geometry.output[axis]) @ upsample)
    rows, columns = axes[0].float(), axes[1].float()
    return ResizeOperators(
        rows, columns, _operator_bands(rows, _BAND_ROWS), _operator_bands(columns, _BAND_COLUMNS),
        _operator_taps(rows), _operator_taps(columns),
    )


def _widen(mask_logits: torch.Tensor, operators: ResizeOperators, out: torch.Tensor | None = None) -> torch.Tensor:
    """The column half of the resize: ``[count, h, w]`` → ``[h, W, count]`` float32 (pixel-major, the layout the
    banded row products read), into `out` (flat float32 memory of at least that size) when given.

    One plain matrix product per band of output columns, ``[columns, K] x [K, h * count]`` (a batched product
    over the rows runs as many tiny products, slow with several threads), each moved into place.
    """
    count, height, width = mask_logits.shape
    columns = operators.columns.to(mask_logits.device)
    # [w, h * count]: the small side is re-laid out
    source = mask_logits.float().permute(2, 1, 0).reshape(width, height * count)
    shape = (height, columns.shape[0], count)
    if out is None:
        widened = torch.empty(shape, dtype=torch.float32, device=mask_logits.device)
    else:
        widened = out[: math.prod(shape)].view(shape)
    for start, stop, first, last in operators.column_blocks:
        band = torch.mm(columns[start:stop, first:last], source[first:last]).view(stop - start, height, count)
        widened[:, start:stop].copy_(band.transpose(0, 1))
    return widened


class ResizeWorkspace(NamedTuple):
    """Flat float32 buffers reused by successive :func:`resized_mask_logit_blocks` calls on chunks of masks (fresh
    multi-megabyte buffers cost page faults on every call)."""

    widened: torch.Tensor  # >= h * W * count elements
    block: torch.Tensor  # >= _BAND_ROWS * W * count elements

    @classmethod
    def for_masks(cls, count: int, mask_height: int, geometry: MaskGeometry, device: torch.device) -> ResizeWorkspace:
        width = geometry.output[1]
        return cls(*(torch.empty(rows * width * count, dtype=torch.float32, device=device)
                     for rows in (mask_height, _BAND_ROWS)))


def resized_mask_logit_blocks(
    mask_logits: torch.Tensor,
    geometry: MaskGeometry,
    out: torch.Tensor | None = None,
    workspace: ResizeWorkspace | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """:func:`resize_mask_logits` a band of output rows at a time (the per-pixel work that follows then runs on a
    block that stays in cache instead of on the full-size array).

    Args:
        mask_logits: ``[count, h, w]``.
        geometry: the image's :class:`MaskGeometry`.
        out: optional ``[H, W, count]`` float32 buffer the blocks are written into (the yielded blocks are its rows).
            Without it every block is written into one block-sized buffer: a block is valid until the next one
            is produced, and may be used as scratch memory.
        workspace: optional buffers (:class:`ResizeWorkspace`) for the widened masks and the block, instead of
            fresh ones.

    Yields:
        ``(start, stop, block)``: output rows ``start:stop`` as a ``[stop - start, W, count]`` float32 block,
        pixel-major (the masks innermost).
    """
    mask_logits = mask_logits.detach()  # post-processing is not differentiable (thresholds, argmax)
    count, height, width = mask_logits.shape
    out_width = geometry.output[1]
    operators = _resize_operators((int(height), int(width)), geometry)
    rows = operators.rows.to(mask_logits.device)
    widened = _widen(mask_logits, operators, None if workspace is None else workspace.widened)
    widened = widened.view(height, out_width * count)
    scratch = None
    if out is None:
        shape = (_BAND_ROWS, out_width, count)
        if workspace is None:
            scratch = torch.empty(shape, dtype=torch.float32, device=mask_logits.device)
        else:
            scratch = workspace.block[: math.prod(shape)].view(shape)
    for start, stop, first, last in operators.row_blocks:
        block = out[start:stop] if scratch is None else scratch[: stop - start]
        torch.mm(rows[start:stop, first:last], widened[first:last], out=block.view(stop - start, out_width * count))
        yield start, stop, block


def resize_mask_logits(mask_logits: torch.Tensor, geometry: MaskGeometry) -> torch.Tensor:
    """Mask logits at the model's resolution → the output size of `geometry`, as one separable linear map.

    Equal (to float rounding, ~1e-6) to :func:`upsample_crop_resize`, the original's chain (bilinear upsampling to
    the padded input, crop, bilinear resize), which is linear per mask: here it is a product with a precomputed
    ``[W, w]`` matrix, then a banded product with the ``[H, h]`` one, written straight into pixel-major memory;
    the padded-size intermediate is never materialised.

    Args:
        mask_logits: ``[..., h, w]``.
        geometry: the image's :class:`MaskGeometry`.

    Returns:
        ``[..., output_height, output_width]`` float32 logits, pixel-major in memory (the leading dimensions
        innermost: what the per-pixel reductions over queries want).
    """
    leading, (height, width) = mask_logits.shape[:-2], mask_logits.shape[-2:]
    out_height, out_width = geometry.output
    count = math.prod(leading)
    resized = torch.empty(out_height, out_width, count, dtype=torch.float32, device=mask_logits.device)
    if count:
        for _ in resized_mask_logit_blocks(mask_logits.reshape(count, height, width), geometry, out=resized):
            pass
    return resized.permute(2, 0, 1).view(*leading, out_height, out_width)


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


def semantic_segmentation(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    geometry: MaskGeometry | None = None,
    postprocess_before_inference: bool = False,
    return_scores: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Semantic map (and optionally the class scores) of one image.

    Without `geometry`, `mask_pred` is already at the output size. With it, the mask logits are upsampled to the
    padded input, cropped, and either the `[K, h, w]` scores are then resized to the output size (default, the
    original's semantic flow) or, with `postprocess_before_inference=True`, the mask logits are resized first
    (the original's `SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE`).

    Args:
        mask_cls: ``[Q, K + 1]`` class logits.
        mask_pred: ``[Q, h, w]`` mask logits.
        geometry: the image's :class:`MaskGeometry` (``None``: no resizing).
        postprocess_before_inference: resize the mask logits before combining them.
        return_scores: also return the ``[K, H, W]`` scores.

    Returns:
        ``segmentation [H, W]`` int64 class ids and ``scores [K, H, W]`` (``None`` unless `return_scores`).
    """
    size = tuple(mask_pred.shape[-2:])
    geometry = geometry if geometry is not None else MaskGeometry(size, size, size)
    crop, output_size = geometry.crop, geometry.output
    class_probs = mask_cls.float().softmax(-1)[:, :-1]
    if postprocess_before_inference:
        masks = resize_mask_logits(mask_pred, geometry)
        pixel_scores = semantic_scores_per_pixel(class_probs, masks.sigmoid())  # [H, W, K]
    else:
        # The original resizes the [K, h, w] scores. Resizing is linear, so when the output is smaller than the
        # cropped input, resizing the [Q, h, w] mask probabilities first and combining them at the output size
        # gives the same scores (up to float rounding) for less work.
        if not return_scores:
            return _bounded_semantic_argmax(class_probs, mask_pred.float(), geometry), None
        masks = resize_mask_logits(mask_pred, geometry._replace(output=crop))  # pixel-major [Q, h, w]
        if output_size[0] * output_size[1] < crop[0] * crop[1]:
            mask_probs = upsample_masks(masks.float().sigmoid(), output_size, pixel_major=True)
            pixel_scores = semantic_scores_per_pixel(class_probs, mask_probs)
        else:
            pixel_scores = semantic_scores_per_pixel(class_probs, masks.float().sigmoid())
            if not return_scores and tuple(output_size) != tuple(crop):
                return _resized_argmax(pixel_scores, output_size), None
            # resize the [K, h, w] scores (a channels-last view: the fast kernel), back to [H, W, K]
            pixel_scores = upsample_masks(pixel_scores.permute(2, 0, 1), output_size, pixel_major=True)
            pixel_scores = pixel_scores.permute(1, 2, 0)
    # the argmax runs over the innermost (contiguous) dimension: several times faster than over [K, ...]
    segmentation = pixel_scores.argmax(-1)
    scores = pixel_scores.permute(2, 0, 1).contiguous() if return_scores else None
    return segmentation, scores


_ARGMAX_MARGIN = 1e-4  # score gap above which float rounding cannot change a per-pixel winner


def _resized_argmax(pixel_scores: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
    """``argmax_c`` of the bilinearly resized ``[h, w, K]`` scores, without resizing all ``K`` maps.

    A resized pixel is a convex combination of (at most) four source pixels: where the same class wins all four
    by more than `_ARGMAX_MARGIN`, it wins the combination too. Only the other pixels (class boundaries) are
    combined, with the weights of ``F.interpolate(mode="bilinear", align_corners=False)``.

    Returns:
        ``[H, W]`` int64 class ids.
    """
    height, width, _ = pixel_scores.shape
    top = pixel_scores.topk(2, dim=-1)
    best = top.indices[..., 0]
    sure = (top.values[..., 0] - top.values[..., 1]) > _ARGMAX_MARGIN
    taps = [_linear_taps(size, int(out_size)) for size, out_size in zip((height, width), output_size)]
    (row_low, row_high, row_weight), (col_low, col_high, col_weight) = taps
    corners = [(rows[:, None], cols[None, :]) for rows in (row_low, row_high) for cols in (col_low, col_high)]
    labels = best[corners[0]]
    certain = sure[corners[0]].clone()
    for corner in corners[1:]:
        certain &= sure[corner] & (best[corner] == labels)
    ys, xs = (~certain).nonzero(as_tuple=True)
    if ys.numel():
        wy, wx = row_weight[ys, None], col_weight[xs, None]
        top_row = pixel_scores[row_low[ys], col_low[xs]] * (1 - wx) + pixel_scores[row_low[ys], col_high[xs]] * wx
        bottom = pixel_scores[row_high[ys], col_low[xs]] * (1 - wx) + pixel_scores[row_high[ys], col_high[xs]] * wx
        labels[ys, xs] = (top_row * (1 - wy) + bottom * wy).argmax(-1)
    return labels


def _cell_bounds(mask_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mask-resolution cell, the min and max of its (up to) 4 corner logits (`[Q, h, w]` in).

    Cell ``(i, j)`` spans rows ``i, min(i + 1, h - 1)`` and columns ``j, min(j + 1, w - 1)``: every bilinearly
    upsampled value whose low source tap is ``(i, j)`` lies between the two.

    Returns:
        ``low [Q, h, w]`` and ``high [Q, h, w]``.
    """
    padded = F.pad(mask_pred.unsqueeze(0), (0, 1, 0, 1), mode="replicate")
    high = F.max_pool2d(padded, kernel_size=2, stride=1)[0]
    low = -F.max_pool2d(-padded, kernel_size=2, stride=1)[0]
    return low, high


def _bounded_semantic_argmax(class_probs: torch.Tensor, mask_pred: torch.Tensor, geometry: MaskGeometry) -> torch.Tensor:
    """The semantic map of the original's rule without scoring every output pixel.

    The rule: upsample the ``[Q, h, w]`` mask logits to the padded input, crop, score every cropped pixel
    (``sum_q class_probs[q, c] * sigmoid(logit_q)``), bilinearly resize the ``[K, ...]`` scores to the output,
    argmax. A cropped pixel's logit lies between the min and max corner logit of its mask-resolution cell, so for a
    candidate class ``c*`` (the winner at the cell's first corner) the score gap
    ``sum_q (class_probs[q, c*] - class_probs[q, c]) * sigmoid(logit_q)`` is bounded below per cell by taking, per
    query, the lower or upper sigmoid bound by the sign of its coefficient. Where that bound is positive (by
    `_ARGMAX_MARGIN`) for every other class, ``c*`` wins every cropped pixel of the cell, and every output pixel
    whose (up to 4) cropped source pixels all lie in cells won by the same class (a convex combination of positive
    score gaps stays positive). Only the other output pixels are scored exactly.

    Args:
        class_probs: ``[Q, K]`` (softmax without no-object).
        mask_pred: ``[Q, h, w]`` float mask logits at the model's resolution.
        geometry: the image's :class:`MaskGeometry`.

    Returns:
        ``[H, W]`` int64 class ids.
    """
    queries, height, width = mask_pred.shape
    device = mask_pred.device
    low, high = _cell_bounds(mask_pred)
    low = low.permute(1, 2, 0).reshape(height * width, queries).sigmoid()
    high = high.permute(1, 2, 0).reshape(height * width, queries).sigmoid()
    candidate = semantic_scores_per_pixel(class_probs, mask_pred.sigmoid()).view(height * width, -1).argmax(-1)
    cell_label = torch.full((height * width,), -1, dtype=torch.long, device=device)
    for winner in candidate.unique().tolist():
        cells = (candidate == winner).nonzero().flatten()
        advantage = class_probs[:, winner, None] - class_probs  # [Q, K]
        gap = low[cells] @ advantage.clamp(min=0) - high[cells] @ (-advantage).clamp(min=0)  # [n, K] lower bounds
        gap[:, winner] = math.inf
        cell_label[cells[gap.amin(-1) > _ARGMAX_MARGIN]] = winner
    cell_label = cell_label.view(height, width)

    # source taps: output → cropped pixels (2 per axis), cropped pixel → mask cell (its low upsampling tap)
    upsample_taps, output_taps = [], []
    for axis in range(2):
        low_tap, high_tap, weight = _linear_taps(mask_pred.shape[1 + axis], geometry.padded[axis])
        upsample_taps.append(tuple(t[: geometry.crop[axis]].to(device) for t in (low_tap, high_tap, weight)))
        taps = _linear_taps(geometry.crop[axis], geometry.output[axis])
        output_taps.append(tuple(t.to(device) for t in taps))
    (row_low, row_high, row_weight), (col_low, col_high, col_weight) = output_taps
    cell_rows, cell_cols = upsample_taps[0][0], upsample_taps[1][0]
    by_row = cell_label[cell_rows[row_low]]  # [H, w]
    by_row = torch.where(by_row == cell_label[cell_rows[row_high]], by_row, -1)
    labels = by_row[:, cell_cols[col_low]]  # [H, W]
    labels = torch.where(labels == by_row[:, cell_cols[col_high]], labels, -1)

    ys, xs = (labels < 0).nonzero(as_tuple=True)
    if ys.numel():
        # the cropped source pixels of the uncertain output pixels, each scored once
        crop_width = geometry.crop[1]
        corners = torch.stack([
            row_low[ys] * crop_width + col_low[xs], row_low[ys] * crop_width + col_high[xs],
            row_high[ys] * crop_width + col_low[xs], row_high[ys] * crop_width + col_high[xs],
        ])
        needed, inverse = torch.unique(corners, return_inverse=True)
        crop_y, crop_x = needed // crop_width, needed % crop_width
        (up_low, up_high, up_weight), (left, right, right_weight) = upsample_taps
        pixels = mask_pred.permute(1, 2, 0).reshape(height * width, queries)
        wy, wx = up_weight[crop_y, None], right_weight[crop_x, None]
        top = pixels[up_low[crop_y] * width + left[crop_x]] * (1 - wx) + pixels[up_low[crop_y] * width + right[crop_x]] * wx
        bottom = (
            pixels[up_high[crop_y] * width + left[crop_x]] * (1 - wx) + pixels[up_high[crop_y] * width + right[crop_x]] * wx
        )
        scores = (top * (1 - wy) + bottom * wy).sigmoid() @ class_probs  # [n, K]
        s00, s01, s10, s11 = scores[inverse]
        wy, wx = row_weight[ys, None], col_weight[xs, None]
        labels[ys, xs] = ((s00 * (1 - wx) + s01 * wx) * (1 - wy) + (s10 * (1 - wx) + s11 * wx) * wy).argmax(-1)
    return labels


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


def _count_true(flags: torch.Tensor) -> torch.Tensor:
    """Column counts ``[n]`` of a bool ``[pixels, n]`` matrix, as int64.

    The bytes are summed in a ``[pixels / g, g * n]`` view (``g * n`` a multiple of 64, at least 1024), 128 rows
    at a time into int16: a reduction over a short outer dimension with a wide contiguous inner one vectorises on
    CPU, while summing the ``[pixels, n]`` bools directly, a long outer dimension or a float matrix product is
    3-10x slower. Exact (partial sums of at most 128).
    """
    pixels, columns = flags.shape
    base = 64 // math.gcd(columns, 64)  # the fewest rows whose bytes fill whole 64-byte lines
    group = base * -(-1024 // (base * max(1, columns)))
    whole = pixels // group * group
    wide = flags[:whole].contiguous().view(torch.uint8).view(whole // group, group * columns)
    partial = torch.zeros(group * columns, dtype=torch.int64, device=flags.device)
    for chunk in wide.split(128):
        partial += chunk.sum(0, dtype=torch.int16)  # at most 128 per chunk
    counts = partial.view(group, columns).sum(0)
    if whole < pixels:
        counts += flags[whole:].sum(0, dtype=torch.int64)
    return counts


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
    overwrite: bool = False,
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
        overwrite: `mask_probs` may be used as scratch memory (saves a full-size buffer; float32 only).

    Returns:
        ``segmentation`` ``[...]`` int32 segment ids, and ``segments_info``: one dict per segment id with
        ``id``, ``label_id``, ``was_fused`` (label in ``label_ids_to_fuse``) and ``score`` (the class
        probability of the segment's first query).
    """
    spatial = mask_probs.shape[1:]
    if mask_probs.shape[0] == 0:
        return torch.zeros(spatial, dtype=torch.int32, device=mask_probs.device), []
    # per-pixel work over the queries runs on [..., n]: a free view when the probabilities are pixel-major
    probs_last = mask_probs.movedim(0, -1)
    if not (overwrite and mask_probs.dtype == torch.float32):
        probs_last = probs_last.float().clone()
    votes = _panoptic_pixel_votes(probs_last, scores, mask_threshold, intersect_with_mask)
    return _panoptic_segments(*votes, scores, labels, overlap_threshold, label_ids_to_fuse)


def _panoptic_pixel_votes(
    probs_last: torch.Tensor, scores: torch.Tensor, mask_threshold: float, intersect_with_mask: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The per-pixel part of the panoptic rule on a block of pixels.

    Args:
        probs_last: ``[..., n]`` float32 mask probabilities of the selected queries, queries last; overwritten.
        scores: ``[n]`` class probabilities.
        mask_threshold: probability threshold of a query's own mask.
        intersect_with_mask: also return whether each pixel's winner has it in its own mask.

    Returns:
        ``winner [...]`` (the query with the largest ``score * prob``), ``winner_above [...]`` bool (or None) and
        ``own_area [n]`` (pixels with ``prob >= mask_threshold``).
    """
    num_selected = probs_last.shape[-1]
    above = probs_last >= mask_threshold
    own_area = _count_true(above.reshape(-1, num_selected))
    winner = probs_last.mul_(scores).max(-1).indices  # the first maximum, as argmax (and faster)
    winner_above = above.gather(-1, winner.unsqueeze(-1)).squeeze(-1) if intersect_with_mask else None
    return winner, winner_above, own_area


def _panoptic_segments(
    winner: torch.Tensor,
    winner_above: torch.Tensor | None,
    own_area: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    overlap_threshold: float,
    label_ids_to_fuse: Iterable[int] | None,
) -> tuple[torch.Tensor, list[dict]]:
    """The per-segment part of the panoptic rule (see :func:`panoptic_from_selection`) from the pixel votes of
    :func:`_panoptic_pixel_votes` over the whole image (`winner [...]`, `winner_above [...]` or None)."""
    device = winner.device
    num_selected = scores.shape[0]
    flat_winner = winner.flatten()
    arg_max_area = torch.bincount(flat_winner, minlength=num_selected)
    if winner_above is not None:
        final_area = torch.bincount(flat_winner[winner_above.flatten()], minlength=num_selected)
    else:
        final_area = arg_max_area
    exists = (arg_max_area > 0) & (own_area > 0) & (final_area > 0)
    ratio = arg_max_area.double() / own_area.clamp(min=1).double()
    kept = exists & (ratio >= overlap_threshold)

    fuse_ids = _label_set_tensor(label_ids_to_fuse, device)
    fused = torch.isin(labels, fuse_ids)
    kept_indices = kept.nonzero().flatten()
    if kept_indices.numel() == 0:
        return torch.zeros(winner.shape, dtype=torch.int32, device=device), []

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
    geometry: MaskGeometry | None = None,
) -> tuple[torch.Tensor, list[dict]]:
    """The original's ``panoptic_inference`` on one image.

    Args:
        mask_cls: ``[Q, K + 1]`` class logits.
        mask_pred: ``[Q, ...]`` mask logits at the output resolution, or ``[Q, h, w]`` at the model's with
            `geometry` (then only the selected queries are resized).
        object_mask_threshold: class probability a query must exceed (``OBJECT_MASK_THRESHOLD``).
        overlap_threshold: see :func:`panoptic_from_selection`.
        mask_threshold: see :func:`panoptic_from_selection`.
        label_ids_to_fuse: stuff labels (the original fuses every non-thing class).
        intersect_with_mask: False for MaskFormer v1.
        geometry: the image's :class:`MaskGeometry` (``None``: `mask_pred` is at the output size).

    Returns:
        ``(segmentation [...] int32, segments_info)`` as in :func:`panoptic_from_selection`.
    """
    mask_cls, mask_pred = mask_cls.detach(), mask_pred.detach()  # thresholds and argmax: not differentiable
    query_indices, scores, labels = select_panoptic_queries(mask_cls, object_mask_threshold)
    selected = mask_pred[query_indices]
    if geometry is None:
        return panoptic_from_selection(
            scores, labels, selected.float().sigmoid(), overlap_threshold, mask_threshold, label_ids_to_fuse,
            intersect_with_mask, overwrite=True,
        )
    if selected.shape[0] == 0:
        return torch.zeros(geometry.output, dtype=torch.int32, device=mask_pred.device), []
    # resize a band of rows at a time and take the pixel votes while the band is in cache
    votes = [
        _panoptic_pixel_votes(block.sigmoid_(), scores, mask_threshold, intersect_with_mask)
        for _, _, block in resized_mask_logit_blocks(selected, geometry)
    ]
    winner = torch.cat([vote[0] for vote in votes])
    winner_above = torch.cat([vote[1] for vote in votes]) if intersect_with_mask else None
    own_area = torch.stack([vote[2] for vote in votes]).sum(0)
    return _panoptic_segments(winner, winner_above, own_area, scores, labels, overlap_threshold, label_ids_to_fuse)


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
    class_scores: torch.Tensor, mask_logits: torch.Tensor, mask_threshold: float = 0.5, overwrite: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks and final scores for selected (query, class) pairs.

    Args:
        class_scores: ``[n]`` class probabilities.
        mask_logits: ``[n, ...]`` mask logits of the pairs' queries at the output resolution.
        mask_threshold: probability threshold (strict), applied in logit space.
        overwrite: float32 `mask_logits` may be used as scratch memory (saves a full-size buffer).

    Returns:
        ``binary_masks [n, ...]`` bool and ``scores [n]`` = class prob x mean sigmoid inside the mask
        (``eps = 1e-6`` in the denominator, as in the original).
    """
    binary, mask_scores = _mask_scores(mask_logits, mask_threshold, overwrite)[:2]
    return binary, class_scores * mask_scores


def _mask_scores(
    mask_logits: torch.Tensor, mask_threshold: float, overwrite: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Binary masks ``[n, ...]``, mean probability inside each ``[n]`` and mask areas ``[n]`` (int64).

    With `overwrite`, float32 `mask_logits` serve as scratch memory (fresh full-size buffers cost page faults).
    """
    spatial, count = mask_logits.shape[1:], mask_logits.shape[0]
    # [pixels, n]: a free view when the logits are pixel-major
    logits_last = mask_logits.float().movedim(0, -1).reshape(math.prod(spatial), count)
    if not overwrite:
        logits_last = logits_last.clone()  # `_mask_sums` works in place
    binary_last = torch.empty(logits_last.shape, dtype=torch.bool, device=logits_last.device)
    inside_sum, areas = _mask_sums(logits_last, mask_threshold, binary_last)
    mask_scores = (inside_sum / (areas.double() + 1e-6)).float()
    return binary_last.view(*spatial, count).movedim(-1, 0), mask_scores, areas


_EXACT_FLOAT_COUNT = 2**24  # float32 sums of 0/1 values are exact below this


_SUM_GROUP = 128  # rows per group of :func:`_column_sums`


def _column_sums(values: torch.Tensor) -> torch.Tensor:
    """Column sums of a ``[rows, n]`` float32 block, as float64 ``[n]``.

    One matrix product with a ones vector, but over ``rows / 128`` strided rows at a time, whose ``128 x n``
    partial sums are then added in float64: a single float32 product down 20,000 rows of similar values drifts by
    ~2e-5 of the sum, the grouped one stays near float32 rounding (as the original's ``torch.sum``).
    """
    rows, count = values.shape
    grouped = rows - rows % _SUM_GROUP
    ones = torch.ones(1, grouped // _SUM_GROUP, dtype=values.dtype, device=values.device)
    partial = ones @ values[:grouped].reshape(grouped // _SUM_GROUP, _SUM_GROUP * count)
    sums = partial.view(_SUM_GROUP, count).sum(0, dtype=torch.float64)
    return sums + values[grouped:].sum(0, dtype=torch.float64)


def _mask_sums(
    logits_last: torch.Tensor,
    mask_threshold: float,
    binary_out: torch.Tensor | None = None,
    scratch: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per mask: the sum of the probabilities inside the binary mask and its area, over a block of pixels.

    Args:
        logits_last: ``[pixels, n]`` float32 mask logits (overwritten).
        mask_threshold: probability threshold (strict), applied in logit space.
        binary_out: optional ``[pixels, n]`` bool, receives the binary masks.
        scratch: optional ``[pixels, n]`` float32 buffer (saves an allocation per block).

    Returns:
        ``inside_sum [n]`` float64 and ``areas [n]`` int64.
    """
    pixels, count = logits_last.shape
    threshold_logit = mask_logit_threshold(mask_threshold)
    if binary_out is not None:
        torch.gt(logits_last, threshold_logit, out=binary_out)
    if not math.isfinite(threshold_logit) or pixels >= _EXACT_FLOAT_COUNT:
        inside = logits_last > threshold_logit
        inside_sum = (logits_last.sigmoid() * inside).sum(0, dtype=torch.float64)
        return inside_sum, inside.sum(0, dtype=torch.int64)
    # all in place, no bool tensor (writing one costs more than a float pass on CPU): clamp at the threshold and
    # shift it to 0, so that a pixel is inside iff its value is > 0 (for floats x > t <=> x - t > 0), and count
    # the signs with a matrix product (exact: 0/1 sums below 2^24)
    shifted = logits_last.clamp_(min=threshold_logit)
    if threshold_logit != 0.0:
        shifted.sub_(threshold_logit)
    signs = torch.sign(shifted, out=scratch) if scratch is not None else torch.sign(shifted)
    ones = torch.ones(1, pixels, dtype=torch.float32, device=logits_last.device)
    areas = (ones @ signs).squeeze(0).round().long()
    # sum of the probabilities inside = sum of (prob - t) over the clamped values + t x area: the clamped pixels
    # add sigmoid(t's logit) - t, exactly 0 at t = 0.5 and at most a rounding step otherwise (hence the clamp)
    if threshold_logit != 0.0:
        excess = shifted.add_(threshold_logit).sigmoid_().sub_(mask_threshold).clamp_(min=0)
    else:
        excess = shifted.sigmoid_().sub_(0.5)
    inside_sum = _column_sums(excess) + mask_threshold * areas.double()
    return inside_sum, areas


_SCORE_CHUNK = 32  # masks per chunk of the scoring pass: its buffers stay a few megabytes, reused chunk to chunk


def _resized_mask_scores(
    mask_logits: torch.Tensor, geometry: MaskGeometry, mask_threshold: float, with_binary: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """:func:`_mask_scores` of the masks resized to `geometry`'s output, a band of rows at a time: only the
    binary masks are written at full size (pixel-major ``[n, H, W]`` bool; None without `with_binary`)."""
    count = mask_logits.shape[0]
    out_height, out_width = geometry.output
    device = mask_logits.device
    binary = torch.empty(out_height, out_width, count, dtype=torch.bool, device=device) if with_binary else None
    chunk_size = max(min(count, _SCORE_CHUNK), 1)
    workspace = ResizeWorkspace.for_masks(chunk_size, mask_logits.shape[1], geometry, device)
    scratch = torch.empty(_BAND_ROWS * out_width * chunk_size, dtype=torch.float32, device=device)
    inside_sum = torch.zeros(count, dtype=torch.float64, device=device)
    areas = torch.zeros(count, dtype=torch.int64, device=device)
    for first in range(0, count, chunk_size):
        last = min(first + chunk_size, count)
        for start, stop, block in resized_mask_logit_blocks(mask_logits[first:last], geometry, workspace=workspace):
            pixels = block.view(-1, last - first)
            block_sum, block_areas = _mask_sums(
                pixels, mask_threshold,
                None if binary is None else binary[start:stop, :, first:last].view(-1, last - first),
                scratch[: pixels.numel()].view(pixels.shape),
            )
            inside_sum[first:last] += block_sum
            areas[first:last] += block_areas
    mask_scores = (inside_sum / (areas.double() + 1e-6)).float()
    return None if binary is None else binary.movedim(-1, 0), mask_scores, areas


def _resized_binary_masks(mask_logits: torch.Tensor, geometry: MaskGeometry, mask_threshold: float) -> torch.Tensor:
    """The masks resized to `geometry`'s output and binarised: pixel-major ``[n, H, W]`` bool."""
    count = mask_logits.shape[0]
    binary = torch.empty(*geometry.output, count, dtype=torch.bool, device=mask_logits.device)
    threshold_logit = mask_logit_threshold(mask_threshold)
    for start, stop, block in resized_mask_logit_blocks(mask_logits, geometry) if count else ():
        torch.gt(block, threshold_logit, out=binary[start:stop])
    return binary.movedim(-1, 0)


_MEAN_MASK_BAND = 0.01  # largest fraction of output pixels whose side of the threshold the mean mask leaves open


def _mask_score_upper_bounds(
    mask_logits: torch.Tensor, geometry: MaskGeometry, mask_threshold: float
) -> torch.Tensor | None:
    """Upper bounds on the mask scores of :func:`_resized_mask_scores` (mean probability inside each resized,
    binarised mask) from one resized mask, for masks that lie close to their mean.

    The masks of an untrained or barely trained model differ from their mean ``m`` by a little: ``|x_q - m| <=
    delta`` at the model's resolution, hence at every output pixel too (the resize takes weighted sums of at most
    ``|rows|_1 x |columns|_1`` times the largest input). Then, with ``t`` the threshold's logit (``>= 0``) and
    ``c`` the resized mean:

    - a pixel with ``c > t + delta`` is inside every mask; there the sigmoid is concave (``x > t >= 0``), so
      ``sum sigmoid(x_q) <= sum sigmoid(c) + <sigmoid'(c), x_q - c>``, and the linear term is one dot product
      per mask at the model's resolution with the adjoint-resized slope (``rows^T [sigmoid'(c)] columns``);
    - a pixel with ``c < t - delta`` is outside every mask;
    - the few pixels in between are evaluated exactly from their interpolation taps.

    Pixels of that band within rounding of ``t`` are left out; their probability is about ``sigmoid(t)``, below
    any mean of probabilities above ``t``, so leaving them out can only raise the mean (checked).

    Args:
        mask_logits: ``[n, h, w]`` mask logits at the model's resolution.
        geometry: the image's :class:`MaskGeometry`.
        mask_threshold: probability threshold (strict), applied in logit space.

    Returns:
        ``[n]`` float64 upper bounds (``inf`` where none holds, e.g. an empty mask), or ``None`` when the masks
        are too far apart for the bound to be worth it (more than 1 % of the pixels undecided by the mean).
    """
    threshold_logit = mask_logit_threshold(mask_threshold)
    count, height, width = mask_logits.shape
    if count < 2 or not 0.0 <= threshold_logit < math.inf:
        return None
    operators = _resize_operators((int(height), int(width)), geometry)
    device = mask_logits.device
    rows, columns = operators.rows.to(device), operators.columns.to(device)
    logits = mask_logits.detach().float()
    mean = logits.mean(0)
    lowest, highest = logits.amin(0), logits.amax(0)  # (aminmax over a dimension is ~10x slower)
    reach = float(rows.abs().sum(1).amax() * columns.abs().sum(1).amax())
    # float32 rounding of resized logits (here and in the exact pass): a few ulps of the largest value
    rounding = 1e-5 * (1.0 + float(torch.maximum(highest.abs(), lowest.abs()).amax()) * reach)
    delta = float(torch.maximum(highest - mean, mean - lowest).amax()) * reach + rounding
    centre = resize_mask_logits(mean[None], geometry)[0].sub_(threshold_logit)  # [H, W], shifted
    band_pixels = centre.abs().le_(delta).nonzero()  # [B, 2]
    if band_pixels.shape[0] > _MEAN_MASK_BAND * centre.numel():
        return None
    inside = centre > delta
    probability = torch.sigmoid(centre.add_(threshold_logit)).masked_fill_(~inside, 0.0)
    slope = probability * (1.0 - probability)  # 0 outside
    gradient = (rows.T @ slope @ columns).flatten()  # [h * w]
    linear = (logits.flatten(1) @ gradient).double() - float(mean.flatten() @ gradient)  # [n]
    # the band, exactly: x[q, b] = sum over taps of rows[y_b, i] * logits[q, i, j] * columns[x_b, j]
    row_index, row_weight = (tap.to(device)[band_pixels[:, 0]] for tap in operators.row_taps)
    column_index, column_weight = (tap.to(device)[band_pixels[:, 1]] for tap in operators.column_taps)
    taps = logits[:, row_index[:, :, None], column_index[:, None, :]].double()  # [n, B, k_rows, k_columns]
    weights = row_weight.double()[:, :, None] * column_weight.double()[:, None, :]
    band_logits = (taps * weights).sum((-2, -1)) - threshold_logit  # [n, B], shifted
    surely_inside = band_logits > rounding
    band_sum = torch.where(surely_inside, torch.sigmoid(band_logits + threshold_logit), 0.0).sum(1)
    areas = inside.sum() + surely_inside.sum(1)
    bounds = (probability.sum(dtype=torch.float64) + linear + band_sum) / areas.clamp(min=1)
    # the left-out pixels' probability must not exceed the bound (then including them cannot raise the mean)
    left_out_ceiling = 1.0 / (1.0 + math.exp(-(threshold_logit + rounding)))
    valid = (areas > 0) & (bounds >= left_out_ceiling)
    return torch.where(valid, bounds, math.inf)


_SCORE_MARGIN = 1e-4  # relative float rounding allowance when a score bound drops a candidate


def instance_selection(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    top_k: int = 100,
    mask_threshold: float = 0.5,
    excluded_label_ids: Iterable[int] | None = None,
    geometry: MaskGeometry | None = None,
    threshold: float | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`instance_inference` without materialising one mask per pair.

    Several (query, class) pairs may share a query, so the binary masks are kept once per query.

    Returns:
        dict with ``unique_masks [u, ...]`` bool (one per distinct query; possibly pixel-major in memory),
        ``mask_index [n]`` (the mask of each pair), ``scores [n]``, ``labels [n]`` and ``query_indices [n]``, pairs
        by decreasing score.
    """
    class_scores, labels, query_indices = select_top_k_query_classes(mask_cls, top_k, excluded_label_ids)
    if threshold is not None:
        # a pair's mask score (mean probability inside its mask) never exceeds the sigmoid of its query's largest
        # logit (every resized logit is a convex combination of the model-resolution ones): pairs that cannot
        # reach `threshold` even so are dropped before their masks are resized
        best_mask_prob = mask_pred.flatten(1).amax(1).float().sigmoid()[query_indices]
        keep = (class_scores >= threshold) & (class_scores * best_mask_prob * (1 + _SCORE_MARGIN) >= threshold)
        class_scores, labels, query_indices = class_scores[keep], labels[keep], query_indices[keep]
    unique_queries, inverse = torch.unique(query_indices, return_inverse=True)
    bounds = None
    if threshold is not None and geometry is not None:
        # masks close to their mean: bounds from the mean mask drop the pairs that cannot reach `threshold`
        # without resizing their masks (exact, as above)
        bounds = _mask_score_upper_bounds(mask_pred[unique_queries], geometry, mask_threshold)
        if bounds is not None:
            keep = class_scores * bounds[inverse] * (1 + _SCORE_MARGIN) >= threshold
            class_scores, labels, query_indices = class_scores[keep], labels[keep], query_indices[keep]
            unique_queries, inverse = torch.unique(query_indices, return_inverse=True)
    logits = mask_pred[unique_queries]
    # with a threshold and a geometry, the scores come first (no full-size array) and only the kept masks are
    # resized again into binary masks; after the mean-mask bounds, most candidates left are kept: one pass
    two_passes = geometry is not None and threshold is not None and bounds is None
    if geometry is not None:
        unique_binary, unique_mask_scores, areas = _resized_mask_scores(
            logits, geometry, mask_threshold, with_binary=not two_passes)
    else:
        unique_binary, unique_mask_scores, areas = _mask_scores(logits, mask_threshold, overwrite=False)
    scores = class_scores * unique_mask_scores[inverse]
    if threshold is None:
        order = torch.argsort(scores, descending=True, stable=True)
    else:
        non_empty = areas[inverse] > 0
        order = ((scores >= threshold) & non_empty).nonzero().flatten()
        order = order[torch.argsort(scores[order], descending=True, stable=True)]
    mask_index = inverse[order]
    if two_passes:
        kept, mask_index = torch.unique(mask_index, return_inverse=True)
        unique_binary = _resized_binary_masks(logits[kept], geometry, mask_threshold)
    return {
        "unique_masks": unique_binary,
        "mask_index": mask_index,
        "scores": scores[order],
        "labels": labels[order],
        "query_indices": query_indices[order],
    }


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    top_k: int = 100,
    mask_threshold: float = 0.5,
    excluded_label_ids: Iterable[int] | None = None,
    geometry: MaskGeometry | None = None,
    threshold: float | None = None,
) -> dict[str, torch.Tensor]:
    """The original's ``instance_inference`` on one image.

    Args:
        mask_cls: ``[Q, K + 1]`` class logits.
        mask_pred: ``[Q, ...]`` mask logits at the output resolution, or ``[Q, h, w]`` at the model's with
            `geometry` (then only the selected queries are resized).
        top_k: ``TEST.DETECTIONS_PER_IMAGE``.
        mask_threshold: binarisation threshold on probabilities (0.5 = logit > 0, the original).
        excluded_label_ids: classes dropped after the top-k (the original's thing-only filter when
            panoptic output is on: pass the stuff classes).
        geometry: the image's :class:`MaskGeometry` (``None``: `mask_pred` is at the output size).
        threshold: ``None`` keeps every pair (the original). Otherwise only pairs with a final score
            ``>= threshold`` and a non-empty mask are kept; pairs whose class probability times the sigmoid of
            their query's largest mask logit is below it are dropped before their masks are resized, and so are,
            when the queries' masks lie close to their mean (an untrained model's), pairs whose class probability
            times a bound from the resized mean mask is (:func:`_mask_score_upper_bounds`). Exact: the final
            score never exceeds either bound.

    Returns:
        dict with ``masks [n, ...]`` bool, ``scores [n]``, ``labels [n]`` and ``query_indices [n]``, sorted by
        decreasing score (the original leaves the order of ``topk(sorted=False)``).
    """
    found = instance_selection(mask_cls, mask_pred, top_k, mask_threshold, excluded_label_ids, geometry, threshold)
    masks = found.pop("unique_masks")[found.pop("mask_index")]  # gathers from pixel-major memory
    return {"masks": masks, **found}


def instance_id_map(
    binary: torch.Tensor,
    overlap_mask_area_threshold: float,
    output_size: Sequence[int],
    mask_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Id map from score-sorted instances.

    Each pixel goes to the highest-scoring instance covering it; instances with a visible fraction below
    `overlap_mask_area_threshold` are dropped and the pixels re-assigned among the others (one pass: the visible
    fraction of a survivor can only grow).

    Args:
        binary: ``[u, height, width]`` bool masks (any memory layout; pixel-major is fastest).
        overlap_mask_area_threshold: minimum visible fraction.
        output_size: ``(height, width)``.
        mask_index: ``[n]`` the mask of each instance, instances by decreasing score (default: ``arange(u)``).

    Returns:
        The ``[height, width]`` int32 map (-1 = none, ids ``0..m-1`` in score order) and the indices ``[m]`` of
        the surviving instances.
    """
    device = binary.device
    count = binary.shape[0]
    mask_index = torch.arange(count, device=device) if mask_index is None else mask_index
    empty = torch.full(_as_size(output_size), -1, dtype=torch.int32, device=device)
    if mask_index.numel() == 0:
        return empty, mask_index.new_zeros(0)
    pixels = binary.movedim(0, -1).reshape(-1, count)  # [pixels, u]: a free view when pixel-major

    def assign(instances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per pixel the position in `instances` of the best covering one (weight = positions left)."""
        total = instances.numel()
        rank = torch.full((count,), total, dtype=torch.long, device=device)
        rank.scatter_reduce_(0, mask_index[instances], torch.arange(total, device=device), reduce="amin")
        dtype = torch.uint8 if total < 256 else torch.int32
        best = (pixels.to(dtype) * (total - rank).to(dtype)).amax(-1)  # 0 = not covered
        covered = best > 0
        position = total - best.long()
        visible = torch.bincount(position[covered], minlength=total)
        return covered, position, visible

    areas = _count_true(pixels)[mask_index]
    everyone = torch.arange(mask_index.numel(), device=device)
    _, _, visible = assign(everyone)
    ratio = visible.double() / areas.double().clamp(min=1)
    candidates = everyone[(ratio >= overlap_mask_area_threshold) & (visible > 0)]
    if candidates.numel() == 0:
        return empty, candidates
    covered, position, _ = assign(candidates)
    segmentation = torch.where(covered, position.to(torch.int32), -1).view(empty.shape)
    return segmentation, candidates


def video_instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    top_k: int = 10,
    mask_threshold: float = 0.5,
    geometry: MaskGeometry | None = None,
) -> dict[str, torch.Tensor]:
    """The original video Mask2Former's ``inference_video`` on one video: top-k (query, class) pairs, no mask score.

    Args:
        mask_cls: ``[Q, K + 1]`` class logits.
        mask_pred: ``[Q, frames, h, w]`` mask logits (at the output size without `geometry`).
        top_k: pairs kept (10 in the original), clamped to ``Q x K``.
        mask_threshold: binarisation threshold on probabilities (strict; 0.5 = the original's logit > 0).
        geometry: the video's :class:`MaskGeometry` (the same for every frame).

    Returns:
        dict with ``scores [n]`` (class probabilities, decreasing), ``labels [n]``, ``query_indices [n]`` and
        ``masks [n, frames, H, W]`` bool.
    """
    scores, labels, query_indices = select_top_k_query_classes(mask_cls, top_k)
    unique_queries, inverse = torch.unique(query_indices, return_inverse=True)
    logits = mask_pred[unique_queries].float()
    if geometry is not None:
        logits = resize_mask_logits(logits, geometry)
    masks = (logits > mask_logit_threshold(mask_threshold))[inverse].contiguous()
    return {"scores": scores, "labels": labels, "query_indices": query_indices, "masks": masks}


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


# ----------------------------------------------------------------------------------------------------------------
# The image processors' post-processing methods
# ----------------------------------------------------------------------------------------------------------------


def _check_mask_threshold(mask_threshold: float) -> None:
    if not 0.0 < float(mask_threshold) < 1.0:
        raise ValueError(f"`mask_threshold` is a mask probability and must be in (0, 1), got {mask_threshold}.")


class SegmentationPostProcessingMixin:
    """The `post_process_*` methods of the MaskFormer-family image processors.

    `outputs` may be a ModelOutput or a plain dict with `class_queries_logits`, `masks_queries_logits` and
    optionally `image_sizes [B, 2]` / `padded_image_size` (`[B, 2]` or `[2]`); values torch tensors or numpy
    arrays. Subclasses set `panoptic_intersects_with_mask` (Mask2Former: True, MaskFormer v1: False).
    """

    panoptic_intersects_with_mask: bool = True

    def post_process_semantic_segmentation(
        self,
        outputs: Any,
        target_sizes: list[tuple[int, int]] | None = None,
        return_segmentation_scores: bool = False,
        postprocess_before_inference: bool = False,
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """Semantic segmentation maps (class id per pixel).

        Class scores are ``sum_q softmax(class_logits)[q, :K] * sigmoid(mask_logits[q])``. The mask logits are
        upsampled to the padded input size (`outputs.padded_image_size`), cropped to the image
        (`outputs.image_sizes`), and either the `[K, h, w]` scores are then resized to `target_sizes` (default,
        the original's semantic flow and transformers' order) or, with `postprocess_before_inference=True`, the
        mask logits are resized first (the original's `SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE`).

        Differences from transformers: transformers upsamples to a fixed 384x384 and never crops the padding.
        Outputs without `image_sizes` / `padded_image_size` (e.g. transformers' own) use 4x the mask size and
        no crop.

        Args:
            outputs: model outputs (a ModelOutput or a plain dict; torch tensors or numpy arrays) with
                `class_queries_logits [B, Q, K+1]`, `masks_queries_logits [B, Q, h, w]` and optionally
                `image_sizes [B, 2]` and `padded_image_size` (`[B, 2]`, or the legacy `[2]`).
            target_sizes: one `(height, width)` per image; `None` gives the un-padded input size.
            return_segmentation_scores: also return the `[K, height, width]` scores.
            postprocess_before_inference: resize the mask logits before combining them (see above).

        Returns:
            One `[height, width]` int64 map per image, or `SemanticSegmentationPostProcessorOutput`s with
            `segmentation` and `segmentation_scores` when `return_segmentation_scores`.
        """
        class_logits, mask_logits = query_logits(outputs)
        geometry = image_geometry(outputs, class_logits.shape[0], mask_logits.shape[-2:], target_sizes)
        results = []
        for index, image in enumerate(geometry):
            segmentation, scores = semantic_segmentation(
                class_logits[index], mask_logits[index], image, postprocess_before_inference,
                return_scores=return_segmentation_scores,
            )
            if return_segmentation_scores:
                results.append(
                    SemanticSegmentationPostProcessorOutput(
                        data={"segmentation": segmentation, "segmentation_scores": scores}
                    )
                )
            else:
                results.append(segmentation)
        return results

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: list[tuple[int, int]] | None = None,
        return_coco_annotation: bool = False,
        return_binary_maps: bool = False,
        label_ids_to_fuse: Iterable[int] | None = None,
        top_k: int | None = None,
    ) -> list[dict]:
        """Instance segmentation: top-k (query, class) pairs with mask-weighted scores.

        The `top_k` (default: number of queries, as transformers) best (query, class) pairs by class probability
        are taken over all `Q x K` pairs; pairs whose class is in `label_ids_to_fuse` (stuff classes) are then
        dropped (the original's thing-only filter with panoptic output on). Each pair's mask logits are
        upsampled to the padded input, cropped and resized to the target size, binarised at `mask_threshold`
        (probability, strict: 0.5 is the original's `logit > 0`), and scored ``class prob x mean mask prob
        inside the binary mask``. Pairs with `score >= threshold` and a non-empty mask are returned, by
        decreasing score.

        Output formats:

        - default: `segmentation` is a `[height, width]` int32 id map (-1 = no instance). Instances compete for
          pixels: each pixel goes to the highest-scoring instance covering it, and an instance keeps its id only
          if at least `overlap_mask_area_threshold` of its mask is visible (one re-assignment pass after
          dropping the others). `segments_info` lists the surviving instances, ids `0..n-1`.
        - `return_binary_maps=True`: `[n, height, width]` float 0/1 masks, which may overlap; no overlap test.
        - `return_coco_annotation=True`: a list of pycocotools RLE dicts (`{"size", "counts"}`), one per instance,
          may overlap; no overlap test.

        Differences from transformers: transformers resizes to 384x384, binarises before a nearest resize, uses
        `mask_threshold` nowhere, ignores `overlap_mask_area_threshold`, keeps `topk(sorted=False)` order, fills
        the id map with later-painted instances winning, and its RLE option encodes the id map, one RLE list per
        id (including -1). With no instance, binary maps here are an empty `[0, height, width]` tensor.

        Args:
            outputs: see `post_process_semantic_segmentation`.
            threshold: minimum final score.
            mask_threshold: mask probability threshold for binarisation.
            overlap_mask_area_threshold: minimum visible fraction in the id map (default output only).
            target_sizes: one `(height, width)` per image; `None` gives the un-padded input size.
            return_coco_annotation: return RLE dicts.
            return_binary_maps: return stacked binary masks.
            label_ids_to_fuse: stuff classes, excluded from instances.
            top_k: number of (query, class) pairs considered (the original's `TEST.DETECTIONS_PER_IMAGE`).

        Returns:
            One dict per image: `segmentation` and `segments_info` (`id`, `label_id`, `was_fused` (False),
            `score`).
        """
        if return_coco_annotation and return_binary_maps:
            raise ValueError("`return_coco_annotation` and `return_binary_maps` cannot both be True.")
        _check_mask_threshold(mask_threshold)
        class_logits, mask_logits = query_logits(outputs)
        top_k = class_logits.shape[1] if top_k is None else int(top_k)
        geometry = image_geometry(outputs, class_logits.shape[0], mask_logits.shape[-2:], target_sizes)
        results = []
        for index, image in enumerate(geometry):
            found = instance_selection(
                class_logits[index], mask_logits[index], top_k, mask_threshold, label_ids_to_fuse, image,
                threshold=threshold,
            )
            survivors = torch.arange(found["mask_index"].numel(), device=class_logits.device)
            if return_binary_maps or return_coco_annotation:
                binary = found["unique_masks"][found["mask_index"]]
                if return_binary_maps:
                    segmentation = binary.float()
                else:
                    segmentation = [binary_mask_to_coco_rle(mask) for mask in binary]
            else:
                segmentation, survivors = instance_id_map(
                    found["unique_masks"], overlap_mask_area_threshold, image.output, found["mask_index"]
                )
            segments_info = [
                {"id": new_id, "label_id": int(label), "was_fused": False, "score": float(score)}
                for new_id, (label, score) in enumerate(
                    zip(found["labels"][survivors].tolist(), found["scores"][survivors].tolist())
                )
            ]
            results.append({"segmentation": segmentation, "segments_info": segments_info})
        return results

    def post_process_panoptic_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.8,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: Iterable[int] | None = None,
        target_sizes: list[tuple[int, int]] | None = None,
    ) -> list[dict]:
        """Panoptic segmentation (the original's `panoptic_inference`).

        Queries whose best class is not no-object with probability `> threshold` are kept; only their masks are
        upsampled to the padded input, cropped and resized to the target size. Each pixel goes to the kept query
        with the largest ``class prob x mask prob``. A query becomes a segment when its arg-max area is at least
        `overlap_mask_area_threshold` of its own area (`mask prob >= mask_threshold`) and its final area is not
        empty. Mask2Former's segment is the arg-max area intersected with `mask prob >= mask_threshold`;
        MaskFormer v1's (`SeriesMaskFormerImageProcessor`) is the arg-max area alone. Queries whose label is in
        `label_ids_to_fuse` share one segment per label (the original fuses every stuff class).

        Differences from transformers: 384x384 resize and no crop there; transformers never intersects with the
        mask threshold, keeps a query when the area ratio is strictly greater than the threshold (the original:
        greater or equal), lists a fused label once per query (here once per segment id, with the score of its
        first query) and returns a map of -1 when nothing is found (here 0 = no segment, always).

        Args:
            outputs: see `post_process_semantic_segmentation`.
            threshold: class probability a query must exceed (`OBJECT_MASK_THRESHOLD`).
            mask_threshold: mask probability threshold.
            overlap_mask_area_threshold: minimum visible fraction (`OVERLAP_THRESHOLD`).
            label_ids_to_fuse: labels whose instances are merged (stuff classes); `None` fuses nothing.
            target_sizes: one `(height, width)` per image; `None` gives the un-padded input size.

        Returns:
            One dict per image: `segmentation` (`[height, width]` int32 segment ids, 0 = none) and
            `segments_info` (`id`, `label_id`, `was_fused`, `score`).
        """
        _check_mask_threshold(mask_threshold)
        class_logits, mask_logits = query_logits(outputs)
        geometry = image_geometry(outputs, class_logits.shape[0], mask_logits.shape[-2:], target_sizes)
        results = []
        for index, image in enumerate(geometry):
            segmentation, segments_info = panoptic_inference(
                class_logits[index],
                mask_logits[index],
                object_mask_threshold=threshold,
                overlap_threshold=overlap_mask_area_threshold,
                mask_threshold=mask_threshold,
                label_ids_to_fuse=label_ids_to_fuse,
                intersect_with_mask=self.panoptic_intersects_with_mask,
                geometry=image,
            )
            results.append({"segmentation": segmentation, "segments_info": segments_info})
        return results
