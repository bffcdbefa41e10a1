"""`pipeline("image-segmentation")` on folders saved from our models, offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import hf_maskformer_series as hms
from tests._tiny_configs import tiny_mask2former_kwargs


@pytest.fixture(scope="module")
def saved_mask2former(tmp_path_factory):
    torch.manual_seed(0)
    config = hms.SeriesMask2FormerConfig(
        **tiny_mask2former_kwargs(), id2label={0: "sky", 1: "road", 2: "car", 3: "person"}
    )
    model = hms.SeriesMask2FormerForUniversalSegmentation(config).eval()
    processor = hms.SeriesMask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    folder = tmp_path_factory.mktemp("m2f_pipeline")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


def _image(height=70, width=90):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("subtask", ["panoptic", "instance", "semantic"])
def test_pipeline_subtasks(saved_mask2former, subtask):
    folder, model, processor = saved_mask2former
    segmenter = pipeline("image-segmentation", model=str(folder))
    assert isinstance(segmenter.model, hms.SeriesMask2FormerForUniversalSegmentation)
    assert isinstance(segmenter.image_processor, hms.SeriesMask2FormerImageProcessor)
    image = _image()
    kwargs = {"threshold": 0.0} if subtask != "semantic" else {}
    results = segmenter(image, subtask=subtask, **kwargs)
    assert isinstance(results, list) and results
    labels = set(model.config.id2label.values())
    for result in results:
        assert set(result) == {"score", "label", "mask"}
        assert result["label"] in labels
        assert result["mask"].size == image.size
        mask = np.array(result["mask"])
        assert set(np.unique(mask).tolist()) <= {0, 255}

    # the pipeline gives what the processor's own post-processing gives
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    if subtask == "semantic":
        expected = processor.post_process_semantic_segmentation(outputs, target_sizes=[(70, 90)])[0]
        expected_labels = {model.config.id2label[int(i)] for i in expected.unique()}
        assert {r["label"] for r in results} == expected_labels
    else:
        method = getattr(processor, f"post_process_{subtask}_segmentation")
        expected = method(outputs, threshold=0.0, target_sizes=[(70, 90)])[0]
        assert len(results) == len(expected["segments_info"])
        for result, segment in zip(results, expected["segments_info"]):
            assert result["score"] == pytest.approx(round(segment["score"], 4), abs=1e-4)
            mask = np.array(result["mask"]) > 0
            assert np.array_equal(mask, (expected["segmentation"] == segment["id"]).numpy())
