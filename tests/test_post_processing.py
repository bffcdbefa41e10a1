"""The tensor-level post-processing against the original implementation's results (tests/fixtures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_maskformer_series.post_processing import (
    binary_mask_to_coco_rle,
    crop_and_resize_masks,
    instance_inference,
    mask_logit_threshold,
    panoptic_inference,
    semantic_inference,
    upsample_crop_resize,
    upsample_masks,
)
from tests._processing_helpers import (
    IMAGE_FIXTURES,
    SCORE_ATOL,
    STUFF_IDS,
    assert_instances_match,
    assert_segments_match,
    load_postprocess,
    model_cases,
    setting_arguments,
    synthetic_cases,
)


def all_cases(name: str) -> list[dict]:
    return model_cases(name) + synthetic_cases(name)


@pytest.mark.parametrize("name", IMAGE_FIXTURES)
def test_semantic_inference_matches_original(name):
    checked = 0
    for case in all_cases(name):
        for reference in case["references"].values():
            if "sem_seg" not in reference:
                continue
            ours = semantic_inference(case["mask_cls"], case["mask_pred"])
            assert ours.shape == reference["sem_seg"].shape
            torch.testing.assert_close(ours, reference["sem_seg"], atol=SCORE_ATOL, rtol=0)
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("name", IMAGE_FIXTURES)
def test_semantic_after_inference_flow_matches_original(name):
    """Semantic-only flow: inference on the padded-size masks, then crop + resize of the [K, H, W] scores."""
    fixture = load_postprocess(name)
    postprocess, outputs = fixture["postprocess"], fixture["outputs"]
    for index, reference in enumerate(postprocess["sem_seg_after_inference"]):
        masks = upsample_masks(outputs["pred_masks"][index], postprocess["padded_input_size"])
        scores = semantic_inference(outputs["pred_logits"][index], masks)
        ours = crop_and_resize_masks(scores, postprocess["image_sizes"][index], postprocess["output_sizes"][index])
        torch.testing.assert_close(ours, reference, atol=SCORE_ATOL, rtol=0)


@pytest.mark.parametrize("name", IMAGE_FIXTURES)
def test_panoptic_inference_matches_original(name):
    is_v1 = load_postprocess(name)["is_v1"]
    checked_segments = 0
    for case in all_cases(name):
        for setting, reference in case["references"].items():
            if "panoptic_seg" not in reference:
                continue
            arguments = setting_arguments(name, setting)
            segmentation, segments_info = panoptic_inference(
                case["mask_cls"],
                case["mask_pred"],
                object_mask_threshold=arguments["object_mask_threshold"],
                overlap_threshold=arguments["overlap_threshold"],
                label_ids_to_fuse=STUFF_IDS,
                intersect_with_mask=not is_v1,
            )
            assert segmentation.dtype == torch.int32
            assert torch.equal(segmentation, reference["panoptic_seg"]), (case["name"], setting)
            assert_segments_match(segments_info, reference["segments_info"])
            checked_segments += len(segments_info)
    assert checked_segments >= 5  # the synthetic cases exercise merges and the overlap test


def test_panoptic_synthetic_cases_cover_the_interesting_paths():
    """The fixture cases really contain a stuff merge, an overlap drop and an empty result."""
    cases = {case["name"]: case for case in synthetic_cases("m2f_image_swin")}
    merge = cases["stuff_merge"]["references"]["real"]
    merged_ids = [segment["id"] for segment in merge["segments_info"] if not segment["isthing"]]
    assert len(merged_ids) == len(set(merged_ids))
    empty = cases["all_no_object"]["references"]["real"]
    assert empty["segments_info"] == [] and int(empty["panoptic_seg"].abs().sum()) == 0
    segmentation, segments_info = panoptic_inference(
        cases["all_no_object"]["mask_cls"], cases["all_no_object"]["mask_pred"]
    )
    assert segments_info == [] and int(segmentation.abs().sum()) == 0


def test_maskformer_rule_differs_from_mask2former_rule():
    """v1 keeps arg-max pixels below the mask threshold; Mask2Former removes them."""
    mask_cls = torch.tensor([[6.0, -6.0, -6.0], [-6.0, 6.0, -6.0]])  # 2 queries, 2 classes
    mask_pred = torch.full((2, 4, 4), -4.0)
    mask_pred[0, :, :2] = 4.0
    mask_pred[1, :, 2:] = 4.0
    mask_pred[0, 0, 3] = -1.0  # weak for both queries; query 0 wins the arg-max there
    mask_pred[1, 0, 3] = -2.0
    m2f, _ = panoptic_inference(mask_cls, mask_pred, overlap_threshold=0.5, intersect_with_mask=True)
    v1, _ = panoptic_inference(mask_cls, mask_pred, overlap_threshold=0.5, intersect_with_mask=False)
    assert int(m2f[0, 3]) == 0 and int(v1[0, 3]) == 1
    assert torch.equal(m2f[1:], v1[1:])


def test_panoptic_fuses_stuff_and_honours_arguments():
    mask_cls = torch.full((4, 4), -8.0)
    mask_cls[0, 2] = mask_cls[1, 2] = 8.0  # two queries of stuff class 2
    mask_cls[2, 0] = mask_cls[3, 0] = 8.0  # two of thing class 0
    mask_pred = torch.full((4, 6, 8), -6.0)
    for query, columns in enumerate([(0, 2), (2, 4), (4, 6), (6, 8)]):
        mask_pred[query, :, columns[0] : columns[1]] = 6.0
    segmentation, segments_info = panoptic_inference(mask_cls, mask_pred, label_ids_to_fuse={2})
    assert [(s["id"], s["label_id"], s["was_fused"]) for s in segments_info] == [(1, 2, True), (2, 0, False), (3, 0, False)]
    assert segmentation[:, :4].eq(1).all() and segmentation[:, 4:6].eq(2).all() and segmentation[:, 6:].eq(3).all()
    _, not_fused = panoptic_inference(mask_cls, mask_pred)
    assert [s["id"] for s in not_fused] == [1, 2, 3, 4]
    # object_mask_threshold above every probability: nothing survives.
    _, none = panoptic_inference(mask_cls, mask_pred, object_mask_threshold=1.0)
    assert none == []


@pytest.mark.parametrize("name", ["m2f_image_swin", "m2f_image_r50"])
def test_instance_inference_matches_original(name):
    checked = 0
    for case in all_cases(name):
        for setting, reference in case["references"].items():
            arguments = setting_arguments(name, setting)
            excluded = STUFF_IDS if arguments["panoptic_on"] else None
            result = instance_inference(
                case["mask_cls"], case["mask_pred"], top_k=arguments["test_topk_per_image"], excluded_label_ids=excluded
            )
            assert_instances_match(result["masks"], result["scores"], result["labels"], reference["instances"])
            assert bool((result["scores"][:-1] >= result["scores"][1:]).all())  # sorted by score
            checked += 1
    assert checked == 3 * 6


def test_instance_thing_filter_and_top_k():
    case = synthetic_cases("m2f_image_swin")[0]
    everything = instance_inference(case["mask_cls"], case["mask_pred"], top_k=50)
    assert everything["labels"].numel() == 50
    things = instance_inference(case["mask_cls"], case["mask_pred"], top_k=50, excluded_label_ids=STUFF_IDS)
    assert not bool(torch.isin(things["labels"], torch.tensor(sorted(STUFF_IDS))).any())
    assert things["labels"].numel() == int((~torch.isin(everything["labels"], torch.tensor([3, 4]))).sum())
    # query index and label are consistent with the flattened (query, class) ranking
    probs = case["mask_cls"].softmax(-1)[:, :-1]
    torch.testing.assert_close(
        probs[everything["query_indices"], everything["labels"]].sort(descending=True).values,
        probs.flatten().topk(50).values,
    )


def test_mask_threshold_in_logit_space():
    assert mask_logit_threshold(0.5) == 0.0
    logits = torch.linspace(-3, 3, 101)
    for threshold in (0.1, 0.3, 0.7, 0.9):
        assert torch.equal(logits > mask_logit_threshold(threshold), logits.double().sigmoid() > threshold)


def test_resize_helpers_follow_the_original_order_and_accept_video_masks():
    torch.manual_seed(0)
    masks = torch.randn(3, 2, 8, 12)  # [queries, frames, h, w]
    padded, crop, output = (32, 48), (20, 30), (25, 33)
    ours = upsample_crop_resize(masks, padded, crop, output)
    assert ours.shape == (3, 2, 25, 33)
    manual = F.interpolate(masks.flatten(0, 1)[None], size=padded, mode="bilinear", align_corners=False)
    manual = manual[..., : crop[0], : crop[1]]
    manual = F.interpolate(manual, size=output, mode="bilinear", align_corners=False)[0].view(3, 2, *output)
    torch.testing.assert_close(ours, manual, atol=0, rtol=0)
    assert upsample_masks(masks, (8, 12)) is masks  # no-op at the same size
    assert crop_and_resize_masks(masks, (5, 6)).shape == (3, 2, 5, 6)
    with pytest.raises(ValueError, match="larger than the padded"):
        crop_and_resize_masks(masks, (9, 6))


def test_semantic_inference_on_video_shaped_masks():
    torch.manual_seed(1)
    mask_cls, mask_pred = torch.randn(5, 4), torch.randn(5, 2, 6, 7)
    video = semantic_inference(mask_cls, mask_pred)
    assert video.shape == (3, 2, 6, 7)
    torch.testing.assert_close(video[:, 1], semantic_inference(mask_cls, mask_pred[:, 1]))


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (16, 9)])
def test_rle_matches_pycocotools(shape):
    mask_utils = pytest.importorskip("pycocotools.mask")
    generator = torch.Generator().manual_seed(shape[0] * 31 + shape[1])
    for mask in (
        torch.rand(shape, generator=generator) > 0.5,
        torch.zeros(shape, dtype=torch.bool),
        torch.ones(shape, dtype=torch.bool),
    ):
        ours = binary_mask_to_coco_rle(mask)
        reference = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
        assert ours["size"] == list(reference["size"])
        assert ours["counts"] == reference["counts"].decode()
        decoded = mask_utils.decode({"size": ours["size"], "counts": ours["counts"].encode()})
        assert np.array_equal(decoded, mask.numpy())


def test_rle_long_runs_round_trip():
    mask_utils = pytest.importorskip("pycocotools.mask")
    mask = torch.zeros(300, 400, dtype=torch.bool)
    mask[10:290, 50:60] = True
    mask[:, 390:] = True
    ours = binary_mask_to_coco_rle(mask)
    assert np.array_equal(mask_utils.decode({"size": ours["size"], "counts": ours["counts"].encode()}), mask.numpy())
    assert int(mask_utils.area({"size": ours["size"], "counts": ours["counts"].encode()})) == int(mask.sum())


def test_separable_resize_equals_the_interpolate_chain():
    """`resize_mask_logits` (one separable map) against the original's chain (`F.interpolate` twice, crop)."""
    from hf_maskformer_series.post_processing import MaskGeometry, resize_mask_logits

    generator = torch.Generator().manual_seed(3)
    for shape, geometry in [
        ((20, 24, 32), MaskGeometry((96, 128), (96, 128), (120, 160))),  # upsample, no crop, enlarge
        ((5, 3, 8, 12), MaskGeometry((32, 48), (20, 30), (25, 33))),  # video masks, crop
        ((7, 16, 16), MaskGeometry((64, 64), (50, 61), (50, 61))),  # crop only
        ((4, 10, 13), MaskGeometry((40, 52), (37, 49), (100, 9))),  # shrink one axis
    ]:
        logits = torch.randn(*shape, generator=generator) * 8
        ours = resize_mask_logits(logits, geometry)
        reference = upsample_crop_resize(logits, *geometry)
        assert ours.shape == reference.shape
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-5)


