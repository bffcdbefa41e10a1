"""Windowed inference for long videos: clips of `window` frames, queries associated across clips.

The original runs a whole video through the model at once, so memory grows with its length (the space-time
attention alone holds `frames × h × w` tokens per level) and long videos run out of memory. Here the video is
cut into consecutive clips of `window` frames that run one at a time; the queries of each clip are associated
with those of the previous clip by Hungarian matching on the cosine similarity of their embeddings (the
LayerNorm-ed final query states, the input of the class and mask heads), so query `i` of the result is one track
over the whole video. Class probabilities of a track are averaged over its clips (weighted by clip length); its
mask logits are the concatenation of the clips' logits.

The model's activations are bounded by the window; what grows with the video is only the result itself (the
stride-4 mask logits `[queries, frames, H/4, W/4]`, kept on `storage_device` in `storage_dtype`). With a window
covering the whole video the result is the one-pass result, exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

from .modeling_outputs import SeriesVideoInstanceSegmentationOutput
from .post_processing import image_geometry


def associate_queries(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Order of the current clip's queries that best continues the previous clip's.

    Args:
        previous: `[queries, hidden]` embeddings of the previous clip (already in track order).
        current: `[queries, hidden]` embeddings of the current clip.

    Returns:
        `[queries]` LongTensor `order` such that `current[order[i]]` continues track `i` (maximum total cosine
        similarity, one-to-one).
    """
    if previous.shape != current.shape:
        raise ValueError(f"query embeddings must have the same shape, got {tuple(previous.shape)} and {tuple(current.shape)}")
    similarity = torch.nn.functional.normalize(previous.float(), dim=-1) @ torch.nn.functional.normalize(
        current.float(), dim=-1
    ).T
    rows, cols = linear_sum_assignment((-similarity).cpu().numpy())
    order = torch.empty(previous.shape[0], dtype=torch.int64)
    order[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.int64)
    return order


def iterate_tensor_clips(
    pixel_values_videos: torch.Tensor, window: int, pixel_mask: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Consecutive clips `[1, <= window, 3, H, W]` of one pre-processed video `[1, frames, 3, H, W]`."""
    if pixel_values_videos.dim() != 5 or pixel_values_videos.shape[0] != 1:
        raise ValueError(
            f"windowed inference takes one video [1, frames, 3, H, W], got {tuple(pixel_values_videos.shape)}"
        )
    for start in range(0, pixel_values_videos.shape[1], window):
        yield pixel_values_videos[:, start : start + window], pixel_mask


def iterate_frame_clips(frames: Iterable[Any], window: int, video_processor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Pre-process raw frames (PIL images / arrays, any iterable, e.g. a decoder) `window` at a time.

    Only one clip of raw and processed frames is held at a time.
    """
    buffer = []
    for frame in frames:
        buffer.append(frame)
        if len(buffer) == window:
            inputs = video_processor([buffer], return_tensors="pt")
            yield inputs["pixel_values_videos"], inputs["pixel_mask"]
            buffer = []
    if buffer:
        inputs = video_processor([buffer], return_tensors="pt")
        yield inputs["pixel_values_videos"], inputs["pixel_mask"]


@torch.no_grad()
def windowed_video_inference(
    model,
    video: torch.Tensor | Iterable[Any],
    window: int,
    pixel_mask: torch.Tensor | None = None,
    video_processor=None,
    storage_dtype: torch.dtype = torch.float32,
    storage_device: torch.device | str = "cpu",
) -> SeriesVideoInstanceSegmentationOutput:
    """Run a video of any length through a video Mask2Former `window` frames at a time.

    Args:
        model: a `SeriesVideoMask2FormerForVideoInstanceSegmentation` (eval mode is set by the caller).
        video: one pre-processed video `[1, frames, 3, H, W]`, or an iterable of raw frames (then
            `video_processor` is required and frames are pre-processed clip by clip).
        window: frames per clip (>= 1).
        pixel_mask: `[1, H, W]` with a tensor video.
        video_processor: a `SeriesVideoMask2FormerVideoProcessor`, for raw frames.
        storage_dtype, storage_device: where the accumulated mask logits are kept.

    Returns:
        A `SeriesVideoInstanceSegmentationOutput` for one video: `class_queries_logits [1, Q, K + 1]` (the
        model's logits for one clip; otherwise the log of the clip-averaged class probabilities, so a softmax
        gives the averaged probabilities), `masks_queries_logits [1, Q, frames, H/4, W/4]`, `query_embeddings
        [1, Q, hidden]` (of the last clip), `image_sizes` and `padded_image_size`; it feeds
        `post_process_video_instance_segmentation` directly.
    """
    if int(window) < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    window = int(window)
    if isinstance(video, torch.Tensor):
        clips = iterate_tensor_clips(video, window, pixel_mask)
    else:
        if video_processor is None:
            raise ValueError("raw frames need a video_processor")
        clips = iterate_frame_clips(video, window, video_processor)
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype  # the pixels follow the model's dtype (bf16 / fp16 models)
    mask_chunks: list[torch.Tensor] = []
    class_logits = probability_sum = None
    previous_embeddings = None
    total_frames = 0
    image_sizes = padded_size = None
    num_clips = 0
    for clip, clip_mask in clips:
        outputs = model(
            clip.to(device, dtype),
            pixel_mask=None if clip_mask is None else clip_mask.to(device),
            output_auxiliary_logits=False,
        )
        (clip_geometry,) = image_geometry(outputs, 1, outputs.masks_queries_logits.shape[-2:])
        if padded_size is not None and clip_geometry.padded != padded_size:
            raise ValueError("every frame of a video must have the same (padded) size")
        padded_size = clip_geometry.padded
        image_sizes = outputs.image_sizes
        embeddings = outputs.query_embeddings[0]
        order = (
            torch.arange(embeddings.shape[0])
            if previous_embeddings is None
            else associate_queries(previous_embeddings, embeddings)
        ).to(embeddings.device)
        embeddings = embeddings[order]
        logits = outputs.class_queries_logits[0][order]
        frames = clip.shape[1]
        probabilities = logits.float().softmax(-1) * frames
        probability_sum = probabilities if probability_sum is None else probability_sum + probabilities
        class_logits = logits
        mask_chunks.append(outputs.masks_queries_logits[0][order].to(storage_device, storage_dtype))
        previous_embeddings = embeddings
        total_frames += frames
        num_clips += 1
        del outputs
    if num_clips == 0:
        raise ValueError("the video has no frames")
    if num_clips > 1:
        class_logits = (probability_sum / total_frames).log()
    masks = mask_chunks[0] if len(mask_chunks) == 1 else torch.cat(mask_chunks, dim=1)
    return SeriesVideoInstanceSegmentationOutput(
        class_queries_logits=class_logits.unsqueeze(0),
        masks_queries_logits=masks.unsqueeze(0),
        query_embeddings=previous_embeddings.unsqueeze(0),
        image_sizes=image_sizes,
        padded_image_size=torch.tensor([padded_size]),
    )
