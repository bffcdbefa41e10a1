"""A small, deterministic synthetic panoptic dataset written in the real COCO panoptic format.

Scenes are a sky / ground / wall background ("stuff") with 2-5 coloured shapes ("things": circle, square, triangle,
cross; one shape and one colour family per class) that overlap and touch, and a void (unlabeled) border.

Layout written under ``output_dir`` (the same files a real dataset has, so the same loaders read both)::

    images/<split>/<12-digit image id>.png          RGB images
    panoptic_<split>/<12-digit image id>.png        panoptic PNGs, id = R + 256 G + 256^2 B, 0 = void
    annotations/panoptic_<split>.json               {"images", "annotations": [{file_name, image_id,
                                                      segments_info: [{id, category_id, area, bbox, iscrowd}]}],
                                                      "categories": [{id, name, isthing, color}]}
    annotations/instances_<split>.json              COCO instances (things only): polygons when an instance is
                                                      fully visible, compressed RLE when occluded or clipped
    ade20k/images/{training,validation}/*.png       ADE20K-style semantic copy: images and
    ade20k/annotations/{training,validation}/*.png  uint8 label maps (0 = void, k = category id k)
    ade20k/categories.json                          [{id, name}] for the label values
    generator.json                                  the generator settings (a later call with the same settings
                                                      reuses the folder)

The dataset is a function of the settings alone: every image is drawn from its own seed
``(seed, split, index)``, so the val split does not depend on the size of the train split.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .generated_folder import write_generated_folder
from .masks import encode_mask, id_to_rgb
from .shapes import STUFF_CLASSES, THING_CLASSES, paint_stuff_background, shape_mask, thing_colour

__all__ = [
    "ADE20K_SPLIT_NAMES",
    "SYNTHETIC_CATEGORIES",
    "SyntheticPanopticConfig",
    "default_cache_dir",
    "ensure_synthetic_panoptic",
    "generate_synthetic_panoptic",
    "render_panoptic_scene",
]

GENERATOR_VERSION = 1
ADE20K_SPLIT_NAMES = {"train": "training", "val": "validation"}
_SPLIT_CODES = {"train": 1, "val": 2}
_IMAGE_ID_OFFSETS = {"train": 0, "val": 100_000}

SYNTHETIC_CATEGORIES: list[dict] = [
    {"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color), "supercategory": "shape"}
    for c in THING_CLASSES
] + [
    {"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color), "supercategory": "scene"}
    for c in STUFF_CLASSES
]


@dataclass(frozen=True)
class SyntheticPanopticConfig:
    """Settings of the synthetic panoptic dataset (the defaults are the embedded default training data)."""

    num_train: int = 256
    num_val: int = 64
    height: int = 128
    width: int = 128
    min_things: int = 2
    max_things: int = 5
    min_thing_size: float = 0.16
    max_thing_size: float = 0.34
    void_border: int = 3
    seed: int = 0

    def __post_init__(self):
        if self.num_train < 0 or self.num_val < 0:
            raise ValueError("num_train and num_val must be >= 0.")
        if min(self.height, self.width) < 32:
            raise ValueError(f"Images must be at least 32x32; got {self.height}x{self.width}.")
        if not 0 <= self.min_things <= self.max_things:
            raise ValueError(f"Need 0 <= min_things <= max_things; got {self.min_things}, {self.max_things}.")
        if not 0 < self.min_thing_size <= self.max_thing_size < 1:
            raise ValueError("Need 0 < min_thing_size <= max_thing_size < 1 (fractions of the image side).")
        if self.void_border < 0 or 2 * self.void_border >= min(self.height, self.width):
            raise ValueError(f"void_border={self.void_border} does not fit a {self.height}x{self.width} image.")

    def num_images(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val}[split]


def default_cache_dir() -> Path:
    """Where generated data goes by default: ``$HF_MASKFORMER_SERIES_CACHE`` or ``~/.cache/hf_maskformer_series``."""
    return Path(os.environ.get("HF_MASKFORMER_SERIES_CACHE", Path.home() / ".cache" / "hf_maskformer_series"))


def _settings_digest(config) -> str:
    settings = json.dumps({"version": GENERATOR_VERSION, **asdict(config)}, sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()[:12]


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))


def _place_things(config: SyntheticPanopticConfig, rng: np.random.Generator):
    """Draw thing instances in depth order; later instances occlude earlier ones.

    A candidate is rejected when it would hide more than 60% of an earlier instance or when its visible part would
    be tiny, so every instance stays recognisable. Half of the candidates are placed next to the previous instance,
    so instances often touch or overlap.
    """
    height, width = config.height, config.width
    side = min(height, width)
    num_things = int(rng.integers(config.min_things, config.max_things + 1))
    owner = np.full((height, width), -1, dtype=np.int64)
    things = []  # dicts: class, mask (full shape), polygon, colour
    for _ in range(num_things):
        for _attempt in range(25):
            thing = THING_CLASSES[int(rng.integers(len(THING_CLASSES)))]
            size = rng.uniform(config.min_thing_size, config.max_thing_size) * side
            if things and rng.random() < 0.5:
                previous = things[-1]
                distance = rng.uniform(0.55, 1.0) * (previous["size"] + size) / 2
                direction = rng.uniform(0, 2 * np.pi)
                center = (previous["center"][0] + distance * np.cos(direction),
                          previous["center"][1] + distance * np.sin(direction))
            else:
                center = (rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2))
            center = (float(np.clip(center[0], size / 3, width - size / 3)),
                      float(np.clip(center[1], size / 3, height - size / 3)))
            mask, polygon = shape_mask(thing.name, center, size, rng.uniform(-np.pi, np.pi), height, width)
            if mask.sum() < 0.5 * size * size * 0.4:
                continue
            new_owner = np.where(mask, len(things), owner)
            if all((new_owner == k).sum() >= 0.4 * t["mask"].sum() for k, t in enumerate(things)):
                owner = new_owner
                things.append({"class": thing, "mask": mask, "polygon": polygon, "center": center, "size": size,
                               "colour": thing_colour(thing, rng)})
                break
    return things, owner


def render_panoptic_scene(config: SyntheticPanopticConfig, split: str, index: int) -> dict:
    """Draw one scene.

    Returns a dict with ``image`` ([H, W, 3] uint8), ``segment_ids`` ([H, W] int64, 0 = void), ``segments``
    (list of ``{id, category_id, iscrowd}``), and ``instances`` (things: ``{category_id, mask [H, W] bool,
    polygon or None}``; the polygon is given only when the instance is fully visible).
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be 'train' or 'val'; got {split!r}.")
    rng = _image_rng(config.seed, split, index)
    height, width = config.height, config.width
    image, stuff_label = paint_stuff_background(height, width, rng)
    things, owner = _place_things(config, rng)

    labeled = np.zeros((height, width), dtype=bool)
    border = config.void_border
    labeled[border : height - border, border : width - border] = True

    segment_ids = np.zeros((height, width), dtype=np.int64)
    segments, instances = [], []
    for stuff in STUFF_CLASSES:
        region = (stuff_label == stuff.id) & (owner < 0) & labeled
        if region.any():
            segment_ids[region] = stuff.id * 1000
            segments.append({"id": stuff.id * 1000, "category_id": stuff.id, "iscrowd": 0})
    counters = {}
    shading = rng.normal(0, 5, (height, width, 3))
    for k, thing in enumerate(things):
        visible = owner == k
        image[visible] = thing["colour"] + shading[visible]
        region = visible & labeled
        if not region.any():
            continue
        category_id = thing["class"].id
        counters[category_id] = counters.get(category_id, 0) + 1
        segment_id = category_id * 1000 + counters[category_id]
        segment_ids[region] = segment_id
        segments.append({"id": segment_id, "category_id": category_id, "iscrowd": 0})
        fully_visible = bool(np.array_equal(region, thing["mask"]))
        instances.append({"category_id": category_id, "mask": region,
                          "polygon": thing["polygon"] if fully_visible else None})
    return {"image": np.clip(np.round(image), 0, 255).astype(np.uint8), "segment_ids": segment_ids,
            "segments": segments, "instances": instances}


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _write_split(root: Path, config: SyntheticPanopticConfig, split: str) -> None:
    image_dir = root / "images" / split
    panoptic_dir = root / f"panoptic_{split}"
    ade_images = root / "ade20k" / "images" / ADE20K_SPLIT_NAMES[split]
    ade_labels = root / "ade20k" / "annotations" / ADE20K_SPLIT_NAMES[split]
    for folder in (image_dir, panoptic_dir, ade_images, ade_labels, root / "annotations"):
        folder.mkdir(parents=True, exist_ok=True)
    images, panoptic_annotations, instance_annotations = [], [], []
    for index in range(config.num_images(split)):
        scene = render_panoptic_scene(config, split, index)
        image_id = _IMAGE_ID_OFFSETS[split] + index + 1
        stem = f"{image_id:012d}"
        Image.fromarray(scene["image"]).save(image_dir / f"{stem}.png")
        Image.fromarray(scene["image"]).save(ade_images / f"{stem}.png")
        Image.fromarray(id_to_rgb(scene["segment_ids"])).save(panoptic_dir / f"{stem}.png")
        semantic = np.zeros(scene["segment_ids"].shape, dtype=np.uint8)
        segments_info = []
        for segment in scene["segments"]:
            region = scene["segment_ids"] == segment["id"]
            semantic[region] = segment["category_id"]
            segments_info.append({**segment, "area": int(region.sum()), "bbox": _bbox(region)})
        Image.fromarray(semantic).save(ade_labels / f"{stem}.png")
        images.append({"id": image_id, "file_name": f"{stem}.png", "height": config.height, "width": config.width})
        panoptic_annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments_info})
        for instance in scene["instances"]:
            segmentation = [instance["polygon"]] if instance["polygon"] is not None else encode_mask(instance["mask"])
            instance_annotations.append({
                "id": len(instance_annotations) + 1, "image_id": image_id, "category_id": instance["category_id"],
                "segmentation": segmentation, "area": int(instance["mask"].sum()), "bbox": _bbox(instance["mask"]),
                "iscrowd": 0,
            })
    info = {"description": "hf_maskformer_series synthetic panoptic shapes", "version": GENERATOR_VERSION}
    with open(root / "annotations" / f"panoptic_{split}.json", "w") as f:
        json.dump({"info": info, "images": images, "annotations": panoptic_annotations,
                   "categories": SYNTHETIC_CATEGORIES}, f)
    thing_categories = [
        {k: c[k] for k in ("id", "name", "supercategory")} for c in SYNTHETIC_CATEGORIES if c["isthing"]
    ]
    with open(root / "annotations" / f"instances_{split}.json", "w") as f:
        json.dump({"info": info, "images": images, "annotations": instance_annotations,
                   "categories": thing_categories}, f)


