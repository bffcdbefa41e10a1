"""Windowed inference: equals one pass when the window covers the video, associates queries across clips,
and keeps peak memory bounded by the window on a 200-frame video."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch
from PIL import Image

import hf_maskformer_series as hms
from hf_maskformer_series.video_tracking import associate_queries
from tests._tiny_configs import tiny_mask2former_kwargs

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = hms.SeriesVideoMask2FormerConfig(**tiny_mask2former_kwargs())
    return hms.SeriesVideoMask2FormerForVideoInstanceSegmentation(config).eval()


def test_associate_queries_recovers_a_permutation():
    torch.manual_seed(1)
    previous = torch.randn(8, 16)
    permutation = torch.randperm(8)
    current = previous[permutation] * 3.0 + 0.01 * torch.randn(8, 16)  # cosine similarity ignores the scale
    order = associate_queries(previous, current)
    assert torch.equal(current[order].argmax(-1), previous.argmax(-1))
    assert torch.equal(permutation[order], torch.arange(8))


@pytest.mark.parametrize("window", [5, 50])
def test_window_covering_the_video_equals_one_pass(model, window):
    torch.manual_seed(2)
    video = torch.randn(1, 5, 3, 64, 96)
    pixel_mask = torch.zeros(1, 64, 96, dtype=torch.long)
    pixel_mask[:, :60, :90] = 1
    with torch.no_grad():
        one_pass = model(video, pixel_mask=pixel_mask)
    windowed = hms.windowed_video_inference(model, video, window=window, pixel_mask=pixel_mask)
    assert torch.equal(windowed.class_queries_logits, one_pass.class_queries_logits)
    assert torch.equal(windowed.masks_queries_logits, one_pass.masks_queries_logits)
    assert windowed.image_sizes.tolist() == [[60, 90]]
    processor = hms.SeriesVideoMask2FormerVideoProcessor()
    expected = processor.post_process_video_instance_segmentation(one_pass, target_sizes=[(30, 45)])
    actual = processor.post_process_video_instance_segmentation(windowed, target_sizes=[(30, 45)])
    assert [(r["score"], r["label_id"]) for r in actual[0]] == [(r["score"], r["label_id"]) for r in expected[0]]
    for a, e in zip(actual[0], expected[0]):
        assert all(torch.equal(x, y) for x, y in zip(a["segmentations"], e["segmentations"]))


def test_raw_frames_are_processed_clip_by_clip(model):
    rng = np.random.default_rng(3)
    frames = [Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)) for _ in range(4)]
    processor = hms.SeriesVideoMask2FormerVideoProcessor(size={"shortest_edge": 64, "longest_edge": 200})
    inputs = processor([frames], return_tensors="pt")
    with torch.no_grad():
        one_pass = model(**inputs)
    windowed = hms.windowed_video_inference(model, iter(frames), window=4, video_processor=processor)
    assert torch.equal(windowed.masks_queries_logits, one_pass.masks_queries_logits)
    clipped = hms.windowed_video_inference(model, iter(frames), window=3, video_processor=processor)
    assert clipped.masks_queries_logits.shape == one_pass.masks_queries_logits.shape  # 3 + 1 frames


class _PermutingModel(torch.nn.Module):
    """Wraps a model and permutes its queries differently on every call (as clips would in practice)."""

    def __init__(self, inner, permutations):
        super().__init__()
        self.inner, self.permutations, self.calls = inner, permutations, 0

    def forward(self, pixel_values_videos, **kwargs):
        outputs = self.inner(pixel_values_videos, **kwargs)
        permutation = self.permutations[self.calls]
        self.calls += 1
        for name in ("class_queries_logits", "masks_queries_logits", "query_embeddings"):
            outputs[name] = outputs[name][:, permutation]
        return outputs


def test_queries_are_associated_across_clips(model):
    """A video made of the same clip twice, with the queries of the second clip shuffled: the tracks must be
    re-assembled, so the second half of every track equals its first half and the class probabilities are those
    of the clip."""
    torch.manual_seed(4)
    clip = torch.randn(1, 3, 3, 64, 64)
    video = torch.cat([clip, clip], dim=1)
    wrapped = _PermutingModel(model, [torch.arange(6), torch.tensor([3, 0, 5, 1, 4, 2])])
    windowed = hms.windowed_video_inference(wrapped, video, window=3)
    with torch.no_grad():
        reference = model(clip)
    masks = windowed.masks_queries_logits
    assert masks.shape == (1, 6, 6, 16, 16)
    assert torch.allclose(masks[:, :, :3], reference.masks_queries_logits, atol=1e-6)
    assert torch.allclose(masks[:, :, 3:], reference.masks_queries_logits, atol=1e-6)
    assert torch.allclose(windowed.class_queries_logits.softmax(-1), reference.class_queries_logits.softmax(-1),
                          atol=1e-6)


def _rss_kib(key: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1])
    raise RuntimeError(key)


def _peak_rss_increase_mib(function) -> float:
    """Peak resident memory added while `function` runs (Linux: VmHWM reset through /proc/self/clear_refs)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = _rss_kib("VmRSS:")
    function()
    return (_rss_kib("VmHWM:") - before) / 1024


def _can_measure_peak_memory() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        _rss_kib("VmHWM:")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_measure_peak_memory(), reason="needs Linux /proc peak-RSS reset")
def test_200_frame_video_runs_in_the_memory_of_a_short_one(model):
    torch.manual_seed(5)
    video = torch.randn(1, 200, 3, 32, 48)
    window = 10
    hms.windowed_video_inference(model, video[:, :window], window=window)  # warm-up (allocator, caches)
    long_windowed = _peak_rss_increase_mib(lambda: hms.windowed_video_inference(model, video, window=window))
    short_windowed = _peak_rss_increase_mib(lambda: hms.windowed_video_inference(model, video[:, :20], window=window))
    with torch.no_grad():
        one_pass = _peak_rss_increase_mib(lambda: model(video))
    result = hms.windowed_video_inference(model, video, window=window)
    assert result.masks_queries_logits.shape == (1, 6, 200, 8, 12)
    stored_mib = result.masks_queries_logits.numel() * 4 / 2**20  # the result itself (0.44 MiB)
    print(f"peak RSS increase: one pass {one_pass:.1f} MiB, windowed 200 frames {long_windowed:.1f} MiB, "
          f"windowed 20 frames {short_windowed:.1f} MiB")
    # the original's one pass over the same video needs many times more
    assert one_pass > 5 * long_windowed
    # the 200-frame windowed run needs what a 20-frame one needs, plus its result and allocator noise
    assert long_windowed <= short_windowed + stored_mib + 3.0
