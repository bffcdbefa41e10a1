"""Video processor: pre-processing, training targets, post-processing and the YouTube-VIS results writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from hf_maskformer_series.data.youtube_vis import write_youtube_vis_results
from hf_maskformer_series.video_processing import SeriesVideoMask2FormerVideoProcessor, shortest_edge_resize_size


def _frames(count: int, height: int, width: int, value: int = 128) -> list[Image.Image]:
    return [Image.fromarray(np.full((height, width, 3), value + index, dtype=np.uint8)) for index in range(count)]


def test_detectron2_shortest_edge_sizes():
    assert shortest_edge_resize_size(720, 1280, 360, 1333) == (360, 640)
    assert shortest_edge_resize_size(1280, 720, 360, 1333) == (640, 360)
    assert shortest_edge_resize_size(100, 1000, 360, 1333) == (133, 1333)  # long side capped
    assert shortest_edge_resize_size(81, 121, 64, None) == (64, 96)  # 95.6 rounds half up


def test_preprocess_resizes_normalises_and_pads_each_video():
    processor = SeriesVideoMask2FormerVideoProcessor(size={"shortest_edge": 64, "longest_edge": 200})
    videos = [_frames(3, 48, 64), _frames(3, 64, 48, value=10)]
    inputs = processor(videos, return_tensors="pt")
    pixel_values, pixel_mask = inputs["pixel_values_videos"], inputs["pixel_mask"]
    # video 0 → 64x85, video 1 → 85x64; padded to multiples of 32 of the maxima (85 → 96)
    assert pixel_values.shape == (2, 3, 3, 96, 96)
    assert pixel_mask.shape == (2, 96, 96)
    assert pixel_mask[0].sum() == 64 * 85 and pixel_mask[0, :64, :85].all()
    assert pixel_mask[1].sum() == 85 * 64 and pixel_mask[1, :85, :64].all()
    assert (pixel_values[0, :, :, 64:] == 0).all() and (pixel_values[0, :, :, :, 85:] == 0).all()
    mean, std = torch.tensor(processor.image_mean), torch.tensor(processor.image_std)
    for frame in range(3):  # constant frames stay constant: ((value + frame) / 255 - mean) / std
        expected = ((128 + frame) / 255 - mean) / std
        assert torch.allclose(pixel_values[0, frame, :, 10, 10], expected, atol=1e-3)


def test_training_targets_are_resized_padded_and_empty_instances_dropped():
    processor = SeriesVideoMask2FormerVideoProcessor(size={"shortest_edge": 32, "longest_edge": 200})
    masks = np.zeros((3, 2, 16, 24), dtype=bool)
    masks[0, 0, :8, :12] = True  # present in frame 0 only
    masks[1, :, 8:, 12:] = True  # present in both frames
    # masks[2] empty in every frame → dropped
    inputs = processor([_frames(2, 16, 24)], instance_masks=[masks], instance_class_labels=[[4, 1, 2]],
                       return_tensors="pt")
    assert inputs["pixel_values_videos"].shape == (1, 2, 3, 32, 64)
    mask_labels, class_labels = inputs["mask_labels"][0], inputs["class_labels"][0]
    assert class_labels.tolist() == [4, 1]
    assert mask_labels.shape == (2, 2, 32, 64)
    assert mask_labels[0, 0, :16, :24].all() and mask_labels[0, 0].sum() == 16 * 24
    assert mask_labels[0, 1].sum() == 0  # absent frame stays empty
    assert mask_labels[1, :, 16:32, 24:48].all() and mask_labels[1, 0].sum() == 16 * 24
    assert mask_labels[:, :, :, 48:].sum() == 0  # padding


def test_preprocess_errors():
    processor = SeriesVideoMask2FormerVideoProcessor(size={"shortest_edge": 32})
    with pytest.raises(ValueError, match="same number of frames"):
        processor([_frames(2, 16, 16), _frames(3, 16, 16)])
    with pytest.raises(ValueError, match="instance_masks must be"):
        processor([_frames(2, 16, 16)], instance_masks=[np.zeros((1, 3, 16, 16))], instance_class_labels=[[0]])
    with pytest.raises(ValueError, match="together"):
        processor([_frames(2, 16, 16)], instance_masks=[np.zeros((1, 2, 16, 16))])


def _synthetic_outputs():
    torch.manual_seed(0)
    class_logits = torch.randn(1, 4, 4) * 3
    mask_logits = torch.randn(1, 4, 2, 8, 12)
    return {"class_queries_logits": class_logits, "masks_queries_logits": mask_logits,
            "image_sizes": torch.tensor([[28, 40]]), "padded_image_size": torch.tensor([32, 48])}


def test_post_processing_top_k_scores_and_geometry():
    outputs = _synthetic_outputs()
    processor = SeriesVideoMask2FormerVideoProcessor()
    results = processor.post_process_video_instance_segmentation(outputs, target_sizes=[(56, 80)], top_k=5)[0]
    probabilities = outputs["class_queries_logits"][0].softmax(-1)[:, :-1]
    top = probabilities.flatten().topk(5)
    assert [r["score"] for r in results] == pytest.approx(top.values.tolist())
    assert [r["label_id"] for r in results] == (top.indices % 3).tolist()
    assert [r["query_index"] for r in results] == (top.indices // 3).tolist()
    # masks: upsample to 32x48, crop 28x40, resize to 56x80, > 0
    logits = torch.nn.functional.interpolate(outputs["masks_queries_logits"][0], size=(32, 48), mode="bilinear",
                                             align_corners=False)[:, :, :28, :40]
    logits = torch.nn.functional.interpolate(logits, size=(56, 80), mode="bilinear", align_corners=False)
    for result in results:
        assert len(result["segmentations"]) == 2
        assert torch.equal(torch.stack(result["segmentations"]), logits[result["query_index"]] > 0)
    # top_k larger than queries × classes is clamped
    assert len(processor.post_process_video_instance_segmentation(outputs, top_k=100)[0]) == 12


def test_rle_output_and_youtube_vis_json(tmp_path):
    outputs = _synthetic_outputs()
    processor = SeriesVideoMask2FormerVideoProcessor()
    binary = processor.post_process_video_instance_segmentation(outputs, target_sizes=[(56, 80)], top_k=3)[0]
    rle = processor.post_process_video_instance_segmentation(outputs, target_sizes=[(56, 80)], top_k=3,
                                                             return_coco_annotation=True)[0]
    for with_masks, with_rle in zip(binary, rle):
        for frame_mask, frame_rle in zip(with_masks["segmentations"], with_rle["segmentations"]):
            decoded = mask_utils.decode({"size": frame_rle["size"], "counts": frame_rle["counts"].encode()})
            assert np.array_equal(decoded.astype(bool), frame_mask.numpy())
    path = tmp_path / "results.json"
    entries = write_youtube_vis_results(path, [binary], video_ids=[7], label_id_to_category_id={0: 5, 1: 9, 2: 11})
    assert json.loads(path.read_text()) == entries
    assert len(entries) == 3
    assert {entry["video_id"] for entry in entries} == {7}
    mapping = {0: 5, 1: 9, 2: 11}
    assert [e["category_id"] for e in entries] == [mapping[r["label_id"]] for r in binary]
    assert entries[0]["segmentations"] == rle[0]["segmentations"]
