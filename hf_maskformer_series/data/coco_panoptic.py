"""Read a COCO-panoptic folder into a ``datasets.Dataset`` and turn its annotations into processor inputs.

The same reader serves the synthetic dataset (``synthetic.py``) and a real COCO panoptic download. Paths are
found automatically among the usual layouts for ``split`` (e.g. ``"train"``, ``"val"``, ``"val2017"``):

- annotation JSON: ``annotations/panoptic_<split>.json`` or ``annotations/panoptic_<split>2017.json``;
- panoptic PNGs:   ``panoptic_<split>/``, ``annotations/panoptic_<split>/`` (COCO's zip) or ``panoptic_<split>2017/``;
- images:          ``images/<split>/``, ``<split>/``, ``<split>2017/`` or ``images/<split>2017/``;

or given explicitly. Columns of the returned dataset (one row per image):

- ``image`` (``datasets.Image``), ``panoptic_image`` (``datasets.Image``, the RGB-encoded segment-id PNG),
- ``segments_info`` (list of ``{id, category_id, area, bbox, iscrowd}``),
- ``image_id``, ``file_name``, ``panoptic_file_name``, ``height``, ``width``.

Bad data raises ``ValueError``/``FileNotFoundError`` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image

from .masks import rgb_to_id

__all__ = [
    "PANOPTIC_FEATURES",
    "find_coco_panoptic_paths",
    "load_coco_panoptic",
    "panoptic_to_segment_map",
    "read_json",
    "read_panoptic_categories",
    "verify_panoptic_png",
]

PANOPTIC_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "panoptic_image": datasets.Image(),
        "segments_info": datasets.List(
            {
                "id": datasets.Value("int64"),
                "category_id": datasets.Value("int64"),
                "area": datasets.Value("int64"),
                "bbox": datasets.List(datasets.Value("float64")),
                "iscrowd": datasets.Value("int64"),
            }
        ),
        "image_id": datasets.Value("int64"),
        "file_name": datasets.Value("string"),
        "panoptic_file_name": datasets.Value("string"),
        "height": datasets.Value("int64"),
        "width": datasets.Value("int64"),
    }
)


def read_json(path: str | os.PathLike) -> Any:
    """Load a JSON file, with an error naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Annotation file not found: {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def _first_existing(candidates: list[Path], what: str, split: str, is_file: bool) -> Path:
    for candidate in candidates:
        if (candidate.is_file() if is_file else candidate.is_dir()):
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"No {what} found for split '{split}'; tried: {tried}")


