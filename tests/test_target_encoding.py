"""The label contract (`target_encoding`): the lean segment-map form holds exactly the one-hot targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_maskformer_series.image_processing import SeriesMask2FormerImageProcessor, SeriesMaskFormerImageProcessor
from hf_maskformer_series.target_encoding import (
    NO_TARGET,
    encode_segmentation_targets,
    encode_video_targets,
    resized_image_size,
    segment_map_to_one_hot,
)
from hf_maskformer_series.video_processing import SeriesVideoMask2FormerVideoProcessor


def _assert_same_targets(one_hot, segment_map, labels_one_hot, labels_map):
    assert segment_map.dtype == torch.int32
    assert torch.equal(labels_one_hot, labels_map)
    assert int(segment_map.min()) >= NO_TARGET and int(segment_map.max()) < max(len(labels_map), 1)
    assert torch.equal(segment_map_to_one_hot(segment_map, len(labels_map)), one_hot)
    # a pixel without a target is -1 exactly where no one-hot mask covers it
    assert torch.equal(segment_map == NO_TARGET, one_hot.sum(0) == 0)


ENCODING_CASES = [
    dict(),
    dict(ignore_index=3),
    dict(ignore_index=255, do_reduce_labels=True),
    dict(instance_id_to_semantic_id={i: (i * 7) % 5 for i in range(6)}),
    dict(instance_id_to_semantic_id={i: i % 5 + 1 for i in range(7)}, ignore_index=255, do_reduce_labels=True),
    dict(segments_info=[{"id": i, "category_id": i % 4, "iscrowd": int(i == 2)} for i in range(1, 6)]),
    dict(segments_info=[{"id": i, "category_id": i % 4} for i in range(1, 6)], ignore_index=0),
]


@pytest.mark.parametrize("kwargs", ENCODING_CASES)
def test_segment_map_form_equals_one_hot(kwargs):
    label_map = torch.as_tensor(np.random.default_rng(0).integers(0, 6, (37, 53)))
    masks, labels = encode_segmentation_targets(label_map, **kwargs)
    segment_map, map_labels = encode_segmentation_targets(label_map, **kwargs, return_segment_map=True)
    assert masks.shape[0] > 0
    _assert_same_targets(masks, segment_map, labels, map_labels)


def test_segment_map_of_large_panoptic_ids_and_many_classes():
    rgb_ids = torch.tensor([[0, 5 * 256**2 + 3, 70000], [70000, 5 * 256**2 + 3, 0]])  # ids beyond the lookup table
    segments = [{"id": 5 * 256**2 + 3, "category_id": 1}, {"id": 70000, "category_id": 2}]
    masks, labels = encode_segmentation_targets(rgb_ids, segments_info=segments)
    segment_map, map_labels = encode_segmentation_targets(rgb_ids, segments_info=segments, return_segment_map=True)
    _assert_same_targets(masks, segment_map, labels, map_labels)
    assert segment_map.tolist() == [[-1, 1, 0], [0, 1, -1]]
    label_map = torch.randint(0, 150, (256, 256), generator=torch.Generator().manual_seed(0))
    segment_map, labels = encode_segmentation_targets(label_map, return_segment_map=True)
    assert torch.equal(labels, torch.arange(150)) and torch.equal(segment_map.long(), label_map)


@pytest.mark.parametrize("processor_class", [SeriesMask2FormerImageProcessor, SeriesMaskFormerImageProcessor])
def test_processor_segment_maps_are_the_one_hot_targets_resized_and_padded(processor_class):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(45, 61), (70, 33)]]
    maps = [rng.integers(0, 6, image.shape[:2], dtype=np.uint8) for image in images]
    processor = processor_class(size={"shortest_edge": 50, "longest_edge": 70}, ignore_index=255,
                                do_reduce_labels=True, num_labels=5)
    one_hot = processor(images, segmentation_maps=maps, return_tensors="pt")
    lean = processor(images, segmentation_maps=maps, return_tensors="pt", return_segment_maps=True)
    assert torch.equal(one_hot["pixel_values"], lean["pixel_values"])
    for masks, segment_map, labels, map_labels in zip(one_hot["mask_labels"], lean["mask_labels"],
                                                       one_hot["class_labels"], lean["class_labels"]):
        assert segment_map.shape == masks.shape[1:] == one_hot["pixel_values"].shape[-2:]
        _assert_same_targets(masks, segment_map, labels, map_labels)
    for segment_map, pixel_mask in zip(lean["mask_labels"], lean["pixel_mask"]):
        assert bool((segment_map[pixel_mask == 0] == NO_TARGET).all())  # the padding carries no target
        assert bool((pixel_mask == 0).any())
    assert "return_segment_maps" not in processor.to_dict()


def test_video_segment_maps_equal_the_one_hot_targets():
    masks = np.zeros((4, 2, 16, 24), dtype=bool)
    masks[0, 0, :8, :12] = True  # frame 0 only
    masks[1, :, 8:, 12:] = True
    masks[3, 1, :3, 20:] = True  # instance 2 is empty everywhere and dropped
    frames = [np.full((16, 24, 3), 100, dtype=np.uint8)] * 2
    processor = SeriesVideoMask2FormerVideoProcessor(size={"shortest_edge": 32, "longest_edge": 200})
    one_hot = processor([frames], instance_masks=[masks], instance_class_labels=[[4, 1, 2, 0]], return_tensors="pt")
    lean = processor([frames], instance_masks=[masks], instance_class_labels=[[4, 1, 2, 0]], return_tensors="pt",
                     return_segment_maps=True)
    assert lean["class_labels"][0].tolist() == [4, 1, 0]
    assert lean["mask_labels"][0].shape == (2, 32, 64)
    _assert_same_targets(one_hot["mask_labels"][0], lean["mask_labels"][0], one_hot["class_labels"][0],
                         lean["class_labels"][0])
    assert "return_segment_maps" not in processor.to_dict()


def test_video_segment_maps_refuse_overlapping_instances():
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    masks[:, 0, 1, 1] = True
    with pytest.raises(ValueError, match="video 0: instance masks overlap"):
        encode_video_targets(masks, [0, 1], (4, 4), (4, 4), 1, (4, 4), return_segment_map=True, name="video 0")
    segment_map, labels = encode_video_targets(masks[:0], [], (8, 8), (8, 8), 1, (4, 4), return_segment_map=True)
    assert labels.numel() == 0 and bool((segment_map == NO_TARGET).all())


def test_resize_rule_of_both_processors():
    from transformers.image_utils import SizeDict

    size = SizeDict(shortest_edge=360, longest_edge=1333)
    assert resized_image_size(720, 1280, size, detectron2=True) == (360, 640)
    assert resized_image_size(81, 121, SizeDict(shortest_edge=64), detectron2=True) == (64, 96)  # half up
    assert resized_image_size(81, 121, SizeDict(shortest_edge=64)) == (64, 95)  # transformers truncates
    assert resized_image_size(45, 61, SizeDict(shortest_edge=50, longest_edge=70), 32, snap=True) == (64, 96)
    with pytest.raises(ValueError, match="`size` must hold"):
        resized_image_size(10, 10, SizeDict(max_height=5, max_width=5), detectron2=True)