def test_semantic_argmax_without_resizing_every_class_map():
    """The semantic map from resizing only the boundary pixels equals the argmax of the fully resized scores."""
    from hf_maskformer_series.post_processing import MaskGeometry, semantic_segmentation

    generator = torch.Generator().manual_seed(4)
    mask_cls = torch.randn(12, 8, generator=generator) * 3
    mask_pred = F.interpolate(torch.randn(1, 12, 6, 8, generator=generator) * 6, size=(24, 32), mode="bicubic")[0]
    geometry = MaskGeometry((96, 128), (90, 120), (131, 170))
    fast, _ = semantic_segmentation(mask_cls, mask_pred, geometry)
    full, scores = semantic_segmentation(mask_cls, mask_pred, geometry, return_scores=True)
    assert torch.equal(fast, full) and torch.equal(full, scores.argmax(0))
    assert len(fast.unique()) >= 3


def test_bounded_semantic_argmax_equals_the_original_rule():
    """Per-cell score bounds skip most pixels; the map still equals upsample → crop → score → resize → argmax."""
    from hf_maskformer_series.post_processing import MaskGeometry, semantic_segmentation

    generator = torch.Generator().manual_seed(11)
    for queries, classes, mask_size, geometry in [
        (16, 6, (12, 16), MaskGeometry((48, 64), (45, 60), (90, 121))),  # enlarge
        (10, 5, (10, 10), MaskGeometry((40, 40), (40, 33), (17, 23))),  # shrink
        (8, 4, (9, 7), MaskGeometry((36, 28), (30, 28), (30, 28))),  # crop only
    ]:
        mask_cls = torch.randn(queries, classes + 1, generator=generator) * 3
        mask_pred = torch.randn(queries, *mask_size, generator=generator) * 4
        ours, _ = semantic_segmentation(mask_cls, mask_pred, geometry)
        probs = upsample_crop_resize(mask_pred, geometry.padded, geometry.crop).sigmoid()
        scores = torch.einsum("qc,qhw->chw", mask_cls.softmax(-1)[:, :-1], probs)
        reference = F.interpolate(scores[None], size=geometry.output, mode="bilinear", align_corners=False)[0]
        assert ours.shape == geometry.output
        assert torch.equal(ours, reference.argmax(0))
        assert len(ours.unique()) >= 3


def test_instance_threshold_prunes_exactly():
    """Pairs dropped by the score bound before resizing are exactly those the full computation drops."""
    from hf_maskformer_series.post_processing import MaskGeometry, instance_inference

    generator = torch.Generator().manual_seed(12)
    mask_cls = torch.randn(30, 6, generator=generator) * 4
    mask_pred = torch.randn(30, 12, 16, generator=generator) * torch.linspace(0.05, 6, 30)[:, None, None]
    geometry = MaskGeometry((48, 64), (45, 60), (90, 120))
    full = instance_inference(mask_cls, mask_pred, top_k=60, geometry=geometry)
    for threshold in (0.3, 0.5, 0.7):
        ours = instance_inference(mask_cls, mask_pred, top_k=60, geometry=geometry, threshold=threshold)
        keep = (full["scores"] >= threshold) & full["masks"].flatten(1).any(1)
        assert 0 < int(keep.sum()) < len(keep)
        assert torch.equal(ours["masks"], full["masks"][keep])
        assert torch.equal(ours["labels"], full["labels"][keep])
        torch.testing.assert_close(ours["scores"], full["scores"][keep])