def find_coco_panoptic_paths(data_dir: str | os.PathLike, split: str) -> tuple[Path, Path, Path]:
    """``(annotation_file, panoptic_dir, image_dir)`` of ``split`` under ``data_dir`` (layouts in the docstring)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset folder not found: {root}")
    names = [split] if split.endswith("2017") else [split, f"{split}2017"]
    annotation_file = _first_existing(
        [root / "annotations" / f"panoptic_{n}.json" for n in names], "panoptic annotation JSON", split, True
    )
    panoptic_dir = _first_existing(
        [p for n in names for p in (root / f"panoptic_{n}", root / "annotations" / f"panoptic_{n}")],
        "panoptic PNG folder", split, False,
    )
    image_dir = _first_existing(
        [p for n in names for p in (root / "images" / n, root / n)], "image folder", split, False
    )
    return annotation_file, panoptic_dir, image_dir


def read_panoptic_categories(data_dir: str | os.PathLike | None = None, split: str = "train",
                             annotation_file: str | os.PathLike | None = None) -> list[dict]:
    """The ``categories`` list (``{id, name, isthing, color}``) of a COCO panoptic annotation file."""
    if annotation_file is None:
        annotation_file = find_coco_panoptic_paths(data_dir, split)[0]
    return _categories_of(read_json(annotation_file), annotation_file)


def _categories_of(content: dict, annotation_file) -> list[dict]:
    categories = content.get("categories")
    if not categories:
        raise ValueError(f"{annotation_file} has no 'categories'.")
    for category in categories:
        if "id" not in category or "isthing" not in category:
            raise ValueError(f"{annotation_file}: every category needs 'id' and 'isthing'; got {category}.")
    return categories


def verify_panoptic_png(panoptic_png: str | os.PathLike, segments_info: list[dict]) -> None:
    """Check that a panoptic PNG and its ``segments_info`` agree (panopticapi's checks).

    Raises ``ValueError`` naming the PNG if it holds non-void segment ids that the JSON does not list, or if the
    JSON lists segments that have no pixel in the PNG.
    """
    segment_ids = rgb_to_id(np.asarray(Image.open(panoptic_png).convert("RGB")))
    present = set(np.unique(segment_ids).tolist()) - {0}
    listed = {int(s["id"]) for s in segments_info}
    if present - listed:
        raise ValueError(
            f"{panoptic_png}: segment ids {sorted(present - listed)} are in the PNG but not in the JSON segments_info."
        )
    if listed - present:
        raise ValueError(
            f"{panoptic_png}: segment ids {sorted(listed - present)} are in the JSON segments_info but not in the PNG."
        )


def load_coco_panoptic(
    data_dir: str | os.PathLike | None,
    split: str,
    *,
    annotation_file: str | os.PathLike | None = None,
    panoptic_dir: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    verify_masks: bool = True,
    max_samples: int | None = None,
) -> datasets.Dataset:
    """Read one split of a COCO panoptic folder into a ``datasets.Dataset`` (columns in the module docstring).

    Args:
        data_dir: dataset root; may be ``None`` when all three paths are given.
        split: split name, e.g. ``"train"``, ``"val"``, ``"val2017"``.
        annotation_file, panoptic_dir, image_dir: explicit paths overriding the automatic search.
        verify_masks: also open every panoptic PNG and check it against its ``segments_info``
            (``verify_panoptic_png``). Cheap for small datasets; for a full COCO download you may turn it off, and
            ``panoptic_to_segment_map`` then reports a mismatching PNG when the sample is used.
        max_samples: keep only the first ``max_samples`` images (in JSON order).

    Raises:
        FileNotFoundError: missing folder, annotation file, image or PNG (the message names it).
        ValueError: empty split, unknown category id, image without annotation, PNG/JSON mismatch.
    """
    if annotation_file is None or panoptic_dir is None or image_dir is None:
        if data_dir is None:
            raise ValueError("Give data_dir, or all of annotation_file, panoptic_dir and image_dir.")
        found = find_coco_panoptic_paths(data_dir, split)
        annotation_file = annotation_file or found[0]
        panoptic_dir = panoptic_dir or found[1]
        image_dir = image_dir or found[2]
    annotation_file, panoptic_dir, image_dir = Path(annotation_file), Path(panoptic_dir), Path(image_dir)
    content = read_json(annotation_file)
    categories = {int(c["id"]) for c in _categories_of(content, annotation_file)}
    images = content.get("images") or []
    annotations = content.get("annotations") or []
    if not images or not annotations:
        raise ValueError(f"Split '{split}' is empty: {annotation_file} lists {len(images)} images and "
                         f"{len(annotations)} annotations.")
    annotation_by_image = {}
    for annotation in annotations:
        for key in ("image_id", "file_name", "segments_info"):
            if key not in annotation:
                raise ValueError(f"{annotation_file}: an annotation lacks '{key}': {str(annotation)[:200]}")
        annotation_by_image[annotation["image_id"]] = annotation

    rows = {name: [] for name in PANOPTIC_FEATURES}
    for image in images[:max_samples] if max_samples is not None else images:
        image_path = image_dir / image["file_name"]
        if not image_path.is_file():
            raise FileNotFoundError(f"Image {image_path} (image id {image['id']}) listed in {annotation_file} "
                                    "is missing.")
        annotation = annotation_by_image.get(image["id"])
        if annotation is None:
            raise ValueError(f"{annotation_file}: image id {image['id']} ({image['file_name']}) has no annotation.")
        png_path = panoptic_dir / annotation["file_name"]
        if not png_path.is_file():
            raise FileNotFoundError(f"Panoptic PNG {png_path} for image id {image['id']} is missing.")
        segments = []
        for segment in annotation["segments_info"]:
            if segment["category_id"] not in categories:
                raise ValueError(
                    f"{annotation_file}: segment {segment['id']} of image id {image['id']} ({png_path.name}) has "
                    f"unknown category_id {segment['category_id']}; known ids: {sorted(categories)}."
                )
            segments.append({
                "id": int(segment["id"]), "category_id": int(segment["category_id"]),
                "area": int(segment.get("area", 0)), "bbox": [float(v) for v in segment.get("bbox", [0, 0, 0, 0])],
                "iscrowd": int(segment.get("iscrowd", 0)),
            })
        if verify_masks:
            verify_panoptic_png(png_path, segments)
        rows["image"].append(str(image_path))
        rows["panoptic_image"].append(str(png_path))
        rows["segments_info"].append(segments)
        rows["image_id"].append(int(image["id"]))
        rows["file_name"].append(str(image["file_name"]))
        rows["panoptic_file_name"].append(str(annotation["file_name"]))
        rows["height"].append(int(image.get("height", 0)))
        rows["width"].append(int(image.get("width", 0)))
    return datasets.Dataset.from_dict(rows, features=PANOPTIC_FEATURES)


def panoptic_to_segment_map(
    panoptic_image: Image.Image | np.ndarray,
    segments_info: list[dict],
    *,
    keep_crowd: bool = False,
    category_id_map: dict[int, int] | None = None,
    source: str | None = None,
) -> tuple[np.ndarray, dict[int, int]]:
    """Turn a panoptic PNG and its ``segments_info`` into the inputs of the image processor.

    Args:
        panoptic_image: the RGB panoptic PNG (PIL image or ``[height, width, 3]`` uint8 array).
        segments_info: ``[{id, category_id, iscrowd, ...}]`` for that PNG.
        keep_crowd: keep ``iscrowd=1`` segments; by default they become void (0), as the original Mask2Former
            mappers drop crowd segments from the training targets.
        category_id_map: optional mapping applied to category ids (e.g. dataset ids -> contiguous label ids).
        source: a name for the PNG used in error messages (defaults to the PIL image's file name).

    Returns:
        segment_map: ``[height, width]`` int64 segment ids, 0 = void/unlabeled.
        segment_to_category: ``{segment_id: category_id}`` for every segment id present in ``segment_map``.

    Raises:
        ValueError: the PNG holds non-void ids that ``segments_info`` does not list, or a category id is missing
            from ``category_id_map``.
    """
    source = source or getattr(panoptic_image, "filename", None) or "panoptic PNG"
    if isinstance(panoptic_image, Image.Image):
        panoptic_image = np.asarray(panoptic_image.convert("RGB"))
    segment_map = rgb_to_id(panoptic_image)
    info = {int(s["id"]): s for s in segments_info}
    present = np.unique(segment_map)
    unknown = sorted(int(i) for i in present if i != 0 and int(i) not in info)
    if unknown:
        raise ValueError(f"{source}: segment ids {unknown} are in the PNG but not in segments_info.")
    segment_to_category = {}
    for segment_id in present.tolist():
        if segment_id == 0:
            continue
        segment = info[segment_id]
        if segment.get("iscrowd", 0) and not keep_crowd:
            segment_map[segment_map == segment_id] = 0
            continue
        category_id = int(segment["category_id"])
        if category_id_map is not None:
            if category_id not in category_id_map:
                raise ValueError(f"{source}: category_id {category_id} of segment {segment_id} is not in "
                                 f"category_id_map (known: {sorted(category_id_map)}).")
            category_id = int(category_id_map[category_id])
        segment_to_category[int(segment_id)] = category_id
    return segment_map, segment_to_category
