"""Read a COCO instance-segmentation folder (JSON with polygons or RLE) into a ``datasets.Dataset``.

Paths are found automatically: the annotation file ``annotations/instances_<split>[2017].json`` and the images in
``images/<split>[2017]/`` or ``<split>[2017]/``; or given explicitly. One row per image, columns:

- ``image`` (``datasets.Image``), ``image_id``, ``file_name``, ``height``, ``width``,
- ``objects``: list of ``{id, category_id, iscrowd, area, bbox, segmentation}`` where ``segmentation`` is the
  annotation's polygons or RLE serialised as a JSON string (Arrow columns need one type; decode it with
  ``decode_instance_masks``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import numpy as np

from .coco_panoptic import read_json
from .masks import decode_segmentation

__all__ = ["INSTANCE_FEATURES", "decode_instance_masks", "instances_to_segment_map", "load_coco_instances"]

INSTANCE_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "image_id": datasets.Value("int64"),
        "file_name": datasets.Value("string"),
        "height": datasets.Value("int64"),
        "width": datasets.Value("int64"),
        "objects": datasets.List(
            {
                "id": datasets.Value("int64"),
                "category_id": datasets.Value("int64"),
                "iscrowd": datasets.Value("int64"),
                "area": datasets.Value("float64"),
                "bbox": datasets.List(datasets.Value("float64")),
                "segmentation": datasets.Value("string"),
            }
        ),
    }
)


def _find(root: Path, split: str) -> tuple[Path, Path]:
    names = [split] if split.endswith("2017") else [split, f"{split}2017"]
    files = [root / "annotations" / f"instances_{n}.json" for n in names]
    folders = [p for n in names for p in (root / "images" / n, root / n)]
    annotation_file = next((f for f in files if f.is_file()), None)
    image_dir = next((d for d in folders if d.is_dir()), None)
    if annotation_file is None:
        raise FileNotFoundError(f"No instance annotation JSON for split '{split}'; tried: {', '.join(map(str, files))}")
    if image_dir is None:
        raise FileNotFoundError(f"No image folder for split '{split}'; tried: {', '.join(map(str, folders))}")
    return annotation_file, image_dir


def load_coco_instances(
    data_dir: str | os.PathLike | None,
    split: str,
    *,
    annotation_file: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    max_samples: int | None = None,
) -> datasets.Dataset:
    """Read one split of a COCO instance folder (columns in the module docstring).

    Raises:
        FileNotFoundError: missing folder, annotation file or image (named).
        ValueError: empty split, unknown category id, annotation for an unknown image id, or a segmentation that
            is neither polygons nor RLE.
    """
    if annotation_file is None or image_dir is None:
        if data_dir is None:
            raise ValueError("Give data_dir, or both annotation_file and image_dir.")
        found = _find(Path(data_dir), split)
        annotation_file = annotation_file or found[0]
        image_dir = image_dir or found[1]
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    content = read_json(annotation_file)
    images = content.get("images") or []
    if not images:
        raise ValueError(f"Split '{split}' is empty: {annotation_file} lists no images.")
    categories = {int(c["id"]) for c in content.get("categories") or []}
    if not categories:
        raise ValueError(f"{annotation_file} has no 'categories'.")
    image_ids = {image["id"] for image in images}
    objects_by_image: dict[int, list[dict]] = {image_id: [] for image_id in image_ids}
    for annotation in content.get("annotations") or []:
        if annotation.get("image_id") not in image_ids:
            raise ValueError(f"{annotation_file}: annotation {annotation.get('id')} refers to unknown image id "
                             f"{annotation.get('image_id')}.")
        if annotation.get("category_id") not in categories:
            raise ValueError(f"{annotation_file}: annotation {annotation.get('id')} (image id "
                             f"{annotation['image_id']}) has unknown category_id {annotation.get('category_id')}; "
                             f"known ids: {sorted(categories)}.")
        segmentation = annotation.get("segmentation")
        if not isinstance(segmentation, (list, dict)):
            raise ValueError(f"{annotation_file}: annotation {annotation.get('id')} has no polygon or RLE "
                             "'segmentation'.")
        objects_by_image[annotation["image_id"]].append({
            "id": int(annotation.get("id", 0)), "category_id": int(annotation["category_id"]),
            "iscrowd": int(annotation.get("iscrowd", 0)), "area": float(annotation.get("area", 0.0)),
            "bbox": [float(v) for v in annotation.get("bbox", [0, 0, 0, 0])],
            "segmentation": json.dumps(segmentation),
        })
    rows = {name: [] for name in INSTANCE_FEATURES}
    for image in images[:max_samples] if max_samples is not None else images:
        image_path = image_dir / image["file_name"]
        if not image_path.is_file():
            raise FileNotFoundError(f"Image {image_path} (image id {image['id']}) listed in {annotation_file} "
                                    "is missing.")
        rows["image"].append(str(image_path))
        rows["image_id"].append(int(image["id"]))
        rows["file_name"].append(str(image["file_name"]))
        rows["height"].append(int(image["height"]))
        rows["width"].append(int(image["width"]))
        rows["objects"].append(objects_by_image[image["id"]])
    return datasets.Dataset.from_dict(rows, features=INSTANCE_FEATURES)


def decode_instance_masks(objects: list[dict], height: int, width: int, *, keep_crowd: bool = False,
                          category_id_map: dict[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode an ``objects`` list into ``(masks [N, height, width] bool, category_ids [N] int64)``.

    Crowd objects are dropped unless ``keep_crowd``; ``category_id_map`` maps dataset ids (e.g. to contiguous ids).
    """
    masks, category_ids = [], []
    for obj in objects:
        if obj.get("iscrowd", 0) and not keep_crowd:
            continue
        segmentation = obj["segmentation"]
        if isinstance(segmentation, str):
            segmentation = json.loads(segmentation)
        masks.append(decode_segmentation(segmentation, height, width))
        category_id = int(obj["category_id"])
        if category_id_map is not None:
            if category_id not in category_id_map:
                raise ValueError(f"category_id {category_id} is not in category_id_map ({sorted(category_id_map)}).")
            category_id = int(category_id_map[category_id])
        category_ids.append(category_id)
    if not masks:
        return np.zeros((0, height, width), dtype=bool), np.zeros((0,), dtype=np.int64)
    return np.stack(masks), np.asarray(category_ids, dtype=np.int64)


def instances_to_segment_map(masks: np.ndarray, category_ids: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Flatten possibly overlapping instance masks ``[N, H, W]`` into ``(segment_map [H, W] int64, {id: category})``.

    Instance ``k`` gets id ``k + 1`` (0 = background). Where instances overlap, the smaller one wins, so small
    objects lying on large ones stay visible. Instances left with no pixel are omitted from the dict.
    """
    num, height, width = masks.shape
    segment_map = np.zeros((height, width), dtype=np.int64)
    order = np.argsort(-masks.reshape(num, -1).sum(1), kind="stable")
    for k in order:
        segment_map[masks[k]] = k + 1
    present = set(np.unique(segment_map).tolist()) - {0}
    return segment_map, {k + 1: int(category_ids[k]) for k in range(num) if k + 1 in present}
