"""Video pipeline and windowed inference beyond the defaults: model dtype, gray/RGBA/2-D frames, mixed sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import hf_maskformer_series as hms
from hf_maskformer_series.video_tracking import windowed_video_inference
from tests._tiny_configs import tiny_mask2former_kwargs


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    torch.manual_seed(0)
    config = hms.SeriesVideoMask2FormerConfig(**tiny_mask2former_kwargs(), id2label={0: "a", 1: "b", 2: "c", 3: "d"})
    model = hms.SeriesVideoMask2FormerForVideoInstanceSegmentation(config).eval()
    processor = hms.SeriesVideoMask2FormerVideoProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 255, (45, 60, 3), dtype=np.uint8) for _ in range(3)]
    folder = tmp_path_factory.mktemp("video_dtype")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor, frames, folder


def _scores(tracks):
    return [track["score"] for track in tracks]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_pipeline_and_windowed_inference_follow_the_model_dtype(parts, dtype):
    model, processor, frames, folder = parts
    reference = pipeline("video-instance-segmentation", model=model, video_processor=processor)(frames, top_k=3)
    low = pipeline("video-instance-segmentation", model=str(folder), dtype=dtype)
    assert low.model.dtype == dtype
    for window in (None, 2):
        tracks = low(frames, top_k=3, window=window)
        assert len(tracks) == 3 and all(len(track["masks"]) == 3 for track in tracks)
        assert _scores(tracks) == pytest.approx(_scores(reference), abs=0.05)
    inputs = processor([frames], return_tensors="pt")
    outputs = windowed_video_inference(low.model, inputs["pixel_values_videos"], 2, inputs["pixel_mask"])
    assert outputs.masks_queries_logits.shape[2] == 3 and torch.isfinite(outputs.masks_queries_logits).all()
    assert tuple(outputs.padded_image_size.shape) == (1, 2)


def test_gray_rgba_and_2d_frames_are_converted_like_the_image_pipeline(parts):
    model, processor, frames, _ = parts
    segmenter = pipeline("video-instance-segmentation", model=model, video_processor=processor)
    gray = [frame.mean(-1).astype(np.uint8) for frame in frames]  # 2-D arrays
    gray_rgb = [np.repeat(frame[..., None], 3, axis=-1) for frame in gray]
    expected = segmenter(gray_rgb, top_k=3)
    for variant in (
        gray,
        [frame[..., None] for frame in gray],  # [H, W, 1]
        [Image.fromarray(frame, mode="L") for frame in gray],
        np.stack(gray),  # one [frames, H, W] array
        [torch.from_numpy(frame)[None] for frame in gray],  # [1, H, W] tensors
    ):
        assert _scores(segmenter(variant, top_k=3)) == pytest.approx(_scores(expected))
    rgba = [np.concatenate([frame, np.full((*frame.shape[:2], 1), 7, np.uint8)], axis=-1) for frame in frames]
    expected = segmenter(frames, top_k=3)
    for variant in (rgba, [Image.fromarray(frame, mode="RGBA") for frame in rgba],
                    [frame.transpose(2, 0, 1) for frame in rgba]):
        assert _scores(segmenter(variant, top_k=3)) == pytest.approx(_scores(expected))


@pytest.mark.parametrize("window", [None, 2])
def test_mixed_frame_sizes_are_named_before_the_processor(parts, window):
    model, processor, frames, _ = parts
    segmenter = pipeline("video-instance-segmentation", model=model, video_processor=processor)
    mixed = frames[:2] + [frames[0][:40]]
    with pytest.raises(ValueError, match=r"same size: frame 0 is 45x60, frame 2 is 40x60"):
        segmenter(mixed, window=window)
    with pytest.raises(ValueError, match=r"frame 1: expected 1 \(gray\), 3 \(RGB\) or 4 \(RGBA\) channels"):
        segmenter([frames[0], np.zeros((45, 60, 5), np.uint8)])
    with pytest.raises(ValueError, match=r"mask_threshold must be in \(0, 1\)"):
        segmenter(frames, mask_threshold=1.0)
