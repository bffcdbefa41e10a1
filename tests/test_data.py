"""Tests of the synthetic data generators and the dataset readers (hf_maskformer_series.data)."""

import hashlib
import json
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from hf_maskformer_series.data import (
    SYNTHETIC_CATEGORIES,
    SyntheticPanopticConfig,
    SyntheticVideoConfig,
    augment_clip,
    decode_instance_masks,
    decode_segmentation,
    encode_mask,
    encode_mask_uncompressed,
    generate_synthetic_panoptic,
    generate_synthetic_youtube_vis,
    id_to_rgb,
    instances_to_segment_map,
    load_coco_instances,
    load_coco_panoptic,
    load_hub_dataset,
    load_semantic_segmentation,
    load_video_clip,
    load_youtube_vis,
    panoptic_to_segment_map,
    read_panoptic_categories,
    rgb_to_id,
    sample_clip_indices,
)
from hf_maskformer_series.data import hub as hub_module

SMALL = SyntheticPanopticConfig(num_train=10, num_val=4, seed=7)
SMALL_VIDEO = SyntheticVideoConfig(num_train=5, num_val=2, seed=7)


@pytest.fixture(scope="module")
def panoptic_root(tmp_path_factory):
    return generate_synthetic_panoptic(tmp_path_factory.mktemp("synthetic") / "panoptic", SMALL)


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    return generate_synthetic_youtube_vis(tmp_path_factory.mktemp("synthetic") / "ytvis", SMALL_VIDEO)


