"""Video processor of the video Mask2Former: frames → `pixel_values_videos`, training targets, post-processing.

Pre-processing follows the original test mapper (`ResizeShortestEdge(360, 1333)` on every frame, the same size
for the whole video, ImageNet normalisation, zero padding bottom/right to a multiple of 32). Post-processing is
the original `inference_video`: mask logits upsampled to the padded input, cropped, resized to the original
size and thresholded at 0; the top-k (query, class) pairs by class probability (no mask score).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling, SizeDict
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor

from .post_processing import binary_mask_to_coco_rle, image_geometry, query_logits, video_instance_inference
from .target_encoding import encode_video_targets, resized_image_size
from .target_encoding import shortest_edge_resize_size as shortest_edge_resize_size  # re-exported


class SeriesVideoMask2FormerVideoProcessorKwargs(VideosKwargs, total=False):
    r"""
    size_divisor (`int`, *optional*, defaults to 32):
        The padded size of a batch is rounded up to a multiple of it.
    instance_masks (`list`, *optional*):
        Training targets: per video `[instances, frames, height, width]` binary masks at the frames' original size
        (an instance absent from a frame has an empty mask there).
    instance_class_labels (`list`, *optional*):
        Per video `[instances]` class ids, with `instance_masks`.
    return_segment_maps (`bool`, *optional*, defaults to `False`):
        Return each video's targets as one int32 `[frames, H, W]` segment map (value `j` = instance `j`, `-1` = no
        instance or padding) instead of `[instances, frames, H, W]` one-hot masks; instances must not overlap.
    """

    size_divisor: int
    instance_masks: list | None
    instance_class_labels: list | None
    return_segment_maps: bool


class SeriesVideoMask2FormerVideoProcessor(BaseVideoProcessor):
    r"""Video processor of [`SeriesVideoMask2FormerForVideoInstanceSegmentation`].

    **Pre-processing** (`__call__` / `preprocess`): each video is a list of frames (PIL images, numpy arrays or
    tensors, channels first or last) or a `[frames, H, W, 3]` / `[frames, 3, H, W]` array. Every frame of a video
    is resized to the same size (`size`: `shortest_edge` + optional `longest_edge`, rounded as detectron2; or
    `height` + `width`), rescaled, normalised and zero-padded bottom/right to the batch's largest size rounded up
    to `size_divisor`. Returns `pixel_values_videos [batch, frames, 3, H, W]` and `pixel_mask [batch, H, W]`
    (1 = real pixel). All videos of a batch must have the same number of frames.

    **Training targets**: pass `instance_masks` (per video `[instances, frames, height, width]`, the original
    frame size) and `instance_class_labels` (per video `[instances]`). The masks are resized (nearest) and padded
    like the frames; instances empty in every frame are dropped. Returned as `mask_labels` (list of
    `[instances, frames, H, W]` float; with `return_segment_maps=True` one int32 `[frames, H, W]` segment map per
    video, `-1` = no instance) and `class_labels` (list of `[instances]` int64).

    **Post-processing**: [`post_process_video_instance_segmentation`].
    """

    valid_kwargs = SeriesVideoMask2FormerVideoProcessorKwargs
    model_input_names = ["pixel_values_videos", "pixel_mask"]
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 360, "longest_edge": 1333}
    default_to_square = False
    do_resize = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = False
    size_divisor = 32

    def __init__(self, **kwargs: Unpack[SeriesVideoMask2FormerVideoProcessorKwargs]) -> None:
        super().__init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        for key in ("instance_masks", "instance_class_labels", "return_segment_maps"):
            output.pop(key, None)
        return output

    # ------------------------------------------------------------------------------------------------------------
    # Pre-processing
    # ------------------------------------------------------------------------------------------------------------

    def _preprocess(
        self,
        videos: list[torch.Tensor],
        do_resize: bool,
        size: SizeDict,
        resample: Any,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Any,
        image_std: Any,
        size_divisor: int | None = None,
        instance_masks: list | None = None,
        instance_class_labels: list | None = None,
        return_segment_maps: bool | None = False,
        return_tensors: Any = None,
        **kwargs,
    ) -> BatchFeature:
        if (instance_masks is None) != (instance_class_labels is None):
            raise ValueError("instance_masks and instance_class_labels must be given together")
        if instance_masks is not None and (len(instance_masks) != len(videos) or len(instance_class_labels) != len(videos)):
            raise ValueError(
                f"got {len(instance_masks)} instance_masks and {len(instance_class_labels)} instance_class_labels "
                f"for {len(videos)} videos"
            )
        num_frames = {video.shape[0] for video in videos}
        if len(num_frames) != 1:
            raise ValueError(f"all videos of a batch must have the same number of frames, got {sorted(num_frames)}")
        processed, sizes = [], []
        for video in videos:
            if video.shape[1] != 3:
                raise ValueError(f"frames must have 3 (RGB) channels, got a video of shape {tuple(video.shape)}")
            if do_resize:
                new_size = resized_image_size(video.shape[-2], video.shape[-1], size, detectron2=True)
                if new_size != tuple(video.shape[-2:]):
                    video = self.resize(video, SizeDict(height=new_size[0], width=new_size[1]), resample=resample)
            video = self.rescale_and_normalize(video, do_rescale, rescale_factor, do_normalize, image_mean, image_std)
            processed.append(video)
            sizes.append(tuple(video.shape[-2:]))
        divisor = int(size_divisor or 1)
        padded_height = -(-max(height for height, _ in sizes) // divisor) * divisor
        padded_width = -(-max(width for _, width in sizes) // divisor) * divisor
        pixel_values = processed[0].new_zeros(len(processed), processed[0].shape[0], 3, padded_height, padded_width)
        pixel_mask = torch.zeros(len(processed), padded_height, padded_width, dtype=torch.int64)
        for index, (video, (height, width)) in enumerate(zip(processed, sizes)):
            pixel_values[index, :, :, :height, :width] = video
            pixel_mask[index, :height, :width] = 1
        data = {"pixel_values_videos": pixel_values, "pixel_mask": pixel_mask}
        if instance_masks is not None:
            targets = [
                encode_video_targets(masks, labels, new_size, (padded_height, padded_width), video.shape[0],
                                     tuple(video.shape[-2:]), bool(return_segment_maps), name=f"video {index}")
                for index, (masks, labels, video, new_size) in enumerate(
                    zip(instance_masks, instance_class_labels, videos, sizes)
                )
            ]
            data["mask_labels"] = [mask_labels for mask_labels, _ in targets]
            data["class_labels"] = [class_labels for _, class_labels in targets]
        encoded = BatchFeature(data={key: data[key] for key in ("pixel_values_videos", "pixel_mask")},
                               tensor_type=return_tensors)
        for key in ("mask_labels", "class_labels"):
            if key in data:
                encoded[key] = data[key]
        return encoded

    # ------------------------------------------------------------------------------------------------------------
    # Post-processing
    # ------------------------------------------------------------------------------------------------------------

    def post_process_video_instance_segmentation(
        self,
        outputs: Any,
        target_sizes: Sequence[tuple[int, int]] | torch.Tensor | None = None,
        top_k: int = 10,
        return_coco_annotation: bool = False,
        image_sizes: Sequence[tuple[int, int]] | torch.Tensor | None = None,
        padded_image_size: tuple[int, int] | torch.Tensor | None = None,
        mask_threshold: float = 0.5,
    ) -> list[list[dict[str, Any]]]:
        """The original `inference_video` for every video of the batch (`post_processing.video_instance_inference`).

        Args:
            outputs: the model's output, a ModelOutput or a plain dict (torch tensors or numpy arrays):
                `class_queries_logits [batch, queries, K + 1]`, `masks_queries_logits [batch, queries, frames, h,
                w]`, and the input geometry `image_sizes [batch, 2]` / `padded_image_size` (`[batch, 2]` or `[2]`).
            target_sizes: per video the output `(height, width)` (the original frame size); `None` keeps the
                un-padded input size.
            top_k: (query, class) pairs kept per video (10 in the original), clamped to `queries × K`.
            return_coco_annotation: segmentations as COCO RLE dicts instead of bool tensors.
            image_sizes, padded_image_size: override the geometry the model reports (the un-padded `(h, w)` of
                each video inside the padded input, and the padded input size).
            mask_threshold: mask probability threshold, in (0, 1) (strict; 0.5 = the original's logit > 0).

        Returns:
            Per video, a list (by decreasing score) of `{"score": float, "label_id": int, "query_index": int,
            "segmentations": [frames × (bool [height, width] tensor or RLE dict)]}`.
        """
        if not 0.0 < float(mask_threshold) < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {mask_threshold}")
        class_logits, mask_logits = query_logits(outputs, spatial_dims=3)
        geometry = image_geometry(
            outputs, class_logits.shape[0], mask_logits.shape[-2:], target_sizes, image_sizes=image_sizes,
            padded_image_size=padded_image_size, mask_stride=1,
        )
        results = []
        for index, video in enumerate(geometry):
            found = video_instance_inference(class_logits[index], mask_logits[index], top_k, mask_threshold, video)
            video_results = []
            for score, label, query, tube in zip(
                found["scores"].tolist(), found["labels"].tolist(), found["query_indices"].tolist(), found["masks"]
            ):
                frames = [binary_mask_to_coco_rle(frame) for frame in tube] if return_coco_annotation else list(tube)
                video_results.append(
                    {"score": score, "label_id": int(label), "query_index": int(query), "segmentations": frames}
                )
            results.append(video_results)
        return results

