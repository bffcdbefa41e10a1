"""Read an ADE20K-style semantic segmentation folder into a ``datasets.Dataset``.

Layout (as ``ADEChallengeData2016``)::

    images/<split>/<name>.jpg|png         RGB images
    annotations/<split>/<name>.png        single-channel uint8 label maps: 0 = void ("other"), k = class k

``split`` may be given as ``"train"``/``"val"`` (mapped to ADE's ``training``/``validation`` when those folders
exist) or as the folder name itself. Columns: ``image`` and ``annotation`` (``datasets.Image``), ``file_name``.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

__all__ = ["SEMANTIC_FEATURES", "load_semantic_segmentation", "read_label_map"]

SEMANTIC_FEATURES = datasets.Features(
    {"image": datasets.Image(), "annotation": datasets.Image(), "file_name": datasets.Value("string")}
)
_SPLIT_ALIASES = {"train": ["train", "training"], "val": ["val", "validation"], "validation": ["validation", "val"],
                  "training": ["training", "train"]}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _split_dir(root: Path, kind: str, split: str) -> Path:
    candidates = [root / kind / name for name in _SPLIT_ALIASES.get(split, [split])]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"No {kind} folder for split '{split}'; tried: {', '.join(map(str, candidates))}")


def read_label_map(annotation: Image.Image | str | os.PathLike, num_labels: int | None = None,
                   ignore_index: int = 255) -> np.ndarray:
    """Load a label PNG as ``[height, width]`` int64; with ``num_labels``, check every value is in
    ``[0, num_labels]`` (0 = void, ADE convention) or equals ``ignore_index``."""
    source = annotation if not isinstance(annotation, Image.Image) else getattr(annotation, "filename", "label map")
    image = annotation if isinstance(annotation, Image.Image) else Image.open(annotation)
    if image.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(f"{source}: a semantic label map must be single-channel; got mode {image.mode}.")
    labels = np.asarray(image).astype(np.int64)
    if num_labels is not None:
        bad = np.unique(labels[(labels > num_labels) & (labels != ignore_index)])
        if bad.size:
            raise ValueError(f"{source}: label values {bad.tolist()} exceed num_labels={num_labels}.")
    return labels


def load_semantic_segmentation(data_dir: str | os.PathLike, split: str, *, num_labels: int | None = None,
                               max_samples: int | None = None) -> datasets.Dataset:
    """Read one split of an ADE20K-style folder (layout in the module docstring).

    Args:
        num_labels: when given, every label map is opened and checked for values above ``num_labels``.
        max_samples: keep the first ``max_samples`` images (sorted by name).

    Raises:
        FileNotFoundError: missing folder, or an image without its label map (or the reverse), named.
        ValueError: empty split, multi-channel or out-of-range label maps.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset folder not found: {root}")
    image_dir = _split_dir(root, "images", split)
    label_dir = _split_dir(root, "annotations", split)
    images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES}
    labels = {p.stem: p for p in sorted(label_dir.iterdir()) if p.suffix.lower() == ".png"}
    if not images:
        raise ValueError(f"Split '{split}' is empty: no images in {image_dir}.")
    for stem, label_path in labels.items():
        if stem not in images:
            raise FileNotFoundError(f"Image for label map {label_path} is missing from {image_dir}.")
    for stem, image_path in images.items():
        if stem not in labels:
            raise FileNotFoundError(f"Label map {label_dir / (stem + '.png')} for image {image_path} is missing.")
    stems = sorted(images)[:max_samples] if max_samples is not None else sorted(images)
    if num_labels is not None:
        for stem in stems:
            read_label_map(labels[stem], num_labels)
    rows = {
        "image": [str(images[s]) for s in stems],
        "annotation": [str(labels[s]) for s in stems],
        "file_name": [images[s].name for s in stems],
    }
    return datasets.Dataset.from_dict(rows, features=SEMANTIC_FEATURES)