def _tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _copy(root, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(root, target)
    return target


# ---------------------------------------------------------------- encodings


def test_rgb_id_round_trip_and_encoding():
    ids = np.array([[0, 1, 255], [256, 65536, 256**3 - 1]])
    rgb = id_to_rgb(ids)
    assert rgb[1, 0].tolist() == [0, 1, 0] and rgb[1, 1].tolist() == [0, 0, 1]
    np.testing.assert_array_equal(rgb_to_id(rgb), ids)
    with pytest.raises(ValueError, match="256\\*\\*3"):
        id_to_rgb(np.array([[256**3]]))


def test_rle_encodings_round_trip():
    rng = np.random.default_rng(0)
    mask = rng.random((13, 17)) > 0.6
    mask[0, 0] = True  # uncompressed RLE must then start with a zero-length run
    for encoded in (encode_mask(mask), encode_mask_uncompressed(mask), json.loads(json.dumps(encode_mask(mask)))):
        np.testing.assert_array_equal(decode_segmentation(encoded, 13, 17), mask)
    assert encode_mask_uncompressed(mask)["counts"][0] == 0
    assert decode_segmentation(None, 13, 17) is None
    square = decode_segmentation([[2, 2, 6, 2, 6, 6, 2, 6]], 10, 10)
    assert square.sum() == 16 and square[2:6, 2:6].all()
    with pytest.raises(ValueError, match="does not match"):
        decode_segmentation(encode_mask(mask), 12, 17)


# ---------------------------------------------------------------- synthetic panoptic


def test_generator_is_deterministic_and_val_independent_of_train_size(tmp_path):
    first = generate_synthetic_panoptic(tmp_path / "a", SMALL)
    second = generate_synthetic_panoptic(tmp_path / "b", SMALL)
    assert _tree_digest(first) == _tree_digest(second)
    bigger = generate_synthetic_panoptic(tmp_path / "c", SyntheticPanopticConfig(num_train=12, num_val=4, seed=7))
    assert _tree_digest(first / "panoptic_val") == _tree_digest(bigger / "panoptic_val")
    other_seed = generate_synthetic_panoptic(tmp_path / "d", SyntheticPanopticConfig(num_train=10, num_val=4, seed=8))
    assert _tree_digest(first / "panoptic_val") != _tree_digest(other_seed / "panoptic_val")
    # reuse with the same settings, refuse a folder written with other settings
    assert generate_synthetic_panoptic(tmp_path / "a", SMALL) == first
    with pytest.raises(FileExistsError, match="settings"):
        generate_synthetic_panoptic(tmp_path / "a", SyntheticPanopticConfig(num_train=3, num_val=1))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_generated_files_follow_the_coco_panoptic_format(panoptic_root):
    for split, count in (("train", SMALL.num_train), ("val", SMALL.num_val)):
        content = json.loads((panoptic_root / "annotations" / f"panoptic_{split}.json").read_text())
        assert set(content) >= {"images", "annotations", "categories"}
        assert content["categories"] == SYNTHETIC_CATEGORIES
        assert {c["isthing"] for c in content["categories"]} == {0, 1}
        assert len(content["images"]) == len(content["annotations"]) == count
        for image, annotation in zip(content["images"], content["annotations"]):
            assert annotation["image_id"] == image["id"]
            assert (panoptic_root / "images" / split / image["file_name"]).is_file()
            png = np.asarray(Image.open(panoptic_root / f"panoptic_{split}" / annotation["file_name"]))
            assert png.shape == (SMALL.height, SMALL.width, 3) and png.dtype == np.uint8
            ids = rgb_to_id(png)
            border = SMALL.void_border
            assert (ids[:border] == 0).all() and (ids[:, -border:] == 0).all()  # void border
            assert (ids[border:-border, border:-border] != 0).all()  # everything inside is labeled
            listed = {s["id"]: s for s in annotation["segments_info"]}
            assert set(np.unique(ids).tolist()) - {0} == set(listed)
            for segment_id, segment in listed.items():
                region = ids == segment_id
                ys, xs = np.nonzero(region)
                assert segment["area"] == region.sum()
                assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert segment["iscrowd"] == 0


def test_things_overlap_touch_and_every_class_occurs(panoptic_root):
    content = json.loads((panoptic_root / "annotations" / "panoptic_train.json").read_text())
    categories = {c["id"]: c for c in content["categories"]}
    seen, touching_pairs, thing_counts = set(), 0, []
    for annotation in content["annotations"]:
        ids = rgb_to_id(np.asarray(Image.open(panoptic_root / "panoptic_train" / annotation["file_name"])))
        things = {s["id"] for s in annotation["segments_info"] if categories[s["category_id"]]["isthing"]}
        thing_counts.append(len(things))
        seen |= {s["category_id"] for s in annotation["segments_info"]}
        # 4-neighbour contacts between two different thing segments
        for a, b in ((ids[:, 1:], ids[:, :-1]), (ids[1:], ids[:-1])):
            contact = (a != b) & np.isin(a, list(things)) & np.isin(b, list(things))
            touching_pairs += len({(int(x), int(y)) for x, y in zip(a[contact], b[contact])})
    assert seen == set(categories)
    assert min(thing_counts) >= 1 and max(thing_counts) >= 3
    assert touching_pairs >= 5


def test_instance_and_semantic_exports_agree_with_the_panoptic_png(panoptic_root):
    instances = json.loads((panoptic_root / "annotations" / "instances_val.json").read_text())
    panoptic = json.loads((panoptic_root / "annotations" / "panoptic_val.json").read_text())
    assert {c["id"] for c in instances["categories"]} == {c["id"] for c in SYNTHETIC_CATEGORIES if c["isthing"]}
    kinds = {"polygon": 0, "rle": 0}
    for image, annotation in zip(panoptic["images"], panoptic["annotations"]):
        ids = rgb_to_id(np.asarray(Image.open(panoptic_root / "panoptic_val" / annotation["file_name"])))
        objects = [a for a in instances["annotations"] if a["image_id"] == image["id"]]
        thing_segments = [s for s in annotation["segments_info"] if s["category_id"] <= 4]
        assert len(objects) == len(thing_segments)
        for obj, segment in zip(objects, thing_segments):
            kinds["polygon" if isinstance(obj["segmentation"], list) else "rle"] += 1
            mask = decode_segmentation(obj["segmentation"], image["height"], image["width"])
            np.testing.assert_array_equal(mask, ids == segment["id"])  # polygons reproduce the mask exactly
            assert obj["category_id"] == segment["category_id"] and obj["area"] == mask.sum()
        label = np.asarray(Image.open(panoptic_root / "ade20k" / "annotations" / "validation" / image["file_name"]))
        expected = np.zeros_like(label)
        for segment in annotation["segments_info"]:
            expected[ids == segment["id"]] = segment["category_id"]
        np.testing.assert_array_equal(label, expected)
    assert kinds["polygon"] > 0 and kinds["rle"] > 0


# ---------------------------------------------------------------- COCO panoptic reader


def test_load_coco_panoptic_and_segment_map(panoptic_root):
    dataset = load_coco_panoptic(panoptic_root, "train")
    assert len(dataset) == SMALL.num_train
    assert set(dataset.column_names) >= {"image", "panoptic_image", "segments_info", "image_id", "file_name"}
    example = dataset[3]
    assert example["image"].size == (SMALL.width, SMALL.height) and example["image"].mode == "RGB"
    segment_map, segment_to_category = panoptic_to_segment_map(example["panoptic_image"], example["segments_info"])
    assert segment_map.shape == (SMALL.height, SMALL.width) and segment_map.dtype == np.int64
    assert segment_to_category == {s["id"]: s["category_id"] for s in example["segments_info"]}
    assert set(np.unique(segment_map).tolist()) == {0} | set(segment_to_category)
    contiguous = {c["id"]: i for i, c in enumerate(read_panoptic_categories(panoptic_root, "train"))}
    _, mapped = panoptic_to_segment_map(example["panoptic_image"], example["segments_info"],
                                        category_id_map=contiguous)
    assert mapped == {k: v - 1 for k, v in segment_to_category.items()}


def test_crowd_segments_become_void_unless_kept():
    ids = np.array([[0, 1, 1], [2, 2, 3]])
    info = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 2, "iscrowd": 1},
            {"id": 3, "category_id": 5, "iscrowd": 0}]
    segment_map, categories = panoptic_to_segment_map(id_to_rgb(ids), info)
    np.testing.assert_array_equal(segment_map, [[0, 1, 1], [0, 0, 3]])
    assert categories == {1: 1, 3: 5}
    segment_map, categories = panoptic_to_segment_map(id_to_rgb(ids), info, keep_crowd=True)
    np.testing.assert_array_equal(segment_map, ids)
    assert categories == {1: 1, 2: 2, 3: 5}
    with pytest.raises(ValueError, match=r"seg\.png: segment ids \[3\] are in the PNG but not in segments_info"):
        panoptic_to_segment_map(id_to_rgb(ids), info[:2], source="seg.png")


