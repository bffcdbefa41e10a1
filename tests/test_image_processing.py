"""The image processors: compatibility with transformers, the label contract, bad input, post-processing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import Mask2FormerImageProcessor

from hf_maskformer_series.image_processing import (
    SeriesMask2FormerImageProcessor,
    SeriesMaskFormerImageProcessor,
    encode_segmentation_targets,
)
from tests._processing_helpers import (
    IMAGE_FIXTURES,
    SCORE_ATOL,
    STUFF_IDS,
    assert_instances_match,
    assert_segments_match,
    load_postprocess,
    model_outputs_dict,
    setting_arguments,
    settings_of,
    synthetic_cases,
    synthetic_outputs_dict,
)


def random_batch(sizes, num_values=5, seed=0):
    generator = np.random.default_rng(seed)
    images = [generator.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    maps = [generator.integers(0, num_values, (h, w), dtype=np.uint8) for h, w in sizes]
    return images, maps


# ----------------------------------------------------------------------------------------------------------------
# Pre-processing and target encoding against transformers
# ----------------------------------------------------------------------------------------------------------------

COMPAT_CONFIGS = [
    dict(do_resize=False),
    dict(do_resize=False, ignore_index=255, num_labels=5),
    dict(size={"shortest_edge": 40, "longest_edge": 100}),
    dict(size={"shortest_edge": 50, "longest_edge": 70}, ignore_index=255, do_reduce_labels=True, num_labels=5),
    dict(size={"height": 48, "width": 80}, ignore_index=0),
]


@pytest.mark.parametrize("config", COMPAT_CONFIGS)
@pytest.mark.parametrize("sizes", [[(64, 96), (32, 64)], [(45, 61), (70, 33)]])
def test_semantic_preprocessing_matches_transformers(config, sizes):
    images, maps = random_batch(sizes)
    theirs = Mask2FormerImageProcessor(**config)(images, segmentation_maps=maps, return_tensors="pt")
    ours = SeriesMask2FormerImageProcessor(**config)(images, segmentation_maps=maps, return_tensors="pt")
    height, width = theirs["pixel_values"].shape[-2:]
    padded_height, padded_width = ours["pixel_values"].shape[-2:]
    assert padded_height % 32 == 0 and padded_width % 32 == 0
    # transformers pads only to the batch maximum when it does not resize; we round up to size_divisor.
    assert padded_height >= height and padded_width >= width
    torch.testing.assert_close(ours["pixel_values"][..., :height, :width], theirs["pixel_values"], atol=1e-5, rtol=0)
    assert ours["pixel_values"][..., height:, :].abs().sum() == 0 and ours["pixel_values"][..., width:].abs().sum() == 0
    assert torch.equal(ours["pixel_mask"][..., :height, :width], theirs["pixel_mask"])
    assert ours["pixel_mask"].sum() == theirs["pixel_mask"].sum()
    for index in range(len(images)):
        assert torch.equal(ours["class_labels"][index], theirs["class_labels"][index])
        valid = theirs["pixel_mask"][index].bool()
        ours_masks = ours["mask_labels"][index]
        theirs_masks = theirs["mask_labels"][index]
        assert ours_masks.dtype == theirs_masks.dtype == torch.float32
        assert torch.equal(ours_masks[:, :height, :width][:, valid], theirs_masks[:, valid])
        # padding: zeros here; transformers fills the binary masks' padding with ignore_index
        assert ours_masks[:, ~ours["pixel_mask"][index].bool()].abs().sum() == 0


def test_preprocessing_is_exact_without_resize_or_padding():
    images, maps = random_batch([(64, 96), (64, 96)])
    config = dict(do_resize=False, ignore_index=4)
    theirs = Mask2FormerImageProcessor(**config)(images, segmentation_maps=maps, return_tensors="pt")
    ours = SeriesMask2FormerImageProcessor(**config)(images, segmentation_maps=maps, return_tensors="pt")
    for key in ("pixel_values", "pixel_mask"):
        assert torch.equal(ours[key], theirs[key])
    for key in ("mask_labels", "class_labels"):
        assert all(torch.equal(a, b) for a, b in zip(ours[key], theirs[key]))


@pytest.mark.parametrize("do_reduce_labels", [False, True])
def test_instance_map_encoding_matches_transformers(do_reduce_labels):
    generator = np.random.default_rng(3)
    images = [generator.integers(0, 256, (3, 50, 70), dtype=np.uint8) for _ in range(2)]
    instance_maps = [generator.integers(0, 6, (50, 70), dtype=np.int64) for _ in range(2)]
    mappings = [{0: 4, 1: 1, 2: 2, 3: 1, 4: 3, 5: 4}, {0: 1, 1: 3, 2: 2, 3: 2, 4: 1, 5: 4}]
    config = dict(size={"shortest_edge": 64, "longest_edge": 128}, ignore_index=255, do_reduce_labels=do_reduce_labels)
    theirs = Mask2FormerImageProcessor(**config)(
        images, segmentation_maps=instance_maps, instance_id_to_semantic_id=mappings, return_tensors="pt"
    )
    ours = SeriesMask2FormerImageProcessor(**config)(
        images, segmentation_maps=instance_maps, instance_id_to_semantic_id=mappings, return_tensors="pt"
    )
    assert torch.equal(ours["pixel_mask"], theirs["pixel_mask"])
    torch.testing.assert_close(ours["pixel_values"], theirs["pixel_values"], atol=1e-5, rtol=0)
    for index in range(2):
        assert torch.equal(ours["class_labels"][index], theirs["class_labels"][index])
        assert torch.equal(ours["mask_labels"][index], theirs["mask_labels"][index])
    expected_count = 5 if do_reduce_labels else 6
    assert ours["class_labels"][0].numel() == expected_count


def test_fixed_size_snapping_and_keep_aspect_option():
    image = np.zeros((3, 100, 150), dtype=np.uint8)
    snapped = SeriesMask2FormerImageProcessor(size={"shortest_edge": 50, "longest_edge": 1000})(
        image, return_tensors="pt"
    )
    assert tuple(snapped["pixel_values"].shape) == (1, 3, 64, 96)
    assert snapped["pixel_mask"].all()  # stretched to a multiple of 32, as transformers does
    kept = SeriesMask2FormerImageProcessor(
        size={"shortest_edge": 50, "longest_edge": 1000}, snap_resize_to_size_divisor=False
    )(image, return_tensors="pt")
    assert tuple(kept["pixel_values"].shape) == (1, 3, 64, 96)
    assert kept["pixel_mask"][0].sum(0).max() == 50 and kept["pixel_mask"][0].sum(1).max() == 75
    padded = SeriesMask2FormerImageProcessor(do_resize=False)(image, pad_size={"height": 128, "width": 160})
    assert tuple(padded["pixel_mask"][0].shape) == (128, 160)


# ----------------------------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------------------------


def test_loads_transformers_config_and_saves_own_type(tmp_path):
    reference = Mask2FormerImageProcessor(
        size={"shortest_edge": 384, "longest_edge": 512}, ignore_index=255, do_reduce_labels=True, num_labels=150,
        size_divisor=64, image_mean=[0.5, 0.5, 0.5],
    )
    reference.save_pretrained(tmp_path / "transformers")
    ours = SeriesMask2FormerImageProcessor.from_pretrained(tmp_path / "transformers")
    for key in ("ignore_index", "do_reduce_labels", "num_labels", "size_divisor", "do_rescale", "rescale_factor",
                "do_normalize", "do_resize", "resample"):
        assert getattr(ours, key) == getattr(reference, key), key
    assert dict(ours.size) == {"shortest_edge": 384, "longest_edge": 512}
    assert tuple(ours.image_mean) == (0.5, 0.5, 0.5)
    ours.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "SeriesMask2FormerImageProcessor"
    assert saved["num_labels"] == 150 and saved["size_divisor"] == 64
    again = SeriesMask2FormerImageProcessor.from_pretrained(tmp_path / "ours")
    assert again.to_dict() == ours.to_dict()
    maskformer = SeriesMaskFormerImageProcessor.from_pretrained(tmp_path / "ours")
    assert maskformer.to_dict()["image_processor_type"] == "SeriesMaskFormerImageProcessor"

    images, maps = random_batch([(90, 120)])
    a = reference(images, segmentation_maps=maps, return_tensors="pt")
    b = again(images, segmentation_maps=maps, return_tensors="pt")
    torch.testing.assert_close(a["pixel_values"], b["pixel_values"], atol=1e-5, rtol=0)


def test_legacy_config_keys(tmp_path):
    legacy = {
        "do_normalize": True, "do_resize": True, "feature_extractor_type": "MaskFormerFeatureExtractor",
        "ignore_index": 255, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        "num_labels": 133, "reduce_labels": True, "resample": 2, "size": 384, "max_size": 1024,
        "size_divisibility": 32,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(legacy))
    processor = SeriesMask2FormerImageProcessor.from_pretrained(tmp_path)
    assert processor.do_reduce_labels is True and processor.size_divisor == 32
    assert dict(processor.size) == {"shortest_edge": 384, "longest_edge": 1024}


# ----------------------------------------------------------------------------------------------------------------
# The label contract and bad input
# ----------------------------------------------------------------------------------------------------------------


def test_panoptic_encoding_with_segments_info_and_rgb_png():
    segment_map = np.zeros((40, 60), dtype=np.int64)
    segment_map[:20, :30] = 1000  # thing, class 2
    segment_map[20:, :30] = 70000  # stuff, class 4 (needs more than one byte)
    segment_map[:, 30:45] = 5  # crowd: no target
    # columns 45.. stay 0 = void
    segments = [
        {"id": 1000, "category_id": 2},
        {"id": 70000, "category_id": 4, "iscrowd": 0},
        {"id": 5, "category_id": 1, "iscrowd": 1},
        {"id": 9, "category_id": 3},  # listed but absent from the map: ignored
    ]
    rgb = np.stack([segment_map % 256, (segment_map // 256) % 256, segment_map // 65536], -1).astype(np.uint8)
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    processor = SeriesMask2FormerImageProcessor(do_resize=False, num_labels=5)
    for label_map in (segment_map, rgb):
        encoded = processor(image, segmentation_maps=[label_map], segments_info=[segments], return_tensors="pt")
        assert encoded["class_labels"][0].tolist() == [2, 4]
        masks = encoded["mask_labels"][0]
        assert tuple(masks.shape) == (2, 64, 64)
        assert masks[0, :20, :30].all() and masks[0].sum() == 600
        assert masks[1, 20:40, :30].all() and masks[1].sum() == 600
    reduced = SeriesMask2FormerImageProcessor(do_resize=False, ignore_index=255, do_reduce_labels=True)(
        image, segmentation_maps=[segment_map], segments_info=[segments], return_tensors="pt"
    )
    assert reduced["class_labels"][0].tolist() == [1, 3]


def test_encoding_many_classes_and_pil_maps():
    label_map = torch.randint(0, 150, (512, 512))
    masks, labels = encode_segmentation_targets(label_map)
    assert masks.shape == (150, 512, 512) and torch.equal(labels, torch.arange(150))
    assert torch.equal(masks.argmax(0), label_map)
    from PIL import Image

    images, maps = random_batch([(45, 61)])
    pil_image, pil_map = Image.fromarray(images[0]), Image.fromarray(maps[0])
    config = dict(size={"shortest_edge": 40, "longest_edge": 100})
    theirs = Mask2FormerImageProcessor(**config)(pil_image, segmentation_maps=pil_map, return_tensors="pt")
    ours = SeriesMask2FormerImageProcessor(**config)(pil_image, segmentation_maps=pil_map, return_tensors="pt")
    assert torch.equal(ours["pixel_values"], theirs["pixel_values"])
    assert torch.equal(ours["mask_labels"][0], theirs["mask_labels"][0])
    assert torch.equal(ours["class_labels"][0], theirs["class_labels"][0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(segmentation_maps=[np.full((40, 60), 7)], num_labels=5), r"outside the configured labels"),
        (dict(segmentation_maps=[np.zeros((30, 60), dtype=np.uint8)]), r"has size \(30, 60\).*\(40, 60\)"),
        (dict(segmentation_maps=[np.zeros((40, 60))] * 2), r"2 segmentation maps for 1 images"),
        (
            dict(segmentation_maps=[np.arange(2400).reshape(40, 60) % 3], instance_id_to_semantic_id={0: 1, 1: 2}),
            r"Instance ids \[2\].*not in `instance_id_to_semantic_id`",
        ),
        (
            dict(segmentation_maps=[np.arange(2400).reshape(40, 60) % 3],
                 instance_id_to_semantic_id=[{0: 1, 1: 2, 2: 0}] * 3),
            r"3 entries in `instance_id_to_semantic_id` for 1 images",
        ),
        (
            dict(segmentation_maps=[np.arange(2400).reshape(40, 60) % 3],
                 instance_id_to_semantic_id={0: 1, 1: 2, 2: 9}, num_labels=5),
            r"\[9\].*outside the configured labels",
        ),
        (
            dict(segmentation_maps=[np.arange(2400).reshape(40, 60) % 3], segments_info=[[{"id": 1, "category_id": 0}]]),
            r"segment ids \[2\] appear in the segmentation map but not in `segments_info`",
        ),
        (dict(segmentation_maps=[np.zeros((40, 60))], do_reduce_labels=True), r"needs `ignore_index`"),
        (dict(instance_id_to_semantic_id={0: 1}), r"need `segmentation_maps`"),
    ],
)
def test_bad_labels_raise_clear_errors(kwargs, message):
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    processor = SeriesMask2FormerImageProcessor(do_resize=False)
    with pytest.raises(ValueError, match=message):
        processor(image, **kwargs)


@pytest.mark.parametrize("shape", [(40, 60, 2), (5, 40, 60), (1, 40, 60)])
def test_wrong_channel_count_raises(shape):
    processor = SeriesMask2FormerImageProcessor(do_resize=False)
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        processor(np.zeros(shape, dtype=np.uint8))


def test_grayscale_is_accepted_with_do_convert_rgb():
    processor = SeriesMask2FormerImageProcessor(do_resize=False)
    out = processor(np.full((1, 32, 32), 128, dtype=np.uint8), do_convert_rgb=True, return_tensors="pt")
    assert out["pixel_values"].shape == (1, 3, 32, 32)


# ----------------------------------------------------------------------------------------------------------------
# Post-processing through the public methods, against the original (fixtures)
# ----------------------------------------------------------------------------------------------------------------


def processor_for(name):
    return SeriesMaskFormerImageProcessor() if load_postprocess(name)["is_v1"] else SeriesMask2FormerImageProcessor()


@pytest.mark.parametrize("name", IMAGE_FIXTURES)
def test_public_semantic_matches_original(name):
    processor = processor_for(name)
    postprocess = load_postprocess(name)["postprocess"]
    outputs = model_outputs_dict(name)
    after = processor.post_process_semantic_segmentation(
        outputs, target_sizes=postprocess["output_sizes"], return_segmentation_scores=True
    )
    before = processor.post_process_semantic_segmentation(
        outputs, target_sizes=postprocess["output_sizes"], return_segmentation_scores=True,
        postprocess_before_inference=True,
    )
    plain = processor.post_process_semantic_segmentation(outputs, target_sizes=postprocess["output_sizes"])
    for index in range(2):
        reference_after = postprocess["sem_seg_after_inference"][index]
        torch.testing.assert_close(after[index].segmentation_scores, reference_after, atol=SCORE_ATOL, rtol=0)
        reference_before = postprocess["real"]["per_image"][index]["sem_seg"]
        torch.testing.assert_close(before[index].segmentation_scores, reference_before, atol=SCORE_ATOL, rtol=0)
        assert torch.equal(plain[index], after[index].segmentation)
        assert tuple(plain[index].shape) == tuple(postprocess["output_sizes"][index])
    # without target sizes: the un-padded input size (image_sizes)
    native = processor.post_process_semantic_segmentation(outputs)
    assert [tuple(m.shape) for m in native] == [tuple(s) for s in postprocess["image_sizes"]]


@pytest.mark.parametrize("name", IMAGE_FIXTURES)
def test_public_panoptic_matches_original(name):
    processor = processor_for(name)
    postprocess = load_postprocess(name)["postprocess"]
    for setting in ("real", "low"):
        arguments = setting_arguments(name, setting)
        kwargs = dict(
            threshold=arguments["object_mask_threshold"],
            overlap_mask_area_threshold=arguments["overlap_threshold"],
            label_ids_to_fuse=STUFF_IDS,
        )
        results = processor.post_process_panoptic_segmentation(
            model_outputs_dict(name), target_sizes=postprocess["output_sizes"], **kwargs
        )
        for index, result in enumerate(results):
            reference = postprocess[setting]["per_image"][index]
            assert torch.equal(result["segmentation"], reference["panoptic_seg"])
            assert_segments_match(result["segments_info"], reference["segments_info"])
        for case in synthetic_cases(name):
            (result,) = processor.post_process_panoptic_segmentation(synthetic_outputs_dict(case), **kwargs)
            reference = case["references"][setting]
            assert torch.equal(result["segmentation"], reference["panoptic_seg"]), case["name"]
            assert_segments_match(result["segments_info"], reference["segments_info"])


@pytest.mark.parametrize("name", ["m2f_image_swin", "m2f_image_r50"])
def test_public_instance_matches_original(name):
    """Binary-map output with threshold 0 keeps every top-k pair with a non-empty mask (the original keeps
    empty masks too, with score 0: they are removed from the reference before comparing)."""
    processor = SeriesMask2FormerImageProcessor()
    postprocess = load_postprocess(name)["postprocess"]
    for setting in settings_of(name):
        arguments = setting_arguments(name, setting)
        kwargs = dict(
            threshold=0.0,
            top_k=arguments["test_topk_per_image"],
            label_ids_to_fuse=STUFF_IDS if arguments["panoptic_on"] else None,
            return_binary_maps=True,
        )
        batches = [
            (model_outputs_dict(name), postprocess["output_sizes"],
             [postprocess[setting]["per_image"][i]["instances"] for i in range(2)]),
        ] + [
            (synthetic_outputs_dict(case), None, [case["references"][setting]["instances"]])
            for case in synthetic_cases(name)
        ]
        for outputs, target_sizes, references in batches:
            results = processor.post_process_instance_segmentation(outputs, target_sizes=target_sizes, **kwargs)
            for result, reference in zip(results, references):
                non_empty = reference["pred_masks"].flatten(1).any(1)
                reference = {key: reference[key][non_empty] for key in ("pred_masks", "scores", "pred_classes")}
                scores = torch.tensor([segment["score"] for segment in result["segments_info"]])
                labels = torch.tensor([segment["label_id"] for segment in result["segments_info"]], dtype=torch.long)
                assert result["segmentation"].shape[0] == len(result["segments_info"])
                assert_instances_match(result["segmentation"], scores, labels, reference)
                assert [segment["id"] for segment in result["segments_info"]] == list(range(len(scores)))


def test_instance_output_formats_and_arguments():
    mask_utils = pytest.importorskip("pycocotools.mask")
    processor = SeriesMask2FormerImageProcessor()
    case = synthetic_cases("m2f_image_swin")[0]  # random
    outputs = synthetic_outputs_dict(case)
    binary = processor.post_process_instance_segmentation(outputs, threshold=0.1, return_binary_maps=True)[0]
    rle = processor.post_process_instance_segmentation(outputs, threshold=0.1, return_coco_annotation=True)[0]
    id_map = processor.post_process_instance_segmentation(outputs, threshold=0.1, overlap_mask_area_threshold=0.0)[0]
    strict = processor.post_process_instance_segmentation(outputs, threshold=0.1, overlap_mask_area_threshold=0.9)[0]
    assert binary["segments_info"] == rle["segments_info"]
    assert all(segment["score"] >= 0.1 for segment in binary["segments_info"])
    for mask, encoded in zip(binary["segmentation"], rle["segmentation"]):
        decoded = mask_utils.decode({"size": encoded["size"], "counts": encoded["counts"].encode()})
        assert np.array_equal(decoded, mask.numpy().astype(np.uint8))
    # id map: the best-scoring covering instance wins each pixel; -1 is background
    segmentation = id_map["segmentation"]
    covered = binary["segmentation"].bool().any(0)
    assert torch.equal(segmentation >= 0, covered)
    first_cover = binary["segmentation"].to(torch.uint8).argmax(0)
    survivors = {segment["score"]: segment["id"] for segment in id_map["segments_info"]}
    assert len(survivors) <= len(binary["segments_info"])
    expected = torch.tensor([survivors.get(s["score"], -2) for s in binary["segments_info"]])[first_cover]
    assert torch.equal(segmentation[covered], expected[covered].to(torch.int32))
    # a stricter overlap threshold keeps fewer instances, and every kept one is mostly visible
    assert len(strict["segments_info"]) <= len(id_map["segments_info"])
    for segment in strict["segments_info"]:
        assert (strict["segmentation"] == segment["id"]).any()
    # mask_threshold is honoured
    loose = processor.post_process_instance_segmentation(outputs, threshold=0.0, mask_threshold=0.2,
                                                         return_binary_maps=True)[0]
    tight = processor.post_process_instance_segmentation(outputs, threshold=0.0, mask_threshold=0.8,
                                                         return_binary_maps=True)[0]
    assert loose["segmentation"].sum() > tight["segmentation"].sum()
    with pytest.raises(ValueError, match="cannot both be True"):
        processor.post_process_instance_segmentation(outputs, return_binary_maps=True, return_coco_annotation=True)
    with pytest.raises(ValueError, match="2 target sizes for a batch of 1"):
        processor.post_process_instance_segmentation(outputs, target_sizes=[(4, 4), (4, 4)])


# ----------------------------------------------------------------------------------------------------------------
# Against transformers' post-processing
# ----------------------------------------------------------------------------------------------------------------


class _Outputs(dict):
    """Minimal transformers-style output: keys readable as attributes."""

    __getattr__ = dict.__getitem__


def transformers_like_outputs(mask_size, seed=0, batch=2, queries=10, classes=6):
    generator = torch.Generator().manual_seed(seed)
    return _Outputs(
        class_queries_logits=torch.randn(batch, queries, classes + 1, generator=generator) * 3,
        masks_queries_logits=torch.randn(batch, queries, *mask_size, generator=generator) * 4,
    )


def blob_masks(batch, queries, size, seed):
    """Smooth disc-shaped mask logits (positive inside a random disc), so panoptic segments survive."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, queries, 2, generator=generator) * size
    radii = 10 + torch.rand(batch, queries, 1, 1, generator=generator) * size / 3
    grid = torch.arange(size, dtype=torch.float32)
    distance = ((grid.view(1, 1, -1, 1) - centres[..., 0, None, None]) ** 2
                + (grid.view(1, 1, 1, -1) - centres[..., 1, None, None]) ** 2).sqrt()
    return (radii - distance) / 3


