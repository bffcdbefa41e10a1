"""`pipeline("video-instance-segmentation")`: frames (or a video file) → per-instance tracks with per-frame masks.

Registered with transformers' `PIPELINE_REGISTRY` when the package is imported. Example::

    segmenter = pipeline("video-instance-segmentation", model=model, video_processor=processor)
    tracks = segmenter(frames, window=30)   # frames: list of PIL images / arrays, or a path to a video file
    tracks[0] == {"score": 0.93, "label": "person", "label_id": 0, "masks": [T PIL "L" images, 255 = instance]}

Without `window` the whole video runs in one pass, as the original; with `window` it runs clip by clip
(`video_tracking.windowed_video_inference`), so long videos fit in memory. Video files are read with PyAV
(`pip install av`), frame by frame.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForUniversalSegmentation, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .video_tracking import windowed_video_inference

TASK = "video-instance-segmentation"


def read_video_frames(path: str | os.PathLike) -> Iterator[Image.Image]:
    """Decode a video file frame by frame (RGB PIL images) with PyAV; frames are decoded as they are consumed.

    Raises:
        ImportError: PyAV is not installed (checked at once, not on the first frame).
        FileNotFoundError: no such file.
    """
    try:
        import av
    except ImportError as error:
        raise ImportError(
            "reading a video file needs PyAV (`pip install av`); or pass the frames as a list of images/arrays"
        ) from error
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no video file at {path}")

    def frames() -> Iterator[Image.Image]:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield frame.to_image().convert("RGB")

    return frames()


def _as_rgb_frame(frame: Any, index: int) -> Any:
    """One frame as 3-channel RGB, converted as the image pipeline converts images.

    PIL images of any mode go through `convert("RGB")` (gray is repeated, alpha dropped); arrays/tensors may be
    `[H, W]` (gray), `[H, W, C]` or `[C, H, W]` with C = 1 (gray), 3 or 4 (RGBA: alpha dropped).
    """
    if isinstance(frame, Image.Image):
        return frame if frame.mode == "RGB" else frame.convert("RGB")
    array = frame if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"frame {index}: a frame must be [H, W], [H, W, C] or [C, H, W], got shape {tuple(array.shape)}")
    channels_last = array.shape[-1] in (1, 3, 4)
    if not channels_last and array.shape[0] not in (1, 3, 4):
        raise ValueError(f"frame {index}: expected 1 (gray), 3 (RGB) or 4 (RGBA) channels, got shape {tuple(array.shape)}")
    if not channels_last:
        array = array.permute(1, 2, 0) if isinstance(array, torch.Tensor) else array.transpose(1, 2, 0)
    if array.shape[-1] == 1:
        array = array.repeat(1, 1, 3) if isinstance(array, torch.Tensor) else np.repeat(array, 3, axis=-1)
    return array[..., :3]


def _frame_size(frame: Any) -> tuple[int, int]:
    """`(height, width)` of a frame from `_as_rgb_frame` (PIL or channels-last)."""
    if isinstance(frame, Image.Image):
        return frame.height, frame.width
    return int(frame.shape[0]), int(frame.shape[1])


def _is_frame(item: Any) -> bool:
    return isinstance(item, Image.Image) or (isinstance(item, np.ndarray | torch.Tensor) and item.ndim in (2, 3))


def _is_single_video(video: Any) -> bool:
    if isinstance(video, str | os.PathLike):
        return True
    if isinstance(video, np.ndarray | torch.Tensor):
        return video.ndim in (3, 4)  # [frames, H, W] (gray) or [frames, H, W, C] / [frames, C, H, W]
    return isinstance(video, list | tuple) and (len(video) == 0 or _is_frame(video[0]))


class _Video:
    """One video, wrapped so that the pipeline does not take its list of frames for a batch."""

    def __init__(self, content: Any):
        self.content = content


class VideoInstanceSegmentationPipeline(Pipeline):
    """Video instance segmentation with a video Mask2Former.

    Call with a list of frames (PIL images of any mode, `[H, W]` / `[H, W, C]` / `[C, H, W]` arrays or tensors
    with 1, 3 or 4 channels: gray and RGBA frames are converted to RGB as the image pipeline does; all frames of
    the same size) or a video file path. The inputs follow the model's dtype (e.g. a bfloat16 model). Parameters:
    `window` (frames per clip for long videos; default: the whole video at once), `top_k` (tracks kept, 10 as the
    original), `threshold` (minimum score, default 0), `mask_threshold` (binarisation of the mask probability,
    0.5 = the original's logit > 0).

    Returns a list of tracks by decreasing score: `{"score", "label", "label_id", "masks": [one PIL "L" image per
    frame, 255 inside the instance]}`.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = True

    def _sanitize_parameters(self, window=None, top_k=None, threshold=None, mask_threshold=None, **kwargs):
        forward = {"window": window} if window is not None else {}
        postprocess = {}
        if top_k is not None:
            postprocess["top_k"] = top_k
        if threshold is not None:
            postprocess["threshold"] = threshold
        if mask_threshold is not None:
            postprocess["mask_threshold"] = mask_threshold
        return {}, forward, postprocess

    def __call__(self, video, **kwargs):
        """Segment one video (a list of frames, a `[frames, H, W, 3]` array or a file path), or a list of videos
        (then a list of results); see the class docstring."""
        if _is_single_video(video):
            return super().__call__(_Video(video), **kwargs)
        if isinstance(video, list | tuple) and all(_is_single_video(item) for item in video):
            return super().__call__([_Video(item) for item in video], **kwargs)
        raise ValueError(
            f"a video must be a list of frames, a [frames, H, W, 3] array or a file path, got {type(video).__name__}"
        )

    def preprocess(self, video: _Video) -> dict[str, Any]:
        video = video.content
        if isinstance(video, str | os.PathLike):
            frames: Any = read_video_frames(video)
        elif isinstance(video, list | tuple):
            if not video:
                raise ValueError("the video has no frames")
            frames = list(video)
        elif isinstance(video, np.ndarray | torch.Tensor) and video.ndim in (3, 4):
            frames = list(video)
        else:
            raise ValueError(
                f"a video must be a list of frames, a [frames, H, W, 3] array or a file path, got {type(video).__name__}"
            )
        return {"frames": frames}

    def _forward(self, model_inputs: dict[str, Any], window: int | None = None) -> dict[str, Any]:
        frames = model_inputs["frames"]
        sizes: list[tuple[int, int]] = []

        def checked(iterable):
            """RGB frames, the size of each checked against the first before it reaches the processor."""
            for index, frame in enumerate(iterable):
                frame = _as_rgb_frame(frame, index)
                sizes.append(_frame_size(frame))
                if sizes[-1] != sizes[0]:
                    raise ValueError(
                        f"all frames of a video must have the same size: frame 0 is {sizes[0][0]}x{sizes[0][1]}, "
                        f"frame {index} is {sizes[-1][0]}x{sizes[-1][1]} (height x width)"
                    )
                yield frame

        if window is None:
            frames = list(checked(frames))
            inputs = self.video_processor([frames], return_tensors="pt")
            dtype = self.model.dtype
            inputs = {
                key: value.to(self.device, dtype=dtype) if value.is_floating_point() else value.to(self.device)
                for key, value in inputs.items()
            }
            outputs = self.model(**inputs, output_auxiliary_logits=False)
        else:
            outputs = windowed_video_inference(
                self.model, checked(frames), window, video_processor=self.video_processor
            )
        return {"outputs": outputs, "original_size": sizes[0]}

    def postprocess(self, model_outputs: dict[str, Any], top_k: int | None = None, threshold: float = 0.0,
                    mask_threshold: float = 0.5) -> list[dict[str, Any]]:
        top_k = top_k if top_k is not None else getattr(self.model.config, "test_top_k", 10)
        results = self.video_processor.post_process_video_instance_segmentation(
            model_outputs["outputs"], target_sizes=[model_outputs["original_size"]], top_k=top_k,
            mask_threshold=mask_threshold,
        )[0]
        id2label = getattr(self.model.config, "id2label", {}) or {}
        tracks = []
        for item in results:
            if item["score"] < threshold:
                continue
            tracks.append(
                {
                    "score": item["score"],
                    "label": id2label.get(item["label_id"], str(item["label_id"])),
                    "label_id": item["label_id"],
                    "masks": [Image.fromarray(frame.numpy().astype(np.uint8) * 255)
                              for frame in item["segmentations"]],
                }
            )
        return tracks


def register_video_pipeline() -> None:
    """Register `video-instance-segmentation` with transformers' pipeline registry (idempotent)."""
    if TASK in PIPELINE_REGISTRY.supported_tasks and (
        PIPELINE_REGISTRY.supported_tasks[TASK].get("impl") is VideoInstanceSegmentationPipeline
    ):
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=VideoInstanceSegmentationPipeline, pt_model=AutoModelForUniversalSegmentation,
        type="video",
    )