def test_the_same_reader_reads_the_real_coco_layout(panoptic_root, tmp_path):
    """COCO's download: val2017/, annotations/panoptic_val2017.json, annotations/panoptic_val2017/ (jpg images)."""
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    content = json.loads((panoptic_root / "annotations" / "panoptic_val.json").read_text())
    (coco / "val2017").mkdir()
    for image in content["images"]:
        jpg = image["file_name"].replace(".png", ".jpg")
        Image.open(panoptic_root / "images" / "val" / image["file_name"]).save(coco / "val2017" / jpg, quality=95)
        image["file_name"] = jpg
    shutil.copytree(panoptic_root / "panoptic_val", coco / "annotations" / "panoptic_val2017")
    (coco / "annotations" / "panoptic_val2017.json").write_text(json.dumps(content))
    for split in ("val", "val2017"):
        dataset = load_coco_panoptic(coco, split)
        assert len(dataset) == SMALL.num_val and dataset[0]["file_name"].endswith(".jpg")
        assert dataset[0]["segments_info"] == load_coco_panoptic(panoptic_root, "val")[0]["segments_info"]


def test_bad_panoptic_data_gets_clear_errors(panoptic_root, tmp_path):
    root = _copy(panoptic_root, tmp_path)
    annotation_file = root / "annotations" / "panoptic_val.json"
    original = json.loads(annotation_file.read_text())

    (root / "images" / "val" / "000000100002.png").rename(tmp_path / "moved.png")
    with pytest.raises(FileNotFoundError, match=r"000000100002\.png.*is missing"):
        load_coco_panoptic(root, "val")
    (tmp_path / "moved.png").rename(root / "images" / "val" / "000000100002.png")

    broken = json.loads(json.dumps(original))
    dropped = broken["annotations"][1]["segments_info"].pop()
    annotation_file.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=rf"000000100002\.png: segment ids \[{dropped['id']}\] are in the PNG but "
                                         "not in the JSON"):
        load_coco_panoptic(root, "val")
    # without the eager check the same PNG fails when the sample is used, still naming the file
    example = load_coco_panoptic(root, "val", verify_masks=False)[1]
    with pytest.raises(ValueError, match=r"000000100002\.png"):
        panoptic_to_segment_map(example["panoptic_image"], example["segments_info"])

    broken = json.loads(json.dumps(original))
    broken["annotations"][2]["segments_info"][0]["category_id"] = 99
    annotation_file.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"panoptic_val\.json: segment .* image id 100003 .* unknown category_id 99"):
        load_coco_panoptic(root, "val")

    annotation_file.write_text(json.dumps({**original, "images": [], "annotations": []}))
    with pytest.raises(ValueError, match="Split 'val' is empty"):
        load_coco_panoptic(root, "val")

    with pytest.raises(FileNotFoundError, match="No panoptic annotation JSON found for split 'test'"):
        load_coco_panoptic(root, "test")


