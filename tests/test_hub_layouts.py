"""Hub dataset layouts (hf_maskformer_series.data.hub_layouts): each layout as a small generated datasets.Dataset
(no network), detected from its columns and converted to the columns of our local readers."""

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from hf_maskformer_series.data import (
    decode_instance_masks,
    detect_hub_layout,
    hub_categories,
    id_to_rgb,
    panoptic_to_segment_map,
    prepare_hub_dataset,
    read_label_map,
)

H, W = 12, 16


def _class_instance_annotation():
    """R = class (0 background, 1 person, 2 car), G = instance id; two persons, one car, a 'car' stuff-like region."""
    classes = np.zeros((H, W), dtype=np.uint8)
    instances = np.zeros((H, W), dtype=np.uint8)
    classes[0:4, 0:4], instances[0:4, 0:4] = 1, 1   # person 1
    classes[0:4, 5:9], instances[0:4, 5:9] = 1, 2   # person 2
    classes[6:10, 0:8], instances[6:10, 0:8] = 2, 1  # car 1
    classes[10:12, :] = 2                            # class 2 without instance id
    rgb = np.stack([classes, instances, np.zeros_like(classes)], -1)
    return classes, instances, Image.fromarray(rgb, mode="RGB")


def _image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8))


def _class_instance_dataset():
    classes, instances, annotation = _class_instance_annotation()
    label2id = {"background": 0, "person": 1, "car": 2}
    dataset = datasets.Dataset.from_dict(
        {"image": [_image()] * 2, "annotation": [annotation] * 2, "semantic_class_to_id": [label2id] * 2},
        features=datasets.Features({"image": datasets.Image(), "annotation": datasets.Image(),
                                    "semantic_class_to_id": {k: datasets.Value("int64") for k in label2id}}),
    )
    return dataset, classes, instances


def test_class_instance_png_layout_serves_instance_panoptic_and_semantic():
    dataset, classes, instances = _class_instance_dataset()
    assert detect_hub_layout(dataset) == "class_instance_png"
    assert hub_categories(dataset, "instance") == [{"id": 1, "name": "person", "isthing": 1},
                                                   {"id": 2, "name": "car", "isthing": 1}]

    instance = prepare_hub_dataset(dataset, "instance")
    assert set(instance.column_names) == {"image", "objects", "image_id", "height", "width", "semantic_class_to_id"}
    row = instance[1]
    assert (row["image_id"], row["height"], row["width"]) == (1, H, W)
    masks, category_ids = decode_instance_masks(row["objects"], H, W)
    assert category_ids.tolist() == [1, 1, 2]  # the instance-less class-2 region is no object
    for mask, (c, i) in zip(masks, [(1, 1), (1, 2), (2, 1)]):
        np.testing.assert_array_equal(mask, (classes == c) & (instances == i))
    assert row["objects"][2]["bbox"] == [0.0, 6.0, 8.0, 4.0] and row["objects"][2]["area"] == 32.0
    assert np.asarray(row["image"]).shape == (H, W, 3)  # the image passes through

    panoptic = prepare_hub_dataset(dataset, "panoptic")
    row = panoptic[0]
    segment_map, segment_to_category = panoptic_to_segment_map(row["panoptic_image"], row["segments_info"])
    assert sorted(segment_to_category.values()) == [1, 1, 2, 2]  # 2 persons, 1 car, the class-2 region
    assert (segment_map == 0).sum() == (classes == 0).sum()  # background is void
    for segment_id, category in segment_to_category.items():
        assert (classes[segment_map == segment_id] == category).all()

    semantic = prepare_hub_dataset(dataset, "semantic")
    np.testing.assert_array_equal(read_label_map(semantic[0]["annotation"], num_labels=2), classes)


def test_label_png_layout_is_the_semantic_reader_layout():
    labels = np.random.default_rng(1).integers(0, 4, (H, W), dtype=np.uint8)
    dataset = datasets.Dataset.from_dict({"image": [_image()], "annotation": [Image.fromarray(labels, mode="L")]},
                                         features=datasets.Features({"image": datasets.Image(),
                                                                     "annotation": datasets.Image()}))
    assert detect_hub_layout(dataset) == "label_png"
    assert prepare_hub_dataset(dataset, "semantic") is dataset
    np.testing.assert_array_equal(read_label_map(dataset[0]["annotation"]), labels)
    assert hub_categories(dataset, "semantic") is None
    with pytest.raises(ValueError, match="'label_png' layout .* cannot serve instance segmentation; it serves: "
                       "semantic"):
        prepare_hub_dataset(dataset, "instance", name="scene_parse_150")


def test_coco_panoptic_parquet_layout():
    ids = np.zeros((H, W), dtype=np.int64)
    ids[:6], ids[6:] = 7, 300
    info = [{"id": 7, "category_id": 1, "iscrowd": 0, "area": 96, "bbox": [0.0, 0.0, 16.0, 6.0]},
            {"id": 300, "category_id": 5, "iscrowd": 0, "area": 96, "bbox": [0.0, 6.0, 16.0, 6.0]}]
    dataset = datasets.Dataset.from_dict(
        {"image": [_image()], "label": [Image.fromarray(id_to_rgb(ids))], "segments_info": [info],
         "image_id": [139]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Image(),
                                    "segments_info": datasets.List({"id": datasets.Value("int64"),
                                                                    "category_id": datasets.Value("int64"),
                                                                    "iscrowd": datasets.Value("int64"),
                                                                    "area": datasets.Value("int64"),
                                                                    "bbox": datasets.List(datasets.Value("float64"))}),
                                    "image_id": datasets.Value("int64")}),
    )
    assert detect_hub_layout(dataset) == "coco_panoptic"
    prepared = prepare_hub_dataset(dataset, "panoptic")
    assert set(prepared.column_names) == {"image", "panoptic_image", "segments_info", "image_id"}
    segment_map, segment_to_category = panoptic_to_segment_map(prepared[0]["panoptic_image"],
                                                               prepared[0]["segments_info"])
    np.testing.assert_array_equal(segment_map, ids)
    assert segment_to_category == {7: 1, 300: 5}
    with pytest.raises(ValueError, match="cannot serve semantic"):
        prepare_hub_dataset(dataset, "semantic")


def test_unknown_layouts_fail_clearly():
    dataset = datasets.Dataset.from_dict({"pixel_values": [[0]], "labels": [[1]]})
    with pytest.raises(ValueError, match=r"Dataset me/data: unknown layout, columns \['pixel_values', 'labels'\]"):
        prepare_hub_dataset(dataset, "semantic", name="me/data")
    rgba = datasets.Dataset.from_dict({"image": [_image()], "annotation": [Image.new("CMYK", (W, H))]},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "annotation": datasets.Image()}))
    with pytest.raises(ValueError, match="mode CMYK"):
        detect_hub_layout(rgba)
    with pytest.raises(ValueError, match="Unknown task 'depth'"):
        prepare_hub_dataset(rgba, "depth")
    # the reader's own instance columns pass through
    objects = datasets.Dataset.from_dict({"image": [_image()], "objects": [[{"id": 1, "category_id": 1,
                                                                          "segmentation": json.dumps([])}]]})
    assert prepare_hub_dataset(objects, "instance") is objects
