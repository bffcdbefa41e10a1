"""`pipeline("video-instance-segmentation")` with a tiny video Mask2Former."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import hf_maskformer_series as hms
from tests._tiny_configs import tiny_mask2former_kwargs

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    torch.manual_seed(0)
    config = hms.SeriesVideoMask2FormerConfig(
        **tiny_mask2former_kwargs(), id2label={0: "cat", 1: "dog", 2: "car", 3: "tree"}
    )
    model = hms.SeriesVideoMask2FormerForVideoInstanceSegmentation(config).eval()
    processor = hms.SeriesVideoMask2FormerVideoProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    folder = tmp_path_factory.mktemp("video_model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 255, (45, 60, 3), dtype=np.uint8)) for _ in range(4)]
    return model, processor, folder, frames


def test_pipeline_returns_tracks_matching_the_processor(parts):
    model, processor, _, frames = parts
    segmenter = pipeline("video-instance-segmentation", model=model, video_processor=processor)
    tracks = segmenter(frames)
    assert len(tracks) == 10
    with torch.no_grad():
        outputs = model(**processor([frames], return_tensors="pt"))
    expected = processor.post_process_video_instance_segmentation(outputs, target_sizes=[(45, 60)])[0]
    assert [t["score"] for t in tracks] == pytest.approx([e["score"] for e in expected])
    assert [t["label"] for t in tracks] == [model.config.id2label[e["label_id"]] for e in expected]
    for track, reference in zip(tracks, expected):
        assert len(track["masks"]) == 4
        assert track["masks"][0].size == (60, 45) and track["masks"][0].mode == "L"
        for mask, frame_mask in zip(track["masks"], reference["segmentations"]):
            assert np.array_equal(np.asarray(mask) > 0, frame_mask.numpy())


def test_pipeline_from_a_folder_with_window_top_k_and_threshold(parts):
    model, processor, folder, frames = parts
    segmenter = pipeline("video-instance-segmentation", model=str(folder))
    assert isinstance(segmenter.model, hms.SeriesVideoMask2FormerForVideoInstanceSegmentation)
    assert isinstance(segmenter.video_processor, hms.SeriesVideoMask2FormerVideoProcessor)
    one_pass = segmenter(frames, window=4, top_k=3)
    assert len(one_pass) == 3
    assert one_pass[0]["score"] >= one_pass[1]["score"] >= one_pass[2]["score"]
    windowed = segmenter(frames, window=2, top_k=5)
    assert len(windowed) == 5 and all(len(track["masks"]) == 4 for track in windowed)
    kept = segmenter(frames, threshold=one_pass[1]["score"])
    assert [t["score"] for t in kept] == pytest.approx([t["score"] for t in one_pass[:2]])
    arrays = segmenter([np.asarray(frame) for frame in frames], window=4, top_k=3)
    assert [t["score"] for t in arrays] == pytest.approx([t["score"] for t in one_pass])


def test_pipeline_input_errors(parts):
    model, processor, _, frames = parts
    segmenter = pipeline("video-instance-segmentation", model=model, video_processor=processor)
    with pytest.raises(ValueError, match="no frames"):
        segmenter([])
    with pytest.raises(ValueError, match="same (\\(padded\\) )?size"):
        segmenter(frames[:2] + [frames[0].resize((30, 30))], window=1)


def test_video_file_input(parts, tmp_path):
    model, processor, _, frames = parts
    segmenter = pipeline("video-instance-segmentation", model=model, video_processor=processor)
    try:
        import av
    except ImportError:
        # PyAV is not installed here: a file path fails at once with a clear message
        with pytest.raises(ImportError, match="PyAV"):
            segmenter(str(tmp_path / "clip.mp4"))
        pytest.skip("PyAV is not installed: decoding a real file is not tested here")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_image(frame.resize((64, 48)))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tracks = segmenter(str(path), window=2, top_k=3)
    assert len(tracks) == 3 and len(tracks[0]["masks"]) == len(frames)
    assert tracks[0]["masks"][0].size == (64, 48)