def generate_synthetic_panoptic(output_dir: str | os.PathLike, config: SyntheticPanopticConfig | None = None,
                                overwrite: bool = False) -> Path:
    """Write the synthetic dataset to ``output_dir`` (layout in the module docstring) and return its path.

    The folder is built in a temporary sibling and renamed into place, so concurrent callers (several training
    processes) and interrupted runs never leave a half-written dataset. An existing folder written with the same
    settings is reused unless ``overwrite``.
    """
    config = config or SyntheticPanopticConfig()
    output_dir = Path(output_dir)
    settings = {"generator": "synthetic_panoptic", "version": GENERATOR_VERSION, **asdict(config)}

    def write(staging: Path) -> None:
        for split in ("train", "val"):
            _write_split(staging, config, split)
        with open(staging / "ade20k" / "categories.json", "w") as f:
            json.dump([{"id": c["id"], "name": c["name"]} for c in SYNTHETIC_CATEGORIES], f)

    return write_generated_folder(output_dir, settings, write, overwrite)


def ensure_synthetic_panoptic(output_dir: str | os.PathLike | None = None,
                              config: SyntheticPanopticConfig | None = None) -> Path:
    """Return a folder holding the synthetic dataset, generating it on first use.

    Without ``output_dir`` the folder is ``default_cache_dir() / "synthetic_panoptic_<hash of the settings>"``.
    """
    config = config or SyntheticPanopticConfig()
    if output_dir is None:
        output_dir = default_cache_dir() / f"synthetic_panoptic_{_settings_digest(config)}"
    return generate_synthetic_panoptic(output_dir, config)