# ---------------------------------------------------------------- semantic and instance readers


def test_semantic_reader(panoptic_root, tmp_path):
    dataset = load_semantic_segmentation(panoptic_root / "ade20k", "val", num_labels=7)
    assert len(dataset) == SMALL.num_val
    example = dataset[0]
    assert example["annotation"].mode == "L" and example["image"].size == example["annotation"].size
    assert set(np.unique(np.asarray(example["annotation"])).tolist()) <= set(range(8))
    assert len(load_semantic_segmentation(panoptic_root / "ade20k", "validation")) == SMALL.num_val

    with pytest.raises(ValueError, match="exceed num_labels=5"):
        load_semantic_segmentation(panoptic_root / "ade20k", "val", num_labels=5)
    root = _copy(panoptic_root / "ade20k", tmp_path)
    (root / "images" / "validation" / "000000100001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"Image for label map .*000000100001\.png is missing"):
        load_semantic_segmentation(root, "val")
    for path in (root / "images" / "validation").iterdir():
        path.unlink()
    for path in (root / "annotations" / "validation").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match="Split 'val' is empty"):
        load_semantic_segmentation(root, "val")


def test_instance_reader_and_masks(panoptic_root, tmp_path):
    dataset = load_coco_instances(panoptic_root, "val")
    assert len(dataset) == SMALL.num_val
    example = dataset[0]
    masks, category_ids = decode_instance_masks(example["objects"], example["height"], example["width"])
    assert masks.shape == (len(example["objects"]), SMALL.height, SMALL.width)
    assert category_ids.tolist() == [o["category_id"] for o in example["objects"]]
    assert [int(m.sum()) for m in masks] == [o["area"] for o in example["objects"]]

    segment_map, mapping = instances_to_segment_map(np.array([[[1, 1], [1, 1]], [[0, 1], [0, 0]]], dtype=bool),
                                                    np.array([3, 4]))
    np.testing.assert_array_equal(segment_map, [[1, 2], [1, 1]])  # the smaller instance stays on top
    assert mapping == {1: 3, 2: 4}

    root = _copy(panoptic_root, tmp_path)
    annotation_file = root / "annotations" / "instances_val.json"
    content = json.loads(annotation_file.read_text())
    content["annotations"][0]["category_id"] = 6  # a stuff id: unknown in the instance file
    annotation_file.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"instances_val\.json: annotation 1 .* unknown category_id 6"):
        load_coco_instances(root, "val")