def test_semantic_agrees_with_transformers_when_input_is_384():
    """transformers upsamples to a fixed 384x384; ours to 4x the mask size, so 96x96 masks agree."""
    outputs = transformers_like_outputs((96, 96))
    target_sizes = [(100, 150), (384, 384)]
    theirs = Mask2FormerImageProcessor().post_process_semantic_segmentation(
        outputs, target_sizes=target_sizes, return_segmentation_scores=True
    )
    ours = SeriesMask2FormerImageProcessor().post_process_semantic_segmentation(
        outputs, target_sizes=target_sizes, return_segmentation_scores=True
    )
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.segmentation_scores, b.segmentation_scores, atol=1e-5, rtol=1e-5)
        assert torch.equal(a.segmentation, b.segmentation)


def test_semantic_differs_from_transformers_with_padding():
    """With padding, ours crops it before resizing (the original); transformers stretches the padded map."""
    outputs = transformers_like_outputs((32, 48), batch=1)
    with_geometry = _Outputs(outputs, image_sizes=torch.tensor([[96, 120]]), padded_image_size=torch.tensor([128, 192]))
    target = [(48, 60)]
    ours = SeriesMask2FormerImageProcessor().post_process_semantic_segmentation(
        with_geometry, target_sizes=target, return_segmentation_scores=True
    )[0]
    theirs = Mask2FormerImageProcessor().post_process_semantic_segmentation(
        outputs, target_sizes=target, return_segmentation_scores=True
    )[0]
    upsampled = torch.nn.functional.interpolate(outputs.masks_queries_logits, size=(128, 192), mode="bilinear")
    cropped = upsampled[..., :96, :120]
    scores = torch.einsum("qc,qhw->chw", outputs.class_queries_logits[0].softmax(-1)[:, :-1], cropped[0].sigmoid())
    expected = torch.nn.functional.interpolate(scores[None], size=target[0], mode="bilinear")[0]
    torch.testing.assert_close(ours.segmentation_scores, expected, atol=1e-5, rtol=1e-5)
    assert (ours.segmentation_scores - theirs.segmentation_scores).abs().max() > 1e-2


def test_maskformer_panoptic_agrees_with_transformers_without_fusion():
    """transformers' panoptic rule is MaskFormer v1's (no intersection with the mask threshold)."""
    outputs = transformers_like_outputs((96, 96), seed=4, queries=12, classes=5)
    outputs["class_queries_logits"] = outputs["class_queries_logits"] * 2
    outputs["masks_queries_logits"] = blob_masks(2, 12, 96, seed=5)
    theirs = Mask2FormerImageProcessor().post_process_panoptic_segmentation(outputs, threshold=0.5)
    ours = SeriesMaskFormerImageProcessor().post_process_panoptic_segmentation(outputs, threshold=0.5)
    compared = 0
    for a, b in zip(ours, theirs):
        if not b["segments_info"]:
            assert a["segments_info"] == [] and not a["segmentation"].any()
            continue
        assert torch.equal(a["segmentation"], b["segmentation"].to(torch.int32))
        assert [(s["id"], s["label_id"]) for s in a["segments_info"]] == [
            (s["id"], s["label_id"]) for s in b["segments_info"]
        ]
        for s, t in zip(a["segments_info"], b["segments_info"]):
            assert abs(s["score"] - t["score"]) < 1e-5
        compared += len(a["segments_info"])
    assert compared >= 2
