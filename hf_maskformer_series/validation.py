"""Input checks shared by the models: bad input gets a ValueError that names the problem."""

from __future__ import annotations

import torch


def validate_pixel_values(pixel_values: torch.Tensor, num_channels: int = 3, video: bool = False) -> None:
    """`pixel_values` must be `[batch, channels, H, W]` (videos: `[batch, frames, channels, H, W]`)."""
    expected_dims = 5 if video else 4
    layout = "[batch, frames, channels, height, width]" if video else "[batch, channels, height, width]"
    if not isinstance(pixel_values, torch.Tensor):
        raise ValueError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.dim() != expected_dims:
        raise ValueError(f"pixel_values must be {layout}, got shape {tuple(pixel_values.shape)}")
    channels = pixel_values.shape[-3]
    if channels != num_channels:
        raise ValueError(
            f"pixel_values has {channels} channels, the backbone expects {num_channels} (shape {tuple(pixel_values.shape)})"
        )


def validate_pixel_mask(
    pixel_mask: torch.Tensor | None, pixel_values: torch.Tensor, video: bool = False
) -> torch.Tensor | None:
    """Check `pixel_mask` against `pixel_values` and return it as `[batch, H, W]` (None stays None).

    Args:
        pixel_mask: `[batch, H, W]`, 1 on real pixels (videos also `[batch, frames, H, W]`, whose frames share
            the first frame's mask).
        pixel_values: `[batch, channels, H, W]` (videos: `[batch, frames, channels, H, W]`).

    Raises:
        ValueError: not a tensor, a shape that does not match `pixel_values`, or (in eager mode) an image without
            any real pixel.
    """
    if pixel_mask is None:
        return None
    if not isinstance(pixel_mask, torch.Tensor):
        raise ValueError(f"pixel_mask must be a torch.Tensor, got {type(pixel_mask).__name__}")
    batch, height, width = pixel_values.shape[0], pixel_values.shape[-2], pixel_values.shape[-1]
    if video and pixel_mask.dim() == 4 and pixel_mask.shape[1] == pixel_values.shape[1]:
        pixel_mask = pixel_mask[:, 0]
    if tuple(pixel_mask.shape) != (batch, height, width):
        layout = "[batch, H, W] or [batch, frames, H, W]" if video else "[batch, H, W]"
        name = "pixel_values_videos" if video else "pixel_values"
        raise ValueError(
            f"pixel_mask must be {layout} matching {name} {tuple(pixel_values.shape)}, got {tuple(pixel_mask.shape)}"
        )
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing():
        return pixel_mask  # the value check below is data-dependent: eager mode only
    empty = (~pixel_mask.bool().flatten(1).any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"pixel_mask is all zero for image(s) {empty}: every image needs at least one real pixel")
    return pixel_mask


def validate_targets(mask_labels: list[torch.Tensor] | None, class_labels: list[torch.Tensor] | None,
                     pixel_values: torch.Tensor, num_labels: int, video: bool = False) -> None:
    """Check training targets against the batch and the label set (no targets at all is fine: inference).

    Args:
        mask_labels: per image `[targets, H, W]` one-hot masks (videos: `[targets, frames, H, W]`), or one integer
            segment map `[H, W]` (videos: `[frames, H, W]`) whose values lie in `[-1, targets)` (`-1` = no target).
        class_labels: per image `[targets]`.
        pixel_values: the batch the targets belong to.
        num_labels: number of classes; valid ids are `0 .. num_labels - 1`.
    """
    if mask_labels is None and class_labels is None:
        return
    if (mask_labels is None) != (class_labels is None):
        raise ValueError("mask_labels and class_labels must be given together")
    batch = pixel_values.shape[0]
    if len(mask_labels) != batch or len(class_labels) != batch:
        raise ValueError(
            f"got {len(mask_labels)} mask_labels and {len(class_labels)} class_labels entries for a batch of {batch}"
        )
    image_size = tuple(pixel_values.shape[-2:])
    one_hot_dims = 4 if video else 3
    for index, (masks, labels) in enumerate(zip(mask_labels, class_labels)):
        segment_map = masks.dim() == one_hot_dims - 1
        if segment_map:
            if masks.is_floating_point() or masks.dtype == torch.bool:
                raise ValueError(
                    f"image {index}: a {masks.dim()}-dim mask_labels entry is a segment map and must hold integer "
                    f"target ids, got dtype {masks.dtype}"
                )
            if masks.numel() and (int(masks.min()) < -1 or int(masks.max()) >= labels.shape[0]):
                raise ValueError(
                    f"image {index}: segment map ids span [{int(masks.min())}, {int(masks.max())}] but must lie in "
                    f"[-1, {labels.shape[0]}) (one id per class label, -1 = no target)"
                )
        elif masks.dim() != one_hot_dims:
            raise ValueError(
                f"image {index}: mask_labels must be one-hot masks with {one_hot_dims} dims or a segment map with "
                f"{one_hot_dims - 1}, got {tuple(masks.shape)}"
            )
        elif masks.shape[0] != labels.shape[0]:
            raise ValueError(
                f"image {index}: {masks.shape[0]} masks but {labels.shape[0]} class labels (one label per mask)"
            )
        if video and masks.shape[-3] != pixel_values.shape[1]:
            raise ValueError(
                f"video {index}: mask_labels have {masks.shape[-3]} frames but the video has {pixel_values.shape[1]}"
            )
        if tuple(masks.shape[-2:]) != image_size:
            raise ValueError(
                f"image {index}: masks are {tuple(masks.shape[-2:])} but the (padded) image is {image_size}; "
                "masks must be padded like the image"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
            bad = labels[(labels < 0) | (labels >= num_labels)].unique().tolist()
            raise ValueError(f"image {index}: class ids {bad} are outside the model's labels 0..{num_labels - 1}")