# ---------------------------------------------------------------- Hub helper


def test_hub_loader_fails_fast_and_clearly_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_module, "hub_is_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="Cannot reach the Hugging Face Hub to load dataset 'user/some-set'.*"
                                              "--data_dir"):
        load_hub_dataset("user/some-set", "train")
    assert time.perf_counter() - start < 1.0


def test_hub_loader_offline_mode_uses_the_cache_only(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []

    def fake_load_dataset(name, config_name=None, split=None, **kwargs):
        calls.append((name, config_name, split))
        raise ConnectionError("Couldn't reach 'user/some-set' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(hub_module.datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(hub_module, "hub_is_reachable", lambda timeout=3.0: pytest.fail("must not probe"))
    with pytest.raises(ConnectionError, match="Could not load dataset 'user/some-set' from the Hub or the local cache"):
        load_hub_dataset("user/some-set", "val")
    assert calls == [("user/some-set", None, "val")]


# ---------------------------------------------------------------- YouTube-VIS


def test_video_generator_is_deterministic_and_in_the_youtube_vis_format(video_root, tmp_path):
    again = generate_synthetic_youtube_vis(tmp_path / "again", SMALL_VIDEO)
    assert _tree_digest(video_root) == _tree_digest(again)
    content = json.loads((video_root / "train.json").read_text())
    assert set(content) >= {"videos", "annotations", "categories"}
    assert [c["id"] for c in content["categories"]] == [1, 2, 3, 4]
    videos = {v["id"]: v for v in content["videos"]}
    absent_frames = 0
    for annotation in content["annotations"]:
        video = videos[annotation["video_id"]]
        assert len(annotation["segmentations"]) == len(video["file_names"]) == video["length"]
        for segmentation, area in zip(annotation["segmentations"], annotation["areas"]):
            if segmentation is None:
                absent_frames += 1
                assert area is None
            else:
                assert isinstance(segmentation["counts"], list)  # uncompressed, as the real train.json
                assert decode_segmentation(segmentation, video["height"], video["width"]).sum() == area
    assert absent_frames > 0


def test_youtube_vis_reader_clip_and_augmentation(video_root):
    dataset = load_youtube_vis(video_root, "train")
    assert len(dataset) == SMALL_VIDEO.num_train
    example = dataset[0]
    assert example["length"] == len(example["frame_paths"]) >= SMALL_VIDEO.min_frames
    indices = [0, 0, example["length"] - 1]
    clip = load_video_clip(example, indices)
    assert len(clip["frames"]) == 3 and clip["frames"][0].size == (example["width"], example["height"])
    num = clip["masks"].shape[0]
    assert clip["masks"].shape == (num, 3, example["height"], example["width"]) and num >= 1
    np.testing.assert_array_equal(clip["masks"][:, 0], clip["masks"][:, 1])  # the same frame twice
    for n, instance_id in enumerate(clip["instance_ids"]):
        annotation = next(a for a in example["annotations"] if a["id"] == instance_id)
        expected = decode_segmentation(json.loads(annotation["segmentations"])[indices[2]], example["height"],
                                       example["width"])
        np.testing.assert_array_equal(clip["masks"][n, 2], expected if expected is not None else False)

    rng = np.random.default_rng(3)
    frames, masks = augment_clip(clip["frames"], clip["masks"], rng, min_size_choices=(48,), flip_prob=1.0)
    assert frames[0].size == (48, 48) and masks.shape[-2:] == (48, 48)
    original = np.asarray(clip["frames"][0].resize((48, 48), Image.BILINEAR))
    np.testing.assert_array_equal(np.asarray(frames[0]), original[:, ::-1])  # flipped, all frames alike
    np.testing.assert_array_equal(np.asarray(frames[1]), original[:, ::-1])


def test_a_clip_keeps_only_instances_present_in_its_frames(tmp_path):
    height, width = 4, 4
    present = np.zeros((height, width), dtype=bool)
    present[1:3, 1:3] = True
    example = {
        "height": height, "width": width, "length": 3, "frame_paths": [],
        "annotations": [
            {"id": 7, "category_id": 2, "iscrowd": 0,
             "segmentations": json.dumps([encode_mask(present), None, None])},
            {"id": 8, "category_id": 3, "iscrowd": 0,
             "segmentations": json.dumps([None, encode_mask_uncompressed(present), None])},
        ],
    }
    for t in range(3):
        path = str(tmp_path / f"{t}.png")
        Image.new("RGB", (width, height)).save(path)
        example["frame_paths"].append(path)
    clip = load_video_clip(example, [1, 2])
    assert clip["instance_ids"].tolist() == [8] and clip["category_ids"].tolist() == [3]
    np.testing.assert_array_equal(clip["masks"][0, 0], present)
    assert not clip["masks"][0, 1].any()  # absent frame: empty mask
    with pytest.raises(ValueError, match="out of range"):
        load_video_clip(example, [0, 3])


def test_clip_sampling_follows_the_original_mapper():
    rng = np.random.default_rng(0)
    saw_duplicate = False
    for _ in range(500):
        length = int(rng.integers(1, 80))
        indices = sample_clip_indices(length, num_frames=3, frame_range=20, rng=rng)
        assert len(indices) == 3 and indices == sorted(indices)
        assert all(0 <= i < length for i in indices)
        assert max(indices) - min(indices) <= 40
        # some frame is the reference, and every other one lies within 20 frames of it and differs from it
        assert any(all(abs(indices[k] - indices[p]) <= 20 and indices[k] != indices[p] for k in range(3) if k != p)
                   for p in range(3)) or length == 1
        saw_duplicate |= len(set(indices)) < 3 and length > 2
    assert saw_duplicate  # drawn with replacement
    assert len(sample_clip_indices(100, rng=rng)) == 2  # two frames by default
    assert sample_clip_indices(1, num_frames=2, rng=rng) == [0, 0]
    first = sample_clip_indices(50, 4, rng=np.random.default_rng(5))
    assert first == sample_clip_indices(50, 4, rng=np.random.default_rng(5))
    with pytest.raises(ValueError, match="video_length"):
        sample_clip_indices(0)


def test_clip_sampling_matches_the_reference_algorithm():
    """Same draws as: ref = randrange(L); choice(range(max(0,ref-20), ref) + range(ref+1, min(L, ref+21)), n-1)."""
    for seed in range(20):
        ours = sample_clip_indices(60, num_frames=3, frame_range=20, rng=np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        reference = int(rng.integers(60))
        pool = list(range(max(0, reference - 20), reference)) + list(range(reference + 1, min(60, reference + 21)))
        expected = sorted(rng.choice(np.array(pool), 2, replace=True).tolist() + [reference])
        assert ours == expected


def test_bad_youtube_vis_data_gets_clear_errors(video_root, tmp_path):
    root = _copy(video_root, tmp_path)
    annotation_file = root / "train.json"
    original = json.loads(annotation_file.read_text())

    broken = json.loads(json.dumps(original))
    broken["annotations"][0]["category_id"] = 40
    annotation_file.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"train\.json: annotation 1 .* unknown category_id 40"):
        load_youtube_vis(root, "train")

    broken = json.loads(json.dumps(original))
    broken["annotations"][0]["segmentations"].pop()
    annotation_file.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="per-frame segmentations for a video of"):
        load_youtube_vis(root, "train")

    annotation_file.write_text(json.dumps(original))
    frame = root / "train" / "JPEGImages" / original["videos"][1]["file_names"][2]
    frame.unlink()
    with pytest.raises(FileNotFoundError, match=rf"Frame .*{frame.name} of video id 2 is missing"):
        load_youtube_vis(root, "train")

    annotation_file.write_text(json.dumps({**original, "videos": []}))
    with pytest.raises(ValueError, match="Split 'train' is empty"):
        load_youtube_vis(root, "train")
